/**
 * A session's reader queue (src/client/reader.ts): values in order whether pushed before or
 * while the consumer waits, an end after what was queued, an error thrown once, and the reader
 * leaves its session's set when the consumer stops.
 */
import { describe, expect, test } from "vitest";
import { createReader, type Reader } from "../../src/client/reader.js";

async function collect<T>(r: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const v of r) out.push(v);
  return out;
}

describe("createReader", () => {
  test("values pushed before and during the read arrive in order, then the end", async () => {
    const set = new Set<Reader<number>>();
    const r = createReader(set, false);
    expect(set.has(r)).toBe(true);
    r.push(1);
    r.push(2);
    const all = collect(r);
    await Promise.resolve();
    r.push(3);
    setTimeout(() => {
      r.push(4);
      r.end();
      r.push(5); // after the end: dropped
    }, 5);
    expect(await all).toEqual([1, 2, 3, 4]);
    expect(set.size).toBe(0);
  });

  test("an end with an error: the queued values first, then the error, once", async () => {
    const r = createReader(new Set<Reader<string>>(), false);
    r.push("a");
    r.end(new Error("gone"));
    const it = r[Symbol.asyncIterator]();
    expect(await it.next()).toEqual({ done: false, value: "a" });
    await expect(it.next()).rejects.toThrow("gone");
    expect(await it.next()).toEqual({ done: true, value: undefined });
  });

  test("a consumer waiting when the error comes gets it", async () => {
    const r = createReader(new Set<Reader<string>>(), false);
    const all = collect(r);
    setTimeout(() => r.end(new Error("broken")), 5);
    await expect(all).rejects.toThrow("broken");
  });

  test("a consumer that breaks out: the reader leaves the set and later pushes are dropped", async () => {
    const set = new Set<Reader<number>>();
    const r = createReader(set, false);
    r.push(1);
    r.push(2);
    for await (const v of r) {
      expect(v).toBe(1);
      break;
    }
    expect(set.size).toBe(0);
    r.push(3);
    expect(await r[Symbol.asyncIterator]().next()).toEqual({ done: true, value: undefined });
  });

  test("created on a closed session: ended at once, not in the set", async () => {
    const set = new Set<Reader<number>>();
    const r = createReader(set, true);
    expect(set.size).toBe(0);
    expect(await collect(r)).toEqual([]);
  });
});
