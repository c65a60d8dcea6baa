import { once } from "node:events";
import { mkdtemp, rename, rm, utimes, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { exportJWK, exportSPKI, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTPayload } from "jose";
import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";
import { SecurityLevel } from "../../gen/mcp/v1/types_pb.js";
import { createMemoryRevocationStore, createRedisRevocationStore, createTokenVerifier, type TokenVerifierOptions } from "../../src/security/index.js";

const SECRET = "test-secret-test-secret-test-secret-0123456789";
const NOW = Date.UTC(2030, 0, 1); // a fixed clock: no test depends on when it runs
const nowSec = NOW / 1000;
const enc = new TextEncoder();
const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");

/** Claims of a token every check accepts; cases override or delete from it. */
function validClaims(): JWTPayload {
  return { iss: "mcp", aud: "mcp", sub: "alice", roles: ["developer"], iat: nowSec, exp: nowSec + 600, jti: "t-1" };
}

async function signHs(claims: JWTPayload, secret: string | Uint8Array = SECRET, alg = "HS256", typ?: string): Promise<string> {
  const header = typ === undefined ? { alg } : { alg, typ };
  return new SignJWT(claims).setProtectedHeader(header).sign(typeof secret === "string" ? enc.encode(secret) : secret);
}

/** A validly signed token whose `typ` header is `typ`. */
const signTyp = (typ: string) => signHs(validClaims(), SECRET, "HS256", typ);

function without(claims: JWTPayload, name: string): JWTPayload {
  const copy = { ...claims };
  delete copy[name];
  return copy;
}

const secretVerifier = (extra: Partial<TokenVerifierOptions> = {}) =>
  createTokenVerifier({ secret: SECRET, now: () => NOW, ...extra });

describe("HS256 verifier: refusals", () => {
  const cases: { name: string; token: () => Promise<string> | string; code: string; message: string }[] = [
    // nothing usable at all
    { name: "empty token", token: () => "", code: "unauthenticated", message: "no token" },
    { name: "garbage", token: () => "not a token at all", code: "unauthenticated", message: "not a JWT" },
    { name: "two parts", token: () => "abc.def", code: "unauthenticated", message: "not a JWT" },
    { name: "base64url but not JSON", token: () => "aGVsbG8.d29ybGQ.c2ln", code: "unauthenticated", message: "malformed" },
    // RFC 8725 §2.1/§3.1: an unsigned token must never pass, however it is spelt
    {
      name: "alg none",
      token: () => `${b64({ alg: "none", typ: "JWT" })}.${b64(validClaims())}.`,
      code: "unauthenticated",
      message: "algorithm is not accepted",
    },
    {
      name: "alg none with a signature part",
      token: () => `${b64({ alg: "none" })}.${b64(validClaims())}.c2ln`,
      code: "unauthenticated",
      message: "algorithm is not accepted",
    },
    // an HMAC variant outside the allow-list
    { name: "HS512 when only HS256 is allowed", token: () => signHs(validClaims(), SECRET, "HS512"), code: "unauthenticated", message: "algorithm is not accepted" },
    // a token from someone who does not hold the secret
    { name: "bad signature", token: () => signHs(validClaims(), "another-secret-another-secret-another-secret"), code: "unauthenticated", message: "signature is invalid" },
    // RFC 8725 §3.8/§3.9: issuer and audience must be ours
    { name: "wrong iss", token: () => signHs({ ...validClaims(), iss: "elsewhere" }), code: "unauthenticated", message: 'issuer is not the expected "mcp"' },
    { name: "wrong aud", token: () => signHs({ ...validClaims(), aud: "other-service" }), code: "unauthenticated", message: 'audience does not include the expected "mcp"' },
    { name: "missing iss", token: () => signHs(without(validClaims(), "iss")), code: "unauthenticated", message: 'no "iss" claim' },
    { name: "missing aud", token: () => signHs(without(validClaims(), "aud")), code: "unauthenticated", message: 'no "aud" claim' },
    { name: "missing exp", token: () => signHs(without(validClaims(), "exp")), code: "unauthenticated", message: 'no "exp" claim' },
    { name: "missing sub", token: () => signHs(without(validClaims(), "sub")), code: "unauthenticated", message: 'no "sub" claim' },
    { name: "empty sub", token: () => signHs({ ...validClaims(), sub: "" }), code: "unauthenticated", message: '"sub" must be a non-empty string' },
    // time: exp past the 30 s tolerance is its own code; nbf/iat in the future are plain refusals
    { name: "expired", token: () => signHs({ ...validClaims(), exp: nowSec - 31 }), code: "token_expired", message: "token expired at 2029-12-31T23:59:29.000Z" },
    { name: "nbf in the future", token: () => signHs({ ...validClaims(), nbf: nowSec + 120 }), code: "unauthenticated", message: "not valid yet" },
    { name: "iat in the future", token: () => signHs({ ...validClaims(), iat: nowSec + 120 }), code: "unauthenticated", message: '"iat" is in the future' },
    { name: "exp not a number", token: () => signHs({ ...validClaims(), exp: "tomorrow" } as unknown as JWTPayload /* deliberately malformed */), code: "unauthenticated", message: '"exp" is invalid' },
    // claim shapes
    { name: "roles a string", token: () => signHs({ ...validClaims(), roles: "admin" }), code: "unauthenticated", message: '"roles" must be an array of strings' },
    { name: "roles with a number", token: () => signHs({ ...validClaims(), roles: ["viewer", 7] }), code: "unauthenticated", message: '"roles" must be an array of strings' },
    { name: "mcp_level misspelt", token: () => signHs({ ...validClaims(), mcp_level: "High" }), code: "unauthenticated", message: '"mcp_level" must be "standard" or "high"' },
    // RFC 8725 §3.11 explicit typing: a signed JWT of another kind is not an access token
    { name: "typ JOSE", token: () => signTyp("JOSE"), code: "unauthenticated", message: 'header "typ" must be "JWT" or "at+jwt"' },
    { name: "typ logout+jwt (OIDC back-channel logout)", token: () => signTyp("logout+jwt"), code: "unauthenticated", message: 'header "typ" must be "JWT" or "at+jwt"' },
    { name: "typ secevent+jwt", token: () => signTyp("secevent+jwt"), code: "unauthenticated", message: 'header "typ" must be "JWT" or "at+jwt"' },
    { name: "typ application/json", token: () => signTyp("application/json"), code: "unauthenticated", message: 'header "typ" must be "JWT" or "at+jwt"' },
    { name: "typ empty", token: () => signTyp(""), code: "unauthenticated", message: 'header "typ" must be "JWT" or "at+jwt"' },
    { name: "typ JWT with a suffix", token: () => signTyp("JWTX"), code: "unauthenticated", message: 'header "typ" must be "JWT" or "at+jwt"' },
    { name: "typ with an other prefix", token: () => signTyp("text/jwt"), code: "unauthenticated", message: 'header "typ" must be "JWT" or "at+jwt"' },
    // refused before any parsing
    { name: "oversized", token: () => signHs({ ...validClaims(), pad: "x".repeat(9000) }), code: "unauthenticated", message: "longer than the 8192-byte limit" },
  ];
  const verifier = secretVerifier();
  for (const c of cases) {
    test(`${c.name} -> ${c.code}`, async () => {
      const token = await c.token();
      const err: unknown = await verifier.verify(token).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toMatchObject({ name: "McpError", kind: "SECURITY", code: c.code });
      expect((err as Error).message).toContain(c.message);
      // never echo the token (or any part of it) back
      if (token.length > 8) expect((err as Error).message).not.toContain(token.split(".")[1] || token);
    });
  }

  test("jose's error is kept as cause", async () => {
    const token = await signHs({ ...validClaims(), exp: nowSec - 3600 });
    const err = await verifier.verify(token).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "token_expired", cause: { code: "ERR_JWT_EXPIRED" } });
  });

  test("a closed verifier refuses", async () => {
    const v = secretVerifier();
    v.close();
    await expect(v.verify(await signHs(validClaims()))).rejects.toMatchObject({ kind: "SECURITY", code: "unauthenticated" });
  });
});

describe("HS256 verifier: accepted tokens", () => {
  const cases: { name: string; claims: JWTPayload; level: SecurityLevel; roles: string[] }[] = [
    { name: "plain", claims: validClaims(), level: SecurityLevel.STANDARD, roles: ["developer"] },
    { name: "mcp_level high", claims: { ...validClaims(), mcp_level: "high" }, level: SecurityLevel.HIGH, roles: ["developer"] },
    { name: "mcp_level standard", claims: { ...validClaims(), mcp_level: "standard" }, level: SecurityLevel.STANDARD, roles: ["developer"] },
    { name: "no roles claim", claims: without(validClaims(), "roles"), level: SecurityLevel.STANDARD, roles: [] },
    // inside the 30 s clock tolerance (PROTOCOL.md §5)
    { name: "expired 20 s ago", claims: { ...validClaims(), exp: nowSec - 20 }, level: SecurityLevel.STANDARD, roles: ["developer"] },
    { name: "nbf 20 s ahead", claims: { ...validClaims(), nbf: nowSec + 20 }, level: SecurityLevel.STANDARD, roles: ["developer"] },
    { name: "iat 20 s ahead", claims: { ...validClaims(), iat: nowSec + 20 }, level: SecurityLevel.STANDARD, roles: ["developer"] },
    { name: "aud as an array", claims: { ...validClaims(), aud: ["other", "mcp"] }, level: SecurityLevel.STANDARD, roles: ["developer"] },
  ];
  const verifier = secretVerifier();
  for (const c of cases) {
    test(c.name, async () => {
      const v = await verifier.verify(await signHs(c.claims));
      expect(v.principal.subject).toBe("alice");
      expect(v.principal.roles).toEqual(c.roles);
      expect(v.maxLevel).toBe(c.level);
      expect(v.expiresAt).toBe((c.claims.exp ?? 0) * 1000);
      expect(v.jti).toBe("t-1");
      expect(v.claims.sub).toBe("alice");
    });
  }

  // RFC 7515 §4.1.9: media types compare case-insensitively, with or without "application/"
  for (const typ of ["JWT", "jwt", "at+jwt", "AT+JWT", "application/jwt", "application/at+jwt", "Application/JWT"]) {
    test(`typ ${typ} is accepted`, async () => {
      await expect(verifier.verify(await signTyp(typ))).resolves.toMatchObject({ principal: { subject: "alice" } });
    });
  }

  test("no jti -> no jti property", async () => {
    const v = await verifier.verify(await signHs(without(validClaims(), "jti")));
    expect("jti" in v).toBe(false);
  });

  test("custom issuer, audience and tolerance", async () => {
    const v = secretVerifier({ issuer: "corp", audience: "ide", clockToleranceSec: 0 });
    await expect(v.verify(await signHs({ ...validClaims(), iss: "corp", aud: "ide" }))).resolves.toMatchObject({ principal: { subject: "alice" } });
    // with no tolerance, 1 s past exp is expired
    await expect(v.verify(await signHs({ ...validClaims(), iss: "corp", aud: "ide", exp: nowSec - 1 }))).rejects.toMatchObject({ kind: "SECURITY", code: "token_expired" });
  });

  test("a smaller maxTokenBytes", async () => {
    const v = secretVerifier({ maxTokenBytes: 100 });
    await expect(v.verify(await signHs(validClaims()))).rejects.toMatchObject({ kind: "SECURITY", code: "unauthenticated", message: expect.stringContaining("100-byte limit") });
  });
});

describe("revoked jti", () => {
  const redisStore = () => createRedisRevocationStore({ url: "redis://127.0.0.1:6379", prefix: `mcp-test:${process.pid}:${Math.random()}:` });
  const stores = [
    { name: "memory", make: () => createMemoryRevocationStore({ now: () => NOW }) },
    { name: "redis", make: redisStore },
  ];
  for (const s of stores) {
    test(`${s.name}: revoked -> token_revoked, others still pass`, async () => {
      const revocations = s.make();
      try {
        // the Redis store computes PX from its own clock, so revoke relative to real time there
        await revocations.revokeToken("t-1", s.name === "memory" ? NOW + 600_000 : Date.now() + 600_000);
        const v = secretVerifier({ revocations });
        await expect(v.verify(await signHs(validClaims()))).rejects.toMatchObject({ kind: "SECURITY", code: "token_revoked" });
        await expect(v.verify(await signHs({ ...validClaims(), jti: "t-2" }))).resolves.toMatchObject({ jti: "t-2" });
      } finally {
        await revocations.close();
      }
    });
  }

  test("an unreachable revocation store fails closed", async () => {
    const probe = createServer();
    probe.listen(0, "127.0.0.1");
    await once(probe, "listening");
    const port = (probe.address() as AddressInfo).port;
    await new Promise((r) => probe.close(r)); // now nothing listens there
    const revocations = createRedisRevocationStore({ url: `redis://127.0.0.1:${port}` });
    try {
      const v = secretVerifier({ revocations });
      await expect(v.verify(await signHs(validClaims()))).rejects.toMatchObject({ kind: "SECURITY", code: "unauthenticated", message: "token revocation status is unavailable" });
    } finally {
      await revocations.close().catch(() => {});
    }
  });
});

interface TestKey {
  kid: string;
  alg: string;
  privateKey: CryptoKey;
  publicJwk: JWK;
  spki: string;
}

async function makeKey(kid: string, alg: string): Promise<TestKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  return { kid, alg, privateKey, publicJwk: { ...(await exportJWK(publicKey)), kid, alg, use: "sig" }, spki: await exportSPKI(publicKey) };
}

async function signWith(key: TestKey, claims: JWTPayload = validClaims(), kid = key.kid): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: key.alg, kid }).sign(key.privateKey);
}

const jwksOf = (...keys: TestKey[]) => JSON.stringify({ keys: keys.map((k) => k.publicJwk) });

describe("JWKS file verifier", () => {
  let dir: string;
  let rsa: TestKey, ec: TestKey, ed: TestKey, rsa2: TestKey;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "mcp-jwks-"));
    [rsa, ec, ed, rsa2] = await Promise.all([makeKey("k1", "RS256"), makeKey("k2", "ES256"), makeKey("k3", "EdDSA"), makeKey("k4", "RS256")]);
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function writeJwks(name: string, content: string): Promise<string> {
    const path = join(dir, name);
    // replace atomically, as a key-rotation job should
    await writeFile(`${path}.tmp`, content);
    await rename(`${path}.tmp`, path);
    return path;
  }

  test("each default algorithm verifies", async () => {
    const v = createTokenVerifier({ jwks: await writeJwks("all.json", jwksOf(rsa, ec, ed)), now: () => NOW });
    for (const key of [rsa, ec, ed]) {
      await expect(v.verify(await signWith(key))).resolves.toMatchObject({ principal: { subject: "alice" } });
    }
  });

  const refusals: { name: string; token: () => Promise<string>; message: string }[] = [
    // RFC 8725 §2.1: the public key used as an HMAC secret must not verify
    {
      name: "HS256 signed with the public key PEM (algorithm confusion)",
      token: () => new SignJWT(validClaims()).setProtectedHeader({ alg: "HS256", kid: "k1" }).sign(enc.encode(rsa.spki)),
      message: "algorithm is not accepted",
    },
    {
      name: "HS256 signed with the public JWK JSON (algorithm confusion)",
      token: () => new SignJWT(validClaims()).setProtectedHeader({ alg: "HS256" }).sign(enc.encode(JSON.stringify(rsa.publicJwk))),
      message: "algorithm is not accepted",
    },
    { name: "unknown kid", token: () => signWith(rsa2, validClaims(), "k9"), message: "key id (kid)" },
    { name: "a key that is not in the set", token: () => signWith(rsa2, validClaims(), "k1"), message: "signature is invalid" },
    { name: "alg none", token: async () => `${b64({ alg: "none", kid: "k1" })}.${b64(validClaims())}.`, message: "algorithm is not accepted" },
    { name: "wrong aud", token: () => signWith(rsa, { ...validClaims(), aud: "x" }), message: "audience" },
    // RFC 8725 §3.11: the typ check holds for asymmetric keys too
    {
      name: "typ dpop+jwt",
      token: () => new SignJWT(validClaims()).setProtectedHeader({ alg: rsa.alg, kid: rsa.kid, typ: "dpop+jwt" }).sign(rsa.privateKey),
      message: 'header "typ" must be "JWT" or "at+jwt"',
    },
  ];
  for (const c of refusals) {
    test(`${c.name} -> unauthenticated`, async () => {
      const v = createTokenVerifier({ jwks: await writeJwks("refusals.json", jwksOf(rsa, ec)), now: () => NOW });
      await expect(v.verify(await c.token())).rejects.toMatchObject({ kind: "SECURITY", code: "unauthenticated", message: expect.stringContaining(c.message) });
    });
  }

  test("rotation: a replaced file is re-read without a restart", async () => {
    const path = await writeJwks("rotate.json", jwksOf(rsa));
    const v = createTokenVerifier({ jwks: path, now: () => NOW });
    const oldToken = await signWith(rsa);
    await expect(v.verify(oldToken)).resolves.toBeDefined();
    await expect(v.verify(await signWith(ec))).rejects.toMatchObject({ kind: "SECURITY", code: "unauthenticated" });

    await writeJwks("rotate.json", jwksOf(ec)); // k1 retired, k2 introduced
    await expect(v.verify(await signWith(ec))).resolves.toMatchObject({ principal: { subject: "alice" } });
    await expect(v.verify(oldToken)).rejects.toMatchObject({ kind: "SECURITY", code: "unauthenticated", message: expect.stringContaining("kid") });
  });

  test("an unknown kid forces a re-read once the cooldown has passed, even if mtime looks unchanged", async () => {
    // Two RSA-2048 keys with same-length kids serialise to the same size; restoring the mtime
    // makes the change invisible to stat, as on a file system with coarse timestamps.
    const a = await makeKey("ka", "RS256");
    const b = await makeKey("kb", "RS256");
    expect(jwksOf(a).length).toBe(jwksOf(b).length);
    const path = join(dir, "same-stamp.json");
    await writeFile(path, jwksOf(a));
    const fixed = new Date(Date.UTC(2020, 0, 1)); // whole seconds: restorable exactly
    await utimes(path, fixed, fixed);
    let clock = NOW;
    const v = createTokenVerifier({ jwks: path, jwksCooldownMs: 60_000, now: () => clock });
    await writeFile(path, jwksOf(b));
    await utimes(path, fixed, fixed);
    const tokenB = await signWith(b);
    // within the cooldown: the old set stands
    await expect(v.verify(tokenB)).rejects.toMatchObject({ kind: "SECURITY", code: "unauthenticated", message: expect.stringContaining("kid") });
    clock += 60_000;
    await expect(v.verify(tokenB)).resolves.toMatchObject({ principal: { subject: "alice" } });
  });

  test("a JWKS file that becomes unreadable fails closed", async () => {
    const path = await writeJwks("vanish.json", jwksOf(rsa));
    const v = createTokenVerifier({ jwks: path, now: () => NOW });
    await writeFile(path, "{ half a key set");
    await expect(v.verify(await signWith(rsa))).rejects.toMatchObject({ kind: "SECURITY", code: "unauthenticated", message: "token verification keys are unavailable" });
    await writeJwks("vanish.json", jwksOf(rsa)); // fixed again: accepted again
    await expect(v.verify(await signWith(rsa))).resolves.toBeDefined();
  });
});

describe("construction refuses invalid options (TypeError)", () => {
  let dir: string;
  let rsa: TestKey;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "mcp-jwks-opt-"));
    rsa = await makeKey("k1", "RS256");
    await writeFile(join(dir, "ok.json"), jwksOf(rsa));
    await writeFile(join(dir, "oct.json"), JSON.stringify({ keys: [{ kty: "oct", k: Buffer.from(SECRET).toString("base64url") }] }));
    const { privateKey } = await generateKeyPair("ES256", { extractable: true });
    await writeFile(join(dir, "private.json"), JSON.stringify({ keys: [await exportJWK(privateKey)] }));
    await writeFile(join(dir, "bad.json"), "not json");
    await writeFile(join(dir, "shape.json"), JSON.stringify({ key: [] }));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const cases: { name: string; options: () => TokenVerifierOptions; message: string }[] = [
    { name: "no key at all", options: () => ({}), message: "exactly one of secret" },
    { name: "both secret and jwks", options: () => ({ secret: SECRET, jwks: join(dir, "ok.json") }), message: "exactly one of secret" },
    { name: "secret too short", options: () => ({ secret: "short" }), message: "at least 32 bytes" },
    { name: "alg none with a secret", options: () => ({ secret: SECRET, algorithms: ["none"] }), message: '"none" is not allowed' },
    { name: "RS256 with a secret", options: () => ({ secret: SECRET, algorithms: ["RS256"] }), message: '"RS256" is not allowed' },
    // RFC 8725 §2.1: an HMAC algorithm next to public keys is the confusion attack
    { name: "HS256 with a JWKS", options: () => ({ jwks: join(dir, "ok.json"), algorithms: ["RS256", "HS256"] }), message: '"HS256" is not allowed' },
    { name: "empty algorithms", options: () => ({ secret: SECRET, algorithms: [] }), message: "must not be empty" },
    { name: "negative tolerance", options: () => ({ secret: SECRET, clockToleranceSec: -1 }), message: "clockToleranceSec" },
    { name: "zero maxTokenBytes", options: () => ({ secret: SECRET, maxTokenBytes: 0 }), message: "maxTokenBytes" },
    { name: "missing JWKS file", options: () => ({ jwks: join(dir, "nope.json") }), message: "nope.json" },
    { name: "JWKS file not JSON", options: () => ({ jwks: join(dir, "bad.json") }), message: "not valid JSON" },
    { name: "JWKS file without keys", options: () => ({ jwks: join(dir, "shape.json") }), message: '"keys" array' },
    { name: "JWKS file with a symmetric key", options: () => ({ jwks: join(dir, "oct.json") }), message: "symmetric" },
    { name: "JWKS file with a private key", options: () => ({ jwks: join(dir, "private.json") }), message: "private key" },
    { name: "JWKS over plain http to a remote host", options: () => ({ jwks: "http://keys.example.com/jwks.json" }), message: "must use https" },
  ];
  for (const c of cases) {
    test(c.name, () => {
      expect(() => createTokenVerifier(c.options())).toThrow(TypeError);
      expect(() => createTokenVerifier(c.options())).toThrow(c.message);
    });
  }
});

describe("JWKS URL verifier (real local HTTP server)", () => {
  let server: Server;
  let url: string;
  let served: string;
  let requests = 0;
  let k1: TestKey, k2: TestKey;

  beforeAll(async () => {
    [k1, k2] = await Promise.all([makeKey("k1", "ES256"), makeKey("k2", "EdDSA")]);
  });
  afterEach(async () => {
    // Connection: close on every answer, so a dangling connection here is a leak and fails the test.
    let open = -1;
    for (let i = 0; i < 100 && open !== 0; i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, 10));
      open = await new Promise<number>((res, rej) => server.getConnections((e, c) => (e ? rej(e) : res(c))));
    }
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    expect(open).toBe(0);
  });

  async function serve(): Promise<void> {
    requests = 0;
    server = createServer((req, res) => {
      requests++;
      if (req.url !== "/jwks.json") {
        res.writeHead(404, { connection: "close" }).end();
        return;
      }
      res.writeHead(200, { "content-type": "application/json", connection: "close" }).end(served);
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`;
  }

  test("a new kid is fetched at once; a removed kid stops verifying", async () => {
    await serve();
    served = jwksOf(k1);
    const v = createTokenVerifier({ jwks: url, jwksCooldownMs: 0, jwksCacheMaxAgeMs: 200, now: () => NOW });
    const oldToken = await signWith(k1);
    await expect(v.verify(oldToken)).resolves.toMatchObject({ principal: { subject: "alice" } });
    expect(requests).toBe(1);

    served = jwksOf(k2); // rotation at the identity provider: k1 retired, k2 introduced
    // until the cache is stale, a cached key still verifies (that is what cacheMaxAge bounds)
    await expect(v.verify(oldToken)).resolves.toBeDefined();
    expect(requests).toBe(1);
    // the unknown kid k2 triggers a fetch right away (cooldown 0), without a restart
    await expect(v.verify(await signWith(k2))).resolves.toMatchObject({ principal: { subject: "alice" } });
    expect(requests).toBe(2);
    // that fetch replaced the cached set, so k1 is now unknown
    await expect(v.verify(oldToken)).rejects.toMatchObject({ kind: "SECURITY", code: "unauthenticated", message: expect.stringContaining("kid") });
  });

  test("a removed kid stops verifying once the cache is stale", async () => {
    await serve();
    served = jwksOf(k1, k2);
    const v = createTokenVerifier({ jwks: url, jwksCooldownMs: 0, jwksCacheMaxAgeMs: 200, now: () => NOW });
    const oldToken = await signWith(k1);
    await expect(v.verify(oldToken)).resolves.toBeDefined();
    served = jwksOf(k2);
    await new Promise((r) => setTimeout(r, 300)); // past jwksCacheMaxAgeMs
    await expect(v.verify(oldToken)).rejects.toMatchObject({ kind: "SECURITY", code: "unauthenticated", message: expect.stringContaining("kid") });
    await expect(v.verify(await signWith(k2))).resolves.toBeDefined();
  });

  test("within the cooldown an unknown kid does not refetch", async () => {
    await serve();
    served = jwksOf(k1);
    const v = createTokenVerifier({ jwks: url, jwksCooldownMs: 60_000, now: () => NOW });
    await expect(v.verify(await signWith(k1))).resolves.toBeDefined();
    served = jwksOf(k1, k2);
    await expect(v.verify(await signWith(k2))).rejects.toMatchObject({ kind: "SECURITY", code: "unauthenticated" });
    expect(requests).toBe(1);
  });

  test("a key server answering 404 -> keys unavailable", async () => {
    await serve();
    const v = createTokenVerifier({ jwks: url.replace("jwks.json", "missing"), now: () => NOW });
    await expect(v.verify(await signWith(k1))).rejects.toMatchObject({ kind: "SECURITY", code: "unauthenticated", message: "token verification keys are unavailable" });
  });

  test("no key server at all -> keys unavailable", async () => {
    await serve();
    const deadUrl = url;
    await new Promise((r) => server.close(r));
    server = createServer(); // afterEach closes something
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const v = createTokenVerifier({ jwks: deadUrl, now: () => NOW });
    await expect(v.verify(await signWith(k1))).rejects.toMatchObject({ kind: "SECURITY", code: "unauthenticated", message: "token verification keys are unavailable" });
  });
});
