/**
 * Scale figures (issue 18): idle sessions and watchers, the server in a child process
 * (bench/server.ts, forked with --expose-gc so memory is read after a full collection).
 *
 * (i) N idle authenticated sessions on one instance: server RSS and heap per session and the time
 *     to open them all — with sessions sharing connections (the client's default, 100 per
 *     connection), all on one connection, and one connection each — beside raw node:http2 holding
 *     N idle connections with one open stream each (the ceiling for "one connection each").
 * (ii) W watchers of one context, each its own session (shared connections): the time from an
 *     update's send to the last watcher's receipt, p50/p99 over U updates, after 10 warm-up
 *     updates that are not counted (the first ones run cold code: 30–60 ms each, measured).
 *
 *   npm run bench:scale                                      # N 10000, W 1000,10000, U 200
 *   npm run bench:scale -- --sessions 200 --watchers 50 --updates 5     # a quick check
 *   npm run bench:scale -- --only watchers --from sources    # one part; server and client from src/ via tsx
 *
 * The server and this script's client run from the build by default (`--from build`: dist/, what
 * `mcp serve` and an application importing the package run; this script compiles it first,
 * incrementally). Under tsx every function also gets its `name` defined
 * at run time, which turns each closure's properties into a dictionary: ~8 KB more per session.
 * `BENCH_SERVER_PROF=scale` writes the server's CPU profile to bench/.prof/, `BENCH_CLIENT_PROF=1`
 * this process's over the watchers' updates. The watchers rows also give the CPU time per update
 * of both processes: on a busy machine a steadier figure than the latencies.
 *
 * Memory needs no quiet machine; the times do (bench/README.md "Scale").
 */
import { execFileSync } from "node:child_process";
import { createRequire } from "node:module";
import { connect as h2connect, type ClientHttp2Session } from "node:http2";
import type { McpClient, McpSession } from "../src/client/index.js";
import { mintToken } from "../src/security/index.js";
import { startChild as startLibChild, type Child } from "./lib/child.js";

/** Also in bench/server.ts. */
const BENCH_SECRET = "bench-secret-0123456789-0123456789-abcdef";

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}
const N = Number(arg("sessions", "10000"));
const WATCHERS = arg("watchers", "1000,10000").split(",").map(Number).filter((n) => n > 0);
/** 200: with fewer than 100 samples a p99 is just the maximum. */
const UPDATES = Number(arg("updates", "200"));
/** Updates sent and waited for before the timed ones (JIT warm-up of every watcher's path). */
const WARMUP_UPDATES = 10;
/** Sessions opened at once while opening N (a client ramping up, not N handshakes in one tick). */
const OPEN_CONCURRENCY = 256;
const ONLY = arg("only", "all");
const FROM = arg("from", "build");
if (FROM !== "build" && FROM !== "sources") throw new TypeError(`--from must be build or sources, got ${FROM}`);
if (FROM === "build") execFileSync(process.execPath, [createRequire(import.meta.url).resolve("typescript/bin/tsc"), "-p", "tsconfig.build.json"], { stdio: "inherit" });
// The client (the watchers, the writer) runs from the same code as the server: the build is what
// an application importing the package runs.
const { createMcpClient } = (
  FROM === "build" ? await import("../dist/src/client/index.js" as string) : await import("../src/client/index.js")
) as typeof import("../src/client/index.js");

interface Memory {
  rss: number;
  heapUsed: number;
  external: number;
}

function startChild(kind: string): Promise<Child> {
  return startLibChild(kind, [], { execArgv: ["--expose-gc"], env: { ...process.env, BENCH_SERVER_FROM: FROM } });
}

/** Runs `open(i)` for i in [0, n) with at most `concurrency` pending at once. */
async function openAll<T>(n: number, concurrency: number, open: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array<T>(n);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < n; i = next++) out[i] = await open(i);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
  return out;
}

const settle = () => new Promise((r) => setTimeout(r, 500));

interface IdleRow {
  name: string;
  connections: number;
  openMs: number;
  rssPer: number;
  heapPer: number;
}

/** Opens n sessions (or raw streams), measures the server, closes them. */
async function idleRow(name: string, kind: "raw" | "scale", n: number, open: (port: number) => Promise<{ connections: () => number; close: () => void }>): Promise<IdleRow> {
  const child = await startChild(kind);
  try {
    const before = await child.ask<Memory>("gc");
    const t0 = performance.now();
    const held = await open(child.port);
    const openMs = performance.now() - t0;
    await settle();
    const after = await child.ask<Memory>("gc");
    const connections = held.connections();
    held.close();
    return {
      name,
      connections,
      openMs,
      rssPer: (after.rss - before.rss) / n,
      heapPer: (after.heapUsed + after.external - before.heapUsed - before.external) / n,
    };
  } finally {
    await child.stop();
  }
}

/** N raw node:http2 connections, each with one open (idle) stream answered with headers. */
async function rawIdle(port: number, n: number) {
  const sessions: ClientHttp2Session[] = [];
  await openAll(n, OPEN_CONCURRENCY, async () => {
    const s = h2connect(`http://127.0.0.1:${port}`);
    s.on("error", () => {});
    sessions.push(s);
    const stream = s.request({ ":method": "POST", ":path": "/bench.v1.EchoService/EchoStream", "content-type": "application/grpc+proto", te: "trailers" });
    stream.on("error", () => {});
    await new Promise<void>((resolve) => stream.once("response", () => resolve()));
  });
  return { connections: () => sessions.length, close: () => sessions.forEach((s) => s.destroy()) };
}

async function mcpIdle(port: number, n: number, token: string, maxSessionsPerConnection: number) {
  const client = createMcpClient({ baseUrl: `http://127.0.0.1:${port}`, token, maxSessionsPerConnection });
  // Heartbeats off: an idle session here is one that sends nothing.
  await openAll(n, OPEN_CONCURRENCY, () => client.connect({ heartbeatIntervalMs: 0, reconnect: false }));
  return { connections: () => client.sessionConnections, close: () => client.close() };
}

interface WatchRow {
  watchers: number;
  p50: number;
  p99: number;
  max: number;
  /** CPU time per update, ms: this process (the writer and every watcher) and the server's. */
  clientCpu: number;
  serverCpu: number;
}

interface CpuUsage {
  user: number;
  system: number;
}
const cpuMs = (a: CpuUsage, b: CpuUsage) => (b.user + b.system - a.user - a.system) / 1000;

/** `BENCH_CLIENT_PROF=1`: this process's CPU profile over the updates only, into bench/.prof/. */
async function clientProfile(): Promise<(() => Promise<void>) | undefined> {
  if (process.env["BENCH_CLIENT_PROF"] !== "1") return undefined;
  const { Session } = await import("node:inspector/promises");
  const { mkdirSync, writeFileSync } = await import("node:fs");
  const session = new Session();
  session.connect();
  await session.post("Profiler.enable");
  await session.post("Profiler.start");
  return async () => {
    const { profile } = await session.post("Profiler.stop");
    mkdirSync("bench/.prof", { recursive: true });
    writeFileSync(`bench/.prof/client-watchers-${Date.now()}.cpuprofile`, JSON.stringify(profile));
    session.disconnect();
  };
}

/** W watcher sessions of one context; U updates one after another, each timed to its last receipt. */
async function watchRow(w: number, token: string): Promise<WatchRow> {
  const child = await startChild("scale");
  const client: McpClient = createMcpClient({ baseUrl: `http://127.0.0.1:${child.port}`, token });
  try {
    const writer = await client.connect();
    const ctx = `bench-watch-${w}`;
    await writer.update({ contextId: ctx, ops: [{ op: { case: "put", value: { key: "k", value: { kind: { case: "numberValue", value: 0 } } } } }] });
    let received = 0;
    let waiting: (() => void) | undefined;
    let target = 0n;
    const watchers: McpSession[] = await openAll(w, OPEN_CONCURRENCY, () => client.connect({ heartbeatIntervalMs: 0 }));
    await openAll(w, OPEN_CONCURRENCY, async (i) => {
      const s = watchers[i]!;
      const synced = await s.sync(ctx, 0n, true);
      void (async () => {
        for await (const sync of s.contextSyncs()) {
          if (sync.toVersion === target && ++received === w) waiting?.();
        }
      })();
      return synced;
    });
    /** Sends update `u` (context version u + 1: the first put above made version 1); resolves with the time to its last receipt, ms. */
    const timedUpdate = async (u: number): Promise<number> => {
      received = 0;
      const done = new Promise<void>((resolve) => (waiting = resolve));
      const t0 = performance.now();
      const r = writer.update({ contextId: ctx, ops: [{ op: { case: "put", value: { key: "k", value: { kind: { case: "numberValue", value: u } } } } }] });
      target = BigInt(u + 1);
      await done;
      const ms = performance.now() - t0;
      await r;
      return ms;
    };
    for (let u = 1; u <= WARMUP_UPDATES; u++) await timedUpdate(u);
    const times: number[] = [];
    const stopProfile = await clientProfile();
    const serverCpu0 = (await child.ask<{ cpu: CpuUsage }>("cpu")).cpu;
    const clientCpu0 = process.cpuUsage();
    for (let u = WARMUP_UPDATES + 1; u <= WARMUP_UPDATES + UPDATES; u++) times.push(await timedUpdate(u));
    const clientCpu = cpuMs(clientCpu0, process.cpuUsage()) / UPDATES;
    const serverCpu = cpuMs(serverCpu0, (await child.ask<{ cpu: CpuUsage }>("cpu")).cpu) / UPDATES;
    await stopProfile?.();
    times.sort((a, b) => a - b);
    const q = (p: number) => times[Math.min(times.length - 1, Math.floor(p * times.length))]!;
    return { watchers: w, p50: q(0.5), p99: q(0.99), max: times[times.length - 1]!, clientCpu, serverCpu };
  } finally {
    client.close();
    await child.stop();
  }
}

const token = await mintToken({ secret: BENCH_SECRET, subject: "bench", roles: ["developer"], ttlSec: 3600, issuer: "mcp", audience: "mcp" });
const kb = (b: number) => (b / 1024).toFixed(1).padStart(8);

if (ONLY === "all" || ONLY === "sessions") {
  console.log(`# idle sessions: N = ${N} (server RSS and heap+external growth per session, after a full GC)`);
  console.log(`${"".padEnd(46)}${"conns".padStart(7)}${"open (s)".padStart(10)}${"RSS KB".padStart(9)}${"heap KB".padStart(9)}`);
  const rows: IdleRow[] = [];
  rows.push(await idleRow("raw node:http2, one connection + stream each", "raw", N, (port) => rawIdle(port, N)));
  rows.push(await idleRow("mcp, one connection each", "scale", N, (port) => mcpIdle(port, N, token, 1)));
  rows.push(await idleRow("mcp, shared (default: 100 per connection)", "scale", N, (port) => mcpIdle(port, N, token, 100)));
  rows.push(await idleRow("mcp, all on one connection", "scale", N, (port) => mcpIdle(port, N, token, Infinity)));
  for (const r of rows) {
    console.log(`${r.name.padEnd(46)}${String(r.connections).padStart(7)}${(r.openMs / 1000).toFixed(2).padStart(10)}${kb(r.rssPer)} ${kb(r.heapPer)}`);
  }
  const raw = rows[0]!;
  console.log(`one connection each vs raw, RSS per connection: ${(rows[1]!.rssPer / raw.rssPer).toFixed(2)}× (target ≤ 1.5×)`);
  console.log(`per additional session on one connection: ${(rows[3]!.rssPer / 1024).toFixed(1)} KB RSS (target ≤ 10 KB)`);
}

if (ONLY === "all" || ONLY === "watchers") {
  console.log(`\n# watchers of one context, each its own session: update → last watcher's receipt, ${UPDATES} updates after ${WARMUP_UPDATES} warm-up ones`);
  console.log(`${"watchers".padEnd(10)}${"p50 ms".padStart(9)}${"p99 ms".padStart(9)}${"max ms".padStart(9)}   CPU ms per update: client server`);
  for (const w of WATCHERS) {
    const r = await watchRow(w, token);
    console.log(`${String(r.watchers).padEnd(10)}${r.p50.toFixed(1).padStart(9)}${r.p99.toFixed(1).padStart(9)}${r.max.toFixed(1).padStart(9)}${r.clientCpu.toFixed(1).padStart(28)}${r.serverCpu.toFixed(1).padStart(7)}`);
  }
}
