/**
 * Every malformed input gets its §7 code on every protocol (issue 12 item 4): undecodable
 * protobuf or JSON, invalid UTF-8 in a string field, absurd nesting, compressed frames without
 * negotiated compression, oversized length prefixes, an unknown ClientMessage case, a wrong
 * content type — on the node:http2 gRPC fast path and connect-node's Connect, gRPC and gRPC-Web.
 * Requests are made by hand with node:http2 / node:http so the malformed bytes reach the server
 * as sent; answers are decoded with stock decoders (google.rpc.Status via protobufjs).
 */
import { request as h1request } from "node:http";
import { connect as h2connect, type ClientHttp2Session } from "node:http2";
import { gzipSync } from "node:zlib";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";
import { CommandSchema } from "../../gen/mcp/v1/command_pb.js";
import { ErrorKind, ErrorSchema } from "../../gen/mcp/v1/error_pb.js";
import { ClientMessageSchema, ServerMessageSchema, type ServerMessage } from "../../gen/mcp/v1/session_pb.js";
import { decodeRpcStatus } from "../helpers/rpc-status.js";
import { handshake, openSession, startServer, type TestServer } from "../helpers/server.js";

const MAX = 64 * 1024;
let t: TestServer;
let token: string;
const sessions: ClientHttp2Session[] = [];
beforeAll(async () => {
  t = await startServer({ maxMessageBytes: MAX });
  token = await t.token("mal", ["developer"]);
});
afterEach(() => {
  for (const s of sessions.splice(0)) s.destroy();
});
afterAll(() => t.close());

// ---- hand-made protobuf bytes (what a broken or hostile client sends) ----
const varint = (n: number) => {
  const o: number[] = [];
  while (n > 127) {
    o.push((n & 127) | 128);
    n >>>= 7;
  }
  o.push(n);
  return Buffer.from(o);
};
const field = (tag: number, b: Buffer) => Buffer.concat([varint(tag), varint(b.length), b]);
/** Struct{a: Value{struct_value: Struct{a: …}}} nested `depth` times, built inside out. */
function deepStruct(depth: number): Buffer {
  const parts: Buffer[] = [];
  let size = 0;
  // Each level is a prefix (Struct.fields entry key "a" + Value.struct_value header); lengths grow outwards.
  const levels: Buffer[] = [];
  for (let i = 0; i < depth; i++) {
    const inner = size;
    const valueLen = varint(inner).length + 1 + inner; // Value: tag 0x2a + len + struct
    const entryLen = 3 + 1 + varint(valueLen).length + valueLen; // key field (0x0a 01 'a') + value field
    const prefix = Buffer.concat([Buffer.from([0x0a]), varint(entryLen), Buffer.from([0x0a, 0x01, 0x61, 0x12]), varint(valueLen), Buffer.from([0x2a]), varint(inner)]);
    levels.push(prefix);
    size += prefix.length;
  }
  for (let i = levels.length - 1; i >= 0; i--) parts.push(levels[i]!);
  return Buffer.concat(parts);
}
const commandBytes = (tool: Buffer, args?: Buffer) =>
  Buffer.concat([field(0x0a, Buffer.from("m1")), field(0x12, tool), ...(args === undefined ? [] : [field(0x1a, args)])]);

const BAD = {
  garbage: Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]),
  badUtf8: commandBytes(Buffer.from([0xc3, 0x28])),
  deep: commandBytes(Buffer.from("echo"), deepStruct(2000)),
};
const good = Buffer.from(toBinary(CommandSchema, create(CommandSchema, { id: "ok", tool: "echo", payload: { case: "arguments", value: { text: "fine" } } })));

const envelope = (b: Buffer, flags = 0) => {
  const o = Buffer.alloc(5 + b.length);
  o[0] = flags;
  o.writeUInt32BE(b.length, 1);
  b.copy(o, 5);
  return o;
};
/** A frame header announcing `length` bytes, followed by only a few. */
const oversizedPrefix = (length: number) => Buffer.concat([Buffer.from([0, (length >>> 24) & 255, (length >>> 16) & 255, (length >>> 8) & 255, length & 255]), Buffer.alloc(16)]);

// ---- raw requests and the §7 outcome they carried ----
interface Outcome {
  httpStatus: number;
  /** gRPC status number, or the Connect code string. */
  status: number | string | undefined;
  kind?: ErrorKind;
  code?: string;
  messages: ServerMessage[];
}

/** One request; with `after`, those bytes are sent once the first response bytes arrived (after the HandshakeResult). */
async function h2(path: string, headers: Record<string, string>, body: Buffer, after?: Buffer): Promise<{ headers: Record<string, unknown>; trailers: Record<string, unknown>; body: Buffer }> {
  const session = h2connect(t.url);
  session.on("error", () => {});
  sessions.push(session);
  const r = session.request({ ":method": "POST", ":path": path, te: "trailers", authorization: `Bearer ${token}`, ...headers });
  r.on("error", () => {});
  let h: Record<string, unknown> = {};
  let tr: Record<string, unknown> = {};
  const chunks: Buffer[] = [];
  r.on("response", (x) => (h = x));
  r.on("trailers", (x) => (tr = x));
  r.on("data", (c: Buffer) => {
    chunks.push(c);
    if (after !== undefined && chunks.length === 1) r.end(after);
  });
  if (after === undefined) r.end(body);
  else r.write(body);
  await new Promise<void>((resolve) => r.once("close", () => resolve()));
  return { headers: h, trailers: tr, body: Buffer.concat(chunks) };
}

function mcpErrorOf(detailsBin: string | undefined): { kind?: ErrorKind; code?: string } {
  if (detailsBin === undefined) return {};
  const st = decodeRpcStatus(Buffer.from(detailsBin, "base64"));
  const any = st.details.find((d) => d.typeUrl.endsWith("/mcp.v1.Error"));
  if (any === undefined) return {};
  const e = fromBinary(ErrorSchema, Uint8Array.from(any.value));
  return { kind: e.kind, code: e.code };
}

/** Frames of a gRPC / gRPC-Web / Connect streaming body: messages, and the gRPC-Web trailer frame. */
function frames(body: Buffer): { messages: Buffer[]; trailer?: Record<string, string> } {
  const messages: Buffer[] = [];
  let trailer: Record<string, string> | undefined;
  for (let at = 0; at + 5 <= body.length; ) {
    const flags = body[at]!;
    const n = body.readUInt32BE(at + 1);
    const payload = body.subarray(at + 5, at + 5 + n);
    at += 5 + n;
    if ((flags & 0x80) !== 0) {
      trailer = {};
      for (const line of payload.toString("latin1").split("\r\n")) {
        const i = line.indexOf(":");
        if (i > 0) trailer[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
      }
    } else if ((flags & 0x02) === 0) messages.push(payload);
  }
  return trailer === undefined ? { messages } : { messages, trailer };
}

/** The protocols a unary Execute can come in by, and how each carries one message and its outcome. */
const UNARY = [
  { name: "gRPC, node:http2 fast path", ct: "application/grpc", wrap: (b: Buffer) => envelope(b), grpc: "trailers" },
  { name: "gRPC gzip, connect-node", ct: "application/grpc", headers: { "grpc-encoding": "gzip" }, wrap: (b: Buffer) => envelope(gzipSync(b), 1), grpc: "trailers" },
  { name: "gRPC-Web, connect-node", ct: "application/grpc-web+proto", wrap: (b: Buffer) => envelope(b), grpc: "body" },
  { name: "Connect unary, connect-node", ct: "application/proto", wrap: (b: Buffer) => b, grpc: "none" },
] as const;

async function unary(u: (typeof UNARY)[number], body: Buffer, raw = false, path = "/mcp.v1.CommandService/Execute"): Promise<Outcome> {
  const r = await h2(path, { "content-type": u.ct, ...("headers" in u ? u.headers : {}) }, raw ? body : u.wrap(body));
  const httpStatus = Number(r.headers[":status"]);
  if (u.grpc === "none") {
    const text = r.body.toString("utf8");
    if (httpStatus === 200) return { httpStatus, status: "ok", messages: [] };
    const j = JSON.parse(text) as { code: string; details?: { type: string; value: string }[] };
    const d = j.details?.find((x) => x.type === "mcp.v1.Error");
    const e = d === undefined ? undefined : fromBinary(ErrorSchema, Buffer.from(d.value, "base64"));
    return { httpStatus, status: j.code, ...(e === undefined ? {} : { kind: e.kind, code: e.code }), messages: [] };
  }
  const fr = frames(r.body);
  const tr = u.grpc === "body" ? (fr.trailer ?? {}) : { ...r.headers, ...r.trailers };
  const status = tr["grpc-status"] === undefined ? undefined : Number(tr["grpc-status"]);
  return { httpStatus, status, ...mcpErrorOf(tr["grpc-status-details-bin"] as string | undefined), messages: [] };
}

const INVALID_ARGUMENT = 3;
const RESOURCE_EXHAUSTED = 8;
const invalidMessage = (u: (typeof UNARY)[number]) => ({ status: u.grpc === "none" ? "invalid_argument" : INVALID_ARGUMENT, kind: ErrorKind.PROTOCOL, code: "invalid_message" });
const tooLarge = (u: (typeof UNARY)[number]) => ({ status: u.grpc === "none" ? "resource_exhausted" : RESOURCE_EXHAUSTED, kind: ErrorKind.TRANSPORT, code: "message_too_large" });

describe("unary Execute", () => {
  for (const u of UNARY) {
    describe(u.name, () => {
      test("a well-formed request still works (the check changes nothing for it)", async () => {
        const o = await unary(u, good);
        expect(o.status === 0 || o.status === "ok" || o.status === undefined).toBe(true);
        expect(o.httpStatus).toBe(200);
      });

      for (const [what, body] of [
        ["undecodable protobuf", BAD.garbage],
        ["invalid UTF-8 in a string field", BAD.badUtf8],
        ["absurd nesting (a Struct 2,000 levels deep)", BAD.deep],
      ] as const) {
        test(`${what} → invalid_argument with PROTOCOL invalid_message`, async () => {
          const o = await unary(u, body);
          expect(o).toMatchObject(invalidMessage(u));
          expect(o.httpStatus).toBeLessThan(500);
        });
      }

      test("a length beyond max_message_bytes → resource_exhausted with TRANSPORT message_too_large", async () => {
        const o = u.grpc === "none" ? await unary(u, Buffer.alloc(MAX + 100, 0x0a)) : await unary(u, oversizedPrefix(MAX + 1), true);
        expect(o).toMatchObject(tooLarge(u));
      });

      test("compressed bytes without negotiated compression → invalid_argument with PROTOCOL invalid_message", async () => {
        // gRPC framing: the compressed flag set with no grpc-encoding; Connect unary: a gzip body with no content-encoding.
        const body = u.grpc === "none" ? gzipSync(good) : envelope(gzipSync(good), 1);
        const o = await h2("/mcp.v1.CommandService/Execute", { "content-type": u.ct }, body);
        const outcome = await (async () => {
          if (u.grpc === "none") {
            const j = JSON.parse(o.body.toString("utf8")) as { code: string; details?: { type: string; value: string }[] };
            const e = fromBinary(ErrorSchema, Buffer.from(j.details?.find((x) => x.type === "mcp.v1.Error")?.value ?? "", "base64"));
            return { status: j.code, kind: e.kind, code: e.code };
          }
          const tr = u.grpc === "body" ? (frames(o.body).trailer ?? {}) : { ...o.headers, ...o.trailers };
          return { status: Number(tr["grpc-status"]), ...mcpErrorOf(tr["grpc-status-details-bin"] as string | undefined) };
        })();
        expect(outcome).toMatchObject(invalidMessage(u));
      });
    });
  }

  test("the issue's case over HTTP/1.1: content-type application/proto with a non-protobuf body → 400 invalid_argument, PROTOCOL invalid_message (was 500 internal)", async () => {
    const url = new URL(t.url);
    const res = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = h1request(
        { host: url.hostname, port: url.port, method: "POST", path: "/mcp.v1.CommandService/Execute", headers: { "content-type": "application/proto", authorization: `Bearer ${token}` } },
        (r) => {
          let b = "";
          r.setEncoding("utf8").on("data", (c: string) => (b += c));
          r.on("end", () => resolve({ status: r.statusCode ?? 0, body: b }));
        },
      );
      req.on("error", reject);
      req.end(Buffer.from("this is not protobuf"));
    });
    expect(res.status).toBe(400);
    const j = JSON.parse(res.body) as { code: string; details: { type: string; value: string }[] };
    expect(j.code).toBe("invalid_argument");
    const e = fromBinary(ErrorSchema, Buffer.from(j.details.find((x) => x.type === "mcp.v1.Error")!.value, "base64"));
    expect([e.kind, e.code]).toEqual([ErrorKind.PROTOCOL, "invalid_message"]);
  });

  for (const [name, ct, body] of [
    ["Connect unary JSON", "application/json", Buffer.from('{"tool": "echo", ')],
    ["gRPC JSON (connect-node)", "application/grpc+json", envelope(Buffer.from("{nope"))],
    ["gRPC-Web JSON", "application/grpc-web+json", envelope(Buffer.from("[1,2"))],
  ] as const) {
    test(`undecodable JSON, ${name} → invalid_argument with PROTOCOL invalid_message`, async () => {
      const r = await h2("/mcp.v1.CommandService/Execute", { "content-type": ct }, body);
      let outcome: { status: unknown; kind?: ErrorKind; code?: string };
      if (ct === "application/json") {
        const j = JSON.parse(r.body.toString("utf8")) as { code: string; details?: { type: string; value: string }[] };
        const e = fromBinary(ErrorSchema, Buffer.from(j.details?.find((x) => x.type === "mcp.v1.Error")?.value ?? "", "base64"));
        outcome = { status: j.code, kind: e.kind, code: e.code };
      } else {
        const tr = ct.includes("grpc-web") ? (frames(r.body).trailer ?? {}) : { ...r.headers, ...r.trailers };
        outcome = { status: Number(tr["grpc-status"]), ...mcpErrorOf(tr["grpc-status-details-bin"] as string | undefined) };
      }
      expect(outcome).toMatchObject({ status: ct === "application/json" ? "invalid_argument" : INVALID_ARGUMENT, kind: ErrorKind.PROTOCOL, code: "invalid_message" });
    });
  }

  test("a content type no protocol uses → 415 Unsupported Media Type (a refusal, not a server fault)", async () => {
    const r = await h2("/mcp.v1.CommandService/Execute", { "content-type": "text/plain" }, Buffer.from("echo hi"));
    expect(r.headers[":status"]).toBe(415);
  });

  test("server-streaming ExecuteStream: undecodable protobuf → invalid_argument with PROTOCOL invalid_message (gRPC and Connect)", async () => {
    const g = await h2("/mcp.v1.CommandService/ExecuteStream", { "content-type": "application/grpc" }, envelope(BAD.garbage));
    const gt = { ...g.headers, ...g.trailers };
    expect({ status: Number(gt["grpc-status"]), ...mcpErrorOf(gt["grpc-status-details-bin"] as string | undefined) }).toEqual({
      status: INVALID_ARGUMENT,
      kind: ErrorKind.PROTOCOL,
      code: "invalid_message",
    });
    const c = await h2("/mcp.v1.CommandService/ExecuteStream", { "content-type": "application/connect+proto" }, envelope(BAD.deep));
    // Connect streaming ends with an end-stream frame (flag 0x02) holding the error as JSON.
    const end = (() => {
      for (let at = 0; at + 5 <= c.body.length; ) {
        const n = c.body.readUInt32BE(at + 1);
        if ((c.body[at]! & 0x02) !== 0) return JSON.parse(c.body.subarray(at + 5, at + 5 + n).toString("utf8")) as { error: { code: string; details: { type: string; value: string }[] } };
        at += 5 + n;
      }
      return undefined;
    })();
    expect(end?.error.code).toBe("invalid_argument");
    const e = fromBinary(ErrorSchema, Buffer.from(end!.error.details.find((x) => x.type === "mcp.v1.Error")!.value, "base64"));
    expect([e.kind, e.code]).toEqual([ErrorKind.PROTOCOL, "invalid_message"]);
  });
});

/** The session stream on each protocol: an in-stream Error tells the client why, then the RPC ends. */
const STREAMS = [
  { name: "gRPC, node:http2 fast path", ct: "application/grpc+proto" },
  { name: "Connect protocol, connect-node", ct: "application/connect+proto" },
  { name: "gRPC-Web, connect-node", ct: "application/grpc-web+proto" },
] as const;

const handshakeFrame = () => envelope(Buffer.from(toBinary(ClientMessageSchema, create(ClientMessageSchema, { message: handshake(token) }))));

describe("the session stream", () => {
  for (const s of STREAMS) {
    describe(s.name, () => {
      const cases: [string, () => Buffer, string, ErrorKind][] = [
        ["undecodable protobuf", () => envelope(BAD.garbage), "invalid_message", ErrorKind.PROTOCOL],
        ["invalid UTF-8 in a Command's tool", () => envelope(field(0x2a, BAD.badUtf8)), "invalid_message", ErrorKind.PROTOCOL],
        ["absurd nesting in a Command's arguments", () => envelope(field(0x2a, BAD.deep)), "invalid_message", ErrorKind.PROTOCOL],
        ["an unknown ClientMessage case (field 99 only)", () => envelope(field((99 << 3) | 2, Buffer.from("?"))), "invalid_message", ErrorKind.PROTOCOL],
        ["a compressed frame without negotiated compression", () => envelope(gzipSync(good), 1), "invalid_message", ErrorKind.PROTOCOL],
        ["a length prefix beyond max_message_bytes", () => oversizedPrefix(MAX + 1), "message_too_large", ErrorKind.TRANSPORT],
      ];
      for (const [what, bytes, code, kind] of cases) {
        test(`${what} after the handshake → Error{${ErrorKind[kind]}, ${code}} on the stream`, async () => {
          const r = await h2("/mcp.v1.SessionService/Connect", { "content-type": s.ct }, handshakeFrame(), bytes());
          const msgs = frames(r.body).messages.map((m) => fromBinary(ServerMessageSchema, m));
          expect(msgs[0]?.message.case).toBe("handshakeResult");
          const err = msgs.find((m) => m.message.case === "error");
          expect(err?.message.case === "error" ? [err.message.value.kind, err.message.value.code] : msgs.map((m) => m.message.case)).toEqual([kind, code]);
          expect(r.headers[":status"]).toBe(200);
        });
      }
    });
  }

  // The node:http2 path decodes the frames of one read together; a bad one among them must still
  // end the stream exactly where it is, with the frames before it answered.
  /** Each ServerMessage of a body, as its case (with the command id of a Response, the code of an Error). */
  const answers = (body: Buffer) =>
    frames(body).messages.map((b) => {
      const m = fromBinary(ServerMessageSchema, b).message;
      return m.case === "response" ? `response ${m.value.commandId}` : m.case === "error" ? `error ${m.value.code}` : m.case;
    });
  const cmd = (id: string) => envelope(Buffer.from(toBinary(ClientMessageSchema, create(ClientMessageSchema, { message: { case: "command", value: { id, tool: "echo", payload: { case: "arguments", value: { text: id } } } } }))));
  for (const s of STREAMS) {
    test(`${s.name}: frames of one write with a bad one among them → those before it answered, then Error{PROTOCOL, invalid_message}, none after`, async () => {
      const r = await h2("/mcp.v1.SessionService/Connect", { "content-type": s.ct }, handshakeFrame(), Buffer.concat([cmd("a"), cmd("b"), envelope(BAD.garbage), cmd("c")]));
      expect(answers(r.body)).toEqual([
        "handshakeResult",
        "response a",
        "response b",
        "error invalid_message",
      ]);
    });
    test(`${s.name}: frames of one write ending in a compressed frame → those before it answered, then Error{PROTOCOL, invalid_message}`, async () => {
      const r = await h2("/mcp.v1.SessionService/Connect", { "content-type": s.ct }, handshakeFrame(), Buffer.concat([cmd("a"), cmd("b"), envelope(gzipSync(good), 1)]));
      expect(answers(r.body)).toEqual([
        "handshakeResult",
        "response a",
        "response b",
        "error invalid_message",
      ]);
    });
  }

  test("after all that, a normal client still works", async () => {
    const { s } = await openSession(t.url, token);
    s.send({ case: "command", value: { id: "after", tool: "echo", payload: { case: "arguments", value: { text: "ok" } } } });
    const m = await s.next();
    expect(m?.message.case === "response" && m.message.value.result).toMatchObject({ case: "output", value: { text: "ok" } });
    s.close();
  });
});
