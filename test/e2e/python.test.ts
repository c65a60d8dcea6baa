/**
 * Python through buf (PROTOCOL.md §1: "at least Python is generated and exercised against the
 * running server"): `buf generate --template buf.gen.python.yaml` (protoc's built-in python
 * generator + grpc_python_plugin, both local) writes the modules into a temp folder, then
 * test/e2e/python/client.py drives the clients/python package (mcp_client) against
 * `mcp serve --port 0` (the real CLI process) and prints JSON that is asserted here.
 *
 * Needs protoc, grpc_python_plugin and /usr/bin/python3 with grpcio and protobuf (Debian:
 * protobuf-compiler, protobuf-compiler-grpc, python3-grpcio, python3-protobuf). Without them the
 * test is skipped with a warning — except in CI (`CI` set), where it fails.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { BUF_BIN, REPO, mcp, run, startCli, tempDir, type CliServer } from "./helpers.js";

const PYTHON = "/usr/bin/python3";
const SECRET = "python-e2e-secret-0123456789-abcdefgh";

async function missingPrerequisites(): Promise<string[]> {
  const missing: string[] = [];
  for (const tool of ["protoc", "grpc_python_plugin"]) {
    if ((await run("sh", ["-c", `command -v ${tool}`]).catch(() => undefined))?.code !== 0) missing.push(tool);
  }
  if (!existsSync(PYTHON)) missing.push(PYTHON);
  else {
    const r = await run(PYTHON, ["-c", "import grpc, google.protobuf"]).catch(() => undefined);
    if (r?.code !== 0) missing.push("python modules grpc + google.protobuf (apt: python3-grpcio python3-protobuf)");
  }
  return missing;
}

const missing = await missingPrerequisites();
if (missing.length > 0) {
  const message = `Python e2e prerequisites missing: ${missing.join(", ")}`;
  if (process.env["CI"] !== undefined && process.env["CI"] !== "") throw new Error(`${message} (CI installs them; this must not be skipped in CI)`);
  console.warn(`\n!!! SKIPPING test/e2e/python.test.ts — ${message}\n`);
}

describe.skipIf(missing.length > 0)("clients/python (mcp_client) on code from buf.gen.python.yaml", () => {
  let cli: CliServer;
  let out: Awaited<ReturnType<typeof tempDir>>;
  let work: Awaited<ReturnType<typeof tempDir>>;
  let gen: string;

  beforeAll(async () => {
    out = await tempDir("mcp-py-gen-");
    work = await tempDir("mcp-py-work-");
    const g = await run(BUF_BIN, ["generate", "--template", "buf.gen.python.yaml", "-o", out.path], { timeoutMs: 60_000 });
    expect(g.code, g.stderr).toBe(0);
    // The template's out folder, under -o: the folder the README names.
    gen = join(out.path, "clients/python/gen");
    expect(existsSync(join(gen, "mcp/v1/session_pb2_grpc.py"))).toBe(true);
    cli = await startCli(["--port", "0", "--store", "memory", "--jwt-secret", SECRET], { cwd: work.path });
  });
  afterAll(async () => {
    await cli?.close();
    await out?.remove();
    await work?.remove();
  });

  test("handshake with a token, a command, context update + sync + conflict on the stream; typed errors from the stream and from unary status details", async () => {
    const tok = await mcp(["token", "--sub", "pyuser", "--role", "developer"], { env: { MCP_JWT_SECRET: SECRET } });
    expect(tok.code, tok.stderr).toBe(0);
    const r = await run(PYTHON, [join(REPO, "test/e2e/python/client.py"), new URL(cli.url).host, tok.stdout.trim()], {
      env: { PYTHONPATH: join(REPO, "clients/python"), MCP_PYTHON_GEN: gen, PYTHONDONTWRITEBYTECODE: "1" },
      timeoutMs: 30_000,
    });
    expect(r.code, r.stderr).toBe(0);
    const o = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(o["handshake"]).toMatchObject({ subject: "pyuser", level: "SECURITY_LEVEL_STANDARD" });
    expect((o["handshake"] as { session_id: string }).session_id).toMatch(/^[0-9a-f-]{36}$/);
    expect(o["echo"]).toEqual({ text: "hello from python" });
    expect(o["update"]).toBe(1);
    // (version, entries, deleted_keys, full)
    expect(o["sync"]).toEqual([1, { lang: "python", n: 2 }, [], true]);
    expect(o["update2"]).toBe(2);
    expect(o["delta"]).toEqual([2, { n: 3 }, ["lang"], false]);
    expect(o["conflict"]).toMatchObject({ type: "McpError", kind: "CONTEXT", code: "version_conflict", status: null });
    expect(o["stream_error"]).toEqual({ type: "McpError", kind: "COMMAND", code: "unknown_tool", status: null, command_id: "py-2", message: 'no tool named "no.such.tool"' });
    // Decoded from the grpc-status-details-bin trailer's google.rpc.Status → mcp.v1.Error.
    expect(o["unary_error"]).toMatchObject({ type: "McpError", kind: "COMMAND", code: "unknown_tool", status: "NOT_FOUND", message: 'no tool named "no.such.tool"' });
    expect(o["unary_echo"]).toEqual({ text: "unary" });
    expect(o["bad_token"]).toMatchObject({ type: "McpError", kind: "SECURITY", code: "unauthenticated" });
  });
});
