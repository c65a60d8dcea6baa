/**
 * Helpers for the outside-client tests: run the real CLI (`node bin/mcp-dev.js`, the sources) as a child process,
 * run any program and collect its output, make temp folders. Every wait is bounded.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export const REPO = resolve(import.meta.dirname, "../..");
// The sources through tsx (bin/mcp-dev.js), so tests never run a stale build.
export const MCP_BIN = join(REPO, "bin/mcp-dev.js");
export const BUF_BIN = join(REPO, "node_modules/.bin/buf");

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a program to completion (killed after `timeoutMs`) and returns its exit code and output. */
export function run(
  command: string,
  args: readonly string[],
  options: { cwd?: string; env?: Record<string, string | undefined>; input?: string; timeoutMs?: number } = {},
): Promise<RunResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd ?? REPO,
      env: { ...process.env, ...options.env },
      stdio: ["pipe", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (c: string) => (stdout += c));
    child.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 20_000);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolvePromise({ code, stdout, stderr });
    });
    // A program that exits without reading its input closes the pipe first: not an error here.
    child.stdin.on("error", () => {});
    child.stdin.end(options.input ?? "");
  });
}

/** Runs `mcp ARGS` (the real CLI) with the repo's tsx loader. */
export function mcp(args: readonly string[], options: Parameters<typeof run>[2] = {}): Promise<RunResult> {
  return run(process.execPath, [MCP_BIN, ...args], options);
}

/** A `mcp serve` child process. */
export interface CliServer {
  url: string;
  proc: ChildProcess;
  /** Everything it printed on stdout so far. */
  readonly stdout: string;
  readonly stderr: string;
  /** SIGTERM, then wait for the exit (SIGKILL after 5 s). Resolves with the exit code. */
  close(): Promise<number | null>;
}

/** Starts `mcp serve ARGS` and waits (at most `timeoutMs`) for its `listening on URL` line. */
export function startCli(
  args: readonly string[],
  options: { cwd?: string; env?: Record<string, string | undefined>; timeoutMs?: number } = {},
): Promise<CliServer> {
  const proc = spawn(process.execPath, [MCP_BIN, "serve", ...args], {
    cwd: options.cwd ?? REPO,
    env: { ...process.env, ...options.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  let exited: number | null | undefined;
  const exit = new Promise<number | null>((r) =>
    proc.on("exit", (code) => {
      exited = code;
      r(code);
    }),
  );
  const server: CliServer = {
    url: "",
    proc,
    get stdout() {
      return stdout;
    },
    get stderr() {
      return stderr;
    },
    async close() {
      if (exited !== undefined) return exited;
      proc.kill("SIGTERM");
      const timer = setTimeout(() => proc.kill("SIGKILL"), 5_000);
      const code = await exit;
      clearTimeout(timer);
      return code;
    },
  };
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      proc.kill("SIGKILL");
      reject(new Error(`mcp serve printed no "listening on" line within ${options.timeoutMs ?? 15_000} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, options.timeoutMs ?? 15_000);
    proc.stdout.setEncoding("utf8").on("data", (c: string) => {
      stdout += c;
      const m = /listening on (https?:\/\/\S+)/.exec(stdout);
      if (m !== null) {
        clearTimeout(timer);
        server.url = m[1]!;
        resolvePromise(server);
      }
    });
    proc.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
    void exit.then((code) => {
      clearTimeout(timer);
      reject(new Error(`mcp serve exited with ${code} before listening\nstdout: ${stdout}\nstderr: ${stderr}`));
    });
  });
}

/** A fresh temp folder and its remover. */
export async function tempDir(prefix = "mcp-e2e-"): Promise<{ path: string; remove(): Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}
