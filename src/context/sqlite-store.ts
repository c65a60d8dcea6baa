/**
 * The durable embedded `ContextStore` (the default of `mcp serve`): one SQLite file through
 * better-sqlite3, in WAL mode, one transaction per update.
 *
 * Subscribers hear updates applied through this store object. Several processes may share the
 * file safely (transactions serialise them), but a process is not told about another's updates;
 * run several server instances on the Redis store instead (PROTOCOL.md §8).
 */
import Database from "better-sqlite3";
import {
  changeBytes,
  checkWrite,
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
  StoredEntry,
  StoredPut,
} from "./store.js";

/** Options of `createSqliteContextStore`. */
export interface SqliteContextStoreOptions extends ChangeLogOptions {
  /** The database file; created with its tables when missing. `":memory:"` works for tests. */
  path: string;
  /**
   * How long a write waits for another process holding the file's write lock, in milliseconds.
   * @default 5000
   */
  busyTimeoutMs?: number;
}

interface ContextRow {
  version: number;
  floor: number;
  log_bytes: number;
}

interface EntryRow {
  key: string;
  value_json: string;
  version: number;
  updated_at_ms: number;
  updated_by: string;
}

interface ChangeRow {
  version: number;
  updated_at_ms: number;
  updated_by: string;
  puts_json: string;
  deletes_json: string;
  bytes: number;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS contexts (
  id TEXT PRIMARY KEY,
  version INTEGER NOT NULL,
  floor INTEGER NOT NULL,      -- the change log covers versions floor+1 … version
  log_bytes INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entries (
  context_id TEXT NOT NULL,
  key TEXT NOT NULL,
  value_json TEXT NOT NULL,
  version INTEGER NOT NULL,
  updated_at_ms INTEGER NOT NULL,
  updated_by TEXT NOT NULL,
  PRIMARY KEY (context_id, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS changes (
  context_id TEXT NOT NULL,
  version INTEGER NOT NULL,
  updated_at_ms INTEGER NOT NULL,
  updated_by TEXT NOT NULL,
  puts_json TEXT NOT NULL,     -- [[key, valueJson], …]
  deletes_json TEXT NOT NULL,  -- [key, …]
  bytes INTEGER NOT NULL,
  PRIMARY KEY (context_id, version)
) WITHOUT ROWID;
`;

/**
 * Opens (or creates) a SQLite-backed store. better-sqlite3 is synchronous, so each method runs
 * as one uninterrupted step of the event loop; transactions make it atomic on disk too.
 */
export function createSqliteContextStore(options: SqliteContextStoreOptions): ContextStore {
  const { maxLogEntries, maxLogBytes } = resolveChangeLogOptions(options);
  const busyTimeoutMs = options.busyTimeoutMs ?? 5000;
  if (typeof options.path !== "string" || options.path === "") {
    throw new TypeError('"path" must name a database file');
  }
  const db = new Database(options.path, { timeout: busyTimeoutMs });
  db.pragma("journal_mode = WAL");
  // FULL, not NORMAL: in WAL mode NORMAL skips the fsync at commit, so a power loss may drop
  // the last updates after we acknowledged them. An acknowledged update must survive (§8).
  db.pragma("synchronous = FULL");
  db.exec(SCHEMA);

  const q = {
    context: db.prepare<[string], ContextRow>("SELECT version, floor, log_bytes FROM contexts WHERE id = ?"),
    countContexts: db.prepare<[], { n: number }>("SELECT count(*) AS n FROM contexts"),
    countEntries: db.prepare<[string], { n: number }>("SELECT count(*) AS n FROM entries WHERE context_id = ?"),
    hasEntry: db.prepare<[string, string], { one: number }>(
      "SELECT 1 AS one FROM entries WHERE context_id = ? AND key = ?",
    ),
    insertContext: db.prepare<[string, number, number, number]>(
      "INSERT INTO contexts (id, version, floor, log_bytes) VALUES (?, ?, ?, ?)",
    ),
    updateContext: db.prepare<[number, number, number, string]>(
      "UPDATE contexts SET version = ?, floor = ?, log_bytes = ? WHERE id = ?",
    ),
    putEntry: db.prepare<[string, string, string, number, number, string]>(
      `INSERT INTO entries (context_id, key, value_json, version, updated_at_ms, updated_by)
       VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (context_id, key) DO UPDATE SET value_json = excluded.value_json,
         version = excluded.version, updated_at_ms = excluded.updated_at_ms, updated_by = excluded.updated_by`,
    ),
    deleteEntry: db.prepare<[string, string]>("DELETE FROM entries WHERE context_id = ? AND key = ?"),
    entries: db.prepare<[string], EntryRow>(
      "SELECT key, value_json, version, updated_at_ms, updated_by FROM entries WHERE context_id = ? ORDER BY key",
    ),
    insertChange: db.prepare<[string, number, number, string, string, string, number]>(
      `INSERT INTO changes (context_id, version, updated_at_ms, updated_by, puts_json, deletes_json, bytes)
       VALUES (?, ?, ?, ?, ?, ?, ?)`,
    ),
    changeBytes: db.prepare<[string, number], { bytes: number }>(
      "SELECT bytes FROM changes WHERE context_id = ? AND version = ?",
    ),
    deleteChange: db.prepare<[string, number]>("DELETE FROM changes WHERE context_id = ? AND version = ?"),
    changesAfter: db.prepare<[string, number], ChangeRow>(
      `SELECT version, updated_at_ms, updated_by, puts_json, deletes_json, bytes FROM changes
       WHERE context_id = ? AND version > ? ORDER BY version`,
    ),
  };

  const listeners = new Set<ContextStoreListener>();
  let closed = false;

  function checkOpen(): void {
    if (closed) throw new TypeError("the context store is closed");
  }

  const applyTx = db.transaction((write: ContextWrite): ContextChange => {
    const id = write.contextId;
    const row = q.context.get(id);
    const current = BigInt(row?.version ?? 0);
    if (write.expectedVersion !== 0n && write.expectedVersion !== current) {
      throw versionConflict(id, write.expectedVersion, current);
    }
    if (row === undefined && write.maxContexts) {
      const n = q.countContexts.get()?.n ?? 0;
      if (n >= write.maxContexts) throw tooManyContexts(id, n, write.maxContexts);
    }
    if (write.maxKeys) {
      const before = row === undefined ? 0 : (q.countEntries.get(id)?.n ?? 0);
      let after = before;
      for (const p of write.puts) if (q.hasEntry.get(id, p.key) === undefined) after++;
      for (const k of write.deletes) if (q.hasEntry.get(id, k) !== undefined) after--;
      if (after > write.maxKeys && after > before) throw tooManyKeys(id, after, write.maxKeys);
    }
    const version = current + 1n;
    const v = Number(version);
    const change: ContextChange = {
      contextId: id,
      version,
      updatedAtMs: write.nowMs,
      updatedBy: write.updatedBy,
      puts: write.puts.map((p) => ({ key: p.key, valueJson: p.valueJson })),
      deletes: [...write.deletes],
    };
    for (const p of change.puts) q.putEntry.run(id, p.key, p.valueJson, v, write.nowMs, write.updatedBy);
    for (const k of change.deletes) q.deleteEntry.run(id, k);
    const bytes = changeBytes(change);
    q.insertChange.run(
      id,
      v,
      write.nowMs,
      write.updatedBy,
      JSON.stringify(change.puts.map((p) => [p.key, p.valueJson])),
      JSON.stringify(change.deletes),
      bytes,
    );
    let floor = row?.floor ?? 0;
    let logBytes = (row?.log_bytes ?? 0) + bytes;
    // Records are contiguous (floor+1 … v), so the count is v - floor; the newest one stays.
    while (v - floor > 1 && (v - floor > maxLogEntries || logBytes > maxLogBytes)) {
      floor++;
      logBytes -= q.changeBytes.get(id, floor)?.bytes ?? 0;
      q.deleteChange.run(id, floor);
    }
    if (row === undefined) q.insertContext.run(id, v, floor, logBytes);
    else q.updateContext.run(v, floor, logBytes, id);
    return change;
  });

  // A read transaction gives deltas one consistent view even if another process writes.
  const changesTx = db.transaction((contextId: string, knownVersion: bigint) => {
    const row = q.context.get(contextId);
    if (row === undefined) return undefined;
    const version = BigInt(row.version);
    if (knownVersion < BigInt(row.floor) || knownVersion > version) return "too_old" as const;
    const records = q.changesAfter.all(contextId, Number(knownVersion)).map((r) => toChange(contextId, r));
    return foldChanges(knownVersion, version, records);
  });

  const snapshotTx = db.transaction((contextId: string): ContextSnapshot | undefined => {
    const row = q.context.get(contextId);
    if (row === undefined) return undefined;
    const entries = q.entries.all(contextId).map(
      (e): StoredEntry => ({
        key: e.key,
        valueJson: e.value_json,
        version: BigInt(e.version),
        updatedAtMs: e.updated_at_ms,
        updatedBy: e.updated_by,
      }),
    );
    return { version: BigInt(row.version), entries };
  });

  return {
    async apply(write: ContextWrite): Promise<ContextChange> {
      checkOpen();
      checkWrite(write);
      // IMMEDIATE takes the write lock before reading the version, so two processes sharing
      // the file cannot both pass the compare-and-set.
      const change = applyTx.immediate(write);
      notifyListeners(listeners, { kind: "change", change });
      return change;
    },

    async snapshot(contextId: string): Promise<ContextSnapshot | undefined> {
      checkOpen();
      return snapshotTx(contextId);
    },

    async changesSince(contextId: string, knownVersion: bigint): Promise<ContextDelta | "too_old" | undefined> {
      checkOpen();
      return changesTx(contextId, knownVersion);
    },

    subscribe(listener: ContextStoreListener): () => void {
      listeners.add(listener);
      return () => {
        listeners.delete(listener);
      };
    },

    async countContexts(): Promise<number> {
      checkOpen();
      return q.countContexts.get()?.n ?? 0;
    },

    async ping(): Promise<void> {
      checkOpen();
      db.prepare("SELECT 1").get();
    },

    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      listeners.clear();
      db.close();
    },
  };
}

function toChange(contextId: string, r: ChangeRow): ContextChange {
  // Written by this module as [[key, valueJson], …] and [key, …]; nothing else writes them.
  const puts = (JSON.parse(r.puts_json) as [string, string][]).map(([key, valueJson]): StoredPut => ({ key, valueJson }));
  const deletes = JSON.parse(r.deletes_json) as string[];
  return {
    contextId,
    version: BigInt(r.version),
    updatedAtMs: r.updated_at_ms,
    updatedBy: r.updated_by,
    puts,
    deletes,
  };
}
