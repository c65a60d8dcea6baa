/**
 * A bench server in a child process of its own (bench/server.ts, forked with IPC), so that on a
 * 2-core machine server and load each get a core. Used by bench/run.ts, bench/compare.ts and bench/scale.ts.
 */
import { fork, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";

/** The path of bench/server.ts (bench:compare also hands it to the SDK's stdio client to spawn). */
export const SERVER_SCRIPT = fileURLToPath(new URL("../server.ts", import.meta.url));

/** A running bench/server.ts. */
export interface Child {
  port: number;
  pid: number;
  /** Sends `{ op }` and resolves with the next message (see bench/server.ts for the ops). */
  ask<T>(op: string): Promise<T>;
  /** Asks it to exit; resolves once it has. */
  stop(): Promise<void>;
  proc: ChildProcess;
}

/** Extra Node flags and environment for the child (bench:scale: `--expose-gc`, which build to load). */
export interface ChildOptions {
  /** @default [] */
  execArgv?: string[];
  /** @default process.env */
  env?: NodeJS.ProcessEnv;
}

/** Forks bench/server.ts as `kind` (BENCH_SERVER_PROF=<kind> runs it with --cpu-prof into bench/.prof). */
export async function startChild(kind: string, args: string[] = [], options: ChildOptions = {}): Promise<Child> {
  const proc = fork(SERVER_SCRIPT, [kind, ...args], {
    execArgv: [...(options.execArgv ?? []), "--import", "tsx", ...(process.env["BENCH_SERVER_PROF"] === kind ? ["--cpu-prof", "--cpu-prof-dir=bench/.prof"] : [])],
    env: options.env ?? process.env,
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  const port = await new Promise<number>((resolve, reject) => {
    proc.once("message", (m: { port: number }) => resolve(m.port));
    proc.once("exit", (code) => reject(new Error(`bench server ${kind} exited with ${String(code)}`)));
  });
  return {
    port,
    pid: proc.pid ?? 0, // set: the fork succeeded (it sent its port)
    proc,
    ask: <T>(op: string) =>
      new Promise<T>((resolve) => {
        proc.once("message", (m: T) => resolve(m));
        proc.send({ op });
      }),
    stop: () =>
      new Promise<void>((resolve) => {
        proc.once("exit", () => resolve());
        proc.send({ op: "exit" });
      }),
  };
}
