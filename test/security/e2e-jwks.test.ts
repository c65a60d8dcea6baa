/**
 * A server verifying asymmetric tokens from a JWKS URL served by a real local HTTP server:
 * algorithm confusion (HS256 signed with the public key's bytes), unknown kid, a kid with the
 * wrong key, and key rotation without a restart (new kid accepted, removed kid refused) — on the
 * session stream and on unary calls over Connect (HTTP/1.1, HTTP/2) and gRPC.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { SignJWT, exportJWK, exportSPKI, generateKeyPair, type CryptoKey, type JWK } from "jose";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { createMcpServer, type McpServer } from "../../src/server/server.js";
import { handshake } from "../helpers/server.js";
import { UNARY_PATHS, bearer, clientsFor, openStream, refusalIn, refused, type Outcome } from "./e2e-helpers.js";

interface Key {
  kid: string;
  privateKey: CryptoKey;
  jwk: JWK;
  spki: string;
}

async function makeKey(kid: string): Promise<Key> {
  const { publicKey, privateKey } = await generateKeyPair("ES256", { extractable: true });
  return { kid, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg: "ES256", use: "sig" }, spki: await exportSPKI(publicKey) };
}

const nowSec = () => Math.floor(Date.now() / 1000);
const claims = (sub: string) => ({ iss: "mcp", aud: "mcp", sub, roles: ["developer"], iat: nowSec(), exp: nowSec() + 600 });

function signEs256(key: Key, sub = "jwks-user", kid = key.kid): Promise<string> {
  return new SignJWT(claims(sub)).setProtectedHeader({ alg: "ES256", kid, typ: "JWT" }).sign(key.privateKey);
}

let jwksServer: Server;
let published: JWK[] = [];
let fetches = 0;
let k1: Key;
let k2: Key;
let stranger: Key;
let server: McpServer;
let t: { url: string };

beforeAll(async () => {
  [k1, k2, stranger] = await Promise.all([makeKey("key-1"), makeKey("key-2"), makeKey("key-x")]);
  published = [k1.jwk];
  jwksServer = createServer((req, res) => {
    if (req.url !== "/jwks.json") {
      res.writeHead(404).end();
      return;
    }
    fetches++;
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ keys: published }));
  });
  await new Promise<void>((r) => jwksServer.listen(0, "127.0.0.1", r));
  const { port } = jwksServer.address() as AddressInfo;
  server = createMcpServer({
    port: 0,
    store: "memory",
    audit: () => {},
    jwks: `http://127.0.0.1:${port}/jwks.json`,
    // Short cache so a removed key stops verifying within the test; no cooldown on unknown kids.
    jwksCacheMaxAgeMs: 200,
    jwksCooldownMs: 0,
  });
  t = await server.listen();
});
afterAll(async () => {
  await server?.close();
  jwksServer?.closeAllConnections();
  await new Promise<void>((r) => (jwksServer ? jwksServer.close(() => r()) : r()));
});

/** Whether `token` is accepted on every path (null) or the refusals seen. */
async function tryEverywhere(token: string): Promise<{ stream: Outcome | "ok"; unary: Record<string, Outcome | "ok"> }> {
  const s = openStream(t.url);
  let stream: Outcome | "ok";
  try {
    s.send(handshake(token));
    s.send({ case: "command", value: { id: "j1", tool: "echo", payload: { case: "arguments", value: { text: "k" } } } });
    stream = await s.until((m) => refusalIn(m) ?? (m.message.case === "response" ? ("ok" as const) : undefined));
  } finally {
    s.close();
  }
  const unary: Record<string, Outcome | "ok"> = {};
  for (const path of UNARY_PATHS) {
    const call = clientsFor(path, t.url).commands.execute({ tool: "echo", payload: { case: "arguments", value: { text: "k" } } }, bearer(token));
    unary[path] = await call.then(
      () => "ok" as const,
      () => refused(call),
    );
  }
  return { stream, unary };
}

const everywhere = (o: Outcome | "ok", rpc?: string) => ({
  stream: o,
  unary: Object.fromEntries(UNARY_PATHS.map((p) => [p, o === "ok" ? o : { ...o, rpc }])),
});
const unauthenticated: Outcome = { kind: "SECURITY", code: "unauthenticated" };

describe("JWKS URL: which tokens verify", () => {
  // Each case: how the token is made, and the outcome on every path.
  const cases: { name: string; token: () => Promise<string>; want: ReturnType<typeof everywhere> }[] = [
    // the published key works
    { name: "ES256 signed with the published key-1", token: () => signEs256(k1), want: everywhere("ok") },
    // algorithm confusion: the public key (as the PEM a client could download) used as an HMAC secret
    {
      name: "HS256 signed with key-1's public key bytes (algorithm confusion)",
      token: () => new SignJWT(claims("mallory")).setProtectedHeader({ alg: "HS256", kid: "key-1", typ: "JWT" }).sign(new TextEncoder().encode(k1.spki)),
      want: everywhere(unauthenticated, "Unauthenticated"),
    },
    {
      name: "HS256 signed with key-1's JWK JSON (algorithm confusion)",
      token: () => new SignJWT(claims("mallory")).setProtectedHeader({ alg: "HS256", kid: "key-1", typ: "JWT" }).sign(new TextEncoder().encode(JSON.stringify(k1.jwk))),
      want: everywhere(unauthenticated, "Unauthenticated"),
    },
    // kids
    { name: "unknown kid", token: () => signEs256(stranger), want: everywhere(unauthenticated, "Unauthenticated") },
    { name: "kid key-1 but signed by another key", token: () => signEs256(stranger, "mallory", "key-1"), want: everywhere(unauthenticated, "Unauthenticated") },
  ];
  for (const c of cases) {
    test(`${c.name} → ${c.want.stream === "ok" ? "accepted" : `${c.want.stream.kind} ${c.want.stream.code}`}`, async () => {
      expect(await tryEverywhere(await c.token())).toEqual(c.want);
    });
  }
});

describe("JWKS rotation without a restart", () => {
  test("key-2 is accepted once published; key-1 is refused once removed", async () => {
    const old = await signEs256(k1, "rotator");
    const fresh = await signEs256(k2, "rotator");
    expect(await tryEverywhere(old)).toEqual(everywhere("ok"));
    // key-2 not published yet: refused.
    expect(await tryEverywhere(fresh)).toEqual(everywhere(unauthenticated, "Unauthenticated"));

    // Rotate: both published (overlap), then key-1 removed.
    published = [k1.jwk, k2.jwk];
    const before = fetches;
    expect(await tryEverywhere(fresh)).toEqual(everywhere("ok"));
    expect(await tryEverywhere(old)).toEqual(everywhere("ok"));
    expect(fetches).toBeGreaterThan(before); // the server went back to the JWKS URL, nobody restarted it

    published = [k2.jwk];
    // A removed key keeps verifying at most for the cache age (200 ms here): poll, bounded.
    const deadline = Date.now() + 5_000;
    let outcome = await tryEverywhere(old);
    while (JSON.stringify(outcome) !== JSON.stringify(everywhere(unauthenticated, "Unauthenticated")) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      outcome = await tryEverywhere(old);
    }
    expect(outcome).toEqual(everywhere(unauthenticated, "Unauthenticated"));
    expect(await tryEverywhere(fresh)).toEqual(everywhere("ok"));
  });
});
