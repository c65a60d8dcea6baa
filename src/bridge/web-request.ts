/**
 * node:http / node:http2 compat requests as web-standard `Request`s and back, for handlers with
 * a `fetch` face (the SDK's `createMcpHandler`). Only HTTP plumbing: bodies are bytes here.
 */
import type { HttpRequest, HttpResponse } from "../server/http-endpoints.js";
import { McpError } from "../errors.js";

/** Reads a request body as text, at most `maxBytes`; `message_too_large` past it. None for GET/HEAD/DELETE. */
export function readBody(req: HttpRequest, maxBytes: number): Promise<string | undefined> {
  if (req.method === "GET" || req.method === "HEAD" || req.method === "DELETE") return Promise.resolve(undefined);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (c: Buffer) => {
      size += c.length;
      if (size > maxBytes) {
        req.removeListener("data", onData);
        reject(new McpError("message_too_large", `request body over ${maxBytes} bytes`));
        return;
      }
      chunks.push(c);
    };
    req.on("data", onData);
    // The bodies served here are JSON (UTF-8 by RFC 8259 §8.1).
    req.once("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.once("error", reject);
  });
}

/** The header fields of `req` (HTTP/2 pseudo-headers left out; `host` from `:authority`). */
export function webHeaders(req: HttpRequest): Headers {
  const headers = new Headers();
  for (const [name, value] of Object.entries(req.headers)) {
    // HTTP/2 pseudo-headers (":path", ":authority", …) are not header fields of the request.
    if (name.startsWith(":") || value === undefined) continue;
    if (Array.isArray(value)) for (const v of value) headers.append(name, v);
    else headers.set(name, value);
  }
  const authority = req.headers[":authority"];
  if (!headers.has("host") && typeof authority === "string") headers.set("host", authority);
  return headers;
}

/** The absolute URL of `req`. */
export function webUrl(req: HttpRequest, secure: boolean): URL {
  const authority = req.headers[":authority"] ?? req.headers.host ?? "localhost";
  return new URL(req.url ?? "/", `${secure ? "https" : "http"}://${String(authority)}`);
}

/**
 * A web `Request` for `req`. Its signal aborts when the client goes away (the response closes
 * before it ended), which is how a 2026-07-28 client cancels: it closes the response stream.
 */
export function toWebRequest(req: HttpRequest, res: HttpResponse, body: string | undefined, secure: boolean): Request {
  return webRequest(req, res, webUrl(req, secure), webHeaders(req), body);
}

/**
 * `toWebRequest` from headers and URL already built. A POST may come without its body when the
 * handler is given the parsed body instead (the SDK's `parsedBody`): nothing is copied twice.
 */
export function webRequest(req: HttpRequest, res: HttpResponse, url: URL, headers: Headers, body: string | undefined): Request {
  const gone = new AbortController();
  // 'close' of the response before it finished is a client that hung up (or cancelled). Not the
  // request's 'close': node emits that once the body is read.
  res.once("close", () => {
    if (!res.writableFinished) gone.abort(new McpError("cancelled", "the client closed the request"));
  });
  return new Request(url, {
    method: req.method ?? "GET",
    headers,
    ...(body === undefined ? {} : { body }),
    signal: gone.signal,
  });
}

/** Connection-specific fields that HTTP/2 forbids (RFC 9113 §8.2.2); HTTP/1.1 adds its own. */
const HOP_BY_HOP = new Set(["connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection"]);

function isEventStream(response: Response): boolean {
  return response.headers.get("content-type")?.startsWith("text/event-stream") === true;
}

/** Writes a web `Response` to `res`, streaming its body; stops reading it when the client goes away. */
export async function sendWebResponse(response: Response, res: HttpResponse, request?: Request): Promise<void> {
  const headers: Record<string, string | string[]> = {};
  response.headers.forEach((value, name) => {
    if (HOP_BY_HOP.has(name)) return;
    if (name === "set-cookie") headers[name] = response.headers.getSetCookie();
    else headers[name] = value;
  });
  if (res.destroyed) {
    await response.body?.cancel().catch(() => {});
    return;
  }
  if (response.body === null) {
    res.writeHead(response.status, headers);
    res.end();
    return;
  }
  if (!isEventStream(response)) {
    // A whole JSON answer: one write with its length, not a chunked stream read piece by piece.
    const bytes = new Uint8Array(await response.arrayBuffer());
    if (res.destroyed) return;
    headers["content-length"] = String(bytes.byteLength);
    res.writeHead(response.status, headers);
    (res as { end(chunk: Uint8Array): void }).end(bytes);
    return;
  }
  res.writeHead(response.status, headers);
  const reader = response.body.getReader();
  const stop = () => {
    reader.cancel().catch(() => {});
  };
  res.once("close", stop);
  request?.signal.addEventListener("abort", stop, { once: true });
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (res.destroyed) return;
      // Server-sent events must reach the client as they are written, not when a buffer fills.
      (res as { write(chunk: Uint8Array): boolean }).write(value);
    }
    if (!res.destroyed) res.end();
  } catch {
    if (!res.destroyed) res.destroy();
  } finally {
    res.removeListener("close", stop);
    request?.signal.removeEventListener("abort", stop);
  }
}
