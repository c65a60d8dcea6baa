/**
 * Bytes on a client session (docs/streams.md "Bytes and chunks"): a command's chunked output as an
 * `AsyncIterable<Uint8Array>` (`readChunks` / `callChunks`), and an upload of any size sent as
 * `CommandInput` chunks within the server's input window (`uploadChunks`), e.g. `fs.write` with
 * `chunked`. Built on the public `McpSession` API only.
 */
import { create, type JsonObject, type MessageInitShape } from "@bufbuild/protobuf";
import { CommandSchema, type Response } from "../../gen/mcp/v1/command_pb.js";
import type { Event } from "../../gen/mcp/v1/event_pb.js";
import { McpError, fromProtoError } from "../errors.js";
import { createPushable } from "../pushable.js";
import type { McpSession } from "./session.js";

/** A command's chunked output. Breaking out of `for await` (or `return()`) cancels the command. */
export interface ChunkStream extends AsyncIterable<Uint8Array> {
  /** The command's id. */
  readonly commandId: string;
  /**
   * The command's Response once it answered (after the last chunk), e.g. `fs.read`'s size and
   * sha256. A failed command's error is in the Response (iteration throws it as an McpError);
   * rejects only when the session closed first.
   */
  readonly response: Promise<Response>;
  /**
   * Received bytes the reader has not taken yet: what this stream buffers in the process now.
   * Stays about `highWaterBytes` (plus what was on its way when the session stopped reading).
   */
  readonly bufferedBytes: number;
}

/** Options of `readChunks` / `callChunks`. */
export interface ChunkReadOptions {
  /** Time allowed, in ms; 0 = the server's default. @default 0 */
  timeoutMs?: number;
  /** Aborting cancels the command (iteration then throws `cancelled`). @default undefined */
  signal?: AbortSignal;
}

/** Options of `readChunks` / `callChunks` (reading only). */
export interface ChunkStreamOptions extends ChunkReadOptions {
  /**
   * Received bytes the reader has not taken yet from which the session stops reading its stream
   * (`McpSession.holdReading`) until the reader took them down to half: the server then waits,
   * bounded, instead of this process buffering the file. Everything else on the session waits
   * meanwhile (one stream, head-of-line); `Infinity` never holds.
   * @default 4194304 (4 MiB)
   */
  highWaterBytes?: number;
}

/** Options of `uploadChunks`. */
export interface ChunkUploadOptions extends ChunkReadOptions {
  /**
   * Bytes per CommandInput chunk (capped by the server's `Limits.max_chunk_bytes`).
   * @default 262144 (256 KiB)
   */
  chunkBytes?: number;
}

const DEFAULT_CHUNK_BYTES = 256 * 1024;
const DEFAULT_HIGH_WATER_BYTES = 4 * 1024 * 1024;
const byteLength = (b: Uint8Array) => b.length;
/** What a server that does not say (`Limits.input_window_bytes` = 0) is assumed to take. */
const FALLBACK_WINDOW_BYTES = 1024 * 1024;
/** How often an upload waiting for acks or its Response checks that its stream is still the session's, in ms. */
const STREAM_CHECK_MS = 100;

let counter = 0;
const freshId = () => `chunks-${Date.now().toString(36)}-${(++counter).toString(36)}`;

/**
 * Runs `command` and yields its output chunks' bytes in order; iteration ends after the Response,
 * or throws its error. The command starts on the first `next()`.
 *
 * @example
 * const file = session.callChunks("fs.read", { path: "big.bin", binary: true });
 * for await (const bytes of file) out.write(bytes);
 * console.log((await file.response).result);
 */
export function readChunks(session: McpSession, command: MessageInitShape<typeof CommandSchema>, options: ChunkStreamOptions = {}): ChunkStream {
  const id = command.id !== undefined && command.id !== "" ? command.id : freshId();
  const highWaterBytes = options.highWaterBytes ?? DEFAULT_HIGH_WATER_BYTES;
  if (!(highWaterBytes > 0)) throw new TypeError('"highWaterBytes" option must be > 0');
  const chunks = createPushable<Uint8Array>({ sizeOf: byteLength, highWaterBytes });
  let release: (() => void) | undefined;
  const unhold = () => {
    const r = release;
    release = undefined;
    r?.();
  };
  let resolveResponse!: (r: Response) => void;
  let rejectResponse!: (e: unknown) => void;
  const response = new Promise<Response>((resolve, reject) => {
    resolveResponse = resolve;
    rejectResponse = reject;
  });
  // Callers that only iterate never look at it: its rejection must not float.
  response.catch(() => {});
  let started = false;
  let done = false;
  let expected: bigint | undefined;
  const start = () => {
    started = true;
    const onEvent = (e: Event) => {
      const c = e.chunk;
      if (c === undefined || done) return;
      // Offsets must follow on: a gap would be silent corruption, so it is an error instead.
      if (expected !== undefined && c.offset !== expected) {
        chunks.end(new McpError("invalid_message", `chunk at offset ${c.offset}, expected ${expected}`));
        done = true;
        session.cancel(id);
        return;
      }
      expected = c.offset + BigInt(c.data.length);
      if (c.data.length === 0) return;
      chunks.push(c.data);
      if (release === undefined && chunks.isCongested) {
        release = session.holdReading();
        // Resolves once drained to half, or ended (done, failed, the reader left): read on.
        void chunks.writable().then(unhold);
      }
    };
    session
      .execute(create(CommandSchema, { ...command, id, timeoutMs: options.timeoutMs ?? command.timeoutMs ?? 0 }), {
        onEvent,
        ...(options.signal === undefined ? {} : { signal: options.signal }),
      })
      .then(
        (r) => {
          done = true;
          resolveResponse(r);
          chunks.end(r.result.case === "error" ? fromProtoError(r.result.value) : undefined);
        },
        (e: unknown) => {
          done = true;
          chunks.end(e);
          rejectResponse(e);
        },
      );
  };
  return {
    commandId: id,
    response,
    get bufferedBytes() {
      return chunks.bytes;
    },
    [Symbol.asyncIterator]() {
      if (!started) start();
      const it = chunks[Symbol.asyncIterator]();
      return {
        next: () => it.next(),
        return: async () => {
          // The caller stopped reading: the rest is not wanted.
          if (!done) session.cancel(id);
          done = true;
          chunks.end();
          await it.return?.();
          return { done: true, value: undefined };
        },
      };
    },
  };
}

/** `readChunks` for a tool with JSON arguments, e.g. `callChunks(session, "fs.read", { path, binary: true })`. */
export function callChunks(session: McpSession, tool: string, args: JsonObject = {}, options: ChunkStreamOptions = {}): ChunkStream {
  return readChunks(session, { tool, payload: { case: "arguments", value: args } }, options);
}

/**
 * Runs `command` and sends `source` as its input in CommandInput chunks, keeping at most the
 * server's input window unconsumed (it acknowledges with `command.input` events), then a final
 * chunk marked `last`. Resolves with the command's Response. Aborting, a failed Response or a
 * failing `source` stop the upload (the command is cancelled; `fs.write` then leaves the target
 * as it was).
 *
 * An upload lives on one stream: chunks sent on a stream that broke are lost, and CommandInput is
 * not re-sent. So when the session's stream changes before the Response (a reconnect, resumed or
 * not), the upload cancels its command and rejects with `TRANSPORT connection_lost` (retryable):
 * upload again. A Response that was already on its way wins (the upload was complete).
 */
export async function uploadChunks(
  session: McpSession,
  command: MessageInitShape<typeof CommandSchema>,
  source: AsyncIterable<Uint8Array> | Uint8Array,
  options: ChunkUploadOptions = {},
): Promise<Response> {
  const id = command.id !== undefined && command.id !== "" ? command.id : freshId();
  const chunkBytes = options.chunkBytes ?? DEFAULT_CHUNK_BYTES;
  if (!Number.isSafeInteger(chunkBytes) || chunkBytes <= 0) throw new TypeError('"chunkBytes" option must be a positive integer');
  // Start on a live stream: the one this upload's chunks go on. A ping resolves once a
  // reconnecting session is back (and rejects once it is closed for good).
  while (session.state !== "open") await session.ping();
  const stream = session.handshake;
  const moved = () => session.state !== "open" || session.handshake !== stream;
  const limits = stream.limits;
  const window = limits?.inputWindowBytes || FALLBACK_WINDOW_BYTES;
  const maxChunk = Math.min(chunkBytes, limits?.maxChunkBytes || DEFAULT_CHUNK_BYTES);
  let consumed = 0;
  let settled = false;
  let wake: (() => void) | undefined;
  const responded = session
    .execute(create(CommandSchema, { ...command, id, timeoutMs: options.timeoutMs ?? command.timeoutMs ?? 0 }), {
      onEvent(e) {
        const n = e.type === "command.input" ? e.data?.["consumed"] : undefined;
        if (typeof n === "number" && n > consumed) {
          consumed = n;
          wake?.();
        }
      },
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    })
    .finally(() => {
      settled = true;
      wake?.();
    });
  // A failed send loop still settles `responded`; this keeps a rejection from floating meanwhile.
  responded.catch(() => {});
  const stopped = () => settled || options.signal?.aborted === true || moved();
  /**
   * Waits for an ack or the Response, at most `STREAM_CHECK_MS`: a broken stream sends neither,
   * and the session has no state hook one call can leave again, so a wait looks at the stream
   * that often.
   */
  const nextWake = () =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, STREAM_CHECK_MS);
      wake = () => {
        clearTimeout(timer);
        resolve();
      };
    }).finally(() => (wake = undefined));
  let offset = 0;
  const send = async (data: Uint8Array, last: boolean): Promise<boolean> => {
    while (!stopped() && offset + data.length - consumed > window) await nextWake();
    if (stopped()) return false;
    session.send({ case: "commandInput", value: { commandId: id, chunk: { data, offset: BigInt(offset), last } } });
    offset += data.length;
    return true;
  };
  const pieces = source instanceof Uint8Array ? [source] : source;
  let going = true;
  try {
    for await (const piece of pieces) {
      for (let from = 0; going && from < piece.length; from += maxChunk) going = await send(piece.subarray(from, from + maxChunk), false);
      if (!going) break;
    }
    if (going) await send(new Uint8Array(0), true);
  } catch (e) {
    // The source failed: the server must not wait for the rest until the command's timeout.
    if (!settled) session.cancel(id);
    throw e;
  }
  // Sent whole or stopped: the Response is on its way unless the stream broke before it came.
  while (!settled && !moved() && options.signal?.aborted !== true) await nextWake();
  const lost = !settled && moved();
  if (lost) session.cancel(id);
  const r = await responded;
  if (lost && r.result.case === "error" && r.result.value.code === "cancelled") {
    throw new McpError("connection_lost", `the session's stream broke during the upload of command "${id}", which was cancelled: upload again`, {
      cause: fromProtoError(r.result.value),
    });
  }
  return r;
}
