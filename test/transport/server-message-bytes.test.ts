/**
 * One ServerMessage's bytes (src/transport/server-message-bytes.ts): the same bytes protobuf-es's
 * toBinary gives, for every payload kind; a ContextSync shared by many sessions is encoded once and
 * each message still carries its own seq.
 */
import { create, equals, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, test } from "vitest";
import { ContextSyncSchema } from "../../gen/mcp/v1/context_pb.js";
import { EventSchema } from "../../gen/mcp/v1/event_pb.js";
import { ServerMessageSchema, type ServerMessage } from "../../gen/mcp/v1/session_pb.js";
import { encodeOneServerMessage } from "../../src/transport/server-message-bytes.js";
import { createFrameReader } from "../../src/transport/grpc-frames.js";

const sync = create(ContextSyncSchema, {
  contextId: "ctx",
  fromVersion: 4n,
  toVersion: 5n,
  entries: [{ key: "k", value: { kind: { case: "stringValue", value: "v é" } }, version: 5n, updatedAt: timestampFromMs(1_700_000_000_123), updatedBy: "alice" }],
  deletedKeys: ["gone"],
});

const cases: { name: string; m: ServerMessage }[] = [
  // the fan-out path: a shared ContextSync under a per-session seq
  { name: "contextSync, seq 7", m: create(ServerMessageSchema, { seq: 7n, message: { case: "contextSync", value: sync } }) },
  // a seq past one varint byte, and past 2^32
  { name: "contextSync, seq 2^40", m: create(ServerMessageSchema, { seq: 2n ** 40n, message: { case: "contextSync", value: sync } }) },
  // seq 0 (outside a session) is not written, as proto3 says
  { name: "contextSync, seq 0", m: create(ServerMessageSchema, { seq: 0n, message: { case: "contextSync", value: sync } }) },
  { name: "an empty full ContextSync", m: create(ServerMessageSchema, { seq: 1n, message: { case: "contextSync", value: create(ContextSyncSchema, { contextId: "c", full: true }) } }) },
  // every other payload goes through toBinary as is
  { name: "pong", m: create(ServerMessageSchema, { seq: 3n, message: { case: "pong", value: { id: 9n } } }) },
  { name: "response", m: create(ServerMessageSchema, { seq: 4n, message: { case: "response", value: { commandId: "c1", result: { case: "output", value: { text: "hi" } } } } }) },
  // chunks of bytes output: framed whole from 4 KiB on, below that through toBinary
  ...[100, 4096, 300 * 1024, 1024 * 1024].map((n) => ({ name: `a ${n}-byte chunk`, m: chunkMessage(9n, n, {}) })),
  { name: "the first chunk, with total_size", m: chunkMessage(2n ** 35n, 256 * 1024, { totalSize: 1n << 28n }) },
  { name: "the last chunk, at an offset past 2^32, seq 0", m: chunkMessage(0n, 70_000, { last: true, offset: 5n << 32n, totalSize: (5n << 32n) + 70_000n }) },
  { name: "a chunk whose event also has data", m: chunkMessage(11n, 8192, {}, { stream: "file" }) },
];

function chunkMessage(seq: bigint, n: number, chunk: { last?: boolean; offset?: bigint; totalSize?: bigint }, data?: Record<string, string>): ServerMessage {
  const bytes = new Uint8Array(n).map((_, i) => (i * 7) & 0xff);
  const event = create(EventSchema, { seq, type: "command.output", commandId: "c-42", time: timestampFromMs(1_700_000_000_321), chunk: { data: bytes, offset: 0n, ...chunk }, data });
  return create(ServerMessageSchema, { seq, message: { case: "event", value: event } });
}

describe("encodeOneServerMessage", () => {
  test("one ContextSync sent by many sessions: each message decodes to its own seq and the same change", () => {
    for (let seq = 1n; seq <= 300n; seq++) {
      const back = fromBinary(ServerMessageSchema, encodeOneServerMessage(create(ServerMessageSchema, { seq, message: { case: "contextSync", value: sync } })).bytes);
      expect(back.seq).toBe(seq);
      expect(back.message.case).toBe("contextSync");
      expect(back.message.value).toEqual(sync);
    }
  });

  test("a large chunk is framed once: the ring and the transport share one frame", () => {
    const m = chunkMessage(5n, 64 * 1024, {});
    const a = encodeOneServerMessage(m);
    const b = encodeOneServerMessage(m);
    expect(b.wire).toBe(a.wire);
    expect(a.bytes.buffer).toBe(a.wire.buffer);
  });

  for (const { name, m } of cases) {
    test(`${name}: one gRPC frame around toBinary's bytes, bounds covering them`, () => {
      const e = encodeOneServerMessage(m);
      expect(e.bounds).toEqual([0, e.bytes.length]);
      expect(Buffer.from(e.bytes).equals(Buffer.from(toBinary(ServerMessageSchema, m)))).toBe(true);
      const frames: Uint8Array[] = [];
      createFrameReader(4 << 20, (b) => (frames.push(b), true), () => {}).push(e.wire);
      expect(frames).toHaveLength(1);
      // equals(), not toEqual(): a decoded chunk's data is a view of the frame, not a Uint8Array of its own
      expect(equals(ServerMessageSchema, fromBinary(ServerMessageSchema, frames[0]!), m)).toBe(true);
    });
  }
});
