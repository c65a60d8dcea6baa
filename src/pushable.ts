/**
 * A minimal push-to-pull bridge: `push` from callbacks, `for await` on the other side. Used for a
 * bidi stream's request side, for fanning received messages out to readers, and for turning
 * callbacks (taps, store feeds, command events) into the server's streaming responses.
 *
 * With `sizeOf` + `highWaterBytes` it is also a paced queue (an `OutboundPace`): congested from
 * `highWaterBytes` queued bytes until the reader took it down to half, so a producer that waits on
 * `writable()` holds back instead of the queue growing (ExecuteStream's chunks on the server, a
 * chunk stream on the client: docs/streams.md "Bytes and chunks").
 */
import type { McpError } from "./errors.js";

export interface Pushable<T> extends AsyncIterable<T> {
  push(value: T): void;
  /** Ends iteration after what was pushed; with an error, iteration throws it. */
  end(error?: unknown): void;
  readonly ended: boolean;
  /** Values pushed and not yet read. */
  readonly size: number;
  /** Bytes (`sizeOf`) pushed and not yet taken by the reader; 0 without `sizeOf`. */
  readonly bytes: number;
  /** True while `bytes` reached `highWaterBytes` and did not drain to half of it yet; never without a bound. */
  readonly isCongested: boolean;
  /** Resolves once not congested (or ended); never rejects. */
  writable(): Promise<void>;
  /** Always undefined: the queue has no close reason of its own (its producer's abort stops a waiting writer). */
  readonly closeReason: McpError | undefined;
}

/** Options of `createPushable`. */
export interface PushableOptions<T> {
  /** How many bytes a value counts (0 for small ones). @default none: nothing is counted */
  sizeOf?: (value: T) => number;
  /** Queued bytes from which the queue is congested. @default Infinity (never congested) */
  highWaterBytes?: number;
}

export function createPushable<T>(options: PushableOptions<T> = {}): Pushable<T> {
  const sizeOf = options.sizeOf;
  const highWater = options.highWaterBytes ?? Infinity;
  let items: T[] = [];
  let head = 0;
  let bytes = 0;
  let congested = false;
  let ended = false;
  let failure: { error: unknown } | undefined;
  let wake: (() => void) | undefined;
  let waiters: (() => void)[] = [];
  const release = () => {
    congested = false;
    const ws = waiters;
    waiters = [];
    for (const w of ws) w();
  };
  return {
    push(value) {
      if (ended) return;
      items.push(value);
      if (sizeOf !== undefined) {
        bytes += sizeOf(value);
        if (bytes >= highWater) congested = true;
      }
      wake?.();
    },
    end(error) {
      if (ended) return;
      ended = true;
      if (error !== undefined) failure = { error };
      wake?.();
      release();
    },
    get ended() {
      return ended;
    },
    get size() {
      return items.length - head;
    },
    get bytes() {
      return bytes;
    },
    get isCongested() {
      return congested && !ended;
    },
    writable() {
      if (!congested || ended) return Promise.resolve();
      return new Promise<void>((resolve) => waiters.push(resolve));
    },
    get closeReason(): McpError | undefined {
      return undefined;
    },
    async *[Symbol.asyncIterator]() {
      try {
        for (;;) {
          if (head < items.length) {
            const v = items[head] as T; // head < length
            items[head++] = undefined as T; // let go of the value once handed on
            if (head === items.length) {
              items = [];
              head = 0;
            }
            yield v;
            // Asked for the next one: the reader took this one.
            if (sizeOf !== undefined) {
              bytes -= sizeOf(v);
              if (congested && bytes < highWater / 2) release();
            }
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
        // The reader stopped (done, threw or broke out): nothing more is taken, no writer waits.
        ended = true;
        items = [];
        head = 0;
        bytes = 0;
        release();
      }
    },
  };
}
