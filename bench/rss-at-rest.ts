/**
 * Server RSS at rest: starts a server command (`mcp serve --port 0` by default, in a fresh temp
 * folder, SQLite store and generated dev secret as a newcomer gets them), makes ten `echo` calls on
 * a session stream and five unary, leaves it idle for 3 s and reads VmRSS / VmHWM from /proc.
 * Memory, not time: safe to run on a busy machine.
 *
 *   node --import tsx bench/rss-at-rest.ts                       # node bin/mcp.js (the build)
 *   node --import tsx bench/rss-at-rest.ts node bin/mcp-dev.js   # the sources through tsx
 *   … -- --store memory                                          # extra serve flags after --
 */
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { createMcpClient } from "../src/client/index.js";

const argv = process.argv.slice(2);
const dash = argv.indexOf("--");
const cmd = (dash < 0 ? argv : argv.slice(0, dash)).map((a) => (a.endsWith(".js") || a.endsWith(".ts") ? resolve(a) : a));
const extra = dash < 0 ? [] : argv.slice(dash + 1);
const [exe, ...args] = cmd.length > 0 ? cmd : ["node", resolve("bin/mcp.js")];
const cwd = mkdtempSync(join(tmpdir(), "mcp-rss-"));
const proc = spawn(exe === "node" ? process.execPath : exe!, [...args, "serve", "--port", "0", ...extra], { cwd, stdio: ["ignore", "pipe", "inherit"] });
try {
  let out = "";
  proc.stdout.setEncoding("utf8");
  const { url, token } = await new Promise<{ url: string; token: string }>((ok, fail) => {
    const t = setTimeout(() => fail(new Error(`no "listening on" within 30 s: ${out}`)), 30_000);
    proc.stdout.on("data", (c: string) => {
      out += c;
      const u = /listening on (\S+)/.exec(out);
      const k = /MCP_TOKEN=(\S+)/.exec(out);
      if (u !== null && k !== null) {
        clearTimeout(t);
        ok({ url: u[1]!, token: k[1]! });
      }
    });
    proc.on("exit", (c) => fail(new Error(`server exited with ${c}: ${out}`)));
  });
  const client = createMcpClient({ baseUrl: url, token, protocol: "grpc" });
  const session = await client.connect();
  for (let i = 0; i < 10; i++) await session.call("echo", { text: `hi ${i}` });
  session.close();
  for (let i = 0; i < 5; i++) await client.commands.execute({ tool: "echo", payload: { case: "arguments", value: { text: "hi" } } });
  await sleep(3000);
  const status = readFileSync(`/proc/${proc.pid}/status`, "utf8");
  const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(status)?.[1] ?? NaN);
  const threads = kb("Threads");
  console.log(
    `${[exe, ...args].map((a) => a.replace(process.cwd() + "/", "")).join(" ")} serve ${extra.join(" ")}: ` +
      `RSS at rest ${(kb("VmRSS") / 1024).toFixed(1)} MiB, peak ${(kb("VmHWM") / 1024).toFixed(1)} MiB, ${threads} threads`,
  );
} finally {
  proc.kill("SIGTERM");
  await new Promise((r) => proc.once("exit", r));
  rmSync(cwd, { recursive: true, force: true });
}
