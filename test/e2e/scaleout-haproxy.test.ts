/**
 * Scale-out without sticky sessions (issue 15): two real `mcp serve` processes on one private
 * Redis behind a real HAProxy (round-robin, h2c to the backends, no stickiness — the config is
 * docs/deploy/haproxy.cfg). A session resumes through the balancer on whichever instance is
 * left after its holder is killed (SIGKILL or SIGTERM) and receives every message it missed,
 * once, in order; watches and broadcast events reach sessions on both instances; a revoked
 * token is refused everywhere; a Redis restart under both instances loses no acknowledged update, and each instance reports not ready (/readyz 503) until Redis is back.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { ServerMessageSchema, type ServerMessage } from "../../gen/mcp/v1/session_pb.js";
import { createMcpClient } from "../../src/client/index.js";
import { mintToken } from "../../src/security/index.js";
import { args, openReader, outputOf, sessionIdOf, type SessionReader } from "../helpers/command-tools.js";
import { eventually } from "../helpers/eventually.js";
import { mcpFailure } from "../helpers/mcp-failure.js";
import { handshake } from "../helpers/server.js";
import { startCli, tempDir, type CliServer } from "./helpers.js";
import { freePort, haveProgram, startHaproxy, startRedis, type Proc } from "./scaleout-fixtures.js";

const SECRET = "scaleout-e2e-secret-0123456789-0123456789";
const ok = haveProgram("haproxy") && haveProgram("redis-server");
const token = (subject = "dana", roles = ["developer"], jti?: string) =>
  mintToken({ secret: SECRET, subject, roles, ttlSec: 600, issuer: "mcp", audience: "mcp", ...(jti === undefined ? {} : { jti }) });

describe.runIf(ok)("two mcp serve instances on one Redis behind HAProxy", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let redisPort: number;
  let redis: Proc;
  let raw: Redis;
  let haproxy: Proc;
  let lb: string;
  const ports: number[] = [];
  const instances: CliServer[] = [];

  async function startInstance(i: number): Promise<void> {
    instances[i] = await startCli(
      ["--port", String(ports[i]), "--store", `redis://127.0.0.1:${redisPort}`, "--jwt-secret", SECRET, "--resume-ttl-ms", "30000", "--shutdown-grace-ms", "5000"],
      { cwd: dir.path, timeoutMs: 30_000 },
    );
  }

  beforeAll(async () => {
    dir = await tempDir("mcp-scaleout-");
    redisPort = await freePort();
    redis = await startRedis(dir.path, redisPort);
    raw = new Redis(redisPort, "127.0.0.1", { maxRetriesPerRequest: 1 });
    raw.on("error", () => {});
    ports.push(await freePort(), await freePort());
    await Promise.all([startInstance(0), startInstance(1)]);
    const lbPort = await freePort();
    haproxy = await startHaproxy(dir.path, lbPort, ports);
    lb = `http://127.0.0.1:${lbPort}`;
    // Both backends in rotation: round-robin puts consecutive sessions on different instances.
    await eventually(async () => (await holdersOfNewSessions(4)).size === 2, "HAProxy to route to both instances", 15_000);
  }, 90_000);

  afterAll(async () => {
    await haproxy?.stop();
    await Promise.all(instances.map((i) => i?.close()));
    raw?.disconnect();
    await redis?.stop();
    await dir?.remove();
  });

  /** Which instance holds a session, asked of each instance directly with an admin token. */
  async function holderOf(sessionId: string): Promise<number> {
    const admin = await token("root", ["admin"]);
    for (let i = 0; i < instances.length; i++) {
      const c = createMcpClient({ baseUrl: instances[i]!.url, token: admin });
      const r = await c.admin.listSessions({}).catch(() => undefined);
      if (r?.sessions.some((s) => s.sessionId === sessionId)) return i;
    }
    return -1;
  }

  async function holdersOfNewSessions(n: number): Promise<Set<number>> {
    const seen = new Set<number>();
    for (let k = 0; k < n; k++) {
      const r = await openReader(lb, handshake(await token()));
      seen.add(await holderOf(sessionIdOf(r)));
      r.close();
    }
    return seen;
  }

  /** What a message is, for comparing a replay with what was sent the first time. */
  const shape = (m: ServerMessage) => [
    m.seq,
    m.message.case,
    m.message.case === "response" ? m.message.value.commandId : m.message.case === "contextSync" ? m.message.value.toVersion : "",
  ];

  /** Opens a session through the balancer, watches a context, runs three commands and has another client update the context. */
  async function busySession(contextId: string) {
    const tok = await token();
    const r = await openReader(lb, handshake(tok));
    const sessionId = sessionIdOf(r);
    r.send({ case: "sync", value: { contextId, knownVersion: 0n, watch: true } });
    await r.waitFor((m) => m.message.case === "contextSync", "the first ContextSync");
    const processed = r.messages.at(-1)!.seq; // what the client handled before it "lost" the rest
    for (const id of ["c1", "c2", "c3"]) r.send({ case: "command", value: { id, tool: "echo", payload: args({ text: id }) } });
    for (const id of ["c1", "c2", "c3"]) await r.response(id);
    const writer = createMcpClient({ baseUrl: lb, token: await token("erin") });
    const upd = await writer.contexts.updateContext({ contextId, ops: [{ op: { case: "put", value: { key: "k", value: { kind: { case: "stringValue", value: "v1" } } } } }] });
    await r.waitFor((m) => m.message.case === "contextSync" && m.message.value.toVersion === upd.version, "the pushed ContextSync");
    // The mirror is written asynchronously, one script call per burst: wait until it holds all of it.
    const last = r.messages.at(-1)!.seq;
    await eventually(async () => {
      const bins = await raw.lrangeBuffer(`mcp:session:{${sessionId}}:msgs`, -1, -1);
      return bins[0] !== undefined && fromBinary(ServerMessageSchema, bins[0]).seq === last;
    }, "the session's mirror in Redis to catch up");
    return { tok, r, sessionId, processed };
  }

  /** Resumes through the balancer and checks the replay is exactly what was missed, then that the session lives on. */
  async function resumeAndCheck(s: Awaited<ReturnType<typeof busySession>>, contextId: string): Promise<SessionReader> {
    const again = await openReader(lb, handshake(s.tok, { resume: { sessionId: s.sessionId, lastSeq: s.processed } }), {});
    const hr = await again.waitFor((m) => m.message.case === "handshakeResult" || m.message.case === "error", "the resumed HandshakeResult", 15_000);
    expect(hr.message.case === "handshakeResult" && hr.message.value).toMatchObject({ sessionId: s.sessionId, resumed: true });
    // Everything the old stream carried after `processed` (for SIGTERM, the server.shutdown event too).
    const missed = s.r.messages.filter((m) => m.seq > s.processed).map(shape);
    const replay = again.messages.filter((m) => m.seq > s.processed && m.seq < hr.seq).map(shape);
    expect(replay).toEqual(missed);
    again.send({ case: "command", value: { id: "c4", tool: "echo", payload: args({ text: "after" }) } });
    expect(outputOf(await again.response("c4"))).toEqual({ text: "after" });
    // The watch continues from the known version on the new instance.
    const lastSync = [...s.r.messages].reverse().find((m) => m.message.case === "contextSync");
    if (lastSync?.message.case !== "contextSync") throw new Error("the old stream carried no ContextSync");
    const knownVersion = lastSync.message.value.toVersion;
    again.send({ case: "sync", value: { contextId, knownVersion, watch: true } });
    await again.waitFor((m) => m.message.case === "contextSync" && m.message.value.fromVersion === knownVersion && !m.message.value.full, "a delta from the known version");
    return again;
  }

  test("SIGKILL of the instance holding a session: the client resumes through the balancer on the other and gets what it missed", async () => {
    const s = await busySession("killed");
    const holder = await holderOf(s.sessionId);
    expect(holder).toBeGreaterThanOrEqual(0);
    const exited = new Promise((resolve) => instances[holder]!.proc.once("exit", resolve));
    instances[holder]!.proc.kill("SIGKILL");
    await exited;
    s.r.close();
    const again = await resumeAndCheck(s, "killed");
    expect(await holderOf(s.sessionId)).toBe(1 - holder);
    again.close();
    await startInstance(holder);
  }, 60_000);

  test("SIGTERM of the instance holding a session: server.shutdown, exit 0, and the client resumes on the other", async () => {
    const s = await busySession("terminated");
    const holder = await holderOf(s.sessionId);
    const exited = new Promise<number | null>((resolve) => instances[holder]!.proc.once("exit", (code) => resolve(code)));
    instances[holder]!.proc.kill("SIGTERM");
    await s.r.waitFor((m) => m.message.case === "event" && m.message.value.type === "server.shutdown", "the server.shutdown event");
    await s.r.ended;
    expect(await exited).toBe(0);
    const ev = s.r.messages.find((m) => m.message.case === "event" && m.message.value.type === "server.shutdown")!;
    expect(ev.message.value).toMatchObject({ data: { resumable: true } });
    const again = await resumeAndCheck(s, "terminated");
    expect(await holderOf(s.sessionId)).toBe(1 - holder);
    again.close();
    await startInstance(holder);
  }, 60_000);

  test("watches and broadcast events reach sessions on both instances; a revoked token is refused on every instance", async () => {
    const tok = await token();
    const watchers = await Promise.all(instances.map((i) => openReader(i.url, handshake(tok))));
    for (const w of watchers) w.send({ case: "sync", value: { contextId: "shared", knownVersion: 0n, watch: true } });
    for (const w of watchers) await w.waitFor((m) => m.message.case === "contextSync", "the first ContextSync");
    const abort = new AbortController();
    const broadcast = createMcpClient({ baseUrl: instances[1]!.url, token: tok }).events.subscribe({ types: ["context.changed"] }, { signal: abort.signal });
    const firstBroadcast = broadcast[Symbol.asyncIterator]().next();
    // Subscribed once the server holds the stream open; give the subscription a round trip to land.
    await new Promise((r) => setTimeout(r, 300));
    const onA = createMcpClient({ baseUrl: instances[0]!.url, token: tok });
    const upd = await onA.contexts.updateContext({ contextId: "shared", ops: [{ op: { case: "put", value: { key: "x", value: { kind: { case: "numberValue", value: 1 } } } } }] });
    for (const w of watchers) await w.waitFor((m) => m.message.case === "contextSync" && m.message.value.toVersion === upd.version, "the change on both instances");
    const ev = await firstBroadcast;
    expect(ev.value).toMatchObject({ type: "context.changed", contextId: "shared" });
    abort.abort();
    for (const w of watchers) w.close();

    const revoked = await token("frank", ["developer"], "jti-revoked-1");
    const onB = await openReader(instances[1]!.url, handshake(revoked));
    sessionIdOf(onB);
    const admin = createMcpClient({ baseUrl: instances[0]!.url, token: await token("root", ["admin"]) });
    await admin.admin.revokeToken({ jti: "jti-revoked-1" });
    // The live session on B ends at once, and a fresh request on either instance is refused.
    const end = await onB.waitFor((m) => m.message.case === "error", "the revocation on B");
    expect(end.message.value).toMatchObject({ code: "token_revoked" });
    for (const url of [...instances.map((i) => i.url), lb]) {
      const err = await mcpFailure(createMcpClient({ baseUrl: url, token: revoked }).call("echo", { text: "x" }));
      expect([err.kind, err.code]).toEqual(["SECURITY", "token_revoked"]);
    }
  }, 60_000);

  test("Redis restarts under both instances: they recover by themselves and no acknowledged update is lost", async () => {
    const tok = await token();
    const viaLb = createMcpClient({ baseUrl: lb, token: tok });
    for (let i = 1; i <= 5; i++) {
      await viaLb.contexts.updateContext({ contextId: "durable", ops: [{ op: { case: "put", value: { key: `k${i}`, value: { kind: { case: "numberValue", value: i } } } } }] });
    }
    const watcher = await openReader(instances[1]!.url, handshake(tok));
    watcher.send({ case: "sync", value: { contextId: "durable", knownVersion: 5n, watch: true } });
    await watcher.waitFor((m) => m.message.case === "contextSync", "the watch to start");

    const ready = async (url: string) => (await fetch(`${url}/readyz`)).status;
    expect(await Promise.all(instances.map((i) => ready(i.url)))).toEqual([200, 200]);
    expect(await redis.stop()).toBe(0);
    // Both instances report themselves not ready while their shared store is gone (a balancer's
    // health check takes them out of rotation), and ready again once it is back.
    for (const inst of instances) await eventually(async () => (await ready(inst.url)) === 503, `${inst.url}/readyz to say 503`, 10_000);
    redis = await startRedis(dir.path, redisPort);
    for (const inst of instances) await eventually(async () => (await ready(inst.url)) === 200, `${inst.url}/readyz to say 200 again`, 20_000);

    // Each instance, asked directly, takes updates again without being restarted.
    let version = 5n;
    for (const inst of instances) {
      const c = createMcpClient({ baseUrl: inst.url, token: tok });
      await eventually(async () => {
        try {
          const r = await c.contexts.updateContext({ contextId: "durable", expectedVersion: version, ops: [{ op: { case: "put", value: { key: `after-${inst.url}`, value: { kind: { case: "boolValue", value: true } } } } }] });
          version = r.version;
          return true;
        } catch {
          return false; // Redis still coming back: the instance answers with an error, then recovers
        }
      }, `${inst.url} to write to the restarted Redis`, 20_000);
    }
    expect(version).toBe(7n);
    const snap = await createMcpClient({ baseUrl: instances[0]!.url, token: tok }).contexts.getContext({ contextId: "durable" });
    expect(snap.toVersion).toBe(7n);
    const keys = snap.entries.map((e) => e.key).sort();
    for (let i = 1; i <= 5; i++) expect(keys).toContain(`k${i}`);
    // The watcher on B heard the changes made after the restart, through A as well as B.
    await watcher.waitFor((m) => m.message.case === "contextSync" && m.message.value.toVersion === 7n, "version 7 on the watcher", 15_000);
    const versions = watcher.messages.flatMap((m) => (m.message.case === "contextSync" ? [m.message.value.toVersion] : []));
    expect(versions).toEqual([...versions].sort((a, b) => (a < b ? -1 : 1)));
    watcher.close();
  }, 90_000);
});
