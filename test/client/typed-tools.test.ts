/** Typed calls of built-in tools over a real session: Any in, typed output back, McpError on failure. */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";
import { builtinTools, createMcpClient, type McpSession } from "../../src/client/index.js";
import { startServer, type TestServer } from "../helpers/server.js";

let t: TestServer;
let root: string;
let session: McpSession;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "mcp-typed-"));
  await writeFile(join(root, "notes.txt"), "line one\nline two\n");
  t = await startServer({ workspaceRoot: root });
  session = await createMcpClient({ baseUrl: t.url, token: await t.token("dana", ["developer"]) }).connect();
});
afterAll(async () => {
  session.close();
  await t.close();
  await rm(root, { recursive: true, force: true });
});

test("echo and fs.read return their generated output messages", async () => {
  const tools = builtinTools(session);
  const echo = await tools.echo({ text: "typed" });
  expect(echo.$typeName).toBe("mcp.tools.v1.EchoOutput");
  expect(echo.text).toBe("typed");
  const read = await tools.fsRead({ path: "notes.txt", offset: 5n, length: 3n });
  expect([read.content, read.size, read.nextOffset, read.truncated]).toEqual(["one", 18n, 8n, true]);
});

test("fs.search finds lines with typed matches", async () => {
  const r = await builtinTools(session).fsSearch({ pattern: "two" });
  expect(r.matches.map((m) => [m.path, m.line, m.column])).toEqual([["notes.txt", 2, 6]]);
});

test("a failing typed call rejects with the command's McpError", async () => {
  await expect(builtinTools(session).fsRead({ path: "../outside.txt" })).rejects.toMatchObject({ kind: "SECURITY", code: "permission_denied" });
  await expect(builtinTools(session).fsRead({ path: "missing.txt" })).rejects.toMatchObject({ kind: "COMMAND", code: "invalid_argument" });
});
