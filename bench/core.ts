/**
 * The server's cost per echo command and per context update without the network: one session of a real server (same
 * options as bench/server.ts's `mcp`) fed by `Connection.receive()`, 16 commands per round like
 * the stream's turns, answers encoded as gRPC frames by the same code as the node:http2 path.
 * Prints CPU time per command (decode, dispatch, authorize, run the tool, Response, resume ring,
 * encode), the same per context update (one put to the memory store, as bench/run.ts's
 * updates/s row sends it), and bytes allocated per message (V8's sampling heap profiler,
 * collected objects included). Steadier than the throughput figures: use it to compare changes to the core.
 * `node --import tsx bench/core.ts`; part of `npm run bench`.
 */
import { Session as Inspector } from "node:inspector/promises";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { ClientMessageSchema, ServerMessageSchema, type ServerMessage } from "../gen/mcp/v1/session_pb.js";
import { ProtocolVersion } from "../gen/mcp/v1/types_pb.js";
import { mintToken } from "../src/security/index.js";
import { createMcpServer } from "../src/server/server.js";
import { openConnection } from "../src/session/connection.js";
import type { MessageSink } from "../src/session/session.js";
import { encodeFrameBatch, encodeFrames } from "../src/transport/grpc-frames.js";

const SECRET = "bench-secret-0123456789-0123456789-abcdef";
const PER_ROUND = 16;
const WARMUP_ROUNDS = 2_000;
const ROUNDS = 10_000;
const ALLOC_ROUNDS = 3_000;

const server = createMcpServer({ port: 0, bindAddress: "127.0.0.1", jwtSecret: SECRET, store: "memory", audit: () => {}, maxInflightCommands: 256 });
await server.listen();
const token = await mintToken({ secret: SECRET, subject: "bench", roles: ["developer"], ttlSec: 3600, issuer: "mcp", audience: "mcp" });

let answered = 0;
let wake: (() => void) | undefined;
const sink: MessageSink = {
  encode: (batch) => encodeFrameBatch(ServerMessageSchema, batch),
  write(batch: readonly ServerMessage[], encoded) {
    if (encoded === undefined) encodeFrames(ServerMessageSchema, batch);
    answered += batch.length;
    wake?.();
    return true;
  },
  drain: () => Promise.resolve(),
  close() {},
};
const conn = openConnection(server.core, { secure: false, authorization: null }, sink);
conn.receive(create(ClientMessageSchema, { message: { case: "handshake", value: { protocolVersions: [ProtocolVersion.PROTOCOL_VERSION_1_0], token } } }));
while (answered === 0) await new Promise<void>((r) => (wake = r));

// The bytes a client sends; each round decodes them afresh and gives each message a new id.
const command = toBinary(
  ClientMessageSchema,
  create(ClientMessageSchema, { message: { case: "command", value: { id: "x", tool: "echo", payload: { case: "arguments", value: { text: "hello, benchmark" } } } } }),
);
// A context update as bench/run.ts sends it: one put of a 16-character string, unconditional.
const update = toBinary(
  ClientMessageSchema,
  create(ClientMessageSchema, {
    message: {
      case: "update",
      value: { id: "x", contextId: "bench", ops: [{ op: { case: "put", value: { key: "status", value: { kind: { case: "stringValue", value: "hello, benchmark" } } } } }] },
    },
  }),
);
let next = 0;
async function round(bytes: Uint8Array): Promise<void> {
  const target = answered + PER_ROUND;
  for (let i = 0; i < PER_ROUND; i++) {
    const m = fromBinary(ClientMessageSchema, bytes);
    if (m.message.case === "command" || m.message.case === "update") m.message.value.id = `c${next++}`;
    conn.receive(m);
  }
  while (answered < target) await new Promise<void>((r) => (wake = r));
}

/** CPU and wall time per message, and bytes allocated per message, of `bytes` sent in rounds. */
async function measure(bytes: Uint8Array): Promise<{ wallUs: number; cpuUs: number; allocBytes: number }> {
  for (let i = 0; i < WARMUP_ROUNDS; i++) await round(bytes);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < ROUNDS; i++) await round(bytes);
  const wallUs = ((performance.now() - t0) * 1000) / (ROUNDS * PER_ROUND);
  const cpu = process.cpuUsage(cpu0);
  const cpuUs = (cpu.user + cpu.system) / (ROUNDS * PER_ROUND);

  // Allocation: a separate pass, since sampling slows everything down.
  const inspector = new Inspector();
  inspector.connect();
  await inspector.post("HeapProfiler.startSampling", { samplingInterval: 1024, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
  for (let i = 0; i < ALLOC_ROUNDS; i++) await round(bytes);
  const { profile } = await inspector.post("HeapProfiler.stopSampling");
  inspector.disconnect();
  let sampled = 0;
  const stack = [profile.head];
  for (let node = stack.pop(); node !== undefined; node = stack.pop()) {
    sampled += node.selfSize;
    stack.push(...node.children);
  }
  return { wallUs, cpuUs, allocBytes: Math.round(sampled / (ALLOC_ROUNDS * PER_ROUND)) };
}

const echo = await measure(command);
const updates = await measure(update);
console.log(`server core, ${PER_ROUND} per round, no network:`);
console.log(`  echo command (JSON arguments): ${echo.wallUs.toFixed(2)} µs wall, ${echo.cpuUs.toFixed(2)} µs CPU (all threads), ~${echo.allocBytes} bytes allocated`);
console.log(`  context update (memory store): ${updates.wallUs.toFixed(2)} µs wall, ${updates.cpuUs.toFixed(2)} µs CPU (all threads), ~${updates.allocBytes} bytes allocated`);
await server.close();
process.exit(0);
