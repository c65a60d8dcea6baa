/**
 * The bridge's calls/s over Streamable HTTP, beside the official SDK's own server doing the same
 * echo: the load is the SDK's own `Client` (2026-07-28, stateless, many calls in flight) in this
 * process; each server runs in a child process of its own — ours (`/mcp` of `createMcpServer`,
 * a real token, the core's `echo`) and the SDK's (bench/lib/sdk-echo.ts, shared with
 * bench:compare: `createMcpHandler` + an `McpServer` with `echo` registered as the SDK's docs do,
 * mounted on node:http with `toNodeHandler`).
 * Not part of `npm run bench`: `node --import tsx bench/bridge.ts` (BENCH_MEASURE_MS, BENCH_WARMUP_MS,
 * BENCH_INFLIGHT, BENCH_ROUNDS; BENCH_TOGETHER=1 loads both servers at once; BENCH_CPU_PROF=DIR writes each server's `--cpu-prof` profile there).
 */
import { fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";
import { mintToken } from "../src/security/index.js";
import { createMcpServer } from "../src/server/server.js";
import { echoedText } from "./lib/sdk-client.js";
import { listenSdkHttp } from "./lib/sdk-echo.js";

const SECRET = "bench-secret-0123456789-0123456789-abcdef";
const WARMUP_MS = Number(process.env["BENCH_WARMUP_MS"] ?? 1000);
const MEASURE_MS = Number(process.env["BENCH_MEASURE_MS"] ?? 5000);
const INFLIGHT = Number(process.env["BENCH_INFLIGHT"] ?? 16);
const ROUNDS = Number(process.env["BENCH_ROUNDS"] ?? 3);
const TEXT = "hello, benchmark";
// BENCH_TOGETHER=1: load both servers at the same time, so on a shared machine both see the same
// contention (their calls/s then compete for the same cores: compare the ratio, not the sum).
const TOGETHER = process.env["BENCH_TOGETHER"] === "1";

type Kind = "bridge" | "sdk";

/** Child: serve one kind on a free port, report it, run until killed. */
async function serve(kind: Kind): Promise<number> {
  if (kind === "bridge") {
    const s = createMcpServer({ port: 0, jwtSecret: SECRET, store: "memory", audit: () => {} });
    return (await s.listen()).port;
  }
  return listenSdkHttp();
}

/** A server child: its URL, its CPU time so far (user + system, µs), and a stop that lets a `--cpu-prof` child write its profile. */
interface Child {
  url: string;
  cpuMicros(): Promise<number>;
  stop(): Promise<void>;
}

async function startChild(kind: Kind): Promise<Child> {
  // BENCH_CPU_PROF=DIR: the server children run with `--cpu-prof` and write their profiles to
  // DIR/KIND on stop (one file per thread: tsx's loader runs in a worker of its own).
  const prof = process.env["BENCH_CPU_PROF"];
  const execArgv = ["--import", "tsx", ...(prof === undefined ? [] : ["--cpu-prof", "--cpu-prof-dir", `${prof}/${kind}`])];
  const proc = fork(fileURLToPath(import.meta.url), ["serve", kind], { execArgv, stdio: ["ignore", "inherit", "inherit", "ipc"] });
  const port = await new Promise<number>((resolve, reject) => {
    proc.once("message", (m) => resolve(Number(m)));
    proc.once("exit", (code) => reject(new Error(`${kind} server exited with ${code}`)));
  });
  return {
    url: `http://127.0.0.1:${port}/mcp`,
    cpuMicros: () =>
      new Promise<number>((resolve) => {
        proc.once("message", (m) => resolve(Number(m)));
        proc.send("cpu");
      }),
    stop: () =>
      new Promise<void>((resolve) => {
        if (proc.exitCode !== null) return resolve();
        const timer = setTimeout(() => proc.kill(), 5000);
        proc.once("exit", () => {
          clearTimeout(timer);
          resolve();
        });
        proc.send("stop");
      }),
  };
}

/** One load run: calls/s and the server's CPU µs per call over it. */
interface Run {
  callsPerSec: number;
  cpuMicrosPerCall: number;
}

/** Calls echo with INFLIGHT calls in flight for `ms`, measuring `server`'s CPU over it. */
async function measure(client: Client, server: Child, ms: number): Promise<Run> {
  const cpu0 = await server.cpuMicros();
  const { calls, elapsedMs } = await load(client, ms);
  const cpu = (await server.cpuMicros()) - cpu0;
  return { callsPerSec: (calls * 1000) / elapsedMs, cpuMicrosPerCall: cpu / calls };
}

/** Calls echo with INFLIGHT calls in flight for `ms`. */
async function load(client: Client, ms: number): Promise<{ calls: number; elapsedMs: number }> {
  let calls = 0;
  const until = performance.now() + ms;
  const worker = async () => {
    while (performance.now() < until) {
      const r = await client.callTool({ name: "echo", arguments: { text: TEXT } });
      if (echoedText(r) !== TEXT) throw new Error(`unexpected echo result ${JSON.stringify(r)}`);
      calls++;
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: INFLIGHT }, worker));
  return { calls, elapsedMs: performance.now() - started };
}

async function main(): Promise<void> {
  const token = await mintToken({ secret: SECRET, subject: "bench", roles: ["developer"], ttlSec: 3600, issuer: "mcp", audience: "mcp" });
  const servers = { bridge: await startChild("bridge"), sdk: await startChild("sdk") };
  try {
    const clients: Record<Kind, Client> = {
      bridge: new Client({ name: "bench", version: "1" }, { versionNegotiation: { mode: { pin: "2026-07-28" } } }),
      sdk: new Client({ name: "bench", version: "1" }, { versionNegotiation: { mode: { pin: "2026-07-28" } } }),
    };
    await clients.bridge.connect(new StreamableHTTPClientTransport(new URL(servers.bridge.url), { requestInit: { headers: { authorization: `Bearer ${token}` } } }));
    await clients.sdk.connect(new StreamableHTTPClientTransport(new URL(servers.sdk.url)));
    const results: Record<Kind, Run[]> = { bridge: [], sdk: [] };
    for (const kind of ["bridge", "sdk"] as const) await load(clients[kind], WARMUP_MS);
    // Interleaved rounds, medians: both columns see the same drift of a shared machine. CPU per
    // call of the server process is the steadier figure when the machine is loaded.
    const line = (r: Run) => `${r.callsPerSec.toFixed(0)} calls/s, ${r.cpuMicrosPerCall.toFixed(0)} µs CPU/call`;
    for (let round = 0; round < ROUNDS; round++) {
      if (TOGETHER) {
        const [b, k] = await Promise.all([measure(clients.bridge, servers.bridge, MEASURE_MS), measure(clients.sdk, servers.sdk, MEASURE_MS)]);
        results.bridge.push(b);
        results.sdk.push(k);
      } else {
        for (const kind of ["bridge", "sdk"] as const) results[kind].push(await measure(clients[kind], servers[kind], MEASURE_MS));
      }
      process.stdout.write(`round ${round + 1}: bridge ${line(results.bridge.at(-1)!)}  sdk ${line(results.sdk.at(-1)!)}\n`);
    }
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const b = median(results.bridge.map((r) => r.callsPerSec));
    const s = median(results.sdk.map((r) => r.callsPerSec));
    const bc = median(results.bridge.map((r) => r.cpuMicrosPerCall));
    const sc = median(results.sdk.map((r) => r.cpuMicrosPerCall));
    process.stdout.write(
      `Streamable HTTP echo, ${INFLIGHT} in flight, 2026-07-28: bridge (/mcp, our core) ${b.toFixed(0)} calls/s, the SDK's own server ${s.toFixed(0)} calls/s (${(b / s).toFixed(2)}×); ` +
        `server CPU per call: bridge ${bc.toFixed(0)} µs, SDK ${sc.toFixed(0)} µs (${(bc / sc).toFixed(2)}×)\n`,
    );
    await clients.bridge.close();
    await clients.sdk.close();
  } finally {
    await Promise.all([servers.bridge.stop(), servers.sdk.stop()]);
  }
}

if (process.argv[2] === "serve") {
  // The parent asks for this process's CPU time and tells it when to stop (a `--cpu-prof` child
  // writes its profile on a normal exit only, not on a kill).
  process.on("message", (m) => {
    if (m === "cpu") {
      const u = process.cpuUsage();
      process.send?.(u.user + u.system);
    } else if (m === "stop") process.exit(0);
  });
  serve(process.argv[3] as Kind).then(
    (port) => process.send?.(port),
    (e: unknown) => {
      process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
      process.exit(1);
    },
  );
} else {
  await main();
}
