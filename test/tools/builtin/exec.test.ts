import { mkdir, realpath, writeFile } from "node:fs/promises";
import path from "node:path";
import type { JsonObject } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, test, vi } from "vitest";
import { ExecInputSchema, ExecOutputSchema } from "../../../gen/mcp/tools/v1/tools_pb.js";
import { McpError } from "../../../src/errors.js";
import { createBuiltinTools, type RegisteredTool } from "../../../src/tools/index.js";
import { jsonCommand, makeContext, makeWorkspace, processIsGone, runJson, runTyped, type RecordedEvent } from "../helpers.js";

let root = "";
let cleanup = async (): Promise<void> => {};

function execTool(exec: { maxOutputBytes?: number; killGraceMs?: number; envAllowList?: string[] } = {}): RegisteredTool {
  return createBuiltinTools({ root, exec: { enabled: true, killGraceMs: 300, ...exec } }).find((t) => t.name === "exec") as RegisteredTool;
}

beforeAll(async () => {
  ({ root, cleanup } = await makeWorkspace());
  await mkdir(path.join(root, "sub"));
  process.env["MCP_TOOLS_TEST_SECRET"] = "s3cret";
});
afterAll(async () => {
  delete process.env["MCP_TOOLS_TEST_SECRET"];
  await cleanup();
});

/** Resolves with the first `command.output` text matching `pattern`. */
function waitForOutput(events: RecordedEvent[], pattern: RegExp): Promise<RegExpMatchArray> {
  return vi.waitFor(
    () => {
      const text = events.map((e) => String(e.data["text"])).join("");
      const match = text.match(pattern);
      if (match === null) throw new Error(`no output matching ${String(pattern)} yet`);
      return match;
    },
    { timeout: 20_000, interval: 20 },
  );
}

describe("exec", () => {
  test("exit code, stdout and stderr", async () => {
    const { ctx, events } = makeContext();
    const out = await runJson(execTool(), { argv: ["sh", "-c", "printf 'out\\n'; printf 'err\\n' >&2; exit 7"] }, ctx);
    expect(out).toEqual({ exitCode: 7, signal: "", stdout: "out\n", stderr: "err\n", truncated: false });
    expect(events).toContainEqual({ type: "command.output", data: { stream: "stdout", text: "out\n" } });
    expect(events).toContainEqual({ type: "command.output", data: { stream: "stderr", text: "err\n" } });
  });

  test("output is streamed while the program runs", async () => {
    // The program only finishes after the test has seen its first output and answered by
    // creating a file, which is possible only if output arrives before the end.
    const { ctx, events } = makeContext();
    const running = runJson(execTool(), { argv: ["sh", "-c", "echo started; while [ ! -e go ]; do sleep 0.02; done; echo finished"] }, ctx);
    await waitForOutput(events, /started/);
    await writeFile(path.join(root, "go"), "");
    expect(await running).toMatchObject({ exitCode: 0, stdout: "started\nfinished\n" });
  });

  test("typed input: stdin and cwd", async () => {
    const out = await runTyped(execTool(), ExecInputSchema, { argv: ["sh", "-c", "cat; pwd"], cwd: "sub", stdin: "from stdin\n" }, ExecOutputSchema);
    expect(out).toMatchObject({ exitCode: 0, stdout: `from stdin\n${await realpath(path.join(root, "sub"))}\n` });
  });

  test("environment: only allow-listed host variables, allow-listed user variables set", async () => {
    const out = await runJson(execTool(), {
      argv: ["sh", "-c", 'echo "[$MCP_TOOLS_TEST_SECRET][$LANG][${PATH:+path}]"'],
      env: { LANG: "C" },
    });
    expect(out["stdout"]).toBe("[][C][path]\n");
  });

  test("output beyond maxOutputBytes is dropped and flagged", async () => {
    const { ctx, events } = makeContext();
    const out = await runJson(execTool({ maxOutputBytes: 10 }), { argv: ["sh", "-c", "printf 0123456789ABCDEF; printf more >&2"] }, ctx);
    expect(out).toMatchObject({ exitCode: 0, stdout: "0123456789", stderr: "", truncated: true });
    expect(events.map((e) => e.data["text"]).join("")).toBe("0123456789");
  });

  const refused: { name: string; args: JsonObject; code: string; field?: string }[] = [
    { name: "empty argv", args: { argv: [] }, code: "invalid_argument", field: "argv" },
    { name: "program not found", args: { argv: ["no-such-program-mcp-test"] }, code: "invalid_argument", field: "argv" },
    { name: "NUL in an argument", args: { argv: ["echo", "a\0b"] }, code: "invalid_argument", field: "argv[1]" },
    { name: "env name not on the allow-list", args: { argv: ["true"], env: { MCP_TOOLS_TEST_SECRET: "x" } }, code: "invalid_argument", field: "env.MCP_TOOLS_TEST_SECRET" },
    { name: "cwd outside the root", args: { argv: ["true"], cwd: ".." }, code: "permission_denied" },
    { name: "cwd missing", args: { argv: ["true"], cwd: "nope" }, code: "invalid_argument", field: "cwd" },
  ];
  for (const { name, args, code, field } of refused) {
    test(`${name} -> ${code}`, async () => {
      await expect(execTool().run(jsonCommand("exec", args), makeContext().ctx)).rejects.toMatchObject(field === undefined ? { code } : { code, details: { field } });
    });
  }

  // On abort the whole process group gets SIGTERM, then SIGKILL after killGraceMs (300 ms here).
  const kills: { name: string; script: string }[] = [
    // leader and grandchild ignore SIGTERM (an ignored signal stays ignored across fork/exec)
    { name: "a program ignoring SIGTERM and its grandchild", script: 'trap "" TERM; sleep 30 & echo "pids $$ $!"; wait' },
    // the leader dies on SIGTERM at once; the grandchild ignores it and holds none of our pipes
    { name: "a grandchild that ignores SIGTERM after its parent died", script: '(trap "" TERM; exec sleep 30) >/dev/null 2>&1 & echo "pids $$ $!"; wait' },
  ];
  for (const { name, script } of kills) {
    test(`abort kills ${name}`, async () => {
      const controller = new AbortController();
      const { ctx, events } = makeContext(controller.signal);
      const running = execTool().run(jsonCommand("exec", { argv: ["sh", "-c", script] }), ctx);
      const [, leader, grandchild] = await waitForOutput(events, /pids (\d+) (\d+)/);
      const reason = new McpError("cancelled", "cancelled by the client");
      controller.abort(reason);
      await expect(running).rejects.toBe(reason);
      const pids = [Number(leader), Number(grandchild)];
      await vi.waitFor(() => expect(pids.filter((pid) => !processIsGone(pid))).toEqual([]), { timeout: 20_000, interval: 20 });
    });
  }

  test("background processes left when the program exits are ended", async () => {
    const out = await runJson(execTool(), { argv: ["sh", "-c", "sleep 30 & echo $!"] });
    expect(out).toMatchObject({ exitCode: 0, truncated: false });
    const pid = Number(String(out["stdout"]).trim());
    await vi.waitFor(() => expect(processIsGone(pid)).toBe(true), { timeout: 20_000, interval: 20 });
  });

  test("a signal that ends the program is reported", async () => {
    const out = await runJson(execTool(), { argv: ["sh", "-c", "kill -KILL $$"] });
    expect(out).toMatchObject({ exitCode: -1, signal: "SIGKILL" });
  });

  test("already aborted: nothing is started, the reason rejects", async () => {
    const controller = new AbortController();
    const reason = new McpError("timeout", "deadline exceeded");
    controller.abort(reason);
    await expect(execTool().run(jsonCommand("exec", { argv: ["sh", "-c", "touch started"] }), makeContext(controller.signal).ctx)).rejects.toBe(reason);
  });
});
