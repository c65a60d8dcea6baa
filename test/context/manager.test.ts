/**
 * The context manager (src/context/manager.ts) over every store: validation, limits, sync,
 * watch and the PROTOCOL.md §8 guarantees under concurrency.
 */
import { create, fromJson, toBinary, toJson, type JsonValue, type MessageInitShape } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { afterEach, describe, expect, test } from "vitest";
import {
  ContextSyncSchema,
  type ContextOperationSchema,
  type ContextSync,
  ContextUpdateSchema,
} from "../../gen/mcp/v1/context_pb.js";
import { createContextManager, type ContextManager, type ContextManagerOptions } from "../../src/context/manager.js";
import { cleanupStores, storeFixtures, type StoreFixture } from "./stores.js";

type OpInit = MessageInitShape<typeof ContextOperationSchema>;
type UpdateInit = MessageInitShape<typeof ContextUpdateSchema>;

const put = (key: string, value: JsonValue): OpInit => ({
  op: { case: "put", value: { key, value: fromJson(ValueSchema, value) } },
});
const del = (key: string): OpInit => ({ op: { case: "delete", value: { key } } });

const managers: ContextManager[] = [];
afterEach(async () => {
  await Promise.all(managers.splice(0).map((m) => m.close()));
  await cleanupStores();
});

function manager(
  fixture: StoreFixture,
  options: Omit<ContextManagerOptions, "store"> = {},
  log: { maxLogEntries?: number } = {},
): ContextManager {
  const m = createContextManager({ ...options, store: fixture.open(log).store, now: () => 5_000 });
  managers.push(m);
  return m;
}

/** `key → JSON value` of a sync's entries. */
function plain(sync: ContextSync): Record<string, JsonValue> {
  return Object.fromEntries(
    sync.entries.map((e) => [e.key, e.value === undefined ? "<unset>" : toJson(ValueSchema, e.value)]),
  );
}

function nested(depth: number): JsonValue {
  let v: JsonValue = "leaf";
  for (let i = 0; i < depth; i++) v = i % 2 === 0 ? [v] : { k: v };
  return v;
}

/** Consumes a watch in the background, recording every item. */
function startWatch(m: ContextManager, contextId: string, knownVersion: bigint) {
  const ac = new AbortController();
  const items: ContextSync[] = [];
  let waiters: { done: () => boolean; resolve: () => void }[] = [];
  const done = (async () => {
    for await (const s of m.watch(contextId, knownVersion, ac.signal)) {
      items.push(s);
      waiters = waiters.filter((w) => (w.done() ? (w.resolve(), false) : true));
    }
  })();
  return {
    items,
    done,
    stop: async () => {
      ac.abort();
      await done;
    },
    /** Resolves once the watcher has reached `version`. */
    reached(version: bigint): Promise<void> {
      const ok = (): boolean => items.at(-1)?.toVersion === version;
      if (ok()) return Promise.resolve();
      return new Promise<void>((resolve) => waiters.push({ done: ok, resolve }));
    },
  };
}

/** A watchInto sink recording what it gets; `refuse` makes deliver return false (the receiver is full). */
function recordingSink() {
  const items: ContextSync[] = [];
  const ended: { error: unknown }[] = [];
  let waiters: { done: () => boolean; resolve: () => void }[] = [];
  let writableAsked = 0;
  let release: (() => void) | undefined;
  const sink = {
    items,
    ended,
    refuse: false,
    /** Called after each deliver(), synchronously: to check what the other sinks had at that moment. */
    onDeliver: undefined as (() => void) | undefined,
    get writableAsked() {
      return writableAsked;
    },
    deliver(s: ContextSync): boolean {
      items.push(s);
      sink.onDeliver?.();
      waiters = waiters.filter((w) => (w.done() ? (w.resolve(), false) : true));
      return !sink.refuse;
    },
    writable(): Promise<void> {
      writableAsked++;
      return new Promise<void>((resolve) => (release = resolve));
    },
    /** Resolves the pending writable(). */
    release(): void {
      release?.();
      release = undefined;
    },
    end(error?: unknown): void {
      ended.push({ error });
      waiters = waiters.filter((w) => (w.done() ? (w.resolve(), false) : true));
    },
    until(done: () => boolean): Promise<void> {
      if (done()) return Promise.resolve();
      return new Promise<void>((resolve) => waiters.push({ done, resolve }));
    },
    reached(version: bigint): Promise<void> {
      return sink.until(() => items.at(-1)?.toVersion === version);
    },
  };
  return sink;
}

/** Checks a watcher's items form one unbroken chain of single-version deltas from `from`. */
function expectChain(items: readonly ContextSync[], from: bigint, to: bigint): void {
  expect(items).toHaveLength(Number(to - from));
  items.forEach((s, i) => {
    if (s.full || s.fromVersion !== from + BigInt(i) || s.toVersion !== from + BigInt(i) + 1n) {
      throw new Error(`item ${i} is ${s.full ? "full" : "a delta"} ${s.fromVersion}→${s.toVersion}`);
    }
  });
}

for (const fixture of storeFixtures) {
  describe(`manager over the ${fixture.name} store`, () => {
    describe("update validation: exact code and field, and nothing changes", () => {
      const cases: {
        name: string;
        options?: Omit<ContextManagerOptions, "store">;
        update: UpdateInit;
        code: string;
        field?: string;
        currentVersion?: bigint;
      }[] = [
        // context ids: 1–128 characters of [A-Za-z0-9._:/-]
        { name: "empty context id", update: { contextId: "", ops: [put("a", 1)] }, code: "invalid_argument", field: "context_id" },
        { name: "context id with a space", update: { contextId: "a b", ops: [put("a", 1)] }, code: "invalid_argument", field: "context_id" },
        { name: "context id of 129 characters", update: { contextId: "x".repeat(129), ops: [put("a", 1)] }, code: "invalid_argument", field: "context_id" },
        // ops
        { name: "no ops", update: { contextId: "ctx", ops: [] }, code: "invalid_argument", field: "ops" },
        { name: "an op that is neither put nor delete", update: { contextId: "ctx", ops: [put("a", 1), {}] }, code: "invalid_argument", field: "ops[1].op" },
        { name: "empty put key", update: { contextId: "ctx", ops: [put("", 1)] }, code: "invalid_argument", field: "ops[0].put.key" },
        { name: "empty delete key", update: { contextId: "ctx", ops: [put("a", 1), del("")] }, code: "invalid_argument", field: "ops[1].delete.key" },
        { name: "key of 257 characters", update: { contextId: "ctx", ops: [put("k".repeat(257), 1)] }, code: "invalid_argument", field: "ops[0].put.key" },
        { name: "key over a configured maxKeyLength", options: { maxKeyLength: 4 }, update: { contextId: "ctx", ops: [put("abcde", 1)] }, code: "invalid_argument", field: "ops[0].put.key" },
        // values
        { name: "put without a value", update: { contextId: "ctx", ops: [{ op: { case: "put", value: { key: "a" } } }] }, code: "invalid_argument", field: "ops[0].put.value" },
        { name: "value over 1 MiB of JSON", update: { contextId: "ctx", ops: [put("a", "x".repeat(1024 * 1024))] }, code: "invalid_argument", field: "ops[0].put.value" },
        { name: "value over a configured maxEntryBytes", options: { maxEntryBytes: 10 }, update: { contextId: "ctx", ops: [put("a", "é".repeat(5))] }, code: "invalid_argument", field: "ops[0].put.value" },
        { name: "value nested 33 deep", update: { contextId: "ctx", ops: [put("a", nested(33))] }, code: "invalid_argument", field: "ops[0].put.value" },
        { name: "NaN (not JSON)", update: { contextId: "ctx", ops: [{ op: { case: "put", value: { key: "a", value: { kind: { case: "numberValue", value: Number.NaN } } } } }] }, code: "invalid_argument", field: "ops[0].put.value" },
        // limits
        { name: "a context over maxKeysPerContext", options: { maxKeysPerContext: 2 }, update: { contextId: "ctx", ops: [put("a", 1), put("b", 1), put("c", 1)] }, code: "invalid_argument", field: "ops" },
        { name: "a new context beyond maxContexts", options: { maxContexts: 1 }, update: { contextId: "other", ops: [put("a", 1)] }, code: "invalid_argument", field: "context_id" },
        // compare-and-set against the seeded version 1
        { name: "a stale expected_version", update: { contextId: "ctx", expectedVersion: 7n, ops: [put("a", 1)] }, code: "version_conflict", currentVersion: 1n },
      ];
      for (const c of cases) {
        test(c.name, async () => {
          const m = manager(fixture, c.options);
          await m.update({ contextId: "ctx", ops: [put("seed", true)] }, "alice");
          const kind = c.code === "version_conflict" ? "CONTEXT" : "COMMAND";
          await expect(m.update(c.update, "bob")).rejects.toMatchObject({
            name: "McpError",
            code: c.code,
            kind,
            details: c.field === undefined ? { currentVersion: c.currentVersion } : { field: c.field },
          });
          const after = await m.get("ctx");
          expect(after.toVersion).toBe(1n);
          expect(plain(after)).toEqual({ seed: true });
        });
      }

      test("the largest valid ids, keys, values and depths are accepted", async () => {
        const m = manager(fixture);
        const id = "A-z0.9_:/".repeat(15).slice(0, 128);
        const r = await m.update(
          { contextId: id, id: "u1", ops: [put("k".repeat(256), nested(32)), put("big", "x".repeat(1024 * 1024 - 2))] },
          "alice",
        );
        expect(r).toMatchObject({ id: "u1", contextId: id, version: 1n });
      });

      test("a multi-op update with one invalid op applies none of them", async () => {
        const m = manager(fixture);
        await m.update({ contextId: "ctx", ops: [put("a", 1)] }, "alice");
        await expect(
          m.update({ contextId: "ctx", ops: [put("a", 2), del("a"), put("b", 2), put("", 3)] }, "alice"),
        ).rejects.toMatchObject({ code: "invalid_argument", details: { field: "ops[3].put.key" } });
        expect(plain(await m.get("ctx"))).toEqual({ a: 1 });
      });
    });

    test("update applies ops in order and echoes the update id", async () => {
      const m = manager(fixture);
      const r = await m.update(
        { contextId: "ctx", id: "req-7", ops: [put("a", 1), del("a"), put("b", { x: [1, null, "s"] }), put("a", 3), del("b")] },
        "alice",
      );
      expect(r).toMatchObject({ id: "req-7", contextId: "ctx", version: 1n });
      const got = await m.get("ctx");
      expect(plain(got)).toEqual({ a: 3 });
      expect(got.entries[0]).toMatchObject({ key: "a", version: 1n, updatedBy: "alice", updatedAt: { seconds: 5n } });
    });

    test("update reads its ops before it returns: emptied at once, they still all apply, and a bad one still fails", async () => {
      // The session stream empties a decoded update's ops right after the call (connection.ts).
      const m = manager(fixture);
      const update = create(ContextUpdateSchema, { contextId: "ctx", id: "u1", ops: [put("a", 1), put("b", 2), del("a"), put("c", { x: 1 })] });
      const applied = m.update(update, "alice");
      update.ops.length = 0;
      expect(await applied).toMatchObject({ id: "u1", contextId: "ctx", version: 1n });
      expect(plain(await m.get("ctx"))).toEqual({ b: 2, c: { x: 1 } });

      const bad = create(ContextUpdateSchema, { contextId: "ctx", ops: [put("d", 1), put("", 2)] });
      const refused = m.update(bad, "alice");
      bad.ops.length = 0;
      await expect(refused).rejects.toMatchObject({ code: "invalid_argument", details: { field: "ops[1].put.key" } });
      expect(plain(await m.get("ctx"))).toEqual({ b: 2, c: { x: 1 } });
    });

    test("get: a full snapshot, or context_not_found for a context never written", async () => {
      const m = manager(fixture);
      await expect(m.get("nope")).rejects.toMatchObject({ code: "context_not_found", kind: "CONTEXT" });
      await m.update({ contextId: "ctx", ops: [put("b", 2), put("a", 1)] }, "alice");
      await m.update({ contextId: "ctx", ops: [del("b")] }, "alice");
      const s = await m.get("ctx");
      expect(s).toMatchObject({ contextId: "ctx", full: true, fromVersion: 0n, toVersion: 2n, deletedKeys: [] });
      expect(plain(s)).toEqual({ a: 1 });
    });

    describe("sync", () => {
      // v1 a b c · v2 a · v3 delete b · v4 d; the log keeps 2 versions
      async function seeded(): Promise<ContextManager> {
        const m = manager(fixture, {}, { maxLogEntries: 2 });
        await m.update({ contextId: "ctx", ops: [put("a", 1), put("b", 1), put("c", 1)] }, "alice");
        await m.update({ contextId: "ctx", ops: [put("a", 2)] }, "alice");
        await m.update({ contextId: "ctx", ops: [del("b")] }, "alice");
        await m.update({ contextId: "ctx", ops: [put("d", 4)] }, "alice");
        return m;
      }
      const cases: { name: string; known: bigint; full: boolean; from: bigint; entries: Record<string, JsonValue>; deleted: string[] }[] = [
        { name: "nothing known: full snapshot", known: 0n, full: true, from: 0n, entries: { a: 2, c: 1, d: 4 }, deleted: [] },
        { name: "behind the retained log: full snapshot", known: 1n, full: true, from: 0n, entries: { a: 2, c: 1, d: 4 }, deleted: [] },
        { name: "within the log: only what changed", known: 2n, full: false, from: 2n, entries: { d: 4 }, deleted: ["b"] },
        { name: "one behind", known: 3n, full: false, from: 3n, entries: { d: 4 }, deleted: [] },
        { name: "up to date: empty delta", known: 4n, full: false, from: 4n, entries: {}, deleted: [] },
        { name: "ahead of the server (confused client): full snapshot", known: 9n, full: true, from: 0n, entries: { a: 2, c: 1, d: 4 }, deleted: [] },
      ];
      for (const c of cases) {
        test(c.name, async () => {
          const m = await seeded();
          const s = await m.sync("ctx", c.known);
          expect(s).toMatchObject({ contextId: "ctx", full: c.full, fromVersion: c.from, toVersion: 4n, deletedKeys: c.deleted });
          expect(plain(s)).toEqual(c.entries);
        });
      }

      test("never written: context_not_found; a bad id: invalid_argument", async () => {
        const m = manager(fixture);
        await expect(m.sync("nope", 3n)).rejects.toMatchObject({ code: "context_not_found" });
        await expect(m.sync("bad id", 0n)).rejects.toMatchObject({ code: "invalid_argument", details: { field: "context_id" } });
      });

      test("a delta after one change in 200 entries is a small fraction of the snapshot", async () => {
        const m = manager(fixture);
        const ops = Array.from({ length: 200 }, (_, i) => put(`key-${i}`, { index: i, text: `value number ${i}` }));
        await m.update({ contextId: "big", ops }, "alice");
        await m.update({ contextId: "big", ops: [put("key-7", "changed")] }, "alice");
        const delta = await m.sync("big", 1n);
        const full = await m.sync("big", 0n);
        expect(delta.entries).toHaveLength(1);
        expect(full.entries).toHaveLength(200);
        const deltaBytes = toBinary(ContextSyncSchema, delta).length;
        const fullBytes = toBinary(ContextSyncSchema, full).length;
        expect(deltaBytes * 50).toBeLessThan(fullBytes);
      });
    });

    describe("concurrency (PROTOCOL.md §8)", () => {
      test("50 concurrent updates naming the same expected_version: one applies, 49 conflict", async () => {
        const m = manager(fixture);
        await m.update({ contextId: "ctx", ops: [put("n", 0)] }, "alice");
        const results = await Promise.allSettled(
          Array.from({ length: 50 }, (_, i) =>
            m.update({ contextId: "ctx", expectedVersion: 1n, ops: [put("n", i + 1), put(`by-${i}`, i)] }, `user-${i}`),
          ),
        );
        const won = results.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
        const lost = results.flatMap((r) => (r.status === "rejected" ? [r.reason as unknown] : []));
        expect(won).toHaveLength(1);
        expect(won[0]?.version).toBe(2n);
        expect(lost).toHaveLength(49);
        for (const e of lost) {
          expect(e).toMatchObject({ code: "version_conflict", kind: "CONTEXT", retryable: true, details: { currentVersion: 2n } });
        }
        const s = await m.get("ctx");
        expect(s.toVersion).toBe(2n);
        // exactly the winner's ops are there
        expect(Object.keys(plain(s)).filter((k) => k.startsWith("by-"))).toHaveLength(1);
      });

      test("1,000 concurrent unconditional updates: version +1,000 and 3 watchers see 1,000 deltas in order", async () => {
        const m = manager(fixture);
        const watchers = [startWatch(m, "ctx", 0n), startWatch(m, "ctx", 0n), startWatch(m, "ctx", 0n)];
        await Promise.all(watchers.map((w) => w.reached(0n)));
        const results = await Promise.all(
          Array.from({ length: 1000 }, (_, i) => m.update({ contextId: "ctx", ops: [put(`k${i % 10}`, i)] }, "alice")),
        );
        // every update got its own version
        expect(new Set(results.map((r) => r.version)).size).toBe(1000);
        expect((await m.get("ctx")).toVersion).toBe(1000n);
        await Promise.all(watchers.map((w) => w.reached(1000n)));
        for (const w of watchers) {
          await w.stop();
          expect(w.items[0]).toMatchObject({ full: true, toVersion: 0n, entries: [] });
          expectChain(w.items.slice(1), 0n, 1000n);
          // each delta carries exactly the one put of its update
          for (const d of w.items.slice(1)) expect(d.entries).toHaveLength(1);
        }
      });
    });

    describe("watch", () => {
      test("from a known version: a delta first, then one delta per update, puts and deletes", async () => {
        const m = manager(fixture);
        await m.update({ contextId: "ctx", ops: [put("a", 1), put("b", 1)] }, "alice");
        await m.update({ contextId: "ctx", ops: [put("a", 2)] }, "alice");
        const w = startWatch(m, "ctx", 1n);
        await w.reached(2n);
        await m.update({ contextId: "ctx", ops: [del("b"), put("c", 3)] }, "bob");
        await w.reached(3n);
        await w.stop();
        expect(w.items.map((s) => [s.full, s.fromVersion, s.toVersion, plain(s), s.deletedKeys])).toEqual([
          [false, 1n, 2n, { a: 2 }, []],
          [false, 2n, 3n, { c: 3 }, ["b"]],
        ]);
        expect(w.items[1]?.entries[0]).toMatchObject({ version: 3n, updatedBy: "bob" });
      });

      test("a context not written yet: an empty full sync at version 0, then deltas", async () => {
        const m = manager(fixture);
        const w = startWatch(m, "fresh", 5n);
        await w.reached(0n);
        await m.update({ contextId: "fresh", ops: [put("a", 1)] }, "alice");
        await w.reached(1n);
        await w.stop();
        expect(w.items.map((s) => [s.full, s.fromVersion, s.toVersion, plain(s)])).toEqual([
          [true, 0n, 0n, {}],
          [false, 0n, 1n, { a: 1 }],
        ]);
      });

      test("watchers of other contexts hear nothing", async () => {
        const m = manager(fixture);
        const w = startWatch(m, "mine", 0n);
        await w.reached(0n);
        await m.update({ contextId: "theirs", ops: [put("a", 1)] }, "alice");
        await m.update({ contextId: "mine", ops: [put("a", 1)] }, "alice");
        await w.reached(1n);
        await w.stop();
        expect(w.items.map((s) => s.toVersion)).toEqual([0n, 1n]);
      });

      test("aborting the signal or closing the manager ends the watch cleanly", async () => {
        const m = manager(fixture);
        const a = startWatch(m, "ctx", 0n);
        const b = startWatch(m, "ctx", 0n);
        await Promise.all([a.reached(0n), b.reached(0n)]);
        await a.stop(); // resolves only if the iteration ended
        await m.close();
        await b.done;
        expect(b.items).toHaveLength(1);
        // an already aborted signal yields nothing
        const m2 = manager(fixture);
        const items: ContextSync[] = [];
        for await (const s of m2.watch("ctx", 0n, AbortSignal.abort())) items.push(s);
        expect(items).toEqual([]);
      });

      test("watchInto: a change reaches every live sink in one synchronous loop, as one shared delta", async () => {
        const m = manager(fixture);
        await m.update({ contextId: "ctx", ops: [put("a", 1)] }, "alice");
        const sinks = [recordingSink(), recordingSink(), recordingSink()];
        for (const k of sinks) m.watchInto("ctx", 1n, new AbortController().signal, k);
        await Promise.all(sinks.map((k) => k.reached(1n)));
        // When the first sink has version 2, before any promise continuation runs, the others have it too.
        const seenTogether = new Promise<bigint[]>((resolve) => {
          sinks[0]!.onDeliver = () => queueMicrotask(() => resolve(sinks.map((k) => k.items.at(-1)!.toVersion)));
        });
        await m.update({ contextId: "ctx", ops: [put("a", 2)] }, "bob");
        expect(await seenTogether).toEqual([2n, 2n, 2n]);
        const deltas = sinks.map((k) => k.items[1]);
        expect(deltas[0]).toMatchObject({ full: false, fromVersion: 1n, toVersion: 2n });
        expect(plain(deltas[0]!)).toEqual({ a: 2 });
        expect(deltas[1]).toBe(deltas[0]);
        expect(deltas[2]).toBe(deltas[0]);
      });

      test("watchInto: a sink that is full gets nothing until writable() resolves, then one catch-up past the backlog, then live deltas", async () => {
        const m = manager(fixture, { maxWatcherBacklog: 3 });
        await m.update({ contextId: "ctx", ops: [put("a", 0)] }, "alice");
        const k = recordingSink();
        m.watchInto("ctx", 1n, new AbortController().signal, k);
        await k.reached(1n);
        k.refuse = true;
        await m.update({ contextId: "ctx", ops: [put("a", 1)] }, "alice");
        await k.reached(2n);
        expect(k.writableAsked).toBe(1);
        // A watcher that keeps taking: once it has version 12, the full one has been offered them all.
        const fast = recordingSink();
        m.watchInto("ctx", 2n, new AbortController().signal, fast);
        for (let i = 2; i <= 11; i++) await m.update({ contextId: "ctx", ops: [put("a", i), put(`k${i % 2}`, i)] }, "alice");
        await fast.reached(12n);
        expect(k.items.map((s) => s.toVersion)).toEqual([1n, 2n]);
        k.refuse = false;
        k.release();
        await k.reached(12n);
        expect(k.items[2]).toMatchObject({ full: false, fromVersion: 2n, toVersion: 12n });
        expect(plain(k.items[2]!)).toEqual({ a: 11, k0: 10, k1: 11 });
        await m.update({ contextId: "ctx", ops: [put("a", 13)] }, "alice");
        await k.reached(13n);
        expect(k.items.slice(3).map((s) => [s.fromVersion, s.toVersion])).toEqual([[12n, 13n]]);
        expect(k.writableAsked).toBe(1);
      });

      test("watchInto: the stop function, the signal and close() each end it once, without an error", async () => {
        const m = manager(fixture);
        const byStop = recordingSink();
        const bySignal = recordingSink();
        const byClose = recordingSink();
        const ac = new AbortController();
        const stop = m.watchInto("ctx", 0n, new AbortController().signal, byStop);
        m.watchInto("ctx", 0n, ac.signal, bySignal);
        m.watchInto("ctx", 0n, new AbortController().signal, byClose);
        await Promise.all([byStop, bySignal, byClose].map((k) => k.reached(0n)));
        stop();
        stop();
        ac.abort();
        await Promise.all([byStop, bySignal].map((k) => k.until(() => k.ended.length > 0)));
        await m.update({ contextId: "ctx", ops: [put("a", 1)] }, "alice");
        await byClose.reached(1n);
        await m.close();
        await byClose.until(() => byClose.ended.length > 0);
        for (const k of [byStop, bySignal, byClose]) expect(k.ended).toEqual([{ error: undefined }]);
        expect(byStop.items.map((s) => s.toVersion)).toEqual([0n]);
        expect(bySignal.items.map((s) => s.toVersion)).toEqual([0n]);
        // an already aborted signal: ended, nothing delivered
        const m2 = manager(fixture);
        const aborted = recordingSink();
        m2.watchInto("ctx", 0n, AbortSignal.abort(), aborted);
        await aborted.until(() => aborted.ended.length > 0);
        expect(aborted.items).toEqual([]);
        // a bad id or a closed manager: thrown at once
        expect(() => m2.watchInto("a b", 0n, new AbortController().signal, recordingSink())).toThrow(
          expect.objectContaining({ code: "invalid_argument", details: { field: "context_id" } }),
        );
        expect(() => m.watchInto("ctx", 0n, new AbortController().signal, recordingSink())).toThrow(TypeError);
      });

      const collapseCases: { name: string; maxLogEntries: number; full: boolean }[] = [
        // the log still reaches back: the catch-up is one delta with the latest values
        { name: "delta catch-up", maxLogEntries: 1000, full: false },
        // the log was trimmed: the catch-up is a full snapshot, never a silent gap
        { name: "full catch-up", maxLogEntries: 3, full: true },
      ];
      for (const c of collapseCases) {
        test(`a watcher that stops reading is collapsed to one catch-up sync (${c.name})`, async () => {
          const m = manager(fixture, { maxWatcherBacklog: 5 }, { maxLogEntries: c.maxLogEntries });
          await m.update({ contextId: "ctx", ops: [put("a", 0), put("gone", 0)] }, "alice");
          const ac = new AbortController();
          const slow = m.watch("ctx", 1n, ac.signal)[Symbol.asyncIterator]();
          const first = await slow.next();
          expect(first.value).toMatchObject({ full: false, fromVersion: 1n, toVersion: 1n });
          // A watcher that keeps reading; once it has version 51, the slow one's queue has
          // been offered all 50 changes too.
          const fast = startWatch(m, "ctx", 1n);
          for (let i = 1; i <= 50; i++) {
            await m.update({ contextId: "ctx", ops: i === 25 ? [del("gone")] : [put("a", i), put(`k${i % 4}`, i)] }, "alice");
          }
          await fast.reached(51n);
          const caught = (await slow.next()).value as ContextSync;
          expect(caught).toMatchObject({ full: c.full, fromVersion: c.full ? 0n : 1n, toVersion: 51n });
          expect(plain(caught)).toEqual(
            { a: 50, k0: 48, k1: 49, k2: 50, k3: 47 },
          );
          expect(caught.deletedKeys).toEqual(c.full ? [] : ["gone"]);
          // and then it is live again, one delta per version
          await m.update({ contextId: "ctx", ops: [put("a", 52)] }, "alice");
          const next = (await slow.next()).value as ContextSync;
          expect(next).toMatchObject({ full: false, fromVersion: 51n, toVersion: 52n });
          ac.abort();
          expect(await slow.next()).toEqual({ done: true, value: undefined });
          await fast.stop();
        });
      }
    });

    if (fixture.shared) {
      test("a change made through one server instance reaches watchers on another", async () => {
        const opened = fixture.open();
        const twin = opened.twin?.();
        if (twin === undefined) throw new Error("a shared fixture has a twin");
        const a = createContextManager({ store: opened.store });
        const b = createContextManager({ store: twin });
        managers.push(a, b);
        await a.update({ contextId: "shared", ops: [put("a", 1)] }, "alice");
        const w = startWatch(b, "shared", 1n);
        await w.reached(1n);
        for (let i = 2; i <= 30; i++) await a.update({ contextId: "shared", ops: [put("a", i)] }, "alice");
        await w.reached(30n);
        await w.stop();
        expect(w.items[0]).toMatchObject({ full: false, fromVersion: 1n, toVersion: 1n });
        expectChain(w.items.slice(1), 1n, 30n);
        expect(plain(await b.get("shared"))).toEqual({ a: 30 });
      });
    }
  });
}

test("options are checked when the manager is built", () => {
  const store = storeFixtures[0]?.open().store;
  if (store === undefined) throw new Error("no store");
  expect(() => createContextManager({ store, maxWatcherBacklog: 0 })).toThrow(
    new TypeError('"maxWatcherBacklog" must be a positive integer, got 0'),
  );
  expect(() => createContextManager({ store, maxKeyLength: 1.5 })).toThrow(TypeError);
});
