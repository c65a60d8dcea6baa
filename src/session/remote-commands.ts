/**
 * Commands that outlive their session's move to another instance (issue 15: "`Cancel` and
 * deadlines reach the instance that runs the command"). When instance B claims a session from a
 * live instance A, A does not cancel what it still runs: it hands the session off as a *ghost*
 * whose commands keep running — their timeouts included — and records their ids in Redis. What
 * the ghost emits (Responses, `command.output` / `command.progress` events) is *forwarded*: pushed
 * to a per-session list and announced, and whichever instance holds the session then takes the
 * list atomically and emits it in the session, numbered and mirrored like any message — so the
 * client gets each Response exactly once, on whichever instance it is connected to. A `Cancel`
 * for an id the holder does not run itself is published; the ghost running it cancels it.
 *
 * Keys are hash-tagged by session id (`<prefix>session:{<id>}:fwd`, `…:remote`), so each MULTI
 * touches one Redis Cluster slot. Announcements and cancels share one classic pub/sub channel
 * (`<prefix>session-remote`), which a cluster delivers to subscribers on every node.
 */
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { ServerMessageSchema, type ServerMessage } from "../../gen/mcp/v1/session_pb.js";
import { taggedKey, type RedisClient } from "../context/redis-client.js";
import type { ServerPayload } from "./session.js";

/** The cross-instance side of commands that keep running after their session moved. */
export interface RemoteCommands {
  /**
   * Session `sessionId` moved away while these commands still run here: records them, so the
   * next holder refuses their re-sends (`duplicate_command_id`) and routes their Cancels here.
   * Resolves once recorded (the hand-off completes after that).
   */
  handedOff(sessionId: string, commandIds: readonly string[]): Promise<void>;
  /** The session's commands that still run on some other instance. */
  runningElsewhere(sessionId: string): Promise<string[]>;
  /**
   * A message a ghost emitted, for whoever holds the session; `settled` names the command whose
   * Response it is (no longer running elsewhere). Writes for one session land in order.
   */
  forward(sessionId: string, payload: ServerPayload, settled?: string): void;
  /** Takes (and removes) everything forwarded to the session so far, in order. */
  take(sessionId: string): Promise<ServerPayload[]>;
  /** Gives back what `take` returned when the session left before it could be emitted. */
  giveBack(sessionId: string, payloads: readonly ServerPayload[]): Promise<void>;
  /** Asks the instance running `commandId` of the session to cancel it. */
  cancel(sessionId: string, commandId: string): Promise<void>;
  /** Keeps the records of ghosts alive (their commands may outrun the resume window). */
  keepAlive(sessionIds: readonly string[]): Promise<void>;
  /** Registers what to do when something was forwarded to a session (take it, if held here). */
  onForwarded(handler: (sessionId: string) => void): void;
  /** Registers what to do with a Cancel for a command of a session (cancel it, if a ghost here runs it). */
  onCancel(handler: (sessionId: string, commandId: string) => void): void;
  /** Waits for the forwards still being written. */
  flush(): Promise<void>;
}

/** What `createRedisRemoteCommands` works with: the session store's connections. */
export interface RedisRemoteCommandsOptions {
  redis: RedisClient;
  /** A subscriber connection (already used for other channels: messages of others are ignored). */
  sub: RedisClient;
  prefix: string;
  /** Time to live of the records and the forwarded messages, in ms (`resumeTtlMs`). */
  ttlMs: number;
}

interface Announcement {
  kind?: unknown;
  id?: unknown;
  command?: unknown;
}

/** Remote commands over Redis. */
export async function createRedisRemoteCommands(options: RedisRemoteCommandsOptions): Promise<RemoteCommands> {
  const { redis, sub, prefix, ttlMs } = options;
  const channel = `${prefix}session-remote`;
  const fwdKey = (id: string) => taggedKey(prefix, "session", id, ":fwd");
  const remoteKey = (id: string) => taggedKey(prefix, "session", id, ":remote");
  let forwarded: ((sessionId: string) => void) | undefined;
  let cancelled: ((sessionId: string, commandId: string) => void) | undefined;
  // Forwards of one session are chained so its list keeps the order they were emitted in.
  const writing = new Map<string, Promise<void>>();

  await sub.subscribe(channel);
  sub.on("message", (ch: string, text: string) => {
    if (ch !== channel) return;
    let a: Announcement;
    try {
      a = JSON.parse(text) as Announcement;
    } catch {
      return; // not ours
    }
    if (typeof a.id !== "string") return;
    if (a.kind === "fwd") forwarded?.(a.id);
    else if (a.kind === "cancel" && typeof a.command === "string") cancelled?.(a.id, a.command);
  });
  const announce = (id: string) => redis.publish(channel, JSON.stringify({ kind: "fwd", id }));
  /** Runs `write` after the session's earlier writes; a failed one does not stop later ones. */
  function chain(sessionId: string, write: () => Promise<unknown>): Promise<void> {
    const next = (writing.get(sessionId) ?? Promise.resolve()).then(write).then(() => {});
    const settledNext = next.catch(() => {});
    writing.set(sessionId, settledNext);
    void settledNext.then(() => {
      if (writing.get(sessionId) === settledNext) writing.delete(sessionId);
    });
    return next;
  }
  const encode = (payload: ServerPayload) => Buffer.from(toBinary(ServerMessageSchema, { $typeName: "mcp.v1.ServerMessage", seq: 0n, message: payload } satisfies ServerMessage));

  return {
    async handedOff(sessionId, commandIds) {
      if (commandIds.length === 0) return;
      await chain(sessionId, () => redis.multi().hset(remoteKey(sessionId), ...commandIds.flatMap((c) => [c, "1"])).pexpire(remoteKey(sessionId), ttlMs).exec());
    },
    async runningElsewhere(sessionId) {
      return redis.hkeys(remoteKey(sessionId));
    },
    forward(sessionId, payload, settled) {
      const bin = encode(payload);
      const write = async () => {
        const m = redis.multi().rpush(fwdKey(sessionId), bin).pexpire(fwdKey(sessionId), ttlMs);
        if (settled !== undefined) m.hdel(remoteKey(sessionId), settled);
        await m.exec();
        await announce(sessionId);
      };
      chain(sessionId, write).catch(() => {
        // Redis unreachable: the Response is lost to the client, whose call then settles by its
        // own deadline or the session's end (docs/deploy.md "Commands after a move").
      });
    },
    async take(sessionId) {
      const [[, bins]] = (await redis.multi().lrangeBuffer(fwdKey(sessionId), 0, -1).del(fwdKey(sessionId)).exec()) as [[null, Buffer[]], [null, number]];
      return bins.map((b) => fromBinary(ServerMessageSchema, b).message);
    },
    async giveBack(sessionId, payloads) {
      if (payloads.length === 0) return;
      // LPUSH pushes each to the head in turn: reversed, they keep their order before newer ones.
      await redis.multi().lpush(fwdKey(sessionId), ...payloads.map(encode).reverse()).pexpire(fwdKey(sessionId), ttlMs).exec();
      await announce(sessionId);
    },
    async cancel(sessionId, commandId) {
      await redis.publish(channel, JSON.stringify({ kind: "cancel", id: sessionId, command: commandId }));
    },
    async keepAlive(sessionIds) {
      // One command per key, not a pipeline: on a cluster the keys live in different slots.
      await Promise.all(sessionIds.map((id) => redis.pexpire(remoteKey(id), ttlMs)));
    },
    onForwarded(handler) {
      forwarded = handler;
    },
    onCancel(handler) {
      cancelled = handler;
    },
    async flush() {
      await Promise.all(writing.values());
    },
  };
}
