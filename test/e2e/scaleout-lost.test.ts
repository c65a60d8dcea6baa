/**
 * Commands whose instance dies or drains after their session moved (issue 15: "every command
 * answered exactly once, no call left pending"), with real processes: two `mcp serve` on one
 * private Redis behind HAProxy (TLS to the instances, so the session is HIGH and may run `exec`),
 * and the reconnecting TypeScript client behind a TCP relay the test can cut, so its session moves
 * to the other instance while `exec` still runs on the first (a ghost there).
 *
 * SIGKILL of that instance: the client's call rejects once with `TRANSPORT connection_lost`
 * (outcome unknown) from the new holder, after the instance's heartbeat lapsed, and the program
 * ran once (it appends a line to a file per run) — the client did not re-send it. SIGTERM: the
 * short command finishes within the grace and its real output reaches the client; the long one
 * is cancelled at the grace deadline; each answered once.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { connect, createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import type { ServerMessage } from "../../gen/mcp/v1/session_pb.js";
import { SecurityLevel } from "../../gen/mcp/v1/types_pb.js";
import { createMcpClient, type McpSession } from "../../src/client/index.js";
import { McpError } from "../../src/errors.js";
import { eventually } from "../helpers/eventually.js";
import { haveProgram, startScaleout, type Scaleout } from "./scaleout-fixtures.js";

const SECRET = "scaleout-lost-secret-0123456789-0123456789";
const ok = haveProgram("haproxy") && haveProgram("redis-server");

/** A TCP relay to `port` whose connections the test can cut (the client then reconnects through it). */
async function startRelay(port: number): Promise<{ url: string; cut(): void; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((inbound) => {
    const outbound = connect(port, "127.0.0.1");
    for (const s of [inbound, outbound]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => {});
    }
    inbound.pipe(outbound).pipe(inbound);
    inbound.on("close", () => outbound.destroy());
    outbound.on("close", () => inbound.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const addr = server.address();
  const relayPort = typeof addr === "object" && addr !== null ? addr.port : 0;
  return {
    url: `http://127.0.0.1:${relayPort}`,
    cut() {
      for (const s of [...sockets]) s.destroy();
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of [...sockets]) s.destroy();
        server.close(() => resolve());
      }),
  };
}

describe.runIf(ok)("commands of a moved session when the instance running them dies or drains, behind HAProxy", () => {
  let x: Scaleout;
  let relay: Awaited<ReturnType<typeof startRelay>>;
  beforeAll(async () => {
    // Default liveness bounds (heartbeat 1 s, dead after 3 s): what docs/deploy.md documents.
    x = await startScaleout({ secret: SECRET, tls: true, args: ["--exec-enabled", "--resume-ttl-ms", "30000", "--shutdown-grace-ms", "4000"] });
    relay = await startRelay(Number(new URL(x.lb).port));
  }, 90_000);
  afterAll(async () => {
    await relay?.close();
    await x?.stop();
  });

  /** A session through the relay, with every message it receives recorded. */
  async function connectClient(): Promise<{ s: McpSession; received: ServerMessage[] }> {
    const s = await createMcpClient({ baseUrl: relay.url, token: await x.token() }).connect({
      securityLevel: SecurityLevel.HIGH,
      reconnect: { initialDelayMs: 20, maxDelayMs: 200, maxAttempts: 40 },
    });
    const received: ServerMessage[] = [];
    void (async () => {
      for await (const m of s.messages()) received.push(m);
    })();
    return { s, received };
  }

  /** Cuts the client's connection until its session is held by the instance other than `runner` (bounded). */
  async function moveAway(s: McpSession, runner: number): Promise<number> {
    // Round-robin: a resume that lands on the same instance is an ordinary resume; cut again.
    // Bounded; generous since an instance restarted by the previous test rejoins after its health check.
    for (let attempt = 0; attempt < 40; attempt++) {
      relay.cut();
      await eventually(() => s.state === "open", "the client to resume", 15_000);
      await s.ping();
      const holder = await x.holderOf(s.sessionId);
      if (holder >= 0 && holder !== runner) return holder;
    }
    throw new Error("the balancer never sent the resume to the other instance");
  }

  /** The codes of the Responses received for `id`, in order ("output" for a result). */
  const responsesFor = (received: ServerMessage[], id: string) =>
    received.flatMap((m) => (m.message.case === "response" && m.message.value.commandId === id ? [m.message.value.result.case === "error" ? m.message.value.result.value.code : "output"] : []));
  const runsIn = (file: string) => {
    try {
      return readFileSync(file, "utf8").split("\n").filter((l) => l === "run").length;
    } catch {
      return 0;
    }
  };

  test("SIGKILL of the instance running a moved session's command: one TRANSPORT connection_lost from the new holder; the program ran once", async () => {
    const { s, received } = await connectClient();
    const runs = join(x.dir, "killed.runs");
    const runner = await x.holderOf(s.sessionId);
    expect(runner).toBeGreaterThanOrEqual(0);
    let started!: () => void;
    const startedP = new Promise<void>((r) => (started = r));
    const call = s.call("exec", { argv: ["sh", "-c", `echo run >> ${runs}; echo started; exec sleep 60`] }, { id: "doomed", timeoutMs: 120_000, onEvent: () => started() });
    const outcome = call.then(
      () => undefined,
      (e: unknown) => e,
    );
    await startedP;
    const holder = await moveAway(s, runner);
    const exited = new Promise((r) => x.instances[runner]!.proc.once("exit", r));
    x.instances[runner]!.proc.kill("SIGKILL");
    await exited;
    const err = await outcome;
    expect(err).toBeInstanceOf(McpError);
    expect([(err as McpError).kind, (err as McpError).code, (err as McpError).retryable]).toEqual(["TRANSPORT", "connection_lost", true]);
    // The client re-sent the call when it resumed on the new holder (it cannot tell what the old
    // one had received): refused there, not run; then the one answer, after the runner died.
    await s.ping();
    expect(responsesFor(received, "doomed")).toEqual(["duplicate_command_id", "connection_lost"]);
    expect(await x.holderOf(s.sessionId)).toBe(holder);
    expect(runsIn(runs)).toBe(1);
    expect(s.pendingCommandIds).toEqual([]);
    s.close();
    await x.startInstance(runner);
  }, 90_000);

  test("SIGTERM of the instance running a moved session's commands: the short one's real output and the long one cancelled at the grace deadline, each once", async () => {
    const { s, received } = await connectClient();
    const runs = join(x.dir, "drained.runs");
    const runner = await x.holderOf(s.sessionId);
    let startedCount = 0;
    let bothStarted!: () => void;
    const startedP = new Promise<void>((r) => (bothStarted = r));
    const onEvent = () => {
      if (++startedCount === 2) bothStarted();
    };
    const settle = (p: Promise<unknown>) => p.then((v) => ({ v }), (e: unknown) => ({ e }));
    // The short one waits for a file the test writes once the shutdown began.
    const go = join(x.dir, "drained.go");
    const short = settle(
      s.call("exec", { argv: ["sh", "-c", `echo run >> ${runs}; echo started; while [ ! -e ${go} ]; do sleep 0.1; done; echo done`] }, { id: "short", timeoutMs: 120_000, onEvent }),
    );
    const long = settle(s.call("exec", { argv: ["sh", "-c", `echo run >> ${runs}; echo started; exec sleep 60`] }, { id: "long", timeoutMs: 120_000, onEvent }));
    await startedP;
    await moveAway(s, runner);
    const exited = new Promise((r) => x.instances[runner]!.proc.once("exit", r));
    x.instances[runner]!.proc.kill("SIGTERM");
    // Draining (it says so on stderr): the ghost's commands run on; now the short one may finish.
    await eventually(() => x.instances[runner]!.stderr.includes("shutting down: in-flight commands get"), "the drain to start", 15_000);
    writeFileSync(go, "");
    const [sr, lr] = await Promise.all([short, long]);
    await exited;
    expect("v" in sr && sr.v).toMatchObject({ exitCode: 0 });
    expect("e" in lr && lr.e instanceof McpError && [lr.e.kind, lr.e.code]).toEqual(["COMMAND", "cancelled"]);
    await s.ping();
    expect(responsesFor(received, "short")).toEqual(["duplicate_command_id", "output"]);
    expect(responsesFor(received, "long")).toEqual(["duplicate_command_id", "cancelled"]);
    expect(runsIn(runs)).toBe(2);
    s.close();
    await x.startInstance(runner);
  }, 90_000);
});
