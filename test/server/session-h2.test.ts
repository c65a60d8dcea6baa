/**
 * The session stream's HTTP/2 fast path (src/server/session-h2.ts), driven with raw node:http2
 * frames so framing edge cases can be produced on purpose, plus the proof that the Connect
 * protocol and gRPC-Web still reach connect-node.
 */
import { connect as h2connect, type ClientHttp2Session, type ClientHttp2Stream } from "node:http2";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";
import { eventually } from "../helpers/eventually.js";
import { ErrorKind } from "../../gen/mcp/v1/error_pb.js";
import { ClientMessageSchema, ServerMessageSchema, SessionService, type ServerMessage } from "../../gen/mcp/v1/session_pb.js";
import { createPushable } from "../../src/pushable.js";
import { handshake, startServer, type ClientPayload, type TestServer } from "../helpers/server.js";

const frame = (payload: ClientPayload, flag = 0): Buffer => {
  const bin = toBinary(ClientMessageSchema, create(ClientMessageSchema, { message: payload }));
  const out = Buffer.alloc(5 + bin.length);
  out[0] = flag;
  out.writeUInt32BE(bin.length, 1);
  out.set(bin, 5);
  return out;
};

interface RawH2 {
  session: ClientHttp2Session;
  stream: ClientHttp2Stream;
  /** The next decoded ServerMessage; undefined once the stream ended. */
  next(): Promise<ServerMessage | undefined>;
  rest(): Promise<ServerMessage[]>;
  trailers: Promise<Record<string, string | string[] | undefined>>;
  close(): void;
}

const opened: RawH2[] = [];

/** A gRPC session stream over a plain node:http2 connection, frames decoded by hand. */
function openH2(url: string, headers: Record<string, string> = {}): RawH2 {
  const session = h2connect(url);
  session.on("error", () => {});
  const stream = session.request({
    ":method": "POST",
    ":path": "/mcp.v1.SessionService/Connect",
    "content-type": "application/grpc+proto",
    te: "trailers",
    ...headers,
  });
  stream.on("error", () => {});
  const queue: ServerMessage[] = [];
  let waiting: ((m: ServerMessage | undefined) => void) | undefined;
  let ended = false;
  let buf = Buffer.alloc(0);
  stream.on("data", (chunk: Buffer) => {
    buf = Buffer.concat([buf, chunk]);
    while (buf.length >= 5) {
      const len = buf.readUInt32BE(1);
      if (buf.length < 5 + len) break;
      const m = fromBinary(ServerMessageSchema, buf.subarray(5, 5 + len));
      buf = buf.subarray(5 + len);
      if (waiting !== undefined) {
        const w = waiting;
        waiting = undefined;
        w(m);
      } else queue.push(m);
    }
  });
  const trailers = new Promise<Record<string, string | string[] | undefined>>((resolve) => {
    stream.once("trailers", (t) => resolve(t));
    stream.once("close", () => resolve({}));
  });
  // The RPC is over with its trailers (END_STREAM), whether or not our side is still open.
  stream.once("end", () => {
    ended = true;
    waiting?.(undefined);
    waiting = undefined;
  });
  stream.once("close", () => {
    ended = true;
    waiting?.(undefined);
    waiting = undefined;
  });
  const next = () =>
    new Promise<ServerMessage | undefined>((resolve) => {
      const m = queue.shift();
      if (m !== undefined || ended) return resolve(m);
      waiting = resolve;
    });
  const raw: RawH2 = {
    session,
    stream,
    next,
    async rest() {
      const all: ServerMessage[] = [];
      for (let m = await next(); m !== undefined; m = await next()) all.push(m);
      return all;
    },
    trailers,
    close() {
      stream.close();
      session.close();
    },
  };
  opened.push(raw);
  return raw;
}

let t: TestServer;
beforeAll(async () => {
  t = await startServer({ maxMessageBytes: 64 * 1024 });
});
afterEach(() => {
  for (const r of opened.splice(0)) r.session.destroy();
});
afterAll(() => t.close());

describe("gRPC over HTTP/2 fast path", () => {
  test("handshake, then pipelined commands in one write all answered, seq by one", async () => {
    const s = openH2(t.url);
    const cmds = Array.from({ length: 50 }, (_, i) =>
      frame({ case: "command", value: { id: `c${i}`, tool: "echo", payload: { case: "arguments", value: { text: `t${i}` } } } }),
    );
    s.stream.write(Buffer.concat([frame(handshake(await t.token())), ...cmds]));
    const hr = await s.next();
    expect(hr?.message.case).toBe("handshakeResult");
    const ids = new Set<string>();
    let seq = hr?.seq ?? 0n;
    for (let i = 0; i < 50; i++) {
      const m = await s.next();
      if (m?.message.case !== "response") throw new Error(`expected a response, got ${m?.message.case}`);
      expect(m.message.value.result.case).toBe("output");
      expect(m.seq).toBe(++seq);
      ids.add(m.message.value.commandId);
    }
    expect(ids.size).toBe(50);
    s.stream.end();
    expect((await s.trailers)["grpc-status"]).toBe("0");
  });

  test("a burst longer than one read turn, ended in the same write: every frame is read and answered before the RPC ends", async () => {
    const s = openH2(t.url);
    const pings = Array.from({ length: 100 }, (_, i) => frame({ case: "ping", value: { id: BigInt(i + 1) } }));
    s.stream.end(Buffer.concat([frame(handshake(await t.token())), ...pings]));
    const all = await s.rest();
    expect(all[0]?.message.case).toBe("handshakeResult");
    expect(all.slice(1).map((m) => (m.message.case === "pong" ? m.message.value.id : m.message.case))).toEqual(
      Array.from({ length: 100 }, (_, i) => BigInt(i + 1)),
    );
    expect((await s.trailers)["grpc-status"]).toBe("0");
  });

  test("the Authorization header authenticates the stream", async () => {
    const s = openH2(t.url, { authorization: `Bearer ${await t.token("bob", ["viewer"])}` });
    s.stream.write(frame(handshake()));
    const m = await s.next();
    expect(m?.message.case === "handshakeResult" && m.message.value.principal?.subject).toBe("bob");
  });

  test("a frame split across TCP writes (header, then half the body, then the rest) is reassembled", async () => {
    const s = openH2(t.url);
    const f = Buffer.concat([
      frame(handshake(await t.token())),
      frame({ case: "ping", value: { id: 7n } }),
    ]);
    const cuts = [3, 5, 11, f.length - 4, f.length];
    let prev = 0;
    for (const c of cuts) {
      s.stream.write(f.subarray(prev, c));
      prev = c;
      await new Promise((r) => setTimeout(r, 15));
    }
    expect((await s.next())?.message.case).toBe("handshakeResult");
    const p = await s.next();
    expect(p?.message.case === "pong" && p.message.value.id).toBe(7n);
  });

  const refused = [
    // The gRPC compressed flag: the server accepts identity encoding only.
    { name: "a compressed-flag frame", bytes: () => frame({ case: "ping", value: { id: 1n } }, 1), code: "invalid_message", kind: ErrorKind.PROTOCOL },
    // Refused from the 5-byte header alone, before the body is buffered.
    {
      name: "a frame over max_message_bytes",
      bytes: () => Buffer.from([0, 0, 0x10, 0, 0]),
      code: "message_too_large",
      kind: ErrorKind.TRANSPORT,
    },
    { name: "bytes that are no ClientMessage", bytes: () => Buffer.from([0, 0, 0, 0, 2, 0xff, 0xff]), code: "invalid_message", kind: ErrorKind.PROTOCOL },
  ];
  for (const { name, bytes, code, kind } of refused) {
    test(`${name} after the handshake → ${code} Error in the stream, then the stream ends`, async () => {
      const s = openH2(t.url);
      s.stream.write(frame(handshake(await t.token())));
      expect((await s.next())?.message.case).toBe("handshakeResult");
      s.stream.write(bytes());
      const all = await s.rest();
      const last = all.at(-1);
      if (last?.message.case !== "error") throw new Error(`expected an error, got ${last?.message.case}`);
      expect([last.message.value.kind, last.message.value.code]).toEqual([kind, code]);
      expect((await s.trailers)["grpc-status"]).toBe("0");
    });
  }

  test("client cancel mid-stream detaches the session (kept for resume)", async () => {
    const s = openH2(t.url);
    s.stream.write(frame(handshake(await t.token())));
    const hr = await s.next();
    if (hr?.message.case !== "handshakeResult") throw new Error("no handshake");
    const id = hr.message.value.sessionId;
    s.stream.write(frame({ case: "command", value: { id: "slow", tool: "echo", payload: { case: "arguments", value: { text: "x" } } } }));
    expect(t.server.core.sessions.get(id)?.connected).toBe(true);
    s.stream.close(0x8); // RST_STREAM CANCEL
    await eventually(() => t.server.core.sessions.get(id)?.connected === false, "the session to detach");
    expect(t.server.core.sessions.has(id)).toBe(true);
  });
});

describe("backpressure", () => {
  let small: TestServer;
  beforeAll(async () => {
    small = await startServer({ maxOutboundMessages: 8, slowConsumerTimeoutMs: 300 });
  });
  afterAll(() => small.close());

  test("a client that stops reading is paused, stays bounded, then is dropped with slow_consumer", async () => {
    const s = openH2(small.url);
    s.stream.write(frame(handshake(await small.token())));
    expect((await s.next())?.message.case).toBe("handshakeResult");
    // Stop reading: the client's HTTP/2 window fills and the server's writes stop completing.
    s.stream.pause();
    const big = "y".repeat(16 * 1024);
    const commands: Buffer[] = [];
    for (let i = 0; i < 200; i++) {
      commands.push(frame({ case: "command", value: { id: `b${i}`, tool: "echo", payload: { case: "arguments", value: { text: big } } } }));
    }
    s.stream.write(Buffer.concat(commands));
    const hr = [...small.server.core.sessions.values()].at(-1);
    // The server stops reading: far fewer than 200 commands ran before it paused.
    await new Promise((r) => setTimeout(r, 800));
    expect(hr?.lastSeq ?? 0n).toBeLessThan(200n);
    // Read again: what was queued, then the slow_consumer Error, then the end of the RPC.
    s.stream.resume();
    const all = await s.rest();
    const last = all.at(-1);
    if (last?.message.case !== "error") throw new Error(`expected an error, got ${last?.message.case}`);
    expect([last.message.value.kind, last.message.value.code]).toEqual([ErrorKind.TRANSPORT, "slow_consumer"]);
  });
});

describe("other protocols still go through connect-node", () => {
  const cases = [
    { name: "Connect protocol over HTTP/2", transport: (url: string) => createConnectTransport({ baseUrl: url, httpVersion: "2" }) },
    { name: "gRPC-Web over HTTP/2", transport: (url: string) => createGrpcWebTransport({ baseUrl: url, httpVersion: "2" }) },
  ];
  for (const { name, transport } of cases) {
    test(`${name}: a session stream can handshake and ping`, async () => {
      const client = createClient(SessionService, transport(t.url));
      const out = createPushable<ReturnType<typeof create<typeof ClientMessageSchema>>>();
      const abort = new AbortController();
      const it = client.connect(out, { signal: abort.signal })[Symbol.asyncIterator]();
      out.push(create(ClientMessageSchema, { message: handshake(await t.token()) }));
      const hr = await it.next();
      expect(hr.value?.message.case).toBe("handshakeResult");
      out.push(create(ClientMessageSchema, { message: { case: "ping", value: { id: 3n } } }));
      const p = await it.next();
      expect(p.value?.message.case === "pong" && p.value.message.value.id).toBe(3n);
      out.end();
      // A half-close ends the RPC: the answers stream completes by itself.
      expect((await it.next()).done).toBe(true);
      abort.abort();
    });

    test(`${name}: messages sent right before the half-close are all answered, then the stream ends`, async () => {
      const client = createClient(SessionService, transport(t.url));
      const out = createPushable<ReturnType<typeof create<typeof ClientMessageSchema>>>();
      out.push(create(ClientMessageSchema, { message: handshake(await t.token()) }));
      for (let i = 1; i <= 20; i++) out.push(create(ClientMessageSchema, { message: { case: "ping", value: { id: BigInt(i) } } }));
      out.end();
      const got: (bigint | string | undefined)[] = [];
      for await (const m of client.connect(out)) got.push(m.message.case === "pong" ? m.message.value.id : m.message.case);
      expect(got).toEqual(["handshakeResult", ...Array.from({ length: 20 }, (_, i) => BigInt(i + 1))]);
    });
  }
});
