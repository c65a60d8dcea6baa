/**
 * The storage contract under the context manager (ARCHITECTURE.md "State and storage").
 *
 * One interface, three implementations (memory, SQLite, Redis), one contract test suite. A store
 * knows nothing of protobuf: values travel as JSON text, so every backend keeps them as an opaque
 * string and the manager alone converts to and from `google.protobuf.Value`.
 */

/** One key set by an update. `valueJson` is the value as JSON text. */
export interface StoredPut {
  key: string;
  valueJson: string;
}

/**
 * One update as the store applies it. The manager has already validated it and collapsed its
 * ordered ops to their net effect, so every key appears at most once across `puts` and `deletes`.
 */
export interface ContextWrite {
  contextId: string;
  /** Apply only if the context is at this version; `0n` = unconditional (PROTOCOL.md §8). */
  expectedVersion: bigint;
  puts: readonly StoredPut[];
  deletes: readonly string[];
  /** The principal recorded on every entry the update writes. */
  updatedBy: string;
  /** The time recorded on every entry the update writes, in ms since the epoch. */
  nowMs: number;
  /**
   * Reject (`invalid_argument`, field `ops`) an update that would grow the context beyond this
   * many keys. Checked inside the store's atomic step so concurrent updates cannot overshoot it.
   * `0` or absent = no limit.
   */
  maxKeys?: number;
  /**
   * Reject (`invalid_argument`, field `context_id`) an update that would create a context when
   * the store already holds this many. `0` or absent = no limit.
   */
  maxContexts?: number;
}

/**
 * An entry as stored. A storage record, not a mirror of `mcp.v1.ContextEntry`: the value stays
 * JSON text and the time stays milliseconds until the manager builds the message.
 */
export interface StoredEntry {
  key: string;
  valueJson: string;
  /** The context version that last wrote this key. */
  version: bigint;
  updatedAtMs: number;
  updatedBy: string;
}

/** One applied update: what the change log keeps and what subscribers receive. */
export interface ContextChange {
  contextId: string;
  /** The version this update produced (the previous version + 1). */
  version: bigint;
  updatedAtMs: number;
  updatedBy: string;
  puts: readonly StoredPut[];
  deletes: readonly string[];
}

/** A context's whole state at one version. Entries are sorted by key. */
export interface ContextSnapshot {
  version: bigint;
  entries: StoredEntry[];
}

/**
 * What changed between two versions: the latest value of every key written after
 * `fromVersion`, and every key deleted after it (a key put and then deleted is listed as
 * deleted). Entries and deleted keys are sorted.
 */
export interface ContextDelta {
  fromVersion: bigint;
  toVersion: bigint;
  entries: StoredEntry[];
  deletedKeys: string[];
}

/**
 * What a subscriber hears.
 *
 * - `change`: one applied update, delivered per context in version order.
 * - `gap`: versions up to `version` were applied but the store can no longer say what they
 *   changed (a shared store whose log was trimmed before this instance read it). The listener
 *   must re-sync; PROTOCOL.md §8 forbids a silent gap.
 */
export type ContextStoreEvent =
  | { kind: "change"; change: ContextChange }
  | { kind: "gap"; contextId: string; version: bigint };

/** Called for every store event. Must not throw; it runs inside the store's delivery path. */
export type ContextStoreListener = (event: ContextStoreEvent) => void;

/** A place where versioned contexts live. See the module doc. */
export interface ContextStore {
  /**
   * Applies one update atomically: checks `expectedVersion` (else `McpError("version_conflict")`
   * carrying `currentVersion`, and nothing changes), checks the limits, bumps the version by
   * exactly one, stamps every written entry with it, appends to the bounded change log and
   * notifies subscribers. Resolves with the change as applied.
   */
  apply(write: ContextWrite): Promise<ContextChange>;
  /** The whole context, or `undefined` when it was never written. */
  snapshot(contextId: string): Promise<ContextSnapshot | undefined>;
  /**
   * The changes after `knownVersion`. `"too_old"` when the change log no longer reaches back
   * to it (or `knownVersion` is beyond the current version): send a snapshot instead.
   * `undefined` when the context was never written.
   */
  changesSince(contextId: string, knownVersion: bigint): Promise<ContextDelta | "too_old" | undefined>;
  /**
   * Registers a listener for every applied update of every context; returns its remover. A
   * shared store also reports updates applied through other instances.
   */
  subscribe(listener: ContextStoreListener): () => void;
  /** How many contexts exist (for the contexts-per-server limit and metrics). */
  countContexts(): Promise<number>;
  /** Resolves when the store answers (health checks, `mcp status`); rejects with why it does not. */
  ping(): Promise<void>;
  /** Releases connections and files. Listeners hear nothing afterwards. */
  close(): Promise<void>;
}

/** Bounds of the per-context change log, shared by every store. */
export interface ChangeLogOptions {
  /**
   * Updates kept per context for deltas. Older ones are dropped; a client behind them gets a
   * full snapshot.
   * @default 1000
   */
  maxLogEntries?: number;
  /**
   * Bytes (UTF-8 of keys and value JSON) kept per context for deltas. The newest update is
   * always kept, even when it alone is larger.
   * @default 4194304 (4 MiB)
   */
  maxLogBytes?: number;
}
