/**
 * Pieces every store shares, so the three backends agree byte for byte on log sizes, delta
 * folding and error wording.
 *
 * @private Internal code, does not follow semantic versioning.
 */
import { McpError } from "../errors.js";
import type {
  ChangeLogOptions,
  ContextChange,
  ContextDelta,
  ContextStoreEvent,
  ContextStoreListener,
  ContextWrite,
  StoredEntry,
} from "./store.js";

/** `ChangeLogOptions` with every default applied. */
export interface ResolvedChangeLogOptions {
  maxLogEntries: number;
  maxLogBytes: number;
}

/** The one place change-log defaults live. Throws `TypeError` on misuse. */
export function resolveChangeLogOptions(options: ChangeLogOptions): ResolvedChangeLogOptions {
  const maxLogEntries = options.maxLogEntries ?? 1000;
  const maxLogBytes = options.maxLogBytes ?? 4 * 1024 * 1024;
  if (!Number.isSafeInteger(maxLogEntries) || maxLogEntries < 1) {
    throw new TypeError(`"maxLogEntries" must be a positive integer, got ${String(maxLogEntries)}`);
  }
  if (!Number.isSafeInteger(maxLogBytes) || maxLogBytes < 1) {
    throw new TypeError(`"maxLogBytes" must be a positive integer, got ${String(maxLogBytes)}`);
  }
  return { maxLogEntries, maxLogBytes };
}

/** UTF-8 length of a string without allocating (Lua's `#s` in the Redis script counts the same). */
export function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 4;
        i++;
      } else n += 3;
    } else n += 3;
  }
  return n;
}

/** The size a change counts against `maxLogBytes`: its keys and value JSON in UTF-8. */
export function changeBytes(write: Pick<ContextWrite, "puts" | "deletes">): number {
  let n = 0;
  for (const p of write.puts) n += utf8Length(p.key) + utf8Length(p.valueJson);
  for (const k of write.deletes) n += utf8Length(k);
  return n;
}

/**
 * Throws `TypeError` when a write breaks the store contract (a key twice, a bad version). These
 * are bugs in the caller, not protocol outcomes: the manager never sends such a write.
 */
export function checkWrite(write: ContextWrite): void {
  if (write.expectedVersion < 0n) throw new TypeError("expectedVersion must be >= 0");
  if (write.puts.length + write.deletes.length === 0) throw new TypeError("a write needs at least one put or delete");
  // One key cannot appear twice: no set to build (the common update writes one key).
  if (write.puts.length + write.deletes.length === 1) return;
  const seen = new Set<string>();
  for (const key of [...write.puts.map((p) => p.key), ...write.deletes]) {
    if (seen.has(key)) throw new TypeError(`key "${key}" appears twice in one write; collapse ops first`);
    seen.add(key);
  }
}

/** The `version_conflict` every store throws (PROTOCOL.md §8). */
export function versionConflict(contextId: string, expected: bigint, current: bigint): McpError {
  return new McpError(
    "version_conflict",
    `context "${contextId}" is at version ${current}, not the expected ${expected}`,
    { currentVersion: current },
  );
}

/** The error for an update that would push a context past `maxKeys`. */
export function tooManyKeys(contextId: string, size: number, maxKeys: number): McpError {
  return new McpError(
    "invalid_argument",
    `the update would leave context "${contextId}" with ${size} keys; the limit is ${maxKeys}`,
    { field: "ops" },
  );
}

/** The error for an update that would create one context too many. */
export function tooManyContexts(contextId: string, count: number, maxContexts: number): McpError {
  return new McpError(
    "invalid_argument",
    `cannot create context "${contextId}": the store holds ${count} contexts; the limit is ${maxContexts}`,
    { field: "context_id" },
  );
}

/**
 * Folds consecutive log records (versions `fromVersion + 1 … toVersion`, in order) into one
 * delta: the last write of each key wins, and a key whose last op is a delete is listed as
 * deleted even if it was created after `fromVersion` (deleting an absent key is a no-op for
 * the client, and knowing whether it existed would cost a second lookup).
 */
export function foldChanges(
  fromVersion: bigint,
  toVersion: bigint,
  records: readonly ContextChange[],
): ContextDelta {
  const latest = new Map<string, StoredEntry | null>();
  for (const r of records) {
    for (const p of r.puts) {
      latest.set(p.key, {
        key: p.key,
        valueJson: p.valueJson,
        version: r.version,
        updatedAtMs: r.updatedAtMs,
        updatedBy: r.updatedBy,
      });
    }
    for (const k of r.deletes) latest.set(k, null);
  }
  const entries: StoredEntry[] = [];
  const deletedKeys: string[] = [];
  for (const [key, e] of latest) {
    if (e === null) deletedKeys.push(key);
    else entries.push(e);
  }
  entries.sort((a, b) => compareKeys(a.key, b.key));
  deletedKeys.sort(compareKeys);
  return { fromVersion, toVersion, entries, deletedKeys };
}

/** Key order used by snapshots and deltas: plain code-unit order, the same in every store. */
export function compareKeys(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Calls every listener with one event. A listener that throws must not hide an applied update
 * from the others, nor fail the update that was already committed; listeners are documented
 * not to throw, so the error is dropped here on purpose.
 */
export function notifyListeners(listeners: ReadonlySet<ContextStoreListener>, event: ContextStoreEvent): void {
  for (const l of listeners) {
    try {
      l(event);
    } catch {
      // See the function doc: isolation over propagation.
    }
  }
}
