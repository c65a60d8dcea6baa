/**
 * The "Commands and tools" benchmark: the session stream, unary Execute, a @grpc/grpc-js echo, a
 * raw node:http2 echo (the ceiling) and the codec floor (the ceiling plus the protobuf-es and JSON
 * work of an echo call, no session), side by side in one run on one machine; then server RSS with a
 * client that stops reading; then bench/core.ts and bench/context-sync.ts. Each server runs in its
 * own process (bench/server.ts), the load in this one. `npm run bench`; see bench/README.md.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname } from "node:path";
import { connect as h2connect, constants } from "node:http2";
import { cpus } from "node:os";
import { fileURLToPath } from "node:url";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { ClientMessageSchema, ServerMessageSchema, type ServerMessage } from "../gen/mcp/v1/session_pb.js";
import { ProtocolVersion } from "../gen/mcp/v1/types_pb.js";
import { createFrameReader, frameBytes } from "../src/transport/grpc-frames.js";
import { createMcpClient } from "../src/client/index.js";
import { startChild, type Child } from "./lib/child.js";
import { WARMUP_MS, drive, medianRun, withCpu, type CpuDriveResult, type DriveResult, type Opener } from "./lib/drive.js";
import { benchToken, codecOpener, grpcJsBidiOpener, grpcJsClient, grpcJsUnaryOpener, mcpSessionOpener, mcpUnaryOpener, rawOpener } from "./lib/openers.js";

const MEASURE_MS = Number(process.env["BENCH_MEASURE_MS"] ?? 5000);
const SEQ_MS = Number(process.env["BENCH_SEQ_MS"] ?? 2000);
/**
 * The throughput figures the targets are on — (a) the stream of ours, grpc-js and the raw ceiling,
 * (c) unary Execute of ours and grpc-js — are measured this many times, interleaved (ours, grpc-js,
 * raw, ours, …), and each column reports its median: on a shared VM a single window moves by
 * ±10 % while the machine's speed drifts, and interleaving makes the columns see the same drift.
 */
const ROUNDS = Number(process.env["BENCH_ROUNDS"] ?? 3);
/** `--only stream|stream-struct|stream-typed|updates|unary|unary-grpcjs|raw|codec` (or BENCH_ONLY): one figure, for iterating on a change. */
const onlyFlag = process.argv.indexOf("--only");
const ONLY = onlyFlag >= 0 ? process.argv[onlyFlag + 1] : process.env["BENCH_ONLY"];
const STREAM_INFLIGHT = 64;
const UNARY_INFLIGHT = 32;
const TEXT = "hello, benchmark";

/** Ends an `--only` run: stops its server, lets the stop message out, exits. */
function onlyDone(child: Child): Promise<never> {
  child.stop();
  setTimeout(() => process.exit(0), 200);
  return new Promise<never>(() => {});
}

// ---------------------------------------------------------------- openers

/**
 * Context updates on ONE session, the same harness as the echo stream: each call is a
 * `McpSession.update()` — an unconditional put of one key (a 16-character string) to the memory
 * store's context `bench` — answered by its ContextUpdateResult (a new version each time).
 */
async function mcpUpdateOpener(port: number, token: string): Promise<Opener> {
  const session = await createMcpClient({ baseUrl: `http://127.0.0.1:${port}`, token }).connect({ heartbeatIntervalMs: 0 });
  const ops = [{ op: { case: "put" as const, value: { key: "status", value: { kind: { case: "stringValue" as const, value: TEXT } } } } }];
  return (done) => ({
    send: () => {
      session.update({ contextId: "bench", ops }).then(done, (e: unknown) => {
        console.error("context update failed:", e);
        process.exit(1);
      });
    },
    close: () => session.close(),
  });
}

/** grpc-js calling our CommandService/Execute, proto from proto/ (separates our server's cost from connect-es's client). */
function grpcJsOnOursUnaryOpener(port: number, token: string): Opener {
  const require = createRequire(import.meta.url);
  const def = protoLoader.loadSync(["mcp/v1/command.proto"], {
    includeDirs: [fileURLToPath(new URL("../proto", import.meta.url)), dirname(require.resolve("protobufjs/package.json"))],
    oneofs: true,
  });
  type Exec = grpc.Client & { Execute(req: object, md: grpc.Metadata, cb: (e: grpc.ServiceError | null) => void): void };
  const pkg = grpc.loadPackageDefinition(def) as unknown as { mcp: { v1: { CommandService: grpc.ServiceClientConstructor } } };
  const client = new pkg.mcp.v1.CommandService(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as Exec;
  const md = new grpc.Metadata();
  md.set("authorization", `Bearer ${token}`);
  const req = { tool: "echo", arguments: { fields: { text: { stringValue: TEXT } } } };
  return (done) => ({
    send: () =>
      client.Execute(req, md, (err) => {
        if (err !== null) {
          console.error("grpc-js on ours failed:", err);
          process.exit(1);
        }
        done();
      }),
    close: () => client.close(),
  });
}

// ---------------------------------------------------------------- RSS with a client that stops reading

function clientFrame(message: Parameters<typeof create<typeof ClientMessageSchema>>[1]): Buffer {
  return frameBytes(toBinary(ClientMessageSchema, create(ClientMessageSchema, message)));
}

async function slowConsumer(token: string): Promise<string[]> {
  const slowMs = 3000;
  const child = await startChild("mcp", [String(slowMs)]);
  const lines: string[] = [];
  try {
    const session = h2connect(`http://127.0.0.1:${child.port}`);
    session.on("error", () => {});
    const stream = session.request({ ":method": "POST", ":path": "/mcp.v1.SessionService/Connect", "content-type": "application/grpc+proto", te: "trailers" });
    stream.on("error", () => {});
    const received: ServerMessage[] = [];
    let ended = false;
    const frames = createFrameReader(
      64 * 1024 * 1024,
      (bytes) => received.push(fromBinary(ServerMessageSchema, bytes)) > 0,
      (e) => console.error("bench: bad frame from the server:", e),
    );
    stream.on("data", (chunk: Buffer) => frames.push(chunk));
    const over = new Promise<void>((r) => {
      stream.once("end", () => ((ended = true), r()));
      stream.once("close", () => ((ended = true), r()));
    });
    stream.write(
      clientFrame({
        message: { case: "handshake", value: { protocolVersions: [ProtocolVersion.PROTOCOL_VERSION_1_0], client: { name: "bench", version: "0" }, token } },
      }),
    );
    while (received.length === 0) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 300));
    const { reset: before } = await child.ask<{ reset: number }>("reset");
    // Stop reading, then ask for 2,000 echoes of 32 KiB each (64 MiB of answers).
    stream.pause();
    const big = "x".repeat(32 * 1024);
    const COMMANDS = 2000;
    for (let i = 0; i < COMMANDS; i++) {
      stream.write(clientFrame({ message: { case: "command", value: { id: `s${i}`, tool: "echo", payload: { case: "arguments", value: { text: big } } } } }));
    }
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, slowMs + 1500));
    const { peak } = await child.ask<{ peak: number }>("peak");
    // Read again: what was queued, then the Error that ended the stream.
    stream.resume();
    await Promise.race([over, new Promise((r) => setTimeout(r, 5000))]);
    const responses = received.filter((m) => m.message.case === "response").length;
    const last = received.at(-1);
    const lastError = last?.message.case === "error" ? `${last.message.value.code} (${last.message.value.message})` : `none (last: ${last?.message.case})`;
    stream.close(constants.NGHTTP2_CANCEL);
    session.destroy();
    await new Promise((r) => setTimeout(r, 1000));
    const { rss: after } = await child.ask<{ rss: number }>("rss");
    const mb = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MiB`;
    lines.push(`(f) server RSS while a client stops reading (${COMMANDS} echo commands of 32 KiB sent, ${mb(COMMANDS * 32 * 1024)} of answers asked for; slowConsumerTimeoutMs ${slowMs})`);
    lines.push(`    RSS before ${mb(before)}, peak ${mb(peak)} (+${mb(peak - before)}), after the drop ${mb(after)}`);
    lines.push(`    answers the server produced before pausing: ${responses} of ${COMMANDS}; stream ended: ${ended}; last message: ${lastError}`);
    lines.push(`    time from the commands to the end: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  } finally {
    child.stop();
  }
  return lines;
}

// ---------------------------------------------------------------- main

const cpuModel = /model name\s*:\s*(.*)/.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? cpus()[0]?.model ?? "unknown";
console.log(`machine: ${cpus().length} cores (nproc), ${cpuModel}, node ${process.version}`);
console.log(`warm-up ${WARMUP_MS} ms, measure ${MEASURE_MS} ms (throughput) / ${SEQ_MS} ms (sequential); payload ${JSON.stringify(TEXT)}`);
console.log("");

const token = await benchToken();

if (ONLY === "raw" || ONLY === "codec") {
  // The ceiling (or the codec floor) alone: the stream target is a ratio to it, and it moves with the machine's load.
  const peer = await startChild(ONLY);
  const r = await withCpu(peer, () => drive((ONLY === "raw" ? rawOpener : codecOpener)(peer.port, TEXT), STREAM_INFLIGHT, MEASURE_MS));
  console.log(`${ONLY} stream calls/s ${Math.round(r.perSec)}  (CPU µs per call: server ${r.serverUs.toFixed(2)}, client ${r.clientUs.toFixed(2)})`);
  await onlyDone(peer);
}
const mcp = await startChild("mcp");
if (ONLY === "unary" || ONLY === "unary-grpcjs") {
  // Profiling aid: only ours, unary, with our client or (unary-grpcjs) a grpc-js one (BENCH_SERVER_PROF=mcp writes the server's profile to bench/.prof).
  const opener = ONLY === "unary" ? mcpUnaryOpener(mcp.port, token, "grpc", TEXT) : grpcJsOnOursUnaryOpener(mcp.port, token);
  console.log(`${ONLY} calls/s ${Math.round((await drive(opener, UNARY_INFLIGHT, MEASURE_MS)).perSec)}`);
  await onlyDone(mcp);
}
if (ONLY === "stream-typed") {
  console.log(`typed stream calls/s ${Math.round((await drive(await mcpSessionOpener(mcp.port, token, TEXT, { typed: true }), STREAM_INFLIGHT, MEASURE_MS)).perSec)}`);
  await onlyDone(mcp);
}
if (ONLY === "updates") {
  // Context updates beside echo calls, same server, same harness, one after the other.
  const echo = await withCpu(mcp, async () => drive(await mcpSessionOpener(mcp.port, token, TEXT), STREAM_INFLIGHT, MEASURE_MS));
  const upd = await withCpu(mcp, async () => drive(await mcpUpdateOpener(mcp.port, token), STREAM_INFLIGHT, MEASURE_MS));
  console.log(`stream echo calls/s ${Math.round(echo.perSec)}  (CPU µs per call: server ${echo.serverUs.toFixed(2)}, client ${echo.clientUs.toFixed(2)})`);
  console.log(`context updates/s ${Math.round(upd.perSec)}  (CPU µs per update: server ${upd.serverUs.toFixed(2)}, client ${upd.clientUs.toFixed(2)})`);
  console.log(`updates / echo = ${(upd.perSec / echo.perSec).toFixed(2)}`);
  await onlyDone(mcp);
}
if (ONLY === "stream" || ONLY === "stream-struct") {
  const struct = ONLY === "stream-struct"; // JSON as Struct both ways (jsonText: false), for comparison
  const r = await withCpu(mcp, async () => drive(await mcpSessionOpener(mcp.port, token, TEXT, { struct }), STREAM_INFLIGHT, MEASURE_MS));
  console.log(`stream calls/s ${Math.round(r.perSec)}  (CPU µs per call: server ${r.serverUs.toFixed(2)}, client ${r.clientUs.toFixed(2)})`);
  await onlyDone(mcp);
}
const gj = await startChild("grpcjs");
const gjClient = grpcJsClient(gj.port);
const raw = await startChild("raw");
const codec = await startChild("codec");

// (a) and (c) in interleaved rounds; the other figures once each.
const rounds: { ours: CpuDriveResult; gj: CpuDriveResult; raw: CpuDriveResult; codec: CpuDriveResult; updates: CpuDriveResult; oursUnary: DriveResult; gjUnary: DriveResult }[] = [];
for (let i = 0; i < ROUNDS; i++) {
  rounds.push({
    ours: await withCpu(mcp, async () => drive(await mcpSessionOpener(mcp.port, token, TEXT), STREAM_INFLIGHT, MEASURE_MS)),
    gj: await withCpu(gj, () => drive(grpcJsBidiOpener(gjClient, TEXT), STREAM_INFLIGHT, MEASURE_MS)),
    raw: await withCpu(raw, () => drive(rawOpener(raw.port, TEXT), STREAM_INFLIGHT, MEASURE_MS)),
    codec: await withCpu(codec, () => drive(codecOpener(codec.port, TEXT), STREAM_INFLIGHT, MEASURE_MS)),
    updates: await withCpu(mcp, async () => drive(await mcpUpdateOpener(mcp.port, token), STREAM_INFLIGHT, MEASURE_MS)),
    oursUnary: await drive(mcpUnaryOpener(mcp.port, token, "grpc", TEXT), UNARY_INFLIGHT, MEASURE_MS),
    gjUnary: await drive(grpcJsUnaryOpener(gjClient, TEXT), UNARY_INFLIGHT, MEASURE_MS),
  });
}
const oursStream = medianRun(rounds.map((r) => r.ours));
const gjStream = medianRun(rounds.map((r) => r.gj));
const rawStream = medianRun(rounds.map((r) => r.raw));
const codecStream = medianRun(rounds.map((r) => r.codec));
codec.stop();
const oursUpdates = medianRun(rounds.map((r) => r.updates));
const oursUnaryGrpc = medianRun(rounds.map((r) => r.oursUnary));
const gjUnary = medianRun(rounds.map((r) => r.gjUnary));

const oursStructStream = await withCpu(mcp, async () => drive(await mcpSessionOpener(mcp.port, token, TEXT, { struct: true }), STREAM_INFLIGHT, MEASURE_MS));
const oursTypedStream = await drive(await mcpSessionOpener(mcp.port, token, TEXT, { typed: true }), STREAM_INFLIGHT, MEASURE_MS);
const oursSeq = await drive(await mcpSessionOpener(mcp.port, token, TEXT), 1, SEQ_MS);
const perMessageStream = await drive(await mcpSessionOpener(mcp.port, token, TEXT, { perMessage: true }), STREAM_INFLIGHT, MEASURE_MS);
const oursUnaryConnect = await drive(mcpUnaryOpener(mcp.port, token, "connect", TEXT), UNARY_INFLIGHT, MEASURE_MS);
const oursUnaryGrpcJs = await drive(grpcJsOnOursUnaryOpener(mcp.port, token), UNARY_INFLIGHT, MEASURE_MS);
mcp.stop();

const gjSeq = await drive(grpcJsBidiOpener(gjClient, TEXT), 1, SEQ_MS);
gjClient.close();
gj.stop();

const rawSeq = await drive(rawOpener(raw.port, TEXT), 1, SEQ_MS);
raw.stop();

const f0 = (n: number) => Math.round(n).toLocaleString("en-US");
const r2 = (a: number, b: number) => (a / b).toFixed(2);
const pad = (s: string, n: number) => s.padEnd(n);
const LABEL = 50;
const mark = (ok: boolean) => (ok ? "met" : "MISSED");

console.log(pad("", LABEL) + pad("ours", 14) + pad("grpc-js", 14) + pad("raw http2", 14) + pad("codec floor", 14));
console.log(
  pad(`(a) stream calls/s, ${STREAM_INFLIGHT} in flight, one stream`, LABEL) +
    pad(f0(oursStream.perSec), 14) +
    pad(f0(gjStream.perSec), 14) +
    pad(f0(rawStream.perSec), 14) +
    pad(f0(codecStream.perSec), 14),
);
console.log(
  pad("    same, JSON as Struct (client jsonText: false)", LABEL) +
    pad(f0(oursStructStream.perSec), 14) +
    `(CPU µs per call: server ${oursStructStream.serverUs.toFixed(2)}, client ${oursStructStream.clientUs.toFixed(2)})`,
);
console.log(pad("    same, typed echo (Command.input Any)", LABEL) + pad(f0(oursTypedStream.perSec), 14));
console.log(pad("    same, Connect protocol via connect-node", LABEL) + pad(f0(perMessageStream.perSec), 14) + "(per-message plumbing, for comparison)");
const us = (n: number) => n.toFixed(2);
const cpuRow = (label: string, pick: (r: CpuDriveResult) => number) =>
  console.log(pad(label, LABEL) + [oursStream, gjStream, rawStream, codecStream].map((r) => pad(us(pick(r)), 14)).join(""));
cpuRow("    CPU µs per call: server process", (r) => r.serverUs);
cpuRow("    CPU µs per call: client process", (r) => r.clientUs);
console.log(pad(`    context updates/s, ${STREAM_INFLIGHT} in flight, one session`, LABEL) + pad(f0(oursUpdates.perSec), 14) + "(memory store, one key put per update)");
console.log(pad("    CPU µs per update: server, client", LABEL) + pad(`${us(oursUpdates.serverUs)}, ${us(oursUpdates.clientUs)}`, 14));
console.log(
  pad("(b) sequential round trip p50 (µs)", LABEL) + pad(f0(oursSeq.p50us), 14) + pad(f0(gjSeq.p50us), 14) + pad(f0(rawSeq.p50us), 14),
);
console.log(pad("    sequential round trip p99 (µs)", LABEL) + pad(f0(oursSeq.p99us), 14) + pad(f0(gjSeq.p99us), 14) + pad(f0(rawSeq.p99us), 14));
console.log(pad(`(c) unary Execute calls/s, ${UNARY_INFLIGHT} in flight, gRPC`, LABEL) + pad(f0(oursUnaryGrpc.perSec), 14) + pad(f0(gjUnary.perSec), 14) + "-");
console.log(pad("    ours, Connect protocol (connect-es client)", LABEL) + pad(f0(oursUnaryConnect.perSec), 14));
console.log(pad("    ours, gRPC, @grpc/grpc-js as the client", LABEL) + pad(f0(oursUnaryGrpcJs.perSec), 14));
if (rounds.length > 1) {
  // Every round, in thousands of calls/s, so the spread behind each median shows.
  const k = (n: number) => (n / 1000).toFixed(n < 100_000 ? 1 : 0);
  const each = (pick: (r: (typeof rounds)[number]) => DriveResult) => pad(rounds.map((r) => k(pick(r).perSec)).join(" "), 13) + " ";
  console.log(`(d) (a) and (c) are medians of ${rounds.length} interleaved rounds; each round, in thousands of calls/s:`);
  console.log(pad("    (a) stream", LABEL) + each((r) => r.ours) + each((r) => r.gj) + each((r) => r.raw) + each((r) => r.codec));
  console.log(pad("    (a) context updates", LABEL) + each((r) => r.updates));
  console.log(pad("    (c) unary Execute", LABEL) + each((r) => r.oursUnary) + each((r) => r.gjUnary));
}
console.log("");
console.log("(e) ratios and the issue's targets");
console.log(`    stream calls/s  ours/grpc-js bidi = ${r2(oursStream.perSec, gjStream.perSec)}  (target >= 1.5: ${mark(oursStream.perSec >= 1.5 * gjStream.perSec)})`);
console.log(`    typed stream    ours/grpc-js bidi = ${r2(oursTypedStream.perSec, gjStream.perSec)}  (for comparison: the target is on the JSON echo above)`);
console.log(`    stream calls/s  ours/raw ceiling  = ${r2(oursStream.perSec, rawStream.perSec)}  (target >= 0.35: ${mark(oursStream.perSec >= 0.35 * rawStream.perSec)})`);
console.log(`    stream calls/s  codec floor/raw   = ${r2(codecStream.perSec, rawStream.perSec)}  (no session, a raw client: what protobuf-es and JSON leave of the ceiling)`);
console.log(`    stream calls/s  ours/codec floor  = ${r2(oursStream.perSec, codecStream.perSec)}`);
console.log(`    updates/s       ours/echo calls/s = ${r2(oursUpdates.perSec, oursStream.perSec)}  (target >= 0.8: ${mark(oursUpdates.perSec >= 0.8 * oursStream.perSec)})`);
console.log(`    sequential p50  ours/raw ceiling  = ${r2(oursSeq.p50us, rawSeq.p50us)}  (target <= 1.5: ${mark(oursSeq.p50us <= 1.5 * rawSeq.p50us)})`);
console.log(`    sequential p50  ours/grpc-js bidi = ${r2(oursSeq.p50us, gjSeq.p50us)}`);
console.log(`    unary calls/s   ours/grpc-js      = ${r2(oursUnaryGrpc.perSec, gjUnary.perSec)}  (target >= 1.0: ${mark(oursUnaryGrpc.perSec >= gjUnary.perSec)})`);
console.log("");

for (const line of await slowConsumer(token)) console.log(line);
console.log("");

for (const script of ["core.ts", "context-sync.ts"]) {
  console.log(`bench/${script}:`);
  process.stdout.write(execFileSync(process.execPath, ["--import", "tsx", fileURLToPath(new URL(`./${script}`, import.meta.url))], { encoding: "utf8" }));
  console.log("");
}
process.exit(0);
