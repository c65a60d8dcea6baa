/**
 * Minting development tokens (HS256 with the shared secret): used by `mcp token` and by tests.
 * Production tokens come from an identity provider and are verified through a JWKS.
 */
import { SignJWT } from "jose";

/** Options of `mintToken`. */
export interface MintTokenOptions {
  /** The HS256 secret; a string is used as its UTF-8 bytes, like `TokenVerifierOptions.secret`. */
  secret: string | Uint8Array;
  /** The `sub` claim: who the token speaks for. */
  subject: string;
  /** The `roles` claim. */
  roles: readonly string[];
  /** Lifetime in seconds (`exp` = now + ttlSec). */
  ttlSec: number;
  /**
   * The `mcp_level` claim: the highest level the token may grant. Omitted means "standard".
   * @default omitted
   */
  level?: "standard" | "high";
  /**
   * The `iss` claim.
   * @default "mcp"
   */
  issuer?: string;
  /**
   * The `aud` claim.
   * @default "mcp"
   */
  audience?: string;
  /**
   * The `jti` claim, which makes the token revocable.
   * @default crypto.randomUUID()
   */
  jti?: string;
  /**
   * The clock, in epoch milliseconds (`iat` and `exp` derive from it).
   * @default Date.now
   */
  now?: () => number;
}

/** Sign a compact HS256 JWT with `iss`, `aud`, `sub`, `roles`, `iat`, `exp`, `jti` (and `mcp_level`). */
export async function mintToken(options: MintTokenOptions): Promise<string> {
  const { subject, roles, ttlSec } = options;
  if (typeof subject !== "string" || subject === "") throw new TypeError('"subject" must be a non-empty string');
  if (!Number.isFinite(ttlSec) || ttlSec <= 0) throw new TypeError('"ttlSec" must be a positive number of seconds');
  const secret = typeof options.secret === "string" ? new TextEncoder().encode(options.secret) : options.secret;
  // Same floor as the verifier (RFC 7518 §3.2), so a minted token is never unverifiable.
  if (secret.byteLength < 32) throw new TypeError('"secret" must be at least 32 bytes (RFC 7518 §3.2)');
  const nowSec = Math.floor((options.now ?? Date.now)() / 1000);
  const claims: Record<string, unknown> = { roles: [...roles] };
  if (options.level !== undefined) claims["mcp_level"] = options.level;
  return new SignJWT(claims)
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setIssuer(options.issuer ?? "mcp")
    .setAudience(options.audience ?? "mcp")
    .setSubject(subject)
    .setJti(options.jti ?? crypto.randomUUID())
    .setIssuedAt(nowSec)
    .setExpirationTime(nowSec + Math.ceil(ttlSec))
    .sign(secret);
}
