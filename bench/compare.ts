/**
 * `npm run bench:compare`: ours beside the systems users would pick instead, in one run on
 * loopback, one table — our session stream and unary Execute (our TypeScript client), our /mcp
 * bridge and the official Model Context Protocol SDK (Streamable HTTP and stdio) driven by the
 * SDK's own client, @grpc/grpc-js unary and bidi, raw node:http2 bidi (the ceiling), and the codec
 * floor (the ceiling plus protobuf-es and JSON, no session). Every
 * peer answers the same `echo` of a 64-byte text; every server runs in a process of its own
 * (bench/server.ts; the SDK's stdio client spawns its own), measured from outside through /proc.
 * See bench/README.md, "bench:compare", for what each row and column is exactly.
 */
import { readFileSync } from "node:fs";
import { cpus } from "node:os";
import { fileURLToPath } from "node:url";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/client";
import { StdioClientTransport } from "@modelcontextprotocol/client/stdio";
import { SERVER_SCRIPT, startChild, type Child } from "./lib/child.js";
import { WARMUP_MS, drive, medianRun, type Opener } from "./lib/drive.js";
import { benchToken, codecOpener, grpcJsBidiOpener, grpcJsClient, grpcJsUnaryOpener, mcpSessionOpener, mcpUnaryOpener, rawOpener } from "./lib/openers.js";
import { procSample } from "./lib/proc.js";
import { SDK_VERSION, connectSdkClient, sdkOpener } from "./lib/sdk-client.js";

const MEASURE_MS = Number(process.env["BENCH_MEASURE_MS"] ?? 5000);
const SEQ_MS = Number(process.env["BENCH_SEQ_MS"] ?? 2000);
/** The 64-in-flight windows are run this many times, interleaved across the columns; each column shows its median. */
const ROUNDS = Number(process.env["BENCH_ROUNDS"] ?? 3);
/** A comma list of column keys (BENCH_ONLY=stream,sdk-http): only those; ratios to a missing column print as "-". */
const ONLY = process.env["BENCH_ONLY"]?.split(",").filter((k) => k !== "");
const INFLIGHT = 64;
/** 64 bytes of ASCII. */
const TEXT = "0123456789abcdef".repeat(4);

interface Peer {
  pid: number;
  /** A fresh opener per drive (the session opener's close() ends its session). */
  open(): Promise<Opener> | Opener;
  stop(): Promise<void> | void;
}

interface Column {
  key: string;
  label: string;
  start(token: string): Promise<Peer>;
}

function childPeer(child: Child, open: () => Promise<Opener> | Opener, stop: () => Promise<void> | void = () => {}): Peer {
  return {
    pid: child.pid,
    open,
    stop: async () => {
      await stop();
      child.stop();
    },
  };
}

async function sdkHttpPeer(child: Child, path: string, token?: string): Promise<Peer> {
  const url = new URL(`http://127.0.0.1:${child.port}${path}`);
  const headers = token === undefined ? undefined : { authorization: `Bearer ${token}` };
  const client = await connectSdkClient(new StreamableHTTPClientTransport(url, headers === undefined ? {} : { requestInit: { headers } }));
  return childPeer(child, () => sdkOpener(client, TEXT), () => client.close());
}

const COLUMNS: Column[] = [
  {
    key: "stream",
    label: "ours stream",
    start: async (token) => {
      const c = await startChild("mcp");
      return childPeer(c, () => mcpSessionOpener(c.port, token, TEXT));
    },
  },
  {
    key: "unary",
    label: "ours unary",
    start: async (token) => {
      const c = await startChild("mcp");
      return childPeer(c, () => mcpUnaryOpener(c.port, token, "grpc", TEXT));
    },
  },
  { key: "bridge", label: "ours /mcp", start: async (token) => sdkHttpPeer(await startChild("mcp"), "/mcp", token) },
  { key: "sdk-http", label: "SDK HTTP", start: async () => sdkHttpPeer(await startChild("sdk-http"), "/mcp") },
  {
    key: "sdk-stdio",
    label: "SDK stdio",
    start: async () => {
      // The SDK's client spawns the server itself, as a host does; the same bench/server.ts.
      const transport = new StdioClientTransport({
        command: process.execPath,
        args: ["--import", "tsx", SERVER_SCRIPT, "sdk-stdio"],
        cwd: fileURLToPath(new URL("..", import.meta.url)),
      });
      const client = await connectSdkClient(transport);
      const pid = transport.pid;
      if (pid === null) throw new Error("the SDK's stdio transport started no process");
      return { pid, open: () => sdkOpener(client, TEXT), stop: () => client.close() };
    },
  },
  {
    key: "grpc-unary",
    label: "grpc-js unary",
    start: async () => {
      const c = await startChild("grpcjs");
      const client = grpcJsClient(c.port);
      return childPeer(c, () => grpcJsUnaryOpener(client, TEXT), () => client.close());
    },
  },
  {
    key: "grpc-bidi",
    label: "grpc-js bidi",
    start: async () => {
      const c = await startChild("grpcjs");
      const client = grpcJsClient(c.port);
      return childPeer(c, () => grpcJsBidiOpener(client, TEXT), () => client.close());
    },
  },
  {
    key: "raw",
    label: "raw http2",
    start: async () => {
      const c = await startChild("raw");
      return childPeer(c, () => rawOpener(c.port, TEXT));
    },
  },
  {
    // The raw ceiling plus the protobuf-es and JSON work of one echo call (bench/server.ts): the
    // most any server on these libraries can do here, with a client that costs nothing.
    key: "codec",
    label: "codec floor",
    start: async () => {
      const c = await startChild("codec");
      return childPeer(c, () => codecOpener(c.port, TEXT));
    },
  },
];

interface Figures {
  perSec1: number;
  perSec64: number;
  p50us: number;
  p99us: number;
  cpuUs64: number;
  rssMiB: number;
  wire64: number;
  wire1: number;
}

/** One drive with the server's CPU time and read()/write() bytes over it, per call (warm-up included, as the calls are). */
async function measured(peer: Peer, inFlight: number, ms: number) {
  const open = await peer.open();
  const s0 = procSample(peer.pid);
  const r = await drive(open, inFlight, ms);
  const s1 = procSample(peer.pid);
  return { ...r, cpuUs: (s1.cpuUs - s0.cpuUs) / r.calls, wire: (s1.ioBytes - s0.ioBytes) / r.calls };
}

// ---------------------------------------------------------------- main

const cpuModel = /model name\s*:\s*(.*)/.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? cpus()[0]?.model ?? "unknown";
console.log(`machine: ${cpus().length} cores (nproc), ${cpuModel}, node ${process.version}`);
console.log(
  `warm-up ${WARMUP_MS} ms, measure ${MEASURE_MS} ms at ${INFLIGHT} in flight (median of ${ROUNDS} interleaved rounds) / ${SEQ_MS} ms at 1; echo of ${TEXT.length} bytes; SDK protocol ${SDK_VERSION}`,
);
console.log("");

const token = await benchToken();
const columns = COLUMNS.filter((c) => ONLY === undefined || ONLY.includes(c.key));
const peers = await Promise.all(columns.map((c) => c.start(token)));

const rounds: Awaited<ReturnType<typeof measured>>[][] = columns.map(() => []);
for (let round = 0; round < ROUNDS; round++) {
  for (let i = 0; i < columns.length; i++) rounds[i]!.push(await measured(peers[i]!, INFLIGHT, MEASURE_MS));
}
const figures = new Map<string, Figures>();
for (let i = 0; i < columns.length; i++) {
  const at64 = medianRun(rounds[i]!);
  const at1 = await measured(peers[i]!, 1, SEQ_MS);
  figures.set(columns[i]!.key, {
    perSec1: at1.perSec,
    perSec64: at64.perSec,
    p50us: at1.p50us,
    p99us: at1.p99us,
    cpuUs64: at64.cpuUs,
    rssMiB: procSample(peers[i]!.pid).rss / 1024 / 1024,
    wire64: at64.wire,
    wire1: at1.wire,
  });
}
for (const p of peers) await p.stop();

// ---------------------------------------------------------------- the table

const LABEL = 36;
const W = 14;
const pad = (s: string, n: number) => s.padEnd(n);
// "-" for a figure with no calls to divide by (a window too short for a slow peer).
const fmt = (n: number) => (!Number.isFinite(n) ? "-" : n >= 100 ? Math.round(n).toLocaleString("en-US") : n.toFixed(n >= 10 ? 1 : 2));
const ratio = (a: number | undefined, b: number | undefined) => {
  const r = a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) ? NaN : a / b;
  if (!Number.isFinite(r)) return "-";
  return `${r >= 100 ? r.toFixed(0) : r >= 10 ? r.toFixed(1) : r >= 0.1 ? r.toFixed(2) : r.toFixed(3)}×`;
};
const BASES = [
  ["raw", "÷ raw http2"],
  ["sdk-http", "÷ SDK HTTP"],
  ["sdk-stdio", "÷ SDK stdio"],
] as const;
const ROWS: [keyof Figures, string][] = [
  ["perSec1", "calls/s, 1 in flight"],
  ["perSec64", `calls/s, ${INFLIGHT} in flight`],
  ["p50us", "p50 latency µs, 1 in flight"],
  ["p99us", "p99 latency µs, 1 in flight"],
  ["cpuUs64", `server CPU µs/call, ${INFLIGHT} in flight`],
  ["rssMiB", "server RSS MiB, after the runs"],
  ["wire64", `wire bytes/call, ${INFLIGHT} in flight`],
  ["wire1", "wire bytes/call, 1 in flight"],
];
const line = (label: string, cell: (key: string) => string) => console.log(pad(label, LABEL) + columns.map((c) => pad(cell(c.key), W)).join(""));
line("", (k) => columns.find((c) => c.key === k)!.label);
for (const [field, label] of ROWS) {
  line(label, (k) => fmt(figures.get(k)![field]));
  for (const [base, baseLabel] of BASES) {
    if (figures.has(base)) line(`    ${baseLabel}`, (k) => ratio(figures.get(k)![field], figures.get(base)![field]));
  }
}

// ---------------------------------------------------------------- the targets

console.log("");
console.log("targets (issue 18)");
const ours = figures.get("stream");
const target = (label: string, a: number | undefined, b: number | undefined, ok: (r: number) => boolean, bound: string) => {
  const r = a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) ? NaN : a / b;
  const known = Number.isFinite(r);
  console.log(`    ${pad(label, 52)} ${ratio(a, b).padEnd(8)} (target ${bound}: ${known ? (ok(r) ? "met" : "MISSED") : "not measured"})`);
};
target("stream calls/s at 64 in flight ÷ SDK Streamable HTTP", ours?.perSec64, figures.get("sdk-http")?.perSec64, (r) => r >= 100, ">= 100×");
target("stream calls/s at 64 in flight ÷ SDK stdio", ours?.perSec64, figures.get("sdk-stdio")?.perSec64, (r) => r >= 4, ">= 4×");
target("stream calls/s at 64 in flight ÷ raw http2", ours?.perSec64, figures.get("raw")?.perSec64, (r) => r >= 0.35, ">= 0.35×");
// Not a target: what protobuf-es and JSON leave of the ceiling for any server (bench/server.ts `codec`).
console.log(`    ${pad("codec floor calls/s at 64 in flight ÷ raw http2", 52)} ${ratio(figures.get("codec")?.perSec64, figures.get("raw")?.perSec64).padEnd(8)} (the most a server on protobuf-es and JSON does here)`);
target("stream sequential p50 ÷ SDK Streamable HTTP", ours?.p50us, figures.get("sdk-http")?.p50us, (r) => r <= 0.2, "<= 0.2×");
setTimeout(() => process.exit(0), 200); // lets the stop messages out
