/**
 * The session mirror in Redis is written in batches (src/session/session-store.ts), never once per
 * message: on a private redis-server, 2,000 echo commands on one session (CommandBatches of 64)
 * cost at most 0.1 Redis round trips each — counted, not timed: MONITOR lists every command an
 * instance sent apart from those its scripts ran, INFO commandstats the script calls. (Single
 * commands at 64 in flight are measured by bench/redis.ts: there the count depends on how many
 * answers fall into one 5 ms interval, i.e. on the machine's speed.) And the batching
 * loses nothing a resume needs: the session, still attached to instance A with its last batch
 * not yet written, resumes on instance B with every Response, once.
 */
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { Redis } from "ioredis";
import { BatchMode } from "../../gen/mcp/v1/command_pb.js";
import { args, openReader, sessionIdOf } from "../helpers/command-tools.js";
import { handshake, startServer, type TestServer } from "../helpers/server.js";
import { tempDir } from "./helpers.js";
import { freePort, haveProgram, startRedis, type Proc } from "./scaleout-fixtures.js";

const N = 2000;
const IN_FLIGHT = 64;

/**
 * MONITOR through `redis-cli`: ioredis's own monitor() fails ("Command queue state error") when
 * a command of the servers (their SUBSCRIBE at start-up) is shown before MONITOR's OK is read.
 * Calls `onCommand` with each command's arguments and its source ("lua" for a script's calls);
 * resolves once MONITOR is on.
 */
async function monitorRedis(port: number, onCommand: (argv: string[], source: string) => void): Promise<{ stop(): void }> {
  const cli = spawn("redis-cli", ["-p", String(port), "monitor"], { stdio: ["ignore", "pipe", "inherit"] });
  const lines = createInterface({ input: cli.stdout });
  await new Promise<void>((resolve, reject) => {
    cli.once("error", reject);
    lines.on("line", (line) => {
      if (line === "OK") return resolve();
      // 1796251048.371229 [0 127.0.0.1:52518] "subscribe" "mcp:revocations"
      const m = /^\d+\.\d+ \[\d+ ([^\]]+)\] (.*)$/.exec(line);
      if (m === null) return;
      const argv = [...m[2]!.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((a) => a[1]!.replace(/\\(.)/g, "$1"));
      onCommand(argv, m[1]!);
    });
  });
  return { stop: () => cli.kill() };
}

describe.runIf(haveProgram("redis-server") && haveProgram("redis-cli"))("the session mirror on Redis", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let redis: Proc;
  let raw: Redis;
  let port: number;
  let a: TestServer;
  let b: TestServer;

  beforeAll(async () => {
    dir = await tempDir("mcp-mirror-");
    port = await freePort();
    redis = await startRedis(dir.path, port);
    raw = new Redis(port, "127.0.0.1", { maxRetriesPerRequest: 1 });
    raw.on("error", () => {});
    const store = `redis://127.0.0.1:${port}`;
    a = await startServer({ store, resumeTtlMs: 30_000 });
    b = await startServer({ store, resumeTtlMs: 30_000 });
  }, 30_000);

  afterAll(async () => {
    await Promise.all([a?.close(), b?.close()]);
    raw?.disconnect();
    await redis?.stop();
    await dir?.remove();
  });

  /** Script calls so far (INFO commandstats; a script cannot call one, so each is a round trip). */
  async function scriptCalls(): Promise<number> {
    const info = await raw.info("commandstats");
    let n = 0;
    for (const m of info.matchAll(/^cmdstat_(evalsha|eval):calls=(\d+)/gm)) n += Number(m[2]);
    return n;
  }

  test(`${N} echo commands on one session cost at most 0.1 Redis round trips each, and the session resumes on another instance with every Response`, async () => {
    const tok = await a.token();
    const r = await openReader(a.url, handshake(tok));
    const sessionId = sessionIdOf(r);
    await r.roundTrip();
    const marker = `mirror-test-marker-${process.pid}`;
    const sent = new Map<string, number>();
    let counting = false;
    let markerAgain: () => void = () => {};
    const done = new Promise<void>((resolve) => (markerAgain = resolve));
    const monitor = await monitorRedis(port, (argv, source) => {
      if (argv[1] === marker) {
        if (counting) markerAgain();
        counting = true;
        return;
      }
      const cmd = (argv[0] ?? "").toLowerCase();
      if (!counting || source === "lua" || cmd === "info") return; // info: this test's own
      sent.set(cmd, (sent.get(cmd) ?? 0) + 1);
    });
    await raw.get(marker);
    const before = await scriptCalls();

    for (let i = 0; i < N; i += IN_FLIGHT) {
      const ids = Array.from({ length: Math.min(IN_FLIGHT, N - i) }, (_, k) => `c${i + k}`);
      // One CommandBatch (parallel) of 64: its Responses are emitted together, so the count
      // bounds the batching per interval whatever this machine's speed (64 single commands
      // spread over as many intervals as a loaded machine takes to answer them).
      r.send({ case: "batch", value: { mode: BatchMode.PARALLEL, commands: ids.map((id) => ({ id, tool: "echo", payload: args({ text: id }) })) } });
      // One waiter, not 64: the reader runs in this process, beside both servers.
      await r.response(ids.at(-1)!, 15_000);
    }
    const calls = (await scriptCalls()) - before;
    // Resume on B while the session is still attached to A, its last batch maybe not yet written:
    // the claim has A write it before B reads the mirror.
    const again = await openReader(b.url, handshake(tok, { resume: { sessionId, lastSeq: 1n } }));
    const hr = await again.waitFor((m) => m.message.case === "handshakeResult" || m.message.case === "error", "the resumed HandshakeResult", 15_000);
    expect(hr.message.case === "handshakeResult" && hr.message.value).toMatchObject({ sessionId, resumed: true });
    await raw.get(marker);
    await done;
    monitor.stop();

    const replayed = again.messages.filter((m) => m.seq < hr.seq && m.message.case === "response").map((m) => (m.message.case === "response" ? m.message.value.commandId : ""));
    expect(replayed).toEqual(r.messages.filter((m) => m.message.case === "response").map((m) => (m.message.case === "response" ? m.message.value.commandId : "")));
    expect(new Set(replayed).size).toBe(N);

    const roundTrips = [...sent.values()].reduce((x, y) => x + y, 0);
    // The counts bound the batching, whatever the speed: mirroring happened (script calls), and
    // far fewer times than there were messages.
    expect(calls).toBeGreaterThan(0);
    expect(calls).toBeLessThanOrEqual(N * 0.1);
    expect(roundTrips, JSON.stringify(Object.fromEntries(sent))).toBeLessThanOrEqual(N * 0.1);
    again.close();
    r.close();
  }, 60_000);
});
