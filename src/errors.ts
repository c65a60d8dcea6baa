/**
 * The one error type of the toolkit (PROTOCOL.md §7). Every failure inside the core is an
 * `McpError` with a stable `code`; its kind, RPC status and retry flag come from `ERROR_TABLE`
 * only. Conversion to `mcp.v1.Error` happens here; conversion to ConnectError happens at the
 * transport edge (src/server/, src/client/).
 */
import { create, type MessageShape } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { ErrorKind, ErrorSchema } from "../gen/mcp/v1/error_pb.js";
import type { ProtocolVersion } from "../gen/mcp/v1/types_pb.js";

/** The error families of PROTOCOL.md §7. */
export type McpErrorKind = "TRANSPORT" | "SECURITY" | "CONTEXT" | "PROTOCOL" | "COMMAND";

/** Every error code of PROTOCOL.md §7. There are no user-defined codes. */
export type McpErrorCode =
  | "handshake_required"
  | "invalid_message"
  | "duplicate_command_id"
  | "unsupported_version"
  | "session_expired"
  | "unauthenticated"
  | "token_expired"
  | "token_revoked"
  | "permission_denied"
  | "insufficient_security_level"
  | "version_conflict"
  | "context_not_found"
  | "unknown_tool"
  | "invalid_argument"
  | "timeout"
  | "cancelled"
  | "tool_failed"
  | "overloaded"
  | "too_many_connections"
  | "slow_consumer"
  | "message_too_large"
  | "connection_lost";

interface ErrorTableRow {
  kind: McpErrorKind;
  rpc: Code;
  retryable: boolean;
}

/** The only source of each code's kind, Connect/gRPC status and retry flag (PROTOCOL.md §7). */
export const ERROR_TABLE: Readonly<Record<McpErrorCode, ErrorTableRow>> = {
  handshake_required: { kind: "PROTOCOL", rpc: Code.FailedPrecondition, retryable: false },
  invalid_message: { kind: "PROTOCOL", rpc: Code.InvalidArgument, retryable: false },
  duplicate_command_id: { kind: "PROTOCOL", rpc: Code.InvalidArgument, retryable: false },
  unsupported_version: { kind: "PROTOCOL", rpc: Code.FailedPrecondition, retryable: false },
  session_expired: { kind: "PROTOCOL", rpc: Code.NotFound, retryable: false },
  unauthenticated: { kind: "SECURITY", rpc: Code.Unauthenticated, retryable: false },
  token_expired: { kind: "SECURITY", rpc: Code.Unauthenticated, retryable: false },
  token_revoked: { kind: "SECURITY", rpc: Code.Unauthenticated, retryable: false },
  permission_denied: { kind: "SECURITY", rpc: Code.PermissionDenied, retryable: false },
  insufficient_security_level: { kind: "SECURITY", rpc: Code.PermissionDenied, retryable: false },
  version_conflict: { kind: "CONTEXT", rpc: Code.Aborted, retryable: true },
  context_not_found: { kind: "CONTEXT", rpc: Code.NotFound, retryable: false },
  unknown_tool: { kind: "COMMAND", rpc: Code.NotFound, retryable: false },
  invalid_argument: { kind: "COMMAND", rpc: Code.InvalidArgument, retryable: false },
  timeout: { kind: "COMMAND", rpc: Code.DeadlineExceeded, retryable: true },
  cancelled: { kind: "COMMAND", rpc: Code.Canceled, retryable: false },
  tool_failed: { kind: "COMMAND", rpc: Code.Internal, retryable: false },
  overloaded: { kind: "TRANSPORT", rpc: Code.ResourceExhausted, retryable: true },
  too_many_connections: { kind: "TRANSPORT", rpc: Code.Unavailable, retryable: true },
  slow_consumer: { kind: "TRANSPORT", rpc: Code.ResourceExhausted, retryable: true },
  message_too_large: { kind: "TRANSPORT", rpc: Code.ResourceExhausted, retryable: false },
  // Raised by clients, never sent: the connection broke (reset, GOAWAY, silence) and could not be
  // resumed, or the outcome of a call sent before the break is unknown. Retrying is the cure.
  connection_lost: { kind: "TRANSPORT", rpc: Code.Unavailable, retryable: true },
};

/** Extra structured facts some codes carry (they map onto fields of `mcp.v1.Error`). */
export interface McpErrorDetails {
  /** The command the error belongs to. */
  commandId?: string;
  /** Suggested wait before retrying, in milliseconds. */
  retryAfterMs?: number;
  /** For `version_conflict`: the context's current version. */
  currentVersion?: bigint;
  /** For `unsupported_version`: what the server speaks. */
  supportedVersions?: ProtocolVersion[];
  /** For `invalid_argument` / `invalid_message`: the offending field path. */
  field?: string;
  /** The context the error belongs to. */
  contextId?: string;
}

/** A protocol outcome with a stable code. Throw it; never `new Error()` for a protocol outcome. */
export class McpError extends Error {
  override name = "McpError";
  readonly kind: McpErrorKind;
  readonly retryable: boolean;
  readonly details: McpErrorDetails;

  constructor(
    readonly code: McpErrorCode,
    message: string,
    options: McpErrorDetails & { cause?: unknown } = {},
  ) {
    const { cause, ...details } = options;
    super(message, cause === undefined ? undefined : { cause });
    ({ kind: this.kind, retryable: this.retryable } = ERROR_TABLE[code]);
    this.details = details;
  }

  /** The Connect/gRPC status this error maps to. */
  get rpcCode(): Code {
    return ERROR_TABLE[this.code].rpc;
  }

  /** A copy bound to a command id (errors raised before the command id was known). */
  withCommandId(commandId: string): McpError {
    if (this.details.commandId === commandId) return this;
    return new McpError(this.code, this.message, { ...this.details, commandId, cause: this.cause });
  }
}

/** Type guard for `McpError`. */
export function isMcpError(reason: unknown): reason is McpError {
  return reason instanceof McpError;
}

/** Whether a string is one of the §7 codes (for reading errors that crossed the wire). */
export function isMcpErrorCode(code: string): code is McpErrorCode {
  return Object.hasOwn(ERROR_TABLE, code);
}

const KIND_TO_PROTO: Readonly<Record<McpErrorKind, ErrorKind>> = {
  TRANSPORT: ErrorKind.TRANSPORT,
  SECURITY: ErrorKind.SECURITY,
  CONTEXT: ErrorKind.CONTEXT,
  PROTOCOL: ErrorKind.PROTOCOL,
  COMMAND: ErrorKind.COMMAND,
};

/**
 * Any failure as an `McpError`. An unrecognised reason becomes `tool_failed` when it escaped a
 * tool (the tool's own failure), keeping the original as `cause` for logs only.
 */
export function toMcpError(reason: unknown, fallback: McpErrorCode = "tool_failed"): McpError {
  if (reason instanceof McpError) return reason;
  const message = reason instanceof Error ? reason.message : String(reason);
  return new McpError(fallback, message, { cause: reason });
}

/** The wire form, `mcp.v1.Error`. */
export function toProtoError(err: McpError): MessageShape<typeof ErrorSchema> {
  const d = err.details;
  return create(ErrorSchema, {
    kind: KIND_TO_PROTO[err.kind],
    code: err.code,
    message: err.message,
    commandId: d.commandId ?? "",
    retryable: err.retryable,
    retryAfterMs: d.retryAfterMs ?? 0,
    currentVersion: d.currentVersion ?? 0n,
    supportedVersions: d.supportedVersions ?? [],
    field: d.field ?? "",
    contextId: d.contextId ?? "",
  });
}

/** Back from the wire: an `mcp.v1.Error` as an `McpError` (unknown codes become `invalid_message`). */
export function fromProtoError(e: MessageShape<typeof ErrorSchema>): McpError {
  const code: McpErrorCode = isMcpErrorCode(e.code) ? e.code : "invalid_message";
  const details: McpErrorDetails = {};
  if (e.commandId !== "") details.commandId = e.commandId;
  if (e.retryAfterMs !== 0) details.retryAfterMs = e.retryAfterMs;
  if (e.currentVersion !== 0n) details.currentVersion = e.currentVersion;
  if (e.supportedVersions.length > 0) details.supportedVersions = e.supportedVersions;
  if (e.field !== "") details.field = e.field;
  if (e.contextId !== "") details.contextId = e.contextId;
  return new McpError(code, e.message, details);
}
