/**
 * Sessions sharing HTTP/2 connections (src/client/h2-channel.ts, `maxSessionsPerConnection`):
 * counted at a TCP proxy between a real client and a real server. Many sessions → one TCP
 * connection; a cut connection makes every session on it resume, each call settling once; closing
 * one session leaves the others working; the server's memory per shared idle session is bounded.
 */
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { createMcpClient, type McpSession, type SessionStateChange } from "../../src/client/index.js";
import { createH2Channel } from "../../src/client/h2-channel.js";
import { eventually } from "../helpers/eventually.js";
import { startServer, type TestServer } from "../helpers/server.js";
import { startServerProcess } from "../helpers/server-process.js";
import { startTcpProxy, type TcpProxy } from "./tcp-proxy.js";

let t: TestServer;
let proxy: TcpProxy;
beforeAll(async () => {
  t = await startServer();
  proxy = await startTcpProxy(Number(new URL(t.url).port));
});
afterAll(async () => {
  await proxy.close();
  await t.close();
});

const quick = { initialDelayMs: 20, maxDelayMs: 100, maxAttempts: 20 };

describe("sessions sharing one HTTP/2 connection", () => {
  test("N sessions → one TCP connection (the default), each its own session", async () => {
    const before = proxy.accepted;
    const client = createMcpClient({ baseUrl: proxy.url, token: await t.token() });
    const sessions = await Promise.all(Array.from({ length: 20 }, () => client.connect()));
    try {
      expect(proxy.accepted - before).toBe(1);
      expect(client.sessionConnections).toBe(1);
      expect(new Set(sessions.map((s) => s.sessionId)).size).toBe(20);
      const outs = await Promise.all(sessions.map((s, i) => s.call("echo", { text: `s${i}` })));
      expect(outs.map((o) => o["text"])).toEqual(sessions.map((_, i) => `s${i}`));
    } finally {
      client.close();
    }
    await eventually(() => proxy.open === 0, "the shared connection to close with the client");
  });

  // maxSessionsPerConnection: how many connections N sessions take
  const spills = [
    { max: 1, sessions: 5, connections: 5 },
    { max: 3, sessions: 7, connections: 3 },
    { max: 100, sessions: 7, connections: 1 },
  ];
  for (const { max, sessions: n, connections } of spills) {
    test(`maxSessionsPerConnection ${max}: ${n} sessions take ${connections} connection(s)`, async () => {
      const before = proxy.accepted;
      const client = createMcpClient({ baseUrl: proxy.url, token: await t.token(), maxSessionsPerConnection: max });
      try {
        const sessions: McpSession[] = [];
        // One after another, so each connect sees the connections the previous ones made.
        for (let i = 0; i < n; i++) sessions.push(await client.connect());
        expect(proxy.accepted - before).toBe(connections);
        expect(client.sessionConnections).toBe(connections);
        expect(await Promise.all(sessions.map((s) => s.ping()))).toHaveLength(n);
      } finally {
        client.close();
      }
    });
  }

  test("maxSessionsPerConnection below 1 is a TypeError", () => {
    expect(() => createMcpClient({ baseUrl: t.url, maxSessionsPerConnection: 0 })).toThrow(TypeError);
    expect(() => createH2Channel({ origin: t.url, maxStreamsPerConnection: 1.5 })).toThrow(TypeError);
  });

  test("a cut connection: every session on it resumes, and every call in flight settles once", async () => {
    const client = createMcpClient({ baseUrl: proxy.url, token: await t.token() });
    const changes: SessionStateChange[][] = [];
    const sessions = await Promise.all(
      Array.from({ length: 8 }, (_, i) => {
        changes[i] = [];
        return client.connect({ reconnect: quick, onStateChange: (c) => changes[i]!.push(c) });
      }),
    );
    try {
      await Promise.all(sessions.map((s) => s.ping()));
      let settled = 0;
      const calls = sessions.flatMap((s, i) =>
        Array.from({ length: 5 }, (_, k) =>
          s.call("echo", { text: `${i}.${k}` }).then((o) => {
            settled++;
            return o["text"];
          }),
        ),
      );
      expect(proxy.cut("reset")).toBe(1);
      const outs = await Promise.all(calls);
      expect(outs).toEqual(sessions.flatMap((_, i) => Array.from({ length: 5 }, (_, k) => `${i}.${k}`)));
      expect(settled).toBe(40);
      await eventually(() => changes.every((c) => c.some((x) => x.state === "open" && x.resumed)), "every session to resume");
      for (const c of changes) expect(c.filter((x) => x.state === "open").map((x) => (x as { resumed: boolean }).resumed)).toEqual([false, true]);
      // Back on one connection: the first reconnect opened it, the others joined it.
      expect(client.sessionConnections).toBe(1);
      expect(await Promise.all(sessions.map((s) => s.call("echo", { text: "after" })))).toHaveLength(8);
    } finally {
      client.close();
    }
  });

  test("closing one session leaves the others on the connection working; the last one closes it", async () => {
    const before = proxy.accepted;
    const client = createMcpClient({ baseUrl: proxy.url, token: await t.token() });
    const [a, b, c] = await Promise.all([client.connect(), client.connect(), client.connect()]);
    const ids = [a!.sessionId, b!.sessionId, c!.sessionId];
    await a!.close();
    expect(await a!.closed).toBeUndefined();
    expect(t.server.core.sessions.has(ids[0]!)).toBe(false); // closed for good: gone on the server
    expect(await b!.call("echo", { text: "b" })).toMatchObject({ text: "b" });
    expect(await c!.call("echo", { text: "c" })).toMatchObject({ text: "c" });
    expect(t.server.core.sessions.get(ids[1]!)?.connected).toBe(true);
    expect(client.sessionConnections).toBe(1);
    b!.close();
    expect(await c!.ping()).toBeGreaterThanOrEqual(0);
    c!.close();
    await eventually(() => client.sessionConnections === 0, "the connection to close with its last session");
    expect(proxy.accepted - before).toBe(1);
  });

  test("a server silent on the shared connection: the sessions give it up and reconnect on a new one", async () => {
    const client = createMcpClient({ baseUrl: proxy.url, token: await t.token() });
    const sessions = await Promise.all(Array.from({ length: 3 }, () => client.connect({ heartbeatIntervalMs: 100, reconnect: { ...quick, attemptTimeoutMs: 300, maxAttempts: Infinity } })));
    try {
      const before = proxy.accepted;
      proxy.silence(true);
      await eventually(() => proxy.accepted > before, "a reconnect on a new connection");
      proxy.silence(false);
      const outs = await Promise.all(sessions.map((s, i) => s.call("echo", { text: `q${i}` })));
      expect(outs.map((o) => o["text"])).toEqual(["q0", "q1", "q2"]);
    } finally {
      client.close();
    }
  });
});

describe("fan-out to many watchers on shared connections", () => {
  test("120 watcher sessions each see every version of 30 rapid updates once, in order, with its own seq", { timeout: 30_000 }, async () => {
    // Its own principal: the per-principal session limit (128) is not what this test is about.
    const client = createMcpClient({ baseUrl: t.url, token: await t.token("fanout") });
    try {
      const ctx = `fanout-${Date.now()}`;
      const writer = await client.connect();
      await writer.update({ contextId: ctx, ops: [{ op: { case: "put", value: { key: "k", value: { kind: { case: "numberValue", value: 0 } } } } }] });
      const watchers = await Promise.all(Array.from({ length: 120 }, () => client.connect()));
      const seen: { version: bigint; value: unknown; gone: string[] }[][] = watchers.map(() => []);
      const seqs: bigint[][] = watchers.map(() => []);
      await Promise.all(watchers.map((w) => w.sync(ctx, 1n, true)));
      const reading = watchers.map(async (w, i) => {
        const messages = w.messages();
        for await (const m of messages) {
          if (m.message.case !== "contextSync") continue;
          const s = m.message.value;
          seqs[i]!.push(m.seq);
          seen[i]!.push({ version: s.toVersion, value: s.entries[0]?.value?.kind.value, gone: s.deletedKeys });
          if (s.toVersion === 31n) return;
        }
      });
      // Not awaited one by one: the changes pile up in the watchers' queues and go out in bursts.
      const updates = Array.from({ length: 30 }, (_, u) =>
        writer.update({
          contextId: ctx,
          ops: u % 5 === 4 ? [{ op: { case: "delete", value: { key: "k" } } }] : [{ op: { case: "put", value: { key: "k", value: { kind: { case: "numberValue", value: u + 1 } } } } }],
        }),
      );
      await Promise.all(updates);
      await Promise.all(reading);
      const want = Array.from({ length: 30 }, (_, u) => (u % 5 === 4 ? { version: BigInt(u + 2), value: undefined, gone: ["k"] } : { version: BigInt(u + 2), value: u + 1, gone: [] }));
      for (let i = 0; i < watchers.length; i++) {
        expect(seen[i]).toEqual(want);
        // Each session's own numbering: strictly increasing by one between its messages here.
        expect(seqs[i]!.every((q, k) => k === 0 || q === seqs[i]![k - 1]! + 1n)).toBe(true);
      }
    } finally {
      client.close();
    }
  });
});

describe("the server's memory per shared idle session", () => {
  test("400 idle authenticated sessions on one connection cost the server a bounded heap each", { timeout: 60_000 }, async () => {
    const srv = await startServerProcess({ maxSessionsPerPrincipal: 1000, logLevel: "silent" });
    const client = createMcpClient({ baseUrl: srv.url, token: await srv.token(), maxSessionsPerConnection: Infinity });
    try {
      // One first: the connection and the code paths exist before the baseline.
      await client.connect({ heartbeatIntervalMs: 0 });
      const before = await srv.memory();
      for (let i = 0; i < 400; i += 50) await Promise.all(Array.from({ length: 50 }, () => client.connect({ heartbeatIntervalMs: 0 })));
      const after = await srv.memory();
      expect(after.sessions).toBe(401);
      expect(client.sessionConnections).toBe(1);
      const perSession = (after.heapUsed - before.heapUsed) / 400;
      console.log(`server heap per shared idle session: ${(perSession / 1024).toFixed(1)} KB (sources under tsx; the build is ~8 KB less)`);
      // Generous: ~21 KB under tsx as measured here; a per-session leak of buffers or a
      // connection's worth of state (~100 KB) fails it.
      expect(perSession).toBeLessThan(48 * 1024);
    } finally {
      client.close();
      await srv.close();
    }
  });
});
