/**
 * Bytes in bounded chunks (docs/streams.md "Bytes and chunks"): a running command's binary output
 * as `mcp.v1.Chunk`s on `command.output` events, paced by the outbound side it goes to, and its
 * uploaded input (`CommandInput` on the session stream) as an `AsyncIterable<Uint8Array>` with a
 * window the client keeps to. Memory per command stays at about one chunk times what the outbound
 * side buffers (output), or the input window (input), whatever the stream's total size.
 *
 * Nothing here runs per echo command: a command that never writes or reads chunks costs one
 * `undefined` field (`Inflight.chunks`).
 */
import { create, type JsonObject } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ChunkSchema, EventSchema, type Chunk, type Event } from "../../gen/mcp/v1/event_pb.js";
import type { ServerMessage } from "../../gen/mcp/v1/session_pb.js";
import { McpError } from "../errors.js";
import type { WriteChunkOptions } from "../tools/registered-tool.js";
import type { OutboundPace } from "./command-runner.js";
import type { Session } from "./session.js";

/**
 * Largest `Chunk.data` a client may send in a CommandInput, and the most one output chunk holds
 * (`Limits.max_chunk_bytes`). Larger tool writes are split. A quarter of the default
 * `maxMessageBytes` (4 MiB), so a chunk with its envelope always fits one message.
 */
export const MAX_CHUNK_BYTES = 1024 * 1024;

/**
 * Input bytes one command buffers before its tool consumes them (`Limits.input_window_bytes`):
 * the client keeps at most this much unconsumed, so an upload costs the server this at most.
 */
export const INPUT_WINDOW_BYTES = 4 * 1024 * 1024;

/** The event type that carries chunks (PROTOCOL.md §3: `command.output`). */
export const OUTPUT_EVENT = "command.output";

/** The event type by which a tool reports the input it consumed: `data.consumed`, bytes so far. */
export const INPUT_EVENT = "command.input";

/** Where a command's chunks go: the session's queue, or an ExecuteStream response. */
export type EmitChunk = (commandId: string, chunk: Chunk) => void;

/** The `command.output` event carrying `chunk` (seq is stamped by the session when it numbers it). */
export function chunkEvent(commandId: string, chunk: Chunk, nowMs: number): Event {
  return create(EventSchema, { type: OUTPUT_EVENT, commandId, chunk, time: timestampFromMs(nowMs) });
}

/** Emits a chunk on a session's stream; the event's seq equals the carrying ServerMessage's (like `Session.emitEvent`). */
export function emitSessionChunk(session: Session, commandId: string, chunk: Chunk, nowMs: number): void {
  const event = chunkEvent(commandId, chunk, nowMs);
  // Before emit: the resume ring encodes a chunk as it takes it (resume-ring.ts `put`).
  event.seq = session.lastSeq + 1n;
  session.emit({ case: "event", value: event });
}

/** Chunk bytes a ServerMessage carries (0 for everything else): what byte-bounded queues count. */
export function chunkBytesOf(m: ServerMessage): number {
  return m.message.case === "event" ? (m.message.value.chunk?.data.length ?? 0) : 0;
}

/** What the chunk functions need of a command in flight (the runner's `Inflight`). */
export interface ChunkCommand {
  readonly commandId: string;
  readonly settled: boolean;
  readonly aborted: boolean;
  readonly signal: AbortSignal;
  /** Created on first use. */
  chunks: CommandChunks | undefined;
}

/** A command's chunk state, both directions. */
export class CommandChunks {
  /** Offset of the next output byte. */
  outOffset = 0n;
  outEnded = false;
  /** The uploaded input, made when the first chunk arrives or the tool asks for it. */
  input: InputQueue | undefined = undefined;
}

/**
 * Writes `data` as the command's next output chunk(s) and resolves once the outbound side may take
 * more: after the chunk was handed on (one event-loop turn, so the session's per-tick flush ran)
 * and while the session or ExecuteStream is congested, until it drained. Detached sessions count
 * as congested: a stream paused by a disconnect waits for the resume instead of filling the
 * resume ring. Rejects with the abort reason once the command was aborted.
 */
export async function writeChunk(
  c: ChunkCommand,
  emit: EmitChunk | undefined,
  pace: OutboundPace | undefined,
  data: Uint8Array,
  options: WriteChunkOptions | undefined,
): Promise<void> {
  if (c.aborted) throw c.signal.reason;
  if (emit === undefined) {
    throw new McpError("invalid_argument", "binary output needs a stream: call this tool with ExecuteStream or on the session stream", {
      field: "binary",
    });
  }
  if (c.settled) throw new TypeError(`command "${c.commandId}" already answered: no more chunks`);
  const st = (c.chunks ??= new CommandChunks());
  if (st.outEnded) throw new TypeError(`command "${c.commandId}" already wrote its last chunk`);
  const last = options?.last === true;
  let from = 0;
  do {
    const to = Math.min(data.length, from + MAX_CHUNK_BYTES);
    const piece = from === 0 && to === data.length ? data : data.subarray(from, to);
    const isLast = last && to === data.length;
    const chunk = create(ChunkSchema, { data: piece, offset: st.outOffset, last: isLast });
    if (options?.totalSize !== undefined) chunk.totalSize = options.totalSize;
    st.outOffset += BigInt(piece.length);
    emit(c.commandId, chunk);
    from = to;
  } while (from < data.length);
  if (last) st.outEnded = true;
  // One turn: the session flushes per tick, so the transport has seen this chunk (and reported
  // congestion) before the tool makes the next one.
  await new Promise<void>((resolve) => setImmediate(resolve));
  while (pace !== undefined && pace.isCongested && pace.closeReason === undefined && !c.aborted) {
    await writableOrAborted(pace, c.signal);
  }
  if (c.aborted) throw c.signal.reason;
}

function writableOrAborted(pace: OutboundPace, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = () => {
      signal.removeEventListener("abort", done);
      resolve();
    };
    signal.addEventListener("abort", done, { once: true });
    pace.writable().then(done, done);
  });
}

/**
 * The command's uploaded input. A tool that takes none never calls it; chunks sent to it anyway
 * are buffered within the window and dropped with the command.
 */
export function readChunks(c: ChunkCommand, acceptsInput: boolean, ack: (consumed: number) => void): AsyncIterable<Uint8Array> {
  if (!acceptsInput) {
    throw new McpError("invalid_argument", "chunked input needs the session stream (CommandInput messages): this call came without one", {
      field: "chunked",
    });
  }
  const st = (c.chunks ??= new CommandChunks());
  const input = (st.input ??= new InputQueue());
  if (input.taken) throw new TypeError(`command "${c.commandId}": its input can be read once`);
  input.taken = true;
  return input.iterate(c, ack);
}

/** Takes a CommandInput's chunk for `c`; an McpError when the chunk is refused (the command then fails with it). */
export function pushInput(c: ChunkCommand, chunk: Chunk | undefined): McpError | undefined {
  const st = (c.chunks ??= new CommandChunks());
  const input = (st.input ??= new InputQueue());
  return input.push(c.commandId, chunk);
}

/** Ends a command's input reader with `reason` (the command settled or was aborted). */
export function abortInput(c: ChunkCommand, reason: unknown): void {
  c.chunks?.input?.fail(reason);
}

/** A bounded queue of input chunks with the one reader the tool gets. */
class InputQueue {
  taken = false;
  private items: Uint8Array[] = [];
  private head = 0;
  /** Offset the next chunk must have. */
  private expected = 0n;
  private ended = false;
  private buffered = 0;
  private failure: { reason: unknown } | undefined = undefined;
  private wake: (() => void) | undefined = undefined;

  push(commandId: string, chunk: Chunk | undefined): McpError | undefined {
    if (chunk === undefined) return new McpError("invalid_message", `CommandInput for "${commandId}" has no chunk`, { field: "chunk" });
    if (this.ended) {
      return new McpError("invalid_argument", `input of command "${commandId}" already ended (a chunk with last was sent)`, { field: "chunk" });
    }
    const n = chunk.data.length;
    if (n > MAX_CHUNK_BYTES) {
      return new McpError("message_too_large", `a chunk holds ${n} bytes, at most ${MAX_CHUNK_BYTES} (Limits.max_chunk_bytes)`);
    }
    if (chunk.offset !== this.expected) {
      return new McpError("invalid_argument", `input chunk at offset ${chunk.offset}, expected ${this.expected}: chunks come in order, without gaps`, {
        field: "chunk.offset",
      });
    }
    if (this.buffered + n > INPUT_WINDOW_BYTES) {
      return new McpError(
        "overloaded",
        `command "${commandId}" has ${this.buffered + n} input bytes its tool did not consume yet, the window is ${INPUT_WINDOW_BYTES} (wait for command.input events)`,
        { retryAfterMs: 100 },
      );
    }
    this.expected += BigInt(n);
    this.buffered += n;
    if (n > 0) this.items.push(chunk.data);
    if (chunk.last) this.ended = true;
    this.wake?.();
    return undefined;
  }

  fail(reason: unknown): void {
    if (this.failure !== undefined) return;
    this.failure = { reason };
    this.items = [];
    this.head = 0;
    this.buffered = 0;
    this.wake?.();
  }

  async *iterate(c: ChunkCommand, ack: (consumed: number) => void): AsyncGenerator<Uint8Array> {
    let consumed = 0;
    let acked = 0;
    for (;;) {
      if (this.failure !== undefined) throw this.failure.reason;
      if (c.aborted) throw c.signal.reason;
      if (this.head < this.items.length) {
        const data = this.items[this.head]!; // head < length
        this.items[this.head++] = EMPTY;
        if (this.head === this.items.length) {
          this.items = [];
          this.head = 0;
        }
        yield data;
        // The tool asked for more: what it had is consumed, and the window moves.
        this.buffered -= data.length;
        consumed += data.length;
        if (consumed - acked >= INPUT_WINDOW_BYTES / 4) {
          acked = consumed;
          ack(consumed);
        }
        continue;
      }
      if (this.ended) {
        if (consumed !== acked) ack(consumed);
        return;
      }
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = undefined;
    }
  }
}

const EMPTY = new Uint8Array(0);

/** `data` of a `command.input` event. */
export function inputAckData(consumed: number): JsonObject {
  return { consumed };
}
