/**
 * A MessageSink for connect-node streaming handlers: batches from the session are queued and a
 * generator hands them to connect-node one by one. Bounded: `write` reports congestion at
 * `highWater`, and `drain` resolves once the queue is down to half of it.
 */
import type { ServerMessage } from "../../gen/mcp/v1/session_pb.js";
import type { MessageSink } from "../session/session.js";
import { chunkBytesOf } from "../session/chunks.js";

/** Chunk bytes (docs/streams.md "Bytes and chunks") queued before the sink reports congestion, whatever the message count. */
const HIGH_WATER_CHUNK_BYTES = 1024 * 1024;

export interface QueueSink {
  readonly sink: MessageSink;
  /** Yields queued messages until the sink is closed and empty, or `signal` aborts. */
  messages(signal: AbortSignal): AsyncGenerator<ServerMessage>;
}

export function createQueueSink(highWater: number): QueueSink {
  let queue: ServerMessage[] = [];
  let head = 0;
  let closed = false;
  let wakeReader: (() => void) | undefined;
  let drainWaiters: (() => void)[] = [];
  let chunkBytes = 0;
  const size = () => queue.length - head;
  const below = () => size() < highWater / 2 && chunkBytes < HIGH_WATER_CHUNK_BYTES / 2;

  const sink: MessageSink = {
    write(batch) {
      if (closed) return true;
      for (const m of batch) {
        queue.push(m);
        chunkBytes += chunkBytesOf(m);
      }
      wakeReader?.();
      return size() < highWater && chunkBytes < HIGH_WATER_CHUNK_BYTES;
    },
    drain() {
      if (closed || below()) return Promise.resolve();
      return new Promise((resolve) => drainWaiters.push(resolve));
    },
    close() {
      closed = true;
      wakeReader?.();
      for (const w of drainWaiters) w();
      drainWaiters = [];
    },
  };

  async function* messages(signal: AbortSignal): AsyncGenerator<ServerMessage> {
    const onAbort = () => sink.close();
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      for (;;) {
        if (head < queue.length) {
          const m = queue[head++]!; // head < length
          chunkBytes -= chunkBytesOf(m);
          if (head > 1024 && head * 2 > queue.length) {
            queue = queue.slice(head);
            head = 0;
          }
          if (drainWaiters.length > 0 && below()) {
            for (const w of drainWaiters) w();
            drainWaiters = [];
          }
          yield m;
          continue;
        }
        if (closed || signal.aborted) return;
        await new Promise<void>((resolve) => (wakeReader = resolve));
        wakeReader = undefined;
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
      sink.close();
    }
  }

  return { sink, messages };
}
