/**
 * Storage through real server processes (PROTOCOL.md §8): an acknowledged update survives a
 * SIGKILL of `mcp serve` on SQLite, and two `mcp serve` processes sharing one Redis see each
 * other's changes (a watcher on B hears an update made through A).
 */
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { fromJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { createMcpClient } from "../../src/client/index.js";
import { mintToken } from "../../src/security/index.js";
import { ErrorKind } from "../../gen/mcp/v1/error_pb.js";
import { createTestTools } from "../helpers/command-tools.js";
import { eventually } from "../helpers/eventually.js";
import { handshake, openRawStream, openSession, startServer } from "../helpers/server.js";
import { startCli, tempDir } from "./helpers.js";
import { redisDatabase } from "../helpers/redis-db.js";

const SECRET = "e2e-stores-secret-0123456789-abcdefgh";
const token = () => mintToken({ secret: SECRET, subject: "carol", roles: ["developer"], ttlSec: 600 });
const put = (key: string, json: unknown) => ({ op: { case: "put" as const, value: { key, value: fromJson(ValueSchema, json as never) } } });

describe("SQLite durability", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  beforeAll(async () => {
    dir = await tempDir();
  });
  afterAll(() => dir.remove());

  test("an acknowledged update is there after SIGKILL and a restart on the same file", async () => {
    const args = ["--port", "0", "--store", `sqlite:${join(dir.path, "ctx.db")}`, "--jwt-secret", SECRET, "--state-dir", dir.path];
    const first = await startCli(args);
    const client = createMcpClient({ baseUrl: first.url, token: await token() });
    let acked = 0n;
    for (let i = 1; i <= 20; i++) {
      const r = await client.contexts.updateContext({ contextId: "durable", ops: [put("n", i), put(`k${i}`, { i })] });
      acked = r.version;
    }
    expect(acked).toBe(20n);
    first.proc.kill("SIGKILL");
    expect(await first.close()).toBeNull(); // killed by the signal, no exit code

    const second = await startCli(args);
    try {
      const again = createMcpClient({ baseUrl: second.url, token: await token() });
      const snap = await again.contexts.getContext({ contextId: "durable" });
      expect(snap.toVersion).toBe(20n);
      const n = snap.entries.find((e) => e.key === "n");
      expect(n?.value?.kind).toEqual({ case: "numberValue", value: 20 });
      expect(n?.version).toBe(20n);
      expect(n?.updatedBy).toBe("carol");
      expect(snap.entries.filter((e) => e.key.startsWith("k"))).toHaveLength(20);
    } finally {
      await second.close();
    }
  });
});

const { url: DB_URL, available: haveRedis } = await redisDatabase(5, "the two-instance Redis test");

describe.runIf(haveRedis)("two server processes on one Redis", () => {
  test("an update through instance A reaches a watcher connected to instance B", async () => {
    const args = ["--port", "0", "--store", DB_URL, "--jwt-secret", SECRET];
    const [a, b] = await Promise.all([startCli(args), startCli(args)]);
    try {
      const tok = await token();
      const onA = createMcpClient({ baseUrl: a.url, token: tok });
      const onB = createMcpClient({ baseUrl: b.url, token: tok });
      const id = `shared-${randomUUID()}`;
      const abort = new AbortController();
      const seen: bigint[] = [];
      const watching = (async () => {
        for await (const s of onB.contexts.watchContext({ contextId: id, knownVersion: 0n }, { signal: abort.signal })) {
          seen.push(s.toVersion);
          if (s.toVersion === 0n) {
            // The watch is live on B: now write through A.
            for (let i = 1; i <= 5; i++) await onA.contexts.updateContext({ contextId: id, ops: [put("step", i)] });
          }
          if (s.toVersion === 5n) {
            expect(s.full).toBe(false);
            expect(s.entries.map((e) => [e.key, e.value?.kind.value])).toEqual([["step", 5]]);
            break;
          }
        }
      })();
      await watching;
      abort.abort();
      expect(seen).toEqual([0n, 1n, 2n, 3n, 4n, 5n]);
      // And the other way round, through plain reads: B sees A's state.
      expect((await onB.contexts.getContext({ contextId: id })).toVersion).toBe(5n);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  test("a session resumes on instance B after its stream to A went away; a foreign subject cannot move it", async () => {
    const args = ["--port", "0", "--store", DB_URL, "--jwt-secret", SECRET];
    const [a, b] = await Promise.all([startCli(args), startCli(args)]);
    const redis = new Redis(DB_URL);
    try {
      const tok = await token();
      const { s: onA, sessionId } = await openSession(a.url, tok);
      onA.send({ case: "ping", value: { id: 1n } });
      expect((await onA.next())?.seq).toBe(2n);
      // Three commands, then the client finishes sending and goes away without reading their Responses.
      for (const id of ["c1", "c2", "c3"]) {
        onA.send({ case: "command", value: { id, tool: "echo", payload: { case: "arguments", value: { text: id } } } });
      }
      onA.end();
      await eventually(async () => (await redis.exists(`mcp:session:{${sessionId}}`)) === 1, "instance A to park the session");

      // Another subject's resume on B is refused and moves nothing.
      const mallory = openRawStream(b.url);
      mallory.send(handshake(await mintToken({ secret: SECRET, subject: "mallory", roles: ["developer"], ttlSec: 600 }), { resume: { sessionId, lastSeq: 2n } }));
      const refused = await mallory.rest();
      expect(refused.map((m) => m.message.case === "error" && m.message.value.code)).toEqual(["permission_denied"]);
      expect(await redis.exists(`mcp:session:{${sessionId}}`)).toBe(1);

      // The owner resumes on B: everything after seq 2 exactly once, in order, then live.
      const onB = openRawStream(b.url);
      onB.send(handshake(tok, { resume: { sessionId, lastSeq: 2n } }));
      const got: [bigint, string, string][] = [];
      for (;;) {
        const m = await onB.next();
        if (m === undefined) throw new Error(`the stream ended early: ${String(onB.failure)}`);
        const c = m.message;
        got.push([m.seq, c.case ?? "", c.case === "response" ? c.value.commandId : c.case === "handshakeResult" ? String(c.value.resumed) : ""]);
        if (c.case === "handshakeResult") break;
      }
      expect(got).toEqual([
        [3n, "response", "c1"],
        [4n, "response", "c2"],
        [5n, "response", "c3"],
        [6n, "handshakeResult", "true"],
      ]);
      onB.send({ case: "command", value: { id: "c4", tool: "echo", payload: { case: "arguments", value: { text: "on B" } } } });
      const live = await onB.next();
      expect([live?.seq, live?.message.case === "response" && live.message.value.commandId]).toEqual([7n, "c4"]);
      onB.close();

      // B parked it in turn when that stream went away: it moves back to A the same way.
      await eventually(async () => (await redis.exists(`mcp:session:{${sessionId}}`)) === 1, "instance B to park the session");
      const back = openRawStream(a.url);
      back.send(handshake(tok, { resume: { sessionId, lastSeq: 7n } }));
      const first = await back.next();
      expect([first?.seq, first?.message.case === "handshakeResult" && first.message.value.resumed]).toEqual([8n, true]);
      back.close();
    } finally {
      redis.disconnect();
      await Promise.all([a.close(), b.close()]);
    }
  });

  test("a command still running on A when B takes the session over keeps running there: a Cancel sent to B stops it, answered exactly once on B", async () => {
    const toolsA = createTestTools();
    const [a, b] = await Promise.all([
      startServer({ store: DB_URL, tools: toolsA.tools, jwtSecret: SECRET }),
      startServer({ store: DB_URL, tools: createTestTools().tools, jwtSecret: SECRET }),
    ]);
    const redis = new Redis(DB_URL);
    try {
      const tok = await token();
      const { s: onA, sessionId } = await openSession(a.url, tok);
      onA.send({ case: "command", value: { id: "stuck", tool: "gate", payload: { case: "arguments", value: { key: "never-opened" } } } });
      await toolsA.probe.startedOnce("stuck");
      // The client goes away (cancel): a half-close would instead keep the stream open until the
      // command answers (half-close = drain, docs/streams.md), and nothing would be parked.
      onA.close();
      await eventually(async () => (await redis.exists(`mcp:session:{${sessionId}}`)) === 1, "instance A to park the session");
      const onB = openRawStream(b.url);
      onB.send(handshake(tok, { resume: { sessionId, lastSeq: 1n } }));
      const replay = [];
      for (let m = await onB.next(); m !== undefined; m = await onB.next()) {
        replay.push(m);
        if (m.message.case === "handshakeResult") break;
      }
      // Nothing was answered yet: the command runs on on A (a ghost of the session, docs/deploy.md
      // "Commands after a move"), so B has no Response to replay.
      expect(replay.filter((m) => m.message.case === "response")).toEqual([]);
      expect(replay.at(-1)?.message.case === "handshakeResult" && replay.at(-1)?.seq).toBe(2n);
      onB.send({ case: "cancel", value: { commandId: "stuck" } });
      // The handler on A saw its signal fire: the Cancel crossed instances, it stopped, it did not leak.
      expect(await toolsA.probe.abortedWith("stuck")).toBe("cancelled");
      const answered = [];
      for (let m = await onB.next(); m !== undefined; m = await onB.next()) {
        if (m.message.case === "response") answered.push(m.message.value);
        if (answered.length === 1) break;
      }
      expect(answered.map((r) => [r.commandId, r.result.case === "error" && [r.result.value.kind, r.result.value.code]])).toEqual([
        ["stuck", [ErrorKind.COMMAND, "cancelled"]],
      ]);
      // Exactly once: a ping after it gets its Pong with no second Response in between.
      onB.send({ case: "ping", value: { id: 7n } });
      for (let m = await onB.next(); m !== undefined; m = await onB.next()) {
        expect(m.message.case).not.toBe("response");
        if (m.message.case === "pong") break;
      }
      onB.close();
    } finally {
      redis.disconnect();
      await Promise.all([a.close(), b.close()]);
    }
  });

  test("revoking a token through instance A ends its live stream on instance B", async () => {
    const [a, b] = await Promise.all([startServer({ store: DB_URL, jwtSecret: SECRET }), startServer({ store: DB_URL, jwtSecret: SECRET })]);
    try {
      const jti = `jti-${randomUUID()}`;
      const onB = openRawStream(b.url);
      onB.send(handshake(await mintToken({ secret: SECRET, subject: "carol", roles: ["developer"], ttlSec: 600, jti })));
      expect((await onB.next())?.message.case).toBe("handshakeResult");
      const admin = createMcpClient({ baseUrl: a.url, token: await mintToken({ secret: SECRET, subject: "root", roles: ["admin"], ttlSec: 600 }) });
      await admin.admin.revokeToken({ jti });
      const rest = await onB.rest();
      const last = rest.at(-1);
      expect(last?.message.case === "error" && [last.message.value.kind, last.message.value.code]).toEqual([ErrorKind.SECURITY, "token_revoked"]);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });
});
