/**
 * Resume and heartbeats over real HTTP/2 streams (PROTOCOL.md §4 steps 5–6): after a disconnect a
 * new stream with `Handshake.resume{session_id, last_seq}` gets every message after last_seq
 * exactly once and in order — including Responses of commands that finished while away — then
 * the live stream, with seq still increasing by one; a session past `resumeTtlMs`, or a last_seq
 * the resume buffer no longer holds, is `session_expired`; a silent peer is dropped and kept.
 */
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { ErrorKind } from "../../gen/mcp/v1/error_pb.js";
import type { ServerMessage } from "../../gen/mcp/v1/session_pb.js";
import { args, startWithTestTools, openReader, outputOf, type Probe } from "../helpers/command-tools.js";
import { eventually } from "../helpers/eventually.js";
import { handshake, openRawStream, openSession, startServer, type TestServer } from "../helpers/server.js";

let t: TestServer;
let probe: Probe;
beforeAll(async () => {
  ({ server: t, probe } = await startWithTestTools({ resumeBufferMessages: 16, resumeTtlMs: 60_000 }));
});
afterAll(() => t.close());

const describeMessage = (m: ServerMessage) =>
  m.message.case === "response" ? `response:${m.message.value.commandId}` : m.message.case === "pong" ? `pong:${m.message.value.id}` : String(m.message.case);

/** Opens a session, returns its id and the open raw stream (HandshakeResult already read). */
async function openSessionOn(server: TestServer, subject = "alice") {
  const { s, sessionId, seq } = await openSession(server.url, await server.token(subject));
  expect(seq).toBe(1n);
  return { s, sessionId };
}

/** Closes a stream and waits until the server has detached its session. */
async function disconnect(server: TestServer, s: { close(): void }, sessionId: string): Promise<void> {
  s.close();
  await eventually(() => server.server.core.sessions.get(sessionId)?.connected === false, "the server to detach the session");
}

describe("resume", () => {
  test("every message after last_seq exactly once, in order, including Responses finished while away; then the live stream", async () => {
    const { s, sessionId } = await openSessionOn(t);
    // Two commands in flight when the client goes away.
    s.send({ case: "command", value: { id: "away", tool: "gate", payload: args({ key: "r-away" }) } });
    s.send({ case: "command", value: { id: "live", tool: "gate", payload: args({ key: "r-live" }) } });
    await probe.startedOnce("away");
    await probe.startedOnce("live");
    s.send({ case: "ping", value: { id: 1n } });
    s.send({ case: "ping", value: { id: 2n } });
    const p1 = await s.next();
    const p2 = await s.next();
    expect([p1, p2].map((m) => m && [m.seq, describeMessage(m)])).toEqual([
      [2n, "pong:1"],
      [3n, "pong:2"],
    ]);
    await disconnect(t, s, sessionId);

    // While away: one command finishes, and the server emits its Response into the resume buffer.
    probe.release("r-away");
    await eventually(() => probe.finished.includes("away"), "the command to finish");
    await eventually(() => (t.server.core.sessions.get(sessionId)?.lastSeq ?? 0n) === 4n, "its Response to be numbered");

    // The client saw up to seq 2 only (pong:2 was lost with the old stream, say).
    const r = await openReader(t.url, handshake(await t.token(), { resume: { sessionId, lastSeq: 2n } }));
    await r.waitFor((m) => m.message.case === "handshakeResult", "the resumed HandshakeResult");
    const hr = r.messages.find((m) => m.message.case === "handshakeResult");
    expect(hr?.message.case === "handshakeResult" && [hr.message.value.resumed, hr.message.value.sessionId]).toEqual([true, sessionId]);

    // Live: the other command finishes now, then a ping.
    probe.release("r-live");
    await r.response("live");
    await r.roundTrip();
    const got = r.messages.map((m) => [m.seq, describeMessage(m)]);
    // seq 3 and 4 replayed (after last_seq 2), then the HandshakeResult, then the live stream.
    expect(got.slice(0, 3)).toEqual([
      [3n, "pong:2"],
      [4n, "response:away"],
      [5n, "handshakeResult"],
    ]);
    expect(got.slice(3, 4)).toEqual([[6n, "response:live"]]);
    // seq increases by exactly one across the resume, nothing twice.
    expect(r.messages.map((m) => m.seq)).toEqual(r.messages.map((_, i) => BigInt(i + 3)));
    expect(outputOf(r.responsesOf("away")[0]!)).toEqual({ key: "r-away" });
    expect(r.responsesOf("away")).toHaveLength(1);
    expect(r.responsesOf("live")).toHaveLength(1);
    r.close();
  });

  test("resuming with the last seq the client saw replays nothing and continues the numbering", async () => {
    const { s, sessionId } = await openSessionOn(t);
    s.send({ case: "command", value: { id: "e", tool: "echo", payload: args({ text: "x" }) } });
    const resp = await s.next();
    expect(resp && [resp.seq, describeMessage(resp)]).toEqual([2n, "response:e"]);
    await disconnect(t, s, sessionId);
    const r = await openReader(t.url, handshake(await t.token(), { resume: { sessionId, lastSeq: 2n } }));
    await r.roundTrip();
    expect(r.messages.map((m) => [m.seq, describeMessage(m)])).toEqual([
      [3n, "handshakeResult"],
      [4n, expect.stringMatching(/^pong:/)],
    ]);
    r.close();
  });

  test("the resumed session keeps working: commands run and answer on the new stream", async () => {
    const { s, sessionId } = await openSessionOn(t);
    await disconnect(t, s, sessionId);
    const r = await openReader(t.url, handshake(await t.token(), { resume: { sessionId, lastSeq: 1n } }));
    r.send({ case: "command", value: { id: "after-resume", tool: "echo", payload: args({ text: "again" }) } });
    expect(outputOf(await r.response("after-resume"))).toEqual({ text: "again" });
    r.close();
  });

  const refused: {
    name: string;
    server?: () => TestServer;
    prepare: (server: TestServer) => Promise<{ sessionId: string; lastSeq: bigint; subject?: string }>;
    want: { kind: ErrorKind; code: string };
  }[] = [
    // Never existed.
    {
      name: "an unknown session id",
      prepare: async () => ({ sessionId: "00000000-0000-4000-8000-000000000000", lastSeq: 0n }),
      want: { kind: ErrorKind.PROTOCOL, code: "session_expired" },
    },
    // 20 pongs through a ring of 16: seq 2 is gone, exactly-once replay is impossible.
    {
      name: "a last_seq older than the resume buffer",
      prepare: async (server) => {
        const { s, sessionId } = await openSessionOn(server);
        for (let i = 1n; i <= 20n; i++) s.send({ case: "ping", value: { id: i } });
        for (let i = 0; i < 20; i++) await s.next();
        await disconnect(server, s, sessionId);
        return { sessionId, lastSeq: 2n };
      },
      want: { kind: ErrorKind.PROTOCOL, code: "session_expired" },
    },
    // A seq the server never sent.
    {
      name: "a last_seq ahead of the session",
      prepare: async (server) => {
        const { s, sessionId } = await openSessionOn(server);
        await disconnect(server, s, sessionId);
        return { sessionId, lastSeq: 99n };
      },
      want: { kind: ErrorKind.PROTOCOL, code: "session_expired" },
    },
    // Another principal cannot take the session over.
    {
      name: "someone else's session",
      prepare: async (server) => {
        const { s, sessionId } = await openSessionOn(server, "alice");
        await disconnect(server, s, sessionId);
        return { sessionId, lastSeq: 1n, subject: "mallory" };
      },
      want: { kind: ErrorKind.SECURITY, code: "permission_denied" },
    },
  ];
  for (const { name, prepare, want } of refused) {
    test(`${name} → ${ErrorKind[want.kind]} ${want.code}, and the stream ends`, async () => {
      const { sessionId, lastSeq, subject } = await prepare(t);
      const s = openRawStream(t.url);
      s.send(handshake(await t.token(subject ?? "alice"), { resume: { sessionId, lastSeq } }));
      const all = await s.rest();
      expect(all.map((m) => m.message.case)).toEqual(["error"]);
      expect(all[0]?.message.case === "error" && all[0].message.value).toMatchObject(want);
    });
  }

  test("a last_seq the buffer still holds resumes even after many messages", async () => {
    const { s, sessionId } = await openSessionOn(t);
    for (let i = 1n; i <= 20n; i++) s.send({ case: "ping", value: { id: i } });
    for (let i = 0; i < 20; i++) await s.next();
    await disconnect(t, s, sessionId);
    // Seq 21 is the last; the ring of 16 holds 6..21.
    const r = await openReader(t.url, handshake(await t.token(), { resume: { sessionId, lastSeq: 10n } }));
    await r.waitFor((m) => m.message.case === "handshakeResult", "the HandshakeResult");
    expect(r.messages.map((m) => [m.seq, describeMessage(m)])).toEqual([
      ...Array.from({ length: 11 }, (_, i) => [BigInt(11 + i), `pong:${10 + i}`]),
      [22n, "handshakeResult"],
    ]);
    r.close();
  });

  test("after resumeTtlMs the session is gone → PROTOCOL session_expired", async () => {
    const short = await startServer({ resumeTtlMs: 100 });
    try {
      const { s, sessionId } = await openSessionOn(short);
      await disconnect(short, s, sessionId);
      await eventually(() => !short.server.core.sessions.has(sessionId), "the session to expire");
      const r = openRawStream(short.url);
      r.send(handshake(await short.token(), { resume: { sessionId, lastSeq: 1n } }));
      const all = await r.rest();
      expect(all.map((m) => m.message.case)).toEqual(["error"]);
      expect(all[0]?.message.case === "error" && all[0].message.value).toMatchObject({ kind: ErrorKind.PROTOCOL, code: "session_expired" });
    } finally {
      await short.close();
    }
  });
});

describe("heartbeat", () => {
  let hb: TestServer;
  beforeAll(async () => {
    hb = await startServer({ heartbeatIntervalMs: 200 });
  });
  afterAll(() => hb.close());

  test("a client silent past twice the interval is dropped, and its session kept for resume", async () => {
    const { s, sessionId } = await openSessionOn(hb);
    // Say nothing: the server ends the stream.
    const rest = await s.rest();
    expect(rest.filter((m) => m.message.case === "response")).toEqual([]);
    await eventually(() => hb.server.core.sessions.get(sessionId)?.connected === false, "the session to be detached");
    expect(hb.server.core.sessions.get(sessionId)?.closed).toBe(false);
    const r = await openReader(hb.url, handshake(await hb.token(), { resume: { sessionId, lastSeq: 1n } }));
    const first = r.first;
    expect(first?.message.case === "handshakeResult" && first.message.value.resumed).toBe(true);
    r.close();
  });

  test("a client that pings keeps its stream", async () => {
    const { s, sessionId } = await openSessionOn(hb);
    // Ten intervals' worth of pings, one every half interval.
    for (let i = 1n; i <= 20n; i++) {
      s.send({ case: "ping", value: { id: i } });
      const m = await s.next();
      expect(m?.message.case === "pong" && m.message.value.id).toBe(i);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(hb.server.core.sessions.get(sessionId)?.connected).toBe(true);
    s.close();
  });
});
