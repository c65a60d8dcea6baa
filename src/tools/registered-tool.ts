/**
 * The shape every tool has once defined: what the session core looks up, authorises and runs.
 * Tools are built with `defineTypedTool` / `defineJsonTool` (define-tool.ts), never by hand, so
 * decoding, validation and error mapping are the same for every tool.
 */
import type { JsonObject } from "@bufbuild/protobuf";
import type { Command, Response, ToolDescriptor } from "../../gen/mcp/v1/command_pb.js";
import type { SecurityLevel } from "../../gen/mcp/v1/types_pb.js";

/** What a running tool handler gets besides its input. */
export interface ToolContext {
  /**
   * Aborted on timeout, Cancel or session end (ARCHITECTURE.md "Signals chain down"). Handlers
   * stop promptly, pass it to fs / child_process, and reject with `signal.reason`.
   */
  readonly signal: AbortSignal;
  /**
   * Whether `signal` has fired, without reading `signal`: the core creates the command's
   * AbortController only when a tool first reads `signal` (most tools finish without awaiting
   * anything abortable). Absent in contexts made by hand: read `signal.aborted` then.
   */
  readonly aborted?: boolean;
  /** The command's id, for logs and events. */
  readonly commandId: string;
  /** The principal's subject (token `sub`), when authenticated; for logs only. */
  readonly subject?: string;
  /**
   * Publishes an event for this command, e.g. `command.output` `{ stream: "stdout", text }` or
   * `command.progress` `{ … }` (PROTOCOL.md §3 `Event`). The core stamps seq, command id and time.
   */
  emit(type: string, data: JsonObject): void;
  /**
   * Streams `data` as the command's next `command.output` chunk(s) (`Event.chunk`, offsets counted
   * here, pieces over `max_chunk_bytes` split) and resolves when the client may take more: await
   * it before making the next chunk, and memory stays at about one chunk times the outbound buffer
   * whatever the total (docs/streams.md "Bytes and chunks"). Rejects with `invalid_argument` when
   * the call has no stream to carry chunks (unary Execute), and with `signal.reason` once aborted.
   * Absent in contexts made by hand.
   */
  writeChunk?(data: Uint8Array, options?: WriteChunkOptions): Promise<void>;
  /**
   * Whether `writeChunk` can carry chunks on this call (the session stream, ExecuteStream), so a
   * tool can choose between chunks and a bounded answer before it starts (`fs.read` text beyond
   * its cap). Absent in contexts made by hand: no chunks.
   */
  readonly streamsChunks?: boolean;
  /**
   * The command's uploaded input (`CommandInput` chunks on the session stream), in order, ending
   * after the chunk marked `last`; readable once. Throws `invalid_argument` when the call cannot
   * carry input (unary RPCs); iteration throws `signal.reason` once aborted, and the command fails
   * (`invalid_argument`, `message_too_large`, `overloaded`) when the client breaks the chunk rules.
   * Absent in contexts made by hand.
   */
  readChunks?(): AsyncIterable<Uint8Array>;
}

/** Options of `ToolContext.writeChunk`. */
export interface WriteChunkOptions {
  /**
   * This is the stream's final chunk (`Chunk.last`).
   * @default false
   */
  last?: boolean;
  /**
   * The whole stream's size in bytes, when known (`Chunk.total_size`).
   * @default unset
   */
  totalSize?: bigint;
}

/** A tool ready for the registry. */
export interface RegisteredTool {
  /** Unique name, e.g. `fs.read`. */
  readonly name: string;
  /** What `ListTools` shows; `input_schema` is always set. */
  readonly descriptor: ToolDescriptor;
  /** The permission needed to run it, e.g. `tool:fs.read` (PROTOCOL.md §5). */
  readonly permission: string;
  /** The minimum session security level that may run it. */
  readonly securityLevel: SecurityLevel;
  /**
   * Decodes and validates the command's input (typed `input` or JSON `arguments`; neither means
   * the tool's empty input), runs the handler and encodes its output: a typed input gets
   * `typedOutput`, JSON arguments (or none) get `output`.
   *
   * Returns the result itself when the handler answered synchronously (no promise on that path),
   * else a promise of it. Rejects (never throws) with `McpError` `invalid_argument` (with
   * `details.field`) for bad input, with what the handler threw when it is an `McpError`, with
   * `ctx.signal.reason` once aborted, and with `tool_failed` (cause kept) for any other exception.
   */
  run(command: Command, ctx: ToolContext): Response["result"] | Promise<Response["result"]>;
}
