/**
 * The in-memory `ContextStore`: a Map per context, for tests and single-process servers that
 * need nothing to survive a restart.
 */
import {
  changeBytes,
  checkWrite,
  compareKeys,
  foldChanges,
  notifyListeners,
  resolveChangeLogOptions,
  tooManyContexts,
  tooManyKeys,
  versionConflict,
} from "./change-log.js";
import type {
  ChangeLogOptions,
  ContextChange,
  ContextDelta,
  ContextSnapshot,
  ContextStore,
  ContextStoreListener,
  ContextWrite,
  LeasedKeys,
  StoredEntry,
} from "./store.js";

/** Options of `createMemoryContextStore`. */
export type MemoryContextStoreOptions = ChangeLogOptions;

interface MemoryContext {
  version: bigint;
  entries: Map<string, StoredEntry>;
  /**
   * Retained changes from `log[head]` on, oldest first; they cover versions `floor + 1 … version`.
   * Dropped ones are skipped by `head` and cut off in bulk: a `shift()` per update moves the
   * whole log (~1,000 entries) once it is full.
   */
  log: (ContextChange | undefined)[];
  /** `changeBytes` of `log[i]`, a parallel array of numbers: no record object per update. */
  sizes: number[];
  head: number;
  floor: bigint;
  logBytes: number;
  /** Key → the lease it is bound to (`StoredPut.lease`). */
  leases: Map<string, string>;
}

/** Creates an in-memory store. Every method completes in one synchronous step, hence atomic. */
export function createMemoryContextStore(options: MemoryContextStoreOptions = {}): ContextStore {
  const { maxLogEntries, maxLogBytes } = resolveChangeLogOptions(options);
  const contexts = new Map<string, MemoryContext>();
  const listeners = new Set<ContextStoreListener>();
  let closed = false;

  function checkOpen(): void {
    if (closed) throw new TypeError("the context store is closed");
  }

  return {
    async apply(write: ContextWrite): Promise<ContextChange> {
      checkOpen();
      checkWrite(write);
      const id = write.contextId;
      const ctx = contexts.get(id);
      const current = ctx?.version ?? 0n;
      if (write.expectedVersion !== 0n && write.expectedVersion !== current) {
        throw versionConflict(id, write.expectedVersion, current);
      }
      if (ctx === undefined && write.maxContexts && contexts.size >= write.maxContexts) {
        throw tooManyContexts(id, contexts.size, write.maxContexts);
      }
      if (write.maxKeys) {
        const before = ctx?.entries.size ?? 0;
        let after = before;
        for (const p of write.puts) if (ctx?.entries.has(p.key) !== true) after++;
        for (const k of write.deletes) if (ctx?.entries.has(k) === true) after--;
        if (after > write.maxKeys && after > before) throw tooManyKeys(id, after, write.maxKeys);
      }
      // Every check passed: from here on nothing can fail, so the update is all-or-nothing.
      const c: MemoryContext = ctx ?? { version: 0n, entries: new Map(), log: [], sizes: [], head: 0, floor: 0n, logBytes: 0, leases: new Map() };
      if (ctx === undefined) contexts.set(id, c);
      const version = current + 1n;
      let withLeases = false;
      for (const p of write.puts) if (p.lease !== undefined) withLeases = true;
      const change: ContextChange = {
        contextId: id,
        version,
        updatedAtMs: write.nowMs,
        updatedBy: write.updatedBy,
        // The write's arrays are read-only: shared unless leases must be left out.
        puts: withLeases ? write.puts.map((p) => ({ key: p.key, valueJson: p.valueJson })) : write.puts,
        deletes: write.deletes,
      };
      c.version = version;
      for (const p of write.puts) {
        // A literal, not `{ ...p, version, … }`: V8 makes the spread-then-add shape the slow way,
        // ~4 µs per put (bench/core.ts, context update).
        c.entries.set(p.key, { key: p.key, valueJson: p.valueJson, version, updatedAtMs: write.nowMs, updatedBy: write.updatedBy });
      }
      for (const k of write.deletes) c.entries.delete(k);
      if (withLeases || c.leases.size > 0) {
        for (const p of write.puts) {
          if (p.lease !== undefined) c.leases.set(p.key, p.lease);
          else c.leases.delete(p.key);
        }
        for (const k of write.deletes) c.leases.delete(k);
      }
      const bytes = changeBytes(write);
      c.log.push(change);
      c.sizes.push(bytes);
      c.logBytes += bytes;
      while (c.log.length - c.head > 1 && (c.log.length - c.head > maxLogEntries || c.logBytes > maxLogBytes)) {
        const dropped = c.log[c.head];
        if (dropped === undefined) break;
        c.log[c.head] = undefined;
        c.logBytes -= c.sizes[c.head++]!;
        c.floor = dropped.version;
      }
      if (c.head >= 1024 && c.head * 2 >= c.log.length) {
        c.log.splice(0, c.head);
        c.sizes.splice(0, c.head);
        c.head = 0;
      }
      notifyListeners(listeners, { kind: "change", change });
      return change;
    },

    async snapshot(contextId: string): Promise<ContextSnapshot | undefined> {
      checkOpen();
      const c = contexts.get(contextId);
      if (c === undefined) return undefined;
      const entries = [...c.entries.values()].sort((a, b) => compareKeys(a.key, b.key));
      return { version: c.version, entries };
    },

    async changesSince(contextId: string, knownVersion: bigint): Promise<ContextDelta | "too_old" | undefined> {
      checkOpen();
      const c = contexts.get(contextId);
      if (c === undefined) return undefined;
      if (knownVersion < c.floor || knownVersion > c.version) return "too_old";
      // The log holds versions floor+1 … version contiguously, so the records after
      // knownVersion are its tail.
      const skip = Number(knownVersion - c.floor);
      const records: ContextChange[] = [];
      for (let i = c.head + skip; i < c.log.length; i++) records.push(c.log[i]!); // head … length-1 are set
      return foldChanges(knownVersion, c.version, records);
    },

    async leased(lease: string): Promise<LeasedKeys[]> {
      checkOpen();
      const out: LeasedKeys[] = [];
      for (const [contextId, c] of contexts) {
        const keys = [...c.leases].flatMap(([k, l]) => (l === lease ? [k] : []));
        if (keys.length > 0) out.push({ contextId, version: c.version, keys: keys.sort(compareKeys) });
      }
      return out;
    },

    subscribe(listener: ContextStoreListener): () => void {
      listeners.add(listener);
      return () => {
        listeners.delete(listener);
      };
    },

    async countContexts(): Promise<number> {
      checkOpen();
      return contexts.size;
    },

    async ping(): Promise<void> {
      checkOpen();
    },

    async close(): Promise<void> {
      closed = true;
      listeners.clear();
    },
  };
}
