/**
 * Graceful shutdown (issue 15): `server.close({ graceMs })` in process, and SIGTERM to a real
 * `mcp serve`. 100 in-flight commands are all answered — with their output when they finish
 * within the grace period, with `COMMAND cancelled` past it — each exactly once, after a
 * `server.shutdown` event; the process exits 0. A second SIGTERM exits at once.
 */
import { readFileSync } from "node:fs";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterEach, describe, expect, test } from "vitest";
import type { ServerMessage } from "../../gen/mcp/v1/session_pb.js";
import { ErrorKind } from "../../gen/mcp/v1/error_pb.js";
import { mintToken } from "../../src/security/index.js";
import { selfSignedCert } from "../security/e2e-helpers.js";
import { args, errorOf, openReader, outputOf, startWithTestTools, type SessionReader } from "../helpers/command-tools.js";
import { eventually } from "../helpers/eventually.js";
import { handshake, openRawStream, type RawStream, type TestServer } from "../helpers/server.js";
import { startCli, tempDir, type CliServer } from "./helpers.js";

const N = 100;
const SECRET = "shutdown-e2e-secret-0123456789-0123456789";

/** Every Response per command id, and whether `server.shutdown` came before the first of them. */
function tally(messages: readonly ServerMessage[]) {
  const responses = new Map<string, ServerMessage[]>();
  let shutdownSeq: bigint | undefined;
  for (const m of messages) {
    if (m.message.case === "event" && m.message.value.type === "server.shutdown") shutdownSeq ??= m.seq;
    if (m.message.case === "response") {
      const id = m.message.value.commandId;
      responses.set(id, [...(responses.get(id) ?? []), m]);
    }
  }
  return { responses, shutdownSeq };
}

describe("server.close({ graceMs }) with 100 commands in flight", () => {
  let server: TestServer | undefined;
  let reader: SessionReader | undefined;
  afterEach(async () => {
    reader?.close();
    await server?.close();
  });

  test("commands that finish within the grace period are all answered with their output, once, after server.shutdown", async () => {
    const started = await startWithTestTools({ maxInflightCommands: 2 * N });
    server = started.server;
    reader = await openReader(server.url, handshake(await server.token()));
    for (let i = 0; i < N; i++) reader.send({ case: "command", value: { id: `c${i}`, tool: "sleep", payload: args({ ms: 300 }) } });
    await eventually(() => started.probe.started.length === N, `${N} commands to start`);
    expect(server.server.core.draining).toBe(false);
    const closing = server.server.close({ graceMs: 20_000 });
    expect(server.server.core.draining).toBe(true);
    await closing;
    await reader.ended;
    const { responses, shutdownSeq } = tally(reader.messages);
    expect(shutdownSeq).toBeDefined();
    expect(responses.size).toBe(N);
    for (const [id, rs] of responses) {
      expect(rs, id).toHaveLength(1);
      expect(outputOf(rs[0]!.message.value as never)).toEqual({ slept: 300 });
      expect(rs[0]!.seq > shutdownSeq!).toBe(true);
    }
    const ev = reader.messages.find((m) => m.message.case === "event" && m.message.value.type === "server.shutdown");
    expect(ev?.message.value).toMatchObject({ data: { grace_ms: 20_000, resumable: false } });
    server = undefined;
  });

  test("commands still running past the grace period are cancelled, each answered once with COMMAND cancelled", async () => {
    const started = await startWithTestTools({ maxInflightCommands: 2 * N });
    server = started.server;
    reader = await openReader(server.url, handshake(await server.token()));
    // `sleep` without ms waits until aborted.
    for (let i = 0; i < N; i++) reader.send({ case: "command", value: { id: `c${i}`, tool: "sleep", payload: args({}) } });
    await eventually(() => started.probe.started.length === N, `${N} commands to start`);
    await server.server.close({ graceMs: 200 });
    await reader.ended;
    const { responses } = tally(reader.messages);
    expect(responses.size).toBe(N);
    for (const [id, rs] of responses) {
      expect(rs, id).toHaveLength(1);
      const r = rs[0]!.message.value as Parameters<typeof errorOf>[0];
      expect(errorOf(r)).toMatchObject({ kind: ErrorKind.COMMAND, code: "cancelled", commandId: id });
    }
    for (let i = 0; i < N; i++) expect(started.probe.aborted.get(`c${i}`)).toBe("cancelled");
    server = undefined;
  });
});

/** A raw stream over TLS to `url`, trusting `ca`, read in the background. */
function openTlsReader(url: string, ca: Buffer, token: string) {
  const s: RawStream = openRawStream(url, {}, createGrpcTransport({ baseUrl: url, nodeOptions: { ca } }));
  const messages: ServerMessage[] = [];
  const ended = (async () => {
    for (let m = await s.next(); m !== undefined; m = await s.next()) messages.push(m);
  })();
  s.send(handshake(token, { securityLevel: 3 }));
  return { s, messages, ended };
}

describe("SIGTERM to mcp serve with 100 exec commands in flight (TLS, HIGH)", () => {
  let cli: CliServer | undefined;
  let dir: Awaited<ReturnType<typeof tempDir>> | undefined;
  afterEach(async () => {
    await cli?.close();
    await dir?.remove();
  });

  async function start(graceMs: number) {
    dir = await tempDir("mcp-shutdown-");
    const { cert, key } = await selfSignedCert(dir.path);
    cli = await startCli(
      ["--port", "0", "--store", "memory", "--jwt-secret", SECRET, "--tls-cert", cert, "--tls-key", key, "--exec-enabled",
        "--max-inflight-commands", String(2 * N), "--shutdown-grace-ms", String(graceMs)],
      { cwd: dir.path },
    );
    const token = await mintToken({ secret: SECRET, subject: "ops", roles: ["admin"], ttlSec: 600, issuer: "mcp", audience: "mcp", level: "high" });
    const exit = new Promise<number | null>((resolve) => cli!.proc.once("exit", (code) => resolve(code)));
    return { reader: openTlsReader(cli.url, readFileSync(cert), token), exit };
  }

  /** Sends N exec commands and waits until the server reports them all running (each printed its marker). */
  async function sendAll(reader: ReturnType<typeof openTlsReader>, seconds: number) {
    await eventually(() => reader.messages.some((m) => m.message.case === "handshakeResult"), "the HandshakeResult");
    for (let i = 0; i < N; i++) {
      reader.s.send({
        case: "command",
        value: { id: `x${i}`, tool: "exec", payload: args({ argv: ["sh", "-c", `echo up; exec sleep ${seconds}`] }), timeoutMs: 120_000 },
      });
    }
    const up = () => new Set(reader.messages.flatMap((m) => (m.message.case === "event" && m.message.value.type === "command.output" ? [m.message.value.commandId] : []))).size;
    await eventually(() => up() === N, `${N} exec commands to print their marker`, 30_000);
  }

  test("within the grace period: every command answered with its output once, exit 0", async () => {
    const { reader, exit } = await start(60_000);
    await sendAll(reader, 1);
    cli!.proc.kill("SIGTERM");
    expect(await exit).toBe(0);
    await reader.ended;
    const { responses, shutdownSeq } = tally(reader.messages);
    expect(shutdownSeq).toBeDefined();
    expect(responses.size).toBe(N);
    for (const [id, rs] of responses) {
      expect(rs, id).toHaveLength(1);
      const r = rs[0]!.message.value as Parameters<typeof errorOf>[0];
      expect(errorOf(r), id).toBeUndefined();
      expect(outputOf(r)).toMatchObject({ exitCode: 0 });
    }
    expect(cli!.stderr).toContain("shut down");
  }, 60_000);

  test("past the grace period: every command answered once with COMMAND cancelled, exit 0", async () => {
    const { reader, exit } = await start(300);
    await sendAll(reader, 60);
    cli!.proc.kill("SIGTERM");
    expect(await exit).toBe(0);
    await reader.ended;
    const { responses } = tally(reader.messages);
    expect(responses.size).toBe(N);
    for (const [id, rs] of responses) {
      expect(rs, id).toHaveLength(1);
      expect(errorOf(rs[0]!.message.value as Parameters<typeof errorOf>[0])).toMatchObject({ kind: ErrorKind.COMMAND, code: "cancelled" });
    }
  }, 60_000);

  test("a second SIGTERM exits at once, without waiting for the grace period", async () => {
    const { reader, exit } = await start(600_000);
    await sendAll(reader, 600);
    cli!.proc.kill("SIGTERM");
    await eventually(() => cli!.stderr.includes("shutting down"), "the first signal to be handled");
    cli!.proc.kill("SIGTERM");
    expect(await exit).toBe(1);
    expect(cli!.stderr).toContain("second signal: exiting at once");
    reader.s.close();
  }, 60_000);
});
