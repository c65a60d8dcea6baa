/**
 * Instance liveness and the commands of a dead instance (issue 15: "every command answered exactly
 * once"), in process on a private database of the shared Redis: the heartbeat key lapses when an
 * instance stops refreshing it; the holder of a moved session answers a command whose instance is
 * dead with one `TRANSPORT connection_lost`, and the late Response of an instance that was only
 * frozen is dropped; a graceful shutdown lets ghosts' commands finish within the grace and
 * cancels the rest, each answered once on the holder.
 */
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { ErrorKind } from "../../gen/mcp/v1/error_pb.js";
import type { Response } from "../../gen/mcp/v1/command_pb.js";
import { createInstanceLiveness } from "../../src/session/instance-liveness.js";
import { args, createTestTools, errorOf, outputOf, type Probe } from "../helpers/command-tools.js";
import { eventually } from "../helpers/eventually.js";
import { redisDatabase } from "../helpers/redis-db.js";
import { handshake, openRawStream, openSession, startServer, type RawStream, type TestServer } from "../helpers/server.js";

const { url: DB_URL, available } = await redisDatabase(10, "instance liveness");
// Short bounds so a dead instance is noticed quickly; nothing below asserts a duration.
const FAST = { instanceHeartbeatMs: 50, instanceDeadAfterMs: 200 };

describe.runIf(available)("instance liveness", () => {
  let redis: Redis;
  beforeAll(() => {
    redis = new Redis(DB_URL);
  });
  afterAll(() => redis.disconnect());

  test("an instance is alive while it beats, dead once closed or once its key lapses; unknown ids are dead", async () => {
    const a = await createInstanceLiveness({ redis, prefix: "t1:", instanceId: "a", heartbeatMs: 50, deadAfterMs: 200 });
    const b = await createInstanceLiveness({ redis, prefix: "t1:", instanceId: "b", heartbeatMs: 50, deadAfterMs: 200 });
    expect(await a.dead(["a", "b", "never-seen"])).toEqual(new Set(["never-seen"]));
    await b.close();
    expect(await a.dead(["a", "b"])).toEqual(new Set(["b"]));
    // A frozen or SIGKILLed instance: its last beat, never refreshed.
    await redis.set("t1:instance:frozen", "1", "PX", 150);
    expect(await a.dead(["frozen"])).toEqual(new Set());
    await eventually(async () => (await a.dead(["frozen"])).has("frozen"), "the frozen instance's key to lapse");
    await a.close();
  });

  test("deadAfterMs must exceed heartbeatMs", async () => {
    await expect(createInstanceLiveness({ redis, prefix: "t2:", instanceId: "x", heartbeatMs: 1000, deadAfterMs: 1000 })).rejects.toThrow(TypeError);
  });
});

/** Opens a session on `a`, starts `commands` there, parks it, and resumes it on `b`: A keeps running them (a ghost). */
async function moveWhileRunning(a: TestServer, b: TestServer, probe: Probe, commands: { id: string; tool: string; value: Record<string, unknown> }[]) {
  const redis = new Redis(DB_URL);
  try {
    const tok = await a.token("carol");
    const { s: onA, sessionId } = await openSession(a.url, tok);
    for (const c of commands) onA.send({ case: "command", value: { id: c.id, tool: c.tool, payload: args(c.value as never) } });
    for (const c of commands) await probe.startedOnce(c.id);
    onA.close();
    await eventually(async () => (await redis.exists(`mcp:session:{${sessionId}}`)) === 1, "instance A to park the session");
    const onB = openRawStream(b.url);
    onB.send(handshake(tok, { resume: { sessionId, lastSeq: 1n } }));
    for (let m = await onB.next(); m !== undefined; m = await onB.next()) if (m.message.case === "handshakeResult") break;
    await eventually(async () => (await redis.hlen(`mcp:session:{${sessionId}}:remote`)) === commands.length, "A's ghost record");
    return { onB, sessionId };
  } finally {
    redis.disconnect();
  }
}

/** The next `n` Responses on `s`; then a Ping whose Pong must come with no further Response (exactly once). */
async function responses(s: RawStream, n: number): Promise<Response[]> {
  const got: Response[] = [];
  while (got.length < n) {
    const m = await s.next();
    if (m === undefined) throw new Error(`the stream ended after ${got.length} of ${n} Responses`);
    if (m.message.case === "response") got.push(m.message.value);
  }
  s.send({ case: "ping", value: { id: 99n } });
  for (let m = await s.next(); m !== undefined; m = await s.next()) {
    if (m.message.case === "response") throw new Error(`a second Response for ${m.message.value.commandId}`);
    if (m.message.case === "pong") break;
  }
  return got;
}

describe.runIf(available)("commands of a session that moved, when the instance running them dies or drains", () => {
  test("the instance running the command is declared dead: the holder answers it once, TRANSPORT connection_lost; its late Response is dropped", async () => {
    const toolsA = createTestTools();
    const [a, b] = await Promise.all([
      startServer({ store: DB_URL, tools: toolsA.tools, ...FAST }),
      startServer({ store: DB_URL, tools: createTestTools().tools, ...FAST }),
    ]);
    const redis = new Redis(DB_URL);
    try {
      const { onB, sessionId } = await moveWhileRunning(a, b, toolsA.probe, [{ id: "slow", tool: "gate", value: { key: "later" } }]);
      // A is alive: B waits. Then the record names an instance without a heartbeat — what B sees
      // when A is frozen or gone (the real SIGKILL is test/e2e/scaleout-lost.test.ts).
      await redis.hset(`mcp:session:{${sessionId}}:remote`, "slow", "frozen-instance");
      const [r] = await responses(onB, 1);
      expect(r?.commandId).toBe("slow");
      const e = errorOf(r!);
      expect([e?.kind, e?.code, e?.retryable]).toEqual([ErrorKind.TRANSPORT, "connection_lost", true]);
      expect(await redis.hexists(`mcp:session:{${sessionId}}:remote`, "slow")).toBe(0);
      // The frozen instance wakes up and finishes: its Response must not be a second answer.
      toolsA.probe.release("later");
      await eventually(() => toolsA.probe.finished.includes("slow"), "the command to finish on A");
      await a.server.close(); // flushes what A forwards
      expect(await redis.llen(`mcp:session:{${sessionId}}:fwd`)).toBe(0);
      onB.send({ case: "ping", value: { id: 5n } });
      for (let m = await onB.next(); m !== undefined; m = await onB.next()) {
        expect(m.message.case).not.toBe("response");
        if (m.message.case === "pong") break;
      }
      expect(toolsA.probe.started.filter((id) => id === "slow")).toHaveLength(1);
      onB.close();
    } finally {
      redis.disconnect();
      await Promise.all([a.close(), b.close()]);
    }
  });

  test("a graceful shutdown of A lets its ghost's short command finish (real output on B) and cancels the long one at the grace deadline, each answered once", async () => {
    const toolsA = createTestTools();
    const [a, b] = await Promise.all([
      startServer({ store: DB_URL, tools: toolsA.tools, ...FAST }),
      startServer({ store: DB_URL, tools: createTestTools().tools, ...FAST }),
    ]);
    try {
      const { onB } = await moveWhileRunning(a, b, toolsA.probe, [
        { id: "short", tool: "gate", value: { key: "short" } },
        { id: "long", tool: "gate", value: { key: "never" } },
      ]);
      const closing = a.server.close({ graceMs: 1500 });
      // Released during the grace: it completes normally.
      toolsA.probe.release("short");
      await closing;
      const got = await responses(onB, 2);
      const byId = new Map(got.map((r) => [r.commandId, r]));
      expect(outputOf(byId.get("short")!)).toEqual({ key: "short" });
      const e = errorOf(byId.get("long")!);
      expect([e?.kind, e?.code]).toEqual([ErrorKind.COMMAND, "cancelled"]);
      expect(toolsA.probe.aborted.get("long")).toBe("cancelled");
      onB.close();
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });
});
