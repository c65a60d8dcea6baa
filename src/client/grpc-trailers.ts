/**
 * How the client's node:http2 gRPC paths (session-h2.ts, h2-grpc-transport.ts) turn what the
 * server sent into ConnectErrors: the status in trailers (read by connect-es's own trailer
 * parser), a non-200 HTTP status, a refused answer frame.
 */
import type { IncomingHttpHeaders } from "node:http2";
import { Code, ConnectError } from "@connectrpc/connect";
import { findTrailerError } from "@connectrpc/connect/protocol-grpc";
import type { FrameError } from "../transport/grpc-frames.js";

/** node:http2 headers (pseudo-headers left out) as WHATWG Headers. */
export function toHeaders(h: IncomingHttpHeaders): Headers {
  const out = new Headers();
  for (const [k, v] of Object.entries(h)) {
    if (k.startsWith(":") || v === undefined) continue;
    out.set(k, Array.isArray(v) ? v.join(", ") : String(v));
  }
  return out;
}

/** The RPC's error from trailers (or a trailers-only response's headers): status, message and details; undefined for OK. */
export function trailerError(h: IncomingHttpHeaders): ConnectError | undefined {
  return findTrailerError(toHeaders(h));
}

/**
 * A response whose HTTP status is not 200: no gRPC server answered `where`. 413 is a proxy's
 * body limit (nginx's client_max_body_size): resource_exhausted with "larger than", which the
 * client maps to TRANSPORT message_too_large (PROTOCOL.md §7; gRPC's own HTTP mapping has no 413
 * and would say unknown) — sending it again cannot help.
 */
export function httpStatusError(status: number | undefined, where: string): ConnectError {
  if (status === 413) return new ConnectError(`HTTP 413 from ${where}: the request is larger than a proxy on the way accepts`, Code.ResourceExhausted);
  return new ConnectError(`HTTP ${String(status)} from ${where}`, status === 404 ? Code.Unimplemented : Code.Unavailable);
}

/** Why an answer frame was refused from its header. */
export function frameRefusalError(e: FrameError, readMaxBytes: number): ConnectError {
  return e.kind === "compressed"
    ? new ConnectError("compressed message from the server, but none was negotiated", Code.Internal)
    : new ConnectError(`message of ${e.length} bytes exceeds readMaxBytes ${readMaxBytes}`, Code.ResourceExhausted);
}
