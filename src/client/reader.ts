/**
 * What a session's `messages()`, `contextSyncs()`, `events()` and `stateChanges()` return: a queue
 * the session pushes to and one consumer reads with `for await`. An iterator of its own rather
 * than pushable.ts's async generator: `next()` is one promise, already settled when a value is
 * queued, where a generator's `yield` adds an await and a resumption per value — with 1,000
 * watcher sessions in one process those hops were a large part of delivering one change
 * (bench/scale.ts). It leaves its session's set of readers once the consumer stops.
 */

/** One reader's queue. */
export interface Reader<T> extends AsyncIterable<T> {
  /** Queues a value (dropped once the reader ended). */
  push(value: T): void;
  /** Ends iteration after what was queued; with an error, iteration then throws it. */
  end(error?: unknown): void;
}

const DONE: IteratorReturnResult<undefined> = Object.freeze({ done: true, value: undefined });

class ReaderQueue<T> implements Reader<T>, AsyncIterator<T, undefined> {
  private items: T[] = [];
  private head = 0;
  private ended = false;
  private failure: { error: unknown } | undefined;
  private waiting: { resolve: (r: IteratorResult<T, undefined>) => void; reject: (e: unknown) => void } | undefined;

  constructor(private readonly readers: Set<Reader<T>>) {}

  push(value: T): void {
    if (this.ended) return;
    const w = this.waiting;
    if (w !== undefined) {
      this.waiting = undefined;
      w.resolve({ done: false, value });
    } else {
      this.items.push(value);
    }
  }

  end(error?: unknown): void {
    if (this.ended) return;
    this.ended = true;
    this.readers.delete(this);
    if (error !== undefined) this.failure = { error };
    const w = this.waiting;
    if (w === undefined) return;
    this.waiting = undefined;
    this.settleEnd(w.resolve, w.reject);
  }

  next(): Promise<IteratorResult<T, undefined>> {
    if (this.head < this.items.length) {
      const value = this.items[this.head] as T; // head < length
      this.items[this.head++] = undefined as T; // let go of the value once handed on
      if (this.head === this.items.length) {
        this.items = [];
        this.head = 0;
      }
      return Promise.resolve({ done: false, value });
    }
    return new Promise((resolve, reject) => {
      if (this.ended) this.settleEnd(resolve, reject);
      else this.waiting = { resolve, reject };
    });
  }

  /** The consumer stopped (break, return, a throw in its loop): nothing more is queued. */
  return(): Promise<IteratorResult<T, undefined>> {
    this.ended = true;
    this.failure = undefined;
    this.readers.delete(this);
    this.items = [];
    this.head = 0;
    const w = this.waiting;
    this.waiting = undefined;
    w?.resolve(DONE);
    return Promise.resolve(DONE);
  }

  [Symbol.asyncIterator](): AsyncIterator<T, undefined> {
    return this;
  }

  private settleEnd(resolve: (r: IteratorResult<T, undefined>) => void, reject: (e: unknown) => void): void {
    const f = this.failure;
    // Thrown once; after that the reader is simply done.
    this.failure = undefined;
    if (f !== undefined) reject(f.error);
    else resolve(DONE);
  }
}

/** A reader in `readers` (the session pushes to each), or an ended one when `closed`. */
export function createReader<T>(readers: Set<Reader<T>>, closed: boolean): Reader<T> {
  const r = new ReaderQueue<T>(readers);
  if (closed) r.end();
  else readers.add(r);
  return r;
}
