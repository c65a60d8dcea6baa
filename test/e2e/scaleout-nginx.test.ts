/**
 * Scale-out behind nginx (issue 15): two real `mcp serve` processes on one private Redis behind a
 * real nginx (round-robin, grpc_pass h2c to the backends, no stickiness — the config is
 * docs/deploy/nginx.conf). The reconnecting TS client's session stream passes through nginx and
 * resumes on the other instance after its holder is SIGKILLed; unary Execute passes with both
 * protocols and a message above nginx's default body limit; with both backends down the client
 * gets `TRANSPORT connection_lost`, retryable.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import type { ContextSync } from "../../gen/mcp/v1/context_pb.js";
import { ServerMessageSchema } from "../../gen/mcp/v1/session_pb.js";
import { createMcpClient, type SessionStateChange } from "../../src/client/index.js";
import { eventually } from "../helpers/eventually.js";
import { mcpFailure } from "../helpers/mcp-failure.js";
import { haveProgram, startScaleout, type Scaleout } from "./scaleout-fixtures.js";

const SECRET = "scaleout-nginx-secret-0123456789-0123456789";
const ok = haveProgram("nginx") && haveProgram("redis-server");
const put = (key: string, v: number) => ({ op: { case: "put" as const, value: { key, value: { kind: { case: "numberValue" as const, value: v } } } } });

describe.runIf(ok)("two mcp serve instances on one Redis behind nginx", () => {
  let x: Scaleout;
  beforeAll(async () => {
    x = await startScaleout({ secret: SECRET, balancer: "nginx", args: ["--resume-ttl-ms", "30000", "--shutdown-grace-ms", "5000"] });
    // Both backends in rotation: round-robin puts consecutive sessions on different instances.
    const client = createMcpClient({ baseUrl: x.lb, token: await x.token() });
    await eventually(
      async () => {
        const seen = new Set<number>();
        for (let k = 0; k < 4; k++) {
          const s = await client.connect();
          seen.add(await x.holderOf(s.sessionId));
          s.close();
        }
        return seen.size === 2;
      },
      "nginx to route sessions to both instances",
      15_000,
    );
    client.close();
  }, 90_000);
  afterAll(async () => {
    await x?.stop();
  });

  test("SIGKILL of the instance holding a session: the client resumes through nginx on the other; every call settles once; the watch continues", async () => {
    const contextId = "nginx-killed";
    const changes: SessionStateChange[] = [];
    const client = createMcpClient({ baseUrl: x.lb, token: await x.token() });
    const s = await client.connect({ reconnect: { initialDelayMs: 20, maxDelayMs: 200, maxAttempts: 40 }, onStateChange: (c) => changes.push(c) });
    const writer = createMcpClient({ baseUrl: x.lb, token: await x.token("erin") });
    await writer.contexts.updateContext({ contextId, ops: [put("v", 1)] });
    const syncs: ContextSync[] = [];
    void (async () => {
      for await (const c of s.contextSyncs()) syncs.push(c);
    })();
    await s.sync(contextId, 0n, true);
    const holder = await x.holderOf(s.sessionId);
    expect(holder).toBeGreaterThanOrEqual(0);
    const settled = new Map<string, number>();
    const calls: Promise<void>[] = [];
    const callOne = (id: string) =>
      calls.push(
        s.call("echo", { text: id }, { id }).then((out) => {
          expect(out).toEqual({ text: id });
          settled.set(id, (settled.get(id) ?? 0) + 1);
        }),
      );
    for (let i = 0; i < 20; i++) callOne(`before-${i}`);
    await Promise.all(calls);
    // The mirror is written asynchronously: a SIGKILL before it holds the tail would lose that
    // tail (the other instance could not replay it). Wait until it holds what the client saw.
    const raw = new Redis(x.redisPort, "127.0.0.1", { maxRetriesPerRequest: 1 });
    await eventually(async () => {
      const bins = await raw.lrangeBuffer(`mcp:session:{${s.sessionId}}:msgs`, -1, -1);
      return bins[0] !== undefined && fromBinary(ServerMessageSchema, bins[0]).seq >= s.lastSeq;
    }, "the session's mirror in Redis to catch up");
    raw.disconnect();
    const exited = new Promise((r) => x.instances[holder]!.proc.once("exit", r));
    x.instances[holder]!.proc.kill("SIGKILL");
    for (let i = 0; i < 20; i++) callOne(`during-${i}`);
    await exited;
    // Written through nginx while the client was away: nginx skips the dead backend.
    for (let v = 2; v <= 4; v++) await writer.contexts.updateContext({ contextId, ops: [put("v", v)] });
    await Promise.all(calls);
    expect([...settled.values()].every((n) => n === 1)).toBe(true);
    expect(settled.size).toBe(40);
    await eventually(() => syncs.at(-1)?.toVersion === 4n, "version 4 on the watch", 15_000);
    let at = syncs[0]!.toVersion;
    for (const c of syncs.slice(1)) {
      expect(c.full || c.fromVersion === at, `delta ${c.fromVersion}→${c.toVersion} after ${at}`).toBe(true);
      at = c.toVersion;
    }
    expect(changes.some((c) => c.state === "open" && c.resumed)).toBe(true);
    expect(await x.holderOf(s.sessionId)).toBe(1 - holder);
    s.close();
    client.close();
    writer.close();
    await x.startInstance(holder);
  }, 90_000);

  for (const protocol of ["connect", "grpc"] as const) {
    test(`unary Execute through nginx (${protocol}), also with a 2 MiB message (above nginx's default 1 MiB body limit)`, async () => {
      const client = createMcpClient({ baseUrl: x.lb, token: await x.token(), protocol });
      expect(await client.call("echo", { text: "hi" })).toEqual({ text: "hi" });
      const big = "x".repeat(2 * 1024 * 1024);
      expect(await client.call("echo", { text: big })).toEqual({ text: big });
      client.close();
    }, 30_000);
  }

  test("both backends down: unary Execute and connect() through nginx fail with TRANSPORT connection_lost, retryable", async () => {
    await Promise.all(x.instances.map((i) => i.close()));
    for (const protocol of ["connect", "grpc"] as const) {
      const client = createMcpClient({ baseUrl: x.lb, token: await x.token(), protocol });
      const err = await mcpFailure(client.call("echo", { text: "x" }));
      expect([err.kind, err.code, err.retryable], `${protocol}: ${err.message}`).toEqual(["TRANSPORT", "connection_lost", true]);
      const refused = await mcpFailure(client.connect({ reconnect: { maxAttempts: 1 } }));
      expect([refused.kind, refused.code, refused.retryable], refused.message).toEqual(["TRANSPORT", "connection_lost", true]);
      client.close();
    }
  }, 30_000);
});
