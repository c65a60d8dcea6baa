/**
 * The fuzz suite (issue 12 item 5; test/fuzz/README.md). A real server runs in a child process;
 * seeded cases throw random and mutated frames, resets, half-closes, garbage bodies and wrong
 * headers at it over every protocol — the session stream on the gRPC fast path and through
 * connect-node (Connect streaming, gRPC-Web), Connect unary JSON and proto over HTTP/1.1 and
 * HTTP/2, gRPC unary, gRPC-Web over HTTP/1.1, and raw TCP garbage — and asserts that
 *   - the process stays up,
 *   - every stream and request ends within CASE_MS, with a status (grpc-status, an HTTP status
 *     with a Connect error or end-of-stream envelope, an HTTP/2 reset) or an mcp.v1.Error,
 *   - a normal client works afterwards,
 *   - the server's heap returns to within HEAP_MARGIN of where it started once the sessions
 *     the cases left behind have expired (a short resume window).
 * Each case has its own PRNG seeded from (seed, case index), so a failure names a case that
 * replays alone: MCP_FUZZ_SEED=<seed> MCP_FUZZ_CASE=<index> npx vitest run test/fuzz.
 */
import { connect as connectTcp } from "node:net";
import { request as http1Request } from "node:http";
import { constants, type ClientHttp2Session, type IncomingHttpHeaders } from "node:http2";
import { create, fromBinary, toBinary, toJsonString, type DescMessage, type DescService } from "@bufbuild/protobuf";
import { afterAll, beforeAll, expect, test } from "vitest";
import { CommandService } from "../../gen/mcp/v1/command_pb.js";
import { ContextService } from "../../gen/mcp/v1/context_pb.js";
import { EventService } from "../../gen/mcp/v1/event_pb.js";
import { AdminService } from "../../gen/mcp/v1/admin_pb.js";
import { ClientMessageSchema, ServerMessageSchema } from "../../gen/mcp/v1/session_pb.js";
import { createMcpClient } from "../../src/client/index.js";
import { connectH2, CONNECT_PATH } from "../helpers/raw-h2.js";
import { startServerProcess, type ServerProcess } from "../helpers/server-process.js";
import { handshake } from "../helpers/server.js";
import { createRandom, deepNesting, frame, mutate, randomMessageBytes, randomPayload, type Random } from "./generators.js";

const SEED = Number(process.env["MCP_FUZZ_SEED"] ?? Math.floor(Math.random() * 2 ** 32));
const CASES = Number(process.env["MCP_FUZZ_CASES"] ?? 2000);
const ONLY_CASE = process.env["MCP_FUZZ_CASE"] === undefined ? undefined : Number(process.env["MCP_FUZZ_CASE"]);
const CONCURRENCY = 8;
/** Every stream or request must have ended this long after the case let go of it. */
const CASE_MS = 10_000;
const RESUME_TTL_MS = 1500;
const HEAP_MARGIN = 24 * 1024 * 1024;
const MAX_MESSAGE_BYTES = 256 * 1024;
const replay = `replay: MCP_FUZZ_SEED=${SEED} npx vitest run test/fuzz`;

let srv: ServerProcess;
let token: string;
const h2s = new Set<ClientHttp2Session>();
/**
 * An h2c connection of the case's own: a stream the server stopped reading keeps its bytes in the
 * connection's flow-control window, and a client's RST_STREAM waits for its own writes to flush
 * (node:http2), so cases sharing a connection would stall each other — not the server.
 */
function h2(): ClientHttp2Session {
  const s = connectH2(srv.url);
  h2s.add(s);
  s.once("close", () => h2s.delete(s));
  return s;
}

beforeAll(async () => {
  srv = await startServerProcess({
    resumeTtlMs: RESUME_TTL_MS,
    heartbeatIntervalMs: 1000,
    slowConsumerTimeoutMs: 1000,
    maxMessageBytes: MAX_MESSAGE_BYTES,
  });
  token = await srv.token("fuzzer");
});
afterAll(async () => {
  for (const s of h2s) s.destroy();
  await srv?.close();
});

/** What a case saw; `problem` set when it broke a rule. */
interface Outcome {
  kind: string;
  ending: string;
  problem?: string;
}

const timeout = <T>(p: Promise<T>, ms: number, onTimeout: T): Promise<T> =>
  new Promise((resolve) => {
    const t = setTimeout(() => resolve(onTimeout), ms);
    void p.then((v) => {
      clearTimeout(t);
      resolve(v);
    });
  });
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function authHeader(r: Random): Record<string, string> {
  const roll = r.int(10);
  if (roll < 8) return { authorization: `Bearer ${token}` };
  if (roll === 8) return { authorization: r.pick(["Bearer", "Basic abc", `Bearer ${token.slice(0, -3)}xyz`, "Bearer a.b.c"]) };
  return {};
}

/** Cuts `body` into envelopes (1 flag byte + uint32 BE length); what follows the last whole one is ignored. */
function envelopes(body: Buffer): { flag: number; data: Buffer }[] {
  const out: { flag: number; data: Buffer }[] = [];
  let off = 0;
  while (body.length - off >= 5) {
    const len = body.readUInt32BE(off + 1);
    if (body.length - off - 5 < len) break;
    out.push({ flag: body[off]!, data: body.subarray(off + 5, off + 5 + len) });
    off += 5 + len;
  }
  return out;
}

function lastServerMessageIsError(body: Buffer): boolean {
  const messages = envelopes(body).filter((e) => e.flag === 0);
  const last = messages.at(-1);
  if (last === undefined) return false;
  try {
    return fromBinary(ServerMessageSchema, last.data).message.case === "error";
  } catch {
    return false;
  }
}

/** The session stream over HTTP/2: gRPC (the fast path), Connect streaming or gRPC-Web (connect-node). */
async function sessionCase(r: Random, n: number, conn: ClientHttp2Session): Promise<Outcome> {
  const flavour = r.pick(["grpc", "grpc", "grpc", "connect", "grpc-web"] as const);
  const contentType = { grpc: "application/grpc+proto", connect: "application/connect+proto", "grpc-web": "application/grpc-web+proto" }[flavour];
  const kind = `session/${flavour}`;
  let stream;
  try {
    stream = conn.request({ ":method": "POST", ":path": CONNECT_PATH, "content-type": contentType, te: "trailers", ...authHeader(r) });
  } catch {
    return { kind, ending: "connection gone before the stream (GOAWAY)" };
  }
  stream.on("error", () => {});
  const chunks: Buffer[] = [];
  let headers: IncomingHttpHeaders | undefined;
  let trailers: IncomingHttpHeaders | undefined;
  stream.on("response", (h) => (headers = h));
  stream.on("trailers", (t) => (trailers = t));
  stream.on("data", (c: Buffer) => chunks.push(c));
  const closed = new Promise<void>((resolve) => stream.once("close", () => resolve()));
  let weReset = false;
  let sentWatch = false;
  const log: string[] = [];
  const write = (b: Uint8Array, what = "bytes") => {
    log.push(`${what}(${b.length})`);
    if (!stream.destroyed && !stream.writableEnded) stream.write(b);
  };

  // HEADERS then RST_STREAM at once: node emits 'stream' on the server a tick later, on a dead stream.
  if (r.chance(0.1)) {
    stream.close(constants.NGHTTP2_CANCEL);
    const ok = await timeout(closed.then(() => true), CASE_MS, false);
    return ok ? { kind, ending: "reset at once by the client" } : { kind, ending: "hung", problem: "a reset stream never closed" };
  }
  // Mostly a real handshake first, so the cases reach past it.
  if (r.chance(0.7)) write(frame(toBinary(ClientMessageSchema, create(ClientMessageSchema, { message: handshake(token) }))), "handshake");
  const actions = 1 + r.int(8);
  for (let i = 0; i < actions && !stream.destroyed; i++) {
    const roll = r.int(20);
    if (roll < 8) {
      const payload = randomPayload(r, token, n * 100 + i);
      // A watch (or a subscription-like wait) keeps a half-closed stream open: see below.
      sentWatch ||= payload.case === "sync" && payload.value.watch === true;
      write(frame(toBinary(ClientMessageSchema, create(ClientMessageSchema, { message: payload }))), String(payload.case));
    } else if (roll < 12) {
      sentWatch = true; // a mutation may turn anything into a watch
      write(frame(mutate(r, randomMessageBytes(r, token, i))), "mutated");
    } else if (roll < 13) write(r.bytes(1 + r.int(64)), "garbage"); // not even a frame
    else if (roll < 14) write(frame(r.bytes(8), 1), "compressed"); // never negotiated
    else if (roll < 15) write(frame(new Uint8Array(0), 0, MAX_MESSAGE_BYTES + 1 + r.int(2 ** 30)), "oversized"); // a length beyond the limit
    else if (roll < 16) write(frame(r.bytes(4), 0, 1000), "short"); // a frame that lies about its length
    else if (roll < 17) write(frame(deepNesting(100 + r.int(500))), "deep");
    else if (roll < 18) write(frame(new Uint8Array(0), r.pick([0x02, 0x80, 0xff])), "flags"); // end-stream / trailer flags from a client
    else await sleep(r.int(30));
  }
  const ending = r.int(10);
  log.push(ending < 3 ? "reset" : "end");
  if (ending < 3) {
    weReset = true;
    stream.close(r.pick([constants.NGHTTP2_CANCEL, constants.NGHTTP2_NO_ERROR, constants.NGHTTP2_INTERNAL_ERROR]));
  } else if (!stream.destroyed) stream.end();

  // A watch keeps a half-closed stream open (ARCHITECTURE.md "half-close is not goodbye"): give it
  // a while, then cancel as a client would.
  if (weReset) {
    // node:http2 sends a client's RST_STREAM only once its own writes flushed; a server that
    // stopped reading this stream never takes them. destroy() resets at once.
    if (!(await timeout(closed.then(() => true), 1000, false))) stream.destroy();
    const ok = await timeout(closed.then(() => true), CASE_MS, false);
    return ok ? { kind, ending: "reset by the client" } : { kind, ending: "hung", problem: "a reset stream never closed" };
  }
  let endedInTime = await timeout(closed.then(() => true), sentWatch ? 3000 : CASE_MS, false);
  if (!endedInTime && sentWatch) {
    weReset = true;
    stream.destroy();
    endedInTime = await timeout(closed.then(() => true), CASE_MS, false);
  }
  if (!endedInTime) {
    stream.destroy();
    const got = envelopes(Buffer.concat(chunks)).map((e) => {
      try {
        const m = fromBinary(ServerMessageSchema, e.data).message;
        return m.case === "error" ? `error:${m.value.code}` : String(m.case);
      } catch {
        return `flag${e.flag}`;
      }
    });
    return { kind, ending: "hung", problem: `the stream did not end within ${CASE_MS} ms (sent ${log.join(" ")}; got ${got.join(" ")}; id ${stream.id} pending ${stream.pending} destroyed ${stream.destroyed} rst ${stream.rstCode} conn ${conn.destroyed ? "destroyed" : conn.closed ? "closed" : "open"})` };
  }
  if (weReset) return { kind, ending: "reset by the client" };
  if (conn.destroyed || conn.closed) return { kind, ending: "connection closed (GOAWAY)" };
  const body = Buffer.concat(chunks);
  const status = trailers?.["grpc-status"] ?? headers?.["grpc-status"];
  if (status !== undefined) return { kind, ending: `grpc-status ${String(status)}` };
  const env = envelopes(body);
  if (env.some((e) => (flavour === "connect" && e.flag === 0x02) || (flavour === "grpc-web" && (e.flag & 0x80) !== 0))) return { kind, ending: "end-of-stream envelope" };
  if (lastServerMessageIsError(body)) return { kind, ending: "mcp.v1.Error" };
  if ((stream.rstCode ?? 0) !== 0) return { kind, ending: `reset by the server (${stream.rstCode})` };
  const http = Number(headers?.[":status"] ?? 0);
  if (http !== 0 && http !== 200) return { kind, ending: `HTTP ${http}` };
  return { kind, ending: "no status", problem: `ended without a status or an mcp.v1.Error (HTTP ${String(http)}, ${body.length} bytes)` };
}

/** Unary and server-streaming RPCs: Connect JSON / proto, gRPC, gRPC-Web; over HTTP/2 or HTTP/1.1. */
const SERVICES: DescService[] = [CommandService, ContextService, EventService, AdminService];
const SAMPLES: Record<string, Record<string, unknown>> = {
  execute: { id: "u", tool: "echo", payload: { case: "arguments", value: { text: "hi" } } },
  executeStream: { id: "u", tool: "echo", payload: { case: "arguments", value: { text: "hi" } } },
  executeBatch: { commands: [{ id: "a", tool: "echo", payload: { case: "arguments", value: { text: "x" } } }] },
  getContext: { contextId: "fuzz" },
  syncContext: { contextId: "fuzz", knownVersion: 0n },
  watchContext: { contextId: "fuzz", knownVersion: 0n },
  updateContext: { contextId: "fuzz", ops: [{ op: { case: "put", value: { key: "k", value: { kind: { case: "stringValue", value: "v" } } } } }] },
  revokeToken: { jti: "nope" },
};

async function unaryCase(r: Random, conn: ClientHttp2Session): Promise<Outcome> {
  const service = r.pick(SERVICES);
  const method = r.pick(service.methods);
  const path = `/${service.typeName}/${method.name}`;
  const protocol = r.pick(["connect-json", "connect-proto", "grpc", "grpc-web"] as const);
  const overH1 = protocol !== "grpc" && r.chance(0.5);
  const kind = `unary/${protocol}/${overH1 ? "h1" : "h2"}`;
  const input: DescMessage = method.input;
  const valid = create(input, (SAMPLES[method.localName] ?? {}) as never); // init shapes of the sample table match their methods
  let body: Uint8Array;
  const headers: Record<string, string> = { ...authHeader(r) };
  if (protocol === "connect-json") {
    const text = toJsonString(input, valid);
    body = r.chance(0.8) ? mutate(r, Buffer.from(text)) : Buffer.from(r.pick(["", "null", "[]", "{", '{"id":', "\u0000", '{"a":'.repeat(5000)]));
    headers["content-type"] = r.chance(0.9) ? "application/json" : r.pick(["text/plain", "application/json; charset=latin1", ""]);
    if (method.methodKind !== "unary") headers["content-type"] = "application/connect+json";
    if (method.methodKind !== "unary") body = frame(body);
  } else {
    const bin = toBinary(input, valid);
    const payload = r.chance(0.8) ? mutate(r, bin) : r.chance(0.5) ? deepNesting(100 + r.int(500)) : r.bytes(r.int(100));
    if (protocol === "connect-proto") {
      headers["content-type"] = method.methodKind === "unary" ? "application/proto" : "application/connect+proto";
      body = method.methodKind === "unary" ? payload : frame(payload);
      if (r.chance(0.1)) headers["content-encoding"] = "gzip"; // claimed, not applied
    } else {
      headers["content-type"] = protocol === "grpc" ? "application/grpc+proto" : "application/grpc-web+proto";
      const f = r.int(10);
      body = f === 0 ? frame(payload, 1) : f === 1 ? frame(payload, 0, payload.length + 10) : f === 2 ? frame(new Uint8Array(0), 0, 2 ** 31) : frame(payload);
      if (r.chance(0.1)) headers["grpc-encoding"] = r.pick(["gzip", "snappy"]);
      if (protocol === "grpc") headers["te"] = "trailers";
    }
    if (protocol.startsWith("connect") && method.methodKind === "unary") headers["connect-protocol-version"] = "1";
  }
  if (protocol === "connect-json" && method.methodKind === "unary" && r.chance(0.9)) headers["connect-protocol-version"] = "1";
  const serverStream = method.methodKind === "server_streaming";
  const resetEarly = !overH1 && r.chance(0.15);
  return overH1 ? http1Case(kind, path, headers, body, r, serverStream) : http2UnaryCase(kind, path, headers, body, r, serverStream, resetEarly, conn);
}

async function http2UnaryCase(
  kind: string,
  path: string,
  headers: Record<string, string>,
  body: Uint8Array,
  r: Random,
  serverStream: boolean,
  resetEarly: boolean,
  conn: ClientHttp2Session,
): Promise<Outcome> {
  let stream;
  try {
    stream = conn.request({ ":method": r.chance(0.97) ? "POST" : r.pick(["GET", "PUT"]), ":path": path, ...headers });
  } catch {
    return { kind, ending: "connection gone before the stream (GOAWAY)" };
  }
  stream.on("error", () => {});
  let status: IncomingHttpHeaders | undefined;
  let trailers: IncomingHttpHeaders | undefined;
  const chunks: Buffer[] = [];
  stream.on("response", (h) => (status = h));
  stream.on("trailers", (t) => (trailers = t));
  stream.on("data", (c: Buffer) => chunks.push(c));
  const closed = new Promise<void>((resolve) => stream.once("close", () => resolve()));
  if (resetEarly) {
    // Reset at once (HEADERS then RST_STREAM) or mid-body.
    if (r.chance(0.5)) stream.write(body.subarray(0, r.int(body.length + 1)));
    stream.close(constants.NGHTTP2_CANCEL);
  } else if (r.chance(0.1)) {
    stream.write(body.subarray(0, r.int(body.length + 1))); // half a body, then the end
    stream.end();
  } else stream.end(body);
  // A watch or subscription streams until cancelled: read a little, then cancel.
  let ended = await timeout(closed.then(() => true), serverStream ? 1000 : CASE_MS, false);
  if (!ended && serverStream) {
    stream.destroy();
    return { kind, ending: "server stream cancelled by the client" };
  }
  if (!ended) {
    stream.destroy();
    return { kind, ending: "hung", problem: `the request did not end within ${CASE_MS} ms` };
  }
  ended = true;
  if (resetEarly) return { kind, ending: "reset by the client" };
  if (conn.destroyed || conn.closed) return { kind, ending: "connection closed (GOAWAY)" };
  const http = status?.[":status"] === undefined ? undefined : Number(status[":status"]);
  const grpcStatus = trailers?.["grpc-status"] ?? status?.["grpc-status"];
  if (grpcStatus !== undefined) return { kind, ending: `grpc-status ${String(grpcStatus)}` };
  if (http !== undefined) return statusOutcome(kind, http, Buffer.concat(chunks), status?.["content-type"]);
  if ((stream.rstCode ?? 0) !== 0) return { kind, ending: `reset by the server (${stream.rstCode})` };
  return { kind, ending: "no status", problem: "ended without an HTTP status" };
}

function http1Case(kind: string, path: string, headers: Record<string, string>, body: Uint8Array, r: Random, serverStream: boolean): Promise<Outcome> {
  const url = new URL(srv.url);
  return new Promise<Outcome>((resolve) => {
    const req = http1Request({ host: url.hostname, port: url.port, method: "POST", path, headers, agent: false });
    const timer = setTimeout(() => {
      req.destroy();
      resolve(serverStream ? { kind, ending: "server stream cancelled by the client" } : { kind, ending: "hung", problem: `no complete response within ${CASE_MS} ms` });
    }, serverStream ? 1000 : CASE_MS);
    req.on("error", (e) => {
      clearTimeout(timer);
      resolve({ kind, ending: `connection error (${(e as NodeJS.ErrnoException).code ?? e.message})` });
    });
    req.on("response", (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("error", () => {});
      res.on("end", () => {
        clearTimeout(timer);
        const grpcStatus = res.headers["grpc-status"];
        resolve(grpcStatus !== undefined ? { kind, ending: `grpc-status ${String(grpcStatus)}` } : statusOutcome(kind, res.statusCode ?? 0, Buffer.concat(chunks), res.headers["content-type"]));
      });
    });
    if (r.chance(0.1)) {
      req.write(body.subarray(0, r.int(body.length + 1)));
      req.destroy(); // the client goes away mid-body
      clearTimeout(timer);
      resolve({ kind, ending: "client went away mid-body" });
      return;
    }
    req.end(body);
  });
}

/** An HTTP answer counts as a status when it is a Connect error (JSON with a code), a body that ends with an end-of-stream / trailer envelope, or a success. */
function statusOutcome(kind: string, http: number, body: Buffer, contentType: string | string[] | undefined): Outcome {
  const ct = String(contentType ?? "");
  if (ct.startsWith("application/grpc-web")) {
    const trailer = envelopes(body).find((e) => (e.flag & 0x80) !== 0);
    if (trailer !== undefined && /grpc-status:\s*\d+/i.test(trailer.data.toString())) return { kind, ending: `grpc-web trailer, HTTP ${http}` };
  }
  if (ct.startsWith("application/connect+")) {
    if (envelopes(body).some((e) => e.flag === 0x02)) return { kind, ending: `connect end-of-stream, HTTP ${http}` };
  }
  if (http === 200) return { kind, ending: "HTTP 200" };
  if (ct.startsWith("application/json")) {
    try {
      const err = JSON.parse(body.toString()) as { code?: unknown };
      if (typeof err.code === "string") return { kind, ending: `HTTP ${http} ${err.code}` };
    } catch {
      // fall through: a non-200 without a Connect error body
    }
  }
  // Any other HTTP status is still a status (415 for a content-type no protocol takes, 404 for an unknown path…).
  return { kind, ending: `HTTP ${http}` };
}

/** Bytes on a raw TCP connection: after the HTTP/2 preface, or instead of any HTTP at all. */
function tcpCase(r: Random): Promise<Outcome> {
  const url = new URL(srv.url);
  const kind = "tcp";
  return new Promise<Outcome>((resolve) => {
    const sock = connectTcp(Number(url.port), url.hostname);
    sock.on("error", () => {});
    const timer = setTimeout(() => {
      sock.destroy();
      resolve({ kind, ending: "client hung up" });
    }, 1000);
    sock.on("close", () => {
      clearTimeout(timer);
      resolve({ kind, ending: "server closed the connection" });
    });
    sock.on("data", () => {});
    sock.on("connect", () => {
      const preface = r.chance(0.6) ? Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") : r.chance(0.5) ? Buffer.from("POST / HTTP/1.1\r\nHost: x\r\n") : Buffer.alloc(0);
      sock.write(Buffer.concat([preface, r.bytes(r.int(400))]));
      if (r.chance(0.3)) sock.end();
    });
  });
}

async function runCase(n: number): Promise<Outcome> {
  const r = createRandom((SEED ^ Math.imul(n + 1, 0x9e3779b1)) >>> 0);
  const roll = r.int(20);
  if (roll === 19) return tcpCase(r);
  const conn = h2();
  try {
    return await (roll < 9 ? sessionCase(r, n, conn) : unaryCase(r, conn));
  } finally {
    conn.destroy();
  }
}

/** The server answers a normal client: a session with a command, and a unary call. */
async function normalClientWorks(): Promise<void> {
  const client = createMcpClient({ baseUrl: srv.url, token });
  const session = await client.connect();
  expect(await session.call("echo", { text: "after" })).toEqual({ text: "after" });
  session.close();
  expect(await client.call("echo", { text: "unary" })).toEqual({ text: "unary" });
}

test(`fuzz: ${ONLY_CASE === undefined ? CASES : 1} seeded cases over every protocol (seed ${SEED}; ${replay})`, { timeout: Math.max(110_000, CASES * 60) }, async () => {
  await normalClientWorks();
  const before = await srv.memory();
  const indexes = ONLY_CASE === undefined ? Array.from({ length: CASES }, (_, i) => i) : [ONLY_CASE];
  const problems: string[] = [];
  const endings = new Map<string, number>();
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < indexes.length) {
        const n = indexes[next++]!; // next < length
        let o: Outcome;
        try {
          o = await runCase(n);
        } catch (e) {
          o = { kind: "?", ending: "threw", problem: `the case threw: ${e instanceof Error ? e.stack : String(e)}` };
        }
        const key = `${o.kind}: ${o.ending.replace(/\d{3,}/g, "N")}`;
        endings.set(key, (endings.get(key) ?? 0) + 1);
        if (o.problem !== undefined) problems.push(`case ${n} (${o.kind}): ${o.problem} — replay: MCP_FUZZ_SEED=${SEED} MCP_FUZZ_CASE=${n} npx vitest run test/fuzz`);
        if (!srv.alive) problems.push(`case ${n} (${o.kind}): the server process died — ${replay}\n${srv.stderr.slice(-4000)}`);
        if (!srv.alive) return;
      }
    }),
  );
  console.log(`fuzz seed ${SEED}: ${indexes.length} cases\n${[...endings].sort().map(([k, v]) => `  ${v}\t${k}`).join("\n")}`);
  expect(problems, `seed ${SEED}`).toEqual([]);
  expect(srv.alive, `seed ${SEED}: the server process died\n${srv.stderr}`).toBe(true);
  await normalClientWorks();

  // Every session the cases left behind expires within the resume window (+ heartbeat drops).
  let after = await srv.memory();
  for (let i = 0; i < 60 && after.sessions > 0; i++) {
    await sleep(250);
    after = await srv.memory();
  }
  expect(after.sessions, `seed ${SEED}: sessions still held after the resume window`).toBe(0);
  const grew = after.heapUsed - before.heapUsed;
  console.log(`fuzz seed ${SEED}: heap ${(before.heapUsed / 1048576).toFixed(1)} → ${(after.heapUsed / 1048576).toFixed(1)} MiB`);
  expect(grew, `seed ${SEED}: the heap grew by ${grew} bytes`).toBeLessThan(HEAP_MARGIN);
});
