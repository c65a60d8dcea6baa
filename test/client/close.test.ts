/**
 * Closing a session for good (`SessionClose`, `McpSession.close()`): the server cancels what the
 * session runs, forgets it at once (a resume is `session_expired`) and ends the stream with OK;
 * `close({ resumable: true })` only ends the stream. A raw stream shows what any other client
 * gets from the message itself.
 */
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { createMcpClient, type McpClient } from "../../src/client/index.js";
import { args, openReader, sessionIdOf, startWithTestTools, type Probe } from "../helpers/command-tools.js";
import { mcpFailure } from "../helpers/mcp-failure.js";
import { handshake, type TestServer } from "../helpers/server.js";

let t: TestServer;
let probe: Probe;
let client: McpClient;
beforeAll(async () => {
  ({ server: t, probe } = await startWithTestTools({ resumeTtlMs: 60_000 }));
  client = createMcpClient({ baseUrl: t.url, token: await t.token("alice", ["developer"]) });
});
afterAll(async () => {
  client.close();
  await t.close();
});

/** The last seq a session's reader saw (what a resume would ask for). */
async function lastSeqOf(s: Awaited<ReturnType<McpClient["connect"]>>): Promise<bigint> {
  await s.ping();
  return s.lastSeq;
}

describe("McpSession.close()", () => {
  test("ends the session on the server: its running command is aborted, the call rejects COMMAND cancelled, a resume gets session_expired", async () => {
    // A timeout this long means only the server's end of the stream lets close() resolve in time.
    const s = await client.connect({ closeTimeoutMs: 600_000 });
    const id = "close-running";
    const call = s.call("sleep", {}, { id });
    await probe.startedOnce(id);
    const seq = await lastSeqOf(s);
    const failed = mcpFailure(call);
    await s.close();
    expect(await failed).toMatchObject({ kind: "COMMAND", code: "cancelled" });
    expect(await probe.abortedWith(id)).toBe("cancelled");
    expect(await s.closed).toBeUndefined();
    expect(await mcpFailure(client.connect({ resume: { sessionId: s.sessionId, lastSeq: seq }, reconnect: false }))).toMatchObject({
      kind: "PROTOCOL",
      code: "session_expired",
      retryable: false,
    });
  });

  test("{ resumable: true } only ends the stream: the session resumes, its command still runs", async () => {
    const s = await client.connect();
    const id = "close-resumable";
    void s.call("gate", { key: id }, { id }).catch(() => {});
    await probe.startedOnce(id);
    const seq = await lastSeqOf(s);
    await s.close({ resumable: true });
    const again = await client.connect({ resume: { sessionId: s.sessionId, lastSeq: seq, commandIds: [id] } });
    expect(again.sessionId).toBe(s.sessionId);
    probe.release(id);
    const r = await again.response(id);
    expect(r.result).toMatchObject({ case: expect.stringMatching(/^output/) });
    expect(probe.aborted.has(id)).toBe(false);
    await again.close();
  });

  test("a closed session's calls reject at once; closing twice is harmless", async () => {
    const s = await client.connect();
    await s.close();
    await s.close();
    expect(await mcpFailure(s.call("sleep", { ms: 1 }))).toMatchObject({ kind: "COMMAND", code: "cancelled" });
  });
});

describe("SessionClose on a raw stream", () => {
  test("the stream ends with OK, nothing after it runs, and the session is gone", async () => {
    const tok = await t.token("alice", ["developer"]);
    const r = await openReader(t.url, handshake(tok));
    const sessionId = sessionIdOf(r);
    r.send({ case: "command", value: { id: "raw-running", tool: "sleep", payload: args({}) } });
    await probe.startedOnce("raw-running");
    r.send({ case: "close", value: {} });
    r.send({ case: "command", value: { id: "raw-after", tool: "sleep", payload: args({ ms: 1 }) } });
    await r.ended; // rejects on a non-OK status
    expect(await probe.abortedWith("raw-running")).toBe("cancelled");
    expect(probe.started).not.toContain("raw-after");
    expect(r.responsesOf("raw-running")).toEqual([]);
    expect(r.messages.filter((m) => m.message.case === "error")).toEqual([]);
    const again = await openReader(t.url, handshake(tok, { resume: { sessionId, lastSeq: r.messages.at(-1)!.seq } }));
    const err = again.first;
    expect(err?.message.case === "error" && err.message.value).toMatchObject({ code: "session_expired" });
    again.close();
  });
});
