/**
 * A minimal push-to-pull bridge: `push` from callbacks, `for await` on the other side. Used for a
 * bidi stream's request side, for fanning received messages out to readers, and for turning
 * callbacks (taps, store feeds, command events) into the server's streaming responses.
 */
export interface Pushable<T> extends AsyncIterable<T> {
  push(value: T): void;
  /** Ends iteration after what was pushed; with an error, iteration throws it. */
  end(error?: unknown): void;
  readonly ended: boolean;
  /** Values pushed and not yet read. */
  readonly size: number;
}

export function createPushable<T>(): Pushable<T> {
  let items: T[] = [];
  let head = 0;
  let ended = false;
  let failure: { error: unknown } | undefined;
  let wake: (() => void) | undefined;
  return {
    push(value) {
      if (ended) return;
      items.push(value);
      wake?.();
    },
    end(error) {
      if (ended) return;
      ended = true;
      if (error !== undefined) failure = { error };
      wake?.();
    },
    get ended() {
      return ended;
    },
    get size() {
      return items.length - head;
    },
    async *[Symbol.asyncIterator]() {
      for (;;) {
        if (head < items.length) {
          const v = items[head++] as T; // head < length
          if (head === items.length) {
            items = [];
            head = 0;
          }
          yield v;
          continue;
        }
        if (ended) {
          if (failure !== undefined) throw failure.error;
          return;
        }
        await new Promise<void>((r) => (wake = r));
        wake = undefined;
      }
    },
  };
}
