/**
 * gRPC over HTTP/2 on raw node:http2 streams, shared by the fast paths (session-h2.ts,
 * unary-h2.ts): which requests they may take, and how an RPC fails — the §7 status, message
 * and `mcp.v1.Error` detail in `grpc-status-details-bin`, as connect-node sends them.
 */
import type { IncomingHttpHeaders, ServerHttp2Stream } from "node:http2";
import { setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { McpError } from "../errors.js";
import type { FrameError } from "../transport/grpc-frames.js";
import { toConnectError } from "./connect-error.js";

/** Response headers of a gRPC answer. */
export const GRPC_HEADERS = { ":status": 200, "content-type": "application/grpc+proto" } as const;
/** Trailers of a successful RPC. */
export const OK_TRAILERS = { "grpc-status": "0" } as const;

/** A POST to `path` (a query string allowed) with gRPC content and identity encoding. */
export function isGrpcIdentityPost(headers: IncomingHttpHeaders, path: string): boolean {
  if (headers[":method"] !== "POST") return false;
  const p = headers[":path"];
  if (p !== path && !(p !== undefined && p.startsWith(path) && p[path.length] === "?")) return false;
  const ct = headers["content-type"];
  if (ct !== "application/grpc" && ct !== "application/grpc+proto") return false;
  const enc = headers["grpc-encoding"];
  return enc === undefined || enc === "identity";
}

/** Why a request frame was refused from its header, as the §7 error both fast paths answer with. */
export function frameRefusal(e: FrameError, maxMessageBytes: number): McpError {
  return e.kind === "compressed"
    ? new McpError("invalid_message", "compressed gRPC frames are not accepted: send with identity encoding")
    : new McpError("message_too_large", `message of ${e.length} bytes exceeds max_message_bytes ${maxMessageBytes}`);
}

/**
 * `grpc-message` percent-encoding (gRPC over HTTP/2): printable ASCII except `%` stays as is,
 * everything else is percent-encoded UTF-8.
 */
export function encodeGrpcMessage(message: string): string {
  // eslint-disable-next-line no-control-regex
  if (!/[^\x20-\x24\x26-\x7e]/.test(message)) return message;
  let out = "";
  for (const byte of Buffer.from(message, "utf8")) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/** The trailers of a failed RPC: status, message and google.rpc.Status with the mcp.v1.Error detail. */
export function errorTrailers(reason: unknown): Record<string, string> {
  const err = toConnectError(reason);
  const out: Record<string, string> = {};
  setTrailerStatus(new Headers(), err).forEach((v, k) => (out[k] = v));
  out["grpc-message"] = encodeGrpcMessage(err.rawMessage);
  return out;
}

/**
 * Fails the RPC before any answer with a trailers-only response (one HEADERS frame with
 * END_STREAM). The rest of the request body is read and dropped, so HTTP/2 flow control does not
 * hold the connection.
 */
export function respondError(stream: ServerHttp2Stream, reason: unknown): void {
  stream.resume();
  if (stream.destroyed || stream.closed || stream.headersSent) return;
  stream.respond({ ...GRPC_HEADERS, ...errorTrailers(reason) }, { endStream: true });
}
