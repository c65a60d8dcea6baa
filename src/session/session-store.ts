/**
 * Sessions shared between server instances (PROTOCOL.md §8: "a session may resume on another
 * instance"). A session lives in the memory of the instance that serves it; when its stream goes
 * away that instance *parks* it in Redis — its credentials, seq and the resume ring, plus every
 * message it emits while parked. A resume that reaches another instance *claims* it: the owner
 * ends the commands still running there (each gets its one Response, `cancelled`, appended to the
 * parked messages), releases the session, and the claimer rebuilds it from what was parked.
 */
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { Redis } from "../optional/ioredis.js";
import { randomUUID } from "node:crypto";
import { ServerMessageSchema, type ServerMessage } from "../../gen/mcp/v1/session_pb.js";
import type { SecurityLevel } from "../../gen/mcp/v1/types_pb.js";

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
}

/** Where parked sessions live. */
export interface SessionStore {
  /** This instance's id (claims name the instance that asks). */
  readonly instanceId: string;
  /** Parks a detached session for `ttlMs`. */
  park(session: ParkedSession, ttlMs: number): Promise<void>;
  /** Adds a message the parked session emitted (in order, after those parked). */
  append(sessionId: string, message: ServerMessage): Promise<void>;
  /** The session was resumed here, or closed: forget what was parked. */
  unpark(sessionId: string): Promise<void>;
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
}

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
}

/** Parked sessions in Redis: a JSON meta key and a list of binary messages, both with a TTL. */
export async function createRedisSessionStore(options: RedisSessionStoreOptions): Promise<SessionStore> {
  const prefix = options.prefix ?? "mcp:";
  const instanceId = randomUUID();
  const redis = new Redis(options.url, { connectionName: `${prefix}sessions` });
  const sub = new Redis(options.url, { connectionName: `${prefix}sessions-sub` });
  const claims = `${prefix}session-claims`;
  const releases = `${prefix}session-releases`;
  const metaKey = (id: string) => `${prefix}session:${id}`;
  const msgsKey = (id: string) => `${prefix}session:${id}:msgs`;
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

  await sub.subscribe(claims, releases);
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
        .then(() => appending.get(id))
        .then(() => redis.publish(releases, JSON.stringify({ id })))
        .catch(() => {
          // The claimer waits out its timeout and takes what was parked.
        });
    }
  });

  return {
    instanceId,
    park(s, ttlMs) {
      const meta: ParkedMeta = {
        id: s.id,
        owner: instanceId,
        roles: s.roles,
        level: s.level,
        createdAt: s.createdAt,
        lastSeq: s.lastSeq.toString(),
        ...(s.subject === undefined ? {} : { subject: s.subject }),
        ...(s.expiresAt === undefined ? {} : { expiresAt: s.expiresAt }),
        ...(s.jti === undefined ? {} : { jti: s.jti }),
      };
      const bins = s.messages.map((x) => Buffer.from(toBinary(ServerMessageSchema, x)));
      return enqueue(s.id, () => {
        const m = redis.multi().del(msgsKey(s.id));
        if (bins.length > 0) m.rpush(msgsKey(s.id), ...bins);
        return m.set(metaKey(s.id), JSON.stringify(meta), "PX", ttlMs).pexpire(msgsKey(s.id), ttlMs).exec();
      });
    },
    append(sessionId, message) {
      const bin = Buffer.from(toBinary(ServerMessageSchema, message));
      // Only while parked: a session resumed or claimed meanwhile has no meta any more.
      return enqueue(sessionId, async () => {
        if ((await redis.exists(metaKey(sessionId))) === 1) await redis.rpush(msgsKey(sessionId), bin);
      });
    },
    unpark(sessionId) {
      return enqueue(sessionId, () => redis.del(metaKey(sessionId), msgsKey(sessionId)));
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
        ...(m.subject === undefined ? {} : { subject: m.subject }),
        ...(m.expiresAt === undefined ? {} : { expiresAt: m.expiresAt }),
        ...(m.jti === undefined ? {} : { jti: m.jti }),
      };
    },
    onClaim(handler) {
      release = handler;
    },
    async close() {
      await Promise.all(appending.values());
      sub.disconnect();
      await redis.quit().catch(() => {});
    },
  };
}
