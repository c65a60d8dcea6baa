/**
 * A MessageSink for connect-node streaming handlers: batches from the session are queued and a
 * generator hands them to connect-node one by one. Bounded: `write` reports congestion at
 * `highWater`, and `drain` resolves once the queue is down to half of it.
 */
import type { ServerMessage } from "../../gen/mcp/v1/session_pb.js";
import type { MessageSink } from "../session/session.js";

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
  const size = () => queue.length - head;

  const sink: MessageSink = {
    write(batch) {
      if (closed) return true;
      for (const m of batch) queue.push(m);
      wakeReader?.();
      return size() < highWater;
    },
    drain() {
      if (closed || size() < highWater / 2) return Promise.resolve();
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
          if (head > 1024 && head * 2 > queue.length) {
            queue = queue.slice(head);
            head = 0;
          }
          if (drainWaiters.length > 0 && size() < highWater / 2) {
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
