/**
 * `mcp serve`'s JSON log and `mcp status`, as an operator meets them: the real CLI in a child
 * process, driven by the TS client, its stderr read line by line.
 */
import { afterEach, describe, expect, it } from "vitest";
import { createMcpClient } from "../../src/client/index.js";
import { mintToken } from "../../src/security/index.js";
import { mcp, startCli, type CliServer } from "../e2e/helpers.js";
import { eventually } from "../helpers/eventually.js";

const SECRET = "observability-test-secret-0123456789abcdef";
const token = (subject: string, roles: string[]) => mintToken({ secret: SECRET, subject, roles, ttlSec: 600, issuer: "mcp", audience: "mcp" });

type LogLine = Record<string, unknown>;

/** The JSON log lines among what the server wrote to stderr (audit lines carry their own marker). */
function logLines(server: CliServer): LogLine[] {
  return server.stderr
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as LogLine)
    .filter((o) => o["audit"] === undefined);
}

const servers: CliServer[] = [];
async function serve(...extra: string[]): Promise<CliServer> {
  const s = await startCli(["--port", "0", "--store", "memory", "--jwt-secret", SECRET, ...extra]);
  servers.push(s);
  return s;
}
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
});

/** Opens a session as alice, sends a failing command with a known id, closes the stream. */
async function traffic(url: string): Promise<{ sessionId: string }> {
  const client = createMcpClient({ baseUrl: url, token: await token("alice", ["developer"]) });
  const session = await client.connect();
  await session.call("echo", { text: "fine" });
  const r = await session.execute({ id: "cmd-fails-7", tool: "no.such.tool" });
  expect(r.result.case === "error" && r.result.value.code).toBe("unknown_tool");
  session.close();
  return { sessionId: session.sessionId };
}

describe("mcp serve's log", () => {
  it("has a session start and end line and a failed command line with the session id, command id and principal", async () => {
    const server = await serve("--log-level", "info");
    const { sessionId } = await traffic(server.url);
    await eventually(() => logLines(server).some((l) => l["event"] === "session.end" && l["sessionId"] === sessionId), "the session.end line");
    const lines = logLines(server);
    for (const l of lines) {
      expect(typeof l["time"]).toBe("string");
      expect(typeof l["level"]).toBe("string");
      expect(typeof l["msg"]).toBe("string");
    }
    const start = lines.find((l) => l["event"] === "session.start" && l["sessionId"] === sessionId);
    expect(start).toMatchObject({ level: "info", principal: "alice", remoteAddress: "127.0.0.1", protocol: "grpc", resumed: false });
    const failed = lines.find((l) => l["event"] === "command.failed");
    expect(failed).toMatchObject({ level: "warn", sessionId, commandId: "cmd-fails-7", principal: "alice", tool: "_unknown", kind: "COMMAND", code: "unknown_tool" });
    const end = lines.find((l) => l["event"] === "session.end" && l["sessionId"] === sessionId);
    expect(end).toMatchObject({ level: "info", principal: "alice", protocol: "grpc", reason: "client_closed" });
    expect(typeof end!["durationMs"]).toBe("number");
    // A successful command is not logged (only failures and slow ones).
    expect(lines.filter((l) => l["event"] === "command.failed")).toHaveLength(1);
  });

  it("--log-level warn keeps the failed command and drops the info lines", async () => {
    const server = await serve("--log-level", "warn");
    const { sessionId } = await traffic(server.url);
    await eventually(() => logLines(server).some((l) => l["event"] === "command.failed" && l["sessionId"] === sessionId), "the command.failed line");
    // The stream's end is logged at info: give it the time the first test needed, then check it stayed silent.
    const probe = createMcpClient({ baseUrl: server.url, token: await token("alice", ["developer"]) });
    await probe.call("echo", { text: "after the session ended" });
    const lines = logLines(server);
    expect(lines.filter((l) => l["level"] === "info")).toEqual([]);
    expect(lines.some((l) => l["event"] === "command.failed" && l["commandId"] === "cmd-fails-7")).toBe(true);
  });

  it("a refused token is a warn line with its code", async () => {
    const server = await serve();
    const bad = createMcpClient({ baseUrl: server.url, token: "not.a.jwt" });
    await expect(bad.call("echo", { text: "x" })).rejects.toMatchObject({ kind: "SECURITY", code: "unauthenticated" });
    await eventually(() => logLines(server).some((l) => l["event"] === "token.refused"), "the token.refused line");
    expect(logLines(server).find((l) => l["event"] === "token.refused")).toMatchObject({ level: "warn", code: "unauthenticated" });
  });

  it("rejects an unknown --log-level naming the choices", async () => {
    const r = await mcp(["serve", "--port", "0", "--store", "memory", "--jwt-secret", SECRET, "--log-level", "loud"]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('option "logLevel" must be one of fatal, error, warn, info, debug, trace, silent');
  });
});

describe("mcp status", () => {
  it("shows version, store health, the sessions the test opened and the top tools", async () => {
    const server = await serve("--log-level", "silent");
    const client = createMcpClient({ baseUrl: server.url, token: await token("alice", ["developer"]) });
    const a = await client.connect();
    const b = await client.connect();
    for (let i = 0; i < 3; i++) await a.call("echo", { text: `${i}` });
    await b.execute({ id: "x", tool: "no.such.tool" });
    const admin = await token("root", ["admin"]);
    const text = await mcp(["status", "--url", server.url, "--token", admin]);
    expect(text.stderr).toBe("");
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/^mcp-server \d+\.\d+\.\d+ {3}up /);
    expect(text.stdout).toContain("sessions: 2 connected, 0 detached");
    expect(text.stdout).toContain("store: memory healthy");
    expect(text.stdout).toMatch(/echo\s+3\s+0/);
    expect(text.stdout).toMatch(/_unknown\s+1\s+1/);
    expect(text.stdout).toContain(a.sessionId);
    expect(text.stdout).toContain(b.sessionId);

    const json = await mcp(["status", "--json", "--url", server.url, "--token", admin]);
    const s = JSON.parse(json.stdout) as { sessionsConnected: number; sessions: { sessionId: string; principal: { subject: string } }[]; store: { healthy: boolean } };
    expect(s.sessionsConnected).toBe(2);
    expect(s.store.healthy).toBe(true);
    expect(s.sessions.map((x) => x.sessionId).sort()).toEqual([a.sessionId, b.sessionId].sort());
    expect(s.sessions.every((x) => x.principal.subject === "alice")).toBe(true);
    a.close();
    b.close();
  });

  it("needs sessions:admin: a developer gets permission_denied", async () => {
    const server = await serve("--log-level", "silent");
    const r = await mcp(["status", "--url", server.url, "--token", await token("alice", ["developer"])]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("permission_denied");
  });
});
