/**
 * The client's gRPC transport (src/client/h2-grpc-transport.ts): unary calls straight on
 * node:http2, streaming calls through connect-node, against a real server. Every failure reaches
 * the caller as the same McpError the Connect transport gives (PROTOCOL.md §7).
 */
import { execFile } from "node:child_process";
import { constants, createServer as createHttp2Server, type Http2Server, type ServerHttp2Session } from "node:http2";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { CommandService } from "../../gen/mcp/v1/command_pb.js";
import { createMcpClient, type McpClient } from "../../src/client/index.js";
import { mapErrors } from "../../src/client/errors.js";
import { createH2GrpcTransport } from "../../src/client/h2-grpc-transport.js";
import { createTestTools } from "../helpers/command-tools.js";
import { mcpFailure } from "../helpers/mcp-failure.js";
import { startServer, type TestServer } from "../helpers/server.js";

let t: TestServer;
let token: string;
let grpc: McpClient;
beforeAll(async () => {
  t = await startServer({ tools: createTestTools().tools });
  token = await t.token("alice", ["developer"]);
  grpc = createMcpClient({ baseUrl: t.url, token, protocol: "grpc" });
});
afterAll(() => t.close());

async function failure(p: Promise<unknown>): Promise<{ kind: string; code: string }> {
  const e = await mcpFailure(p);
  return { kind: e.kind, code: e.code };
}

// The McpErrors of failed calls, the same as over the Connect protocol: client.test.ts "unary".
describe("calls", () => {
  test("call returns the tool's JSON output", async () => {
    expect(await grpc.call("echo", { text: "over h2" })).toEqual({ text: "over h2" });
  });

  test("streaming RPCs go through connect-node: ExecuteStream gives events, then the Response", async () => {
    const kinds: string[] = [];
    for await (const m of grpc.commands.executeStream({ id: "s1", tool: "count", payload: { case: "arguments", value: { count: 2 } } })) {
      kinds.push(m.message.case ?? "none");
    }
    expect(kinds).toEqual(["event", "event", "response"]);
  });
});

describe("the transport's own failures", () => {
  test("an aborted signal cancels the call → COMMAND cancelled", async () => {
    const ac = new AbortController();
    const p = mapErrors(() => grpc.commands.execute({ tool: "sleep", payload: { case: "arguments", value: {} } }, { signal: ac.signal }));
    setTimeout(() => ac.abort(), 20);
    expect(await failure(p)).toEqual({ kind: "COMMAND", code: "cancelled" });
  });

  test("a call timeout → COMMAND timeout (the deadline also travels as grpc-timeout)", async () => {
    const p = mapErrors(() => grpc.commands.execute({ tool: "sleep", payload: { case: "arguments", value: {} } }, { timeoutMs: 40 }));
    expect(await failure(p)).toEqual({ kind: "COMMAND", code: "timeout" });
  });

  test("an answer over readMaxBytes → TRANSPORT message_too_large", async () => {
    const transport = createH2GrpcTransport({
      baseUrl: t.url,
      headers: { authorization: `Bearer ${token}` },
      readMaxBytes: 1000,
      streams: createGrpcTransport({ baseUrl: t.url }),
    });
    const commands = createClient(CommandService, transport);
    const p = mapErrors(() => commands.execute({ tool: "echo", payload: { case: "arguments", value: { text: "x".repeat(2000) } } }));
    expect(await failure(p)).toEqual({ kind: "TRANSPORT", code: "message_too_large" });
    // The connection is still good for the next call.
    expect((await commands.execute({ tool: "echo", payload: { case: "arguments", value: { text: "ok" } } })).result).toMatchObject({
      case: "output",
      value: { text: "ok" },
    });
  });

  test("no server → McpError TRANSPORT connection_lost (the transport's ConnectError unavailable as its cause), not a hang", async () => {
    const gone = createMcpClient({ baseUrl: "http://127.0.0.1:1", token, protocol: "grpc" });
    const e = await gone.call("echo", { text: "x" }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(e).toMatchObject({ kind: "TRANSPORT", code: "connection_lost", retryable: true, cause: { code: 14 } }); // Code.Unavailable
  });

  test("many concurrent calls share one connection", async () => {
    const client = createMcpClient({ baseUrl: t.url, token, protocol: "grpc" });
    const before = t.server.connections;
    const out = await Promise.all(Array.from({ length: 50 }, (_, i) => client.call("echo", { text: `n${i}` })));
    expect(out.map((o) => o["text"])).toEqual(Array.from({ length: 50 }, (_, i) => `n${i}`));
    expect(t.server.connections - before).toBe(1);
  });

  test("a server restart: the next call opens a new connection", async () => {
    const first = await startServer({ tools: createTestTools().tools });
    const port = Number(new URL(first.url).port);
    const client = createMcpClient({ baseUrl: first.url, token: await first.token(), protocol: "grpc" });
    expect(await client.call("echo", { text: "before" })).toEqual({ text: "before" });
    await first.close();
    const second = await startServer({ tools: createTestTools().tools, port });
    try {
      expect(await client.call("echo", { text: "after" })).toEqual({ text: "after" });
    } finally {
      await second.close();
    }
  });

  test("an idle client does not keep its process alive", async () => {
    // A child process makes one call and must then exit by itself.
    const script = `
      import { createMcpClient } from ${JSON.stringify(fileURLToPath(new URL("../../src/client/index.ts", import.meta.url)))};
      const c = createMcpClient({ baseUrl: ${JSON.stringify(t.url)}, token: ${JSON.stringify(token)}, protocol: "grpc" });
      console.log(JSON.stringify(await c.call("echo", { text: "bye" })));`;
    const { stdout } = await promisify(execFile)(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { timeout: 20_000 });
    expect(JSON.parse(stdout)).toEqual({ text: "bye" });
  });
});

describe("a non-200 answer that is not gRPC (a proxy's own error page)", () => {
  let proxy: Http2Server;
  const sessions = new Set<ServerHttp2Session>();
  let url: string;
  beforeAll(async () => {
    // As nginx answers a body over client_max_body_size: 413, an HTML page, and RST_STREAM
    // NO_ERROR without reading the request's body (RFC 9113 §8.1), so the rest of a large one
    // waits on a flow-control window that never opens.
    proxy = createHttp2Server();
    proxy.on("session", (s) => sessions.add(s));
    proxy.on("stream", (stream) => {
      stream.on("error", () => {});
      stream.respond({ ":status": 413, "content-type": "text/html" });
      stream.write("<html><body><h1>413 Request Entity Too Large</h1></body></html>");
      stream.close(constants.NGHTTP2_NO_ERROR);
    });
    await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
    url = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    for (const s of sessions) s.destroy();
    await new Promise<void>((resolve) => proxy.close(() => resolve()));
  });

  for (const size of [10, 2 * 1024 * 1024]) {
    test(`HTTP 413 to a ${size}-byte request → TRANSPORT message_too_large, not retryable, not a hang`, async () => {
      const client = createMcpClient({ baseUrl: url, token, protocol: "grpc" });
      const e = await mcpFailure(client.call("echo", { text: "x".repeat(size) }));
      expect([e.kind, e.code, e.retryable], e.message).toEqual(["TRANSPORT", "message_too_large", false]);
      expect(e.message).toContain("HTTP 413");
      client.close();
    });
  }
});
