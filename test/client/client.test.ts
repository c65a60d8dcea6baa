/**
 * The TypeScript client against a real server (PROTOCOL.md §3, §4, §7): unary `call`, and on a
 * session stream call/execute/batch/cancel/update/sync+watch/authenticate/ping/events and resume.
 * Every failure surfaces as an McpError with the exact kind and code.
 */
import { createServer, type AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { BatchMode } from "../../gen/mcp/v1/command_pb.js";
import type { Event } from "../../gen/mcp/v1/event_pb.js";
import { createMcpClient, type McpClient, type McpSession } from "../../src/client/index.js";
import { args, startWithTestTools, type Probe } from "../helpers/command-tools.js";
import { mcpFailure } from "../helpers/mcp-failure.js";
import type { TestServer } from "../helpers/server.js";

let t: TestServer;
let probe: Probe;
let client: McpClient;
let session: McpSession;
beforeAll(async () => {
  ({ server: t, probe } = await startWithTestTools());
  client = createMcpClient({ baseUrl: t.url, token: await t.token("alice", ["developer"]) });
  session = await client.connect();
});
afterAll(async () => {
  session.close();
  await t.close();
});

let ids = 0;
const nextId = (p: string) => `${p}-${++ids}`;

describe("unary", () => {
  test("call returns the tool's JSON output", async () => {
    expect(await client.call("echo", { text: "unary" })).toEqual({ text: "unary" });
  });

  const failures: { name: string; tool: string; args?: Record<string, string | number>; timeoutMs?: number; want: { kind: string; code: string } }[] = [
    { name: "unknown tool", tool: "nope", want: { kind: "COMMAND", code: "unknown_tool" } },
    { name: "invalid argument", tool: "echo", args: { bogus: "x" }, want: { kind: "COMMAND", code: "invalid_argument" } },
    { name: "tool failure", tool: "crash", want: { kind: "COMMAND", code: "tool_failed" } },
    { name: "timeout", tool: "sleep", timeoutMs: 30, want: { kind: "COMMAND", code: "timeout" } },
  ];
  // The same McpErrors whichever protocol carries the unary call (gRPC: h2-grpc-transport.ts).
  for (const protocol of ["connect", "grpc"] as const) {
    for (const f of failures) {
      test(`call over ${protocol}: ${f.name} → McpError ${f.want.kind} ${f.want.code}`, async () => {
        const c = createMcpClient({ baseUrl: t.url, token: await t.token("alice", ["developer"]), protocol });
        const e = await mcpFailure(c.call(f.tool, f.args ?? {}, f.timeoutMs === undefined ? {} : { timeoutMs: f.timeoutMs }));
        expect({ kind: e.kind, code: e.code }).toEqual(f.want);
      });
    }

    test(`a server that cannot be reached, over ${protocol} → McpError TRANSPORT connection_lost`, async () => {
      // A port that was free a moment ago: nothing listens there.
      const probeServer = createServer();
      await new Promise<void>((r) => probeServer.listen(0, "127.0.0.1", r));
      const port = (probeServer.address() as AddressInfo).port; // listen() on TCP gives an AddressInfo
      await new Promise((r) => probeServer.close(r));
      const c = createMcpClient({ baseUrl: `http://127.0.0.1:${port}`, token: await t.token("alice", ["developer"]), protocol });
      const e = await mcpFailure(c.call("echo", { text: "x" }));
      expect({ kind: e.kind, code: e.code, retryable: e.retryable }).toEqual({ kind: "TRANSPORT", code: "connection_lost", retryable: true });
    });

    test(`a client without a token, over ${protocol} → McpError SECURITY unauthenticated`, async () => {
      const anon = createMcpClient({ baseUrl: t.url, protocol });
      const e = await mcpFailure(anon.call("echo", { text: "x" }));
      expect({ kind: e.kind, code: e.code }).toEqual({ kind: "SECURITY", code: "unauthenticated" });
    });
  }
});

describe("session", () => {
  test("connect completes the handshake", () => {
    expect(session.sessionId).toMatch(/^[0-9a-f-]{36}$/);
    expect(session.handshake.principal?.subject).toBe("alice");
    expect(session.handshake.resumed).toBe(false);
  });

  test("call returns output; failures reject with the exact McpError", async () => {
    expect(await session.call("echo", { text: "s" })).toEqual({ text: "s" });
    const cases: { tool: string; args: Record<string, string | number>; timeoutMs?: number; want: { kind: string; code: string; field?: string } }[] = [
      { tool: "nope", args: {}, want: { kind: "COMMAND", code: "unknown_tool" } },
      { tool: "sleep", args: { ms: "x" }, want: { kind: "COMMAND", code: "invalid_argument", field: "ms" } },
      { tool: "crash", args: {}, want: { kind: "COMMAND", code: "tool_failed" } },
      { tool: "sleep", args: {}, timeoutMs: 30, want: { kind: "COMMAND", code: "timeout" } },
    ];
    for (const c of cases) {
      const e = await mcpFailure(session.call(c.tool, c.args, c.timeoutMs === undefined ? {} : { timeoutMs: c.timeoutMs }));
      expect({ kind: e.kind, code: e.code, ...(c.want.field === undefined ? {} : { field: e.details.field }) }).toEqual(c.want);
    }
  });

  test("execute resolves with the Response, errors included", async () => {
    const r = await session.execute({ id: "x-1", tool: "nope" });
    expect(r.commandId).toBe("x-1");
    expect(r.result.case === "error" && r.result.value.code).toBe("unknown_tool");
  });

  test("cancel(id) → the call rejects with COMMAND cancelled and the handler's signal fired", async () => {
    const id = nextId("cc");
    const p = session.call("gate", { key: id }, { id });
    await probe.startedOnce(id);
    session.cancel(id);
    const e = await mcpFailure(p);
    expect({ kind: e.kind, code: e.code }).toEqual({ kind: "COMMAND", code: "cancelled" });
    expect(await probe.abortedWith(id)).toBe("cancelled");
  });

  test("an aborted CallOptions.signal sends a Cancel", async () => {
    const id = nextId("cs");
    const ac = new AbortController();
    const p = session.call("gate", { key: id }, { id, signal: ac.signal });
    await probe.startedOnce(id);
    ac.abort();
    expect((await mcpFailure(p)).code).toBe("cancelled");
  });

  test("batch: one Response per command in batch order; sequential stops at the first error", async () => {
    const [a, b, c] = [nextId("b"), nextId("b"), nextId("b")];
    const rs = await session.batch(
      [
        { id: a, tool: "echo", payload: args({ text: "a" }) },
        { id: b, tool: "crash" },
        { id: c, tool: "echo", payload: args({ text: "c" }) },
      ],
      BatchMode.SEQUENTIAL,
    );
    expect(rs.map((r) => [r.commandId, r.result.case === "error" ? r.result.value.code : r.result.case])).toEqual([
      [a, "output"],
      [b, "tool_failed"],
      [c, "cancelled"],
    ]);
    const par = await session.batch([{ tool: "echo", payload: args({ text: "p1" }) }, { tool: "echo", payload: args({ text: "p2" }) }], BatchMode.PARALLEL);
    expect(par.map((r) => r.result.case === "output" && r.result.value)).toEqual([{ text: "p1" }, { text: "p2" }]);
  });

  test("events: onEvent and events() see a command's events", async () => {
    const seen: Event[] = [];
    const all: Event[] = [];
    const reading = (async () => {
      for await (const e of session.events()) {
        all.push(e);
        if (all.length === 3) return;
      }
    })();
    const out = await session.call("count", { count: 3 }, { onEvent: (e) => seen.push(e) });
    expect(out).toEqual({ emitted: 3 });
    await reading;
    expect(seen.map((e) => [e.type, e.data])).toEqual([1, 2, 3].map((i) => ["command.progress", { i }]));
    expect(all.map((e) => e.seq)).toEqual(seen.map((e) => e.seq));
  });

  test("update applies; a stale expected_version rejects with CONTEXT version_conflict carrying the current version", async () => {
    const ctx = nextId("ctx");
    const put = (v: string) => [{ op: { case: "put" as const, value: { key: "k", value: { kind: { case: "stringValue" as const, value: v } } } } }];
    expect((await session.update({ contextId: ctx, ops: put("1") })).version).toBe(1n);
    expect((await session.update({ contextId: ctx, expectedVersion: 1n, ops: put("2") })).version).toBe(2n);
    const e = await mcpFailure(session.update({ contextId: ctx, expectedVersion: 1n, ops: put("3") }));
    expect({ kind: e.kind, code: e.code, currentVersion: e.details.currentVersion }).toEqual({ kind: "CONTEXT", code: "version_conflict", currentVersion: 2n });
  });

  test("sync with watch: a snapshot now, then one delta per change", async () => {
    const ctx = nextId("watch");
    const put = (v: string) => [{ op: { case: "put" as const, value: { key: "k", value: { kind: { case: "stringValue" as const, value: v } } } } }];
    await session.update({ contextId: ctx, ops: put("a") });
    const pushed = session.contextSyncs();
    const snapshot = await session.sync(ctx, 0n, true);
    expect([snapshot.full, snapshot.toVersion]).toEqual([true, 1n]);
    await session.update({ contextId: ctx, ops: put("b") });
    for await (const s of pushed) {
      if (s.contextId !== ctx || s.toVersion < 2n) continue;
      expect([s.full, s.fromVersion, s.toVersion, s.entries.map((e) => e.key)]).toEqual([false, 1n, 2n, ["k"]]);
      break;
    }
  });

  test("sync of a context never written → CONTEXT context_not_found", async () => {
    const e = await mcpFailure(session.sync(nextId("missing"), 1n));
    expect({ kind: e.kind, code: e.code }).toEqual({ kind: "CONTEXT", code: "context_not_found" });
  });

  test("authenticate refreshes the session's token; another subject's token is refused", async () => {
    const r = await session.authenticate(await t.token("alice", ["developer"]));
    expect(r.principal?.subject).toBe("alice");
    const other = await mcpFailure(session.authenticate(await t.token("bob")));
    expect({ kind: other.kind, code: other.code }).toEqual({ kind: "SECURITY", code: "permission_denied" });
    const bad = await mcpFailure(session.authenticate("not-a-jwt"));
    expect({ kind: bad.kind, code: bad.code }).toEqual({ kind: "SECURITY", code: "unauthenticated" });
    // The session still works with its credentials.
    expect(await session.call("echo", { text: "still" })).toEqual({ text: "still" });
  });

  test("ping answers with a round trip", async () => {
    expect(await session.ping()).toBeGreaterThanOrEqual(0);
  });

  test("without a token the handshake succeeds, and a command → SECURITY unauthenticated", async () => {
    const s = await createMcpClient({ baseUrl: t.url }).connect();
    const e = await mcpFailure(s.call("echo", { text: "x" }));
    expect({ kind: e.kind, code: e.code }).toEqual({ kind: "SECURITY", code: "unauthenticated" });
    s.close();
  });
});

describe("resume", () => {
  test("close, then connect({ resume }) gets the Responses that finished while away, and resumed=true", async () => {
    const s = await client.connect();
    const id = nextId("away");
    const pending = s.call("gate", { key: id }, { id });
    // The stream ends: the pending call rejects here; its Response waits in the session.
    pending.catch(() => {});
    await probe.startedOnce(id);
    const lastSeq = s.lastSeq;
    void s.close({ resumable: true });
    await s.closed;
    for (let i = 0; t.server.core.sessions.get(s.sessionId)?.connected !== false; i++) {
      if (i > 500) throw new Error("the server never detached the session");
      await new Promise((r) => setTimeout(r, 10));
    }
    probe.release(id);
    for (let i = 0; !probe.finished.includes(id); i++) {
      if (i > 500) throw new Error("the command never finished");
      await new Promise((r) => setTimeout(r, 10));
    }
    const r = await client.connect({ resume: { sessionId: s.sessionId, lastSeq } });
    expect([r.sessionId, r.handshake.resumed]).toEqual([s.sessionId, true]);
    // The Response that finished while away was replayed (lastSeq + 1), then the HandshakeResult.
    expect(r.lastSeq).toBe(lastSeq + 2n);
    expect(await r.call("echo", { text: "back" })).toEqual({ text: "back" });
    r.close();
  });

  test("resuming a session that is gone → McpError PROTOCOL session_expired", async () => {
    const e = await mcpFailure(client.connect({ resume: { sessionId: "00000000-0000-4000-8000-000000000000", lastSeq: 0n } }));
    expect({ kind: e.kind, code: e.code }).toEqual({ kind: "PROTOCOL", code: "session_expired" });
  });
});
