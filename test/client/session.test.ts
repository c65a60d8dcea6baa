/**
 * The client session through a TCP proxy that breaks the connection (PROTOCOL.md §4 steps 5–6,
 * §7): it reconnects and resumes by itself, every call settles exactly once, a session that is
 * gone is replaced and its watches re-synced, silence counts as a broken stream, and once the
 * session is over each pending and each new call rejects with one classified McpError.
 */
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import type { ContextSync } from "../../gen/mcp/v1/context_pb.js";
import type { ServerMessage } from "../../gen/mcp/v1/session_pb.js";
import { createMcpClient, type McpClient, type McpSession, type SessionOptions, type SessionStateChange } from "../../src/client/index.js";
import { McpError } from "../../src/errors.js";
import { startWithTestTools, type Probe } from "../helpers/command-tools.js";
import { eventually } from "../helpers/eventually.js";
import { mcpFailure } from "../helpers/mcp-failure.js";
import type { TestServer } from "../helpers/server.js";
import { startTcpProxy, type TcpProxy } from "./tcp-proxy.js";

let t: TestServer;
let probe: Probe;
let proxy: TcpProxy;
let client: McpClient;
beforeAll(async () => {
  // A short resume window so one case can let a session expire; a short heartbeat so a silent
  // peer is noticed quickly by both sides.
  ({ server: t, probe } = await startWithTestTools({ resumeTtlMs: 1500, heartbeatIntervalMs: 150 }));
  proxy = await startTcpProxy(Number(new URL(t.url).port));
  client = createMcpClient({ baseUrl: proxy.url, token: await t.token("alice", ["developer"]) });
});
afterAll(async () => {
  await proxy.close();
  await t.close();
});

let ids = 0;
const nextId = (p: string) => `${p}-${++ids}`;
const put = (v: string) => [{ op: { case: "put" as const, value: { key: "k", value: { kind: { case: "stringValue" as const, value: v } } } } }];
// Quick retries: these cases are about outcomes, not about waiting.
const quick = { initialDelayMs: 5, maxDelayMs: 30, attemptTimeoutMs: 2000 };

/** A session and the state changes it reported. */
async function open(o: SessionOptions = {}): Promise<{ s: McpSession; changes: SessionStateChange[] }> {
  const changes: SessionStateChange[] = [];
  const s = await client.connect({ reconnect: quick, ...o, onStateChange: (c) => changes.push(c) });
  return { s, changes };
}

const isOpenAgain = (changes: SessionStateChange[], resumed: boolean) => () => changes.some((c) => c.state === "open" && c.resumed === resumed);

/** Collects what a reader yields until the session closes (the reader ends then). */
function collect<T>(it: AsyncIterable<T>): T[] {
  const out: T[] = [];
  void (async () => {
    for await (const x of it) out.push(x);
  })();
  return out;
}

describe("a broken connection is resumed", () => {
  for (const how of ["reset", "close"] as const) {
    test(`a ${how} while a call is running: the session resumes and the call resolves once`, async () => {
      const { s, changes } = await open();
      const seen = collect<ServerMessage>(s.messages());
      const id = nextId("cut");
      const pending = s.call("gate", { key: id }, { id });
      await probe.startedOnce(id);
      expect(proxy.cut(how)).toBeGreaterThan(0);
      await eventually(isOpenAgain(changes, true), "the session to resume");
      probe.release(id);
      expect(await pending).toEqual({ key: id });
      expect(s.sessionId).toBe((changes.find((c) => c.state === "open") as { sessionId: string }).sessionId);
      expect(changes.map((c) => c.state)).toEqual(["open", "reconnecting", "open"]);
      const reason = (changes[1] as { reason: McpError }).reason;
      expect({ kind: reason.kind, code: reason.code, retryable: reason.retryable }).toEqual({ kind: "TRANSPORT", code: "connection_lost", retryable: true });
      // Exactly one Response for the command, although it finished after the cut.
      await eventually(() => seen.some((m) => m.message.case === "response"), "the Response on messages()");
      expect(seen.filter((m) => m.message.case === "response" && m.message.value.commandId === id)).toHaveLength(1);
      // Every seq once, increasing.
      const seqs = seen.map((m) => m.seq);
      expect(seqs).toEqual([...seqs].sort((a, b) => (a < b ? -1 : 1)).filter((x, i, a) => i === 0 || x !== a[i - 1]));
      s.close();
    });
  }

  test("calls made while reconnecting go out once the session is back", async () => {
    const { s, changes } = await open({ reconnect: { ...quick, maxAttempts: Infinity } });
    const ctx = nextId("ctx");
    proxy.refuse(true);
    proxy.cut();
    await eventually(() => s.state === "reconnecting", "the session to notice the cut");
    const call = s.call("echo", { text: "later" });
    const batch = s.batch([{ tool: "echo", payload: { case: "arguments", value: { text: "b1" } } }]);
    const update = s.update({ contextId: ctx, ops: put("1") });
    const ping = s.ping();
    proxy.refuse(false);
    expect(await call).toEqual({ text: "later" });
    expect((await batch).map((r) => r.result.case)).toEqual(["output"]);
    expect((await update).version).toBe(1n);
    expect(await ping).toBeGreaterThanOrEqual(0);
    expect(changes.filter((c) => c.state === "open").map((c) => (c as { resumed: boolean }).resumed)).toEqual([false, true]);
    s.close();
  });

  test("a watch continues across a cut: every version once, in order", async () => {
    const { s, changes } = await open();
    const ctx = nextId("watched");
    const syncs = collect<ContextSync>(s.contextSyncs());
    const writer = await createMcpClient({ baseUrl: t.url, token: await t.token("bob", ["developer"]) }).connect();
    await writer.update({ contextId: ctx, ops: put("0") });
    await s.sync(ctx, 0n, true);
    for (let i = 1; i <= 6; i++) {
      await writer.update({ contextId: ctx, ops: put(String(i)) });
      if (i === 3) {
        proxy.cut();
        await eventually(isOpenAgain(changes, true), "the session to resume");
      }
    }
    await eventually(() => syncs.some((x) => x.toVersion === 7n), "version 7 to reach the watcher");
    const mine = syncs.filter((x) => x.contextId === ctx);
    expect(mine[0]).toMatchObject({ full: true, toVersion: 1n });
    expect(mine.slice(1).map((x) => [x.fromVersion, x.toVersion])).toEqual([1n, 2n, 3n, 4n, 5n, 6n].map((v) => [v, v + 1n]));
    writer.close();
    s.close();
  });

  test("a silent server (no Pong for twice the heartbeat) counts as a broken stream", async () => {
    const { s, changes } = await open({ reconnect: { ...quick, attemptTimeoutMs: 300, maxAttempts: Infinity } });
    proxy.silence(true);
    await eventually(() => changes.some((c) => c.state === "reconnecting"), "the client to notice the silence");
    const reason = (changes.find((c) => c.state === "reconnecting") as { reason: McpError }).reason;
    expect({ kind: reason.kind, code: reason.code }).toEqual({ kind: "TRANSPORT", code: "connection_lost" });
    expect(reason.message).toMatch(/twice the heartbeat interval/);
    proxy.silence(false);
    await eventually(isOpenAgain(changes, true), "the session to resume");
    expect(await s.call("echo", { text: "after silence" })).toEqual({ text: "after silence" });
    s.close();
  });
});

describe("credentials across reconnects", () => {
  const admin = async () => createMcpClient({ baseUrl: t.url, token: await t.token("root", ["admin"]) });

  test("a reconnect resumes with the token authenticate() refreshed, not the first one", async () => {
    const first = nextId("jti");
    const c = createMcpClient({ baseUrl: proxy.url, token: await t.token("alice", ["developer"], { jti: first }) });
    const changes: SessionStateChange[] = [];
    const s = await c.connect({ reconnect: quick, onStateChange: (x) => changes.push(x) });
    await s.authenticate(await t.token("alice", ["developer"], { jti: nextId("jti") }));
    await (await admin()).admin.revokeToken({ jti: first });
    proxy.cut();
    await eventually(isOpenAgain(changes, true), "the session to resume");
    expect(await s.call("echo", { text: "refreshed" })).toEqual({ text: "refreshed" });
    s.close();
  });

  test("the server ends the session (its token revoked): pending and new calls → SECURITY token_revoked, no reconnect", async () => {
    const jti = nextId("jti");
    const c = createMcpClient({ baseUrl: proxy.url, token: await t.token("alice", ["developer"], { jti }) });
    const changes: SessionStateChange[] = [];
    const s = await c.connect({ reconnect: quick, onStateChange: (x) => changes.push(x) });
    const id = nextId("revoked");
    const pending = s.call("gate", { key: id }, { id });
    await probe.startedOnce(id);
    await (await admin()).admin.revokeToken({ jti });
    for (const p of [pending, s.call("echo", { text: "x" }), s.ping()]) {
      const e = await mcpFailure(p);
      expect({ kind: e.kind, code: e.code }).toEqual({ kind: "SECURITY", code: "token_revoked" });
    }
    expect(changes.map((x) => x.state)).toEqual(["open", "closed"]);
  });
});

describe("a session that expired while away is replaced", () => {
  test("calls already sent reject with TRANSPORT connection_lost; queued ones run; watches re-sync from their version", async () => {
    const { s, changes } = await open({ reconnect: { ...quick, maxAttempts: Infinity } });
    const before = s.sessionId;
    const ctx = nextId("expiring");
    const syncs = collect<ContextSync>(s.contextSyncs());
    await s.update({ contextId: ctx, ops: put("a") });
    await s.sync(ctx, 0n, true);
    const id = nextId("lost");
    const lost = s.call("gate", { key: id }, { id });
    await probe.startedOnce(id);
    proxy.refuse(true);
    proxy.cut();
    await eventually(() => s.state === "reconnecting", "the session to notice the cut");
    const queued = s.call("echo", { text: "queued" });
    // Meanwhile the context moves on, and the server lets the session go.
    const writer = await createMcpClient({ baseUrl: t.url, token: await t.token("bob", ["developer"]) }).connect();
    await writer.update({ contextId: ctx, ops: put("b") });
    await writer.update({ contextId: ctx, ops: put("c") });
    writer.close();
    await eventually(() => !t.server.core.sessions.has(before), "the server to expire the session", 10_000);
    proxy.refuse(false);

    const e = await mcpFailure(lost);
    expect({ kind: e.kind, code: e.code, retryable: e.retryable, cause: (e.cause as McpError).code }).toEqual({
      kind: "TRANSPORT",
      code: "connection_lost",
      retryable: true,
      cause: "session_expired",
    });
    expect(await queued).toEqual({ text: "queued" });
    await eventually(isOpenAgain(changes, false), "a fresh session");
    expect(s.sessionId).not.toBe(before);
    await eventually(() => syncs.some((x) => x.toVersion === 3n), "the re-sync to reach version 3");
    const mine = syncs.filter((x) => x.contextId === ctx);
    expect(mine.map((x) => [x.full, x.toVersion])).toEqual([
      [true, 1n],
      [false, 3n],
    ]);
    expect(mine[1]!.fromVersion).toBe(1n);
    // The watch lives on in the new session.
    await s.update({ contextId: ctx, ops: put("d") });
    await eventually(() => syncs.some((x) => x.toVersion === 4n), "the watch on the fresh session");
    s.close();
  });
});

describe("once the session is over, every call rejects at once with one McpError", () => {
  /** Starts one of each kind of call, to be rejected. */
  const gates = (s: McpSession, tag: string): [string, Promise<unknown>][] => [
    ["call", s.call("gate", { key: tag }, { id: `${tag}-call` })],
    ["execute", s.execute({ tool: "gate", payload: { case: "arguments", value: { key: tag } } })],
    ["batch", s.batch([{ tool: "gate", payload: { case: "arguments", value: { key: tag } } }])],
  ];
  const calls = (s: McpSession, tag: string): [string, Promise<unknown>][] => [
    ...gates(s, tag),
    ["update", s.update({ contextId: `${tag}-ctx`, ops: put("x") })],
    ["sync", s.sync(`${tag}-ctx`, 0n, true)],
    ["ping", s.ping()],
    ["authenticate", t.token("alice", ["developer"]).then((tok) => s.authenticate(tok))],
  ];
  const settle = async (ps: [string, Promise<unknown>][]) =>
    Object.fromEntries(await Promise.all(ps.map(async ([name, p]) => [name, await mcpFailure(p).then((e) => `${e.kind} ${e.code}`)] as const)));

  test("the server is gone and stays gone: pending and new calls → TRANSPORT connection_lost after the last attempt", async () => {
    // Delays long enough that the calls below are made while it is still reconnecting (refused
    // attempts fail at once: with the quick delays all three can be over before a poll sees them).
    const { s, changes } = await open({ reconnect: { ...quick, initialDelayMs: 200, maxDelayMs: 400, maxAttempts: 3 } });
    proxy.refuse(true);
    try {
      proxy.cut();
      await eventually(() => changes.some((c) => c.state === "reconnecting"), "the session to notice the cut");
      const pending = calls(s, nextId("gone"));
      const want = Object.fromEntries(pending.map(([name]) => [name, "TRANSPORT connection_lost"]));
      expect(await settle(pending)).toEqual(want);
      expect(s.state).toBe("closed");
      expect(await settle(calls(s, nextId("after")))).toEqual(want);
      const end = await s.closed;
      expect([end?.kind, end?.code, end?.retryable]).toEqual(["TRANSPORT", "connection_lost", true]);
      expect(end?.message).toMatch(/gave up reconnecting after 3 attempts/);
      expect(changes.map((c) => (c.state === "reconnecting" ? `reconnecting ${c.attempt}` : c.state))).toEqual(["open", "reconnecting 1", "reconnecting 2", "reconnecting 3", "closed"]);
    } finally {
      proxy.refuse(false);
    }
  });

  for (const how of ["reset", "close"] as const) {
    test(`reconnect: false and a ${how}: pending and new calls → TRANSPORT connection_lost`, async () => {
      const { s } = await open({ reconnect: false });
      const tag = nextId("noretry");
      // Commands that are still running when the connection breaks (the other kinds answer at once).
      const pending = gates(s, tag);
      await probe.startedOnce(`${tag}-call`);
      proxy.cut(how);
      const lost = "TRANSPORT connection_lost";
      expect(await settle(pending)).toEqual({ call: lost, execute: lost, batch: lost });
      const after = calls(s, nextId("after"));
      expect(await settle(after)).toEqual(Object.fromEntries(after.map(([name]) => [name, lost])));
    });
  }

  test("close(): pending and new calls → COMMAND cancelled; closed resolves without an error", async () => {
    const { s, changes } = await open();
    const pending = calls(s, nextId("closing"));
    s.close();
    const want = Object.fromEntries(pending.map(([name]) => [name, "COMMAND cancelled"]));
    expect(await settle(pending)).toEqual(want);
    expect(await settle(calls(s, nextId("after")))).toEqual(want);
    expect(await s.closed).toBeUndefined();
    expect(changes.at(-1)).toEqual({ state: "closed", error: undefined });
  });

  test("the session's AbortSignal stops reconnecting: pending calls → COMMAND cancelled", async () => {
    const ac = new AbortController();
    const { s } = await open({ signal: ac.signal, reconnect: { ...quick, maxAttempts: Infinity } });
    proxy.refuse(true);
    try {
      proxy.cut();
      await eventually(() => s.state === "reconnecting", "the session to notice the cut");
      const p = s.call("echo", { text: "x" });
      ac.abort();
      const e = await mcpFailure(p);
      expect({ kind: e.kind, code: e.code }).toEqual({ kind: "COMMAND", code: "cancelled" });
      expect(s.state).toBe("closed");
    } finally {
      proxy.refuse(false);
    }
  });

  test("a server that cannot be reached at connect → TRANSPORT connection_lost", async () => {
    proxy.refuse(true);
    try {
      const e = await mcpFailure(client.connect());
      expect({ kind: e.kind, code: e.code, retryable: e.retryable }).toEqual({ kind: "TRANSPORT", code: "connection_lost", retryable: true });
    } finally {
      proxy.refuse(false);
    }
  });
});

describe("connect({ resume }) from another session object", () => {
  test("replayed Responses reach response(id) and messages(); the session knows the commands listed", async () => {
    const s1 = await client.connect({ reconnect: false });
    const id = nextId("handover");
    s1.call("gate", { key: id }, { id }).catch(() => {}); // rejected by close(); answered to s2
    await probe.startedOnce(id);
    const resume = { sessionId: s1.sessionId, lastSeq: s1.lastSeq, commandIds: s1.pendingCommandIds };
    expect(resume.commandIds).toEqual([id]);
    void s1.close({ resumable: true });
    await eventually(() => t.server.core.sessions.get(resume.sessionId)?.connected === false, "the server to detach the session");
    probe.release(id);
    await eventually(() => probe.finished.includes(id), "the command to finish while away");

    const s2 = await client.connect({ resume });
    const seen = collect<ServerMessage>(s2.messages());
    expect([s2.sessionId, s2.handshake.resumed]).toEqual([resume.sessionId, true]);
    const r = await s2.response(id);
    expect(r.result.case).toBe("output");
    await eventually(() => seen.length > 0, "the replay on messages()");
    expect(seen[0]).toMatchObject({ seq: resume.lastSeq + 1n, message: { case: "response", value: { commandId: id } } });
    await expect(s2.response("never-sent")).rejects.toThrow(TypeError);
    s2.close();
  });

  test("lastSeq: 0n resumes (resumed=true) and replays the session from its start", async () => {
    const s1 = await client.connect({ reconnect: false });
    await s1.call("echo", { text: "one" });
    const sessionId = s1.sessionId;
    void s1.close({ resumable: true });
    await eventually(() => t.server.core.sessions.get(sessionId)?.connected === false, "the server to detach the session");
    const s2 = await client.connect({ resume: { sessionId, lastSeq: 0n } });
    const seen = collect<ServerMessage>(s2.messages());
    expect([s2.sessionId, s2.handshake.resumed]).toEqual([sessionId, true]);
    await eventually(() => seen.some((m) => m.message.case === "response"), "the replayed Response");
    expect(seen.every((m) => m.message.case !== "handshakeResult")).toBe(true);
    expect(seen[0]!.seq).toBe(2n); // seq 1 was the first stream's HandshakeResult
    s2.close();
  });
});
