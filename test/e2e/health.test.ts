/**
 * Health (src/server/health.ts) as balancers and orchestrators see it: grpc.health.v1 Check and
 * Watch from grpc-js (loading proto-grpc/grpc/health/v1/health.proto, as any grpc stack would),
 * `GET /healthz` and `/readyz` from fetch, against a real server whose Redis store is a
 * redis-server this test starts, stops and restarts on a port of its own — and while the server
 * shuts down.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { eventually } from "../helpers/eventually.js";
import { startServer, type TestServer } from "../helpers/server.js";
import { REPO, run, tempDir } from "./helpers.js";

const REDIS_SERVER = "/usr/bin/redis-server";
if (!existsSync(REDIS_SERVER)) {
  if (process.env["CI"] !== undefined && process.env["CI"] !== "") throw new Error(`${REDIS_SERVER} is missing (CI installs redis-server; this must not be skipped in CI)`);
  console.warn(`\n!!! SKIPPING parts of test/e2e/health.test.ts — ${REDIS_SERVER} is missing\n`);
}

type Status = "UNKNOWN" | "SERVING" | "NOT_SERVING" | "SERVICE_UNKNOWN";
interface HealthClient extends grpc.Client {
  check(req: { service: string }, cb: (err: grpc.ServiceError | null, res?: { status: Status }) => void): void;
  watch(req: { service: string }): grpc.ClientReadableStream<{ status: Status }>;
}
const definition = protoLoader.loadSync(join(REPO, "proto-grpc/grpc/health/v1/health.proto"), { enums: String });
const HealthCtor = (grpc.loadPackageDefinition(definition) as unknown as { grpc: { health: { v1: { Health: new (a: string, c: grpc.ChannelCredentials) => HealthClient } } } }).grpc.health.v1.Health;

function healthClient(url: string): HealthClient {
  return new HealthCtor(new URL(url).host, grpc.credentials.createInsecure());
}

function check(client: HealthClient, service: string): Promise<{ status?: Status; code?: grpc.status; details?: string }> {
  return new Promise((resolve) =>
    client.check({ service }, (err, res) => resolve(err === null ? { status: res!.status } : { code: err.code, details: err.details })),
  );
}

/** A Watch whose statuses accumulate in `seen`. */
function watch(client: HealthClient, service: string): { seen: Status[]; readonly ended: boolean; cancel(): void } {
  const seen: Status[] = [];
  let ended = false;
  const call = client.watch({ service });
  call.on("data", (r: { status: Status }) => seen.push(r.status));
  call.on("error", () => (ended = true));
  call.on("end", () => (ended = true));
  return {
    seen,
    get ended() {
      return ended;
    },
    cancel: () => call.cancel(),
  };
}

async function http(url: string, path: string): Promise<{ status: number; text: string }> {
  const r = await fetch(new URL(path, url));
  return { status: r.status, text: await r.text() };
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** A redis-server of this test's own, on `port`, in `dir`. */
async function startRedis(port: number, dir: string): Promise<ChildProcess> {
  const proc = spawn(REDIS_SERVER, ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir], { stdio: "ignore" });
  await eventually(async () => (await run("redis-cli", ["-p", String(port), "ping"], { timeoutMs: 2_000 }).catch(() => undefined))?.stdout.trim() === "PONG", `redis-server on port ${port}`);
  return proc;
}

async function stopRedis(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null) return;
  const exited = new Promise((r) => proc.once("exit", r));
  proc.kill("SIGKILL");
  await exited;
}

describe("health with the store up, down and back", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let port: number;
  let redis: ChildProcess | undefined;
  let s: TestServer;
  let client: HealthClient;

  beforeAll(async () => {
    if (!existsSync(REDIS_SERVER)) return;
    dir = await tempDir("mcp-health-redis-");
    port = await freePort();
    redis = await startRedis(port, dir.path);
    s = await startServer({ store: `redis://127.0.0.1:${port}`, healthWatchIntervalMs: 50 });
    client = healthClient(s.url);
  });
  afterAll(async () => {
    client?.close();
    await s?.close();
    if (redis !== undefined) await stopRedis(redis);
    await dir?.remove();
  });

  test.skipIf(!existsSync(REDIS_SERVER))("Check, Watch, /healthz and /readyz follow the Redis store; Watch sees both transitions", async () => {
    expect(await check(client, "")).toEqual({ status: "SERVING" });
    expect(await check(client, "mcp.v1.CommandService")).toEqual({ status: "SERVING" });
    expect(await http(s.url, "/readyz")).toEqual({ status: 200, text: "ready\n" });
    expect(await http(s.url, "/healthz")).toEqual({ status: 200, text: "ok\n" });
    const overall = watch(client, "");
    const perService = watch(client, "mcp.v1.ContextService");
    await eventually(() => overall.seen.length === 1 && perService.seen.length === 1, "the first Watch status");
    expect(overall.seen).toEqual(["SERVING"]);

    await stopRedis(redis!);
    await eventually(() => overall.seen.length === 2 && perService.seen.length === 2, "Watch to report the store down");
    expect(overall.seen).toEqual(["SERVING", "NOT_SERVING"]);
    expect(perService.seen).toEqual(["SERVING", "NOT_SERVING"]);
    expect(await check(client, "")).toEqual({ status: "NOT_SERVING" });
    const down = await http(s.url, "/readyz");
    expect(down.status).toBe(503);
    expect(down.text).toMatch(/^not ready: the context store is unreachable: /);
    // Liveness is the process answering, not its dependencies: restarting it would not help.
    expect(await http(s.url, "/healthz")).toEqual({ status: 200, text: "ok\n" });

    redis = await startRedis(port, dir.path);
    await eventually(() => overall.seen.length === 3 && perService.seen.length === 3, "Watch to report the store back", 15_000);
    expect(overall.seen).toEqual(["SERVING", "NOT_SERVING", "SERVING"]);
    expect(perService.seen).toEqual(["SERVING", "NOT_SERVING", "SERVING"]);
    expect(await check(client, "")).toEqual({ status: "SERVING" });
    expect(await http(s.url, "/readyz")).toEqual({ status: 200, text: "ready\n" });
    overall.cancel();
    perService.cancel();
  }, 60_000);
});

describe("health of a memory-store server", () => {
  let s: TestServer;
  let client: HealthClient;
  beforeAll(async () => {
    s = await startServer({ healthWatchIntervalMs: 50 });
    client = healthClient(s.url);
  });
  afterAll(async () => {
    client?.close();
    await s?.close();
  });

  test("an unknown service: Check answers NOT_FOUND, Watch SERVICE_UNKNOWN and stays open", async () => {
    expect(await check(client, "mcp.v1.NoSuchService")).toEqual({ code: grpc.status.NOT_FOUND, details: 'unknown service "mcp.v1.NoSuchService"' });
    const w = watch(client, "mcp.v1.NoSuchService");
    await eventually(() => w.seen.length === 1, "the SERVICE_UNKNOWN status");
    expect(w.seen).toEqual(["SERVICE_UNKNOWN"]);
    w.cancel();
  });

  test("every served service (reflection's list) is known and SERVING; health needs no token", async () => {
    const names = ["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection", "mcp.v1.SessionService", "mcp.v1.CommandService", "mcp.v1.ContextService", "mcp.v1.EventService", "mcp.v1.AdminService"];
    for (const n of names) expect(await check(client, n), n).toEqual({ status: "SERVING" });
  });

  test("/healthz and /readyz answer GET and HEAD only", async () => {
    const head = await fetch(new URL("/readyz", s.url), { method: "HEAD" });
    expect(head.status).toBe(200);
    const post = await fetch(new URL("/healthz", s.url), { method: "POST" });
    expect(post.status).toBe(405);
    expect(post.headers.get("allow")).toBe("GET, HEAD");
  });

  test("once shutdown begins (core.close), Check, Watch and /readyz say NOT_SERVING; /healthz stays ok", async () => {
    const w = watch(client, "");
    await eventually(() => w.seen.length === 1, "the first Watch status");
    // server.close() runs core.close() first; the listener is closed after it, so between the
    // two (the drain window a graceful shutdown widens) balancers must already see NOT_SERVING.
    await s.server.core.close();
    expect(s.server.core.draining).toBe(true);
    expect(await check(client, "")).toEqual({ status: "NOT_SERVING" });
    expect(await http(s.url, "/readyz")).toEqual({ status: 503, text: "not ready: the server is shutting down\n" });
    expect(await http(s.url, "/healthz")).toEqual({ status: 200, text: "ok\n" });
    await eventually(() => w.seen.length === 2, "Watch to report the shutdown");
    expect(w.seen).toEqual(["SERVING", "NOT_SERVING"]);
    // The Watch is left open: closing the server must end it rather than wait for it.
    await s.server.close();
    await eventually(() => w.ended, "the Watch to end when the server closes");
  });
});
