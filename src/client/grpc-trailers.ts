/** gRPC status from node:http2 header objects, read by connect-es's own trailer parser. */
import type { IncomingHttpHeaders } from "node:http2";
import type { ConnectError } from "@connectrpc/connect";
import { findTrailerError } from "@connectrpc/connect/protocol-grpc";

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
