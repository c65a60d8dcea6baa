/**
 * Bearer token verification (PROTOCOL.md §5). Tokens are JWTs verified with `jose`, either with
 * an HS256 shared secret (development) or with public keys from a JWKS file or URL that may
 * rotate. Every check follows RFC 8725 (JWT Best Current Practices); the sections are cited where
 * they apply. This is the one place where jose errors become `McpError`s (STYLE.md §3).
 */
import { create } from "@bufbuild/protobuf";
import { createRemoteJWKSet, errors, jwtVerify, type JWTPayload, type JWTVerifyGetKey, type JWTVerifyOptions } from "jose";
import { PrincipalSchema, SecurityLevel, type Principal } from "../../gen/mcp/v1/types_pb.js";
import { McpError } from "../errors.js";
import { createFileJWKSet } from "./jwks-file.js";
import type { RevocationStore } from "./revocation.js";

/** Options of `createTokenVerifier`. Give exactly one of `secret` and `jwks`. */
export interface TokenVerifierOptions {
  /**
   * HS256 shared secret, for development (`mcp serve` generates one; see `loadOrCreateDevSecret`).
   * A string is used as its UTF-8 bytes. At least 32 bytes (RFC 7518 §3.2, RFC 8725 §3.5).
   */
  secret?: string | Uint8Array;
  /**
   * Public keys: a JWKS file path (re-read when the file changes, or on an unknown `kid` after
   * `jwksCooldownMs`) or an `https:` URL (jose `createRemoteJWKSet`, with its cache and cooldown).
   * Plain `http:` is accepted only for loopback hosts: a key set fetched in the clear could be
   * replaced by anyone on the path.
   */
  jwks?: string;
  /**
   * Required `iss` (RFC 8725 §3.8).
   * @default "mcp"
   */
  issuer?: string;
  /**
   * Required `aud` (RFC 8725 §3.9).
   * @default "mcp"
   */
  audience?: string;
  /**
   * Accepted `alg` values (RFC 8725 §3.1). `none` is never accepted; HS* only with `secret`, and
   * only asymmetric algorithms with `jwks`, so a public key can never be used as an HMAC secret.
   * @default ["HS256"] with `secret`; ["RS256", "ES256", "EdDSA"] with `jwks`
   */
  algorithms?: readonly string[];
  /**
   * Clock skew allowed when checking `exp`, `nbf` and `iat`, in seconds.
   * @default 30
   */
  clockToleranceSec?: number;
  /**
   * Longest token accepted, in bytes; longer ones are refused before any parsing.
   * @default 8192
   */
  maxTokenBytes?: number;
  /**
   * Where revoked `jti`s are looked up. Without it, no token is treated as revoked.
   * @default none
   */
  revocations?: RevocationStore;
  /**
   * For `jwks`: least time between two key-set reloads triggered by an unknown `kid`, in ms.
   * @default 30000
   */
  jwksCooldownMs?: number;
  /**
   * For a `jwks` URL: how long fetched keys are used before they are fetched again, in ms. This
   * bounds how long a key removed from the set keeps verifying tokens.
   * @default 600000
   */
  jwksCacheMaxAgeMs?: number;
  /**
   * For a `jwks` URL: timeout of one fetch, in ms.
   * @default 5000
   */
  jwksTimeoutMs?: number;
  /**
   * The clock, in epoch milliseconds (injected so tests need no fake timers).
   * @default Date.now
   */
  now?: () => number;
}

/** What a valid token establishes. */
export interface VerifiedToken {
  /** The caller: `sub` and `roles` of the token. */
  principal: Principal;
  /** The token's `exp`, in epoch milliseconds. */
  expiresAt: number;
  /** The token's `jti`, when it has one (needed to revoke it). */
  jti?: string;
  /** The highest level the token may grant: HIGH when `mcp_level` is "high", else STANDARD. */
  maxLevel: SecurityLevel;
  /** Every claim, for callers that need more (never trust them for anything checked here). */
  claims: JWTPayload;
}

/** Verifies bearer tokens. */
export interface TokenVerifier {
  /**
   * Verify a compact JWT (without the `Bearer ` prefix). Rejects with an `McpError`:
   * `token_expired`, `token_revoked`, or `unauthenticated` with a message saying what was wrong.
   */
  verify(token: string): Promise<VerifiedToken>;
  /** Stop verifying: every later `verify` rejects with `unauthenticated`. */
  close(): void;
}

const HMAC_ALGORITHMS = new Set(["HS256", "HS384", "HS512"]);
const ASYMMETRIC_ALGORITHMS = new Set([
  "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519",
]);
const MIN_SECRET_BYTES = 32;
// Three base64url segments. Checked before jose so garbage gets a clear message, and so the
// length check below counts bytes (this alphabet is ASCII).
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

interface ResolvedOptions {
  key: { kind: "secret"; secret: Uint8Array } | { kind: "jwks"; getKey: JWTVerifyGetKey };
  issuer: string;
  audience: string;
  algorithms: string[];
  clockToleranceSec: number;
  maxTokenBytes: number;
  revocations: RevocationStore | undefined;
  now: () => number;
}

/** Build a verifier. Throws `TypeError` for invalid options (no key, bad algorithms, bad file). */
export function createTokenVerifier(options: TokenVerifierOptions): TokenVerifier {
  const opts = resolveTokenVerifierOptions(options);
  let closed = false;

  const verifyOptions = (): JWTVerifyOptions => ({
    issuer: opts.issuer,
    audience: opts.audience,
    algorithms: opts.algorithms,
    clockTolerance: opts.clockToleranceSec,
    // RFC 8725 §3.8/§3.9 and PROTOCOL.md §5: iss, aud and exp are required; sub names the principal.
    requiredClaims: ["iss", "aud", "exp", "sub"],
    currentDate: new Date(opts.now()),
  });

  async function verify(token: string): Promise<VerifiedToken> {
    if (closed) throw new McpError("unauthenticated", "token verifier is closed");
    if (typeof token !== "string" || token === "") throw new McpError("unauthenticated", "no token was given");
    if (token.length > opts.maxTokenBytes) {
      throw new McpError("unauthenticated", `token is longer than the ${opts.maxTokenBytes}-byte limit`);
    }
    if (!COMPACT_JWS.test(token)) {
      throw new McpError("unauthenticated", "token is not a JWT (expected three base64url parts separated by dots)");
    }

    let payload: JWTPayload;
    let typ: unknown;
    try {
      const verified =
        opts.key.kind === "secret"
          ? await jwtVerify(token, opts.key.secret, verifyOptions())
          : await jwtVerify(token, opts.key.getKey, verifyOptions());
      payload = verified.payload;
      typ = verified.protectedHeader.typ;
    } catch (e) {
      throw fromJoseError(e, opts);
    }
    // RFC 8725 §3.11: a token of another kind (a logout token, a signed request, `JOSE+JSON` …)
    // must not pass as an access token just because its signature and claims check out.
    if (typ !== undefined && !isAccessTokenTyp(typ)) {
      throw new McpError("unauthenticated", 'token header "typ" must be "JWT" or "at+jwt" when present');
    }

    const { sub, exp, iat, jti } = payload;
    if (typeof sub !== "string" || sub === "") {
      throw new McpError("unauthenticated", 'token claim "sub" must be a non-empty string');
    }
    // PROTOCOL.md §5 honours iat; jose only checks it with maxTokenAge, so a token "issued" in the
    // future (a skewed or forged issuer clock) is refused here, with the same tolerance.
    if (typeof iat === "number" && iat > opts.now() / 1000 + opts.clockToleranceSec) {
      throw new McpError("unauthenticated", 'token claim "iat" is in the future');
    }
    const roles = payload["roles"] ?? [];
    if (!Array.isArray(roles) || !roles.every((r): r is string => typeof r === "string")) {
      throw new McpError("unauthenticated", 'token claim "roles" must be an array of strings');
    }
    const maxLevel = levelFromClaim(payload["mcp_level"]);
    if (jti !== undefined && (typeof jti !== "string" || jti === "")) {
      throw new McpError("unauthenticated", 'token claim "jti" must be a non-empty string');
    }
    if (jti !== undefined && opts.revocations !== undefined) {
      let revoked: boolean;
      try {
        revoked = await opts.revocations.isTokenRevoked(jti);
      } catch (cause) {
        // Fail closed: a token we cannot check against the revocation list is not accepted.
        throw new McpError("unauthenticated", "token revocation status is unavailable", { cause });
      }
      if (revoked) throw new McpError("token_revoked", "token has been revoked");
    }

    // `exp` is present and numeric: jose enforced both (requiredClaims, validateNumericDate).
    const result: VerifiedToken = {
      principal: create(PrincipalSchema, { subject: sub, roles }),
      expiresAt: (exp ?? 0) * 1000,
      maxLevel,
      claims: payload,
    };
    if (jti !== undefined) result.jti = jti;
    return result;
  }

  return {
    verify,
    close() {
      closed = true;
    },
  };
}

/**
 * Whether a `typ` header names a JWT access token: `JWT` (RFC 7519 §5.1) or `at+jwt` (RFC 9068
 * §2.1). Media types compare case-insensitively and may drop their `application/` prefix (RFC
 * 7515 §4.1.9), so `jwt`, `application/jwt` and `application/AT+JWT` are the same types.
 */
function isAccessTokenTyp(typ: unknown): boolean {
  if (typeof typ !== "string") return false;
  const t = typ.toLowerCase();
  const bare = t.startsWith("application/") ? t.slice("application/".length) : t;
  return bare === "jwt" || bare === "at+jwt";
}

function levelFromClaim(claim: unknown): SecurityLevel {
  if (claim === undefined || claim === "standard") return SecurityLevel.STANDARD;
  if (claim === "high") return SecurityLevel.HIGH;
  // A misspelt level ("High", "hi") is refused rather than silently downgraded or upgraded.
  throw new McpError("unauthenticated", 'token claim "mcp_level" must be "standard" or "high"');
}

/**
 * The one mapping from jose errors to `McpError` (STYLE.md §3). Messages say what was wrong and
 * never echo the token or its claim values; the jose error stays as `cause` for logs.
 */
function fromJoseError(e: unknown, opts: ResolvedOptions): unknown {
  if (e instanceof McpError) return e;
  if (!(e instanceof errors.JOSEError)) return e; // not ours to translate
  const fail = (message: string) => new McpError("unauthenticated", message, { cause: e });
  if (e instanceof errors.JWTExpired) {
    const exp = e.payload.exp;
    const when = typeof exp === "number" ? ` at ${new Date(exp * 1000).toISOString()}` : "";
    return new McpError("token_expired", `token expired${when}`, { cause: e });
  }
  if (e instanceof errors.JWTClaimValidationFailed) {
    if (e.reason === "missing") return fail(`token has no "${e.claim}" claim`);
    if (e.claim === "iss") return fail(`token issuer is not the expected "${opts.issuer}"`);
    if (e.claim === "aud") return fail(`token audience does not include the expected "${opts.audience}"`);
    if (e.claim === "nbf") return fail('token is not valid yet (its "nbf" is in the future)');
    return fail(`token claim "${e.claim}" is invalid`);
  }
  if (e instanceof errors.JOSEAlgNotAllowed) {
    return fail(`token algorithm is not accepted (accepted: ${opts.algorithms.join(", ")})`);
  }
  if (e instanceof errors.JWSSignatureVerificationFailed) return fail("token signature is invalid");
  if (e instanceof errors.JWKSNoMatchingKey) return fail("no verification key matches the token's key id (kid)");
  if (e instanceof errors.JWKSMultipleMatchingKeys) {
    return fail("several verification keys match the token; it must name its key id (kid)");
  }
  if (e instanceof errors.JWKSTimeout || e instanceof errors.JWKSInvalid) {
    return fail("token verification keys are unavailable");
  }
  if (e instanceof errors.JOSENotSupported) return fail("token uses an unsupported algorithm or key type");
  if (e instanceof errors.JWSInvalid || e instanceof errors.JWTInvalid) return fail(`token is malformed: ${e.message}`);
  return fail(`token is invalid: ${e.message}`);
}

function resolveTokenVerifierOptions(o: TokenVerifierOptions): ResolvedOptions {
  if ((o.secret === undefined) === (o.jwks === undefined)) {
    throw new TypeError("createTokenVerifier needs exactly one of secret (HS256) or jwks (file or URL)");
  }
  const now = o.now ?? Date.now;
  const clockToleranceSec = o.clockToleranceSec ?? 30;
  if (!Number.isFinite(clockToleranceSec) || clockToleranceSec < 0) {
    throw new TypeError('"clockToleranceSec" must be a non-negative number');
  }
  const maxTokenBytes = o.maxTokenBytes ?? 8192;
  if (!Number.isInteger(maxTokenBytes) || maxTokenBytes <= 0) {
    throw new TypeError('"maxTokenBytes" must be a positive integer');
  }
  const issuer = o.issuer ?? "mcp";
  const audience = o.audience ?? "mcp";
  if (issuer === "" || audience === "") throw new TypeError('"issuer" and "audience" must not be empty');
  for (const name of ["jwksCooldownMs", "jwksCacheMaxAgeMs", "jwksTimeoutMs"] as const) {
    const v = o[name];
    if (v !== undefined && (!Number.isFinite(v) || v < 0)) throw new TypeError(`"${name}" must be a non-negative number`);
  }

  let key: ResolvedOptions["key"];
  let allowed: ReadonlySet<string>;
  let algorithms: string[];
  if (o.secret !== undefined) {
    const secret = typeof o.secret === "string" ? new TextEncoder().encode(o.secret) : o.secret;
    if (secret.byteLength < MIN_SECRET_BYTES) {
      throw new TypeError(`"secret" must be at least ${MIN_SECRET_BYTES} bytes (RFC 7518 §3.2)`);
    }
    key = { kind: "secret", secret };
    allowed = HMAC_ALGORITHMS;
    algorithms = [...(o.algorithms ?? ["HS256"])];
  } else {
    key = { kind: "jwks", getKey: resolveJwks(o.jwks ?? "", o, now) };
    allowed = ASYMMETRIC_ALGORITHMS;
    algorithms = [...(o.algorithms ?? ["RS256", "ES256", "EdDSA"])];
  }
  if (algorithms.length === 0) throw new TypeError('"algorithms" must not be empty');
  for (const alg of algorithms) {
    // RFC 8725 §3.1/§2.1: never "none", and never an HMAC algorithm where the key is public
    // (a public key used as an HMAC secret lets anyone forge tokens), nor the reverse.
    if (!allowed.has(alg)) {
      throw new TypeError(
        `algorithm ${JSON.stringify(alg)} is not allowed with ${key.kind}; use one of ${[...allowed].join(", ")}`,
      );
    }
  }
  return {
    key,
    issuer,
    audience,
    algorithms,
    clockToleranceSec,
    maxTokenBytes,
    revocations: o.revocations,
    now,
  };
}

function resolveJwks(jwks: string, o: TokenVerifierOptions, now: () => number): JWTVerifyGetKey {
  if (jwks === "") throw new TypeError('"jwks" must be a file path or an https URL');
  if (!/^https?:\/\//i.test(jwks)) {
    const fileOptions: { cooldownMs?: number; now: () => number } = { now };
    if (o.jwksCooldownMs !== undefined) fileOptions.cooldownMs = o.jwksCooldownMs;
    return createFileJWKSet(jwks, fileOptions);
  }
  let url: URL;
  try {
    url = new URL(jwks);
  } catch (cause) {
    throw new TypeError(`"jwks" is not a valid URL`, { cause });
  }
  if (url.protocol === "http:" && !isLoopbackHost(url.hostname)) {
    throw new TypeError('"jwks" URL must use https (plain http is accepted only for loopback hosts)');
  }
  const remote = createRemoteJWKSet(url, {
    cooldownDuration: o.jwksCooldownMs ?? 30_000,
    cacheMaxAge: o.jwksCacheMaxAgeMs ?? 600_000,
    timeoutDuration: o.jwksTimeoutMs ?? 5_000,
  });
  return async (header, token) => {
    try {
      return await remote(header, token);
    } catch (e) {
      // These describe the token (its kid or alg), not the key set, so they keep their meaning.
      if (
        e instanceof errors.JWKSNoMatchingKey ||
        e instanceof errors.JWKSMultipleMatchingKeys ||
        e instanceof errors.JOSENotSupported
      ) {
        throw e;
      }
      // Everything else is the key set's fault: fetch() failures (refused, DNS), a non-200
      // answer, a timeout, a malformed set. None of it is the caller's to see in detail.
      throw new McpError("unauthenticated", "token verification keys are unavailable", { cause: e });
    }
  };
}

function isLoopbackHost(hostname: string): boolean {
  return hostname === "localhost" || hostname === "[::1]" || /^127\.\d+\.\d+\.\d+$/.test(hostname);
}
