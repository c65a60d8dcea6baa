/**
 * A real server in a child process, for tests that bound its memory or try to bring it down
 * (test/session/limits.test.ts, test/fuzz/). Started by `startServerProcess`; the child runs this
 * file with `--expose-gc`, takes its options as JSON in argv[2] and answers one line of JSON per
 * line it reads on stdin: `mem` → memory after a full GC and the session counts.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { mintToken } from "../../src/security/index.js";
import type { McpServerOptions } from "../../src/server/server.js";
import { SECRET } from "./server.js";

/** What the child reports for `mem`. */
export interface ChildMemory {
  heapUsed: number;
  /** Buffers outside the heap (file reads, chunks). */
  arrayBuffers: number;
  rss: number;
  /** Sessions held (attached and detached), and of those detached. */
  sessions: number;
  detached: number;
  /** Bytes the detached sessions hold for resume. */
  detachedHeldBytes: number;
}

export interface ServerProcess {
  url: string;
  child: ChildProcess;
  token(subject?: string): Promise<string>;
  /** Memory after a full GC in the child. */
  memory(): Promise<ChildMemory>;
  /** Whether the child is still running. */
  readonly alive: boolean;
  /** What the child wrote to stderr (for failure messages). */
  readonly stderr: string;
  close(): Promise<void>;
}

type JsonOptions = Omit<McpServerOptions, "tools" | "audit" | "now">;

/** Starts a server on 127.0.0.1 port 0 in a child process with `options` (JSON-able ones only). */
export async function startServerProcess(options: JsonOptions = {}): Promise<ServerProcess> {
  const self = fileURLToPath(import.meta.url);
  const child = spawn(process.execPath, ["--expose-gc", "--import", "tsx", self, JSON.stringify({ port: 0, jwtSecret: SECRET, store: "memory", ...options })], {
    stdio: ["pipe", "pipe", "pipe"],
    env: { ...process.env, NODE_OPTIONS: "" },
  });
  let stderr = "";
  child.stderr!.setEncoding("utf8").on("data", (d: string) => {
    stderr = (stderr + d).slice(-20_000);
  });
  let exited = false;
  child.once("exit", () => (exited = true));
  const lines = createInterface({ input: child.stdout! });
  const waiting: ((line: string) => void)[] = [];
  lines.on("line", (line) => waiting.shift()?.(line));
  const nextLine = (what: string) =>
    new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the server process sent no ${what} within 30 s; stderr: ${stderr}`)), 30_000);
      const onExit = () => reject(new Error(`the server process exited before its ${what}; stderr: ${stderr}`));
      child.once("exit", onExit);
      waiting.push((line) => {
        clearTimeout(timer);
        child.off("exit", onExit);
        resolve(line);
      });
    });
  const { url } = JSON.parse(await nextLine("address")) as { url: string };
  return {
    url,
    child,
    get alive() {
      return !exited && child.exitCode === null && child.signalCode === null;
    },
    get stderr() {
      return stderr;
    },
    token: (subject = "alice") => mintToken({ secret: SECRET, subject, roles: ["developer"], ttlSec: 600, issuer: "mcp", audience: "mcp" }),
    async memory() {
      const line = nextLine("memory report");
      child.stdin!.write("mem\n");
      return JSON.parse(await line) as ChildMemory;
    },
    async close() {
      if (exited) return;
      child.stdin!.end();
      const done = once(child, "exit");
      const kill = setTimeout(() => child.kill("SIGKILL"), 5000);
      await done;
      clearTimeout(kill);
    },
  };
}

async function main(): Promise<void> {
  const { createMcpServer } = await import("../../src/server/server.js");
  const gc = (globalThis as { gc?: () => void }).gc;
  const server = createMcpServer({ ...(JSON.parse(process.argv[2] ?? "{}") as JsonOptions), audit: () => {} });
  const { url } = await server.listen();
  process.stdout.write(`${JSON.stringify({ url })}\n`);
  const rl = createInterface({ input: process.stdin });
  rl.on("line", (line) => {
    if (line !== "mem") return;
    gc?.();
    gc?.();
    const m = process.memoryUsage();
    let detached = 0;
    let detachedHeldBytes = 0;
    for (const s of server.core.sessions.values()) {
      if (s.connected) continue;
      detached++;
      detachedHeldBytes += s.heldBytes;
    }
    const report: ChildMemory = { heapUsed: m.heapUsed, arrayBuffers: m.arrayBuffers, rss: m.rss, sessions: server.core.sessions.size, detached, detachedHeldBytes };
    process.stdout.write(`${JSON.stringify(report)}\n`);
  });
  // The parent closed our stdin: shut down cleanly.
  rl.on("close", () => {
    void server.close().then(() => process.exit(0));
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) void main();
