/**
 * The official Model Context Protocol SDK's side of bench:compare and bench:bridge: a server
 * written the way the SDK's docs write one — a factory making an `McpServer` with `echo`
 * registered by `registerTool` and a zod input schema (docs: servers/tools), served over
 * Streamable HTTP by `createMcpHandler` mounted on node:http with `toNodeHandler` from
 * `@modelcontextprotocol/node` behind its localhost Host/Origin guards (docs: serving), or over
 * stdio by `serveStdio` (docs: serving/stdio). bench/server.ts runs it as `sdk-http` / `sdk-stdio`;
 * nothing else loads this module, so the other bench servers never carry the SDK.
 */
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { localhostHostValidation, localhostOriginValidation, toNodeHandler } from "@modelcontextprotocol/node";
import { McpServer, createMcpHandler } from "@modelcontextprotocol/server";
import { serveStdio } from "@modelcontextprotocol/server/stdio";
import * as z from "zod/v4";

/** The factory: one `McpServer` with the `echo` tool, which answers its text as a text block. */
export function createEchoServer(): McpServer {
  const server = new McpServer({ name: "bench-echo", version: "1.0.0" });
  server.registerTool(
    "echo",
    { description: "Returns the given text unchanged.", inputSchema: z.object({ text: z.string() }) },
    async ({ text }) => ({ content: [{ type: "text", text }] }),
  );
  return server;
}

/** Streamable HTTP on 127.0.0.1 at `/mcp` (both protocol eras, the handler's defaults); resolves with the port. */
export async function listenSdkHttp(port = 0): Promise<number> {
  const mcp = toNodeHandler(createMcpHandler(createEchoServer));
  const checkHost = localhostHostValidation();
  const checkOrigin = localhostOriginValidation();
  const http = createServer((req, res) => {
    if (!checkHost(req, res) || !checkOrigin(req, res)) return; // the guard answered 403
    if (new URL(req.url ?? "/", "http://127.0.0.1").pathname !== "/mcp") {
      res.writeHead(404).end();
      return;
    }
    // A server's IncomingMessage always has a method; @types/node types it optional (for clients').
    void mcp(req as Parameters<typeof mcp>[0], res);
  });
  await new Promise<void>((resolve) => http.listen(port, "127.0.0.1", resolve));
  return (http.address() as AddressInfo).port;
}

/** stdio: JSON-RPC on stdin/stdout until stdin ends. */
export function serveSdkStdio(): void {
  serveStdio(createEchoServer);
}
