/**
 * The session stream over real HTTP/2 connections (PROTOCOL.md §4 steps 1, 4, 6): handshake,
 * version negotiation, ping/pong, seq numbering, limits.
 */
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { ErrorKind } from "../../gen/mcp/v1/error_pb.js";
import { ProtocolVersion, SecurityLevel } from "../../gen/mcp/v1/types_pb.js";
import { handshake, openRawStream, startServer, type TestServer } from "../helpers/server.js";

let t: TestServer;
beforeAll(async () => {
  t = await startServer({ maxMessageBytes: 64 * 1024 });
});
afterAll(() => t.close());

describe("handshake", () => {
  test("a valid handshake gets a HandshakeResult with session id, limits and principal at seq 1", async () => {
    const s = openRawStream(t.url);
    s.send(handshake(await t.token("alice", ["developer"])));
    const m = await s.next();
    expect(m?.seq).toBe(1n);
    expect(m?.message.case).toBe("handshakeResult");
    if (m?.message.case !== "handshakeResult") throw new Error("unreachable");
    const r = m.message.value;
    expect(r.protocolVersion).toBe(ProtocolVersion.PROTOCOL_VERSION_1_0);
    expect(r.sessionId).toMatch(/^[0-9a-f-]{36}$/);
    expect(r.securityLevel).toBe(SecurityLevel.STANDARD);
    expect(r.principal?.subject).toBe("alice");
    expect(r.principal?.roles).toEqual(["developer"]);
    expect(r.limits?.maxMessageBytes).toBe(64 * 1024);
    expect(r.limits?.maxInflightCommands).toBe(256);
    expect(r.resumed).toBe(false);
    s.close();
  });

  test("the Authorization header authenticates the stream too", async () => {
    const s = openRawStream(t.url, { authorization: `Bearer ${await t.token("bob", ["viewer"])}` });
    s.send(handshake());
    const m = await s.next();
    expect(m?.message.case === "handshakeResult" && m.message.value.principal?.subject).toBe("bob");
    s.close();
  });

  const wrongFirst = [
    { name: "ping", payload: { case: "ping", value: { id: 1n } } },
    { name: "command", payload: { case: "command", value: { id: "x", tool: "echo" } } },
    { name: "authentication", payload: { case: "authentication", value: { token: "abc" } } },
  ] as const;
  for (const { name, payload } of wrongFirst) {
    test(`${name} before the handshake → PROTOCOL handshake_required, then the stream ends`, async () => {
      const s = openRawStream(t.url);
      s.send(payload);
      const all = await s.rest();
      expect(all).toHaveLength(1);
      const m = all[0];
      expect(m?.message.case).toBe("error");
      if (m?.message.case !== "error") throw new Error("unreachable");
      expect(m.message.value.kind).toBe(ErrorKind.PROTOCOL);
      expect(m.message.value.code).toBe("handshake_required");
      expect(s.failure).toBeUndefined();
    });
  }

  test("no common version → PROTOCOL unsupported_version naming the server's versions", async () => {
    const s = openRawStream(t.url);
    s.send(handshake(await t.token(), { protocolVersions: [99 as ProtocolVersion] }));
    const all = await s.rest();
    expect(all).toHaveLength(1);
    const m = all[0];
    if (m?.message.case !== "error") throw new Error(`expected an error, got ${m?.message.case}`);
    expect(m.message.value.kind).toBe(ErrorKind.PROTOCOL);
    expect(m.message.value.code).toBe("unsupported_version");
    expect(m.message.value.supportedVersions).toEqual([ProtocolVersion.PROTOCOL_VERSION_1_0]);
    expect(m.message.value.message).toContain("1.0");
  });

  test("a bad token in the Handshake → SECURITY unauthenticated, the stream ends, and the refusal is audited", async () => {
    const before = t.audit.length;
    const s = openRawStream(t.url);
    s.send(handshake("not.a.jwt"));
    const all = await s.rest();
    expect(all).toHaveLength(1);
    const m = all[0];
    if (m?.message.case !== "error") throw new Error(`expected an error, got ${m?.message.case}`);
    expect([m.message.value.kind, m.message.value.code]).toEqual([ErrorKind.SECURITY, "unauthenticated"]);
    expect(t.audit.slice(before)).toEqual([expect.objectContaining({ event: "denied", action: "authenticate", reason: "unauthenticated" })]);
  });

  test("a second Handshake on a live session is invalid_message and the session stays usable", async () => {
    const s = openRawStream(t.url);
    s.send(handshake(await t.token()));
    await s.next();
    s.send(handshake(await t.token()));
    const e = await s.next();
    expect(e?.message.case === "error" && e.message.value.code).toBe("invalid_message");
    s.send({ case: "ping", value: { id: 5n } });
    const p = await s.next();
    expect(p?.message.case === "pong" && p.message.value.id).toBe(5n);
    s.close();
  });
});

describe("ping and seq", () => {
  test("ping is answered with pong carrying its id; seq increases by exactly one per message", async () => {
    const s = openRawStream(t.url);
    s.send(handshake(await t.token()));
    const seqs = [(await s.next())?.seq];
    for (let i = 1n; i <= 20n; i++) s.send({ case: "ping", value: { id: i } });
    for (let i = 1n; i <= 20n; i++) {
      const m = await s.next();
      expect(m?.message.case).toBe("pong");
      expect(m?.message.case === "pong" && m.message.value.id).toBe(i);
      seqs.push(m?.seq);
    }
    expect(seqs).toEqual(Array.from({ length: 21 }, (_, i) => BigInt(i + 1)));
    s.close();
  });

  test("ping is accepted before authentication; commands are not (SECURITY unauthenticated)", async () => {
    const s = openRawStream(t.url);
    s.send(handshake());
    const hr = await s.next();
    expect(hr?.message.case === "handshakeResult" && hr.message.value.securityLevel).toBe(SecurityLevel.UNSPECIFIED);
    s.send({ case: "ping", value: { id: 1n } });
    expect((await s.next())?.message.case).toBe("pong");
    s.send({ case: "command", value: { id: "c1", tool: "echo", payload: { case: "arguments", value: { text: "x" } } } });
    const r = await s.next();
    if (r?.message.case !== "response") throw new Error(`expected a response, got ${r?.message.case}`);
    const err = r.message.value.result;
    expect(err.case === "error" && [err.value.kind, err.value.code, r.message.value.commandId]).toEqual([
      ErrorKind.SECURITY,
      "unauthenticated",
      "c1",
    ]);
    s.close();
  });
});

describe("limits", () => {
  test("a message over max_message_bytes → TRANSPORT message_too_large and the stream ends", async () => {
    const s = openRawStream(t.url);
    s.send(handshake(await t.token()));
    await s.next();
    s.send({ case: "command", value: { id: "big", tool: "echo", payload: { case: "arguments", value: { text: "x".repeat(100 * 1024) } } } });
    const all = await s.rest();
    const last = all.at(-1);
    if (last?.message.case !== "error") throw new Error(`expected an error, got ${last?.message.case}`);
    expect(last.message.value.kind).toBe(ErrorKind.TRANSPORT);
    expect(last.message.value.code).toBe("message_too_large");
  });
});
