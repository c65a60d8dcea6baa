/**
 * The context manager: the one place that validates context updates, enforces the limits and
 * fans changes out to watchers (PROTOCOL.md §4 step 3, §8). Sessions and unary RPCs both call
 * it; the store below it only persists.
 *
 * Values are `google.protobuf.Value` messages on this side (they sit inside the generated
 * `ContextEntry`), and JSON text in the store, converted with `toJsonString`/`fromJsonString`.
 * The JSON text is also what `maxEntryBytes` measures, so the limit means the same for every
 * client and every store.
 */
import { create, fromJsonString, toJsonString, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs, ValueSchema, type Value } from "@bufbuild/protobuf/wkt";
import {
  ContextEntrySchema,
  ContextSyncSchema,
  ContextUpdateResultSchema,
  ContextUpdateSchema,
  type ContextEntry,
  type ContextPut,
  type ContextSync,
  type ContextUpdate,
  type ContextUpdateResult,
  ContextLease,
} from "../../gen/mcp/v1/context_pb.js";
import { isMcpError, McpError } from "../errors.js";
import { utf8Length } from "./change-log.js";
import type {
  ContextChange,
  ContextDelta,
  ContextSnapshot,
  ContextStore,
  ContextStoreEvent,
  StoredEntry,
  StoredPut,
} from "./store.js";

/** Options of `createContextManager`. */
export interface ContextManagerOptions {
  /** Where contexts live. The manager does not close it: whoever opened it does. */
  store: ContextStore;
  /**
   * Longest key, in characters (Unicode code points).
   * @default 256
   */
  maxKeyLength?: number;
  /**
   * Largest value of one entry, in bytes of its compact JSON (UTF-8).
   * @default 1048576 (1 MiB)
   */
  maxEntryBytes?: number;
  /**
   * Deepest nesting of objects and lists in one value (a scalar is 0, `[1]` is 1).
   * @default 32
   */
  maxValueDepth?: number;
  /**
   * Keys one context may hold. An update that would grow a context beyond it is rejected;
   * one that shrinks or keeps its size is not.
   * @default 10000
   */
  maxKeysPerContext?: number;
  /**
   * Contexts the store may hold; the update that would create one more is rejected.
   * @default 10000
   */
  maxContexts?: number;
  /**
   * Changes queued for one watcher that is not reading. Past it the queue is dropped and the
   * watcher's next item is one catch-up sync from the last version it was given, so memory
   * stays bounded and no version is silently skipped (§8).
   * @default 1000
   */
  maxWatcherBacklog?: number;
  /**
   * The clock stamped on entries, in ms since the epoch.
   * @default Date.now
   */
  now?: () => number;
}

/** Validated access to versioned contexts. Every failure is an `McpError`. */
export interface ContextManager {
  /**
   * The whole context as a full `ContextSync` (`full`, `fromVersion` 0). `context_not_found`
   * for a context never written.
   */
  get(contextId: string): Promise<ContextSync>;
  /**
   * Validates and applies one update atomically (all ops or none; version + 1). Accepts the
   * generated message or its init shape. Fails with `invalid_argument` (with `field`),
   * `version_conflict` (with `currentVersion`); a rejected update changes nothing.
   * @param updatedBy the principal recorded on the written entries.
   * @param lease the writing session's id, for puts with `lease = CONTEXT_LEASE_SESSION`;
   *   without it such a put is `invalid_argument` (a lease needs a session).
   *
   * `ops` is read before this returns, never after: a caller that owns the message may empty
   * the array at once (the session stream does, see Connection `startUpdate`).
   */
  update(update: MessageInitShape<typeof ContextUpdateSchema>, updatedBy: string, lease?: string): Promise<ContextUpdateResult>;
  /**
   * The lease's session ended for good: deletes every key still bound to it, in one new version
   * per context (watchers see one delta). A key rebound meanwhile stays (compare-and-set, retried).
   * Resolves with the versions made.
   */
  releaseLease(lease: string, updatedBy: string): Promise<ContextUpdateResult[]>;
  /**
   * The changes since `knownVersion`: a delta (`fromVersion` = `knownVersion`) when the change
   * log reaches back that far, else a full snapshot. `knownVersion` 0 (the client has nothing)
   * or beyond the current version (the client is confused) gives a full snapshot; equal to it,
   * an empty delta. `context_not_found` for a context never written.
   */
  sync(contextId: string, knownVersion: bigint): Promise<ContextSync>;
  /**
   * A sync from `knownVersion` (an empty full sync at version 0 for a context not written yet),
   * then one delta per applied version, in order, without gaps or duplicates. Ends when
   * `signal` aborts or the manager closes. Yielded messages are shared between watchers: treat
   * them as read-only.
   */
  watch(contextId: string, knownVersion: bigint, signal: AbortSignal): AsyncIterable<ContextSync>;
  /**
   * `watch`, delivered into `sink` instead of an iterator: a change reaches every live watcher's
   * sink in one synchronous loop inside the store's notification, with no promise per watcher
   * (1,000 watchers of one context: bench/scale.ts). The same syncs in the same order, shared
   * read-only; a sink that cannot take more has the next ones held here, collapsed to one
   * catch-up sync past `maxWatcherBacklog`. Throws at once for a bad context id or a closed
   * manager. Returns a function that stops the watch, as aborting `signal` does.
   */
  watchInto(contextId: string, knownVersion: bigint, signal: AbortSignal, sink: WatchSink): () => void;
  /** Ends every watch and stops listening to the store (which stays open). */
  close(): Promise<void>;
}

/** Where `ContextManager.watchInto` delivers. */
export interface WatchSink {
  /**
   * One sync, in order (called synchronously from the store's notification: it must not throw).
   * Returns false when the receiver cannot take more now: the next syncs wait in the manager
   * until `writable()` resolves.
   */
  deliver(sync: ContextSync): boolean;
  /** Resolves once the receiver can take more (asked after `deliver` returned false). */
  writable(): Promise<void>;
  /**
   * The watch is over, called once, in a later microtask: stopped (signal, the returned stop
   * function, the manager's close) without an error, or failed reading the store with one.
   */
  end(error?: unknown): void;
}

interface ResolvedOptions {
  store: ContextStore;
  maxKeyLength: number;
  maxEntryBytes: number;
  maxValueDepth: number;
  maxKeysPerContext: number;
  maxContexts: number;
  maxWatcherBacklog: number;
  now: () => number;
}

function resolveOptions(options: ContextManagerOptions): ResolvedOptions {
  if (typeof options.store?.apply !== "function") throw new TypeError('"store" must be a ContextStore');
  const resolved: ResolvedOptions = {
    store: options.store,
    maxKeyLength: options.maxKeyLength ?? 256,
    maxEntryBytes: options.maxEntryBytes ?? 1024 * 1024,
    maxValueDepth: options.maxValueDepth ?? 32,
    maxKeysPerContext: options.maxKeysPerContext ?? 10_000,
    maxContexts: options.maxContexts ?? 10_000,
    maxWatcherBacklog: options.maxWatcherBacklog ?? 1000,
    now: options.now ?? Date.now,
  };
  for (const name of [
    "maxKeyLength",
    "maxEntryBytes",
    "maxValueDepth",
    "maxKeysPerContext",
    "maxContexts",
    "maxWatcherBacklog",
  ] as const) {
    const v = resolved[name];
    if (!Number.isSafeInteger(v) || v < 1) throw new TypeError(`"${name}" must be a positive integer, got ${String(v)}`);
  }
  return resolved;
}

/** Context ids: 1–128 characters of `[A-Za-z0-9._:/-]`. */
const CONTEXT_ID = /^[A-Za-z0-9._:/-]{1,128}$/;

interface Watcher {
  readonly contextId: string;
  readonly sink: WatchSink;
  /** The version the sink has (after its first sync). */
  last: bigint;
  /**
   * Changes are delivered straight from the store's notification: the first sync went out, the
   * queue is empty, no read is in flight and the sink took the last one. Otherwise `drain` runs
   * and events queue for it.
   */
  live: boolean;
  /** The sink said it cannot take more: `drain` waits for `writable()` first. */
  blocked: boolean;
  queue: ContextStoreEvent[];
  /** The queue overflowed and was dropped: catch up with one sync before anything else. */
  collapsed: boolean;
  stopped: boolean;
  /** Removes the signal's abort listener (a no-op before one was added). */
  unlisten: () => void;
}

/** Creates a manager over a store. It subscribes to the store at once. */
export function createContextManager(options: ContextManagerOptions): ContextManager {
  const opts = resolveOptions(options);
  const { store } = opts;
  const watchers = new Map<string, Set<Watcher>>();
  /** One delta message per change, built on first use and shared by every watcher. */
  const deltas = new WeakMap<ContextChange, ContextSync>();
  let closed = false;

  const unsubscribe = store.subscribe((event) => {
    const id = event.kind === "change" ? event.change.contextId : event.contextId;
    const set = watchers.get(id);
    if (set === undefined) return;
    // Built once, for the first live watcher: every watcher gets the same message.
    let delta: ContextSync | undefined;
    for (const w of set) {
      if (w.live && event.kind === "change") {
        const v = event.change.version;
        // Older: already covered by the first sync or a catch-up.
        if (v <= w.last) continue;
        if (v === w.last + 1n) {
          w.last = v;
          let took: boolean;
          try {
            took = w.sink.deliver((delta ??= deltaOf(event.change)));
          } catch (e) {
            stop(w, e);
            continue;
          }
          if (!took) {
            w.live = false;
            w.blocked = true;
            void drain(w);
          }
          continue;
        }
      }
      if (!w.collapsed) {
        if (w.queue.length >= opts.maxWatcherBacklog) {
          w.collapsed = true;
          w.queue = [];
        } else {
          w.queue.push(event);
        }
      }
      if (w.live) {
        // A gap, or a version missing on the way: `drain` asks the store.
        w.live = false;
        void drain(w);
      }
    }
  });

  /** Ends a watch: no more deliveries, out of the set, the sink told in a later microtask. */
  function stop(w: Watcher, error?: unknown): void {
    if (w.stopped) return;
    w.stopped = true;
    w.live = false;
    w.queue = [];
    w.unlisten();
    const set = watchers.get(w.contextId);
    if (set !== undefined) {
      set.delete(w);
      if (set.size === 0) watchers.delete(w.contextId);
    }
    queueMicrotask(() => w.sink.end(error));
  }

  function deliver(w: Watcher, sync: ContextSync): void {
    w.last = sync.toVersion;
    if (!w.sink.deliver(sync)) w.blocked = true;
  }

  /**
   * Works through what queued while the watcher was not live — waiting for the sink, a
   * catch-up read — then makes it live again. One runs per watcher at a time (`live` false).
   */
  async function drain(w: Watcher): Promise<void> {
    try {
      for (;;) {
        if (w.stopped) return;
        if (w.blocked) {
          await w.sink.writable();
          w.blocked = false;
          continue;
        }
        let catchUp = false;
        if (w.collapsed) {
          w.collapsed = false;
          w.queue = [];
          catchUp = true;
        } else {
          const event = w.queue.shift();
          if (event === undefined) {
            w.live = true;
            return;
          }
          if (event.kind === "gap") {
            catchUp = event.version > w.last;
          } else if (event.change.version === w.last + 1n) {
            deliver(w, deltaOf(event.change));
          } else {
            // Older: already covered. Newer: a version went missing on the way, so ask the
            // store rather than skip it.
            catchUp = event.change.version > w.last;
          }
        }
        if (catchUp) {
          const s = await syncOrEmpty(w.contextId, w.last);
          if (w.stopped) return;
          if (s.full || s.toVersion !== s.fromVersion) deliver(w, s);
        }
      }
    } catch (e) {
      stop(w, e);
    }
  }

  function watchInto(contextId: string, knownVersion: bigint, signal: AbortSignal, sink: WatchSink): () => void {
    checkOpen();
    checkContextId(contextId);
    const w: Watcher = { contextId, sink, last: 0n, live: false, blocked: false, queue: [], collapsed: false, stopped: false, unlisten: () => {} };
    const stopIt = (): void => stop(w);
    if (signal.aborted) {
      stop(w);
      return stopIt;
    }
    // Registered before the first read, so nothing applied after that read can be missed;
    // what the read already covered is skipped by version.
    let set = watchers.get(contextId);
    if (set === undefined) watchers.set(contextId, (set = new Set()));
    set.add(w);
    signal.addEventListener("abort", stopIt, { once: true });
    w.unlisten = () => signal.removeEventListener("abort", stopIt);
    syncOrEmpty(contextId, knownVersion).then(
      (first) => {
        if (w.stopped) return;
        deliver(w, first);
        return drain(w);
      },
      (e: unknown) => stop(w, e),
    );
    return stopIt;
  }

  function checkOpen(): void {
    if (closed) throw new TypeError("the context manager is closed");
  }

  function checkContextId(id: string): void {
    if (!CONTEXT_ID.test(id)) {
      throw new McpError(
        "invalid_argument",
        `context id must be 1 to 128 characters of A-Z a-z 0-9 . _ : / -, got ${id === "" ? "an empty id" : `${id.length} characters`}`,
        { field: "context_id" },
      );
    }
  }

  // The field name (`ops[i].put.key`) is built only for an error: valid ops are the hot path.
  function checkKey(key: string, i: number, what: string): void {
    if (key === "") throw new McpError("invalid_argument", "key must not be empty", { field: `ops[${i}].${what}` });
    // code points <= UTF-16 units, so only long strings need counting.
    if (key.length > opts.maxKeyLength && [...key].length > opts.maxKeyLength) {
      throw new McpError("invalid_argument", `key must be at most ${opts.maxKeyLength} characters`, { field: `ops[${i}].${what}` });
    }
  }

  function valueJson(value: Value | undefined, i: number): string {
    if (value === undefined) {
      throw new McpError("invalid_argument", "a put needs a value (JSON null is null_value)", { field: `ops[${i}].put.value` });
    }
    // Checked before serialising: an absurdly deep value must not reach a recursive encoder.
    if (depthExceeds(value, opts.maxValueDepth)) {
      throw new McpError("invalid_argument", `value nests deeper than ${opts.maxValueDepth} levels`, { field: `ops[${i}].put.value` });
    }
    let json: string;
    const kind = value.kind;
    // Scalars are their own JSON text (what protobuf-es writes too, without its reflection);
    // NaN and Infinity go the long way, which refuses them.
    if (kind.case === "stringValue") json = JSON.stringify(kind.value);
    else if (kind.case === "numberValue" && Number.isFinite(kind.value)) json = JSON.stringify(kind.value);
    else if (kind.case === "boolValue") json = kind.value ? "true" : "false";
    else if (kind.case === "nullValue") json = "null";
    else {
      try {
        json = toJsonString(ValueSchema, value);
      } catch (e) {
        // protobuf-es refuses values JSON cannot carry (NaN, Infinity, an unset kind).
        throw new McpError("invalid_argument", `value is not valid JSON: ${e instanceof Error ? e.message : String(e)}`, {
          field: `ops[${i}].put.value`,
          cause: e,
        });
      }
    }
    // Each UTF-16 unit is at most 3 bytes of UTF-8: short JSON cannot be over the limit.
    if (json.length * 3 > opts.maxEntryBytes) {
      const bytes = utf8Length(json);
      if (bytes > opts.maxEntryBytes) {
        throw new McpError("invalid_argument", `value is ${bytes} bytes of JSON; the limit is ${opts.maxEntryBytes}`, {
          field: `ops[${i}].put.value`,
        });
      }
    }
    return json;
  }

  function toSync(contextId: string, from: ContextDelta | ContextSnapshot): ContextSync {
    if ("fromVersion" in from) {
      return create(ContextSyncSchema, {
        contextId,
        fromVersion: from.fromVersion,
        toVersion: from.toVersion,
        full: false,
        entries: from.entries.map(toEntry),
        deletedKeys: from.deletedKeys,
      });
    }
    return create(ContextSyncSchema, {
      contextId,
      fromVersion: 0n,
      toVersion: from.version,
      full: true,
      entries: from.entries.map(toEntry),
    });
  }

  function deltaOf(change: ContextChange): ContextSync {
    let d = deltas.get(change);
    if (d === undefined) {
      const stamp = { version: change.version, updatedAtMs: change.updatedAtMs, updatedBy: change.updatedBy };
      d = create(ContextSyncSchema, {
        contextId: change.contextId,
        fromVersion: change.version - 1n,
        toVersion: change.version,
        full: false,
        entries: change.puts.map((p) => toEntry({ ...p, ...stamp })),
        deletedKeys: [...change.deletes],
      });
      deltas.set(change, d);
    }
    return d;
  }

  async function snapshotSync(contextId: string): Promise<ContextSync> {
    const snap = await store.snapshot(contextId);
    if (snap === undefined) throw notFound(contextId);
    return toSync(contextId, snap);
  }

  async function sync(contextId: string, knownVersion: bigint): Promise<ContextSync> {
    checkOpen();
    checkContextId(contextId);
    if (knownVersion <= 0n) return snapshotSync(contextId);
    const delta = await store.changesSince(contextId, knownVersion);
    if (delta === undefined) throw notFound(contextId);
    if (delta === "too_old") return snapshotSync(contextId);
    return toSync(contextId, delta);
  }

  function applyUpdate(init: MessageInitShape<typeof ContextUpdateSchema>, updatedBy: string, lease: string | undefined): Promise<ContextUpdateResult> {
    checkOpen();
    const u: ContextUpdate = create(ContextUpdateSchema, init);
    checkContextId(u.contextId);
    const ops = u.ops;
    if (ops.length === 0) throw new McpError("invalid_argument", "an update needs at least one op", { field: "ops" });
    const puts: StoredPut[] = [];
    const deletes: string[] = [];
    const first = ops[0]!;
    if (ops.length === 1 && first.op.case === "put") {
      // The common update, one put: nothing to collapse, no map.
      const json = checkPut(first.op.value, 0, lease);
      puts.push(first.op.value.lease === ContextLease.SESSION ? { key: first.op.value.key, valueJson: json, lease: lease! } : { key: first.op.value.key, valueJson: json });
    } else {
      // Ops apply in order, so for each key only the last one matters.
      const net = new Map<string, string | null>();
      let leased: Set<string> | undefined;
      for (let i = 0; i < ops.length; i++) {
        const op = ops[i]!.op;
        switch (op.case) {
          case "put": {
            const key = op.value.key;
            net.set(key, checkPut(op.value, i, lease));
            if (op.value.lease === ContextLease.SESSION) (leased ??= new Set()).add(key);
            else leased?.delete(key);
            break;
          }
          case "delete": {
            checkKey(op.value.key, i, "delete.key");
            net.set(op.value.key, null);
            break;
          }
          default:
            throw new McpError("invalid_argument", "an op must be a put or a delete", { field: `ops[${i}].op` });
        }
      }
      for (const [key, json] of net) {
        if (json === null) deletes.push(key);
        else puts.push(leased?.has(key) === true && lease !== undefined ? { key, valueJson: json, lease } : { key, valueJson: json });
      }
    }
    return store.apply({
      contextId: u.contextId,
      expectedVersion: u.expectedVersion,
      puts,
      deletes,
      updatedBy,
      nowMs: opts.now(),
      maxKeys: opts.maxKeysPerContext,
      maxContexts: opts.maxContexts,
    }).then(
      // A literal, not create(): every field is given, once per update.
      (change): ContextUpdateResult => ({ $typeName: "mcp.v1.ContextUpdateResult", id: u.id, contextId: u.contextId, version: change.version }),
    );
  }

  /** Checks the put at `ops[i]` and returns its value's JSON; a SESSION lease needs `lease`. */
  function checkPut(put: ContextPut, i: number, lease: string | undefined): string {
    checkKey(put.key, i, "put.key");
    const json = valueJson(put.value, i);
    if (put.lease === ContextLease.SESSION && lease === undefined) {
      throw new McpError("invalid_argument", "a put with lease SESSION needs a session: send it on SessionService/Connect", { field: `ops[${i}].put.lease` });
    }
    return json;
  }

  /** `sync`, but a context not written yet is an empty full sync at version 0. */
  async function syncOrEmpty(contextId: string, knownVersion: bigint): Promise<ContextSync> {
    try {
      return await sync(contextId, knownVersion);
    } catch (e) {
      if (isMcpError(e) && e.code === "context_not_found") {
        return create(ContextSyncSchema, { contextId, fromVersion: 0n, toVersion: 0n, full: true });
      }
      throw e;
    }
  }

  return {
    async get(contextId: string): Promise<ContextSync> {
      checkOpen();
      checkContextId(contextId);
      return snapshotSync(contextId);
    },

    // Not an async function: a suspended one keeps its frame per update and adds turns; the
    // checks run synchronously (a throw becomes the rejection), the store's promise is chained once.
    update(init: MessageInitShape<typeof ContextUpdateSchema>, updatedBy: string, lease?: string): Promise<ContextUpdateResult> {
      try {
        return applyUpdate(init, updatedBy, lease);
      } catch (e) {
        return Promise.reject(e);
      }
    },

    async releaseLease(lease: string, updatedBy: string): Promise<ContextUpdateResult[]> {
      checkOpen();
      const made: ContextUpdateResult[] = [];
      // Bounded: each retry follows a concurrent update of the same context.
      for (let attempt = 0; attempt < 10; attempt++) {
        const held = await store.leased(lease);
        if (held.length === 0) return made;
        for (const h of held) {
          try {
            const change = await store.apply({ contextId: h.contextId, expectedVersion: h.version, puts: [], deletes: h.keys, updatedBy, nowMs: opts.now() });
            made.push(create(ContextUpdateResultSchema, { contextId: h.contextId, version: change.version }));
          } catch (e) {
            if (!(e instanceof McpError && e.code === "version_conflict")) throw e;
          }
        }
      }
      return made;
    },

    sync,

    // An iterator over watchInto that takes one sync at a time: the next waits in the manager
    // (and collapses there) until the reader asks for it.
    async *watch(contextId: string, knownVersion: bigint, signal: AbortSignal): AsyncGenerator<ContextSync> {
      const held: ContextSync[] = [];
      let over: { error: unknown } | undefined;
      let wake: (() => void) | undefined;
      let taken: (() => void) | undefined;
      const stopWatch = watchInto(contextId, knownVersion, signal, {
        deliver(sync) {
          held.push(sync);
          wake?.();
          return false;
        },
        writable: () => (held.length === 0 ? Promise.resolve() : new Promise<void>((resolve) => (taken = resolve))),
        end(error) {
          over = { error };
          wake?.();
        },
      });
      try {
        for (;;) {
          const sync = held.shift();
          if (sync !== undefined) {
            yield sync;
            const t = taken;
            taken = undefined;
            t?.();
            continue;
          }
          if (over !== undefined) {
            if (over.error !== undefined) throw over.error;
            return;
          }
          await new Promise<void>((resolve) => (wake = resolve));
          wake = undefined;
        }
      } finally {
        stopWatch();
      }
    },

    watchInto,

    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      unsubscribe();
      for (const set of [...watchers.values()]) for (const w of [...set]) stop(w);
    },
  };
}

function notFound(contextId: string): McpError {
  return new McpError("context_not_found", `context "${contextId}" has never been written`);
}

function toEntry(e: StoredEntry): ContextEntry {
  return create(ContextEntrySchema, {
    key: e.key,
    value: fromJsonString(ValueSchema, e.valueJson),
    version: e.version,
    updatedAt: timestampFromMs(e.updatedAtMs),
    updatedBy: e.updatedBy,
  });
}

/** Whether objects and lists nest deeper than `max`, walked without recursion. */
function depthExceeds(root: Value, max: number): boolean {
  // A scalar (the common value) nests nothing: no walk, no stack.
  if (root.kind.case !== "structValue" && root.kind.case !== "listValue") return false;
  const stack: [Value, number][] = [[root, 0]];
  for (let item = stack.pop(); item !== undefined; item = stack.pop()) {
    const [v, depth] = item;
    let children: Iterable<Value>;
    if (v.kind.case === "structValue") children = Object.values(v.kind.value.fields);
    else if (v.kind.case === "listValue") children = v.kind.value.values;
    else continue;
    if (depth + 1 > max) return true;
    for (const c of children) stack.push([c, depth + 1]);
  }
  return false;
}
