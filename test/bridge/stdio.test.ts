/**
 * `mcp bridge --stdio`, spawned as a child process the way a desktop assistant does it, with the
 * official SDK's `Client` and `StdioClientTransport`, in both protocol eras.
 */
import { fileURLToPath } from "node:url";
import { Client } from "@modelcontextprotocol/client";
import { StdioClientTransport } from "@modelcontextprotocol/client/stdio";
import { bridgeScenarios, type Connect } from "./scenarios.js";

const MAIN = fileURLToPath(new URL("../../src/cli/main.ts", import.meta.url));

const connect: Connect = async (server, token, era) => {
  const client = new Client({ name: "bridge-test", version: "1.0.0" }, era.options);
  const transport = new StdioClientTransport({
    command: process.execPath,
    args: ["--import", "tsx", MAIN, "bridge", "--stdio", "--url", server.url],
    // The token from MCP_TOKEN, as a desktop assistant's config passes it.
    env: { PATH: process.env["PATH"] ?? "", MCP_TOKEN: token },
    stderr: "pipe",
  });
  await client.connect(transport);
  return client;
};

// Both eras hold a connection for the bridge's life, so change notifications reach the client.
bridgeScenarios("stdio", connect, () => true);
