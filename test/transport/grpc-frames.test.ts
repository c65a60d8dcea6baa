/** The gRPC envelope: encode with protobuf-es inside, reassemble across any chunking. */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { describe, expect, test } from "vitest";
import { ClientMessageSchema, PongSchema, ServerMessageSchema, type Pong } from "../../gen/mcp/v1/session_pb.js";
import {
  createFrameReader,
  createUnaryFrameReader,
  decodeFrameRun,
  encodeFrameBatch,
  encodeFrames,
  encodeMessages,
  frameBytes,
  isFrameRun,
  type FrameError,
} from "../../src/transport/grpc-frames.js";

const pongs = [1n, 300n, 70000n].map((id) => create(PongSchema, { id }));
const wire = encodeFrames(PongSchema, pongs);

function read(chunks: Buffer[], max = 1024) {
  const got: bigint[] = [];
  const errors: FrameError[] = [];
  const r = createFrameReader(max, (b) => (got.push(fromBinary(PongSchema, b).id), true), (e) => errors.push(e));
  for (const c of chunks) r.push(c);
  return { got, errors, held: r.held };
}

describe("encodeFrames / encodeMessages (one protobuf-es encode per batch)", () => {
  // A message of 0 bytes, then one-, two- and three-byte varint lengths (under 128, 16,384 and more).
  const messages = [
    create(ServerMessageSchema),
    ...["x", "y".repeat(200), "z".repeat(20_000)].map((text, i) =>
      create(ServerMessageSchema, { seq: BigInt(i + 1), message: { case: "response", value: { commandId: `c${i}`, result: { case: "output", value: { text } } } } }),
    ),
  ];
  const each = messages.map((m) => toBinary(ServerMessageSchema, m));

  test("the same bytes as framing each message's own toBinary", () => {
    expect(each[0]).toHaveLength(0);
    expect(encodeFrames(ServerMessageSchema, messages)).toEqual(Buffer.concat(each.map(frameBytes)));
  });
  // framesOfMessages moves each message forward in one buffer, last first: large before small too.
  test("the same bytes in any order of sizes", () => {
    const mixed = [messages[3]!, messages[1]!, messages[0]!, messages[2]!, messages[1]!, messages[3]!];
    expect(encodeFrames(ServerMessageSchema, mixed)).toEqual(Buffer.concat(mixed.map((m) => frameBytes(toBinary(ServerMessageSchema, m)))));
  });
  test("encodeMessages: each message's protobuf bytes at its bounds, in order", () => {
    const { bytes, bounds } = encodeMessages(ServerMessageSchema, messages);
    expect(bounds).toHaveLength(2 * messages.length);
    const got = messages.map((_, i) => Buffer.from(bytes.subarray(bounds[2 * i], bounds[2 * i + 1])));
    expect(got).toEqual(each.map((b) => Buffer.from(b)));
  });
  test("encodeFrameBatch: the frames of encodeFrames and the bytes and bounds of encodeMessages", () => {
    const batch = encodeFrameBatch(ServerMessageSchema, messages);
    expect(batch.wire).toEqual(encodeFrames(ServerMessageSchema, messages));
    const { bytes, bounds } = encodeMessages(ServerMessageSchema, messages);
    expect(Buffer.from(batch.bytes)).toEqual(Buffer.from(bytes));
    expect(batch.bounds).toEqual(bounds);
  });
  test("no messages, no bytes", () => {
    expect(encodeFrames(ServerMessageSchema, [])).toHaveLength(0);
  });
  test("a message of another type is refused, not framed", () => {
    expect(() => encodeFrames(ServerMessageSchema, [pongs[0] as never])).toThrow(/mcp\.v1\.ServerMessage/);
  });
});

describe("reassembly", () => {
  // Every way of cutting the same bytes must give the same messages.
  const cuts: [string, (b: Buffer) => Buffer[]][] = [
    ["one chunk", (b) => [b]],
    ["byte by byte", (b) => [...b].map((x) => Buffer.from([x]))],
    ["inside the first header", (b) => [b.subarray(0, 3), b.subarray(3)]],
    ["inside a body", (b) => [b.subarray(0, 6), b.subarray(6)]],
    ["at a frame boundary", (b) => [b.subarray(0, 7), b.subarray(7)]],
  ];
  for (const [name, cut] of cuts) {
    test(name, () => {
      expect(read(cut(wire))).toEqual({ got: [1n, 300n, 70000n], errors: [], held: 0 });
    });
  }

  test("a cut stream leaves the unfinished frame held", () => {
    expect(read([wire.subarray(0, wire.length - 1)]).held).toBeGreaterThan(0);
  });

  test("maxFrames hands out frames in slices; read() continues where push stopped", () => {
    const got: bigint[] = [];
    const r = createFrameReader(1024, (b) => (got.push(fromBinary(PongSchema, b).id), true), () => {});
    // The last frame arrives in two chunks: slices never hand out half a frame.
    expect(r.push(wire.subarray(0, wire.length - 2), 1)).toBe(true);
    expect(got).toEqual([1n]);
    expect(r.read(1)).toBe(false); // the second frame; the third is not whole yet
    expect(got).toEqual([1n, 300n]);
    expect(r.read(1)).toBe(false);
    expect(r.push(wire.subarray(wire.length - 2), 1)).toBe(false);
    expect(got).toEqual([1n, 300n, 70000n]);
    expect(r.held).toBe(0);
  });

  test("maxFrames 0 with nothing held: the chunk waits whole for read()", () => {
    const got: bigint[] = [];
    const r = createFrameReader(1024, (b) => (got.push(fromBinary(PongSchema, b).id), true), () => {});
    expect(r.push(wire, 0)).toBe(true);
    expect(got).toEqual([]);
    expect(r.held).toBe(wire.length);
    expect(r.read()).toBe(false);
    expect(got).toEqual([1n, 300n, 70000n]);
    expect(r.held).toBe(0);
  });

  test("a long stream cut every way in turn: every frame once, in order, nothing held", () => {
    const got: bigint[] = [];
    const r = createFrameReader(1024, (b) => (got.push(fromBinary(PongSchema, b).id), true), () => {});
    const expected: bigint[] = [];
    for (let round = 0; round < 50; round++) {
      for (const [, cut] of cuts) for (const chunk of cut(wire)) r.push(chunk, round % 3 === 0 ? 1 : undefined);
      while (r.read(1));
      expected.push(1n, 300n, 70000n, 1n, 300n, 70000n, 1n, 300n, 70000n, 1n, 300n, 70000n, 1n, 300n, 70000n);
    }
    expect(got).toEqual(expected);
    expect(r.held).toBe(0);
  });

  test("frameBytes frames bytes already encoded, like encodeFrames", () => {
    expect(frameBytes(wire.subarray(5, 5 + wire.readUInt32BE(1)))).toEqual(encodeFrames(PongSchema, [pongs[0] as Pong]));
  });
});

describe("decodeFrameRun: the frames of one read with one fromBinary", () => {
  // An empty message, lengths with one- and two-byte varints, an unknown field (kept as such).
  const messages = [
    create(ClientMessageSchema),
    create(ClientMessageSchema, { message: { case: "command", value: { id: "a", tool: "echo", payload: { case: "argumentsJson", value: '{"text":"hi"}' } } } }),
    create(ClientMessageSchema, { message: { case: "command", value: { id: "b", tool: "echo", payload: { case: "argumentsJson", value: JSON.stringify({ text: "x".repeat(300) }) } } } }),
  ];
  const unknown = Buffer.from([0xfa, 0x06, 0x01, 0x3f]); // field 111, length-delimited, "?"
  const payloads = [...messages.map((m) => Buffer.from(toBinary(ClientMessageSchema, m))), unknown];
  /** The frames a reader cuts from one chunk: views of one buffer, each right after the last. */
  function cutFrames(wire: Buffer): Uint8Array[] {
    const out: Uint8Array[] = [];
    createFrameReader(1 << 20, (b) => out.push(b) > 0, () => {}).push(wire);
    return out;
  }
  const alone = payloads.map((p) => fromBinary(ClientMessageSchema, p));

  test("the messages fromBinary gives frame by frame, and the payloads stay as they were", () => {
    const frames = cutFrames(Buffer.concat(payloads.map(frameBytes)));
    expect(isFrameRun(frames)).toBe(true);
    expect(decodeFrameRun(ClientMessageSchema, frames)).toEqual(alone);
    // Only the headers were rewritten: each frame still decodes on its own.
    expect(frames.map((f) => fromBinary(ClientMessageSchema, f))).toEqual(alone);
  });

  test("a bad frame anywhere fails the run (the caller then decodes one by one)", () => {
    const garbage = Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]);
    const frames = cutFrames(Buffer.concat([payloads[1]!, garbage, payloads[2]!].map(frameBytes)));
    expect(isFrameRun(frames)).toBe(true);
    expect(() => decodeFrameRun(ClientMessageSchema, frames)).toThrow();
    expect(fromBinary(ClientMessageSchema, frames[0]!)).toEqual(alone[1]);
    expect(() => fromBinary(ClientMessageSchema, frames[1]!)).toThrow();
  });

  test("not a run: one frame, a large frame, frames of different buffers or not adjacent", () => {
    const one = cutFrames(frameBytes(payloads[1]!));
    expect(isFrameRun(one)).toBe(false);
    const big = Buffer.from(toBinary(ClientMessageSchema, create(ClientMessageSchema, { message: { case: "command", value: { id: "c", tool: "x".repeat(5000) } } })));
    expect(isFrameRun(cutFrames(Buffer.concat([frameBytes(payloads[1]!), frameBytes(big)])))).toBe(false);
    const [a] = cutFrames(frameBytes(payloads[1]!));
    const [b] = cutFrames(frameBytes(payloads[2]!));
    expect(isFrameRun([a!, b!])).toBe(false);
    const three = cutFrames(Buffer.concat(payloads.slice(1, 4).map(frameBytes)));
    expect(isFrameRun([three[0]!, three[2]!])).toBe(false);
  });
});

describe("refusals come from the header alone", () => {
  test("a compressed frame", () => {
    const bad = Buffer.from(wire);
    bad[0] = 1;
    expect(read([bad])).toMatchObject({ got: [], errors: [{ kind: "compressed" }] });
  });
  test("a frame over the limit, before its body arrived; nothing is read after", () => {
    const header = Buffer.from([0, 0, 1, 0, 0]); // 65536 bytes announced
    expect(read([header, wire], 1024)).toEqual({ got: [], errors: [{ kind: "too_large", length: 65536 }], held: 0 });
  });
  test("onFrame returning false stops reading", () => {
    const got: bigint[] = [];
    const r = createFrameReader(1024, (b) => (got.push(fromBinary(PongSchema, b).id), false), () => {});
    r.push(wire);
    expect(got).toEqual([1n]);
  });
});

describe("createUnaryFrameReader", () => {
  test("keeps the one frame; a second is refused once and nothing after it is read", () => {
    let extra = 0;
    const errors: FrameError[] = [];
    const r = createUnaryFrameReader(1024, () => extra++, (e) => errors.push(e));
    r.push(wire.subarray(0, 4));
    expect(r.body).toBeUndefined();
    r.push(wire.subarray(4));
    expect(fromBinary(PongSchema, r.body!).id).toBe(1n);
    expect([extra, errors]).toEqual([1, []]);
  });
  test("a cut frame is left held", () => {
    const r = createUnaryFrameReader(1024, () => {}, () => {});
    r.push(wire.subarray(0, 6));
    expect([r.body, r.held > 0, r.need]).toEqual([undefined, true, 5 + wire.readUInt32BE(1)]);
  });
});
