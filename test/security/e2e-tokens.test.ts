/**
 * Token verification over real connections (issue 4 "Done means"), against an HS256 server: every
 * bad token is refused with the exact mcp.v1.Error on the session stream and on unary calls over
 * Connect (HTTP/1.1 and HTTP/2) and gRPC (HTTP/2), with the §7 Connect code — and the refused
 * writes leave the context untouched.
 */
import { SignJWT, base64url } from "jose";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { handshake, SECRET, startServer, type TestServer } from "../helpers/server.js";
import { UNARY_PATHS, bearer, clientsFor, openStream, refusalIn, refused, type Outcome } from "./e2e-helpers.js";

const key = new TextEncoder().encode(SECRET);
const nowSec = () => Math.floor(Date.now() / 1000);

/** A token signed like an outside issuer would, with `claims` over sane defaults. */
function sign(claims: Record<string, unknown> = {}, header: Record<string, unknown> = {}, secret: Uint8Array = key): Promise<string> {
  const body = { iss: "mcp", aud: "mcp", sub: "mallory", roles: ["developer"], iat: nowSec(), exp: nowSec() + 600, ...claims };
  for (const [k, v] of Object.entries(body)) if (v === undefined) delete (body as Record<string, unknown>)[k];
  return new SignJWT(body).setProtectedHeader({ alg: "HS256", typ: "JWT", ...header }).sign(secret);
}

const unauthenticated: Outcome = { kind: "SECURITY", code: "unauthenticated" };

// Each case: a token (or none) and the refusal every path must report.
const cases: { name: string; token: () => Promise<string | undefined>; want: Outcome }[] = [
  // nothing, or nothing usable
  { name: "no token", token: async () => undefined, want: unauthenticated },
  { name: "garbage token", token: async () => "garbage", want: unauthenticated },
  { name: "three dots of garbage", token: async () => "aaa.bbb.ccc", want: unauthenticated },
  // signature and algorithm
  {
    name: "alg none (unsigned)",
    token: async () => {
      const enc = (o: unknown) => base64url.encode(JSON.stringify(o));
      return `${enc({ alg: "none", typ: "JWT" })}.${enc({ iss: "mcp", aud: "mcp", sub: "mallory", roles: ["admin"], exp: nowSec() + 600 })}.`;
    },
    want: unauthenticated,
  },
  { name: "signed with another secret", token: () => sign({}, {}, new TextEncoder().encode("another-secret-0123456789-0123456789-xyz")), want: unauthenticated },
  { name: "HS512 (not on the allow-list)", token: () => sign({}, { alg: "HS512" }), want: unauthenticated },
  // claims
  { name: "wrong iss", token: () => sign({ iss: "someone-else" }), want: unauthenticated },
  { name: "wrong aud", token: () => sign({ aud: "another-service" }), want: unauthenticated },
  { name: "expired (beyond the clock tolerance)", token: () => sign({ iat: nowSec() - 7200, exp: nowSec() - 3600 }), want: { kind: "SECURITY", code: "token_expired" } },
  { name: "nbf in the future", token: () => sign({ nbf: nowSec() + 3600 }), want: unauthenticated },
  { name: "iat in the future", token: () => sign({ iat: nowSec() + 3600 }), want: unauthenticated },
  { name: "missing exp", token: () => sign({ exp: undefined }), want: unauthenticated },
  { name: "missing sub", token: () => sign({ sub: undefined }), want: unauthenticated },
  { name: "mcp_level misspelt", token: () => sign({ mcp_level: "High" }), want: unauthenticated },
  // RFC 8725 §3.11: a validly signed JWT of another type (an OIDC logout token) is no access token
  { name: "typ logout+jwt", token: () => sign({}, { typ: "logout+jwt" }), want: unauthenticated },
  // size: refused before any parsing
  { name: "oversized token (> 8 KiB, validly signed)", token: () => sign({ pad: "x".repeat(9000) }), want: unauthenticated },
];

let t: TestServer;
beforeAll(async () => {
  t = await startServer();
  // The context every refused write aims at: version 1, written by a developer.
  const dev = clientsFor("connect-h2", t.url);
  await dev.contexts.updateContext({ contextId: "guarded", ops: [{ op: { case: "put", value: { key: "k", value: { kind: { case: "stringValue", value: "original" } } } } }] }, bearer(await t.token("dev")));
});
afterAll(() => t.close());

const attempt = { contextId: "guarded", ops: [{ op: { case: "put" as const, value: { key: "k", value: { kind: { case: "stringValue" as const, value: "forged" } } } } }] };

describe("session stream: handshake with the token, then a context write and a command", () => {
  for (const c of cases) {
    test(`${c.name} → ${c.want.kind} ${c.want.code}`, async () => {
      const s = openStream(t.url);
      try {
        s.send(handshake(await c.token()));
        s.send({ case: "update", value: attempt });
        s.send({ case: "command", value: { id: "c1", tool: "echo", payload: { case: "arguments", value: { text: "x" } } } });
        const all = [];
        // Until the stream ends (handshake refused) or both requests were answered.
        for (let m = await s.next(); m !== undefined; m = await s.next()) {
          all.push(m);
          const answered = new Set(all.map((x) => x.message.case));
          if (answered.has("response") && answered.has("updateResult")) break;
        }
        // Either the handshake is refused (one Error, stream ends) or it admits an unauthenticated
        // session whose every request is refused; nothing succeeds either way.
        const refusals = all.map(refusalIn).filter((o) => o !== undefined);
        expect(refusals.length).toBeGreaterThan(0);
        for (const r of refusals) expect(r).toEqual(c.want);
        expect(all.filter((m) => m.message.case === "response" || m.message.case === "updateResult").every((m) => refusalIn(m) !== undefined)).toBe(true);
      } finally {
        s.close();
      }
    });
  }
});

for (const path of UNARY_PATHS) {
  describe(`unary over ${path}`, () => {
    const clients = () => clientsFor(path, t.url);
    for (const c of cases) {
      test(`${c.name} → ${c.want.kind} ${c.want.code} (Connect unauthenticated)`, async () => {
        const token = await c.token();
        const { commands, contexts } = clients();
        expect(await refused(contexts.updateContext(attempt, bearer(token)))).toEqual({ ...c.want, rpc: "Unauthenticated" });
        expect(await refused(commands.execute({ tool: "echo", payload: { case: "arguments", value: { text: "x" } } }, bearer(token)))).toEqual({
          ...c.want,
          rpc: "Unauthenticated",
        });
      });
    }
    test("a malformed Authorization header (not Bearer) → SECURITY unauthenticated", async () => {
      const { commands } = clients();
      expect(await refused(commands.execute({ tool: "echo" }, { headers: { authorization: `Basic ${btoa("a:b")}` } }))).toEqual({
        kind: "SECURITY",
        code: "unauthenticated",
        rpc: "Unauthenticated",
      });
    });
  });
}

test("after every refused attempt the guarded context is still at version 1 with its original value", async () => {
  const snap = await clientsFor("grpc-h2", t.url).contexts.getContext({ contextId: "guarded" }, bearer(await t.token("dev")));
  expect(snap.toVersion).toBe(1n);
  expect(snap.entries.map((e) => [e.key, e.value?.kind.value, e.updatedBy])).toEqual([["k", "original", "dev"]]);
});
