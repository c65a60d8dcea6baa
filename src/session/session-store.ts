/**
 * Sessions shared between server instances (PROTOCOL.md §8: "a session may resume on another
 * instance"). A session lives in the memory of the instance that serves it, and that instance
 * *mirrors* it in Redis from its first message: its credentials, seq and the resume ring, the
 * messages it emits appended in batches — every `flushIntervalMs` one script call per session
 * that emitted anything, never one per message (a busy session emits thousands a second). So a
 * session survives its instance: a graceful shutdown writes every batch first; a crash loses at
 * most the last `flushIntervalMs` of messages plus the batch being written. A client that had
 * already received some of those resumes after them (`Session.replayFor`: the session's seq moves
 * on to the client's), never handed a different message under a seq it has seen; what it had not
 * received of them is gone, and its watches re-sync from their versions. A resume that reaches another
 * instance *claims* it: a live owner ends the commands still running there (each gets its one
 * Response, `cancelled`, appended), releases the session, and the claimer rebuilds it from the
 * mirror; a dead owner releases nothing and the claimer proceeds after `releaseTimeoutMs`.
 *
 * Keys are hash-tagged by session id (`<prefix>session:{<id>}` and `…:msgs`), so each script
 * and MULTI touches one Redis Cluster slot.
 */
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { createHash, randomUUID } from "node:crypto";
import { checkKeyPrefix, createRedisClient, taggedKey } from "../context/redis-client.js";
import { encodeMessages } from "../transport/grpc-frames.js";
import { ServerMessageSchema, type ServerMessage } from "../../gen/mcp/v1/session_pb.js";
import type { SecurityLevel } from "../../gen/mcp/v1/types_pb.js";
import { createInstanceLiveness } from "./instance-liveness.js";
import { createRedisRemoteCommands, type RemoteCommands } from "./remote-commands.js";

/** What another instance needs to continue a session. */
export interface ParkedSession {
  id: string;
  subject?: string;
  roles: string[];
  level: SecurityLevel;
  expiresAt?: number;
  jti?: string;
  createdAt: number;
  /** The last seq assigned, and the messages still held for resume, in seq order. */
  lastSeq: bigint;
  messages: ServerMessage[];
  /** The client takes `Response.output_json` (SessionInit.outputJson): kept so a resume elsewhere answers in the same form. */
  outputJson?: boolean;
}

/** Where parked sessions live. */
export interface SessionStore {
  /** This instance's id (claims name the instance that asks). */
  readonly instanceId: string;
  /** Mirrors a session (replacing what was stored under its id) for `ttlMs`. */
  park(session: ParkedSession, ttlMs: number): Promise<void>;
  /**
   * Adds a message the mirrored session emitted (in order, after those parked), while this
   * instance still owns the mirror; refreshes its time to live. Written with the session's next
   * batch (`flushIntervalMs`); resolves once that batch is written or its write failed.
   */
  append(sessionId: string, message: ServerMessage): Promise<void>;
  /** Keeps the mirrors of live sessions for another `ttlMs` (the owner is alive). */
  touch(sessionIds: readonly string[], ttlMs: number): Promise<void>;
  /** The session closed for good: forget its mirror. */
  unpark(sessionId: string): Promise<void>;
  /**
   * Sessions whose mirror expired because no instance kept it alive (their instance died and
   * nobody resumed them within the resume window): each id is returned to exactly one caller
   * across all instances, which ends what outlives the session (its context leases).
   */
  reapOrphans(nowMs: number): Promise<string[]>;
  /**
   * Takes a session parked by another instance: asks its owner to release it (waiting at most
   * `releaseTimeoutMs` — an owner that died releases nothing), then returns and removes it.
   * Undefined when nothing is parked under that id; "other_subject" — and nothing moves — when
   * it belongs to a subject other than `subject`.
   */
  claim(sessionId: string, subject: string | undefined, releaseTimeoutMs?: number): Promise<ParkedSession | "other_subject" | undefined>;
  /**
   * Registers what this instance does when another claims one of its parked sessions: end its
   * local copy (appending the last Responses) and resolve; the claim proceeds after that.
   */
  onClaim(release: (sessionId: string) => Promise<void>): void;
  /**
   * Commands that keep running on this instance after their session moved to another (their
   * Responses forwarded, their Cancels routed here). None: a move cancels them.
   */
  readonly remote?: RemoteCommands;
  close(): Promise<void>;
}

/** Options of `createRedisSessionStore`. */
export interface RedisSessionStoreOptions {
  /** e.g. `redis://127.0.0.1:6379/0`. */
  url: string;
  /**
   * Prefix of every key and channel.
   * @default "mcp:"
   */
  prefix?: string;
  /**
   * Messages kept per mirrored session (the resume ring, `resumeBufferMessages`).
   * @default 4096
   */
  maxMessages?: number;
  /**
   * Time to live of an appended-to mirror, in ms (`resumeTtlMs`).
   * @default 60000
   */
  ttlMs?: number;
  /**
   * How long emitted messages wait to be mirrored, in ms: each interval, one script call per
   * session that emitted anything (all sent in the same turn). The bound on what a crash (not a
   * graceful shutdown) of this instance loses besides the batch in flight; 0 = every event-loop turn.
   * @default 5
   */
  flushIntervalMs?: number;
  /**
   * How often this instance refreshes its liveness key, in ms (`instanceHeartbeatMs`,
   * src/session/instance-liveness.ts).
   * @default 1000
   */
  heartbeatMs?: number;
  /**
   * How long after its last heartbeat an instance counts as dead and the commands it ran for
   * moved sessions are answered `connection_lost` by their holders, in ms (`instanceDeadAfterMs`).
   * @default 3000
   */
  deadAfterMs?: number;
}

// KEYS: meta, msgs. ARGV: owner, ttlMs, maxMessages, then the messages (binary).
// Appends only while `owner` still owns the mirror: after a claim the old owner's late
// messages must not land in the new owner's session.
const APPEND_SCRIPT = `
local meta = redis.call('GET', KEYS[1])
if not meta or cjson.decode(meta).owner ~= ARGV[1] then return 0 end
for i = 4, #ARGV, 1000 do
  redis.call('RPUSH', KEYS[2], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1`;
const APPEND_SHA = createHash("sha1").update(APPEND_SCRIPT).digest("hex");

interface ParkedMeta {
  id: string;
  owner: string;
  subject?: string;
  roles: string[];
  level: number;
  expiresAt?: number;
  jti?: string;
  createdAt: number;
  lastSeq: string;
  /** Absent in a mirror written before the field existed: false. */
  outputJson?: boolean;
}

/** Parked sessions in Redis: a JSON meta key and a list of binary messages, both with a TTL. */
export async function createRedisSessionStore(options: RedisSessionStoreOptions): Promise<SessionStore> {
  const prefix = checkKeyPrefix(options.prefix ?? "mcp:");
  const maxMessages = options.maxMessages ?? 4096;
  const ttlMs = options.ttlMs ?? 60_000;
  const instanceId = randomUUID();
  const redis = createRedisClient(options.url, { connectionName: `${prefix}sessions`, autoPipelining: true });
  const sub = createRedisClient(options.url, { connectionName: `${prefix}sessions-sub` });
  // Failures reach callers as rejected commands (or are absorbed by `enqueue`); ioredis would
  // otherwise print every reconnect attempt.
  redis.on("error", () => {});
  sub.on("error", () => {});
  const claims = `${prefix}session-claims`;
  // Session id → when its mirror expires unless kept alive: how orphans are found.
  const deadlines = `${prefix}session-deadlines`;
  const releases = `${prefix}session-releases`;
  const metaKey = (id: string) => taggedKey(prefix, "session", id);
  const msgsKey = (id: string) => taggedKey(prefix, "session", id, ":msgs");
  // Messages waiting for the next flush, per session: the objects, encoded when written (off
  // the per-message path; a ServerMessage is never changed once emitted).
  const batches = new Map<string, ServerMessage[]>();
  async function writeBatch(sessionId: string): Promise<void> {
    const msgs = batches.get(sessionId);
    batches.delete(sessionId);
    if (msgs === undefined || msgs.length === 0) return;
    // One toBinary for the batch; each element a view of its range (no copy).
    const { bytes, bounds } = encodeMessages(ServerMessageSchema, msgs);
    const bins: Buffer[] = new Array<Buffer>(msgs.length);
    for (let i = 0; i < msgs.length; i++) bins[i] = Buffer.from(bytes.buffer, bytes.byteOffset + bounds[2 * i]!, bounds[2 * i + 1]! - bounds[2 * i]!);
    const args = [APPEND_SHA, 2, metaKey(sessionId), msgsKey(sessionId), instanceId, ttlMs, maxMessages, ...bins];
    try {
      await redis.call("evalsha", args);
    } catch (e) {
      // The script cache was flushed (restart, failover, another cluster node): send the body.
      if (!(e instanceof Error && e.message.startsWith("NOSCRIPT"))) throw e;
      await redis.call("eval", [APPEND_SCRIPT, ...args.slice(1)]);
    }
  }
  let release: ((sessionId: string) => Promise<void>) | undefined;
  const releaseWaiters = new Map<string, () => void>();
  // Writes for one session (park, appends, unpark) are chained so they land in order.
  const appending = new Map<string, Promise<void>>();
  function enqueue(sessionId: string, write: () => Promise<unknown>): Promise<void> {
    const next = (appending.get(sessionId) ?? Promise.resolve()).then(write).then(
      () => {},
      () => {}, // a lost write only costs the resume elsewhere; the local session is unaffected
    );
    appending.set(sessionId, next);
    void next.then(() => {
      if (appending.get(sessionId) === next) appending.delete(sessionId);
    });
    return next;
  }
  /** Writes `sessionId`'s batch now (after its earlier writes); resolves when it has nothing waiting. */
  function flushSession(sessionId: string): Promise<void> {
    return batches.has(sessionId) ? enqueue(sessionId, () => writeBatch(sessionId)) : (appending.get(sessionId) ?? Promise.resolve());
  }
  // One timer for every session: per interval, each session with messages gets one write.
  const flushIntervalMs = options.flushIntervalMs ?? 5;
  let flushTimer: NodeJS.Timeout | NodeJS.Immediate | undefined;
  // What append() returns until the next flush: one promise per interval, not per message.
  let flushed: Promise<void> | undefined;
  let resolveFlushed: (() => void) | undefined;
  function flushAll(): void {
    flushTimer = undefined;
    const done = resolveFlushed;
    flushed = resolveFlushed = undefined;
    const writes: Promise<void>[] = [];
    for (const id of [...batches.keys()]) writes.push(flushSession(id));
    void Promise.all(writes).then(done);
  }
  function scheduleFlush(): Promise<void> {
    if (flushTimer === undefined) {
      flushTimer = flushIntervalMs > 0 ? setTimeout(flushAll, flushIntervalMs) : setImmediate(flushAll);
      // A pending flush must not hold the process open; close() writes what is left.
      flushTimer.unref();
      flushed = new Promise((resolve) => (resolveFlushed = resolve));
    }
    return flushed!; // set together with flushTimer
  }

  await sub.subscribe(claims, releases);
  const liveness = await createInstanceLiveness({
    redis,
    prefix,
    instanceId,
    ...(options.heartbeatMs === undefined ? {} : { heartbeatMs: options.heartbeatMs }),
    ...(options.deadAfterMs === undefined ? {} : { deadAfterMs: options.deadAfterMs }),
  });
  const remote = await createRedisRemoteCommands({ redis, sub, prefix, ttlMs, instanceId, liveness });
  sub.on("message", (channel: string, text: string) => {
    let msg: { id?: unknown; owner?: unknown };
    try {
      msg = JSON.parse(text) as typeof msg;
    } catch {
      return; // not ours
    }
    if (typeof msg.id !== "string") return;
    const id = msg.id;
    if (channel === releases) {
      releaseWaiters.get(id)?.();
      return;
    }
    if (channel === claims && msg.owner === instanceId && release !== undefined) {
      release(id)
        .then(() => flushSession(id)) // the last Responses land before the claimer reads
        .then(() => redis.publish(releases, JSON.stringify({ id })))
        .catch(() => {
          // The claimer waits out its timeout and takes what was parked.
        });
    }
  });

  return {
    instanceId,
    remote,
    park(s, ttlMs) {
      const meta: ParkedMeta = {
        id: s.id,
        owner: instanceId,
        roles: s.roles,
        level: s.level,
        createdAt: s.createdAt,
        lastSeq: s.lastSeq.toString(),
        ...(s.outputJson === true ? { outputJson: true } : {}),
        ...(s.subject === undefined ? {} : { subject: s.subject }),
        ...(s.expiresAt === undefined ? {} : { expiresAt: s.expiresAt }),
        ...(s.jti === undefined ? {} : { jti: s.jti }),
      };
      const bins = s.messages.map((x) => Buffer.from(toBinary(ServerMessageSchema, x)));
      // The ring given here holds whatever was still waiting: it must not be written twice.
      batches.delete(s.id);
      return enqueue(s.id, () => {
        const m = redis.multi().del(msgsKey(s.id));
        if (bins.length > 0) m.rpush(msgsKey(s.id), ...bins);
        return m.set(metaKey(s.id), JSON.stringify(meta), "PX", ttlMs).pexpire(msgsKey(s.id), ttlMs).exec()
          .then(() => redis.zadd(deadlines, Date.now() + ttlMs, s.id));
      });
    },
    append(sessionId, message) {
      // Hot path (every message of every mirrored session): a push, and one timer per interval.
      const batch = batches.get(sessionId);
      if (batch !== undefined) batch.push(message);
      else batches.set(sessionId, [message]);
      return scheduleFlush();
    },
    async touch(sessionIds, ttl) {
      if (sessionIds.length === 0) return;
      const m = redis.pipeline();
      for (const id of sessionIds) m.pexpire(metaKey(id), ttl).pexpire(msgsKey(id), ttl);
      await m.exec().catch(() => {}); // the next touch or append retries
      // Another slot (cluster): a separate command. XX: never resurrect one reaped meanwhile.
      const when = Date.now() + ttl;
      await redis.zadd(deadlines, "XX", ...sessionIds.flatMap((id) => [when, id])).catch(() => {});
    },
    unpark(sessionId) {
      batches.delete(sessionId); // deleted with the rest
      return enqueue(sessionId, () => redis.del(metaKey(sessionId), msgsKey(sessionId)).then(() => redis.zrem(deadlines, sessionId)));
    },
    async reapOrphans(nowMs) {
      const due = await redis.zrangebyscore(deadlines, "-inf", nowMs, "LIMIT", 0, 100);
      const mine: string[] = [];
      for (const id of due) {
        const ttl = await redis.pttl(metaKey(id));
        // Still mirrored (appended to or touched late): look again when that copy expires.
        if (ttl > 0) await redis.zadd(deadlines, "XX", nowMs + ttl, id);
        // ZREM is the race: of all instances reaping at once, one removes it.
        else if ((await redis.zrem(deadlines, id)) === 1) mine.push(id);
      }
      return mine;
    },
    async claim(sessionId, subject, releaseTimeoutMs = 2_000) {
      const text = await redis.get(metaKey(sessionId));
      if (text === null) return undefined;
      const meta = JSON.parse(text) as ParkedMeta;
      if (meta.subject !== subject) return "other_subject";
      if (meta.owner !== instanceId) {
        const released = new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, releaseTimeoutMs);
          releaseWaiters.set(sessionId, () => {
            clearTimeout(timer);
            resolve();
          });
        });
        await redis.publish(claims, JSON.stringify({ id: sessionId, owner: meta.owner }));
        await released;
        releaseWaiters.delete(sessionId);
      }
      // Take it atomically: of two instances claiming at once, one gets it.
      const [[, metaNow], [, bins], [, deleted]] = (await redis
        .multi()
        .get(metaKey(sessionId))
        .lrangeBuffer(msgsKey(sessionId), 0, -1)
        .del(metaKey(sessionId), msgsKey(sessionId))
        .exec()) as [[null, string | null], [null, Buffer[]], [null, number]];
      if (metaNow === null || deleted === 0) return undefined;
      const m = JSON.parse(metaNow) as ParkedMeta;
      const messages = bins.map((b) => fromBinary(ServerMessageSchema, b));
      const lastSeq = messages.reduce((max, x) => (x.seq > max ? x.seq : max), BigInt(m.lastSeq));
      return {
        id: m.id,
        roles: m.roles,
        level: m.level as SecurityLevel,
        createdAt: m.createdAt,
        lastSeq,
        messages,
        ...(m.outputJson === true ? { outputJson: true } : {}),
        ...(m.subject === undefined ? {} : { subject: m.subject }),
        ...(m.expiresAt === undefined ? {} : { expiresAt: m.expiresAt }),
        ...(m.jti === undefined ? {} : { jti: m.jti }),
      };
    },
    onClaim(handler) {
      release = handler;
    },
    async close() {
      if (flushTimer !== undefined) {
        if (flushIntervalMs > 0) clearTimeout(flushTimer as NodeJS.Timeout);
        else clearImmediate(flushTimer as NodeJS.Immediate);
        flushAll();
      }
      await Promise.all(appending.values());
      await remote.flush();
      // Last: until every forward landed, this instance's ghosts must not look dead.
      await liveness.close();
      sub.disconnect();
      await redis.quit().catch(() => {});
    },
  };
}
