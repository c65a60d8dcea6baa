/**
 * The Redis figures of issue 18, in one run on one machine (`npm run bench:redis`; see
 * bench/README.md "Redis"): a private `redis-server` on a free port in a temp dir (never a shared
 * one), real `mcp serve --store redis://…` processes, and the load from this process.
 *
 * (i)   `redis-benchmark -t set -c 64` beside our CAS context updates/s with 64 in flight on ONE
 *       session (64 contexts, one update in flight on each, each with the version it last got as
 *       `expected_version`: compare-and-set that never conflicts) — 64 outstanding requests on
 *       both sides; redis-benchmark holds 64 connections, our instance one (its commands pipelined).
 * (ii)  Redis work per echo command and per context update on the session stream: commands Redis
 *       ran (INFO commandstats, the commands scripts run included) and Redis CPU (INFO cpu) over
 *       the measured window, divided by the operations answered; then the round trips alone (what
 *       the instance sent, scripts' inner commands excluded) counted with MONITOR over a fixed
 *       number of operations (MONITOR slows Redis a little; the count, not the time, is the figure).
 * (iii) two instances on the one Redis, each under its own client session, against one instance
 *       under one (calls/s and updates/s, all clients in this process).
 * (iv)  the paper estimate: how many instances at this load one Redis core — and a cluster of N
 *       masters — can serve.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Redis } from "ioredis";
import { createMcpClient, type McpSession } from "../src/client/index.js";
import { mintToken } from "../src/security/index.js";

const WARMUP_MS = Number(process.env["BENCH_WARMUP_MS"] ?? 1000);
const MEASURE_MS = Number(process.env["BENCH_MEASURE_MS"] ?? 5000);
/** Operations of each MONITOR count pass. */
const COUNT_OPS = Number(process.env["BENCH_COUNT_OPS"] ?? 20_000);
/** Requests of the redis-benchmark run (~5 s at ~100k/s). */
const SET_N = Number(process.env["BENCH_SET_N"] ?? 500_000);
const INFLIGHT = 64;
const SECRET = "bench-redis-secret-0123456789-0123456789";
const MCP_BIN = fileURLToPath(new URL("../bin/mcp-dev.js", import.meta.url));
const CLK_TCK = Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout.trim() || "100");

function need(program: string): void {
  if (spawnSync("sh", ["-c", `command -v ${program}`]).status !== 0) {
    console.error(`bench:redis needs ${program} (apt-get install ${program === "redis-benchmark" ? "redis-tools" : "redis-server"})`);
    process.exit(1);
  }
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      const port = typeof a === "object" && a !== null ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

// ---------------------------------------------------------------- processes

interface Proc {
  proc: ChildProcess;
  stop(): Promise<void>;
}

function stopper(proc: ChildProcess): () => Promise<void> {
  return () =>
    new Promise((resolve) => {
      if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
      const timer = setTimeout(() => proc.kill("SIGKILL"), 5000);
      proc.once("exit", () => {
        clearTimeout(timer);
        resolve();
      });
      proc.kill("SIGTERM");
    });
}

/** A private redis-server without persistence (as redis-benchmark is usually run), on `port`. */
async function startRedis(dir: string, port: number): Promise<Proc & { client: Redis }> {
  const proc = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--appendonly", "no"], { stdio: "ignore" });
  const client = new Redis(port, "127.0.0.1", { maxRetriesPerRequest: 1, retryStrategy: (n) => (n > 50 ? null : 100) });
  client.on("error", () => {});
  await client.ping();
  return { proc, client, stop: stopper(proc) };
}

/** `mcp serve --store redis://…` on a free port; resolves with its URL once it listens. */
async function startInstance(dir: string, redisPort: number): Promise<Proc & { url: string }> {
  const proc = spawn(
    process.execPath,
    [...(process.env["BENCH_SERVER_PROF"] === "1" ? ["--cpu-prof", "--cpu-prof-dir=bench/.prof"] : []), MCP_BIN, "serve", "--port", "0", "--store", `redis://127.0.0.1:${redisPort}`, "--jwt-secret", SECRET, "--state-dir", dir, "--log-level", "warn"],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  const url = await new Promise<string>((resolve, reject) => {
    let out = "";
    proc.stdout!.setEncoding("utf8").on("data", (c: string) => {
      out += c;
      const m = /listening on (https?:\/\/\S+)/.exec(out);
      if (m !== null) resolve(m[1]!);
    });
    proc.once("exit", (code) => reject(new Error(`mcp serve exited with ${String(code)}: ${out}`)));
  });
  return { proc, url, stop: stopper(proc) };
}

/** User + system CPU of a process so far, in µs (Linux /proc). */
function cpuUs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return ((Number(f[11]) + Number(f[12])) * 1e6) / CLK_TCK; // utime, stime
}

// ---------------------------------------------------------------- Redis statistics

interface RedisStats {
  calls: Map<string, number>;
  usec: Map<string, number>;
  cpuUs: number;
}

async function redisStats(r: Redis): Promise<RedisStats> {
  const text = (await r.info("commandstats")) + (await r.info("cpu"));
  const calls = new Map<string, number>();
  const usec = new Map<string, number>();
  let cpu = 0;
  for (const line of text.split("\r\n")) {
    const m = /^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/.exec(line);
    if (m !== null) {
      calls.set(m[1]!, Number(m[2]));
      usec.set(m[1]!, Number(m[3]));
    }
    const c = /^used_cpu_(sys|user):([\d.]+)/.exec(line);
    if (c !== null) cpu += Number(c[2]) * 1e6;
  }
  return { calls, usec, cpuUs: cpu };
}

/** What Redis did between two snapshots, without the statistics commands themselves. */
function statsDelta(a: RedisStats, b: RedisStats): { calls: Map<string, number>; total: number; usec: Map<string, number>; cpuUs: number } {
  const calls = new Map<string, number>();
  const usec = new Map<string, number>();
  let total = 0;
  for (const [cmd, n] of b.calls) {
    if (cmd === "info" || cmd === "ping") continue;
    const d = n - (a.calls.get(cmd) ?? 0);
    if (d > 0) {
      calls.set(cmd, d);
      usec.set(cmd, (b.usec.get(cmd) ?? 0) - (a.usec.get(cmd) ?? 0));
      total += d;
    }
  }
  return { calls, total, usec, cpuUs: b.cpuUs - a.cpuUs };
}

// ---------------------------------------------------------------- load

/** One kind of operation kept `INFLIGHT` deep on a session; `count` counts answers. */
interface Load {
  count: number;
  /** Starts (and keeps) the operations in flight; resolves once all have come back after `stop`. */
  run(): Promise<void>;
  stop(): void;
}

function echoLoad(session: McpSession): Load {
  let stopped = false;
  const load: Load = {
    count: 0,
    run: () =>
      Promise.all(
        Array.from({ length: INFLIGHT }, async () => {
          while (!stopped) {
            await session.call("echo", { text: "hello, benchmark" });
            load.count++;
          }
        }),
      ).then(() => {}),
    stop: () => {
      stopped = true;
    },
  };
  return load;
}

let contextRun = 0;
/** Compare-and-set updates: 64 contexts, one in flight on each, `expected_version` = the last version it got. */
function updateLoad(session: McpSession): Load {
  let stopped = false;
  const run = ++contextRun;
  const load: Load = {
    count: 0,
    run: () =>
      Promise.all(
        Array.from({ length: INFLIGHT }, async (_, slot) => {
          const contextId = `bench-${process.pid}-${run}-${slot}`;
          let version = 0n;
          while (!stopped) {
            const r = await session.update({
              contextId,
              expectedVersion: version,
              ops: [{ op: { case: "put", value: { key: "k", value: { kind: { case: "numberValue", value: load.count } } } } }],
            });
            version = r.version;
            load.count++;
          }
        }),
      ).then(() => {}),
    stop: () => {
      stopped = true;
    },
  };
  return load;
}

interface Window {
  perSec: number;
  ops: number;
  redis: ReturnType<typeof statsDelta>;
  /** CPU µs per op of each instance, over the window. */
  instanceUs: number[];
  /** CPU µs per op of this process (the clients), over the window. */
  clientUs: number;
}

/** Warm-up, then a measured window over every load at once. */
async function measure(loads: Load[], instances: { proc: ChildProcess }[], redis: Redis): Promise<Window> {
  const done = Promise.all(loads.map((l) => l.run()));
  await sleep(WARMUP_MS);
  const c0 = loads.reduce((n, l) => n + l.count, 0);
  const s0 = await redisStats(redis);
  const i0 = instances.map((i) => cpuUs(i.proc.pid!));
  const u0 = process.cpuUsage();
  const t0 = performance.now();
  await sleep(MEASURE_MS);
  const ops = loads.reduce((n, l) => n + l.count, 0) - c0;
  const elapsed = performance.now() - t0;
  const u1 = process.cpuUsage(u0);
  const s1 = await redisStats(redis);
  const i1 = instances.map((i) => cpuUs(i.proc.pid!));
  for (const l of loads) l.stop();
  await done;
  return { perSec: (ops * 1000) / elapsed, ops, redis: statsDelta(s0, s1), instanceUs: i1.map((c, k) => (c - i0[k]!) / ops), clientUs: (u1.user + u1.system) / ops };
}

/** Exactly `n` operations (64 in flight) under MONITOR: the commands the instances sent, and those scripts ran. */
async function countRoundTrips(make: () => Load, n: number, redis: Redis): Promise<{ sent: Map<string, number>; sentTotal: number; inScripts: number }> {
  const monitor = await redis.monitor();
  const sent = new Map<string, number>();
  let sentTotal = 0;
  let inScripts = 0;
  const marker = `bench-marker-${process.pid}-${Math.random()}`;
  let sawMarker: () => void = () => {};
  const markerSeen = new Promise<void>((r) => (sawMarker = r));
  let counting = false;
  monitor.on("monitor", (_t: string, args: string[], source: string) => {
    if (args[1] === marker) {
      if (counting) sawMarker();
      else counting = true;
      return;
    }
    if (!counting) return;
    if (source === "lua") inScripts++;
    else {
      const cmd = (args[0] ?? "").toLowerCase();
      sent.set(cmd, (sent.get(cmd) ?? 0) + 1);
      sentTotal++;
    }
  });
  await redis.get(marker);
  const load = make();
  const running = load.run();
  while (load.count < n) await sleep(5);
  load.stop();
  await running;
  await sleep(50); // the last mirror batch (flushed every 5 ms)
  await redis.get(marker);
  await markerSeen;
  monitor.disconnect();
  // Operations done beyond n while stopping (at most 63) are in the counts too.
  const ops = load.count;
  for (const [k, v] of sent) sent.set(k, v / ops);
  return { sent, sentTotal: sentTotal / ops, inScripts: inScripts / ops };
}

// ---------------------------------------------------------------- output

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const fmt = (n: number, digits = 0) => n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
const row = (label: string, ...cols: string[]) => console.log(`    ${label.padEnd(72)}${cols.map((c) => c.padEnd(14)).join("")}`);

function top(calls: Map<string, number>, per: number, k = 6): string {
  return [...calls.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, k)
    .map(([c, n]) => `${c} ${fmt(n / per, 3)}`)
    .join(", ");
}

// ---------------------------------------------------------------- the run

need("redis-server");
need("redis-benchmark");
const dir = mkdtempSync(join(tmpdir(), "mcp-bench-redis-"));
const procs: Proc[] = [];
let failed = false;
try {
  const redisPort = await freePort();
  const redis = await startRedis(dir, redisPort);
  procs.push(redis);
  const token = await mintToken({ secret: SECRET, subject: "bench", roles: ["developer"], ttlSec: 3600, issuer: "mcp", audience: "mcp" });
  const open = (url: string) => createMcpClient({ baseUrl: url, token }).connect({ heartbeatIntervalMs: 0 });

  console.log(`bench/redis.ts: ${cpus().length} cores (${cpus()[0]?.model ?? "?"}), Node ${process.version}, ${String(spawnSync("redis-server", ["--version"], { encoding: "utf8" }).stdout).trim().split(" ").slice(0, 3).join(" ")}`);
  console.log(`  private redis-server on 127.0.0.1:${redisPort}, no persistence; ${WARMUP_MS} ms warm-up + ${MEASURE_MS} ms per window; ${INFLIGHT} in flight\n`);

  // (i) redis-benchmark SET, 64 clients
  const bench = spawnSync("redis-benchmark", ["-h", "127.0.0.1", "-p", String(redisPort), "-t", "set", "-c", String(INFLIGHT), "-n", String(SET_N), "--csv"], { encoding: "utf8" });
  const setLine = bench.stdout.split("\n").find((l) => l.startsWith('"SET"'));
  const setPerSec = setLine === undefined ? NaN : Number(JSON.parse(`[${setLine}]`)[1]);
  if (!Number.isFinite(setPerSec)) throw new Error(`redis-benchmark printed no SET line: ${bench.stdout}${bench.stderr}`);

  const a = await startInstance(mkdtempSync(join(dir, "a-")), redisPort);
  procs.push(a);
  const session = await open(a.url);
  const upd1 = await measure([updateLoad(session)], [a], redis.client);
  const echo1 = await measure([echoLoad(session)], [a], redis.client);
  const echoRt = await countRoundTrips(() => echoLoad(session), COUNT_OPS, redis.client);
  const updRt = await countRoundTrips(() => updateLoad(session), Math.min(COUNT_OPS, 10_000), redis.client);
  session.close();

  // (iii) a second instance on the same Redis, one client session on each
  const b = await startInstance(mkdtempSync(join(dir, "b-")), redisPort);
  procs.push(b);
  const [sa, sb] = await Promise.all([open(a.url), open(b.url)]);
  const echo2 = await measure([echoLoad(sa), echoLoad(sb)], [a, b], redis.client);
  const upd2 = await measure([updateLoad(sa), updateLoad(sb)], [a, b], redis.client);
  sa.close();
  sb.close();

  const cpuPer = (w: Window) => w.redis.cpuUs / w.ops;
  console.log("(i) CAS context updates/s on Redis beside redis-benchmark SET, 64 outstanding");
  row("redis-benchmark -t set -c 64 (64 connections)", `${fmt(setPerSec)}/s`);
  row("CAS updates, 64 in flight on ONE session (64 contexts)", `${fmt(upd1.perSec)}/s`);
  row("ratio (target >= 0.3)", `${fmt(upd1.perSec / setPerSec, 2)}`, upd1.perSec / setPerSec >= 0.3 ? "met" : "MISSED");
  console.log("");
  console.log("(ii) Redis work per operation on the session stream (--store redis://), one instance");
  row("", "per echo", "per update");
  row("calls/s in the window", fmt(echo1.perSec), fmt(upd1.perSec));
  row("commands Redis ran (commandstats, scripts' own included)", fmt(echo1.redis.total / echo1.ops, 3), fmt(upd1.redis.total / upd1.ops, 3));
  row("round trips: commands the instance sent (MONITOR count)", fmt(echoRt.sentTotal, 3), fmt(updRt.sentTotal, 3));
  row("  of which script calls (EVALSHA + EVAL)", fmt((echoRt.sent.get("evalsha") ?? 0) + (echoRt.sent.get("eval") ?? 0), 3), fmt((updRt.sent.get("evalsha") ?? 0) + (updRt.sent.get("eval") ?? 0), 3));
  row("commands run inside scripts (MONITOR count)", fmt(echoRt.inScripts, 3), fmt(updRt.inScripts, 3));
  row("Redis CPU µs (INFO cpu, user + sys)", fmt(cpuPer(echo1), 2), fmt(cpuPer(upd1), 2));
  row("instance CPU µs", fmt(echo1.instanceUs[0]!, 2), fmt(upd1.instanceUs[0]!, 2));
  row("client CPU µs (this process: our TypeScript client)", fmt(echo1.clientUs, 2), fmt(upd1.clientUs, 2));
  row("round trips per echo (target <= 0.1)", fmt(echoRt.sentTotal, 3), echoRt.sentTotal <= 0.1 ? "met" : "MISSED");
  console.log(`    echo, commands Redis ran: ${top(echo1.redis.calls, echo1.ops)}`);
  console.log(`    update, commands Redis ran: ${top(upd1.redis.calls, upd1.ops, 10)}`);
  console.log(`    update, Redis µs per update by command (commandstats usec; evalsha is the whole script): ${top(upd1.redis.usec, upd1.ops, 11)}`);
  console.log(`    echo, sent: ${top(echoRt.sent, 1)}; update, sent: ${top(updRt.sent, 1)}`);
  console.log("");
  console.log("(iii) two instances on one Redis, a client session on each, against one instance under one");
  row("", "1 instance", "2 instances", "ratio");
  row("echo calls/s, 64 in flight per session", fmt(echo1.perSec), fmt(echo2.perSec), fmt(echo2.perSec / echo1.perSec, 2));
  row("CAS updates/s, 64 in flight per session", fmt(upd1.perSec), fmt(upd2.perSec), fmt(upd2.perSec / upd1.perSec, 2));
  row("Redis CPU µs per echo / per update", `${fmt(cpuPer(echo1), 2)} / ${fmt(cpuPer(upd1), 2)}`, `${fmt(cpuPer(echo2), 2)} / ${fmt(cpuPer(upd2), 2)}`);
  console.log(`    (${cpus().length} cores for Redis, the instances and the clients together: the second instance competes for the same cores)`);
  console.log("");
  // (iv) paper estimate: one Redis main thread has one core, 1e6 µs of CPU per second.
  const perInstanceEcho = echo1.perSec;
  const perInstanceUpd = upd1.perSec;
  const redisEchoPerSec = 1e6 / cpuPer(echo1);
  const redisUpdPerSec = 1e6 / cpuPer(upd1);
  const publishUs = (upd1.redis.usec.get("publish") ?? 0) / upd1.ops;
  console.log("(iv) paper estimate from (ii): instances one Redis serves, each at the load of (ii) (one Redis core at 100 %; plan for ~70 %)");
  row("echo: Redis ops/s at one core = 1e6 / Redis CPU µs per echo", fmt(redisEchoPerSec));
  row(`  instances at ${fmt(perInstanceEcho)} echo/s each`, fmt(redisEchoPerSec / perInstanceEcho, 1), `(70 %: ${fmt((0.7 * redisEchoPerSec) / perInstanceEcho, 1)})`);
  row("updates: Redis ops/s at one core = 1e6 / Redis CPU µs per update", fmt(redisUpdPerSec));
  row(`  instances at ${fmt(perInstanceUpd)} updates/s each`, fmt(redisUpdPerSec / perInstanceUpd, 1), `(70 %: ${fmt((0.7 * redisUpdPerSec) / perInstanceUpd, 1)})`);
  for (const n of [3, 6]) {
    // Keys are hash-tagged per session and per context, so a cluster spreads them over its masters;
    // classic pub/sub is not sharded: every master delivers every announcement (PUBLISH) too.
    const updPerMasterUs = (cpuPer(upd1) - publishUs) / n + publishUs;
    row(`cluster of ${n} masters: instances at the echo load / at the update load`, fmt((n * redisEchoPerSec) / perInstanceEcho, 1), fmt(1e6 / updPerMasterUs / perInstanceUpd, 1));
  }
  console.log(`    (a cluster's masters each take 1/N of the sessions and contexts, but every master carries every update's announcement: ${fmt(publishUs, 2)} µs of PUBLISH per update in (ii))`);
} catch (e) {
  failed = true;
  console.error(e);
} finally {
  for (const p of procs.reverse()) await p.stop();
  rmSync(dir, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
