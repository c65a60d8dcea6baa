/**
 * `mcp bridge --stdio`, spawned as a child process the way a desktop assistant does it, with the
 * official SDK's `Client` and `StdioClientTransport`, in both protocol eras.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Client } from "@modelcontextprotocol/client";
import { StdioClientTransport } from "@modelcontextprotocol/client/stdio";
import { createMcpClient } from "../../src/client/index.js";
import { startServer, type TestServer } from "../helpers/server.js";
import { bridgeScenarios, ERAS, textFile, type Connect } from "./scenarios.js";

const MAIN = fileURLToPath(new URL("../../src/cli/main.ts", import.meta.url));

const connectWith = (extra: string[]): Connect => async (server, token, era) => {
  const client = new Client({ name: "bridge-test", version: "1.0.0" }, era.options);
  const transport = new StdioClientTransport({
    command: process.execPath,
    args: ["--import", "tsx", MAIN, "bridge", "--stdio", "--url", server.url, ...extra],
    // The token from MCP_TOKEN, as a desktop assistant's config passes it.
    env: { PATH: process.env["PATH"] ?? "", MCP_TOKEN: token },
    stderr: "pipe",
  });
  await client.connect(transport);
  return client;
};
const connect = connectWith([]);

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

describe("mcp bridge --stdio --max-text-bytes above the server's cap", () => {
  const MIB = 1024 * 1024;
  const CHUNK = 256 * 1024;
  let server: TestServer;
  let root: string;
  let client: Client;
  let token: string;
  // A 4-byte character across two of the server's chunk boundaries and across the bridge's 2 MiB.
  const file = textFile(3 * MIB, [2 * CHUNK, 5 * CHUNK, 2 * MIB], "😀");

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), "mcp-bridge-cap-"));
    writeFileSync(join(root, "big.txt"), file);
    server = await startServer({ workspaceRoot: root });
    token = await server.token("alice", ["developer"]);
    client = await connectWith(["--max-text-bytes", String(2 * MIB)])(server, token, ERAS[0]);
  }, 60_000);
  afterAll(async () => {
    await client?.close();
    await server?.close();
    rmSync(root, { recursive: true, force: true });
  });

  it("builds the text from the chunks the server streams: whole characters across chunk boundaries, cut before a split one", async () => {
    const result = await client.callTool({ name: "fs.read", arguments: { path: "big.txt" } });
    const out = result.structuredContent as Record<string, unknown>;
    // The server streamed its 2 MiB range as chunks (its cap is 1 MiB); the model gets text, not an empty content.
    expect(Buffer.from(out["content"] as string, "utf8").equals(file.subarray(0, 2 * MIB - 1))).toBe(true);
    expect((out["content"] as string).match(/😀/gu)).toHaveLength(2);
    expect(out).toEqual({ content: out["content"], size: String(file.length), nextOffset: String(2 * MIB - 1), truncated: true });
    // The keys a call without chunks has: no `chunked`, no `sha256` of bytes that are now text.
    const native = await createMcpClient({ baseUrl: server.url, token }).call("fs.read", { path: "big.txt" });
    expect(Object.keys(out).sort()).toEqual(Object.keys(native).sort());
  });

  it("ends at the file's end without a cut when the rest fits", async () => {
    const result = await client.callTool({ name: "fs.read", arguments: { path: "big.txt", offset: 2 * MIB - 1 } });
    const out = result.structuredContent as Record<string, unknown>;
    expect(Buffer.from(out["content"] as string, "utf8").equals(file.subarray(2 * MIB - 1))).toBe(true);
    expect(out).toMatchObject({ size: String(file.length), nextOffset: String(file.length), truncated: false });
  });
});

it("mcp bridge --stdio --max-text-bytes that is not a positive integer is a usage error (exit 2)", async () => {
  const r = await promisify(execFile)(process.execPath, ["--import", "tsx", MAIN, "bridge", "--stdio", "--max-text-bytes", "0"]).then(
    () => ({ code: 0, stdout: "", stderr: "" }),
    (e: { code: number; stdout: string; stderr: string }) => e,
  );
  expect(r.code).toBe(2);
  expect(r.stdout).toBe("");
  expect(r.stderr).toContain("--max-text-bytes");
});
