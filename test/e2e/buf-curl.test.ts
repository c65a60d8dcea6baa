/**
 * `buf curl` (an outside Connect/gRPC client that reads our .proto files) against the real CLI
 * process `mcp serve --port 0`: CommandService/Execute, ContextService/UpdateContext and
 * GetContext with a bearer token over h2c prior knowledge, and errors carrying their code.
 */
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { BUF_BIN, mcp, run, startCli, tempDir, type CliServer } from "./helpers.js";

const SECRET = "buf-curl-e2e-secret-0123456789-abcdef";
let cli: CliServer;
let dir: Awaited<ReturnType<typeof tempDir>>;
let developer: string;
let viewer: string;

async function mintCli(sub: string, role: string): Promise<string> {
  const r = await mcp(["token", "--sub", sub, "--role", role], { env: { MCP_JWT_SECRET: SECRET } });
  expect(r.code, r.stderr).toBe(0);
  return r.stdout.trim();
}

beforeAll(async () => {
  dir = await tempDir();
  cli = await startCli(["--port", "0", "--store", "memory", "--jwt-secret", SECRET, "--workspace-root", dir.path], { cwd: dir.path });
  developer = await mintCli("carol", "developer");
  viewer = await mintCli("victor", "viewer");
});
afterAll(async () => {
  await cli?.close();
  await dir?.remove();
});

/** `buf curl --http2-prior-knowledge --schema proto` one RPC; JSON body in, result out. */
function bufCurl(method: string, body: unknown, token?: string) {
  const args = ["curl", "--http2-prior-knowledge", "--schema", "proto"];
  if (token !== undefined) args.push("-H", `Authorization: Bearer ${token}`);
  args.push("-d", JSON.stringify(body), `${cli.url}/${method}`);
  return run(BUF_BIN, args, { timeoutMs: 20_000 });
}

describe("buf curl against mcp serve", () => {
  test("CommandService/Execute echo returns the Response as JSON", async () => {
    const r = await bufCurl("mcp.v1.CommandService/Execute", { id: "b1", tool: "echo", arguments: { text: "hi from buf" } }, developer);
    expect(r.code, r.stderr).toBe(0);
    const response = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(response).toMatchObject({ commandId: "b1", output: { text: "hi from buf" } });
    expect(response["error"]).toBeUndefined();
  });

  test("ContextService/UpdateContext then GetContext see the same entries and version", async () => {
    const u = await bufCurl(
      "mcp.v1.ContextService/UpdateContext",
      { contextId: "buf-ctx", ops: [{ put: { key: "greeting", value: "hello" } }, { put: { key: "n", value: 3 } }] },
      developer,
    );
    expect(u.code, u.stderr).toBe(0);
    expect(JSON.parse(u.stdout)).toMatchObject({ contextId: "buf-ctx", version: "1" });

    const g = await bufCurl("mcp.v1.ContextService/GetContext", { contextId: "buf-ctx" }, developer);
    expect(g.code, g.stderr).toBe(0);
    const sync = JSON.parse(g.stdout) as { toVersion: string; full: boolean; entries: { key: string; value: unknown; updatedBy: string }[] };
    expect(sync.toVersion).toBe("1");
    expect(sync.full).toBe(true);
    const byKey = Object.fromEntries(sync.entries.map((e) => [e.key, [e.value, e.updatedBy]]));
    expect(byKey).toEqual({ greeting: ["hello", "carol"], n: [3, "carol"] });
  });

  // Each failure prints the Connect error with its code and the mcp.v1.Error detail (as `debug`).
  const errors = [
    // COMMAND unknown_tool → not_found
    { name: "unknown tool", method: "mcp.v1.CommandService/Execute", body: { tool: "no.such.tool" }, who: "developer", code: "not_found", kind: "ERROR_KIND_COMMAND", mcp: "unknown_tool" },
    // no token → unauthenticated
    { name: "no token", method: "mcp.v1.CommandService/Execute", body: { tool: "echo", arguments: { text: "x" } }, who: "none", code: "unauthenticated", kind: "ERROR_KIND_SECURITY", mcp: "unauthenticated" },
    // viewer writing a context → permission_denied
    { name: "viewer writes a context", method: "mcp.v1.ContextService/UpdateContext", body: { contextId: "buf-ctx", ops: [{ put: { key: "greeting", value: "bye" } }] }, who: "viewer", code: "permission_denied", kind: "ERROR_KIND_SECURITY", mcp: "permission_denied" },
  ] as const;
  for (const c of errors) {
    test(`${c.name} → ${c.code} with mcp.v1.Error ${c.mcp} in the output`, async () => {
      const token = c.who === "developer" ? developer : c.who === "viewer" ? viewer : undefined;
      const r = await bufCurl(c.method, c.body, token);
      expect(r.code).not.toBe(0);
      expect(r.stdout).toBe("");
      const err = JSON.parse(r.stderr) as { code: string; details: { type: string; debug: { kind: string; code: string } }[] };
      expect(err.code).toBe(c.code);
      expect(err.details).toHaveLength(1);
      expect(err.details[0]).toMatchObject({ type: "mcp.v1.Error", debug: { kind: c.kind, code: c.mcp } });
    });
  }

  test("the denied context write left the context untouched", async () => {
    const g = await bufCurl("mcp.v1.ContextService/GetContext", { contextId: "buf-ctx" }, developer);
    expect(g.code, g.stderr).toBe(0);
    const sync = JSON.parse(g.stdout) as { toVersion: string; entries: { key: string; value: unknown }[] };
    expect(sync.toVersion).toBe("1");
    expect(sync.entries.find((e) => e.key === "greeting")?.value).toBe("hello");
  });
});
