/**
 * The gRPC unary fast path (src/server/unary-h2.ts): `CommandService` Execute, ExecuteBatch and
 * ListTools over gRPC/HTTP/2 served without connect-node. Clients: connect-es (`createGrpcTransport`), `@grpc/grpc-js` with
 * our protos loaded at run time, and raw node:http2 for framing cases a client library will not
 * produce. Each error is compared with what connect-node answers for the same request (a second
 * listener on the same core serving connect-node alone), and the Connect protocol and gRPC-Web
 * still reach connect-node.
 */
import { connect as h2connect, createServer as createH2Server, type Http2Server, type ServerHttp2Session } from "node:http2";
import type { AddressInfo } from "node:net";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createContextValues, type Client, type Transport } from "@connectrpc/connect";
import { connectNodeAdapter, createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { BatchMode, CommandSchema, CommandService, ResponseSchema } from "../../gen/mcp/v1/command_pb.js";
import { ErrorKind, ErrorSchema } from "../../gen/mcp/v1/error_pb.js";
import { kConnectionFacts, registerRoutes } from "../../src/server/routes.js";
import { encodeGrpcMessage } from "../../src/server/grpc-h2.js";
import { parseGrpcTimeout } from "../../src/server/unary-h2.js";
import { args, startWithTestTools, outputOf, type Probe } from "../helpers/command-tools.js";
import { decodeRpcStatus } from "../helpers/rpc-status.js";
import { startServer, type TestServer } from "../helpers/server.js";
import { selfSignedCert } from "../security/e2e-helpers.js";

const REPO = join(import.meta.dirname, "../..");
const require = createRequire(import.meta.url);
const MAX_MESSAGE_BYTES = 4096;


let t: TestServer;
let probe: Probe;
/** connect-node alone on the same core: what every gRPC Execute got before the fast path. */
let reference: Http2Server;
let referenceUrl: string;
const referenceSessions = new Set<ServerHttp2Session>();
let token: string;
let viewer: string;

beforeAll(async () => {
  ({ server: t, probe } = await startWithTestTools({ maxMessageBytes: MAX_MESSAGE_BYTES }));
  token = await t.token("alice", ["developer"]);
  viewer = await t.token("vera", ["viewer"]);
  const core = t.server.core;
  reference = createH2Server(
    connectNodeAdapter({
      routes: (router) => registerRoutes(router, core),
      readMaxBytes: MAX_MESSAGE_BYTES,
      maxTimeoutMs: t.server.options.maxTimeoutMs,
      contextValues: () => createContextValues().set(kConnectionFacts, { secure: false, overLimit: false }),
    }),
  );
  reference.on("session", (s) => referenceSessions.add(s));
  await new Promise<void>((resolve) => reference.listen(0, "127.0.0.1", resolve));
  referenceUrl = `http://127.0.0.1:${(reference.address() as AddressInfo).port}`;
});
afterAll(async () => {
  for (const s of referenceSessions) s.destroy();
  await new Promise<void>((resolve) => reference.close(() => resolve()));
  await t.close();
});

const auth = (bearer: string | undefined) => (bearer === undefined ? {} : { headers: { authorization: `Bearer ${bearer}` } });

let ids = 0;
const nextId = (p: string) => `${p}-${++ids}`;

/** Code, message and mcp.v1.Error detail of a failed connect-es call. */
async function failure(p: Promise<unknown>): Promise<{ code: Code; message: string; detail: unknown }> {
  try {
    await p;
  } catch (e) {
    if (!(e instanceof ConnectError)) throw e;
    const d = e.findDetails(ErrorSchema)[0];
    return { code: e.code, message: e.rawMessage, detail: d === undefined ? undefined : { kind: d.kind, code: d.code, field: d.field, retryable: d.retryable, message: d.message } };
  }
  throw new Error("expected the RPC to fail");
}

/** Unary Execute cases and the §7 outcome each must have. */
const FAILURES = [
  { name: "unknown tool", bearer: () => token, tool: "nope", payload: {}, want: [Code.NotFound, ErrorKind.COMMAND, "unknown_tool"] },
  { name: "no token", bearer: () => undefined, tool: "echo", payload: { text: "x" }, want: [Code.Unauthenticated, ErrorKind.SECURITY, "unauthenticated"] },
  { name: "garbage token", bearer: () => "not.a-jwt", tool: "echo", payload: { text: "x" }, want: [Code.Unauthenticated, ErrorKind.SECURITY, "unauthenticated"] },
  { name: "viewer runs sleep", bearer: () => viewer, tool: "sleep", payload: { ms: 0 }, want: [Code.PermissionDenied, ErrorKind.SECURITY, "permission_denied"] },
  { name: "invalid argument", bearer: () => token, tool: "echo", payload: { bogus: 1 }, want: [Code.InvalidArgument, ErrorKind.COMMAND, "invalid_argument"] },
  { name: "handler throws", bearer: () => token, tool: "crash", payload: {}, want: [Code.Internal, ErrorKind.COMMAND, "tool_failed"] },
] as const;

describe("connect-es gRPC client", () => {
  let fast: Client<typeof CommandService>;
  let slow: Client<typeof CommandService>;
  beforeAll(() => {
    fast = createClient(CommandService, createGrpcTransport({ baseUrl: t.url }));
    slow = createClient(CommandService, createGrpcTransport({ baseUrl: referenceUrl }));
  });

  test("echo returns its Response, the same as through connect-node", async () => {
    const r = await fast.execute({ id: "f1", tool: "echo", payload: args({ text: "fast" }) }, auth(token));
    expect(r.commandId).toBe("f1");
    expect(outputOf(r)).toEqual({ text: "fast" });
    const ref = await slow.execute({ id: "f1", tool: "echo", payload: args({ text: "fast" }) }, auth(token));
    expect({ ...r, durationMs: 0 }).toEqual({ ...ref, durationMs: 0 });
    // An empty id gets one, as through connect-node.
    expect((await fast.execute({ tool: "echo", payload: args({ text: "x" }) }, auth(token))).commandId).toMatch(/^[0-9a-f-]{36}$/);
  });

  for (const f of FAILURES) {
    test(`${f.name} → ${Code[f.want[0]]} with ${f.want[2]}, identical to connect-node`, async () => {
      const id = nextId("cf");
      const got = await failure(fast.execute({ id, tool: f.tool, payload: args(f.payload) }, auth(f.bearer())));
      expect([got.code, (got.detail as { kind: ErrorKind }).kind, (got.detail as { code: string }).code]).toEqual(f.want);
      expect(await failure(slow.execute({ id, tool: f.tool, payload: args(f.payload) }, auth(f.bearer())))).toEqual(got);
    });
  }

  test("command timeout_ms → DeadlineExceeded with timeout, identical to connect-node", async () => {
    const id = nextId("cto");
    const got = await failure(fast.execute({ id, tool: "sleep", payload: args({}), timeoutMs: 30 }, auth(token)));
    expect(got).toMatchObject({ code: Code.DeadlineExceeded, detail: { code: "timeout", kind: ErrorKind.COMMAND } });
    expect(await probe.abortedWith(id)).toBe("timeout");
    expect(await failure(slow.execute({ id, tool: "sleep", payload: args({}), timeoutMs: 30 }, auth(token)))).toEqual(got);
  });

  test("grpc-timeout caps the command's timeout: DeadlineExceeded with timeout, the handler's signal fires", async () => {
    const id = nextId("gto");
    // The header alone (no client-side deadline), so the server's answer is what arrives.
    const got = await failure(fast.execute({ id, tool: "sleep", payload: args({}) }, { headers: { authorization: `Bearer ${token}`, "grpc-timeout": "50m" } }));
    expect(got).toMatchObject({ code: Code.DeadlineExceeded, detail: { code: "timeout", kind: ErrorKind.COMMAND } });
    // What is left of the 50 ms when the command starts.
    expect(Number(/within (\d+) ms/.exec(got.message)?.[1])).toBeLessThanOrEqual(50);
    expect(await probe.abortedWith(id)).toBe("timeout");
  });

  test("a client deadline (timeoutMs) ends the call with DeadlineExceeded; the command is aborted", async () => {
    const id = nextId("cdl");
    const got = await failure(fast.execute({ id, tool: "sleep", payload: args({}) }, { ...auth(token), timeoutMs: 50 }));
    expect(got.code).toBe(Code.DeadlineExceeded);
    expect(["timeout", "cancelled"]).toContain(await probe.abortedWith(id));
  });

  test("an already elapsed grpc-timeout → DeadlineExceeded with timeout; the tool never starts", async () => {
    const id = nextId("gt0");
    const got = await failure(fast.execute({ id, tool: "sleep", payload: args({ ms: 0 }) }, { headers: { authorization: `Bearer ${token}`, "grpc-timeout": "0n" } }));
    expect(got).toMatchObject({ code: Code.DeadlineExceeded, detail: { code: "timeout" } });
    expect(probe.started).not.toContain(id);
  });

  test("an oversized message → ResourceExhausted with message_too_large", async () => {
    const got = await failure(fast.execute({ tool: "echo", payload: args({ text: "x".repeat(MAX_MESSAGE_BYTES) }) }, auth(token)));
    expect(got).toMatchObject({ code: Code.ResourceExhausted, detail: { code: "message_too_large", kind: ErrorKind.TRANSPORT } });
  });

  test("a client that abandons the call cancels the command: the handler's signal fires with cancelled", async () => {
    const id = nextId("cab");
    const ac = new AbortController();
    const p = fast.execute({ id, tool: "gate", payload: args({ key: id }) }, { ...auth(token), signal: ac.signal });
    await probe.startedOnce(id);
    ac.abort();
    expect((await failure(p)).code).toBe(Code.Canceled);
    expect(await probe.abortedWith(id)).toBe("cancelled");
    // The server goes on serving.
    expect(outputOf(await fast.execute({ tool: "echo", payload: args({ text: "after" }) }, auth(token)))).toEqual({ text: "after" });
  });

  test("a gate released while in flight answers with its output", async () => {
    const id = nextId("cg");
    const p = fast.execute({ id, tool: "gate", payload: args({ key: id }) }, auth(token));
    await probe.startedOnce(id);
    probe.release(id);
    expect(outputOf(await p)).toEqual({ key: id });
  });
});

describe("ExecuteBatch and ListTools (connect-es gRPC client)", () => {
  let fast: Client<typeof CommandService>;
  let slow: Client<typeof CommandService>;
  beforeAll(() => {
    fast = createClient(CommandService, createGrpcTransport({ baseUrl: t.url }));
    slow = createClient(CommandService, createGrpcTransport({ baseUrl: referenceUrl }));
  });
  const noDurations = (rs: { durationMs: number }[]) => rs.map((r) => ({ ...r, durationMs: 0 }));

  for (const mode of [BatchMode.SEQUENTIAL, BatchMode.PARALLEL]) {
    test(`${BatchMode[mode]} batch: one Response per command in batch order, as through connect-node`, async () => {
      const batch = (p: string) => ({
        mode,
        commands: [
          { id: `${p}-a`, tool: "echo", payload: args({ text: "a" }) },
          { id: `${p}-b`, tool: "nope" },
          { id: `${p}-c`, tool: "echo", payload: args({ text: "c" }) },
        ],
      });
      const p = nextId("bt");
      const got = await fast.executeBatch(batch(p), auth(token));
      expect(got.responses.map((r) => [r.commandId, r.result.case === "error" ? r.result.value.code : "ok"])).toEqual(
        mode === BatchMode.SEQUENTIAL ? [[`${p}-a`, "ok"], [`${p}-b`, "unknown_tool"], [`${p}-c`, "cancelled"]] : [[`${p}-a`, "ok"], [`${p}-b`, "unknown_tool"], [`${p}-c`, "ok"]],
      );
      expect(noDurations(got.responses)).toEqual(noDurations((await slow.executeBatch(batch(p), auth(token))).responses));
    });
  }

  test("batch: grpc-timeout caps every command's timeout", async () => {
    const id = nextId("btt");
    const got = await fast.executeBatch({ commands: [{ id, tool: "sleep", payload: args({}) }] }, { headers: { authorization: `Bearer ${token}`, "grpc-timeout": "40m" } });
    expect(got.responses[0]?.result.case === "error" && got.responses[0].result.value.code).toBe("timeout");
    expect(await probe.abortedWith(id)).toBe("timeout");
  });

  test("batch: a client that abandons the call cancels its commands", async () => {
    const id = nextId("btc");
    const ac = new AbortController();
    const p = fast.executeBatch({ mode: BatchMode.PARALLEL, commands: [{ id, tool: "gate", payload: args({ key: id }) }] }, { ...auth(token), signal: ac.signal });
    await probe.startedOnce(id);
    ac.abort();
    expect((await failure(p)).code).toBe(Code.Canceled);
    expect(await probe.abortedWith(id)).toBe("cancelled");
  });

  test("ListTools: the same tools as through connect-node, filtered by role", async () => {
    const got = await fast.listTools({}, auth(token));
    expect(got.tools.map((x) => x.name)).toContain("gate");
    expect(got).toEqual(await slow.listTools({}, auth(token)));
    expect(await fast.listTools({}, auth(viewer))).toEqual(await slow.listTools({}, auth(viewer)));
  });

  test("without a token: ListTools and each batch command answer unauthenticated, as through connect-node", async () => {
    const refused = await failure(fast.listTools({}));
    expect(refused).toMatchObject({ code: Code.Unauthenticated, detail: { kind: ErrorKind.SECURITY, code: "unauthenticated" } });
    expect(await failure(slow.listTools({}))).toEqual(refused);
    const batch = { commands: [{ id: "anon", tool: "echo", payload: args({ text: "x" }) }] };
    const got = await fast.executeBatch(batch);
    expect(got.responses[0]?.result.case === "error" && got.responses[0].result.value.code).toBe("unauthenticated");
    expect(noDurations(got.responses)).toEqual(noDurations((await slow.executeBatch(batch)).responses));
  });

  test("a bad token: Unauthenticated with unauthenticated, identical to connect-node", async () => {
    const got = await failure(fast.listTools({}, auth("not.a-jwt")));
    expect(got).toMatchObject({ code: Code.Unauthenticated, detail: { code: "unauthenticated" } });
    expect(await failure(slow.listTools({}, auth("not.a-jwt")))).toEqual(got);
    expect(await failure(fast.executeBatch({ commands: [{ tool: "echo" }] }, auth("not.a-jwt")))).toEqual(got);
  });
});

describe("@grpc/grpc-js client", () => {
  type Untyped = Record<string, unknown>;
  type Callback = (e: grpc.ServiceError | null, r?: Untyped) => void;
  type Exec = grpc.Client & {
    Execute(req: Untyped, md: grpc.Metadata, cb: Callback): grpc.ClientUnaryCall;
    Execute(req: Untyped, md: grpc.Metadata, options: grpc.CallOptions, cb: Callback): grpc.ClientUnaryCall;
  };
  let fast: Exec;
  let slow: Exec;
  beforeAll(async () => {
    const def = await protoLoader.load(["mcp/v1/command.proto"], {
      includeDirs: [join(REPO, "proto"), dirname(require.resolve("protobufjs/package.json"))],
      longs: String,
      enums: String,
      defaults: true,
      oneofs: true,
    });
    const pkg = grpc.loadPackageDefinition(def) as unknown as { mcp: { v1: Record<string, grpc.ServiceClientConstructor> } };
    const Ctor = pkg.mcp.v1["CommandService"]!;
    fast = new Ctor(new URL(t.url).host, grpc.credentials.createInsecure()) as unknown as Exec;
    slow = new Ctor(new URL(referenceUrl).host, grpc.credentials.createInsecure()) as unknown as Exec;
  });
  afterAll(() => {
    fast.close();
    slow.close();
  });

  const md = (bearer: string | undefined) => {
    const m = new grpc.Metadata();
    if (bearer !== undefined) m.set("authorization", `Bearer ${bearer}`);
    return m;
  };
  const call = (client: Exec, req: Untyped, bearer: string | undefined) =>
    new Promise<{ error: grpc.ServiceError | null; response: Untyped | undefined }>((resolve) => {
      client.Execute(req, md(bearer), (error, response) => resolve({ error, response }));
    });
  /** What grpc-js saw of a failure: status, details, and the google.rpc.Status of grpc-status-details-bin. */
  const seen = (e: grpc.ServiceError | null) => {
    const bin = e?.metadata.get("grpc-status-details-bin")[0];
    const status = decodeRpcStatus(bin as Buffer);
    const err = fromBinary(ErrorSchema, Uint8Array.from(status.details[0]!.value));
    return { code: e?.code, details: e?.details, status: { code: status.code, message: status.message, typeUrl: status.details[0]?.typeUrl }, error: { kind: err.kind, code: err.code, message: err.message } };
  };

  test("echo: its output", async () => {
    const { error, response } = await call(fast, { id: "g1", tool: "echo", arguments: { fields: { text: { stringValue: "hi" } } } }, token);
    expect(error).toBeNull();
    expect(response?.["commandId"]).toBe("g1");
    expect((response?.["output"] as { fields: Untyped }).fields["text"]).toMatchObject({ stringValue: "hi" });
  });

  for (const f of FAILURES) {
    test(`${f.name} → ${Code[f.want[0]]} with ${f.want[2]} in grpc-status-details-bin, as connect-node sends it`, async () => {
      const req = { id: nextId("gf"), tool: f.tool, arguments: { fields: Object.fromEntries(Object.entries(f.payload).map(([k, v]) => [k, typeof v === "number" ? { numberValue: v } : { stringValue: v }])) } };
      const got = seen((await call(fast, req, f.bearer())).error);
      expect([got.code, got.error.kind, got.error.code]).toEqual([...f.want]);
      expect(got.status).toEqual({ code: f.want[0], message: got.error.message, typeUrl: "type.googleapis.com/mcp.v1.Error" });
      // grpc-message per the gRPC spec: grpc-js shows the message itself.
      expect(got.details).toBe(got.error.message);
      const ref = seen((await call(slow, req, f.bearer())).error);
      // connect-node percent-encodes reserved characters grpc-js's decodeURI leaves alone.
      expect({ ...got, details: undefined }).toEqual({ ...ref, details: undefined });
      expect(decodeURIComponent(ref.details ?? "")).toBe(got.details);
    });
  }

  test("call.cancel() aborts the running command", async () => {
    const id = nextId("gc");
    const done = new Promise<grpc.ServiceError | null>((resolve) => {
      const c = fast.Execute({ id, tool: "gate", arguments: { fields: { key: { stringValue: id } } } }, md(token), (e) => resolve(e));
      void probe.startedOnce(id).then(() => c.cancel());
    });
    expect((await done)?.code).toBe(grpc.status.CANCELLED);
    expect(await probe.abortedWith(id)).toBe("cancelled");
  });

  test("a grpc-js deadline reaches the server as grpc-timeout: the command is aborted", async () => {
    const id = nextId("gd");
    const error = await new Promise<grpc.ServiceError | null>((resolve) => {
      fast.Execute({ id, tool: "sleep", arguments: { fields: {} } }, md(token), { deadline: Date.now() + 80 }, (e) => resolve(e));
    });
    expect(error?.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(["timeout", "cancelled"]).toContain(await probe.abortedWith(id));
  });
});

describe("framing over raw node:http2", () => {
  const frame = (bin: Uint8Array, flag = 0, len = bin.length): Buffer => {
    const out = Buffer.alloc(5 + bin.length);
    out[0] = flag;
    out.writeUInt32BE(len, 1);
    out.set(bin, 5);
    return out;
  };
  const echo = () => toBinary(CommandSchema, create(CommandSchema, { tool: "echo", payload: args({ text: "raw" }) }));

  /** Sends `body` (ending the request unless `keepOpen`) and collects headers, trailers and frames. */
  async function raw(body: Buffer, headers: Record<string, string> = {}, keepOpen = false) {
    const session = h2connect(t.url);
    session.on("error", () => {});
    try {
      const stream = session.request({ ":method": "POST", ":path": "/mcp.v1.CommandService/Execute", "content-type": "application/grpc", te: "trailers", authorization: `Bearer ${token}`, ...headers });
      stream.on("error", () => {});
      const out: { headers: Record<string, unknown>; trailers: Record<string, unknown>; data: Buffer } = { headers: {}, trailers: {}, data: Buffer.alloc(0) };
      stream.on("response", (h) => (out.headers = h));
      stream.on("trailers", (h) => (out.trailers = h));
      stream.on("data", (c: Buffer) => (out.data = Buffer.concat([out.data, c])));
      if (keepOpen) stream.write(body);
      else stream.end(body);
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("no answer within 5 s")), 5000);
        stream.once(keepOpen ? "response" : "close", () => {
          clearTimeout(timer);
          resolve();
        });
      });
      if (keepOpen) stream.close();
      return out;
    } finally {
      session.close();
    }
  }
  /** status and mcp.v1.Error code of a trailers-only answer. */
  const refusal = (h: Record<string, unknown>) => {
    const status = decodeRpcStatus(Buffer.from(String(h["grpc-status-details-bin"]), "base64"));
    return [Number(h["grpc-status"]), fromBinary(ErrorSchema, Uint8Array.from(status.details[0]!.value)).code];
  };

  test("success: headers, one frame with the Response, trailers grpc-status 0", async () => {
    const out = await raw(frame(echo()));
    expect(out.headers[":status"]).toBe(200);
    expect(out.headers["content-type"]).toBe("application/grpc+proto");
    expect(out.trailers["grpc-status"]).toBe("0");
    expect(out.data[0]).toBe(0);
    expect(out.data.readUInt32BE(1)).toBe(out.data.length - 5);
    expect(outputOf(fromBinary(ResponseSchema, out.data.subarray(5)))).toEqual({ text: "raw" });
  });

  test("errors are trailers-only: grpc-status, grpc-message and grpc-status-details-bin in the one HEADERS frame", async () => {
    const out = await raw(frame(toBinary(CommandSchema, create(CommandSchema, { id: "nt", tool: "nope" }))));
    expect(out.trailers).toEqual({});
    expect(out.data.length).toBe(0);
    expect(out.headers["grpc-message"]).toBe('no tool named "nope"');
    expect(refusal(out.headers)).toEqual([Code.NotFound, "unknown_tool"]);
  });

  test("a frame header announcing more than max_message_bytes is refused before the body arrives", async () => {
    const head = Buffer.alloc(5);
    head.writeUInt32BE(MAX_MESSAGE_BYTES + 1, 1);
    const out = await raw(head, {}, true);
    expect(refusal(out.headers)).toEqual([Code.ResourceExhausted, "message_too_large"]);
  });

  const cases: [string, () => Buffer, Record<string, string>, [Code, string]][] = [
    ["a compressed frame", () => frame(echo(), 1), {}, [Code.InvalidArgument, "invalid_message"]],
    ["no frame", () => Buffer.alloc(0), {}, [Code.InvalidArgument, "invalid_message"]],
    ["two frames", () => Buffer.concat([frame(echo()), frame(echo())]), {}, [Code.InvalidArgument, "invalid_message"]],
    ["a truncated frame", () => frame(echo()).subarray(0, 9), {}, [Code.InvalidArgument, "invalid_message"]],
    ["bytes that are no Command", () => frame(Buffer.from([0xff, 0xff, 0xff])), {}, [Code.InvalidArgument, "invalid_message"]],
    ["a malformed grpc-timeout", () => frame(echo()), { "grpc-timeout": "123456789m" }, [Code.InvalidArgument, "invalid_message"]],
  ];
  for (const [name, body, headers, want] of cases) {
    test(`${name} → ${Code[want[0]]} with ${want[1]}`, async () => {
      expect(refusal((await raw(body(), headers)).headers)).toEqual(want);
    });
  }

  test("grpc-encoding other than identity goes to connect-node", async () => {
    const out = await raw(frame(echo()), { "grpc-encoding": "gzip" });
    expect(out.headers["grpc-encoding"]).toBe("gzip");
    expect(out.trailers["grpc-status"]).toBe("0");
  });
});

describe("connection facts", () => {
  test("TLS: the connection is secure, so a high token reaches HIGH tools; cleartext stays STANDARD", async () => {
    const dir = await mkdtemp(join(tmpdir(), "mcp-unary-h2-"));
    const { cert, key } = await selfSignedCert(dir);
    const tls = await startServer({ tlsCert: cert, tlsKey: key });
    try {
      const high = await tls.token("hana", ["developer"], { level: "high" });
      const ca = await readFile(cert, "utf8");
      const overTls = createClient(CommandService, createGrpcTransport({ baseUrl: tls.url, nodeOptions: { ca } }));
      expect((await overTls.listTools({}, auth(high))).tools.map((x) => x.name)).toContain("fs.write");
      const clear = createClient(CommandService, createGrpcTransport({ baseUrl: t.url }));
      const highHere = await t.token("hana", ["developer"], { level: "high" });
      expect((await clear.listTools({}, auth(highHere))).tools.map((x) => x.name)).not.toContain("fs.write");
    } finally {
      await tls.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  test("a connection beyond maxConnections: Unavailable with too_many_connections", async () => {
    const one = await startServer({ maxConnections: 1 });
    try {
      const bearerOne = await one.token();
      const first = createClient(CommandService, createGrpcTransport({ baseUrl: one.url }));
      expect(outputOf(await first.execute({ tool: "echo", payload: args({ text: "1" }) }, auth(bearerOne)))).toEqual({ text: "1" });
      const second = createClient(CommandService, createGrpcTransport({ baseUrl: one.url }));
      expect(await failure(second.execute({ tool: "echo", payload: args({ text: "2" }) }, auth(bearerOne)))).toMatchObject({
        code: Code.Unavailable,
        detail: { code: "too_many_connections", retryable: true },
      });
    } finally {
      await one.close();
    }
  });
});

describe("helpers", () => {
  test("parseGrpcTimeout: every unit, up to 8 digits", () => {
    expect([parseGrpcTimeout("1H"), parseGrpcTimeout("2M"), parseGrpcTimeout("3S"), parseGrpcTimeout("4m"), parseGrpcTimeout("5000u"), parseGrpcTimeout("6000000n")]).toEqual([
      3_600_000, 120_000, 3000, 4, 5, 6,
    ]);
    expect(parseGrpcTimeout("99999999m")).toBe(99_999_999);
    expect(parseGrpcTimeout(undefined)).toBeUndefined();
    for (const bad of ["123456789m", "1s", "m", "-1m", "1.5S", " 1m"]) expect((parseGrpcTimeout(bad) as { code?: string }).code).toBe("invalid_message");
  });

  test("encodeGrpcMessage: printable ASCII but % as is, the rest percent-encoded UTF-8", () => {
    expect(encodeGrpcMessage('a: b, "c" ~')).toBe('a: b, "c" ~');
    expect(encodeGrpcMessage("100% é\n")).toBe("100%25 %C3%A9%0A");
    expect(decodeURIComponent(encodeGrpcMessage("100% é\n ☃"))).toBe("100% é\n ☃");
  });
});

describe("other protocols still reach connect-node", () => {
  const others: [string, (baseUrl: string) => Transport][] = [
    ["Connect protocol over HTTP/2", (baseUrl) => createConnectTransport({ baseUrl, httpVersion: "2" })],
    ["Connect protocol over HTTP/1.1", (baseUrl) => createConnectTransport({ baseUrl, httpVersion: "1.1" })],
    ["gRPC-Web over HTTP/2", (baseUrl) => createGrpcWebTransport({ baseUrl, httpVersion: "2" })],
  ];
  for (const [name, make] of others) {
    test(`${name}: Execute answers, and errors carry the same detail`, async () => {
      const client = createClient(CommandService, make(t.url));
      expect(outputOf(await client.execute({ tool: "echo", payload: args({ text: name }) }, auth(token)))).toEqual({ text: name });
      const got = await failure(client.execute({ id: "o1", tool: "nope" }, auth(token)));
      const viaGrpc = await failure(createClient(CommandService, createGrpcTransport({ baseUrl: t.url })).execute({ id: "o1", tool: "nope" }, auth(token)));
      expect(got).toEqual(viaGrpc);
    });
  }
});
