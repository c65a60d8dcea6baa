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
 * If the instance running a ghost dies (SIGKILL, crash, cut off from Redis), its commands never
 * answer: each record names its instance, whose liveness (src/session/instance-liveness.ts) the
 * holder reads while it waits, and once that instance is dead the holder *abandons* each command
 * still recorded and answers it itself (`TRANSPORT connection_lost`, outcome unknown). Removing
 * the record is the race: a ghost's Response is forwarded only if it removes the record itself
 * (one script), so a command abandoned by the holder — the ghost was only frozen — is never
 * answered twice.
 *
 * Keys are hash-tagged by session id (`<prefix>session:{<id>}:fwd`, `…:remote`), so each MULTI
 * touches one Redis Cluster slot. Announcements and cancels share one classic pub/sub channel
 * (`<prefix>session-remote`), which a cluster delivers to subscribers on every node.
 */
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { ServerMessageSchema, type ServerMessage } from "../../gen/mcp/v1/session_pb.js";
import { taggedKey, type RedisClient } from "../context/redis-client.js";
import type { InstanceLiveness } from "./instance-liveness.js";
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
  /** The session's commands recorded as running elsewhere, each with the id of the instance running it. */
  owners(sessionId: string): Promise<Map<string, string>>;
  /** Of `instanceIds`, those that stopped their heartbeat (dead); rejects when Redis cannot tell. */
  deadInstances(instanceIds: Iterable<string>): Promise<Set<string>>;
  /**
   * Removes the record of a command whose instance died; true when this call removed it (the
   * caller now answers it, and a late forward of its Response is dropped), false when its
   * Response was forwarded first.
   */
  abandon(sessionId: string, commandId: string): Promise<boolean>;
  /** How often the holder reads the liveness of instances running its session's commands, in ms. */
  readonly checkIntervalMs: number;
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
  /** This instance's id: the records of its ghosts name it. */
  instanceId: string;
  /** Liveness of the instances (this one's heartbeat included). */
  liveness: InstanceLiveness;
}

// KEYS: fwd, remote. ARGV: ttlMs, the settled command id ("" for an event), the message.
// A Response lands only if its record was still there: the holder may have abandoned it.
const FORWARD_SCRIPT = `
if ARGV[2] ~= '' and redis.call('HDEL', KEYS[2], ARGV[2]) == 0 then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1`;

interface Announcement {
  kind?: unknown;
  id?: unknown;
  command?: unknown;
}

/** Remote commands over Redis. */
export async function createRedisRemoteCommands(options: RedisRemoteCommandsOptions): Promise<RemoteCommands> {
  const { redis, sub, prefix, ttlMs, instanceId, liveness } = options;
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
      await chain(sessionId, () => redis.multi().hset(remoteKey(sessionId), ...commandIds.flatMap((c) => [c, instanceId])).pexpire(remoteKey(sessionId), ttlMs).exec());
    },
    async runningElsewhere(sessionId) {
      return redis.hkeys(remoteKey(sessionId));
    },
    async owners(sessionId) {
      return new Map(Object.entries(await redis.hgetall(remoteKey(sessionId))));
    },
    deadInstances(instanceIds) {
      return liveness.dead(instanceIds);
    },
    async abandon(sessionId, commandId) {
      return (await redis.hdel(remoteKey(sessionId), commandId)) === 1;
    },
    checkIntervalMs: liveness.heartbeatMs,
    forward(sessionId, payload, settled) {
      const bin = encode(payload);
      const write = async () => {
        const landed = await redis.call("eval", [FORWARD_SCRIPT, 2, fwdKey(sessionId), remoteKey(sessionId), ttlMs, settled ?? "", bin]);
        if (landed === 1) await announce(sessionId);
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
