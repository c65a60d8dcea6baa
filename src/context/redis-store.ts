/**
 * The shared `ContextStore`: several server instances on one Redis (PROTOCOL.md §8).
 *
 * Per context, under a configurable prefix (default `mcp:`), hash-tagged by context id so a
 * Redis Cluster keeps them in one slot:
 * - `<prefix>ctx:{<id>}:m` hash: `v` version, `f` log floor, `b` log bytes;
 * - `<prefix>ctx:{<id>}:e` hash: key → JSON `[version, updatedAtMs, updatedBy, valueJson]`;
 * - `<prefix>ctx:{<id>}:l` stream: the change log, one record per version with the stream id
 *   `<version>-0`, so a range of versions is one `XRANGE`;
 * - `<prefix>ctx:{<id>}:s` list: `<version> <bytes>` per log record, oldest first, so trimming
 *   learns a dropped record's size with an `LPOP` instead of reading the record;
 * - `<prefix>ctx:index` set of context ids; `<prefix>ctx:changes` pub/sub channel.
 *
 * An update is one run of a Lua script (compare-and-set, limits, version bump, entry writes,
 * `XADD`, trimming, `PUBLISH`), so it is atomic across instances; on one server the updates that
 * arrive while a call is in flight share the next call, each still checked and applied on its own. On a cluster the index lives in
 * another slot: the script leaves it out and the store adds the id after the script, so
 * `maxContexts` is checked before the update rather than inside it (a burst of concurrent
 * creations may overshoot it slightly). The channel only announces
 * "context X reached version V"; every instance then reads the versions it has not delivered
 * yet from the stream. That one path serves live updates, other instances' updates and the
 * gaps left by a dropped subscriber connection, so listeners see each version once, in order.
 * One shortcut: the instance that applied an update has the change in hand, so when it is the
 * next version its listeners expect it is delivered from the script's reply, and the log is read
 * only for other instances' updates (one round trip per own update instead of two).
 */
import { createHash } from "node:crypto";
import { Command } from "../optional/ioredis.js";
import { checkKeyPrefix, createRedisClient, parseRedisUrl, taggedKey, type RedisClient } from "./redis-client.js";
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
  ContextStoreEvent,
  ContextStoreListener,
  ContextWrite,
  LeasedKeys,
  StoredEntry,
  StoredPut,
} from "./store.js";

/** Options of `createRedisContextStore`. */
export interface RedisContextStoreOptions extends ChangeLogOptions {
  /**
   * The server, as `redis://[user:password@]host:port[/db]` (or `rediss://` for TLS).
   * @default "redis://127.0.0.1:6379"
   */
  url?: string;
  /**
   * Prefix of every key and channel, so several deployments (or test runs) share one Redis.
   * Instances that should see each other's updates must use the same prefix.
   * @default "mcp:"
   */
  keyPrefix?: string;
  /**
   * How long `ping()` waits for PONG before it reports the server unreachable, in ms. ioredis
   * queues commands while it reconnects, so without a bound a ping would wait for the outage.
   * @default 1000
   */
  pingTimeoutMs?: number;
}

// One call applies a batch of updates (all an instance's updates of one event-loop turn): Redis
// then runs one command instead of one per update, and the instance builds, times and parses one.
// Each update is checked and applied on its own, in order (an update sees the batch's earlier
// ones, as it would see earlier calls), and fails on its own: a Redis error inside one is caught
// (pcall) and returned as its status, so the others' outcomes are still reported.
// KEYS: per update meta, entries, log, leases, sizes; then the index (none on a cluster: another slot).
// ARGV: the number of updates, then per update: id, expected, nPuts, nDeletes, bytes, deletesJson,
//       stamp, then nowMs, updatedBy, maxKeys, maxContexts — or none of these four when stamp is
//       '' (all five as in the update before: a turn's updates mostly share them, and each
//       argument costs), then nPuts (key, key as JSON, value JSON as a JSON string) triples, then
//       nDeletes keys, then one lease per put ('' = none).
// Reply: per update its status and a number as a string ('error' and the message on an error).
// The store's constants (log bounds, channel, exactTrim: true before Redis 6.2, which has no
// XTRIM MINID, so XDEL per dropped record) are written into the script's first line instead:
// ioredis spends ~0.25 µs per argument of every call building the command.
// The caller escapes each value's JSON as a JSON string once (`stamp` is `","<nowMs>",<updatedBy
// as JSON>,`), so an entry is `["<version>` .. stamp .. escaped .. `]` and the log record's `p`
// is pasted from the same pieces: no cjson per update (the layout is what cjson wrote before).
// Trimming advances the floor exactly (the dropped records' `s` fields keep `b` exact) but removes
// records with `XTRIM MINID ~`, whole stream nodes at a time: an exact XDEL only marks an entry
// deleted inside its node, and every later lookup in that node walks past the marks (about half
// the script's time once a context's log is full). Records below the floor may stay a while;
// nothing reads below the floor. Whole nodes can go only every so often, so XTRIM runs each time
// the floor passes a multiple of 32.
// A dropped record's size comes from the sizes list (`<version> <bytes>` pushed with the record):
// reading the record back with XRANGE took 2.6 of the script's 15.7 µs per update once a log was
// full (bench/README.md, "December 4"). Records without an item — logged before the list existed,
// or by an instance of an older version, which also drops records without popping theirs — are
// read as before; an item older than the record being dropped is such a leftover and is skipped.
// Versions are Lua doubles: exact up to 2^53, formatted with %.0f because tostring() would
// switch to exponent notation from 1e14 on. Each format costs about as much as a small command:
// strings the caller sent are reused where the value did not change.
const APPLY_BODY = `
local nUpdates = tonumber(ARGV[1])
local index = KEYS[5 * nUpdates + 1]
local function s(n) return string.format('%.0f', n) end
local now, by, stamp, maxKeys, maxContexts
local function droppedBytes(log, sizes, r, rid)
  while true do
    local item = redis.call('LPOP', sizes)
    if not item then break end
    local sp = string.find(item, ' ', 1, true)
    local iv = tonumber(string.sub(item, 1, sp - 1))
    if iv == r then return tonumber(string.sub(item, sp + 1)) end
    if iv > r then
      redis.call('LPUSH', sizes, item)
      break
    end
  end
  local rec = redis.call('XRANGE', log, rid, rid)
  if rec[1] then
    local f = rec[1][2]
    for j = 1, #f, 2 do
      if f[j] == 's' then return tonumber(f[j + 1]) end
    end
  end
  return 0
end
local function apply(k, a, P)
local meta, entries, log, leases, sizes = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], KEYS[k + 5]
local id, expected = ARGV[a + 1], tonumber(ARGV[a + 2])
local nPuts, nDeletes, bytes, deletesJson = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), ARGV[a + 5], ARGV[a + 6]
local D = P + 3 * nPuts
local L = D + nDeletes
local m = redis.call('HMGET', meta, 'v', 'f', 'b')
local current = tonumber(m[1] or '0')
if expected ~= 0 and expected ~= current then return 'conflict', s(current) end
if current == 0 and maxContexts > 0 and index then
  local n = redis.call('SCARD', index)
  if n >= maxContexts then return 'too_many_contexts', s(n) end
end
local before = maxKeys > 0 and redis.call('HLEN', entries) or 0
-- Only when the puts could pass the limit (they add at most one key each) is each key looked up.
if maxKeys > 0 and before + nPuts > maxKeys then
  local after = before
  for i = 0, nPuts - 1 do
    if redis.call('HEXISTS', entries, ARGV[P + 3 * i]) == 0 then after = after + 1 end
  end
  for i = 0, nDeletes - 1 do
    if redis.call('HEXISTS', entries, ARGV[D + i]) == 1 then after = after - 1 end
  end
  if after > maxKeys and after > before then return 'too_many_keys', s(after) end
end
local v = current + 1
local vs = s(v)
local head = '["' .. vs .. stamp
local p
if nPuts == 1 then
  redis.call('HSET', entries, ARGV[P], head .. ARGV[P + 2] .. ']')
  p = '[[' .. ARGV[P + 1] .. ',' .. ARGV[P + 2] .. ']]'
else
  local parts = {}
  for i = 0, nPuts - 1 do
    redis.call('HSET', entries, ARGV[P + 3 * i], head .. ARGV[P + 3 * i + 2] .. ']')
    parts[i + 1] = '[' .. ARGV[P + 3 * i + 1] .. ',' .. ARGV[P + 3 * i + 2] .. ']'
  end
  p = '[' .. table.concat(parts, ',') .. ']'
end
for i = 0, nDeletes - 1 do redis.call('HDEL', entries, ARGV[D + i]) end
local hasLeases = redis.call('EXISTS', leases) == 1
for i = 0, nPuts - 1 do
  local lease = ARGV[L + i]
  if lease ~= '' then
    redis.call('HSET', leases, ARGV[P + 3 * i], lease)
    hasLeases = true
  elseif hasLeases then
    redis.call('HDEL', leases, ARGV[P + 3 * i])
  end
end
if hasLeases then
  for i = 0, nDeletes - 1 do redis.call('HDEL', leases, ARGV[D + i]) end
end
redis.call('XADD', log, vs .. '-0', 't', now, 'b', by, 's', bytes, 'p', p, 'd', deletesJson)
redis.call('RPUSH', sizes, vs .. ' ' .. bytes)
local floor = tonumber(m[2] or '0')
local logBytes = tonumber(m[3] or '0') + tonumber(bytes)
local fs, from = m[2] or '0', floor
while v - floor > 1 and (v - floor > maxLogEntries or logBytes > maxLogBytes) do
  floor = floor + 1
  local rid = s(floor) .. '-0'
  logBytes = logBytes - droppedBytes(log, sizes, floor, rid)
  if exactTrim then redis.call('XDEL', log, rid) end
  fs = nil
end
if not fs then
  fs = s(floor)
  -- A node holds ~100 records (stream-node-max-entries): a look every 32 versions frees it soon enough.
  if not exactTrim and math.floor(floor / 32) > math.floor(from / 32) then redis.call('XTRIM', log, 'MINID', '~', s(floor + 1) .. '-0') end
end
redis.call('HSET', meta, 'v', vs, 'f', fs, 'b', s(logBytes))
if current == 0 and index then redis.call('SADD', index, id) end
redis.call('PUBLISH', channel, vs .. ' ' .. id)
return 'ok', vs
end
local out = {}
local a = 1
for u = 0, nUpdates - 1 do
  local P = a + 8
  if ARGV[a + 7] ~= '' then
    stamp, now, by, maxKeys, maxContexts = ARGV[a + 7], ARGV[a + 8], ARGV[a + 9], tonumber(ARGV[a + 10]), tonumber(ARGV[a + 11])
    P = a + 12
  end
  local ok, status, n = pcall(apply, 5 * u, a, P)
  if ok then
    out[2 * u + 1], out[2 * u + 2] = status, n
  else
    -- redis.call raises a table {err = message}; a Lua error is a string.
    out[2 * u + 1], out[2 * u + 2] = 'error', type(status) == 'table' and tostring(status.err) or tostring(status)
  end
  a = P - 1 + 4 * tonumber(ARGV[a + 3]) + tonumber(ARGV[a + 4])
end
return out
`;

/** The apply script with a store's constants; a Lua string literal of bytes as decimal escapes. */
function applyScript(maxLogEntries: number, maxLogBytes: number, channel: string, exactTrim: boolean): string {
  const literal = `"${[...Buffer.from(channel, "utf8")].map((b) => `\\${b}`).join("")}"`;
  return `local maxLogEntries, maxLogBytes, channel, exactTrim = ${maxLogEntries}, ${maxLogBytes}, ${literal}, ${exactTrim}${APPLY_BODY}`;
}

/** What the apply script said about one update, and how many replicas acknowledged its batch (with `?wait=`). */
interface ApplyOutcome {
  status: string;
  n: string;
  acks: number;
}

/** The arguments a turn's updates mostly have in common, sent once for a run of updates that share them. */
interface SharedArgs {
  nowMs: number;
  updatedBy: string;
  maxKeys: number;
  maxContexts: number;
}

/** stamp, nowMs, updatedBy, maxKeys, maxContexts (see APPLY_BODY); the stamp is never ''. */
function pushShared(argv: string[], a: SharedArgs): void {
  argv.push(`","${a.nowMs}",${JSON.stringify(a.updatedBy)},`, String(a.nowMs), a.updatedBy, String(a.maxKeys), String(a.maxContexts));
}

interface PendingApply {
  resolve(outcome: ApplyOutcome): void;
  reject(error: unknown): void;
}

/**
 * Flushes of queued updates in flight at once. With one, Redis idled while each reply travelled
 * and the next batch was built: 64 CAS updates in flight on one session, 2 cores, went from a
 * median 33k/s to 37.5k with two and 39.6k with three (bench/README.md, "December 4").
 */
const MAX_FLUSHES = 3;
/** Updates per script call at most: a call blocks Redis while it runs (~20 µs per update)… */
const MAX_BATCH = 128;
/** …and their keys and values in bytes at most (one update may pass it alone). */
const MAX_BATCH_BYTES = 1 << 20;

/** Stream records read per round trip when catching up. */
const READ_PAGE = 500n;

/**
 * Connects to Redis and returns the store at once; every method first waits until the
 * subscription is live, so no update applied after a method returns can go unannounced.
 */
export function createRedisContextStore(options: RedisContextStoreOptions = {}): ContextStore {
  const { maxLogEntries, maxLogBytes } = resolveChangeLogOptions(options);
  const url = options.url ?? "redis://127.0.0.1:6379";
  const prefix = checkKeyPrefix(options.keyPrefix ?? "mcp:");
  const parsedUrl = parseRedisUrl(url);
  const cluster = parsedUrl.kind === "cluster";
  const wait = parsedUrl.wait;
  const pingTimeoutMs = options.pingTimeoutMs ?? 1000;
  const channel = `${prefix}ctx:changes`;
  const indexKey = `${prefix}ctx:index`;
  const metaKey = (id: string): string => taggedKey(prefix, "ctx", id, ":m");
  const entriesKey = (id: string): string => taggedKey(prefix, "ctx", id, ":e");
  const logKey = (id: string): string => taggedKey(prefix, "ctx", id, ":l");
  const leasesKey = (id: string): string => taggedKey(prefix, "ctx", id, ":leases");
  const sizesKey = (id: string): string => taggedKey(prefix, "ctx", id, ":s");
  // Contexts in which a lease holds keys; another slot than the contexts' keys, so written
  // before the update (a crash in between leaves only a harmless extra member).
  const leaseIndexKey = (lease: string): string => taggedKey(prefix, "lease", lease);

  // The apply script's calls are batched here (`runApply`): ioredis's own pipelining would only
  // hold each batch back a turn (setImmediate) and wrap it in a pipeline of one.
  const notPipelined = ["evalsha", "eval"];
  const redis: RedisClient = createRedisClient(url, { connectionName: `${prefix}ctx`, autoPipelining: true, notPipelined });
  // Named so operators (and tests) can tell the subscriber apart in CLIENT LIST.
  const sub: RedisClient = createRedisClient(url, { connectionName: `${prefix}ctx-sub` });
  // ioredis reports connection trouble as "error" events and also fails the affected
  // commands; the commands are where callers learn of it, so the events are not re-reported.
  redis.on("error", () => {});
  // WAIT blocks its connection until the replicas answer: updates get one of their own, so reads
  // and health pings do not queue behind it (WAIT counts the writes of the connection it is on).
  const writer: RedisClient = wait === undefined ? redis : createRedisClient(url, { connectionName: `${prefix}ctx-w`, autoPipelining: true, notPipelined });
  if (writer !== redis) writer.on("error", () => {});
  sub.on("error", () => {});

  const listeners = new Set<ContextStoreListener>();
  /** The last version delivered to listeners, per context this instance has heard of. */
  const delivered = new Map<string, bigint>();
  /** The highest version announced and not yet delivered, per context. */
  const pending = new Map<string, bigint>();
  let draining: Promise<void> | undefined;
  let closed = false;

  // Set before `ready` resolves, which every method awaits.
  let script = "";
  let sha = "";
  const ready = (async () => {
    await sub.subscribe(channel);
    // Before Redis 6.2 (no XTRIM MINID) the script deletes dropped records one by one.
    const version = /redis_version:(\d+)\.(\d+)/.exec(await redis.info("server"));
    const exactTrim = version !== null && Number(version[1]) * 100 + Number(version[2]) < 602;
    script = applyScript(maxLogEntries, maxLogBytes, channel, exactTrim);
    sha = createHash("sha1").update(script).digest("hex");
    await redis.script("LOAD", script);
  })();
  // Each method awaits `ready` and surfaces its failure; this only prevents an unhandled
  // rejection when no method is ever called.
  ready.catch(() => {});

  sub.on("message", (ch: string, message: string) => {
    if (ch !== channel) return;
    const space = message.indexOf(" ");
    announce(message.slice(space + 1), BigInt(message.slice(0, space)));
  });
  let connectedOnce = false;
  sub.on("ready", () => {
    if (!connectedOnce) {
      connectedOnce = true;
      return;
    }
    // Announcements published while the subscriber was reconnecting are lost: ask for the
    // current version of every context we track and let the stream fill the gap.
    for (const id of delivered.keys()) {
      redis.hget(metaKey(id), "v").then(
        (v) => {
          if (v !== null) announce(id, BigInt(v));
        },
        () => {}, // the connection failed again; the next "ready" retries
      );
    }
  });

  function announce(id: string, version: bigint): void {
    if (closed) return;
    const last = delivered.get(id);
    if (last === undefined) delivered.set(id, version - 1n);
    else if (version <= last) return;
    if ((pending.get(id) ?? 0n) < version) pending.set(id, version);
    // A turn later, and after the script calls in flight now: an own update's reply, racing its
    // announcement on the other connection (a batch's reply comes after all its announcements),
    // then delivers it without a read of the log.
    draining ??= new Promise<void>((resolve) => setImmediate(resolve))
      .then(() => inFlight)
      .then(drain)
      .finally(() => {
        draining = undefined;
      });
  }

  function emit(event: ContextStoreEvent): void {
    notifyListeners(listeners, event);
  }

  async function drain(): Promise<void> {
    while (!closed) {
      const next = pending.entries().next();
      if (next.done === true) return;
      const [id, target] = next.value;
      pending.delete(id);
      await deliver(id, target);
    }
  }

  async function deliver(id: string, target: bigint): Promise<void> {
    let last = delivered.get(id) ?? target - 1n;
    while (last < target && !closed) {
      const end = last + READ_PAGE < target ? last + READ_PAGE : target;
      if (listeners.size > 0) {
        let records: ContextChange[];
        try {
          records = await readLog(id, last + 1n, end);
        } catch {
          if (closed) return;
          // Redis failed mid-delivery: say so rather than skip silently (§8).
          emit({ kind: "gap", contextId: id, version: target });
          advance(id, target);
          return;
        }
        if (closed) return;
        // Versions this instance applied may have been delivered from their replies meanwhile.
        const own = delivered.get(id) ?? last;
        let expect = (own > last ? own : last) + 1n;
        for (const change of records) {
          if (change.version < expect) continue;
          if (change.version > expect) emit({ kind: "gap", contextId: id, version: change.version - 1n });
          emit({ kind: "change", change });
          expect = change.version + 1n;
        }
        // Trimmed from the log before we read it.
        if (expect <= end) emit({ kind: "gap", contextId: id, version: end });
      }
      last = advance(id, end);
    }
  }

  /** Marks `id` delivered up to `version` (never back: own updates may be further along); returns where it is. */
  function advance(id: string, version: bigint): bigint {
    const now = delivered.get(id);
    if (now !== undefined && now >= version) return now;
    delivered.set(id, version);
    return version;
  }

  /**
   * An update this instance applied, delivered at once when it is the next version listeners
   * expect (else its announcement brings it from the log, in order). For a context not heard of
   * yet only its first version: of a later one, an earlier version's announcement may still be on
   * its way.
   */
  function deliverOwn(change: ContextChange): void {
    if (closed || (delivered.get(change.contextId) ?? 0n) !== change.version - 1n) return;
    delivered.set(change.contextId, change.version);
    if (listeners.size > 0) emit({ kind: "change", change });
  }

  async function readLog(id: string, from: bigint, to: bigint): Promise<ContextChange[]> {
    const rows = await redis.xrange(logKey(id), `${from}-0`, `${to}-0`);
    return rows.map(([streamId, fields]) => parseRecord(id, streamId, fields));
  }

  /**
   * Updates waiting for a script call, in order, in batches of at most `MAX_BATCH`. At most
   * `MAX_FLUSHES` flushes are in flight: the updates arriving meanwhile go out together when one
   * is answered, so under load Redis runs one command per round trip instead of one per update,
   * and the instance builds, times and parses one. Redis runs the calls in the order sent.
   */
  const queued: { keys: string[]; argv: string[]; calls: PendingApply[]; bytes: number; shared?: SharedArgs }[] = [];
  /** The script calls in flight; settles once their updates' callers have their outcomes. */
  let inFlight: Promise<void> | undefined;
  let flushing = 0;
  let flushScheduled = false;

  /** Runs one update's part of the apply script; a cluster's updates go one per call, each to its slot. */
  function runApply(keys: string[], head: string[], bytes: number, shared: SharedArgs, tail: string[]): Promise<ApplyOutcome> {
    return new Promise<ApplyOutcome>((resolve, reject) => {
      const call: PendingApply = { resolve, reject };
      if (cluster) {
        const argv = [...head];
        pushShared(argv, shared);
        void sendBatch(keys, [...argv, ...tail], [call]);
        return;
      }
      let batch = queued[queued.length - 1];
      if (batch === undefined || batch.calls.length >= MAX_BATCH || batch.bytes + bytes > MAX_BATCH_BYTES) {
        batch = { keys: [], argv: [], calls: [], bytes: 0 };
        queued.push(batch);
      }
      batch.bytes += bytes;
      for (const k of keys) batch.keys.push(k);
      for (const a of head) batch.argv.push(a);
      const last = batch.shared;
      if (last !== undefined && last.nowMs === shared.nowMs && last.updatedBy === shared.updatedBy && last.maxKeys === shared.maxKeys && last.maxContexts === shared.maxContexts) {
        batch.argv.push("");
      } else {
        pushShared(batch.argv, shared);
        batch.shared = shared;
      }
      for (const a of tail) batch.argv.push(a);
      batch.calls.push(call);
      if (flushing < MAX_FLUSHES && !flushScheduled) {
        flushScheduled = true;
        // After the turn's microtasks: every update dispatched from one read is in the batch.
        process.nextTick(flush);
      }
    });
  }

  function flush(): void {
    flushScheduled = false;
    if (queued.length === 0 || flushing >= MAX_FLUSHES) return;
    const batches = queued.splice(0);
    flushing++;
    // sendBatch never rejects: it settles its calls instead.
    const sent = Promise.all(batches.map((b) => sendBatch(b.keys, b.argv, b.calls))).then(() => {});
    const all = inFlight === undefined ? sent : Promise.all([inFlight, sent]).then(() => {});
    inFlight = all;
    void sent.then(() => {
      flushing--;
      if (inFlight === all) inFlight = undefined;
      flush();
    });
  }

  /** One EVALSHA for `calls` (their keys and arguments in order), then one WAIT when asked for; settles every call. */
  async function sendBatch(keys: string[], argv: string[], calls: PendingApply[]): Promise<void> {
    const args = [sha, String(keys.length + (cluster ? 0 : 1))];
    for (const k of keys) args.push(k);
    if (!cluster) args.push(indexKey);
    args.push(String(calls.length));
    for (const a of argv) args.push(a);
    let reply: string[];
    let acks = 0;
    try {
      try {
        // Given its arguments after construction: the constructor copies them with `args.flat()`,
        // 33–65 µs for 270 strings on Node 20 against 0.4 µs for a `slice()` (bench/README.md,
        // "December 3, later"). Ours are strings already, all that `call()` would make of them.
        const command = new Command("evalsha", [], { replyEncoding: "utf8" });
        command.args = args;
        reply = (await writer.sendCommand(command)) as string[];
      } catch (e) {
        // The script cache was flushed (restart, failover): send the body once more.
        if (!(e instanceof Error && e.message.startsWith("NOSCRIPT"))) throw e;
        reply = (await writer.call("eval", [script, ...args.slice(1)])) as string[];
      }
      if (wait !== undefined && calls.some((_, i) => reply[2 * i] === "ok")) {
        // Not acknowledged before the replicas have it: a master that dies or is demoted now
        // takes only unacknowledged updates with it (docs/deploy.md "Redis", failover).
        acks = await writer.wait(wait.replicas, wait.timeoutMs);
      }
    } catch (e) {
      for (const c of calls) c.reject(e);
      return;
    }
    // Settled in the order the updates ran: consecutive own updates go out in order.
    for (let i = 0; i < calls.length; i++) calls[i]!.resolve({ status: reply[2 * i] ?? "", n: reply[2 * i + 1] ?? "", acks });
  }

  async function checkReady(): Promise<void> {
    if (closed) throw new TypeError("the context store is closed");
    await ready;
  }

  return {
    async apply(write: ContextWrite): Promise<ContextChange> {
      checkWrite(write);
      await checkReady();
      const id = write.contextId;
      const maxContexts = write.maxContexts ?? 0;
      if (cluster && maxContexts > 0 && (await redis.hget(metaKey(id), "v")) === null) {
        const n = await redis.scard(indexKey);
        if (n >= maxContexts) throw tooManyContexts(id, n, maxContexts);
      }
      const withLeases = write.puts.some((p) => p.lease !== undefined);
      if (withLeases) {
        // Another slot than the context's keys (see leaseIndexKey), so not inside the script.
        for (const lease of new Set(write.puts.flatMap((p) => (p.lease === undefined ? [] : [p.lease])))) await redis.sadd(leaseIndexKey(lease), id);
      }
      const keys = [metaKey(id), entriesKey(id), logKey(id), leasesKey(id), sizesKey(id)];
      const bytes = changeBytes(write);
      const head = [id, write.expectedVersion.toString(), String(write.puts.length), String(write.deletes.length), String(bytes), JSON.stringify(write.deletes)];
      const shared: SharedArgs = { nowMs: write.nowMs, updatedBy: write.updatedBy, maxKeys: write.maxKeys ?? 0, maxContexts: cluster ? 0 : maxContexts };
      const tail: string[] = [];
      // Keys and values escaped here, once: the script pastes them into the entry and the log record.
      for (const p of write.puts) tail.push(p.key, JSON.stringify(p.key), JSON.stringify(p.valueJson));
      for (const k of write.deletes) tail.push(k);
      for (const p of write.puts) tail.push(p.lease ?? "");
      const { status, n, acks } = await runApply(keys, head, bytes, shared, tail);
      switch (status) {
        case "ok":
          break;
        case "conflict":
          throw versionConflict(id, write.expectedVersion, BigInt(n));
        case "too_many_contexts":
          throw tooManyContexts(id, Number(n), write.maxContexts ?? 0);
        case "too_many_keys":
          throw tooManyKeys(id, Number(n), write.maxKeys ?? 0);
        case "error":
          throw new Error(n);
        default:
          throw new TypeError(`unexpected reply from the apply script: ${String(status)}`);
      }
      if (wait !== undefined && acks < wait.replicas) {
        throw new Error(`context ${id} version ${n} reached ${acks} of ${wait.replicas} replicas within ${wait.timeoutMs} ms: not acknowledged (a failover may lose it)`);
      }
      const change: ContextChange = {
        contextId: id,
        version: BigInt(n),
        updatedAtMs: write.nowMs,
        updatedBy: write.updatedBy,
        // The write's arrays are read-only: shared unless leases must be left out.
        puts: withLeases ? write.puts.map((p) => ({ key: p.key, valueJson: p.valueJson })) : write.puts,
        deletes: write.deletes,
      };
      // Replies come back in the order the scripts ran: consecutive own updates go out in order.
      deliverOwn(change);
      if (cluster && n === "1") await redis.sadd(indexKey, id);
      return change;
    },

    async snapshot(contextId: string): Promise<ContextSnapshot | undefined> {
      await checkReady();
      // MULTI: the version and the entries come from the same instant.
      const res = await redis.multi().hget(metaKey(contextId), "v").hgetall(entriesKey(contextId)).exec();
      if (res === null) throw new TypeError("the snapshot transaction was aborted");
      const [[e1, v], [e2, hash]] = res as [[Error | null, string | null], [Error | null, Record<string, string>]];
      if (e1 !== null) throw e1;
      if (e2 !== null) throw e2;
      if (v === null) return undefined;
      const entries = Object.entries(hash).map(([key, raw]) => parseEntry(key, raw));
      entries.sort((a, b) => compareKeys(a.key, b.key));
      return { version: BigInt(v), entries };
    },

    async changesSince(contextId: string, knownVersion: bigint): Promise<ContextDelta | "too_old" | undefined> {
      await checkReady();
      const [v, f] = await redis.hmget(metaKey(contextId), "v", "f");
      if (v === null || v === undefined) return undefined;
      const version = BigInt(v);
      if (knownVersion < BigInt(f ?? "0") || knownVersion > version) return "too_old";
      if (knownVersion === version) return foldChanges(knownVersion, version, []);
      // Records never change once written, so reading them after the meta hash is safe; only
      // trimming can interfere, and then the range is no longer contiguous.
      const records = await readLog(contextId, knownVersion + 1n, version);
      const contiguous =
        BigInt(records.length) === version - knownVersion && records[0]?.version === knownVersion + 1n;
      if (!contiguous) return "too_old";
      return foldChanges(knownVersion, version, records);
    },

    subscribe(listener: ContextStoreListener): () => void {
      listeners.add(listener);
      return () => {
        listeners.delete(listener);
      };
    },

    async leased(lease: string): Promise<LeasedKeys[]> {
      await checkReady();
      const out: LeasedKeys[] = [];
      for (const id of (await redis.smembers(leaseIndexKey(lease))).sort()) {
        // MULTI: the version and the lease table come from the same instant (one slot).
        const res = await redis.multi().hget(metaKey(id), "v").hgetall(leasesKey(id)).exec();
        const [[, v], [, table]] = (res ?? [[null, null], [null, {}]]) as [[unknown, string | null], [unknown, Record<string, string>]];
        const keys = Object.entries(table ?? {}).flatMap(([k, l]) => (l === lease ? [k] : [])).sort(compareKeys);
        // No SREM when empty: a put with this lease may have added the id and not yet applied.
        if (keys.length > 0 && v !== null) out.push({ contextId: id, version: BigInt(v), keys });
      }
      return out;
    },

    async countContexts(): Promise<number> {
      await checkReady();
      return redis.scard(indexKey);
    },

    async ping(): Promise<void> {
      if (closed) throw new TypeError("the context store is closed");
      const pong = redis.ping();
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`redis did not answer PING within ${pingTimeoutMs} ms`)), pingTimeoutMs);
      });
      try {
        await Promise.race([pong, late]);
      } finally {
        clearTimeout(timer);
        // A ping left queued behind a reconnect settles later; its outcome is no longer wanted.
        pong.catch(() => {});
      }
    },

    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      listeners.clear();
      await draining;
      await Promise.all([quit(redis), quit(sub), ...(writer === redis ? [] : [quit(writer)])]);
    },
  };
}

async function quit(client: RedisClient): Promise<void> {
  // QUIT waits for replies in flight; a client that is not connected has nothing to wait for.
  if (client.status === "ready") {
    await client.quit().catch(() => client.disconnect());
  } else {
    client.disconnect();
  }
}

function parseEntry(key: string, raw: string): StoredEntry {
  // Written by the apply script as cjson.encode({version, nowMs, updatedBy, valueJson}).
  const [version, nowMs, updatedBy, valueJson] = JSON.parse(raw) as [string, string, string, string];
  return { key, valueJson, version: BigInt(version), updatedAtMs: Number(nowMs), updatedBy };
}

function parseRecord(contextId: string, streamId: string, fields: string[]): ContextChange {
  const version = BigInt(streamId.slice(0, streamId.indexOf("-")));
  let updatedAtMs = 0;
  let updatedBy = "";
  let puts: StoredPut[] = [];
  let deletes: string[] = [];
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const value = fields[i + 1] ?? "";
    switch (fields[i]) {
      case "t":
        updatedAtMs = Number(value);
        break;
      case "b":
        updatedBy = value;
        break;
      case "p":
        puts = jsonArray<[string, string]>(value).map(([key, valueJson]) => ({ key, valueJson }));
        break;
      case "d":
        deletes = jsonArray<string>(value);
        break;
    }
  }
  return { contextId, version, updatedAtMs, updatedBy, puts, deletes };
}

/** cjson encodes an empty Lua table as `{}`, not `[]`. */
function jsonArray<T>(text: string): T[] {
  const v: unknown = JSON.parse(text);
  // The script only ever writes arrays (or `{}` for an empty one).
  return Array.isArray(v) ? (v as T[]) : [];
}
