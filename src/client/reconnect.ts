/**
 * How a client session retries a broken stream: exponential backoff with full jitter (each wait
 * is uniform in [0, min(max, initial · multiplier^(attempt−1))), so clients cut off together do not
 * come back together), a bound on attempts, and a bound on each attempt.
 */

/** Options of the reconnect loop of `McpClient.connect` (PROTOCOL.md §4 steps 5–6). */
export interface ReconnectOptions {
  /**
   * Attempts in a row before giving up; then every pending and every new call rejects with
   * `TRANSPORT connection_lost`. `Infinity` retries until the session's `signal` aborts.
   * @default 8
   */
  maxAttempts?: number;
  /**
   * Upper bound of the first wait, in ms (the wait itself is random below it).
   * @default 100
   */
  initialDelayMs?: number;
  /**
   * Upper bound of any wait, in ms.
   * @default 5000
   */
  maxDelayMs?: number;
  /**
   * Growth of the bound per attempt.
   * @default 2
   */
  multiplier?: number;
  /**
   * Time allowed for one attempt — connect, Handshake, HandshakeResult — in ms.
   * @default 10000
   */
  attemptTimeoutMs?: number;
  /**
   * Source of the jitter, uniform in [0, 1). Tests pass a seeded one.
   * @default Math.random
   */
  random?: () => number;
}

/** `ReconnectOptions` with every default applied. */
export type ResolvedReconnectOptions = Required<ReconnectOptions>;

/** The only place the reconnect defaults live; throws TypeError on a nonsensical value. */
export function resolveReconnectOptions(o: ReconnectOptions = {}): ResolvedReconnectOptions {
  const r: ResolvedReconnectOptions = {
    maxAttempts: o.maxAttempts ?? 8,
    initialDelayMs: o.initialDelayMs ?? 100,
    maxDelayMs: o.maxDelayMs ?? 5000,
    multiplier: o.multiplier ?? 2,
    attemptTimeoutMs: o.attemptTimeoutMs ?? 10_000,
    random: o.random ?? Math.random,
  };
  if (!(r.maxAttempts >= 1) || (!Number.isInteger(r.maxAttempts) && r.maxAttempts !== Infinity)) {
    throw new TypeError(`reconnect.maxAttempts must be an integer >= 1 or Infinity, got ${r.maxAttempts}`);
  }
  for (const k of ["initialDelayMs", "maxDelayMs", "attemptTimeoutMs"] as const) {
    if (!Number.isFinite(r[k]) || r[k] < 0) throw new TypeError(`reconnect.${k} must be a finite number >= 0, got ${r[k]}`);
  }
  if (r.attemptTimeoutMs === 0) throw new TypeError("reconnect.attemptTimeoutMs must be > 0");
  if (!Number.isFinite(r.multiplier) || r.multiplier < 1) throw new TypeError(`reconnect.multiplier must be >= 1, got ${r.multiplier}`);
  return r;
}

/** The wait before attempt `attempt` (1-based), in ms: full jitter under the exponential bound. */
export function backoffDelayMs(attempt: number, o: ResolvedReconnectOptions): number {
  const bound = Math.min(o.maxDelayMs, o.initialDelayMs * o.multiplier ** (attempt - 1));
  return Math.floor(o.random() * bound);
}
