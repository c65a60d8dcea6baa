/**
 * `Cancel` and deadlines reach the instance that runs the command (issue 15): two real
 * `mcp serve` processes on one private Redis behind a real HAProxy (round-robin, no stickiness;
 * TLS from HAProxy to the instances so the session is HIGH and may run `exec`). A session's stream
 * breaks while a long `exec` runs on instance A; the client resumes through the balancer on B.
 * A Cancel sent to B stops the program on A (its SIGTERM trap writes a marker file), and exactly
 * one `cancelled` Response reaches the client on B; a command's timeout keeps running on A and
 * its one `timeout` Response reaches B; a re-sent command still running on A is refused on B.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { AdminService } from "../../gen/mcp/v1/admin_pb.js";
import { ErrorKind } from "../../gen/mcp/v1/error_pb.js";
import { SecurityLevel } from "../../gen/mcp/v1/types_pb.js";
import { mintToken } from "../../src/security/index.js";
import { args, errorOf, openReader, sessionIdOf, type SessionReader } from "../helpers/command-tools.js";
import { eventually } from "../helpers/eventually.js";
import { handshake } from "../helpers/server.js";
import { selfSignedCert, transportFor } from "../security/e2e-helpers.js";
import { startCli, tempDir, type CliServer } from "./helpers.js";
import { freePort, haveProgram, startHaproxy, startRedis, type Proc } from "./scaleout-fixtures.js";

const SECRET = "scaleout-cancel-secret-0123456789-0123456789";
const ok = haveProgram("haproxy") && haveProgram("redis-server");
const token = (subject = "dana", roles = ["developer"]) =>
  mintToken({ secret: SECRET, subject, roles, ttlSec: 600, issuer: "mcp", audience: "mcp", level: "high" });

describe.runIf(ok)("Cancel and deadlines after a session moved to another instance behind HAProxy", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let redis: Proc;
  let haproxy: Proc;
  let lb: string;
  let ca: string;
  const instances: CliServer[] = [];

  beforeAll(async () => {
    dir = await tempDir("mcp-scaleout-cancel-");
    const { cert, key } = await selfSignedCert(dir.path);
    ca = readFileSync(cert, "utf8");
    const redisPort = await freePort();
    redis = await startRedis(dir.path, redisPort);
    const ports = [await freePort(), await freePort()];
    const started = await Promise.all(
      ports.map((port) =>
        startCli(
          ["--port", String(port), "--store", `redis://127.0.0.1:${redisPort}`, "--jwt-secret", SECRET, "--tls-cert", cert, "--tls-key", key,
            "--exec-enabled", "--resume-ttl-ms", "30000"],
          { cwd: dir.path, timeoutMs: 30_000 },
        ),
      ),
    );
    instances.push(...started);
    const lbPort = await freePort();
    haproxy = await startHaproxy(dir.path, lbPort, ports, { caFile: cert });
    lb = `http://127.0.0.1:${lbPort}`;
    // Both backends in rotation (their first health checks passed).
    await eventually(async () => {
      const seen = new Set<number>();
      for (let k = 0; k < 4; k++) {
        const r = await openReader(lb, hello(await token()));
        seen.add(await holderOf(sessionIdOf(r)));
        r.close();
      }
      return seen.size === 2;
    }, "HAProxy to route to both instances", 15_000);
  }, 90_000);

  afterAll(async () => {
    await haproxy?.stop();
    await Promise.all(instances.map((i) => i.close()));
    await redis?.stop();
    await dir?.remove();
  });

  const hello = (tok: string, extra: Parameters<typeof handshake>[1] = {}) => handshake(tok, { securityLevel: SecurityLevel.HIGH, ...extra });

  /** Which instance holds a session (a ghost running its commands does not count), asked of each instance directly. */
  async function holderOf(sessionId: string): Promise<number> {
    const admin = await token("root", ["admin"]);
    for (let i = 0; i < instances.length; i++) {
      const c = createClient(AdminService, transportFor("grpc-h2", instances[i]!.url, ca));
      const r = await c.listSessions({}, { headers: { authorization: `Bearer ${admin}` } }).catch(() => undefined);
      if (r?.sessions.some((s) => s.sessionId === sessionId)) return i;
    }
    return -1;
  }

  /**
   * Opens a session through the balancer and starts `exec` with `script` (which prints
   * "started" first); then the stream breaks and the client resumes through the balancer until
   * it lands on the other instance. Returns the resumed reader and the instance that runs the command.
   */
  async function moveWhileRunning(commandId: string, script: string, timeoutMs: number) {
    const tok = await token();
    const r = await openReader(lb, hello(tok));
    const sessionId = sessionIdOf(r);
    const runner = await holderOf(sessionId);
    expect(runner).toBeGreaterThanOrEqual(0);
    r.send({ case: "command", value: { id: commandId, tool: "exec", payload: args({ argv: ["sh", "-c", script] }), timeoutMs } });
    await r.waitFor((m) => m.message.case === "event" && m.message.value.type === "command.output" && m.message.value.commandId === commandId, "the program to start", 15_000);
    let lastSeq = r.messages.at(-1)!.seq;
    r.close();
    // Round-robin: the next stream goes to the other instance; a resume that lands on the same one
    // is an ordinary resume there — break it and try again (bounded).
    for (let attempt = 0; attempt < 6; attempt++) {
      const again = await openReader(lb, hello(tok, { resume: { sessionId, lastSeq } }));
      const hr = await again.waitFor((m) => m.message.case === "handshakeResult" || m.message.case === "error", "the resumed HandshakeResult", 15_000);
      expect(hr.message.case === "handshakeResult" && hr.message.value).toMatchObject({ sessionId, resumed: true });
      await eventually(async () => (await holderOf(sessionId)) >= 0, "the session to be held again");
      if ((await holderOf(sessionId)) !== runner) return { again, hr, runner, sessionId };
      lastSeq = again.messages.at(-1)!.seq;
      again.close();
    }
    throw new Error("the balancer never sent the resume to the other instance");
  }

  const responsesOf = (r: SessionReader, id: string) => r.responsesOf(id).map((x) => errorOf(x)?.code ?? "output");

  test("a Cancel sent to the new instance stops the program on the old one; one cancelled Response arrives", async () => {
    const marker = join(dir.path, "cancel.marker");
    const script = `trap 'echo term > ${marker}; exit 3' TERM; echo started; sleep 60 & wait`;
    const { again, hr } = await moveWhileRunning("long", script, 120_000);
    // Re-sent (as a client that cannot tell what the old instance got would): refused, not run twice.
    again.send({ case: "command", value: { id: "long", tool: "exec", payload: args({ argv: ["sh", "-c", script] }), timeoutMs: 120_000 } });
    const refused = await again.response("long", 10_000);
    expect([errorOf(refused)?.kind, errorOf(refused)?.code]).toEqual([ErrorKind.PROTOCOL, "duplicate_command_id"]);

    again.send({ case: "cancel", value: { commandId: "long" } });
    const cancelled = await again.waitFor(
      (m) => m.message.case === "response" && m.message.value.commandId === "long" && errorOf(m.message.value)?.code === "cancelled",
      "the cancelled Response",
      15_000,
    );
    expect(cancelled.seq).toBeGreaterThan(hr.seq); // forwarded after the switch, not replayed
    if (cancelled.message.case !== "response") throw new Error("unreachable");
    expect([errorOf(cancelled.message.value)?.kind, errorOf(cancelled.message.value)?.code]).toEqual([ErrorKind.COMMAND, "cancelled"]);
    // The program on the old instance got its SIGTERM: the tool's AbortSignal fired there.
    await eventually(() => {
      try {
        return readFileSync(marker, "utf8").trim() === "term";
      } catch {
        return false;
      }
    }, "the program's SIGTERM trap to write its marker");
    await again.roundTrip(10_000);
    expect(responsesOf(again, "long")).toEqual(["duplicate_command_id", "cancelled"]);
    again.close();
  }, 90_000);

  test("a deadline keeps running on the old instance; its one timeout Response reaches the new one", async () => {
    const { again, hr } = await moveWhileRunning("slow", "echo started; exec sleep 60", 8_000);
    const timedOut = await again.waitFor((m) => m.message.case === "response" && m.message.value.commandId === "slow", "the timeout Response", 30_000);
    expect(timedOut.seq).toBeGreaterThan(hr.seq);
    if (timedOut.message.case !== "response") throw new Error("unreachable");
    expect([errorOf(timedOut.message.value)?.kind, errorOf(timedOut.message.value)?.code]).toEqual([ErrorKind.COMMAND, "timeout"]);
    await again.roundTrip(10_000);
    expect(responsesOf(again, "slow")).toEqual(["timeout"]);
    again.close();
  }, 90_000);

  test("output a command prints after the switch is forwarded, then its Response, each once", async () => {
    const { again, hr } = await moveWhileRunning("chatty", "echo started; sleep 2; echo later; exit 0", 60_000);
    const done = await again.response("chatty", 30_000);
    expect(done.result.case).toBe("output");
    const later = again.messages.filter(
      (m) => m.message.case === "event" && m.message.value.commandId === "chatty" && JSON.stringify(m.message.value.data).includes("later"),
    );
    expect(later).toHaveLength(1);
    expect(later[0]!.seq).toBeGreaterThan(hr.seq);
    // An Event's seq is the seq of the message carrying it, numbered by the new holder.
    expect(later[0]!.message.case === "event" && later[0]!.message.value.seq).toBe(later[0]!.seq);
    await again.roundTrip(10_000);
    expect(responsesOf(again, "chatty")).toEqual(["output"]);
    again.close();
  }, 90_000);
});
