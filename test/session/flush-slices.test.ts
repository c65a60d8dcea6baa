/**
 * How sessions send what they queued (src/session/session.ts `scheduleFlush`): one write per
 * session per tick, and when many sessions have messages at once — a change to a context 1,000
 * sessions watch — 32 sessions' writes in the first event-loop turn and twice as many in each
 * next one, so node:http2 sends the first ones' frames while the rest are encoded and the pass
 * ends in a few turns. Every session still gets each message once, in order.
 */
import { expect, test } from "vitest";
import type { ServerMessage } from "../../gen/mcp/v1/session_pb.js";
import { SecurityLevel } from "../../gen/mcp/v1/types_pb.js";
import { Session, type MessageSink } from "../../src/session/session.js";

/** A sink recording each write: the session, the seqs, and the event-loop turn it came in. */
function recorder() {
  let turn = 0;
  const writes: { session: number; seqs: bigint[]; turn: number }[] = [];
  const sink = (session: number): MessageSink => ({
    write(batch: readonly ServerMessage[]) {
      writes.push({ session, seqs: batch.map((m) => m.seq), turn });
      return true;
    },
    drain: () => Promise.resolve(),
    close: () => {},
  });
  const nextTurn = () => new Promise<void>((resolve) => setImmediate(() => (turn++, resolve())));
  return { writes, sink, nextTurn };
}

function session(n: number, sink: MessageSink): Session {
  return new Session(
    {
      id: `s${n}`,
      auth: { level: SecurityLevel.STANDARD, expired: false },
      resumeBufferMessages: 64,
      resumeBufferBytes: 1 << 20,
      maxOutboundMessages: 1024,
      resumeTtlMs: 60_000,
      expiryWarningMs: 0,
      now: Date.now,
      hooks: { onClosed: () => {} },
    },
    { sink, owner: {} },
  );
}

const pong = (id: number) => ({ case: "pong" as const, value: { $typeName: "mcp.v1.Pong" as const, id: BigInt(id) } });

test("a few sessions: each sends its messages of one tick in one write, at the end of the tick", async () => {
  const r = recorder();
  const sessions = Array.from({ length: 5 }, (_, i) => session(i, r.sink(i)));
  for (const s of sessions) for (let m = 0; m < 3; m++) s.emit(pong(m));
  expect(r.writes).toEqual([]); // not before the tick ends
  await Promise.resolve();
  await new Promise<void>((resolve) => process.nextTick(resolve));
  expect(r.writes.map((w) => w.session)).toEqual([0, 1, 2, 3, 4]);
  for (const w of r.writes) expect(w.seqs).toEqual([1n, 2n, 3n]);
});

test("1,000 sessions at once: 32 writes in the first turn, twice as many in each next, each message once and in order", async () => {
  const r = recorder();
  const n = 1000;
  const sessions = Array.from({ length: n }, (_, i) => session(i, r.sink(i)));
  for (const s of sessions) s.emit(pong(1));
  await r.nextTurn();
  // A second message while the slices go out: a session not flushed yet sends both in one write.
  for (const s of sessions) s.emit(pong(2));
  for (let i = 0; i < 100 && r.writes.reduce((k, w) => k + w.seqs.length, 0) < 2 * n; i++) await r.nextTurn();
  const perTurn = new Map<number, number>();
  for (const w of r.writes) perTurn.set(w.turn, (perTurn.get(w.turn) ?? 0) + 1);
  const counts = [...perTurn.entries()].sort((a, b) => a[0] - b[0]).map(([, k]) => k);
  expect(counts[0]).toBe(32);
  for (let i = 1; i < counts.length; i++) expect(counts[i]).toBeLessThanOrEqual(2 * counts[i - 1]!);
  // 1,000 first writes and the second messages: a few turns, not one per 32 sessions.
  expect(counts.length).toBeLessThanOrEqual(8);
  // The first writes in the order the sessions had messages.
  const firsts: number[] = [];
  const seqsOf = new Map<number, bigint[]>();
  for (const w of r.writes) {
    if (!seqsOf.has(w.session)) firsts.push(w.session);
    seqsOf.set(w.session, [...(seqsOf.get(w.session) ?? []), ...w.seqs]);
  }
  expect(firsts).toEqual(sessions.map((_, i) => i));
  for (let i = 0; i < n; i++) expect(seqsOf.get(i)).toEqual([1n, 2n]);
  // Some sessions had their first write before the second message, some sent both together.
  const together = r.writes.filter((w) => w.seqs.length === 2).length;
  expect(together).toBeGreaterThan(0);
  expect(together).toBeLessThan(n);
});

test("a flush that throws does not stop the other sessions' writes", async () => {
  const r = recorder();
  const bad: MessageSink = {
    write() {
      throw new Error("boom");
    },
    drain: () => Promise.resolve(),
    close: () => {},
  };
  const sessions = [session(0, r.sink(0)), session(1, bad), ...Array.from({ length: 40 }, (_, i) => session(i + 2, r.sink(i + 2)))];
  const errors: unknown[] = [];
  const onError = (e: unknown) => errors.push(e);
  const listeners = process.listeners("uncaughtException");
  process.removeAllListeners("uncaughtException");
  process.on("uncaughtException", onError);
  try {
    for (const s of sessions) s.emit(pong(1));
    for (let i = 0; i < 10 && r.writes.length < 41; i++) await r.nextTurn();
  } finally {
    process.off("uncaughtException", onError);
    for (const l of listeners) process.on("uncaughtException", l);
  }
  expect(errors).toEqual([new Error("boom")]);
  expect(r.writes.map((w) => w.session)).toEqual([0, ...Array.from({ length: 40 }, (_, i) => i + 2)]);
});

test("a transport that does not encode may keep the batch arrays it was given; one that encodes gets one array back and forth", async () => {
  const kept: (readonly ServerMessage[])[] = [];
  const keeping: MessageSink = { write: (batch) => (kept.push(batch), true), drain: () => Promise.resolve(), close: () => {} };
  const a = session(0, keeping);
  for (let m = 1; m <= 3; m++) {
    a.emit(pong(m));
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  expect(kept.map((b) => b.map((m) => m.seq))).toEqual([[1n], [2n], [3n]]);

  const arrays: (readonly ServerMessage[])[] = [];
  const seqs: bigint[][] = [];
  const encoding: MessageSink = {
    encode: () => ({ wire: new Uint8Array(0), bytes: new Uint8Array(0), bounds: [0, 0] }),
    write: (batch) => (arrays.push(batch), seqs.push(batch.map((m) => m.seq)), true),
    drain: () => Promise.resolve(),
    close: () => {},
  };
  const b = session(1, encoding);
  for (let m = 1; m <= 4; m++) {
    b.emit(pong(m));
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  expect(seqs).toEqual([[1n], [2n], [3n], [4n]]);
  expect(new Set(arrays).size).toBe(2); // two arrays take turns
  expect(arrays.every((x) => x.length === 0)).toBe(true); // emptied once written
});
