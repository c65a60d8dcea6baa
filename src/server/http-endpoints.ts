/**
 * Plain HTTP endpoints served on the RPC port beside Connect (`/healthz`, `/metrics`, `/mcp`, …).
 * Each is offered a request before connect-node sees it and answers only the paths it owns, so a
 * feature adds one module and one entry in `createMcpServer`'s list instead of touching routing.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";
import type { RequestHandler } from "./listener.js";

export type HttpRequest = IncomingMessage | Http2ServerRequest;
export type HttpResponse = ServerResponse | Http2ServerResponse;

/** Serves the request and returns true when it owns `req.url`'s path; returns false to pass it on. */
export type HttpEndpoint = (req: HttpRequest, res: HttpResponse) => boolean;

/** The path of a request URL, without its query string. */
export function pathOf(req: HttpRequest): string {
  const url = req.url ?? "/";
  const q = url.indexOf("?");
  return q === -1 ? url : url.slice(0, q);
}

/** A request handler that offers each request to `endpoints` in order, then to `fallback`. */
export function withHttpEndpoints(endpoints: readonly HttpEndpoint[], fallback: RequestHandler): RequestHandler {
  if (endpoints.length === 0) return fallback;
  return (req, res) => {
    for (const e of endpoints) if (e(req, res)) return;
    fallback(req, res);
  };
}
