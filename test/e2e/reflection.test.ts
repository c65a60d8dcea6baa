/**
 * gRPC server reflection (src/server/reflection.ts) as outside tools use it: `buf curl` run from
 * an empty temp folder (no .proto, no --schema) against the real CLI `mcp serve --port 0`, with
 * each reflection protocol (grpc-v1, grpc-v1alpha) and over each RPC protocol; plus the raw
 * reflection stream from a Connect client for the queries buf curl does not make.
 */
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { ServerReflection, type ServerReflectionRequest } from "../../gen/grpc/reflection/v1/reflection_pb.js";
import { reflectionFiles } from "../../src/server/reflection-files.js";
import { createPushable } from "../../src/pushable.js";
import { BUF_BIN, mcp, run, startCli, tempDir, type CliServer } from "./helpers.js";

const SECRET = "reflection-e2e-secret-0123456789-abcdef";
let cli: CliServer;
let empty: Awaited<ReturnType<typeof tempDir>>;
let token: string;

beforeAll(async () => {
  empty = await tempDir("mcp-reflect-");
  cli = await startCli(["--port", "0", "--store", "memory", "--jwt-secret", SECRET, "--workspace-root", empty.path], { cwd: empty.path });
  const t = await mcp(["token", "--sub", "refl", "--role", "developer"], { env: { MCP_JWT_SECRET: SECRET } });
  expect(t.code, t.stderr).toBe(0);
  token = t.stdout.trim();
});
afterAll(async () => {
  await cli?.close();
  await empty?.remove();
});

/** `buf curl ARGS` from the empty folder, so nothing but reflection can describe the API. */
const bufCurl = (args: string[]) => run(BUF_BIN, ["curl", "--http2-prior-knowledge", ...args], { cwd: empty.path, timeoutMs: 20_000 });

/** Every service and method the schema files define, from the descriptors compiled into gen/. */
const services = reflectionFiles.flatMap((f) => f.services);
const allServices = services.map((s) => s.typeName).sort();
const allMethods = services.flatMap((s) => s.methods.map((m) => `${s.typeName}/${m.name}`)).sort();

for (const reflectProtocol of ["grpc-v1", "grpc-v1alpha"] as const) {
  describe(`buf curl --reflect --reflect-protocol ${reflectProtocol}`, () => {
    test("--list-services and --list-methods name every service and method", async () => {
      const s = await bufCurl(["--reflect-protocol", reflectProtocol, "--list-services", cli.url]);
      expect(s.code, s.stderr).toBe(0);
      expect(s.stdout.trim().split("\n").sort()).toEqual(allServices);
      expect(allServices).toEqual(expect.arrayContaining(["mcp.v1.SessionService", "mcp.v1.CommandService", "mcp.v1.ContextService", "mcp.v1.EventService", "mcp.v1.AdminService"]));
      const m = await bufCurl(["--reflect-protocol", reflectProtocol, "--list-methods", cli.url]);
      expect(m.code, m.stderr).toBe(0);
      expect(m.stdout.trim().split("\n").sort()).toEqual(allMethods);
    });

    for (const protocol of ["grpc", "connect", "grpcweb"] as const) {
      test(`Execute and ListTools over ${protocol}, described by reflection alone`, async () => {
        const auth = ["--protocol", protocol, "--reflect-protocol", reflectProtocol, "-H", `Authorization: Bearer ${token}`];
        const e = await bufCurl([...auth, "-d", '{"id":"r1","tool":"echo","arguments":{"text":"reflected"}}', `${cli.url}/mcp.v1.CommandService/Execute`]);
        expect(e.code, e.stderr).toBe(0);
        expect(JSON.parse(e.stdout)).toMatchObject({ commandId: "r1", output: { text: "reflected" } });
        const l = await bufCurl([...auth, "-d", "{}", `${cli.url}/mcp.v1.CommandService/ListTools`]);
        expect(l.code, l.stderr).toBe(0);
        const names = (JSON.parse(l.stdout) as { tools: { name: string }[] }).tools.map((t) => t.name);
        expect(names).toEqual(expect.arrayContaining(["echo", "fs.read", "fs.list"]));
      });
    }

    test("a method no service defines fails with buf curl's own 'not found'", async () => {
      const r = await bufCurl(["--reflect-protocol", reflectProtocol, "-d", "{}", `${cli.url}/mcp.v1.NoSuchService/Nothing`]);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/mcp\.v1\.NoSuchService/);
    });
  });
}

describe("the reflection stream itself", () => {
  /** Sends `queries` on one ServerReflectionInfo stream and returns the answers in order. */
  async function ask(queries: ServerReflectionRequest["messageRequest"][]) {
    const client = createClient(ServerReflection, createGrpcTransport({ baseUrl: cli.url }));
    const requests = createPushable<{ host: string; messageRequest: ServerReflectionRequest["messageRequest"] }>();
    for (const q of queries) requests.push({ host: "", messageRequest: q });
    requests.end();
    const out = [];
    for await (const r of client.serverReflectionInfo(requests)) out.push(r);
    return out;
  }

  test("file_by_filename returns the file with every file it imports, google/protobuf/struct.proto included", async () => {
    const [r] = await ask([{ case: "fileByFilename", value: "mcp/v1/command.proto" }]);
    expect(r?.messageResponse.case).toBe("fileDescriptorResponse");
    const files = r?.messageResponse.case === "fileDescriptorResponse" ? r.messageResponse.value.fileDescriptorProto.map((b) => fromBinary(FileDescriptorProtoSchema, b)) : [];
    const names = files.map((f) => f.name);
    expect(names[0]).toBe("mcp/v1/command.proto");
    expect(names).toEqual(expect.arrayContaining(["google/protobuf/struct.proto", "mcp/v1/types.proto"]));
    // Every import of every returned file is itself returned, so a client can resolve all types.
    for (const f of files) for (const d of f.dependency) expect(names).toContain(d);
    expect(files[0]?.service.map((s) => s.name)).toContain("CommandService");
  });

  test("symbols resolve with or without a leading dot; unknown names answer NOT_FOUND (5) in order", async () => {
    const answers = await ask([
      { case: "fileContainingSymbol", value: "mcp.v1.ContextService.WatchContext" },
      { case: "fileContainingSymbol", value: ".mcp.v1.ContextEntry" },
      { case: "fileContainingSymbol", value: "mcp.v1.Nope" },
      { case: "fileByFilename", value: "nope.proto" },
      { case: "allExtensionNumbersOfType", value: "mcp.v1.Command" },
      { case: undefined },
    ]);
    const first = (i: number) => {
      const m = answers[i]?.messageResponse;
      return m?.case === "fileDescriptorResponse" ? fromBinary(FileDescriptorProtoSchema, m.value.fileDescriptorProto[0]!).name : m?.case;
    };
    expect(first(0)).toBe("mcp/v1/context.proto");
    expect(first(1)).toBe("mcp/v1/context.proto");
    expect(answers[2]?.messageResponse).toEqual({ case: "errorResponse", value: expect.objectContaining({ errorCode: 5, errorMessage: 'symbol "mcp.v1.Nope" not found' }) });
    expect(answers[3]?.messageResponse).toEqual({ case: "errorResponse", value: expect.objectContaining({ errorCode: 5, errorMessage: 'file "nope.proto" not found' }) });
    expect(answers[4]?.messageResponse).toEqual({ case: "allExtensionNumbersResponse", value: expect.objectContaining({ baseTypeName: "mcp.v1.Command", extensionNumber: [] }) });
    expect(answers[5]?.messageResponse).toEqual({ case: "errorResponse", value: expect.objectContaining({ errorCode: 3 }) });
    expect(answers.map((a) => a.originalRequest?.messageRequest.case)).toEqual(["fileContainingSymbol", "fileContainingSymbol", "fileContainingSymbol", "fileByFilename", "allExtensionNumbersOfType", undefined]);
  });
});
