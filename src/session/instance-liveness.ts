/**
 * Which server instances are alive (issue 15: "every command answered exactly once" when an
 * instance dies). Each instance keeps a key `<prefix>instance:<id>` whose time to live is
 * `deadAfterMs`, refreshed every `heartbeatMs`: an instance that is SIGKILLed, frozen or cut off
 * from Redis stops refreshing it, and once it lapses every other instance sees it gone. Plain
 * keys with a TTL, read with EXISTS: no reliance on keyspace notifications being enabled.
 */
import type { RedisClient } from "../context/redis-client.js";

/** Options of `createInstanceLiveness`. */
export interface InstanceLivenessOptions {
  redis: RedisClient;
  prefix: string;
  /** This instance's id (`SessionStore.instanceId`). */
  instanceId: string;
  /**
   * How often this instance refreshes its key, in ms.
   * @default 1000
   */
  heartbeatMs?: number;
  /**
   * The key's time to live, in ms: how long after its last refresh an instance counts as dead.
   * Must exceed `heartbeatMs` (a missed refresh or two must not kill a live instance).
   * @default 3000
   */
  deadAfterMs?: number;
}

/** This instance's heartbeat and the liveness of the others. */
export interface InstanceLiveness {
  /** How often the others' liveness is worth reading again, in ms (`heartbeatMs`). */
  readonly heartbeatMs: number;
  /** Of `instanceIds`, those whose key lapsed (dead). A Redis error rejects: nobody is declared dead then. */
  dead(instanceIds: Iterable<string>): Promise<Set<string>>;
  /** Stops the heartbeat and removes this instance's key (graceful shutdown: nothing of ours runs any more). */
  close(): Promise<void>;
}

/** Starts this instance's heartbeat (the first refresh is written before it resolves). */
export async function createInstanceLiveness(options: InstanceLivenessOptions): Promise<InstanceLiveness> {
  const { redis, prefix, instanceId } = options;
  const heartbeatMs = options.heartbeatMs ?? 1000;
  const deadAfterMs = options.deadAfterMs ?? 3000;
  if (!(deadAfterMs > heartbeatMs)) throw new TypeError(`deadAfterMs (${deadAfterMs}) must be greater than heartbeatMs (${heartbeatMs})`);
  const key = (id: string) => `${prefix}instance:${id}`;
  const beat = () => redis.set(key(instanceId), "1", "PX", deadAfterMs);
  await beat();
  const timer = setInterval(() => {
    beat().catch(() => {}); // Redis unreachable: the next beat retries (others see us dead after deadAfterMs)
  }, heartbeatMs);
  // The heartbeat must not hold the process open.
  timer.unref();
  return {
    heartbeatMs,
    async dead(instanceIds) {
      const ids = [...new Set(instanceIds)];
      // One command per key: on a cluster the keys live in different slots.
      const exists = await Promise.all(ids.map((id) => redis.exists(key(id))));
      return new Set(ids.filter((_, i) => exists[i] === 0));
    },
    async close() {
      clearInterval(timer);
      await redis.del(key(instanceId)).catch(() => {}); // it lapses by itself anyway
    },
  };
}
