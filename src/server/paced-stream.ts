/**
 * The response side of a server-streaming RPC that a command writes chunks into (ExecuteStream):
 * a queue the RPC's generator drains, and the `OutboundPace` the command's chunks wait on, so a
 * client that reads slowly holds the tool back instead of the queue growing (PROTOCOL.md §6,
 * docs/streams.md "Bytes and chunks"). Congested from `highWaterBytes` queued chunk bytes until
 * the reader took it down to half.
 */
import type { McpError } from "../errors.js";
import type { OutboundPace } from "../session/command-runner.js";

/** A paced queue: push from callbacks, `for await` on the RPC's side. */
export interface PacedStream<T> extends AsyncIterable<T>, OutboundPace {
  push(value: T): void;
  /** Ends iteration after what was pushed; with an error, iteration throws it. */
  end(error?: unknown): void;
}

/** Creates a paced stream; `sizeOf` says how many bytes an item counts (0 for small ones). */
export function createPacedStream<T>(sizeOf: (value: T) => number, highWaterBytes: number): PacedStream<T> {
  let items: T[] = [];
  let head = 0;
  let bytes = 0;
  let ended = false;
  let failure: { error: unknown } | undefined;
  let wake: (() => void) | undefined;
  let waiters: (() => void)[] = [];
  const release = () => {
    const ws = waiters;
    waiters = [];
    for (const w of ws) w();
  };
  return {
    push(value) {
      if (ended) return;
      items.push(value);
      bytes += sizeOf(value);
      wake?.();
    },
    end(error) {
      if (ended) return;
      ended = true;
      if (error !== undefined) failure = { error };
      wake?.();
      release();
    },
    get isCongested() {
      return !ended && bytes >= highWaterBytes;
    },
    writable() {
      if (ended || bytes < highWaterBytes) return Promise.resolve();
      return new Promise<void>((resolve) => waiters.push(resolve));
    },
    // The command's own abort (the client went away) stops a waiting writer; the stream has no reason of its own.
    get closeReason(): McpError | undefined {
      return undefined;
    },
    async *[Symbol.asyncIterator]() {
      try {
        for (;;) {
          if (head < items.length) {
            const v = items[head] as T; // head < length
            items[head++] = undefined as T; // let go of the bytes once handed on
            if (head === items.length) {
              items = [];
              head = 0;
            }
            yield v;
            // Asked for the next one: the transport took this one.
            bytes -= sizeOf(v);
            if (waiters.length > 0 && bytes < highWaterBytes / 2) release();
            continue;
          }
          if (ended) {
            if (failure !== undefined) throw failure.error;
            return;
          }
          await new Promise<void>((r) => (wake = r));
          wake = undefined;
        }
      } finally {
        ended = true;
        release();
      }
    },
  };
}
