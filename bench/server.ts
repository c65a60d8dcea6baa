/**
 * The server side of bench/run.ts, run in its own process (forked with IPC) so server and load
 * each get a core: `mcp` (createMcpServer, in-memory store, HS256), `grpcjs` (a @grpc/grpc-js
 * echo server from bench/echo.proto) or `raw` (node:http2 echoing gRPC frames, one write per tick:
 * the ceiling), `codec` (the raw ceiling plus the protobuf-es and JSON work of one echo call, no
 * session: the floor under ours on these libraries), or bench/compare.ts's Model Context Protocol SDK echo (`sdk-http`, `sdk-stdio`:
 * bench/lib/sdk-echo.ts). Sends `{ port }` when listening; answers `{ rss }` (current), `{ peak }` (the
 * largest RSS sampled every 10 ms since the last `{ reset }`) and `{ cpu }` (process.cpuUsage():
 * user + system µs of all its threads so far). `{ gc }` (forked with --expose-gc) collects garbage
 * first and answers `{ rss, heapUsed, external }`. `scale` is `mcp` with the connection and
 * per-principal session limits raised for bench/scale.ts (10,000 sessions of one principal).
 */
import { createServer as createH2Server, type ServerHttp2Stream } from "node:http2";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { create, fromBinary } from "@bufbuild/protobuf";
import { ClientMessageSchema, ServerMessageSchema, type ServerMessage } from "../gen/mcp/v1/session_pb.js";
import { encodeFrames } from "../src/transport/grpc-frames.js";
// bench/scale.ts measures the build (what `mcp serve` runs) unless told otherwise.
const { createMcpServer } = (
  process.env["BENCH_SERVER_FROM"] === "build" ? await import("../dist/src/server/server.js" as string) : await import("../src/server/server.js")
) as typeof import("../src/server/server.js");
import { rawFrames } from "./raw-frames.js";

/** Also in bench/run.ts, which mints the tokens. */
const BENCH_SECRET = "bench-secret-0123456789-0123456789-abcdef";

const kind = process.argv[2];
const send = (m: object) => process.send?.(m);

// RSS is sampled only between `reset` and `peak` (the slow-consumer run): reading it costs the
// server time that the throughput runs should not pay.
let peak = 0;
let sampler: ReturnType<typeof setInterval> | undefined;
process.on("message", (m: { op: string }) => {
  if (m.op === "rss") send({ rss: process.memoryUsage.rss() });
  if (m.op === "cpu") send({ cpu: process.cpuUsage() });
  if (m.op === "gc") {
    // Twice: the first pass finalizes what the second frees.
    (globalThis as { gc?: () => void }).gc?.();
    (globalThis as { gc?: () => void }).gc?.();
    const u = process.memoryUsage();
    send({ rss: u.rss, heapUsed: u.heapUsed, external: u.external + u.arrayBuffers });
  }
  if (m.op === "reset") {
    peak = process.memoryUsage.rss();
    clearInterval(sampler);
    sampler = setInterval(() => {
      const r = process.memoryUsage.rss();
      if (r > peak) peak = r;
    }, 10);
    sampler.unref();
    send({ reset: peak });
  }
  if (m.op === "peak") {
    clearInterval(sampler);
    send({ peak: Math.max(peak, process.memoryUsage.rss()) });
  }
  if (m.op === "exit") process.exit(0);
});
process.on("disconnect", () => process.exit(0));

if (kind === "mcp" || kind === "scale") {
  const scale = kind === "scale" ? { maxConnections: 100_000, maxSessionsPerPrincipal: 100_000, logLevel: "warn" } : {};
  const server = createMcpServer({
    ...scale,
    port: 0,
    bindAddress: "127.0.0.1",
    jwtSecret: BENCH_SECRET,
    store: "memory",
    audit: () => {},
    maxInflightCommands: 256,
    slowConsumerTimeoutMs: Number(process.argv[3] ?? 10_000),
  });
  const { port } = await server.listen();
  send({ port });
} else if (kind === "grpcjs") {
  const def = protoLoader.loadSync(fileURLToPath(new URL("./echo.proto", import.meta.url)));
  const pkg = grpc.loadPackageDefinition(def) as unknown as { bench: { v1: { EchoService: grpc.ServiceClientConstructor } } };
  const server = new grpc.Server();
  server.addService(pkg.bench.v1.EchoService.service, {
    echo: (call: grpc.ServerUnaryCall<{ text: string }, { text: string }>, cb: grpc.sendUnaryData<{ text: string }>) =>
      cb(null, { text: call.request.text }),
    echoStream: (call: grpc.ServerDuplexStream<{ text: string }, { text: string }>) => {
      call.on("data", (m: { text: string }) => call.write({ text: m.text }));
      call.on("end", () => call.end());
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) => (err === null ? resolve(p) : reject(err))),
  );
  send({ port });
} else if (kind === "raw") {
  // The ceiling: frames echoed as they are cut from 'data', every tick's frames in one write.
  send({
    port: await serveFrames(() => {
      let out: Buffer[] = [];
      return {
        frame: (buf, start, end) => out.push(buf.subarray(start, end)) > 0,
        take: () => {
          const b = out.length === 1 ? out[0]! : Buffer.concat(out);
          out = [];
          return b;
        },
      };
    }),
  });
} else if (kind === "codec") {
  // The floor: the raw ceiling's stream, frame cutting and one write per tick, plus only the
  // library work our server does for each echo call — protobuf-es decodes the ClientMessage, the
  // runtime's JSON parses its arguments_json and writes the output, protobuf-es creates the
  // ServerMessage (seq, Response with output_json) and encodes the tick's batch with our batch
  // encoder (src/transport/grpc-frames.ts). No session, auth, tool registry, resume ring or limits.
  // (Turns of 16 frames, as ours reads, measured no faster here and cost more CPU per call.)
  send({
    port: await serveFrames(() => {
      let out: ServerMessage[] = [];
      let seq = 0n;
      return {
        frame: (buf, start, end) => {
          const m = fromBinary(ClientMessageSchema, buf.subarray(start + 5, end));
          if (m.message.case !== "command") return false;
          const command = m.message.value;
          if (command.payload.case !== "argumentsJson") return false;
          const args = JSON.parse(command.payload.value) as { text: string };
          const value = JSON.stringify({ text: args.text });
          out.push(create(ServerMessageSchema, { seq: ++seq, message: { case: "response", value: { commandId: command.id, result: { case: "outputJson", value } } } }));
          return true;
        },
        take: () => {
          const batch = out;
          out = [];
          return encodeFrames(ServerMessageSchema, batch);
        },
      };
    }),
  });
} else if (kind === "sdk-http" || kind === "sdk-stdio") {
  // bench/compare.ts's Model Context Protocol SDK peer, loaded only here (its modules are ~30 MB of heap).
  const sdk = await import("./lib/sdk-echo.js");
  if (kind === "sdk-http") send({ port: await sdk.listenSdkHttp() });
  else sdk.serveSdkStdio(); // spawned by the SDK's StdioClientTransport: no IPC, stdout is the protocol
} else {
  throw new TypeError(`unknown server kind ${String(kind)}: mcp | grpcjs | raw | codec | sdk-http | sdk-stdio`);
}

/**
 * The raw and codec servers: node:http2 streams whose frames go to `frame` as they are cut from
 * 'data' (true: there is something to send); once per tick what `take` returns is written.
 * Resolves with the port.
 */
async function serveFrames(open: () => { frame(buf: Buffer, start: number, end: number): boolean; take(): Buffer }): Promise<number> {
  const server = createH2Server();
  server.on("stream", (stream: ServerHttp2Stream) => {
    stream.respond({ ":status": 200, "content-type": "application/grpc+proto" }, { waitForTrailers: true });
    stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
    const { frame, take } = open();
    let pending = false;
    let scheduled = false;
    const flush = () => {
      scheduled = false;
      if (!pending || stream.destroyed) return;
      pending = false;
      stream.write(take());
    };
    const cut = rawFrames((buf, start, end) => {
      if (frame(buf, start, end)) pending = true;
    });
    stream.on("data", (chunk: Buffer) => {
      cut(chunk);
      if (!scheduled && pending) {
        scheduled = true;
        setImmediate(flush);
      }
    });
    stream.on("end", () => {
      flush();
      stream.end();
    });
    stream.on("error", () => {});
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const addr = server.address();
  return typeof addr === "object" && addr !== null ? addr.port : 0;
}
