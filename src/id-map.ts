/**
 * A string-keyed table for entries that come and go at a high rate — commands and updates in
 * flight, by id: a `Map`, replaced by a fresh copy of itself every so many insertions.
 *
 * Why: when a V8 `Map` with steady insert/delete churn rehashes, its old backing table keeps a link
 * to the new one (for live iterators) and keeps its entries. Once one table of the chain has been
 * promoted to the old generation, the young-generation collector treats it as a root: every later
 * table, and every value that was in flight at any rehash, survives and is promoted until the next
 * full collection. A copy made well within one scavenge interval is never old while it churns, so
 * no chain forms. Measured on the client's session (64 calls in flight): 0.75–1.4 MB survived each
 * scavenge with a plain `Map`, ~50 KB with this one (bench/README.md "hotpath, December 2 2026").
 * A prototype-less object as a dictionary avoids the chain too, but interning each new id in V8's
 * string table cost more than the collections saved.
 */
export class IdMap<V> {
  private map = new Map<string, V>();
  private insertions = 0;

  get size(): number {
    return this.map.size;
  }

  get(id: string): V | undefined {
    return this.map.get(id);
  }

  has(id: string): boolean {
    return this.map.has(id);
  }

  set(id: string, value: V): this {
    // Amortized O(1): the copy happens after at least twice as many insertions as it copies.
    if (++this.insertions >= RENEW_AFTER && this.insertions >= 2 * this.map.size) {
      this.map = new Map(this.map);
      this.insertions = 0;
    }
    this.map.set(id, value);
    return this;
  }

  delete(id: string): boolean {
    return this.map.delete(id);
  }

  clear(): void {
    this.map = new Map();
    this.insertions = 0;
  }

  keys(): IterableIterator<string> {
    return this.map.keys();
  }

  values(): IterableIterator<V> {
    return this.map.values();
  }

  [Symbol.iterator](): IterableIterator<[string, V]> {
    return this.map[Symbol.iterator]();
  }
}

/**
 * Insertions between copies: at 100k insertions a second a copy every ~2.5 ms, against a scavenge
 * every few thousand calls; a copy of a 64-entry table costs a few µs.
 */
const RENEW_AFTER = 256;
