/** The error table is PROTOCOL.md §7, and errors survive both wire forms unchanged. */
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, test } from "vitest";
import { ErrorKind, ErrorSchema } from "../gen/mcp/v1/error_pb.js";
import { ProtocolVersion } from "../gen/mcp/v1/types_pb.js";
import { fromConnectError } from "../src/client/errors.js";
import { ERROR_TABLE, McpError, fromProtoError, toMcpError, toProtoError, type McpErrorCode } from "../src/errors.js";
import { toConnectError } from "../src/server/connect-error.js";

// PROTOCOL.md §7, row by row. Where the table offers two statuses, the comment says which we use.
const SPEC: [McpErrorCode, McpError["kind"], Code, boolean][] = [
  ["handshake_required", "PROTOCOL", Code.FailedPrecondition, false], // the stream is in the wrong state
  ["invalid_message", "PROTOCOL", Code.InvalidArgument, false],
  ["duplicate_command_id", "PROTOCOL", Code.InvalidArgument, false],
  ["unsupported_version", "PROTOCOL", Code.FailedPrecondition, false],
  ["session_expired", "PROTOCOL", Code.NotFound, false],
  ["unauthenticated", "SECURITY", Code.Unauthenticated, false],
  ["token_expired", "SECURITY", Code.Unauthenticated, false],
  ["token_revoked", "SECURITY", Code.Unauthenticated, false],
  ["permission_denied", "SECURITY", Code.PermissionDenied, false],
  ["insufficient_security_level", "SECURITY", Code.PermissionDenied, false],
  ["version_conflict", "CONTEXT", Code.Aborted, true],
  ["context_not_found", "CONTEXT", Code.NotFound, false],
  ["unknown_tool", "COMMAND", Code.NotFound, false],
  ["invalid_argument", "COMMAND", Code.InvalidArgument, false],
  ["timeout", "COMMAND", Code.DeadlineExceeded, true],
  ["cancelled", "COMMAND", Code.Canceled, false],
  ["tool_failed", "COMMAND", Code.Internal, false],
  ["overloaded", "TRANSPORT", Code.ResourceExhausted, true],
  ["too_many_connections", "TRANSPORT", Code.Unavailable, true], // the server is at capacity: try again later
  ["slow_consumer", "TRANSPORT", Code.ResourceExhausted, true],
  ["message_too_large", "TRANSPORT", Code.ResourceExhausted, false],
  ["connection_lost", "TRANSPORT", Code.Unavailable, true], // client-side: the stream broke and was not resumed
];

test("the table has exactly the codes of §7", () => {
  expect(Object.keys(ERROR_TABLE).sort()).toEqual(SPEC.map(([c]) => c).sort());
});

describe("each code", () => {
  for (const [code, kind, rpc, retryable] of SPEC) {
    test(`${code}: ${kind}, ${Code[rpc]}, retryable=${retryable}`, () => {
      const e = new McpError(code, "m");
      expect([e.kind, e.rpcCode, e.retryable]).toEqual([kind, rpc, retryable]);
      const wire = toProtoError(e);
      expect(wire.kind).toBe(ErrorKind[kind]);
      expect(wire.code).toBe(code);
      expect(wire.retryable).toBe(retryable);
      const connect = toConnectError(e);
      expect(connect.code).toBe(rpc);
      const back = fromConnectError(connect);
      expect([back?.code, back?.kind, back?.message]).toEqual([code, kind, "m"]);
    });
  }
});

test("details travel both ways", () => {
  const e = new McpError("version_conflict", "at 7", { currentVersion: 7n, contextId: "proj", commandId: "c1", retryAfterMs: 50, field: "ops" });
  const back = fromProtoError(toProtoError(e));
  expect(back.details).toEqual({ currentVersion: 7n, contextId: "proj", commandId: "c1", retryAfterMs: 50, field: "ops" });
  const v = fromProtoError(toProtoError(new McpError("unsupported_version", "no", { supportedVersions: [ProtocolVersion.PROTOCOL_VERSION_1_0] })));
  expect(v.details.supportedVersions).toEqual([ProtocolVersion.PROTOCOL_VERSION_1_0]);
});

test("the unary detail is an mcp.v1.Error any client can decode", () => {
  const c = toConnectError(new McpError("unknown_tool", "no tool named x", { field: "tool" }));
  const [detail] = c.findDetails(ErrorSchema);
  expect(detail?.code).toBe("unknown_tool");
  expect(detail?.kind).toBe(ErrorKind.COMMAND);
  expect(detail?.field).toBe("tool");
});

test("unknown reasons: a tool's own failure keeps its cause; connect's size limit becomes message_too_large", () => {
  const cause = new Error("disk on fire");
  const e = toMcpError(cause);
  expect([e.code, e.message, e.cause]).toEqual(["tool_failed", "disk on fire", cause]);
  const size = toConnectError(new ConnectError("message size 99 is larger than configured readMaxBytes 10", Code.ResourceExhausted));
  expect(size.findDetails(ErrorSchema)[0]?.code).toBe("message_too_large");
  expect(fromProtoError({ ...toProtoError(new McpError("timeout", "t")), code: "no_such_code" }).code).toBe("invalid_message");
});
