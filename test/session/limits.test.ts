/**
 * Everything a client can make the server keep is bounded (PROTOCOL.md §6, ARCHITECTURE.md "A
 * stream's life"): sessions per principal, bytes of detached sessions per principal and in all,
 * resume buffers by bytes, context watches and event subscriptions per session. Each bound is an
 * option; hitting it is a clear error (TRANSPORT overloaded) or an eviction (the evicted session
 * answers PROTOCOL session_expired on resume), never a crash. The last test opens 5,000 short
 * authenticated sessions against a server in a child process and bounds its heap by the caps.
 */
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, describe, expect, test } from "vitest";
import { ErrorKind } from "../../gen/mcp/v1/error_pb.js";
import { EventService } from "../../gen/mcp/v1/event_pb.js";
import type { ServerMessage } from "../../gen/mcp/v1/session_pb.js";
import { DETACHED_OVERHEAD_BYTES } from "../../src/session/session-registry.js";
import { args } from "../helpers/command-tools.js";
import { eventually } from "../helpers/eventually.js";
import { clientFrame, connectH2, openH2Stream } from "../helpers/raw-h2.js";
import { handshake, openRawStream, openSession, startServer, type RawStream, type TestServer } from "../helpers/server.js";
import { startServerProcess } from "../helpers/server-process.js";

const servers: TestServer[] = [];
afterAll(async () => {
  for (const s of servers) await s.close();
});
async function server(options: Parameters<typeof startServer>[0]): Promise<TestServer> {
  const s = await startServer(options);
  servers.push(s);
  return s;
}

/** Closes a stream and waits until the server has detached (or dropped) its session. */
async function disconnect(t: TestServer, s: RawStream, sessionId: string): Promise<void> {
  s.close();
  await eventually(() => t.server.core.sessions.get(sessionId)?.connected !== true, "the server to detach the session");
}

/** Resumes `sessionId` on a new stream; the first message it gets. */
async function resume(t: TestServer, sessionId: string, lastSeq: bigint, subject = "alice"): Promise<{ first: ServerMessage | undefined; s: RawStream }> {
  const s = openRawStream(t.url);
  s.send(handshake(await t.token(subject), { resume: { sessionId, lastSeq } }));
  const first = await s.next();
  return { first, s };
}

function errorIn(m: ServerMessage | undefined) {
  if (m?.message.case !== "error") throw new Error(`expected an Error, got ${m?.message.case}`);
  return m.message.value;
}

describe("sessions per principal (maxSessionsPerPrincipal)", () => {
  test("all attached: one more is refused with TRANSPORT overloaded; detached: the oldest is evicted and answers session_expired", async () => {
    const t = await server({ maxSessionsPerPrincipal: 2 });
    const a1 = await openSession(t.url, await t.token("alice"));
    const a2 = await openSession(t.url, await t.token("alice"));
    const refused = openRawStream(t.url);
    refused.send(handshake(await t.token("alice")));
    expect(errorIn(await refused.next())).toMatchObject({ kind: ErrorKind.TRANSPORT, code: "overloaded", retryable: true });
    expect(await refused.next()).toBeUndefined(); // the stream ends
    // Another principal is not affected.
    const b = await openSession(t.url, await t.token("bob"));
    // One of alice's detaches: the next one evicts it instead of being refused.
    await disconnect(t, a1.s, a1.sessionId);
    const a3 = await openSession(t.url, await t.token("alice"));
    expect(t.server.core.sessions.has(a1.sessionId)).toBe(false);
    const { first, s } = await resume(t, a1.sessionId, a1.seq);
    expect(errorIn(first)).toMatchObject({ kind: ErrorKind.PROTOCOL, code: "session_expired" });
    for (const x of [s, a2.s, a3.s, b.s]) x.close();
  });
});

describe("bytes of detached sessions (maxDetachedBytesPerPrincipal, maxDetachedBytes)", () => {
  test("per principal: past the bound the principal's oldest detached session is evicted; the newer ones resume", async () => {
    // Room for three detached sessions holding a little each.
    const t = await server({ maxDetachedBytesPerPrincipal: 3 * DETACHED_OVERHEAD_BYTES + 2048 });
    const opened = [];
    for (let i = 0; i < 4; i++) {
      const o = await openSession(t.url, await t.token("alice"));
      await disconnect(t, o.s, o.sessionId);
      opened.push(o);
    }
    expect(t.server.core.sessions.has(opened[0]!.sessionId)).toBe(false);
    const gone = await resume(t, opened[0]!.sessionId, opened[0]!.seq);
    expect(errorIn(gone.first)).toMatchObject({ kind: ErrorKind.PROTOCOL, code: "session_expired" });
    const kept = await resume(t, opened[3]!.sessionId, opened[3]!.seq);
    expect(kept.first?.message.case === "handshakeResult" && kept.first.message.value.resumed).toBe(true);
    gone.s.close();
    kept.s.close();
  });

  test("in all: past the global bound the oldest detached session of any principal goes first", async () => {
    const t = await server({ maxDetachedBytes: 2 * DETACHED_OVERHEAD_BYTES + 2048 });
    const alice = await openSession(t.url, await t.token("alice"));
    await disconnect(t, alice.s, alice.sessionId);
    const bobs = [];
    for (let i = 0; i < 2; i++) {
      const o = await openSession(t.url, await t.token("bob"));
      await disconnect(t, o.s, o.sessionId);
      bobs.push(o);
    }
    expect(t.server.core.sessions.has(alice.sessionId)).toBe(false);
    expect(bobs.every((o) => t.server.core.sessions.has(o.sessionId))).toBe(true);
    const gone = await resume(t, alice.sessionId, alice.seq);
    expect(errorIn(gone.first)).toMatchObject({ kind: ErrorKind.PROTOCOL, code: "session_expired" });
    gone.s.close();
  });
});

describe("resume buffer by bytes (resumeBufferBytes)", () => {
  test("the oldest messages go once the bytes pass the bound: a resume from before them is session_expired, a later one replays", async () => {
    const t = await server({ resumeBufferBytes: 8 * 1024 });
    const { s, sessionId } = await openSession(t.url, await t.token());
    const text = "x".repeat(1000);
    let lastSeq = 0n;
    for (let i = 0; i < 20; i++) {
      s.send({ case: "command", value: { id: `big${i}`, tool: "echo", payload: args({ text }) } });
      const m = await s.next();
      lastSeq = m?.seq ?? lastSeq;
    }
    await disconnect(t, s, sessionId);
    const held = t.server.core.sessions.get(sessionId)?.heldBytes ?? Infinity;
    expect(held).toBeLessThanOrEqual(8 * 1024);
    expect(held).toBeGreaterThan(4 * 1024);
    const early = await resume(t, sessionId, 1n);
    expect(errorIn(early.first)).toMatchObject({ kind: ErrorKind.PROTOCOL, code: "session_expired" });
    early.s.close();
    const late = await resume(t, sessionId, lastSeq - 2n);
    const replayed = [late.first, await late.s.next()];
    expect(replayed.map((m) => m?.message.case === "response" && m.message.value.commandId)).toEqual(["big18", "big19"]);
    late.s.close();
  });
});

describe("watches and subscriptions per session", () => {
  test("maxWatchesPerSession: one more watch → TRANSPORT overloaded naming the context; re-watching a watched context is no new watch", async () => {
    const t = await server({ maxWatchesPerSession: 2 });
    const { s } = await openSession(t.url, await t.token());
    for (const id of ["w1", "w2", "w3"]) {
      s.send({ case: "update", value: { id: `u-${id}`, contextId: id, ops: [{ op: { case: "put", value: { key: "k", value: { kind: { case: "numberValue", value: 1 } } } } }] } });
      expect((await s.next())?.message.case).toBe("updateResult");
    }
    for (const id of ["w1", "w2", "w1"]) {
      s.send({ case: "sync", value: { contextId: id, knownVersion: 0n, watch: true } });
      expect((await s.next())?.message.case).toBe("contextSync");
    }
    s.send({ case: "sync", value: { contextId: "w3", knownVersion: 0n, watch: true } });
    const err = errorIn(await s.next());
    expect(err).toMatchObject({ kind: ErrorKind.TRANSPORT, code: "overloaded", retryable: true });
    expect(err.message).toContain("limit is 2");
    // The session is fine: a plain sync still answers.
    s.send({ case: "sync", value: { contextId: "w3", knownVersion: 0n, watch: false } });
    expect((await s.next())?.message.case).toBe("contextSync");
    s.close();
  });

  test("maxSubscriptionsPerSession: one more EventService/Subscribe on a session → TRANSPORT overloaded (resource_exhausted)", async () => {
    const t = await server({ maxSubscriptionsPerSession: 1 });
    const token = await t.token();
    const { s, sessionId } = await openSession(t.url, token);
    const events = createClient(EventService, createGrpcTransport({ baseUrl: t.url }));
    const headers = { authorization: `Bearer ${token}` };
    const ac = new AbortController();
    const first = events.subscribe({ sessionId, afterSeq: 0n }, { headers, signal: ac.signal })[Symbol.asyncIterator]();
    const pending = first.next().catch(() => undefined);
    await eventually(() => t.server.core.sessions.get(sessionId)?.subscriptions === 1, "the first subscription to be in place");
    const second = events.subscribe({ sessionId, afterSeq: 0n }, { headers })[Symbol.asyncIterator]();
    const err: unknown = await second.next().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: 8 }); // Code.ResourceExhausted
    expect(String((err as Error).message)).toContain("limit is 1");
    ac.abort();
    await pending;
    await eventually(() => t.server.core.sessions.get(sessionId)?.subscriptions === 0, "the subscription to end");
    s.close();
  });
});

describe("5,000 short authenticated sessions (server in a child process)", () => {
  test("the heap stays within the configured caps: detached sessions are charged and evicted, not piled up", { timeout: 120_000 }, async () => {
    const maxDetachedBytes = 8 * 1024 * 1024;
    // Fifty principals (so the per-principal caps are not what binds), a short-session client each.
    const srv = await startServerProcess({ maxDetachedBytes, maxSessionsPerPrincipal: 10_000 });
    try {
      const tokens = await Promise.all(Array.from({ length: 50 }, (_, i) => srv.token(`user${i}`)));
      let h2 = connectH2(srv.url);
      let completed = 0;
      let goaways = 0;
      const short = async (token: string) => {
        for (let attempt = 0; attempt < 3; attempt++) {
          // nghttp2 answers a burst of resets with GOAWAY (its rapid-reset guard): open a new connection then.
          if (h2.destroyed || h2.closed) {
            h2 = connectH2(srv.url);
            goaways++;
          }
          const s = openH2Stream(h2);
          s.stream.write(clientFrame(handshake(token)));
          s.stream.write(clientFrame({ case: "ping", value: { id: 1n } }));
          const pong = await s.until((m) => m.message.case === "pong");
          s.reset();
          await s.closed();
          if (pong !== undefined) {
            completed++;
            return;
          }
        }
      };
      for (let i = 0; i < 100; i++) await short(tokens[i % 50]!);
      const before = await srv.memory();
      for (let i = 0; i < 5000; i += 50) await Promise.all(tokens.map((tk) => short(tk)));
      const after = await srv.memory();
      h2.close();
      expect(srv.alive).toBe(true);
      // Every one completed (some after a retry on a fresh connection: goaways counts those).
      expect({ completed, goawaysBelow100: goaways < 100 }).toEqual({ completed: 5100, goawaysBelow100: true });
      console.log(`5,000 short sessions: heap +${((after.heapUsed - before.heapUsed) / 1048576).toFixed(1)} MiB, rss +${((after.rss - before.rss) / 1048576).toFixed(1)} MiB, ${after.detached} detached, ${goaways} reconnects`);
      expect(after.detached).toBeLessThanOrEqual(Math.floor(maxDetachedBytes / DETACHED_OVERHEAD_BYTES));
      expect(after.detached * DETACHED_OVERHEAD_BYTES + after.detachedHeldBytes).toBeLessThanOrEqual(maxDetachedBytes);
      // What they cost is bounded by the cap (plus a margin for the heap's own noise), not by 5,000 × 60 KB.
      expect(after.heapUsed - before.heapUsed).toBeLessThan(maxDetachedBytes + 8 * 1024 * 1024);
    } finally {
      await srv.close();
    }
  });
});
