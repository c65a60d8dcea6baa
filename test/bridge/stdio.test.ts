/**
 * `mcp bridge --stdio`, spawned as a child process the way a desktop assistant does it, with the
 * official SDK's `Client` and `StdioClientTransport`, in both protocol eras.
 */
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { expect, it } from "vitest";
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

it("mcp bridge without --stdio is a usage error (exit 2), and stdout stays empty", async () => {
  const r = await promisify(execFile)(process.execPath, ["--import", "tsx", MAIN, "bridge", "--url", "http://127.0.0.1:1"]).then(
    () => ({ code: 0, stdout: "", stderr: "" }),
    (e: { code: number; stdout: string; stderr: string }) => e,
  );
  expect(r.code).toBe(2);
  expect(r.stdout).toBe("");
  expect(r.stderr).toContain("usage: mcp bridge --stdio");
});

it("mcp bridge --stdio with no server to reach exits 1 with the reason on stderr, nothing on stdout", async () => {
  const r = await promisify(execFile)(process.execPath, ["--import", "tsx", MAIN, "bridge", "--stdio", "--url", "http://127.0.0.1:1"], { timeout: 30_000 }).then(
    () => ({ code: 0, stdout: "", stderr: "" }),
    (e: { code: number; stdout: string; stderr: string }) => e,
  );
  expect(r.code).toBe(1);
  expect(r.stdout).toBe("");
  expect(r.stderr).toMatch(/^mcp: /m);
});
