/**
 * The `exec` tool: runs a program (argv, no shell) in the workspace, streaming its output.
 *
 * The program leads its own process group (`detached: true`), so everything it starts can be
 * signalled at once: on abort (timeout, Cancel, session end) the group gets SIGTERM, then SIGKILL
 * after `killGraceMs`, so neither a program that ignores SIGTERM nor its children outlive the
 * command. Members left behind when the program itself exits are ended the same way.
 */
import { spawn } from "node:child_process";
import { stat } from "node:fs/promises";
import { StringDecoder } from "node:string_decoder";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { ExecInputSchema, ExecOutputSchema } from "../../../gen/mcp/tools/v1/tools_pb.js";
import { McpError } from "../../errors.js";
import { defineTypedTool } from "../define-tool.js";
import type { RegisteredTool, ToolContext } from "../registered-tool.js";
import { resolveInRoot } from "../workspace.js";
import { fsError } from "./fs-errors.js";
import type { ResolvedBuiltinToolsOptions, ResolvedExecToolOptions } from "./options.js";

type ExecOutputInit = MessageInitShape<typeof ExecOutputSchema>;
type StreamName = "stdout" | "stderr";

/** Creates `exec` (register it only when `exec.enabled`). */
export function createExecTool(options: ResolvedBuiltinToolsOptions): RegisteredTool {
  const { root, exec } = options;
  const allowed = new Set(exec.envAllowList);
  return defineTypedTool({
    name: "exec",
    description:
      "Runs a program without a shell: `argv[0]` is looked up on PATH, `cwd` is relative to the workspace root. " +
      "stdout and stderr stream as `command.output` events ({ stream, text }) and are returned at the end, " +
      `capped at ${exec.maxOutputBytes} bytes in total (\`truncated\`). Only these environment variables are ` +
      `passed or may be set in \`env\`: ${[...allowed].join(", ") || "none"}. \`exit_code\` is -1 when a signal ended the program.`,
    input: ExecInputSchema,
    output: ExecOutputSchema,
    securityLevel: options.securityLevels.exec,
    annotations: { destructive: true, streaming: true },
    async handler(input, ctx) {
      const [program, ...args] = input.argv;
      if (program === undefined || program === "") {
        throw new McpError("invalid_argument", "argv must name a program", { field: "argv" });
      }
      const bad = input.argv.findIndex((a) => a.includes("\0"));
      if (bad >= 0) throw new McpError("invalid_argument", "argv must not contain NUL bytes", { field: `argv[${bad}]` });
      const env: Record<string, string> = {};
      for (const name of allowed) {
        const value = process.env[name];
        if (value !== undefined) env[name] = value;
      }
      for (const [name, value] of Object.entries(input.env)) {
        if (!allowed.has(name)) {
          throw new McpError("invalid_argument", `environment variable ${name} is not on the server's allow-list`, { field: `env.${name}` });
        }
        if (value.includes("\0")) throw new McpError("invalid_argument", `env.${name} must not contain NUL bytes`, { field: `env.${name}` });
        env[name] = value;
      }
      const cwd = await resolveInRoot(root, input.cwd, { field: "cwd" });
      // Checked here because spawn reports a missing cwd as ENOENT, like a missing program.
      const cwdStat = await stat(cwd).catch((e: unknown) => {
        throw fsError(e, "cwd", input.cwd);
      });
      if (!cwdStat.isDirectory()) throw new McpError("invalid_argument", `cwd "${input.cwd}" is not a directory`, { field: "cwd" });
      ctx.signal.throwIfAborted();
      return runProcess(program, args, { cwd, env, stdin: input.stdin }, exec, ctx).catch((e: unknown) => {
        const code = e instanceof Error && "code" in e ? e.code : undefined;
        // The cwd was checked above, so spawn's ENOENT means the program is missing.
        if (code === "ENOENT") throw new McpError("invalid_argument", `program "${program}" was not found`, { field: "argv", cause: e });
        throw e;
      });
    },
  });
}

interface Spawn {
  cwd: string;
  env: Record<string, string>;
  stdin: string;
}

function runProcess(program: string, args: string[], spec: Spawn, options: ResolvedExecToolOptions, ctx: ToolContext): Promise<ExecOutputInit> {
  return new Promise<ExecOutputInit>((resolve, reject) => {
    const child = spawn(program, args, {
      cwd: spec.cwd,
      env: spec.env,
      detached: true,
      shell: false,
      stdio: ["pipe", "pipe", "pipe"],
      windowsHide: true,
    });
    const pid = child.pid;
    const text: Record<StreamName, string> = { stdout: "", stderr: "" };
    const decoders: Record<StreamName, StringDecoder> = { stdout: new StringDecoder("utf8"), stderr: new StringDecoder("utf8") };
    let kept = 0;
    let truncated = false;
    let settled = false;
    let killTimer: NodeJS.Timeout | undefined;

    function onData(stream: StreamName, chunk: Buffer): void {
      // Past the cap, keep reading (so the program does not block on a full pipe) but drop it.
      if (truncated) return;
      let part = chunk;
      if (kept + part.length > options.maxOutputBytes) {
        part = part.subarray(0, options.maxOutputBytes - kept);
        truncated = true;
      }
      kept += part.length;
      // StringDecoder holds back a UTF-8 sequence split across chunks (or cut by the cap).
      const piece = decoders[stream].write(part);
      if (piece === "") return;
      text[stream] += piece;
      ctx.emit("command.output", { stream, text: piece });
    }

    function signalGroup(signal: NodeJS.Signals | 0): boolean {
      if (pid === undefined) return false;
      try {
        // A negative pid addresses the whole process group the program leads.
        process.kill(-pid, signal);
        return true;
      } catch {
        // ESRCH: nobody is left in the group. (Anything else, e.g. EPERM, also means there is
        // nothing we may signal; this runs in timers and event handlers, where a throw would crash.)
        return false;
      }
    }

    function terminate(): void {
      if (killTimer !== undefined) return;
      signalGroup("SIGTERM");
      killTimer = setTimeout(() => {
        signalGroup("SIGKILL");
        // A process that escaped the group (setsid) may still hold our pipes; stop waiting for it.
        child.stdout.destroy();
        child.stderr.destroy();
      }, options.killGraceMs);
    }

    const onAbort = (): void => terminate();
    ctx.signal.addEventListener("abort", onAbort, { once: true });

    child.stdout.on("data", (chunk: Buffer) => onData("stdout", chunk));
    child.stderr.on("data", (chunk: Buffer) => onData("stderr", chunk));
    // The program may exit without reading stdin; the resulting EPIPE is not a failure of the run.
    child.stdin.on("error", () => {});
    child.stdin.end(spec.stdin);

    // The leader is gone: end what it left in its group (the same TERM-then-KILL as an abort),
    // otherwise a background child holding our pipes would keep the command open forever.
    child.on("exit", () => terminate());

    child.on("error", (e) => {
      if (settled) return;
      settled = true;
      ctx.signal.removeEventListener("abort", onAbort);
      if (killTimer !== undefined && !signalGroup(0)) clearTimeout(killTimer);
      reject(e);
    });

    child.on("close", (code, signal) => {
      if (settled) return;
      settled = true;
      ctx.signal.removeEventListener("abort", onAbort);
      // Keep the SIGKILL timer while any group member is left (one ignoring SIGTERM that
      // closed its pipes); the group id stays valid as long as a member lives.
      if (killTimer !== undefined && !signalGroup(0)) clearTimeout(killTimer);
      if (ctx.signal.aborted) {
        reject(ctx.signal.reason);
        return;
      }
      if (!truncated) {
        for (const stream of ["stdout", "stderr"] as const) {
          const rest = decoders[stream].end();
          if (rest !== "") {
            text[stream] += rest;
            ctx.emit("command.output", { stream, text: rest });
          }
        }
      }
      resolve({ exitCode: code ?? -1, signal: signal ?? "", stdout: text.stdout, stderr: text.stderr, truncated });
    });
  });
}
