/**
 * `npm run bench:large-read` (issue 18): one large file read through `fs.read` with `binary` —
 * chunks on the session stream, read by the TS client's `callChunks` — beside raw `node:http2`
 * streaming the same file (`fs.createReadStream` piped into a response stream: the ceiling; its
 * client opens the connection with the receive windows ours uses).
 * Each server runs in its own forked process; its RSS is sampled every 10 ms during the read.
 * Prints MB/s and peak RSS growth for both, and the ratios against the targets
 * (≥ 0.5× raw MB/s, ≤ 64 MiB peak RSS growth).
 *
 *   npm run bench:large-read               # 256 MiB, 3 runs each, interleaved
 *   npm run bench:large-read -- --mib 8 --runs 1   # a quick check that it works
 */
import { fork, type ChildProcess } from "node:child_process";
import { createReadStream } from "node:fs";
import { mkdtemp, open, rm } from "node:fs/promises";
import { connect as h2connect, createServer as createH2Server } from "node:http2";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createMcpClient } from "../src/client/index.js";
import { CONNECTION_WINDOW_BYTES, STREAM_WINDOW_BYTES } from "../src/client/h2-connect.js";
import { mintToken } from "../src/security/index.js";
import { createMcpServer } from "../src/server/server.js";

const SECRET = "bench-secret-0123456789-0123456789-abcdef";
const FILE = "large.bin";
/** A 1 MiB file read once before measuring, so code loading and JIT warm-up count in neither figure. */
const WARM = "warm.bin";
const MIB = 1024 * 1024;

type Kind = "mcp" | "raw";

// ---- server side (forked) ----------------------------------------------------------------

async function serve(kind: Kind, root: string): Promise<void> {
  let peak = 0;
  let sampler: ReturnType<typeof setInterval> | undefined;
  process.on("message", (m: { op: string }) => {
    if (m.op === "reset") {
      peak = process.memoryUsage.rss();
      clearInterval(sampler);
      sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), 10);
      process.send?.({ base: peak });
    } else if (m.op === "peak") {
      clearInterval(sampler);
      process.send?.({ peak: Math.max(peak, process.memoryUsage.rss()) });
    } else if (m.op === "exit") {
      process.exit(0);
    }
  });
  if (kind === "mcp") {
    const server = createMcpServer({ port: 0, jwtSecret: SECRET, store: "memory", workspaceRoot: root, logLevel: "silent" });
    const { url } = await server.listen();
    process.send?.({ port: Number(new URL(url).port) });
    return;
  }
  const h2 = createH2Server();
  h2.on("stream", (stream, headers) => {
    stream.on("error", () => {});
    stream.respond({ ":status": 200, "content-type": "application/octet-stream" });
    const name = path.basename(String(headers[":path"] ?? "")) === WARM ? WARM : FILE;
    createReadStream(path.join(root, name)).pipe(stream);
  });
  h2.listen(0, "127.0.0.1", () => {
    const a = h2.address();
    process.send?.({ port: typeof a === "object" && a !== null ? a.port : 0 });
  });
}

// ---- client side -------------------------------------------------------------------------

function ask<T>(child: ChildProcess, op: string, key: string): Promise<T> {
  return new Promise((resolve) => {
    const on = (m: Record<string, T>) => {
      if (!(key in m)) return;
      child.off("message", on);
      resolve(m[key]!);
    };
    child.on("message", on);
    child.send({ op });
  });
}

async function startChild(kind: Kind, root: string): Promise<{ child: ChildProcess; port: number }> {
  const child = fork(fileURLToPath(import.meta.url), ["--serve", kind, root], { execArgv: ["--import", "tsx", ...(process.env["BENCH_SERVER_PROF"] === kind ? ["--cpu-prof", "--cpu-prof-dir=bench/.prof"] : [])], stdio: "inherit" });
  const port = await new Promise<number>((resolve) => child.on("message", (m: { port?: number }) => m.port !== undefined && resolve(m.port)));
  return { child, port };
}

async function readMcp(port: number, file = FILE): Promise<number> {
  const token = await mintToken({ secret: SECRET, subject: "bench", roles: ["developer"], ttlSec: 600, issuer: "mcp", audience: "mcp" });
  const session = await createMcpClient({ baseUrl: `http://127.0.0.1:${port}`, token }).connect();
  try {
    let n = 0;
    for await (const c of session.callChunks("fs.read", { path: file, binary: true }, { timeoutMs: 600_000 })) n += c.length;
    return n;
  } finally {
    session.close();
  }
}

function readRaw(port: number, file = FILE): Promise<number> {
  return new Promise((resolve, reject) => {
    // The windows our client opens its connections with (src/client/h2-connect.ts): the ceiling
    // gets the same transport, so the ratio is of what runs on top of it.
    const client = h2connect(`http://127.0.0.1:${port}`, { settings: { initialWindowSize: STREAM_WINDOW_BYTES } });
    client.once("connect", () => client.setLocalWindowSize(CONNECTION_WINDOW_BYTES));
    client.on("error", reject);
    const req = client.request({ ":path": `/${file}` });
    let n = 0;
    req.on("data", (d: Buffer) => (n += d.length));
    req.on("end", () => {
      client.close();
      resolve(n);
    });
    req.on("error", reject);
  });
}

interface Result {
  mbps: number;
  peakGrowthMiB: number;
}

async function runOnce(kind: Kind, root: string, size: number): Promise<Result> {
  const { child, port } = await startChild(kind, root);
  try {
    await (kind === "mcp" ? readMcp(port, WARM) : readRaw(port, WARM));
    const base = await ask<number>(child, "reset", "base");
    const t0 = performance.now();
    const n = kind === "mcp" ? await readMcp(port) : await readRaw(port);
    const seconds = (performance.now() - t0) / 1000;
    const peak = await ask<number>(child, "peak", "peak");
    if (n !== size) throw new Error(`${kind}: read ${n} bytes, the file has ${size}`);
    return { mbps: size / MIB / seconds, peakGrowthMiB: (peak - base) / MIB };
  } finally {
    child.send({ op: "exit" });
  }
}

async function main(): Promise<void> {
  const arg = (name: string, fallback: number) => {
    const i = process.argv.indexOf(`--${name}`);
    return i < 0 ? fallback : Number(process.argv[i + 1]);
  };
  const mib = arg("mib", 256);
  const runs = arg("runs", 3);
  const root = await mkdtemp(path.join(tmpdir(), "mcp-large-read-"));
  try {
    const size = mib * MIB;
    // Random-ish content written in 1 MiB pieces, so the bench itself never holds the file.
    const handle = await open(path.join(root, FILE), "w");
    const piece = Buffer.alloc(MIB);
    for (let i = 0; i < mib; i++) {
      piece.fill(i & 0xff);
      await handle.write(piece);
    }
    await handle.close();
    const warm = await open(path.join(root, WARM), "w");
    await warm.write(piece);
    await warm.close();
    const results: Record<Kind, Result[]> = { mcp: [], raw: [] };
    // Interleaved, so a machine that slows down mid-run slows both.
    for (let r = 0; r < runs; r++) for (const kind of ["raw", "mcp"] as const) results[kind].push(await runOnce(kind, root, size));
    const best = (k: Kind) => results[k].reduce((a, b) => (b.mbps > a.mbps ? b : a));
    const worstPeak = (k: Kind) => Math.max(...results[k].map((x) => x.peakGrowthMiB));
    const raw = best("raw");
    const mcp = best("mcp");
    console.log(`large read: ${mib} MiB, best of ${runs} (peak RSS growth: the largest of the runs)`);
    console.log(`  raw node:http2   ${raw.mbps.toFixed(0).padStart(6)} MB/s   peak RSS +${worstPeak("raw").toFixed(1)} MiB`);
    console.log(`  fs.read chunks   ${mcp.mbps.toFixed(0).padStart(6)} MB/s   peak RSS +${worstPeak("mcp").toFixed(1)} MiB`);
    const ratio = mcp.mbps / raw.mbps;
    console.log(`  ratio ${ratio.toFixed(2)}× raw (target ≥ 0.5×): ${ratio >= 0.5 ? "met" : "missed"}; peak growth ≤ 64 MiB: ${worstPeak("mcp") <= 64 ? "met" : "missed"}`);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

const serveAt = process.argv.indexOf("--serve");
if (serveAt >= 0) void serve(process.argv[serveAt + 1] as Kind, process.argv[serveAt + 2]!);
else
  main().catch((e: unknown) => {
    console.error(e);
    process.exit(1);
  });
