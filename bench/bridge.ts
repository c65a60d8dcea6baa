/**
 * The bridge's calls/s over Streamable HTTP, beside the official SDK's own server doing the same
 * echo: the load is the SDK's own `Client` (2026-07-28, stateless, many calls in flight) in this
 * process; each server runs in a child process of its own — ours (`/mcp` of `createMcpServer`,
 * a real token, the core's `echo`) and the SDK's (bench/lib/sdk-echo.ts, shared with
 * bench:compare: `createMcpHandler` + an `McpServer` with `echo` registered as the SDK's docs do,
 * mounted on node:http with `toNodeHandler`).
 * Not part of `npm run bench`: `node --import tsx bench/bridge.ts` (BENCH_MEASURE_MS, BENCH_WARMUP_MS,
 * BENCH_INFLIGHT, BENCH_ROUNDS).
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

type Kind = "bridge" | "sdk";

/** Child: serve one kind on a free port, report it, run until killed. */
async function serve(kind: Kind): Promise<number> {
  if (kind === "bridge") {
    const s = createMcpServer({ port: 0, jwtSecret: SECRET, store: "memory", audit: () => {} });
    return (await s.listen()).port;
  }
  return listenSdkHttp();
}

async function startChild(kind: Kind): Promise<{ url: string; stop(): void }> {
  const proc = fork(fileURLToPath(import.meta.url), ["serve", kind], { execArgv: ["--import", "tsx"], stdio: ["ignore", "inherit", "inherit", "ipc"] });
  const port = await new Promise<number>((resolve, reject) => {
    proc.once("message", (m) => resolve(Number(m)));
    proc.once("exit", (code) => reject(new Error(`${kind} server exited with ${code}`)));
  });
  return { url: `http://127.0.0.1:${port}/mcp`, stop: () => proc.kill() };
}

/** Calls echo with INFLIGHT calls in flight for `ms`; returns calls/s. */
async function load(client: Client, ms: number): Promise<number> {
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
  return (calls * 1000) / (performance.now() - started);
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
    const results: Record<Kind, number[]> = { bridge: [], sdk: [] };
    for (const kind of ["bridge", "sdk"] as const) await load(clients[kind], WARMUP_MS);
    // Interleaved rounds, medians: both columns see the same drift of a shared machine.
    for (let round = 0; round < ROUNDS; round++) {
      for (const kind of ["bridge", "sdk"] as const) results[kind].push(await load(clients[kind], MEASURE_MS));
      process.stdout.write(`round ${round + 1}: bridge ${results.bridge.at(-1)!.toFixed(0)}  sdk ${results.sdk.at(-1)!.toFixed(0)} calls/s\n`);
    }
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const b = median(results.bridge);
    const s = median(results.sdk);
    process.stdout.write(
      `Streamable HTTP echo, ${INFLIGHT} in flight, 2026-07-28: bridge (/mcp, our core) ${b.toFixed(0)} calls/s, the SDK's own server ${s.toFixed(0)} calls/s (${(b / s).toFixed(2)}×)\n`,
    );
    await clients.bridge.close();
    await clients.sdk.close();
  } finally {
    servers.bridge.stop();
    servers.sdk.stop();
  }
}

if (process.argv[2] === "serve") {
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
