/**
 * The README's command lines are tests, so they cannot rot (issue 13 item 6).
 *
 * Which lines: every line of every ```sh block in the README sections named in `SECTIONS` (by
 * heading text), in order; `\` continuations are joined. How they run, as a user would paste
 * them: with bash, from the repository folder, against the server the README's own
 * `npm ci && npm start` line starts (only `npm start` runs: the install is done, and `npm test`
 * lines are skipped — this run is the test). Its port is free rather than 9000 (`MCP_PORT=0`)
 * and its state goes to a temp folder (`MCP_STATE_DIR`), so `127.0.0.1:9000` in a line becomes
 * the real address and `MCP_URL` / `MCP_TOKEN` are set as after the `export MCP_TOKEN=…` line the
 * server prints. A line passes when it exits 0 and prints no Connect error; `EXPECT` adds an
 * output check for some. A line whose comment says `Ctrl-C` keeps running while the rest of its
 * block runs, must print, and is then stopped with SIGINT. Another helper's section is covered
 * by adding its heading to `SECTIONS`.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { REPO, run, tempDir } from "./e2e/helpers.js";

const SECTIONS = ["Quick start (Node 20.19+)", "Python"];

/** Output checks for lines containing the key (beyond exit 0 and no Connect error). */
const EXPECT: Record<string, RegExp> = {
  "-- tools": /\becho\b/,
  "call echo": /"text": ?"hi"/,
  "/readyz": /^ready$/,
  "--list-methods": /^mcp\.v1\.CommandService\/Execute$/m,
  "context watch": /hi again/,
  "clients/python/example.py": /^echo: \{'text': 'hi from python'\}$[\s\S]*^error: COMMAND unknown_tool$/m,
  "fs.read": /Machine Context Protocol/,
};

interface Block {
  section: string;
  lines: string[];
}

/** The ```sh blocks of the named sections, their lines joined across `\` continuations. */
export function readmeBlocks(markdown: string, sections: readonly string[]): Block[] {
  const blocks: Block[] = [];
  let section = "";
  let inBlock: string[] | undefined;
  for (const raw of markdown.split("\n")) {
    if (inBlock !== undefined) {
      if (raw.startsWith("```")) {
        if (sections.includes(section)) blocks.push({ section, lines: inBlock });
        inBlock = undefined;
      } else if (inBlock.length > 0 && inBlock[inBlock.length - 1]!.endsWith("\\")) {
        inBlock[inBlock.length - 1] = inBlock[inBlock.length - 1]!.slice(0, -1) + raw.trimStart();
      } else if (raw.trim() !== "" && !raw.trim().startsWith("#")) {
        inBlock.push(raw);
      }
      continue;
    }
    const h = /^#{2,4} (.*)$/.exec(raw);
    if (h !== null) section = h[1]!.trim();
    else if (raw.startsWith("```sh")) inBlock = [];
  }
  return blocks;
}

const readme = readFileSync(`${REPO}/README.md`, "utf8");
const blocks = readmeBlocks(readme, SECTIONS);

let server: ChildProcess | undefined;
let state: Awaited<ReturnType<typeof tempDir>>;
let url = "";
let token = "";
let serverOutput = "";

/** Node's folder first (the same node as this run), then Debian's python3 before pyenv shims. */
const PATH = `${dirname(process.execPath)}:/usr/bin:${process.env["PATH"] ?? ""}`;
const env = (): Record<string, string> => ({ PATH, MCP_URL: url, MCP_TOKEN: token, MCP_STATE_DIR: `${state.path}/.mcp`, PYTHONDONTWRITEBYTECODE: "1" });
const localize = (line: string): string => line.replaceAll("127.0.0.1:9000", new URL(url).host);

/** Kills a detached child's whole process group (npm and the node it started). */
function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  try {
    if (child.pid !== undefined) process.kill(-child.pid, signal);
  } catch {
    // already gone
  }
}

function startLine(command: string, extraEnv: Record<string, string>): { child: ChildProcess; output: () => string; exit: Promise<number | null> } {
  const child = spawn("bash", ["-c", command], { cwd: REPO, env: { ...process.env, ...extraEnv }, stdio: ["ignore", "pipe", "pipe"], detached: true });
  let out = "";
  child.stdout!.setEncoding("utf8").on("data", (c: string) => (out += c));
  child.stderr!.setEncoding("utf8").on("data", (c: string) => (out += c));
  const exit = new Promise<number | null>((r) => child.on("exit", (code, sig) => r(code ?? (sig === "SIGINT" ? 130 : null))));
  return { child, output: () => out, exit };
}

async function waitFor(check: () => boolean, what: string, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A Connect/JSON error body printed by curl or buf curl. */
function connectError(output: string): string | undefined {
  const m = /"code":\s*"([a-z_]+)",\s*"message"/.exec(output);
  return m?.[1];
}

function check(line: string, output: string): void {
  expect(connectError(output), `${line}\n${output}`).toBeUndefined();
  for (const [key, re] of Object.entries(EXPECT)) if (line.includes(key)) expect(output.trim(), line).toMatch(re);
}

describe("README command lines, verbatim, against the server its quick start starts", () => {
  beforeAll(async () => {
    state = await tempDir("mcp-readme-");
    const startLineText = blocks.flatMap((b) => b.lines).find((l) => /\bnpm start\b/.test(l));
    expect(startLineText, "the quick start starts the server with npm start").toBeDefined();
    const parts = startLineText!.replace(/#.*$/, "").split("&&").map((p) => p.trim());
    expect(parts.filter((p) => p !== "npm ci" && p !== "npm start"), "only npm ci and npm start on the start line").toEqual([]);
    const s = startLine("npm start", { PATH, MCP_PORT: "0", MCP_STATE_DIR: `${state.path}/.mcp` });
    server = s.child;
    await waitFor(() => /listening on (https?:\/\/[^\s"]+)/.test(s.output()) && /export MCP_TOKEN=(\S+)/.test(s.output()), "npm start to print its URL and token", 30_000);
    serverOutput = s.output();
    url = /listening on (https?:\/\/[^\s"]+)/.exec(serverOutput)![1]!;
    token = /export MCP_TOKEN=(\S+)/.exec(serverOutput)![1]!;
  }, 40_000);
  afterAll(async () => {
    if (server !== undefined && server.exitCode === null) {
      const exited = new Promise((r) => server!.once("exit", r));
      signalGroup(server, "SIGTERM");
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5_000))]);
      signalGroup(server, "SIGKILL");
    }
    await state?.remove();
  });

  test("the covered sections exist and have command lines", () => {
    for (const s of SECTIONS) expect(blocks.some((b) => b.section === s && b.lines.length > 0), s).toBe(true);
  });

  for (const [i, block] of blocks.entries()) {
    const runnable = block.lines.filter((l) => !/\bnpm start\b/.test(l) && !/^npm test\b/.test(l.trim()));
    if (runnable.length === 0) continue;
    test(`${block.section}, block ${i + 1}: ${runnable.map((l) => l.split(/\s+#/)[0]!.trim().slice(0, 60)).join(" | ")}`, async () => {
      const background: { line: string; child: ChildProcess; output: () => string; exit: Promise<number | null> }[] = [];
      try {
        for (const line of runnable) {
          const command = localize(line);
          if (/#.*Ctrl-C/.test(line)) {
            const bg = startLine(command, env());
            background.push({ line, ...bg });
            await waitFor(() => bg.output().trim() !== "", `first output of: ${line}`, 30_000);
            continue;
          }
          const r = await run("bash", ["-c", command], { cwd: REPO, env: env(), timeoutMs: 90_000 });
          expect(r.code, `${line}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`).toBe(0);
          check(line, r.stdout);
        }
        for (const bg of background) {
          // Its output is checked after the lines below it ran (a watch must print their change).
          await waitFor(() => Object.entries(EXPECT).every(([k, re]) => !bg.line.includes(k) || re.test(bg.output())), `the output expected of: ${bg.line}`, 15_000).catch(() => {});
          signalGroup(bg.child, "SIGINT");
          const code = await Promise.race([bg.exit, new Promise<"hung">((r) => setTimeout(() => r("hung"), 10_000))]);
          expect([0, 130], `${bg.line} after Ctrl-C\n${bg.output()}`).toContain(code);
          check(bg.line, bg.output());
        }
      } finally {
        for (const bg of background) signalGroup(bg.child, "SIGKILL");
      }
    }, 240_000);
  }
});
