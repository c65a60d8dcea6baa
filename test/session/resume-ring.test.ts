/**
 * The resume buffer (src/session/resume-ring.ts, PROTOCOL.md §4 step 5, §6): it grows from a few
 * slots to its count bound without losing order, drops the oldest messages past its count or byte
 * bound (a resume from before them is refused, never served with a gap), and keeps encoded bytes
 * that replay to the same messages.
 */
import { create } from "@bufbuild/protobuf";
import { describe, expect, test } from "vitest";
import { ServerMessageSchema, type ServerMessage } from "../../gen/mcp/v1/session_pb.js";
import { ResumeRing } from "../../src/session/resume-ring.js";
import { encodeFrameBatch } from "../../src/transport/grpc-frames.js";
import { encodeOneServerMessage } from "../../src/transport/server-message-bytes.js";
import { ContextSyncSchema } from "../../gen/mcp/v1/context_pb.js";

const pong = (seq: number): ServerMessage => create(ServerMessageSchema, { seq: BigInt(seq), message: { case: "pong", value: { id: BigInt(seq) } } });
const big = (seq: number, bytes: number): ServerMessage =>
  create(ServerMessageSchema, { seq: BigInt(seq), message: { case: "error", value: { code: "x", message: "m".repeat(bytes) } } });
const seqs = (ms: ServerMessage[] | undefined) => ms?.map((m) => Number(m.seq));

function fill(ring: ResumeRing, from: number, to: number, make: (s: number) => ServerMessage = pong): ServerMessage[] {
  const out: ServerMessage[] = [];
  for (let s = from; s <= to; s++) {
    const m = make(s);
    ring.put(s, m);
    out.push(m);
  }
  return out;
}

describe("count bound", () => {
  const cases: { name: string; max: number; put: number; oldest: number }[] = [
    // fewer than the first 4 slots: nothing grows, nothing goes
    { name: "a short session", max: 4096, put: 3, oldest: 1 },
    // past 4, 8, 16 … slots: the ring doubles and keeps every message in order
    { name: "growing once", max: 4096, put: 5, oldest: 1 },
    { name: "growing through several doublings", max: 4096, put: 1000, oldest: 1 },
    // at the bound the oldest go one per new message
    { name: "past the count bound", max: 100, put: 250, oldest: 151 },
    // a bound that is no power of two
    { name: "a bound of 3", max: 3, put: 10, oldest: 8 },
  ];
  for (const c of cases) {
    test(`${c.name}: holds ${c.oldest}..${c.put}`, () => {
      const ring = new ResumeRing(c.max, Infinity);
      fill(ring, 1, c.put);
      expect(ring.oldest).toBe(c.oldest);
      expect(seqs(ring.after(BigInt(c.oldest - 1)))).toEqual(Array.from({ length: c.put - c.oldest + 1 }, (_, i) => c.oldest + i));
      // From before the oldest: refused, not a replay with a gap.
      if (c.oldest > 1) expect(ring.after(BigInt(c.oldest - 2))).toBeUndefined();
      // From the future: refused.
      expect(ring.after(BigInt(c.put + 1))).toBeUndefined();
      expect(ring.after(BigInt(c.put))).toEqual([]);
    });
  }
});

describe("byte bound", () => {
  test("encoded batches count their bytes; past the bound the oldest go", () => {
    const ring = new ResumeRing(4096, 5000);
    const batch = fill(ring, 1, 10, (s) => big(s, 1000));
    const encoded = encodeFrameBatch(ServerMessageSchema, batch);
    ring.encoded(batch, encoded.bytes, encoded.bounds);
    expect(ring.heldBytes).toBeLessThanOrEqual(5000);
    expect(ring.heldBytes).toBeGreaterThan(3000);
    const kept = ring.after(BigInt(ring.oldest - 1));
    expect(seqs(kept)).toEqual([7, 8, 9, 10]);
    expect(kept).toEqual(batch.slice(6)); // the bytes decode to the same messages
    expect(ring.after(1n)).toBeUndefined();
  });

  test("compact() encodes what is still an object (a detached session) and applies the bound", () => {
    const ring = new ResumeRing(4096, 2500);
    const msgs = fill(ring, 1, 5, (s) => big(s, 1000));
    expect(ring.heldBytes).toBe(0); // objects are not counted until encoded
    ring.compact();
    expect(ring.oldest).toBe(4);
    expect(ring.after(3n)).toEqual(msgs.slice(3));
    // One more while detached: encoded at once, the oldest goes.
    ring.put(6, big(6, 1000));
    ring.compactLast();
    expect(ring.oldest).toBe(5);
    expect(seqs(ring.after(4n))).toEqual([5, 6]);
  });

  test("encoded messages keep their bytes as the ring grows from a few slots to many", () => {
    const ring = new ResumeRing(4096, Infinity);
    const all: ServerMessage[] = [];
    for (let s = 1; s <= 300; s += 3) {
      const batch = fill(ring, s, s + 2, (seq) => big(seq, 10 + (seq % 7)));
      const encoded = encodeFrameBatch(ServerMessageSchema, batch);
      ring.encoded(batch, encoded.bytes, encoded.bounds);
      all.push(...batch);
    }
    expect(ring.after(0n)).toEqual(all);
  });

  test("overwriting an encoded slot gives its bytes back", () => {
    const ring = new ResumeRing(4, Infinity);
    const batch = fill(ring, 1, 4, (s) => big(s, 100));
    const encoded = encodeFrameBatch(ServerMessageSchema, batch);
    ring.encoded(batch, encoded.bytes, encoded.bounds);
    const full = ring.heldBytes;
    fill(ring, 5, 8); // four objects replace the four encoded messages
    expect(full).toBeGreaterThan(400);
    expect(ring.heldBytes).toBe(0);
  });
});

describe("messages sent one at a time (a watcher's session)", () => {
  /** Puts each message and encodes it alone, as a transport's batch of one, the way the server's session stream does. */
  function sendAlone(ring: ResumeRing, from: number, to: number, make: (s: number) => ServerMessage): ServerMessage[] {
    const out: ServerMessage[] = [];
    for (let s = from; s <= to; s++) {
      const m = make(s);
      ring.put(s, m);
      const e = encodeOneServerMessage(m);
      ring.encoded([m], e.bytes, e.bounds);
      e.wire.fill(0xee); // the frame is gone once written: what the ring keeps must be its own copy
      out.push(m);
    }
    return out;
  }
  const sync = create(ContextSyncSchema, { contextId: "ctx", fromVersion: 1n, toVersion: 2n, entries: [{ key: "k", value: { kind: { case: "stringValue", value: "v" } }, version: 2n }] });
  const watched = (s: number) => create(ServerMessageSchema, { seq: BigInt(s), message: { case: "contextSync", value: sync } });

  test("a shared ContextSync under each seq, over many arenas: replayed exactly, bytes counted exactly", () => {
    const ring = new ResumeRing(4096, Infinity);
    const sent = sendAlone(ring, 1, 2000, watched);
    expect(ring.after(0n)).toEqual(sent);
    expect(ring.heldBytes).toBe(sent.reduce((n, m) => n + encodeOneServerMessage(m).bytes.length, 0));
  });

  test("sizes from a few bytes to past the copy limit (4 KiB), mixed with batches: each replays as sent", () => {
    const ring = new ResumeRing(4096, Infinity);
    const sizes = [1, 200, 3000, 4090, 4096, 9000, 17000, 5];
    const sent: ServerMessage[] = [];
    let seq = 1;
    for (const size of sizes) {
      sent.push(...sendAlone(ring, seq, seq, (s) => big(s, size)));
      seq++;
      const batch = fill(ring, seq, seq + 1, (s) => big(s, size));
      const encoded = encodeFrameBatch(ServerMessageSchema, batch);
      ring.encoded(batch, encoded.bytes, encoded.bounds);
      sent.push(...batch);
      seq += 2;
    }
    expect(ring.after(0n)).toEqual(sent);
  });

  test("past the byte bound the oldest go, as for batches", () => {
    const ring = new ResumeRing(4096, 10_000);
    const sent = sendAlone(ring, 1, 100, (s) => big(s, 500));
    expect(ring.heldBytes).toBeLessThanOrEqual(10_000);
    expect(ring.heldBytes).toBeGreaterThan(9_000);
    const kept = ring.after(BigInt(ring.oldest - 1));
    expect(kept).toEqual(sent.slice(ring.oldest - 1));
    expect(ring.after(0n)).toBeUndefined();
  });
});

describe("held in segments (4, 8, 16, 32, then 64 slots each; nothing copied to grow)", () => {
  test("a byte bound every message passes alone: each put drops the one before, and the ring goes on", () => {
    const ring = new ResumeRing(4096, 100);
    for (let s = 1; s <= 300; s++) {
      const [m] = fill(ring, s, s, (seq) => big(seq, 150));
      const e = encodeFrameBatch(ServerMessageSchema, [m!]);
      ring.encoded([m!], e.bytes, e.bounds);
      expect(ring.heldBytes).toBe(0);
      expect(ring.oldest).toBe(s + 1);
    }
    // Still usable: objects not yet encoded are held by count.
    const more = fill(ring, 301, 310);
    expect(ring.after(300n)).toEqual(more);
  });

  test("restore, then far past the restored segment: the count bound holds and the order is kept", () => {
    const ring = new ResumeRing(100, Infinity);
    const restored = Array.from({ length: 30 }, (_, i) => pong(i + 21));
    ring.restore(50, restored);
    expect(seqs(ring.after(20n))).toEqual(Array.from({ length: 30 }, (_, i) => i + 21));
    const later = fill(ring, 51, 1000);
    expect(ring.oldest).toBe(901);
    expect(ring.after(900n)).toEqual(later.slice(-100));
    expect(ring.after(899n)).toBeUndefined();
  });

  test("a count bound that is no multiple of a segment, over many segments, with encoded batches of every size", () => {
    const ring = new ResumeRing(777, Infinity);
    const all: ServerMessage[] = [];
    let seq = 1;
    for (let size = 1; seq <= 5000; size = (size % 97) + 1) {
      const batch = fill(ring, seq, seq + size - 1, (s) => big(s, s % 13));
      const e = encodeFrameBatch(ServerMessageSchema, batch);
      ring.encoded(batch, e.bytes, e.bounds);
      all.push(...batch);
      seq += size;
    }
    expect(ring.oldest).toBe(seq - 777);
    expect(ring.after(BigInt(seq - 778))).toEqual(all.slice(-777));
  });
});

test("restore: a ring another instance held continues from its last seq", () => {
  const ring = new ResumeRing(4096, Infinity);
  ring.restore(20, [pong(18), pong(19), pong(20)]);
  expect(seqs(ring.after(17n))).toEqual([18, 19, 20]);
  ring.put(21, pong(21));
  expect(seqs(ring.after(19n))).toEqual([20, 21]);
  expect(ring.after(16n)).toBeUndefined();
});

describe("chunks (src/session/chunks.ts)", () => {
  const chunkMsg = (seq: number): ServerMessage =>
    create(ServerMessageSchema, {
      seq: BigInt(seq),
      message: { case: "event", value: { seq: BigInt(seq), type: "command.output", commandId: "c", chunk: { data: new Uint8Array(64 * 1024).fill(seq), offset: BigInt(seq) } } },
    });

  test("a chunk counts against the byte bound as it is put, before any transport encoded it: a long stream keeps the last 1 MiB", () => {
    const ring = new ResumeRing(4096, 1024 * 1024);
    fill(ring, 1, 100, chunkMsg);
    expect(ring.heldBytes).toBeLessThanOrEqual(1024 * 1024);
    expect(ring.oldest).toBeGreaterThan(80);
    // What is held replays byte for byte.
    const replay = ring.after(99n);
    expect(replay?.[0]?.message.case === "event" && replay[0].message.value.chunk?.data[0]).toBe(100);
    expect(ring.after(10n)).toBeUndefined();
  });
});
