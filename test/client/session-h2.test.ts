/**
 * The client's session stream over node:http2 (src/client/session-h2.ts), the default of
 * `McpClient.connect()` for http:// URLs, against a real server; and the same McpSession API over a
 * caller's connect-es transport.
 */
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { eventually } from "../helpers/eventually.js";
import { BatchMode } from "../../gen/mcp/v1/command_pb.js";
import { SecurityLevel } from "../../gen/mcp/v1/types_pb.js";
import { createMcpClient, type McpSession } from "../../src/client/index.js";
import { h2SessionStream } from "../../src/client/session-h2.js";
import { McpError } from "../../src/errors.js";
import { defineJsonTool } from "../../src/tools/index.js";
import { startServer, type TestServer } from "../helpers/server.js";

let t: TestServer;
beforeAll(async () => {
  t = await startServer();
});
afterAll(() => t.close());

const transports = [
  { name: "node:http2 (default)", client: async () => createMcpClient({ baseUrl: t.url, token: await t.token() }) },
  {
    name: "a caller's connect-es transport",
    client: async () => {
      const token = await t.token();
      return createMcpClient({
        baseUrl: t.url,
        token,
        transport: createConnectTransport({
          baseUrl: t.url,
          httpVersion: "2",
          interceptors: [(next) => (req) => (req.header.set("authorization", `Bearer ${token}`), next(req))],
        }),
      });
    },
  },
];

for (const { name, client } of transports) {
  describe(`McpSession over ${name}`, () => {
    let s: McpSession;
    beforeAll(async () => {
      s = await (await client()).connect();
    });
    afterAll(() => s.close());

    test("handshake result, then a call", async () => {
      expect(s.handshake.principal?.subject).toBe("alice");
      expect(await s.call("echo", { text: "hi" })).toMatchObject({ text: "hi" });
    });

    test("64 calls in flight are each answered with their own output", async () => {
      const outs = await Promise.all(Array.from({ length: 64 }, (_, i) => s.call("echo", { text: `n${i}` })));
      expect(outs.map((o) => o["text"])).toEqual(Array.from({ length: 64 }, (_, i) => `n${i}`));
    });

    test("batch, ping and a command error as McpError", async () => {
      const rs = await s.batch([{ tool: "echo", payload: { case: "arguments", value: { text: "a" } } }, { tool: "echo", payload: { case: "arguments", value: { text: "b" } } }], BatchMode.PARALLEL);
      expect(rs.map((r) => r.result.case)).toEqual(["output", "output"]);
      expect(await s.ping()).toBeGreaterThanOrEqual(0);
      const err = await s.call("no.such.tool").catch((e: unknown) => e);
      expect(err).toBeInstanceOf(McpError);
      expect(err).toMatchObject({ kind: "COMMAND", code: "unknown_tool" });
    });
  });
}

describe("node:http2 session stream lifecycle", () => {
  test("a bad token: connect() rejects with SECURITY unauthenticated", async () => {
    const c = createMcpClient({ baseUrl: t.url, token: "not-a-jwt" });
    const err = await c.connect().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(McpError);
    expect(err).toMatchObject({ kind: "SECURITY" });
  });

  test("close({ resumable: true }) ends the stream cleanly and the server detaches the session", async () => {
    const s = await createMcpClient({ baseUrl: t.url, token: await t.token() }).connect();
    const id = s.sessionId;
    expect(t.server.core.sessions.get(id)?.connected).toBe(true);
    void s.close({ resumable: true });
    expect(await s.closed).toBeUndefined();
    await eventually(() => t.server.core.sessions.get(id)?.connected === false, "the session to detach");
  });

  test("close() ends the session on the server before it resolves", async () => {
    const s = await createMcpClient({ baseUrl: t.url, token: await t.token() }).connect({ closeTimeoutMs: 600_000 });
    const id = s.sessionId;
    await s.close();
    expect(t.server.core.sessions.has(id)).toBe(false);
  });

  test("an aborted signal closes the stream; calls after it reject", async () => {
    const ac = new AbortController();
    const s = await createMcpClient({ baseUrl: t.url, token: await t.token() }).connect({ signal: ac.signal });
    ac.abort();
    await s.closed;
    await expect(s.call("echo", { text: "late" })).rejects.toBeInstanceOf(McpError);
  });

  test("the server going away ends the session with an error and rejects calls in flight", async () => {
    // A tool that runs until its signal fires, so the call is still in flight at shutdown.
    const hang = defineJsonTool({
      name: "hang",
      description: "Waits until aborted.",
      securityLevel: SecurityLevel.STANDARD,
      inputSchema: { type: "object" },
      handler: (_args, ctx) =>
        new Promise((_resolve, reject) => ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason as Error), { once: true })),
    });
    const own = await startServer({ tools: [hang] });
    const s = await createMcpClient({ baseUrl: own.url, token: await own.token("alice", ["admin"]) }).connect();
    const pending = s.call("hang", {}).catch((e: unknown) => e);
    await s.ping(); // the command reached the server
    await own.close();
    const err = await s.closed;
    expect(err).toBeInstanceOf(McpError);
    expect(await pending).toBeInstanceOf(McpError);
  });

  test("a connection over max_connections: the RPC fails with TRANSPORT too_many_connections (status + detail)", async () => {
    const limited = await startServer({ maxConnections: 1 });
    try {
      const first = await createMcpClient({ baseUrl: limited.url, token: await limited.token() }).connect();
      const err = await createMcpClient({ baseUrl: limited.url, token: await limited.token() })
        .connect()
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(McpError);
      expect(err).toMatchObject({ kind: "TRANSPORT", code: "too_many_connections", retryable: true });
      first.close();
    } finally {
      await limited.close();
    }
  });

  test("h2SessionStream refuses a URL that is not http(s)", () => {
    expect(() => h2SessionStream({ baseUrl: "ftp://example.com" })).toThrow(TypeError);
  });
});
