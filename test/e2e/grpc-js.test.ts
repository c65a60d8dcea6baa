/**
 * `@grpc/grpc-js` with `@grpc/proto-loader` loading our .proto files at run time: a stock gRPC
 * stack that shares none of our generated code. A bidi SessionService/Connect stream (handshake,
 * echo), unary Execute with `authorization` metadata, and failures whose gRPC status follows
 * PROTOCOL.md §7 with the mcp.v1.Error inside `grpc-status-details-bin` (google.rpc.Status).
 */
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { fromBinary } from "@bufbuild/protobuf";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { ErrorKind, ErrorSchema } from "../../gen/mcp/v1/error_pb.js";
import { decodeRpcStatus } from "../helpers/rpc-status.js";
import { startServer, type TestServer } from "../helpers/server.js";
import { REPO } from "./helpers.js";

const require = createRequire(import.meta.url);
// protobufjs ships google/protobuf/*.proto; the well-known types it lacks it has built in.
const GOOGLE_PROTOS = dirname(require.resolve("protobufjs/package.json"));


type Untyped = Record<string, unknown>;
interface Services {
  session: grpc.Client & { Connect(metadata?: grpc.Metadata): grpc.ClientDuplexStream<Untyped, Untyped> };
  command: grpc.Client & { Execute(req: Untyped, md: grpc.Metadata, cb: (e: grpc.ServiceError | null, r?: Untyped) => void): void };
}

let t: TestServer;
let services: Services;
let token: string;

beforeAll(async () => {
  t = await startServer();
  token = await t.token("gina", ["developer"]);
  const def = await protoLoader.load(["mcp/v1/session.proto", "mcp/v1/command.proto"], {
    includeDirs: [join(REPO, "proto"), GOOGLE_PROTOS],
    keepCase: false,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { mcp: { v1: Record<string, grpc.ServiceClientConstructor> } };
  const target = new URL(t.url).host;
  services = {
    session: new pkg.mcp.v1["SessionService"]!(target, grpc.credentials.createInsecure()) as unknown as Services["session"],
    command: new pkg.mcp.v1["CommandService"]!(target, grpc.credentials.createInsecure()) as unknown as Services["command"],
  };
});
afterAll(async () => {
  services?.session.close();
  services?.command.close();
  await t?.close();
});

function metadata(bearer?: string): grpc.Metadata {
  const md = new grpc.Metadata();
  if (bearer !== undefined) md.set("authorization", `Bearer ${bearer}`);
  return md;
}

function execute(req: Untyped, bearer?: string): Promise<{ error: grpc.ServiceError | null; response: Untyped | undefined }> {
  return new Promise((resolve) => {
    services.command.Execute(req, metadata(bearer), (error, response) => resolve({ error, response }));
  });
}

/** Reads messages from a duplex stream one at a time, with a bounded wait. */
function reader(stream: grpc.ClientDuplexStream<Untyped, Untyped>) {
  const queue: Untyped[] = [];
  const waiters: ((m: Untyped | undefined) => void)[] = [];
  let ended = false;
  stream.on("data", (m: Untyped) => (waiters.shift() ?? ((x: Untyped | undefined) => queue.push(x!)))(m));
  const finish = () => {
    ended = true;
    for (const w of waiters.splice(0)) w(undefined);
  };
  stream.on("end", finish);
  stream.on("error", finish);
  return (): Promise<Untyped | undefined> => {
    if (queue.length > 0) return Promise.resolve(queue.shift());
    if (ended) return Promise.resolve(undefined);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no message within 10 s")), 10_000);
      waiters.push((m) => {
        clearTimeout(timer);
        resolve(m);
      });
    });
  };
}

describe("grpc-js SessionService/Connect (bidi)", () => {
  test("handshake → HandshakeResult at seq 1 with a session id; echo → its Response", async () => {
    const stream = services.session.Connect();
    const next = reader(stream);
    stream.write({ handshake: { protocolVersions: ["PROTOCOL_VERSION_1_0"], client: { name: "grpc-js", version: "1" }, token } });
    const hr = await next();
    expect(hr?.["seq"]).toBe("1");
    expect(hr?.["message"]).toBe("handshakeResult");
    const result = hr?.["handshakeResult"] as Untyped;
    expect(result["sessionId"]).toMatch(/^[0-9a-f-]{36}$/);
    expect(result["protocolVersion"]).toBe("PROTOCOL_VERSION_1_0");
    expect(result["securityLevel"]).toBe("SECURITY_LEVEL_STANDARD");
    expect((result["principal"] as Untyped)["subject"]).toBe("gina");

    stream.write({ command: { id: "g-1", tool: "echo", arguments: { fields: { text: { stringValue: "via grpc-js" } } } } });
    const r = await next();
    expect(r?.["seq"]).toBe("2");
    expect(r?.["message"]).toBe("response");
    const response = r?.["response"] as Untyped;
    expect(response["commandId"]).toBe("g-1");
    expect(response["result"]).toBe("output");
    expect(response["output"]).toEqual({ fields: { text: { stringValue: "via grpc-js", kind: "stringValue" } } });
    stream.end();
    expect(await next()).toBeUndefined();
  });
});

describe("grpc-js CommandService/Execute (unary)", () => {
  test("with authorization metadata: echo output", async () => {
    const { error, response } = await execute({ id: "u-1", tool: "echo", arguments: { fields: { text: { stringValue: "unary" } } } }, token);
    expect(error).toBeNull();
    expect(response?.["commandId"]).toBe("u-1");
    expect((response?.["output"] as { fields: Untyped }).fields["text"]).toMatchObject({ stringValue: "unary" });
  });

  // gRPC status per §7, and the same mcp.v1.Error in grpc-status-details-bin.
  const failures = [
    { name: "no token", bearer: "none", tool: "echo", status: grpc.status.UNAUTHENTICATED, kind: ErrorKind.SECURITY, code: "unauthenticated" },
    { name: "garbage token", bearer: "garbage", tool: "echo", status: grpc.status.UNAUTHENTICATED, kind: ErrorKind.SECURITY, code: "unauthenticated" },
    // fs.write needs HIGH; a cleartext connection gives STANDARD at most
    { name: "fs.write over cleartext", bearer: "developer", tool: "fs.write", status: grpc.status.PERMISSION_DENIED, kind: ErrorKind.SECURITY, code: "insufficient_security_level" },
    { name: "unknown tool", bearer: "developer", tool: "nope", status: grpc.status.NOT_FOUND, kind: ErrorKind.COMMAND, code: "unknown_tool" },
  ] as const;
  for (const f of failures) {
    test(`${f.name} → gRPC ${grpc.status[f.status]} with mcp.v1.Error ${f.code}`, async () => {
      const bearer = f.bearer === "developer" ? token : f.bearer === "garbage" ? "not.a-jwt" : undefined;
      const { error, response } = await execute({ id: "u-2", tool: f.tool, arguments: { fields: { path: { stringValue: "x.txt" }, content: { stringValue: "x" } } } }, bearer);
      expect(response).toBeUndefined();
      expect(error?.code).toBe(f.status);
      const bin = error?.metadata.get("grpc-status-details-bin")[0];
      expect(Buffer.isBuffer(bin)).toBe(true);
      const status = decodeRpcStatus(bin as Buffer);
      expect(status.code).toBe(f.status);
      expect(status.details).toHaveLength(1);
      expect(status.details[0]?.typeUrl).toBe("type.googleapis.com/mcp.v1.Error");
      const err = fromBinary(ErrorSchema, Uint8Array.from(status.details[0]!.value));
      expect(err.kind).toBe(f.kind);
      expect(err.code).toBe(f.code);
      expect(status.message).toBe(err.message);
      // grpc-message is percent-encoded on the wire; grpc-js leaves reserved characters encoded.
      expect(decodeURIComponent(error?.details ?? "")).toBe(err.message);
    });
  }
});
