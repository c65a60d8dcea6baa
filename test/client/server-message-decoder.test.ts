/**
 * The client's ServerMessage decoder (src/client/server-message-decoder.ts): it gives what
 * protobuf-es's fromBinary gives for every message, and a ContextSync arriving with the same
 * bytes on many sessions (each its own seq) is decoded once and shared.
 */
import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { describe, expect, test } from "vitest";
import { ContextSyncSchema } from "../../gen/mcp/v1/context_pb.js";
import { ServerMessageSchema, type ServerMessage } from "../../gen/mcp/v1/session_pb.js";
import { createServerMessageDecoder } from "../../src/client/server-message-decoder.js";
import { encodeOneServerMessage } from "../../src/transport/server-message-bytes.js";

/** The bytes the server sends for one message (its fast path). */
const serverMessageBytes = (m: ServerMessage): Uint8Array => encodeOneServerMessage(m).bytes;

const sync = (v: bigint) =>
  create(ContextSyncSchema, {
    contextId: "ctx",
    fromVersion: v - 1n,
    toVersion: v,
    entries: [{ key: "k", value: { kind: { case: "stringValue", value: "v é" } }, version: v, updatedAt: timestampFromMs(1_700_000_000_123), updatedBy: "alice" }],
    deletedKeys: ["gone"],
  });
const withSeq = (seq: bigint, message: NonNullable<MessageInitShape<typeof ServerMessageSchema>["message"]>): ServerMessage => create(ServerMessageSchema, { seq, message });

const cases: { name: string; bytes: Uint8Array }[] = [
  { name: "contextSync, seq 7", bytes: serverMessageBytes(withSeq(7n, { case: "contextSync", value: sync(5n) })) },
  { name: "contextSync, seq 0 (not written)", bytes: serverMessageBytes(withSeq(0n, { case: "contextSync", value: sync(5n) })) },
  // 7 varint bytes are the decoder's own limit, 2^60 takes 9: fromBinary's
  { name: "contextSync, seq 2^48", bytes: serverMessageBytes(withSeq(2n ** 48n, { case: "contextSync", value: sync(5n) })) },
  { name: "contextSync, seq 2^60", bytes: serverMessageBytes(withSeq(2n ** 60n, { case: "contextSync", value: sync(5n) })) },
  { name: "an empty ContextSync", bytes: serverMessageBytes(withSeq(1n, { case: "contextSync", value: create(ContextSyncSchema) })) },
  { name: "pong", bytes: toBinary(ServerMessageSchema, withSeq(3n, { case: "pong", value: { id: 9n } })) },
  { name: "response", bytes: toBinary(ServerMessageSchema, withSeq(4n, { case: "response", value: { commandId: "c1", result: { case: "output", value: { text: "hi" } } } })) },
  // the fields in another order, and a second ContextSync (protobuf merges them): fromBinary's
  { name: "seq after the ContextSync", bytes: new BinaryWriter().tag(4, WireType.LengthDelimited).bytes(toBinary(ContextSyncSchema, sync(5n))).tag(1, WireType.Varint).uint64(9n).finish() },
  {
    name: "two ContextSync fields",
    bytes: new BinaryWriter().tag(1, WireType.Varint).uint64(2n).tag(4, WireType.LengthDelimited).bytes(toBinary(ContextSyncSchema, sync(5n))).tag(4, WireType.LengthDelimited).bytes(toBinary(ContextSyncSchema, create(ContextSyncSchema, { deletedKeys: ["x"] }))).finish(),
  },
];

describe("createServerMessageDecoder", () => {
  for (const { name, bytes } of cases) {
    test(`${name}: what fromBinary gives`, () => {
      expect(createServerMessageDecoder()(bytes)).toEqual(fromBinary(ServerMessageSchema, bytes));
    });
  }

  test("the same ContextSync bytes under different seqs decode to one shared ContextSync", () => {
    const decode = createServerMessageDecoder();
    const s = sync(5n);
    const a = decode(serverMessageBytes(withSeq(1n, { case: "contextSync", value: s })));
    const b = decode(serverMessageBytes(withSeq(200n, { case: "contextSync", value: s })));
    expect([a.seq, b.seq]).toEqual([1n, 200n]);
    expect(a.message.value).toBe(b.message.value);
    expect(a.message.value).toEqual(s);
  });

  test("different bytes decode to their own ContextSync; a few recent ones stay shared", () => {
    const decode = createServerMessageDecoder();
    const at = (seq: bigint, v: bigint) => decode(serverMessageBytes(withSeq(seq, { case: "contextSync", value: sync(v) }))).message.value;
    const five = at(1n, 5n);
    const six = at(2n, 6n);
    expect(six).not.toBe(five);
    expect(six).toEqual(sync(6n));
    expect(at(3n, 5n)).toBe(five);
    // past the few kept, an old change is decoded afresh (and still right)
    for (let v = 10n; v < 20n; v++) at(4n, v);
    const again = at(5n, 5n);
    expect(again).not.toBe(five);
    expect(again).toEqual(sync(5n));
  });

  test("a shared ContextSync does not hold on to the frame it came in", () => {
    const decode = createServerMessageDecoder();
    const bytes = serverMessageBytes(withSeq(1n, { case: "contextSync", value: sync(5n) }));
    const frame = Uint8Array.from(bytes);
    const first = decode(frame).message.value;
    frame.fill(0); // the read buffer reused for other data
    expect(decode(bytes).message.value).toBe(first);
  });
});
