/**
 * A verifier that remembers tokens it verified lately, by their compact string. A unary client
 * sends the same token with every request, and each signature check is a WebCrypto job on the
 * thread pool. Meant for shared-secret (HS256) verifiers only: with a JWKS, a key removed from the
 * set must stop its tokens at once, so nothing should be remembered. Bounded in size and age; an
 * entry is used only before its `exp`, and revocation is checked on every use, as `verify` does.
 */
import { McpError } from "../errors.js";
import type { RevocationStore } from "./revocation.js";
import type { TokenVerifier, VerifiedToken } from "./token-verifier.js";

/** Options of `withVerificationCache`. */
export interface VerificationCacheOptions {
  /** Where revoked `jti`s are looked up on every cache hit. */
  revocations: RevocationStore;
  /**
   * Tokens remembered at most (the oldest is forgotten first).
   * @default 1024
   */
  maxEntries?: number;
  /**
   * How long one verification is reused, in milliseconds.
   * @default 30000
   */
  maxAgeMs?: number;
  /**
   * The clock, epoch ms.
   * @default Date.now
   */
  now?: () => number;
}

/** Wraps `verifier` so repeated tokens skip the signature check (see the module doc). */
export function withVerificationCache(verifier: TokenVerifier, options: VerificationCacheOptions): TokenVerifier {
  const maxEntries = options.maxEntries ?? 1024;
  const maxAgeMs = options.maxAgeMs ?? 30_000;
  const now = options.now ?? Date.now;
  const verified = new Map<string, { v: VerifiedToken; at: number }>();

  async function hit(token: string): Promise<VerifiedToken | undefined> {
    const entry = verified.get(token);
    if (entry === undefined) return undefined;
    const t = now();
    if (t >= entry.v.expiresAt || t - entry.at > maxAgeMs || t < entry.at) {
      // Expired or stale: the full verification decides (and words the error).
      verified.delete(token);
      return undefined;
    }
    const jti = entry.v.jti;
    if (jti !== undefined) {
      let revoked: boolean;
      try {
        revoked = await options.revocations.isTokenRevoked(jti);
      } catch (cause) {
        // Fail closed, like the verifier.
        throw new McpError("unauthenticated", "token revocation status is unavailable", { cause });
      }
      if (revoked) {
        verified.delete(token);
        throw new McpError("token_revoked", "token has been revoked");
      }
    }
    return entry.v;
  }

  return {
    async verify(token) {
      const cached = await hit(token);
      if (cached !== undefined) return cached;
      const v = await verifier.verify(token);
      if (verified.size >= maxEntries) verified.delete(verified.keys().next().value!); // size > 0: oldest first
      verified.set(token, { v, at: now() });
      return v;
    },
    close() {
      verified.clear();
      verifier.close();
    },
  };
}
