/**
 * Malformed requests on connect-node's paths get the §7 code (issue 12 item 4). connect-node
 * decodes a unary or server-streaming request before any of our code runs, and answers a body
 * that is not protobuf with `internal` ("parse binary: …", HTTP 500), a compressed frame it was
 * not told about with `internal`, and an oversized one without our `mcp.v1.Error` detail. So for
 * those methods the request message is decoded here first, exactly as connect-node will decode
 * it (the same protobuf-es calls, options and limits); a request that fails is handed on as a
 * valid empty message of the same protocol, with the refusal in its context values, and the
 * route's guard (routes.ts) fails the RPC with it — connect-node still writes the error in the
 * request's own protocol (Connect JSON, gRPC trailers, gRPC-Web trailer frame), details included.
 *
 * Bidi streams are not checked here: the session stream answers an undecodable message itself
 * with an in-stream `Error{PROTOCOL, invalid_message}` (connection.ts `readError`). The node:http2
 * fast paths decode their own frames (session-h2.ts, unary-h2.ts).
 */
import { brotliDecompressSync, gunzipSync } from "node:zlib";
import { fromBinary, fromJsonString, type DescMessage } from "@bufbuild/protobuf";
import { createContextKey, createContextValues, type ConnectRouter } from "@connectrpc/connect";
import type { UniversalHandler, UniversalServerRequest } from "@connectrpc/connect/protocol";
import { McpError } from "../errors.js";

/** The refusal of a request that could not be decoded; read by the routes' guards. */
export const kRequestRefusal = createContextKey<McpError | undefined>(undefined, { description: "mcp request refusal" });

/** How a request's message is carried, from its content type. */
interface Carriage {
  /** A length-prefixed envelope (gRPC, gRPC-Web, Connect streaming) or the bare message (Connect unary). */
  enveloped: boolean;
  json: boolean;
  /** The header naming the request's compression. */
  encodingHeader: string;
}

function carriageOf(contentType: string | null): Carriage | undefined {
  if (contentType === null) return undefined;
  const ct = contentType.split(";", 1)[0]!.trim().toLowerCase(); // split always yields one part
  switch (ct) {
    case "application/proto":
      return { enveloped: false, json: false, encodingHeader: "content-encoding" };
    case "application/json":
      return { enveloped: false, json: true, encodingHeader: "content-encoding" };
    case "application/connect+proto":
      return { enveloped: true, json: false, encodingHeader: "connect-content-encoding" };
    case "application/connect+json":
      return { enveloped: true, json: true, encodingHeader: "connect-content-encoding" };
    case "application/grpc":
    case "application/grpc+proto":
    case "application/grpc-web":
    case "application/grpc-web+proto":
      return { enveloped: true, json: false, encodingHeader: "grpc-encoding" };
    case "application/grpc+json":
    case "application/grpc-web+json":
      return { enveloped: true, json: true, encodingHeader: "grpc-encoding" };
    default:
      // Anything else (grpc-web-text, unknown types) is connect-node's to answer (415 and the like).
      return undefined;
  }
}

/** Decompresses `bytes` with `encoding`; undefined for an encoding this check does not know. */
function decompress(encoding: string, bytes: Uint8Array, maxMessageBytes: number): Uint8Array | McpError | undefined {
  const inflate = encoding === "gzip" ? gunzipSync : encoding === "br" ? brotliDecompressSync : undefined;
  if (inflate === undefined) return undefined;
  try {
    return inflate(bytes, { maxOutputLength: maxMessageBytes + 1 });
  } catch (e) {
    if ((e as { code?: unknown }).code === "ERR_BUFFER_TOO_LARGE") return tooLarge(`more than ${maxMessageBytes}`, maxMessageBytes);
    return new McpError("invalid_message", `the request's ${encoding} data could not be decompressed: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
}

const tooLarge = (size: number | string, max: number) => new McpError("message_too_large", `message of ${size} bytes exceeds max_message_bytes ${max}`);

/**
 * The request message's bytes, or the refusal. Undefined when the request is one this check
 * leaves to connect-node (an unknown compression).
 */
function messageBytes(body: Uint8Array, carriage: Carriage, encoding: string, maxMessageBytes: number): Uint8Array | McpError | undefined {
  if (!carriage.enveloped) {
    if (encoding === "identity") return body.length > maxMessageBytes ? tooLarge(body.length, maxMessageBytes) : body;
    const out = decompress(encoding, body, maxMessageBytes);
    return out instanceof Uint8Array && out.length > maxMessageBytes ? tooLarge(out.length, maxMessageBytes) : out;
  }
  if (body.length < 5) return new McpError("invalid_message", `the request ended inside a frame header (${body.length} of 5 bytes)`);
  const flags = body[0]!; // length >= 5
  const length = new DataView(body.buffer, body.byteOffset, body.byteLength).getUint32(1);
  if (length > maxMessageBytes) return tooLarge(length, maxMessageBytes);
  if (body.length < 5 + length) return new McpError("invalid_message", `the request ended inside a frame (${body.length - 5} of ${length} bytes)`);
  const payload = body.subarray(5, 5 + length);
  if ((flags & 0x01) === 0) return payload;
  if (encoding === "identity") {
    return new McpError("invalid_message", `a compressed frame arrived, but the request names no compression (${carriage.encodingHeader})`);
  }
  const out = decompress(encoding, payload, maxMessageBytes);
  return out instanceof Uint8Array && out.length > maxMessageBytes ? tooLarge(out.length, maxMessageBytes) : out;
}

/** Decodes as connect-node does (its default JSON options ignore unknown fields); the refusal when that fails. */
function decodeFailure(desc: DescMessage, bytes: Uint8Array, json: boolean): McpError | undefined {
  try {
    if (json) fromJsonString(desc, new TextDecoder().decode(bytes), { ignoreUnknownFields: true });
    else fromBinary(desc, bytes);
    return undefined;
  } catch (e) {
    return new McpError("invalid_message", `could not decode a ${desc.typeName}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
}

/** A valid empty request message in the request's own carriage. */
function emptyMessage(carriage: Carriage): Uint8Array {
  const msg = carriage.json ? new TextEncoder().encode("{}") : new Uint8Array(0);
  if (!carriage.enveloped) return msg;
  const out = new Uint8Array(5 + msg.length);
  new DataView(out.buffer).setUint32(1, msg.length);
  out.set(msg, 5);
  return out;
}

async function* once(bytes: Uint8Array): AsyncIterable<Uint8Array> {
  yield bytes;
}

function concat(chunks: Uint8Array[], total: number): Uint8Array {
  if (chunks.length === 1) return chunks[0]!; // length checked
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/** Wraps one handler of a unary or server-streaming method (see the file comment). */
function checked(handler: UniversalHandler, maxMessageBytes: number): UniversalHandler {
  const desc = handler.method.input;
  // Room for an envelope and for compression that does not shrink the data.
  const maxBodyBytes = maxMessageBytes + 5 + 1024;
  const fn = async (req: UniversalServerRequest) => {
    const carriage = req.method === "POST" ? carriageOf(req.header.get("content-type")) : undefined;
    const body = req.body;
    if (carriage === undefined || body === null || typeof body !== "object" || !(Symbol.asyncIterator in body)) return handler(req);
    const encoding = (req.header.get(carriage.encodingHeader) ?? "identity").trim().toLowerCase();
    const chunks: Uint8Array[] = [];
    let total = 0;
    let refusal: McpError | undefined;
    try {
      for await (const chunk of body as AsyncIterable<Uint8Array>) {
        total += chunk.length;
        if (total > maxBodyBytes) {
          refusal = tooLarge(`more than ${maxMessageBytes}`, maxMessageBytes);
          break;
        }
        chunks.push(chunk);
      }
    } catch (e) {
      // The client went away while sending: connect-node meets the same error reading the body.
      return handler({ ...req, body: (async function* () { throw e; })() });
    }
    if (refusal === undefined) {
      const all = concat(chunks, total);
      const bytes = messageBytes(all, carriage, encoding, maxMessageBytes);
      if (bytes === undefined) return handler({ ...req, body: once(all) });
      refusal = bytes instanceof McpError ? bytes : decodeFailure(desc, bytes, carriage.json);
      if (refusal === undefined) return handler({ ...req, body: once(all) });
    }
    req.header.delete(carriage.encodingHeader);
    req.header.delete("content-length");
    // Never without the refusal: the empty message must not run as a request of its own.
    const contextValues = (req.contextValues ?? createContextValues()).set(kRequestRefusal, refusal);
    return handler({ ...req, contextValues, body: once(emptyMessage(carriage)) });
  };
  return Object.assign(fn, {
    protocolNames: handler.protocolNames,
    service: handler.service,
    method: handler.method,
    requestPath: handler.requestPath,
    allowedMethods: handler.allowedMethods,
    supportedContentType: handler.supportedContentType,
  });
}

/**
 * Replaces, in `router`, every handler of a method that takes one request message (unary and
 * server-streaming) with one that checks the message first. Call after the routes are registered.
 */
export function checkRequestMessages(router: ConnectRouter, maxMessageBytes: number): void {
  const handlers = router.handlers;
  for (let i = 0; i < handlers.length; i++) {
    const h = handlers[i]!; // i < length
    const kind = h.method.methodKind;
    if (kind === "unary" || kind === "server_streaming") handlers[i] = checked(h, maxMessageBytes);
  }
}
