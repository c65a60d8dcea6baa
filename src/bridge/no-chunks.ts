/**
 * A model reads text, not chunks: over the session stream (`clientBackend`) a command may answer
 * with `Chunk`s (docs/streams.md "Bytes and chunks") where the in-process `/mcp` bridge runs it
 * without them. This turns a session-stream call into the answer of a call that carries no
 * chunks, so both bridges give a model the same result for the same file:
 *
 * - a text `fs.read` asks for at most `maxTextBytes` (the server's text cap by default), so the
 *   tool itself answers `content` with `truncated`, `next_offset` and `size` — its own cut before
 *   a split character, nothing re-implemented here. Should a server with a lower cap stream that
 *   range anyway, its chunks (at most `maxTextBytes`, so bounded) become the `content`.
 * - any other chunk output (a `binary` read, a tool's bytes) cannot reach a model: the first
 *   chunk cancels the command and the call fails with `invalid_argument`, as on `/mcp`, where
 *   writing a chunk fails the same way.
 */
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import type { Response } from "../../gen/mcp/v1/command_pb.js";
import type { Chunk } from "../../gen/mcp/v1/event_pb.js";
import { McpError, toProtoError } from "../errors.js";
import { DEFAULT_MAX_READ_BYTES } from "../tools/builtin/options.js";
import { completeUtf8Length } from "../tools/builtin/utf8.js";

/** `maxTextBytes` checked, or its default; TypeError on misuse. */
export function resolveMaxTextBytes(maxTextBytes: number | undefined): number {
  // By default the server's default cap; a bridge in front of a server with another cap is told it.
  const n = maxTextBytes ?? DEFAULT_MAX_READ_BYTES;
  if (!Number.isSafeInteger(n) || n <= 0) throw new TypeError('"maxTextBytes" option must be a positive integer');
  return n;
}

/** One call's view of its chunks. */
export interface ChunkPolicy {
  /** The arguments to send (a text read's `length` capped). */
  readonly args: JsonObject;
  /** Takes a chunk; false when the call cannot take it (then cancel it and answer `refusal`). */
  accept(chunk: Chunk): boolean;
  /** Why the call was cut, once `accept` said false. */
  readonly refusal: McpError | undefined;
  /** The call's answer from the server's Response. */
  answer(response: Response): Response;
}

/** The policy for one call of `tool` with `args`. */
export function chunkPolicy(tool: string, args: JsonObject, maxTextBytes: number): ChunkPolicy {
  return tool === "fs.read" && args["binary"] !== true ? textRead(args, maxTextBytes) : noChunks(args);
}

function noChunks(args: JsonObject): ChunkPolicy {
  let refusal: McpError | undefined;
  return {
    args,
    accept() {
      // The same code and field as a chunk written where the call cannot carry it (/mcp, unary).
      refusal ??= new McpError("invalid_argument", "binary output cannot reach a model through the bridge: read it with our client (ExecuteStream or the session stream)", {
        field: "binary",
      });
      return false;
    },
    get refusal() {
      return refusal;
    },
    answer: (response) => refused(response, refusal),
  };
}

function textRead(args: JsonObject, maxTextBytes: number): ChunkPolicy {
  const parts: Uint8Array[] = [];
  let received = 0;
  let refusal: McpError | undefined;
  return {
    args: capLength(args, maxTextBytes),
    accept(chunk) {
      received += chunk.data.length;
      // The capped length bounds what the server sends; one that sends more is cut here.
      if (received > maxTextBytes) {
        refusal ??= new McpError("message_too_large", `the server sent more than the bridge's text limit of ${maxTextBytes} bytes`);
        return false;
      }
      parts.push(chunk.data);
      return true;
    },
    get refusal() {
      return refusal;
    },
    answer(response) {
      if (refusal !== undefined) return refused(response, refusal);
      const output = response.result.case === "output" ? response.result.value : undefined;
      if (output?.["chunked"] !== true) return response;
      return { ...response, result: { case: "output", value: textOutput(output, Buffer.concat(parts), args) } };
    },
  };
}

/**
 * A text read's `length` at most `maxTextBytes` (0 or absent = to the end). A `length` that is not
 * a count is left for the tool to refuse with its own error.
 */
function capLength(args: JsonObject, maxTextBytes: number): JsonObject {
  const length = count(args["length"] ?? 0);
  if (length === undefined || (length !== 0 && length <= maxTextBytes)) return args;
  return { ...args, length: maxTextBytes };
}

function count(v: JsonValue): number | undefined {
  const n = typeof v === "number" ? v : typeof v === "string" && /^\d+$/.test(v) ? Number(v) : Number.NaN;
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}

/**
 * The chunked Response's output as the tool answers without chunks: the bytes as `content`, cut
 * before a character the range split (as fs.read does, so `next_offset` reads on from a whole
 * character), without `chunked` and the `sha256` of bytes that are now text.
 */
function textOutput(output: JsonObject, bytes: Buffer, args: JsonObject): JsonObject {
  const { chunked: _chunked, sha256: _sha256, ...rest } = output;
  const offset = count(args["offset"] ?? 0) ?? 0;
  const size = count(output["size"] ?? 0) ?? 0;
  const end = offset + bytes.length < size ? completeUtf8Length(bytes) : bytes.length;
  const nextOffset = offset + end;
  return { ...rest, content: bytes.subarray(0, end).toString("utf8"), nextOffset: String(nextOffset), truncated: nextOffset < size };
}

/** `response`, or the refusal in its place when the bridge cut the call. */
function refused(response: Response, refusal: McpError | undefined): Response {
  if (refusal === undefined) return response;
  return { ...response, result: { case: "error", value: { ...toProtoError(refusal), commandId: response.commandId } } };
}
