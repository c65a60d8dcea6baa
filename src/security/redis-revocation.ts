/**
 * A `RevocationStore` in Redis, so a revocation holds across every server instance that shares
 * the Redis (ARCHITECTURE.md "State and storage"). Each revocation is one key with a `PX` expiry:
 * Redis forgets it by itself once the revoked token or session could no longer be used.
 */
import { Redis } from "../optional/ioredis.js";
import { checkId, checkUntil, type Revocation, type RevocationListener, type RevocationStore } from "./revocation.js";

/** Options of `createRedisRevocationStore`. Give either `url` or `redis`. */
export interface RedisRevocationStoreOptions {
  /** A Redis URL (`redis://host:6379/0`). The store opens, and on `close()` quits, its own client. */
  url?: string;
  /** An existing client. The store does not close it: its owner does. */
  redis?: Redis;
  /**
   * Prefix of every key, so several deployments can share one Redis. Keys are
   * `<prefix>revoked:token:<jti>` and `<prefix>revoked:session:<id>`.
   * @default "mcp:"
   */
  prefix?: string;
  /**
   * The clock, in epoch milliseconds, used to turn `untilMs` into a relative `PX` expiry.
   * @default Date.now
   */
  now?: () => number;
}

// Set the key with a PX expiry unless it already outlives the new one: a second, shorter
// revocation must not cut an earlier, longer one short. PTTL is -2 for a missing key.
const REVOKE_SCRIPT = `
local ttl = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('SET', KEYS[1], '1', 'PX', ttl)
end
return 1`;

/** A revocation store shared through Redis. */
export function createRedisRevocationStore(options: RedisRevocationStoreOptions): RevocationStore {
  if ((options.url === undefined) === (options.redis === undefined)) {
    throw new TypeError("createRedisRevocationStore needs exactly one of url or redis");
  }
  const prefix = options.prefix ?? "mcp:";
  const now = options.now ?? Date.now;
  const owned = options.redis === undefined;
  // lazyConnect off: connection errors surface on the first command, which callers await.
  const redis = options.redis ?? new Redis(options.url ?? "", { maxRetriesPerRequest: 2 });
  if (owned) {
    // Connection errors reach callers as rejected commands (which the verifier turns into a
    // fail-closed refusal); without a listener ioredis would also print each one.
    redis.on("error", () => {});
  }

  async function add(kind: string, id: string, untilMs: number): Promise<void> {
    checkId(id, kind === "token" ? "jti" : "sessionId");
    checkUntil(untilMs);
    const ttl = Math.ceil(untilMs - now());
    if (ttl <= 0) return; // already expired: nothing left to refuse
    await redis.eval(REVOKE_SCRIPT, 1, `${prefix}revoked:${kind}:${id}`, ttl);
    // Every instance (this one included) hears it and ends the live sessions it concerns.
    await redis.publish(channel, JSON.stringify({ kind, id }));
  }

  const channel = `${prefix}revocations`;
  const listeners = new Set<RevocationListener>();
  // A subscribed connection can run nothing else: a second one, opened with the first listener.
  let sub: Redis | undefined;
  function listen(): void {
    if (sub !== undefined) return;
    const s = redis.duplicate();
    sub = s;
    s.on("error", () => {});
    s.on("message", (ch: string, text: string) => {
      if (ch !== channel) return;
      let r: Partial<Revocation>;
      try {
        r = JSON.parse(text) as Partial<Revocation>;
      } catch {
        return; // not ours
      }
      if ((r.kind === "token" || r.kind === "session") && typeof r.id === "string") {
        for (const l of listeners) l({ kind: r.kind, id: r.id });
      }
    });
    s.subscribe(channel).catch(() => {
      // Without the feed, revocations still refuse every new authentication.
    });
  }

  async function has(kind: string, id: string): Promise<boolean> {
    checkId(id, kind === "token" ? "jti" : "sessionId");
    return (await redis.exists(`${prefix}revoked:${kind}:${id}`)) === 1;
  }

  return {
    revokeToken: (jti, untilMs) => add("token", jti, untilMs),
    isTokenRevoked: (jti) => has("token", jti),
    revokeSession: (sessionId, untilMs) => add("session", sessionId, untilMs),
    isSessionRevoked: (sessionId) => has("session", sessionId),
    subscribe(listener) {
      listeners.add(listener);
      listen();
      return () => listeners.delete(listener);
    },
    close: async () => {
      listeners.clear();
      sub?.disconnect();
      if (!owned) return;
      // quit() waits for a reply that a server we never reached cannot send.
      if (redis.status === "ready") await redis.quit();
      else redis.disconnect();
    },
  };
}
