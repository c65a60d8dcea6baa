/**
 * Revocation of token ids (`jti`) and sessions (PROTOCOL.md §5: "Revoked token ids and sessions
 * are refused"). A revocation only needs to last as long as the thing it revokes could still be
 * used — a token until its `exp`, a session until its resume window closes — so every entry
 * carries an expiry and stores stay bounded. See also RFC 7519 §4.1.7 (`jti`).
 */

/** Where revoked token ids and sessions are remembered. */
export interface RevocationStore {
  /** Refuse the token with this `jti` until `untilMs` (epoch ms; usually the token's `exp`). */
  revokeToken(jti: string, untilMs: number): Promise<void>;
  /** Whether the token with this `jti` is revoked now. */
  isTokenRevoked(jti: string): Promise<boolean>;
  /** Refuse this session (and its resumption) until `untilMs` (epoch ms). */
  revokeSession(sessionId: string, untilMs: number): Promise<void>;
  /** Whether this session is revoked now. */
  isSessionRevoked(sessionId: string): Promise<boolean>;
  /**
   * Hears every revocation from now on — for a shared store, also those made through other
   * server instances — so live sessions end at once, not only at their next authentication.
   * Returns the unsubscribe function.
   */
  subscribe(listener: RevocationListener): () => void;
  /** Release resources (connections the store opened itself). */
  close(): Promise<void>;
}

/** One revocation: a token id or a session id. */
export interface Revocation {
  kind: "token" | "session";
  id: string;
}

/** Called for each revocation; must not throw. */
export type RevocationListener = (revocation: Revocation) => void;

/** Options of `createMemoryRevocationStore`. */
export interface MemoryRevocationStoreOptions {
  /**
   * The clock, in epoch milliseconds (injected so tests need no fake timers).
   * @default Date.now
   */
  now?: () => number;
}

/**
 * A revocation store in this process only: right for a single server instance. Use
 * `createRedisRevocationStore` when several instances must refuse the same token.
 */
export function createMemoryRevocationStore(options: MemoryRevocationStoreOptions = {}): RevocationStore {
  const now = options.now ?? Date.now;
  const tokens = new Map<string, number>();
  const sessions = new Map<string, number>();

  function add(map: Map<string, number>, id: string, untilMs: number, what: string): void {
    checkId(id, what);
    checkUntil(untilMs);
    const t = now();
    if (untilMs <= t) return; // already expired: nothing left to refuse
    // Never shorten an existing revocation: a second, earlier revoke must not un-revoke early.
    map.set(id, Math.max(untilMs, map.get(id) ?? 0));
    // Sweep expired entries now and then so the maps stay bounded by what is still live.
    if (map.size % 1024 === 0) for (const [k, until] of map) if (until <= t) map.delete(k);
  }

  function has(map: Map<string, number>, id: string, what: string): boolean {
    checkId(id, what);
    const until = map.get(id);
    if (until === undefined) return false;
    if (until > now()) return true;
    map.delete(id);
    return false;
  }

  const listeners = new Set<RevocationListener>();
  const tell = (r: Revocation) => {
    for (const l of listeners) l(r);
  };

  return {
    revokeToken: async (jti, untilMs) => {
      add(tokens, jti, untilMs, "jti");
      tell({ kind: "token", id: jti });
    },
    isTokenRevoked: async (jti) => has(tokens, jti, "jti"),
    revokeSession: async (sessionId, untilMs) => {
      add(sessions, sessionId, untilMs, "sessionId");
      tell({ kind: "session", id: sessionId });
    },
    isSessionRevoked: async (sessionId) => has(sessions, sessionId, "sessionId"),
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    close: async () => {
      listeners.clear();
      tokens.clear();
      sessions.clear();
    },
  };
}

/** @private Shared argument checks of the revocation stores. */
export function checkId(id: string, what: string): void {
  if (typeof id !== "string" || id === "") throw new TypeError(`${what} must be a non-empty string`);
}

/** @private Shared argument checks of the revocation stores. */
export function checkUntil(untilMs: number): void {
  if (!Number.isFinite(untilMs)) throw new TypeError("untilMs must be a finite epoch time in milliseconds");
}
