/**
 * Limits and backpressure on the session stream (PROTOCOL.md §6, ARCHITECTURE.md "hot path"):
 * `max_inflight_commands` → overloaded; 10,000 pipelined commands each answered exactly once; a
 * client that stops reading while a tool keeps emitting is dropped with `slow_consumer` while the
 * server keeps serving everyone else. No memory measurements here: that belongs to bench/.
 */
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { ErrorKind } from "../../gen/mcp/v1/error_pb.js";
import { createConnectTransport } from "@connectrpc/connect-node";
import { BatchMode, type Response } from "../../gen/mcp/v1/command_pb.js";
import type { ServerMessage } from "../../gen/mcp/v1/session_pb.js";
import { args, createTestTools, startWithTestTools, errorOf, openReader, outputOf, type Probe } from "../helpers/command-tools.js";
import { createMcpClient } from "../../src/client/index.js";
import { eventually } from "../helpers/eventually.js";
import { handshake, openRawStream, openSession, startServer, type RawStream, type TestServer } from "../helpers/server.js";

let t: TestServer;
let probe: Probe;
beforeAll(async () => {
  ({ server: t, probe } = await startWithTestTools({ maxInflightCommands: 2, maxOutboundMessages: 64, slowConsumerTimeoutMs: 300 }));
});
afterAll(() => t.close());

describe("max_inflight_commands", () => {
  test("one command beyond the limit → TRANSPORT overloaded, retryable with retry_after_ms; the others complete", async () => {
    const s = await openReader(t.url, handshake(await t.token()));
    s.send({ case: "command", value: { id: "g1", tool: "gate", payload: args({ key: "inflight-1" }) } });
    s.send({ case: "command", value: { id: "g2", tool: "gate", payload: args({ key: "inflight-2" }) } });
    await probe.startedOnce("g1");
    await probe.startedOnce("g2");
    s.send({ case: "command", value: { id: "third", tool: "echo", payload: args({ text: "x" }) } });
    const r = await s.response("third");
    expect(errorOf(r)).toMatchObject({ kind: ErrorKind.TRANSPORT, code: "overloaded", retryable: true, commandId: "third" });
    expect(r.result.case === "error" && r.result.value.retryAfterMs).toBeGreaterThan(0);
    probe.release("inflight-1");
    expect(outputOf(await s.response("g1"))).toEqual({ key: "inflight-1" });
    // A slot is free again: a retry succeeds.
    s.send({ case: "command", value: { id: "third-retry", tool: "echo", payload: args({ text: "x" }) } });
    expect(outputOf(await s.response("third-retry"))).toEqual({ text: "x" });
    probe.release("inflight-2");
    expect(outputOf(await s.response("g2"))).toEqual({ key: "inflight-2" });
    s.close();
  });
});

describe("pipelining", () => {
  test("10,000 echo commands pipelined on one stream are each answered exactly once", async () => {
    const server = await startServer({});
    try {
      const s = openRawStream(server.url);
      s.send(handshake(await server.token()));
      expect((await s.next())?.message.case).toBe("handshakeResult");
      const n = 10_000;
      for (let i = 0; i < n; i++) s.send({ case: "command", value: { id: `e${i}`, tool: "echo", payload: args({ text: `t${i}` }) } });
      const seen = new Map<string, number>();
      const codes = new Map<string, number>();
      let lastSeq = 1n;
      let gaps = 0;
      while (seen.size < n) {
        const m = await s.next();
        if (m === undefined) throw new Error(`the stream ended after ${seen.size} Responses`);
        if (m.seq !== lastSeq + 1n) gaps++;
        lastSeq = m.seq;
        if (m.message.case !== "response") continue;
        const r = m.message.value;
        seen.set(r.commandId, (seen.get(r.commandId) ?? 0) + 1);
        const code = r.result.case === "error" ? r.result.value.code : "ok";
        codes.set(code, (codes.get(code) ?? 0) + 1);
        if (r.result.case === "output") expect(r.result.value).toEqual({ text: `t${r.commandId.slice(1)}` });
      }
      // None missing (seen.size === n ends the loop), none unknown, none twice.
      expect([...seen.keys()].filter((id) => !/^e\d+$/.test(id))).toEqual([]);
      expect([...seen.values()].filter((c) => c !== 1)).toEqual([]);
      // The default in-flight limit (256) is far above what echo keeps in flight: all succeed.
      expect(Object.fromEntries(codes)).toEqual({ ok: n });
      expect(gaps).toBe(0);
      // Nothing more arrives for them: the next message is the Pong.
      s.send({ case: "ping", value: { id: 7n } });
      const after = await s.next();
      expect(after?.message.case).toBe("pong");
      s.close();
    } finally {
      await server.close();
    }
  });
});

describe("backpressure inside a burst (one CommandBatch)", () => {
  /** Reads until `n` Responses arrived; throws if the stream ends first. Counts per id. */
  async function responses(s: RawStream, n: number): Promise<{ byId: Map<string, Response[]>; errors: ServerMessage[] }> {
    const byId = new Map<string, Response[]>();
    const errors: ServerMessage[] = [];
    let count = 0;
    while (count < n) {
      const m = await s.next();
      if (m === undefined) throw new Error(`the stream ended after ${count} of ${n} Responses (errors: ${errors.map((e) => (e.message.case === "error" ? e.message.value.code : "")).join(", ")})`);
      if (m.message.case === "error") errors.push(m);
      if (m.message.case !== "response") continue;
      count++;
      const list = byId.get(m.message.value.commandId) ?? [];
      list.push(m.message.value);
      byId.set(m.message.value.commandId, list);
    }
    return { byId, errors };
  }

  /** The session still answers on the same stream: an echo, then a Pong. */
  async function stillServes(s: RawStream): Promise<void> {
    s.send({ case: "command", value: { id: "after", tool: "echo", payload: args({ text: "still here" }) } });
    const { byId } = await responses(s, 1);
    expect(outputOf(byId.get("after")![0]!)).toEqual({ text: "still here" });
    s.send({ case: "ping", value: { id: 9n } });
    expect((await s.next())?.message.case).toBe("pong");
  }

  const batchOf = (n: number, mode: BatchMode) => ({
    case: "batch" as const,
    value: { mode, commands: Array.from({ length: n }, (_, i) => ({ id: `b${i}`, tool: "echo", payload: args({ text: `t${i}` }) })) },
  });

  for (const [name, transport] of [
    ["gRPC (HTTP/2 fast path)", undefined],
    ["Connect over HTTP/2 (connect-node)", (url: string) => createConnectTransport({ baseUrl: url, httpVersion: "2" })],
  ] as const) {
    test(`${name}: 2,000 commands over max_batch_size 100 → each answered PROTOCOL invalid_message naming the limit, none run; the session stays`, async () => {
      const server = await startServer({});
      try {
        const s = openRawStream(server.url, {}, transport?.(server.url));
        s.send(handshake(await server.token()));
        expect((await s.next())?.message.case).toBe("handshakeResult");
        s.send(batchOf(2000, BatchMode.PARALLEL));
        const { byId, errors } = await responses(s, 2000);
        expect(errors).toEqual([]);
        expect(byId.size).toBe(2000);
        for (const [id, list] of byId) {
          expect(list).toHaveLength(1);
          expect(errorOf(list[0]!)).toMatchObject({ kind: ErrorKind.PROTOCOL, code: "invalid_message", field: "commands", commandId: id, retryable: false });
        }
        const first = byId.get("b0")![0]!;
        expect(first.result.case === "error" && first.result.value.message).toBe("batch of 2000 commands exceeds max_batch_size 100: none of them ran");
        await stillServes(s);
        s.close();
      } finally {
        await server.close();
      }
    });
  }

  for (const mode of [BatchMode.PARALLEL, BatchMode.SEQUENTIAL]) {
    test(`max_batch_size 5,000: a ${BatchMode[mode]} batch of 5,000 echo commands from a reading client gets 5,000 Responses on the same stream`, async () => {
      // The outbound queue (1,024 by default, 256 here) is far smaller than the batch: the batch waits for it to drain.
      const server = await startServer({ maxBatchSize: 5000, maxOutboundMessages: 256 });
      try {
        const { s } = await openSession(server.url, await server.token());
        s.send(batchOf(5000, mode));
        const { byId, errors } = await responses(s, 5000);
        expect(errors).toEqual([]);
        expect(byId.size).toBe(5000);
        for (const [id, list] of byId) {
          expect(list).toHaveLength(1);
          expect(outputOf(list[0]!)).toEqual({ text: `t${id.slice(1)}` });
        }
        await stillServes(s);
        s.close();
      } finally {
        await server.close();
      }
    });
  }

  test("a batch waiting for room does not outlive its session: a client that stops reading mid-batch is dropped with slow_consumer", async () => {
    const server = await startServer({ maxBatchSize: 100_000, maxOutboundMessages: 64, slowConsumerTimeoutMs: 300 });
    try {
      const { s: slow, sessionId } = await openSession(server.url, await server.token());
      // Enough echo answers to fill every buffer between the server and a client that reads nothing.
      slow.send(batchOf(100_000, BatchMode.PARALLEL));
      const session = () => server.server.core.sessions.get(sessionId);
      await eventually(() => session()?.connected === false, "the server to drop the non-reading client", 15_000);
      expect(session()?.closed).toBe(false);
      const rest = await slow.rest();
      const last = rest.at(-1);
      expect(last?.message.case === "error" && last.message.value).toMatchObject({ kind: ErrorKind.TRANSPORT, code: "slow_consumer" });
      slow.close();
    } finally {
      await server.close();
    }
  });
});

describe("slow consumer", () => {
  test("a client that stops reading while a tool keeps emitting is dropped with TRANSPORT slow_consumer; others are served", async () => {
    const { s: slow, sessionId } = await openSession(t.url, await t.token());
    // The tool emits until its timeout; the client reads nothing from here on.
    slow.send({ case: "command", value: { id: "flood", tool: "spam", timeoutMs: 5000 } });
    await probe.startedOnce("flood");

    const session = () => t.server.core.sessions.get(sessionId);
    await eventually(() => session()?.connected === false, "the server to drop the non-reading client");
    // Dropped, not destroyed: the session stays for resume (§4 step 5).
    expect(session()?.closed).toBe(false);

    // Another client is served meanwhile.
    const other = await openReader(t.url, handshake(await t.token("bob")));
    other.send({ case: "command", value: { id: "ok", tool: "echo", payload: args({ text: "served" }) } });
    expect(outputOf(await other.response("ok"))).toEqual({ text: "served" });
    other.close();

    // Once the slow client reads again, what was buffered (bounded) ends with slow_consumer.
    const rest: ServerMessage[] = [];
    for (let m = await slow.next(); m !== undefined; m = await slow.next()) rest.push(m);
    const last = rest.at(-1);
    if (last?.message.case !== "error") throw new Error(`expected the stream to end with an error, got ${last?.message.case}`);
    expect(last.message.value).toMatchObject({ kind: ErrorKind.TRANSPORT, code: "slow_consumer", retryable: true });
    expect(last.message.value.retryAfterMs).toBeGreaterThan(0);
    // The slow_consumer error is the only error, and it comes last: nothing was sent after the drop.
    expect(rest.filter((m) => m.message.case === "error")).toHaveLength(1);
    slow.close();
  });

  test("the TS client names the drop: its pending call rejects with TRANSPORT slow_consumer, not session_expired", async () => {
    const tools = createTestTools();
    // A tool that emits 2,000 events per tick ignores backpressure: even a reading client's queue (64) overflows.
    const bounded = await startServer({ tools: tools.tools, maxOutboundMessages: 64, slowConsumerTimeoutMs: 60_000 });
    try {
      // Without reconnecting: a client that reconnects resumes instead, and its call ends as an unknown outcome.
      const session = await createMcpClient({ baseUrl: bounded.url, token: await bounded.token() }).connect({ reconnect: false });
      const err = await session.call("spam", { burst: 2000 }, { timeoutMs: 30_000 }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toMatchObject({ name: "McpError", kind: "TRANSPORT", code: "slow_consumer", retryable: true });
      session.close();
    } finally {
      await bounded.close();
    }
  });

  test("the queue bound drops a non-reading client by size, long before the slow-consumer timer", async () => {
    const tools = createTestTools();
    // A 60 s timer: only the size bound (maxOutboundMessages) can drop the client within the wait below.
    const bounded = await startServer({ tools: tools.tools, maxOutboundMessages: 64, slowConsumerTimeoutMs: 60_000 });
    try {
      const { s: slow, sessionId } = await openSession(bounded.url, await bounded.token());
      const session = () => bounded.server.core.sessions.get(sessionId);
      slow.send({ case: "command", value: { id: "flood", tool: "spam", timeoutMs: 30_000 } });
      await tools.probe.startedOnce("flood");
      await eventually(() => session()?.connected === false, "the size bound to drop the client", 15_000);
      expect(session()?.closed).toBe(false);
      const rest = await slow.rest();
      const last = rest.at(-1);
      expect(last?.message.case === "error" && last.message.value.code).toBe("slow_consumer");
      slow.close();
    } finally {
      await bounded.close();
    }
  });
});
