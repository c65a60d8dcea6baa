/**
 * One ServerMessage's bytes (src/transport/server-message-bytes.ts): the same bytes protobuf-es's
 * toBinary gives, for every payload kind; a ContextSync shared by many sessions is encoded once and
 * each message still carries its own seq.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, test } from "vitest";
import { ContextSyncSchema } from "../../gen/mcp/v1/context_pb.js";
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
];

describe("encodeOneServerMessage", () => {
  test("one ContextSync sent by many sessions: each message decodes to its own seq and the same change", () => {
    for (let seq = 1n; seq <= 300n; seq++) {
      const back = fromBinary(ServerMessageSchema, encodeOneServerMessage(create(ServerMessageSchema, { seq, message: { case: "contextSync", value: sync } })).bytes);
      expect(back.seq).toBe(seq);
      expect(back.message.case).toBe("contextSync");
      expect(back.message.value).toEqual(sync);
    }
  });

  for (const { name, m } of cases) {
    test(`${name}: one gRPC frame around toBinary's bytes, bounds covering them`, () => {
      const e = encodeOneServerMessage(m);
      expect(e.bounds).toEqual([0, e.bytes.length]);
      expect(Buffer.from(e.bytes).equals(Buffer.from(toBinary(ServerMessageSchema, m)))).toBe(true);
      const frames: Uint8Array[] = [];
      createFrameReader(1 << 20, (b) => (frames.push(b), true), () => {}).push(e.wire);
      expect(frames).toHaveLength(1);
      expect(fromBinary(ServerMessageSchema, frames[0]!)).toEqual(m);
    });
  }
});
