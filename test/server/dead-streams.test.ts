/**
 * A bad peer costs its own stream, never the process (issue 12 item 1, ARCHITECTURE.md "Any
 * callback may meet a dead stream"): raw node:http2 clients reset streams at every point of their
 * life — in the packet that opened them, after the handshake, inside a frame, while commands run,
 * while a watch streams, inside a unary body — on the fast paths and on connect-node's. After
 * each, the same server still serves a normal client. An exception thrown in a transport callback
 * would surface as an unhandled error and fail this file.
 */
import { connect as h2connect, constants, type ClientHttp2Session, type ClientHttp2Stream } from "node:http2";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { CommandSchema, CommandService } from "../../gen/mcp/v1/command_pb.js";
import { ContextService } from "../../gen/mcp/v1/context_pb.js";
import { ClientMessageSchema, ServerMessageSchema, type ServerMessage } from "../../gen/mcp/v1/session_pb.js";
import { args, createTestTools, type Probe } from "../helpers/command-tools.js";
import { eventually } from "../helpers/eventually.js";
import { handshake, openSession, startServer, type ClientPayload, type TestServer } from "../helpers/server.js";

const { NGHTTP2_CANCEL } = constants;

let t: TestServer;
let probe: Probe;
let token: string;
const sessions: ClientHttp2Session[] = [];

beforeAll(async () => {
  const tools = createTestTools();
  probe = tools.probe;
  t = await startServer({ tools: tools.tools });
  token = await t.token("mallory", ["developer"]);
});
afterEach(() => {
  for (const s of sessions.splice(0)) s.destroy();
});
afterAll(() => t.close());

/** A length-prefixed frame of one ClientMessage (gRPC, gRPC-Web and Connect streaming share it). */
function frame(payload: ClientPayload): Buffer {
  const bin = toBinary(ClientMessageSchema, create(ClientMessageSchema, { message: payload }));
  const out = Buffer.alloc(5 + bin.length);
  out.writeUInt32BE(bin.length, 1);
  out.set(bin, 5);
  return out;
}

/** Decodes the ServerMessages of a response as they arrive (a non-message frame ends the decoding). */
function serverMessages(stream: ClientHttp2Stream): { messages: ServerMessage[]; until(check: (m: ServerMessage[]) => boolean, what: string): Promise<void> } {
  const messages: ServerMessage[] = [];
  let buf = Buffer.alloc(0);
  stream.on("data", (chunk: Buffer) => {
    buf = Buffer.concat([buf, chunk]);
    while (buf.length >= 5 && buf.length >= 5 + buf.readUInt32BE(1)) {
      const len = buf.readUInt32BE(1);
      if (buf[0] === 0) messages.push(fromBinary(ServerMessageSchema, buf.subarray(5, 5 + len)));
      buf = buf.subarray(5 + len);
    }
  });
  return { messages, until: (check, what) => eventually(() => check(messages), what) };
}

/** A connected raw HTTP/2 session (the preface and SETTINGS exchanged). */
async function connected(): Promise<ClientHttp2Session> {
  const session = h2connect(t.url);
  session.on("error", () => {});
  sessions.push(session);
  await new Promise<void>((resolve, reject) => {
    session.once("connect", () => resolve());
    session.once("error", reject);
  });
  return session;
}

function request(session: ClientHttp2Session, path: string, contentType: string, extra: Record<string, string> = {}): ClientHttp2Stream {
  const stream = session.request({ ":method": "POST", ":path": path, "content-type": contentType, te: "trailers", ...extra });
  stream.on("error", () => {});
  return stream;
}

const closed = (stream: ClientHttp2Stream) => new Promise<void>((resolve) => (stream.closed ? resolve() : stream.once("close", () => resolve())));

/** The server is up and a normal client works: a session stream with an echo, and a unary Execute. */
async function serverStillWorks(): Promise<void> {
  const { s } = await openSession(t.url, token);
  s.send({ case: "command", value: { id: "alive", tool: "echo", payload: { case: "arguments", value: { text: "still here" } } } });
  const m = await s.next();
  expect(m?.message.case === "response" ? m.message.value.result : undefined).toMatchObject({ case: "output", value: { text: "still here" } });
  s.close();
  const client = createClient(CommandService, createGrpcTransport({ baseUrl: t.url }));
  const r = await client.execute({ tool: "echo", payload: { case: "arguments", value: { text: "unary" } } }, { headers: { authorization: `Bearer ${token}` } });
  expect(r.result).toMatchObject({ case: "output", value: { text: "unary" } });
}

/** Every path a request can take: the node:http2 fast paths and connect-node's protocols. */
const PATHS = [
  { name: "session stream, gRPC (fast path)", path: "/mcp.v1.SessionService/Connect", ct: "application/grpc+proto" },
  { name: "session stream, gRPC gzip (connect-node)", path: "/mcp.v1.SessionService/Connect", ct: "application/grpc+proto", extra: { "grpc-encoding": "gzip" } },
  { name: "session stream, Connect protocol", path: "/mcp.v1.SessionService/Connect", ct: "application/connect+proto" },
  { name: "session stream, gRPC-Web", path: "/mcp.v1.SessionService/Connect", ct: "application/grpc-web+proto" },
  { name: "Execute, gRPC (fast path)", path: "/mcp.v1.CommandService/Execute", ct: "application/grpc" },
  { name: "ListTools, gRPC (fast path)", path: "/mcp.v1.CommandService/ListTools", ct: "application/grpc" },
  { name: "Execute, Connect unary", path: "/mcp.v1.CommandService/Execute", ct: "application/proto" },
  { name: "ExecuteStream, gRPC", path: "/mcp.v1.CommandService/ExecuteStream", ct: "application/grpc" },
  { name: "WatchContext, Connect", path: "/mcp.v1.ContextService/WatchContext", ct: "application/connect+proto" },
  { name: "unknown path", path: "/nope.Service/Nope", ct: "application/grpc" },
] as const;

describe("HEADERS immediately followed by RST_STREAM", () => {
  for (const p of PATHS) {
    test(`${p.name}: twenty on one connection, then the server still works`, async () => {
      const session = await connected();
      const streams: ClientHttp2Stream[] = [];
      for (let i = 0; i < 20; i++) {
        // request() and close() in one tick: node sends HEADERS and RST_STREAM in one write.
        const s = request(session, p.path, p.ct, "extra" in p ? p.extra : {});
        s.close(NGHTTP2_CANCEL);
        streams.push(s);
      }
      await Promise.all(streams.map(closed));
      // The connection itself survives the resets too.
      const ping = await new Promise<boolean>((resolve) => session.ping((err) => resolve(err === null)));
      expect(ping).toBe(true);
      await serverStillWorks();
    });
  }
});

/** The session stream on each protocol that can carry it over HTTP/2. */
const STREAMS = [
  { name: "gRPC (fast path)", ct: "application/grpc+proto" },
  { name: "Connect protocol (connect-node)", ct: "application/connect+proto" },
  { name: "gRPC-Web (connect-node)", ct: "application/grpc-web+proto" },
] as const;

/** Opens a session stream with a Handshake and waits for its HandshakeResult. */
async function handshaken(ct: string): Promise<{ stream: ClientHttp2Stream; rx: ReturnType<typeof serverMessages>; sessionId: string }> {
  const session = await connected();
  const stream = request(session, "/mcp.v1.SessionService/Connect", ct);
  const rx = serverMessages(stream);
  stream.write(frame(handshake(token)));
  await rx.until((m) => m.length > 0, "the HandshakeResult");
  const hr = rx.messages[0]!;
  if (hr.message.case !== "handshakeResult") throw new Error(`expected a HandshakeResult, got ${hr.message.case}`);
  return { stream, rx, sessionId: hr.message.value.sessionId };
}

/** The client resets the stream; the server detaches its session (kept for resume). */
async function resetAndExpectParked(stream: ClientHttp2Stream, sessionId: string): Promise<void> {
  stream.close(NGHTTP2_CANCEL);
  await closed(stream);
  await eventually(() => t.server.core.sessions.get(sessionId)?.connected === false, `session ${sessionId} detached`);
}

let ids = 0;
const id = (p: string) => `${p}-${++ids}`;

for (const p of STREAMS) {
  describe(`a reset later in a session stream's life: ${p.name}`, () => {
    test("right after the handshake", async () => {
      const { stream, sessionId } = await handshaken(p.ct);
      await resetAndExpectParked(stream, sessionId);
      await serverStillWorks();
    });

    test("inside a frame: the header and half a message, then RST_STREAM", async () => {
      const { stream, sessionId } = await handshaken(p.ct);
      const f = frame({ case: "command", value: { id: id("half"), tool: "echo", payload: args({ text: "x".repeat(200) }) } });
      stream.write(f.subarray(0, 60));
      await resetAndExpectParked(stream, sessionId);
      await serverStillWorks();
    });

    test("while commands run and output streams: they finish into the parked session", async () => {
      const { stream, rx, sessionId } = await handshaken(p.ct);
      const sleeps = Array.from({ length: 10 }, () => id("sleep"));
      const spam = id("spam");
      for (const c of sleeps) stream.write(frame({ case: "command", value: { id: c, tool: "sleep", payload: args({ ms: 100 }) } }));
      stream.write(frame({ case: "command", value: { id: spam, tool: "spam", payload: args({ burst: 50 }), timeoutMs: 400 } }));
      await rx.until((m) => m.some((x) => x.message.case === "event"), "output events");
      await resetAndExpectParked(stream, sessionId);
      // The commands end by themselves (their answers go to the resume buffer): no write reaches the dead stream.
      await eventually(() => sleeps.every((c) => probe.finished.includes(c)), "the sleeps to finish");
      expect(await probe.abortedWith(spam)).toBe("timeout");
      await serverStillWorks();
    });

    test("while a watch streams changes another client makes", async () => {
      const { stream, rx, sessionId } = await handshaken(p.ct);
      const ctx = id("reset-watch");
      stream.write(frame({ case: "sync", value: { contextId: ctx, knownVersion: 0n, watch: true } }));
      await rx.until((m) => m.some((x) => x.message.case === "contextSync"), "the first sync");
      const other = createClient(ContextService, createGrpcTransport({ baseUrl: t.url }));
      const writes = (async () => {
        for (let i = 0; i < 40; i++) {
          await other.updateContext(
            { contextId: ctx, ops: [{ op: { case: "put", value: { key: `k${i % 5}`, value: { kind: { case: "numberValue", value: i } } } } }] },
            { headers: { authorization: `Bearer ${token}` } },
          );
          if (i === 10) stream.close(NGHTTP2_CANCEL);
        }
      })();
      await writes;
      await resetAndExpectParked(stream, sessionId);
      await eventually(() => t.server.core.sessions.get(sessionId)?.watchCount === 0 || t.server.core.sessions.get(sessionId)?.connected === false, "the watch stopped or parked");
      await serverStillWorks();
    });

    test("after the half-close, while the drain waits for running commands", async () => {
      const { stream, sessionId } = await handshaken(p.ct);
      const c = id("draining");
      stream.write(frame({ case: "command", value: { id: c, tool: "sleep", payload: args({ ms: 150 }) } }));
      stream.end();
      await probe.startedOnce(c);
      await resetAndExpectParked(stream, sessionId);
      await eventually(() => probe.finished.includes(c), "the command to finish");
      await serverStillWorks();
    });

    test("the whole connection dies (client session destroyed) while commands run and a watch is open", async () => {
      const { stream, sessionId } = await handshaken(p.ct);
      stream.write(frame({ case: "sync", value: { contextId: id("dead-conn"), knownVersion: 0n, watch: true } }));
      const c = id("dead-conn-sleep");
      stream.write(frame({ case: "command", value: { id: c, tool: "sleep", payload: args({ ms: 100 }) } }));
      await probe.startedOnce(c);
      // Gone without a word: the client side of the TCP connection is torn down.
      stream.session?.destroy();
      await eventually(() => t.server.core.sessions.get(sessionId)?.connected === false, "the session detached");
      await eventually(() => probe.finished.includes(c), "the command to finish");
      await serverStillWorks();
    });
  });
}

/** Unary Execute on each protocol: content type and how one message is carried. */
const UNARY = [
  { name: "gRPC (fast path)", ct: "application/grpc", enveloped: true },
  { name: "gRPC-Web (connect-node)", ct: "application/grpc-web+proto", enveloped: true },
  { name: "Connect unary (connect-node)", ct: "application/proto", enveloped: false },
] as const;

for (const u of UNARY) {
  describe(`a reset in a unary Execute: ${u.name}`, () => {
    const body = (c: string, tool: string, a: Record<string, number | string>) => {
      const bin = Buffer.from(toBinary(CommandSchema, create(CommandSchema, { id: c, tool, payload: args(a) })));
      if (!u.enveloped) return bin;
      const out = Buffer.alloc(5 + bin.length);
      out.writeUInt32BE(bin.length, 1);
      out.set(bin, 5);
      return out;
    };

    test("mid-body: half the request, then RST_STREAM", async () => {
      const session = await connected();
      const s = request(session, "/mcp.v1.CommandService/Execute", u.ct, { authorization: `Bearer ${token}` });
      const b = body(id("mid"), "echo", { text: "y".repeat(300) });
      s.write(b.subarray(0, 100));
      await new Promise((r) => setTimeout(r, 20));
      s.close(NGHTTP2_CANCEL);
      await closed(s);
      await serverStillWorks();
    });

    test("while the command runs: its handler's signal fires with cancelled, and nothing is written to the dead stream", async () => {
      const session = await connected();
      const c = id("unary-gate");
      const s = request(session, "/mcp.v1.CommandService/Execute", u.ct, { authorization: `Bearer ${token}` });
      s.end(body(c, "gate", { key: c }));
      await probe.startedOnce(c);
      s.close(NGHTTP2_CANCEL);
      await closed(s);
      expect(await probe.abortedWith(c)).toBe("cancelled");
      probe.release(c);
      await serverStillWorks();
    });
  });
}
