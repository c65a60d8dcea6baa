/**
 * Revocation, ownership and token lifetime over real connections (issue 4 "Done means"): a
 * revoked jti is refused everywhere and ends live sessions using it; a revoked session ends and
 * cannot be resumed; another principal cannot resume a session; tokens are refreshed in-stream
 * with Authentication, a `session.expiring` event comes first, and an expired session's rights
 * return with a fresh token.
 */
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import type { ServerMessage } from "../../gen/mcp/v1/session_pb.js";
import { handshake, startServer, type TestServer } from "../helpers/server.js";
import { UNARY_PATHS, bearer, clientsFor, openStream, refusalIn, refused, type Stream } from "./e2e-helpers.js";

let t: TestServer;
let admin: string;
beforeAll(async () => {
  t = await startServer({ expiryWarningMs: 2_000 });
  admin = await t.token("root", ["admin"]);
});
afterAll(() => t.close());

const echo = (id: string) => ({ case: "command" as const, value: { id, tool: "echo", payload: { case: "arguments" as const, value: { text: id } } } });
const responseTo = (id: string) => (m: ServerMessage) => (m.message.case === "response" && m.message.value.commandId === id ? (refusalIn(m) ?? "ok") : undefined);

/** A stream after a successful handshake; returns it with its session id. */
async function session(token: string): Promise<{ s: Stream; id: string }> {
  const s = openStream(t.url);
  s.send(handshake(token));
  const hr = await s.next();
  if (hr?.message.case !== "handshakeResult") throw new Error(`handshake failed: ${JSON.stringify(hr && refusalIn(hr))}`);
  return { s, id: hr.message.value.sessionId };
}

describe("revoked token (AdminService.RevokeToken)", () => {
  test("a live session using it ends with token_revoked; new requests with it are refused everywhere", async () => {
    const token = await t.token("alice", ["developer"], { jti: "jti-alice-1" });
    const { s } = await session(token);
    s.send(echo("before"));
    expect(await s.until(responseTo("before"))).toBe("ok");

    await clientsFor("connect-h2", t.url).admin.revokeToken({ jti: "jti-alice-1" }, bearer(admin));
    const rest = await s.rest();
    expect(rest.map(refusalIn)).toEqual([{ kind: "SECURITY", code: "token_revoked" }]);

    for (const path of UNARY_PATHS) {
      expect(await refused(clientsFor(path, t.url).commands.execute({ tool: "echo" }, bearer(token)))).toEqual({
        kind: "SECURITY",
        code: "token_revoked",
        rpc: "Unauthenticated",
      });
    }
    const again = openStream(t.url);
    again.send(handshake(token));
    expect((await again.rest()).map(refusalIn)).toEqual([{ kind: "SECURITY", code: "token_revoked" }]);
    // Other tokens of the same principal are not affected.
    const other = await session(await t.token("alice", ["developer"], { jti: "jti-alice-2" }));
    other.s.send(echo("other"));
    expect(await other.s.until(responseTo("other"))).toBe("ok");
    other.s.close();
  });

  test("a developer cannot revoke tokens → permission_denied, and the token keeps working", async () => {
    const token = await t.token("bob", ["developer"], { jti: "jti-bob" });
    for (const path of UNARY_PATHS) {
      expect(await refused(clientsFor(path, t.url).admin.revokeToken({ jti: "jti-bob" }, bearer(token)))).toEqual({
        kind: "SECURITY",
        code: "permission_denied",
        rpc: "PermissionDenied",
      });
    }
    const r = await clientsFor("grpc-h2", t.url).commands.execute({ tool: "echo", payload: { case: "arguments", value: { text: "still" } } }, bearer(token));
    expect(r.result.case === "output" && r.result.value).toEqual({ text: "still" });
  });
});

describe("revoked session (AdminService.RevokeSession)", () => {
  test("the live stream gets Error token_revoked and ends; resuming it is refused", async () => {
    const token = await t.token("carol", ["developer"]);
    const { s, id } = await session(token);
    const listed = await clientsFor("grpc-h2", t.url).admin.listSessions({}, bearer(admin));
    expect(listed.sessions.find((x) => x.sessionId === id)?.principal?.subject).toBe("carol");

    await clientsFor("connect-h1", t.url).admin.revokeSession({ sessionId: id }, bearer(admin));
    expect((await s.rest()).map(refusalIn)).toEqual([{ kind: "SECURITY", code: "token_revoked" }]);

    const r = openStream(t.url);
    r.send(handshake(token, { resume: { sessionId: id, lastSeq: 1n } }));
    expect((await r.rest()).map(refusalIn)).toEqual([{ kind: "SECURITY", code: "token_revoked" }]);
    const after = await clientsFor("grpc-h2", t.url).admin.listSessions({}, bearer(admin));
    expect(after.sessions.some((x) => x.sessionId === id)).toBe(false);
  });

  test("a developer cannot revoke another's session → permission_denied, and it stays usable", async () => {
    const { s, id } = await session(await t.token("dana", ["developer"]));
    for (const path of UNARY_PATHS) {
      expect(await refused(clientsFor(path, t.url).admin.revokeSession({ sessionId: id }, bearer(await t.token("eve", ["developer"]))))).toEqual({
        kind: "SECURITY",
        code: "permission_denied",
        rpc: "PermissionDenied",
      });
    }
    s.send(echo("alive"));
    expect(await s.until(responseTo("alive"))).toBe("ok");
    s.close();
  });
});

describe("resume by another principal", () => {
  // B resumes A's session: with a developer token and with an admin token alike.
  for (const who of [{ sub: "bert", roles: ["developer"] }, { sub: "root", roles: ["admin"] }]) {
    test(`${who.roles[0]} ${who.sub} resuming alice's session → permission_denied; alice still resumes it`, async () => {
      const aliceToken = await t.token("alice", ["developer"]);
      const { s, id } = await session(aliceToken);
      s.send(echo("a1"));
      expect(await s.until(responseTo("a1"))).toBe("ok");
      s.close();

      const b = openStream(t.url);
      b.send(handshake(await t.token(who.sub, who.roles), { resume: { sessionId: id, lastSeq: 1n } }));
      const bAll = await b.rest();
      expect(bAll.map(refusalIn)).toEqual([{ kind: "SECURITY", code: "permission_denied" }]);
      // B saw nothing of A's session (the Response to a1 is seq 2).
      expect(bAll.every((m) => m.message.case === "error")).toBe(true);

      const a = openStream(t.url);
      a.send(handshake(aliceToken, { resume: { sessionId: id, lastSeq: 1n } }));
      const replayed = await a.next();
      expect(replayed?.seq).toBe(2n);
      expect(replayed?.message.case === "response" && replayed.message.value.commandId).toBe("a1");
      const hr = await a.next();
      expect(hr?.message.case === "handshakeResult" && [hr.message.value.sessionId, hr.message.value.resumed]).toEqual([id, true]);
      a.close();
    });
  }

  test("an Authentication with another subject's token → permission_denied; the session keeps its principal", async () => {
    const { s } = await session(await t.token("alice", ["viewer"]));
    s.send({ case: "authentication", value: { token: await t.token("mallory", ["admin"]) } });
    expect(await s.until((m) => refusalIn(m))).toEqual({ kind: "SECURITY", code: "permission_denied" });
    // Still alice the viewer: writing a context is not hers to do.
    s.send({ case: "update", value: { id: "u", contextId: "x", ops: [{ op: { case: "put", value: { key: "k", value: { kind: { case: "stringValue", value: "v" } } } } }] } });
    expect(await s.until((m) => (m.message.case === "updateResult" ? refusalIn(m) : undefined))).toEqual({ kind: "SECURITY", code: "permission_denied" });
    s.close();
  });
});

describe("token lifetime on a live session", () => {
  const sleepUntil = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, ms - Date.now())));

  test("session.expiring arrives before expiry; an Authentication refresh extends the session past the old expiry", async () => {
    const { s, id } = await session(await t.token("fay", ["developer"], { ttlSec: 3 }));
    const expiring = await s.until((m) => (m.message.case === "event" && m.message.value.type === "session.expiring" ? m.message.value : undefined));
    const oldExpiry = Date.parse(String(expiring.data?.["expires_at"]));
    expect(expiring.data?.["session_id"]).toBe(id);
    expect(Date.now()).toBeLessThan(oldExpiry);

    s.send({ case: "authentication", value: { token: await t.token("fay", ["developer"], { ttlSec: 600 }) } });
    const ar = await s.until((m) => (m.message.case === "authenticationResult" ? m.message.value : (refusalIn(m) as never)));
    expect(ar.principal?.subject).toBe("fay");
    expect(Number(timestampMs(ar.expiresAt!))).toBeGreaterThan(oldExpiry + 500_000);

    await sleepUntil(oldExpiry + 300);
    s.send(echo("after-old-expiry"));
    expect(await s.until(responseTo("after-old-expiry"))).toBe("ok");
    s.close();
  });

  test("after expiry commands and context get token_expired; a fresh Authentication restores them", async () => {
    const { s, id } = await session(await t.token("gus", ["developer"], { ttlSec: 2 }));
    const expired = await s.until((m) => (m.message.case === "event" && m.message.value.type === "session.expired" ? m.message.value : undefined));
    expect(expired.data?.["session_id"]).toBe(id);

    s.send(echo("late"));
    expect(await s.until(responseTo("late"))).toEqual({ kind: "SECURITY", code: "token_expired" });
    s.send({ case: "update", value: { id: "u1", contextId: "gus-ctx", ops: [{ op: { case: "put", value: { key: "k", value: { kind: { case: "stringValue", value: "v" } } } } }] } });
    expect(await s.until((m) => (m.message.case === "updateResult" ? refusalIn(m) : undefined))).toEqual({ kind: "SECURITY", code: "token_expired" });

    s.send({ case: "authentication", value: { token: await t.token("gus", ["developer"], { ttlSec: 600 }) } });
    expect(await s.until((m) => (m.message.case === "authenticationResult" ? "ok" : refusalIn(m)))).toBe("ok");
    s.send(echo("restored"));
    expect(await s.until(responseTo("restored"))).toBe("ok");
    s.send({ case: "update", value: { id: "u2", contextId: "gus-ctx", ops: [{ op: { case: "put", value: { key: "k", value: { kind: { case: "stringValue", value: "v" } } } } }] } });
    const ur = await s.until((m) => (m.message.case === "updateResult" ? m.message.value : undefined));
    expect([ur.error, ur.version]).toEqual([undefined, 1n]); // the refused update wrote nothing
    s.close();
  });
});
