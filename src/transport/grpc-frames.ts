/**
 * The gRPC message envelope (gRPC over HTTP/2, "Length-Prefixed-Message": a compressed flag
 * byte, a uint32 big-endian length, the protobuf bytes). Shared by the server's and the client's
 * node:http2 paths; the protobuf bytes themselves are always protobuf-es's.
 */
import { create, createFileRegistry, fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { FieldDescriptorProto_Label, FieldDescriptorProto_Type, FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { BinaryReader } from "@bufbuild/protobuf/wire";

/** Size of the envelope header. */
export const FRAME_HEADER_BYTES = 5;

/** Messages encoded together by `encodeMessages`: message i is `bytes[bounds[2i] .. bounds[2i+1])`. */
export interface EncodedMessages {
  readonly bytes: Uint8Array;
  readonly bounds: readonly number[];
}

/**
 * Encodes a batch with ONE protobuf-es `toBinary`: as a wrapper message whose only field is
 * `repeated <schema> messages = 1`. By the protobuf encoding rules each element of a repeated
 * message field is exactly that message's own encoding, preceded by a tag and a length. `toBinary`
 * makes a writer and a fresh buffer per call; per batch instead of per message that measured 1.0
 * → 0.73 µs per ServerMessage (bench/README.md).
 */
export function encodeMessages<Desc extends DescMessage>(schema: Desc, messages: readonly MessageShape<Desc>[]): EncodedMessages {
  const wrapper = batchWrapper(schema);
  const bytes = toBinary(wrapper, { $typeName: wrapper.typeName, messages } as MessageShape<DescMessage>);
  const bounds = new Array<number>(2 * messages.length);
  const reader = new BinaryReader(bytes);
  for (let i = 0; reader.pos < reader.len; i += 2) {
    reader.tag();
    const length = reader.uint32();
    bounds[i] = reader.pos;
    reader.pos += length;
    bounds[i + 1] = reader.pos;
  }
  return { bytes, bounds };
}

/**
 * Messages encoded by `encodeMessages`, as uncompressed gRPC frames concatenated in one buffer:
 * the bytes copied in once, then each message moved to its place, last first. A frame header (5
 * bytes) is never shorter than the tag and length it replaces, so every message moves forward
 * and none overwrites one still to move. Measured 154 → 54 ns per message against a
 * `Buffer.copy` of each range and `writeUInt32BE` (16 Responses a batch, bench/core.ts's batches).
 */
export function framesOfMessages({ bytes, bounds }: EncodedMessages): Buffer {
  let total = 0;
  for (let i = 0; i < bounds.length; i += 2) total += FRAME_HEADER_BYTES + bounds[i + 1]! - bounds[i]!; // i + 1 < length
  const out = Buffer.allocUnsafe(total);
  out.set(bytes, 0); // total >= bytes.length: each message's tag and length took at least 2 bytes
  let off = total;
  for (let i = bounds.length - 2; i >= 0; i -= 2) {
    const start = bounds[i]!;
    const len = bounds[i + 1]! - start;
    off -= FRAME_HEADER_BYTES + len;
    out.copyWithin(off + FRAME_HEADER_BYTES, start, start + len);
    // The header by hand: writeUInt32BE's checks cost as much as the move.
    out[off] = 0;
    out[off + 1] = len >>> 24;
    out[off + 2] = (len >>> 16) & 0xff;
    out[off + 3] = (len >>> 8) & 0xff;
    out[off + 4] = len & 0xff;
  }
  return out;
}

/** Encodes messages as uncompressed gRPC frames, concatenated in one buffer (one write). */
export function encodeFrames<Desc extends DescMessage>(schema: Desc, messages: readonly MessageShape<Desc>[]): Buffer {
  return framesOfMessages(encodeMessages(schema, messages));
}

/**
 * Both at once: a batch's protobuf bytes and bounds (what a session keeps for resume) and its
 * frames (what goes on the wire) — a `MessageSink.encode` for gRPC transports.
 */
export function encodeFrameBatch<Desc extends DescMessage>(schema: Desc, messages: readonly MessageShape<Desc>[]): EncodedMessages & { wire: Buffer } {
  const encoded = encodeMessages(schema, messages);
  return { wire: framesOfMessages(encoded), bytes: encoded.bytes, bounds: encoded.bounds };
}

/** Frames at least this long are decoded on their own: the per-frame setup is nothing next to them. */
const RUN_FRAME_MAX_BYTES = 4096;

/**
 * Whether `decodeFrameRun` can take these frames: two or more, each short, each starting right
 * where the previous one's bytes end in the same buffer (the frames one read of a stream cut).
 */
export function isFrameRun(frames: readonly Uint8Array[]): boolean {
  if (frames.length < 2) return false;
  let end = -1;
  let buffer: ArrayBufferLike | undefined;
  for (const f of frames) {
    if (f.length >= RUN_FRAME_MAX_BYTES) return false;
    if (buffer === undefined) buffer = f.buffer;
    else if (f.buffer !== buffer || f.byteOffset !== end + FRAME_HEADER_BYTES) return false;
    end = f.byteOffset + f.length;
  }
  return true;
}

/**
 * Decodes a run of frames (`isFrameRun`) with ONE protobuf-es `fromBinary`, as the repeated field
 * of the batch wrapper `encodeMessages` writes: each frame's 5-byte header is rewritten in place as
 * the field's tag and its length as a varint padded to 4 bytes (which protobuf readers accept), so
 * the frames' bytes are the wrapper's encoding without a copy. `fromBinary` makes a reader and a
 * read context per call, which cost a third of a small message's decoding (bench/README.md).
 * The headers are gone afterwards; the payloads are untouched. Throws what `fromBinary` throws: a
 * caller that needs to know which frame was bad decodes them one by one then. The caller empties
 * the array it gets once read: V8 may create protobuf-es's lists in the old generation, where a
 * list would keep the messages alive past the young collections (bench/README.md, "Why updates ÷
 * echo swings").
 */
export function decodeFrameRun<Desc extends DescMessage>(schema: Desc, frames: readonly Uint8Array[]): MessageShape<Desc>[] {
  const first = frames[0]!; // a run has two or more
  const last = frames[frames.length - 1]!;
  const start = first.byteOffset - FRAME_HEADER_BYTES;
  // A Buffer, as the frames are: bytes fields decode to views of it, Buffers as they would alone.
  const bytes = Buffer.from(first.buffer, start, last.byteOffset + last.length - start);
  for (const f of frames) {
    const at = f.byteOffset - FRAME_HEADER_BYTES - start;
    const len = f.length; // < RUN_FRAME_MAX_BYTES < 2^28
    bytes[at] = REPEATED_TAG;
    bytes[at + 1] = (len & 0x7f) | 0x80;
    bytes[at + 2] = ((len >>> 7) & 0x7f) | 0x80;
    bytes[at + 3] = ((len >>> 14) & 0x7f) | 0x80;
    bytes[at + 4] = len >>> 21;
  }
  const wrapper = batchWrapper(schema);
  return (fromBinary(wrapper, bytes) as unknown as { messages: MessageShape<Desc>[] }).messages;
}

/** Field 1 of the batch wrapper, length-delimited. */
const REPEATED_TAG = (1 << 3) | 2;

const wrappers = new WeakMap<DescMessage, DescMessage>();

/** The wrapper message `encodeFrames` encodes a batch of `schema` messages as; made once per schema. */
function batchWrapper(schema: DescMessage): DescMessage {
  let wrapper = wrappers.get(schema);
  if (wrapper === undefined) {
    const file = create(FileDescriptorProtoSchema, {
      name: `mcp-internal/frames/${schema.typeName}.proto`,
      package: "mcp_internal.frames",
      dependency: [schema.file.proto.name],
      syntax: "proto3",
      messageType: [
        {
          name: "Batch",
          field: [
            {
              name: "messages",
              jsonName: "messages",
              number: 1,
              label: FieldDescriptorProto_Label.REPEATED,
              type: FieldDescriptorProto_Type.MESSAGE,
              typeName: `.${schema.typeName}`,
            },
          ],
        },
      ],
    });
    const registry = createFileRegistry(file, (name) => (name === schema.file.proto.name ? schema.file : undefined));
    wrapper = registry.getMessage("mcp_internal.frames.Batch");
    if (wrapper === undefined) throw new Error(`could not build the batch wrapper of ${schema.typeName}`);
    wrappers.set(schema, wrapper);
  }
  return wrapper;
}

/** One uncompressed gRPC frame around bytes already encoded. */
export function frameBytes(bin: Uint8Array): Buffer {
  return framePieces(NO_BYTES, bin);
}

const NO_BYTES = new Uint8Array(0);

/**
 * One uncompressed gRPC frame around a message encoded in pieces: a field header written apart
 * from a shared payload, and what follows the payload, if anything.
 */
export function framePieces(head: Uint8Array, body: Uint8Array, tail: Uint8Array = NO_BYTES): Buffer {
  const length = head.length + body.length + tail.length;
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + length);
  out[0] = 0;
  out.writeUInt32BE(length, 1);
  out.set(head, FRAME_HEADER_BYTES);
  out.set(body, FRAME_HEADER_BYTES + head.length);
  if (tail.length > 0) out.set(tail, FRAME_HEADER_BYTES + head.length + body.length);
  return out;
}

/** Why a frame was refused before its bytes were read. */
export type FrameError = { kind: "compressed" } | { kind: "too_large"; length: number };

/** Reassembles gRPC frames from stream chunks. */
export interface FrameReader {
  /**
   * Adds one chunk, then hands whole frames to `onFrame`, in order, within the same call — at most
   * `maxFrames` of them. Returns true when whole frames are left over for `read()`.
   */
  push(chunk: Buffer, maxFrames?: number): boolean;
  /** Hands up to `maxFrames` of the whole frames held to `onFrame`; true when more are left. */
  read(maxFrames?: number): boolean;
  /** Bytes held now (non-zero at end of stream once all is read: the stream was cut inside a frame). */
  readonly held: number;
  /** The size of the frame being waited for, header included. */
  readonly need: number;
}

/**
 * A frame reader: chunks are kept until a whole frame is there, then joined once. `onFrame`
 * returns false to stop reading (the stream is ending); a compressed or oversized frame is
 * refused from its header alone — before its body is buffered — through `onError`, and nothing
 * more is read. Reading at most `maxFrames` per call lets a transport spread a large chunk over
 * several event-loop turns (see session-h2.ts).
 */
export function createFrameReader(
  maxMessageBytes: number,
  onFrame: (bytes: Uint8Array) => boolean,
  onError: (error: FrameError) => void,
): FrameReader {
  return new StreamFrameReader(maxMessageBytes, onFrame, onError);
}

/**
 * `createFrameReader`'s reader. A class, not an object literal with getters: V8 keeps such a
 * literal's properties in a dictionary, ~0.8 KB per stream against ~50 B (bench/scale.ts idle sessions).
 */
class StreamFrameReader implements FrameReader {
  private parts: Buffer[] = [];
  held = 0;
  need = FRAME_HEADER_BYTES;
  private stopped = false;

  constructor(
    private readonly maxMessageBytes: number,
    private readonly onFrame: (bytes: Uint8Array) => boolean,
    private readonly onError: (error: FrameError) => void,
  ) {}

  push(chunk: Buffer, maxFrames?: number): boolean {
    if (this.stopped) return false;
    // Nothing held (a stream's usual case: each read ends on a frame boundary): read the chunk
    // itself, without holding it in `parts` first.
    if (this.held === 0) return this.scan(chunk, maxFrames);
    this.parts.push(chunk);
    this.held += chunk.length;
    return this.read(maxFrames);
  }

  read(maxFrames?: number): boolean {
    if (this.stopped || this.held < this.need) return false;
    const parts = this.parts;
    const buf = parts.length === 1 ? parts[0]! : Buffer.concat(parts, this.held); // held >= need > 0: parts is not empty
    // Emptied, not replaced: a stream reads for hours, and a fresh array per read lives until the
    // next one — long enough on an idle stream to be promoted and left to the old generation.
    parts.length = 0;
    this.held = 0;
    return this.scan(buf, maxFrames);
  }

  /** Hands `buf`'s whole frames to `onFrame`, keeps the rest; nothing is held when called. */
  private scan(buf: Buffer, maxFrames = Infinity): boolean {
    this.need = FRAME_HEADER_BYTES;
    let off = 0;
    let frames = 0;
    const end = buf.length;
    while (end - off >= FRAME_HEADER_BYTES) {
      const flag = buf[off]!; // off + 5 <= end
      const len = buf.readUInt32BE(off + 1);
      if (flag !== 0 || len > this.maxMessageBytes) {
        this.stopped = true;
        this.onError(flag !== 0 ? { kind: "compressed" } : { kind: "too_large", length: len });
        return false;
      }
      if (end - off - FRAME_HEADER_BYTES < len) {
        this.need = FRAME_HEADER_BYTES + len;
        break;
      }
      if (frames === maxFrames) break;
      const bytes = buf.subarray(off + FRAME_HEADER_BYTES, off + FRAME_HEADER_BYTES + len);
      off += FRAME_HEADER_BYTES + len;
      frames++;
      if (!this.onFrame(bytes)) {
        this.stopped = true;
        return false;
      }
    }
    if (off < end) {
      this.parts.push(off === 0 ? buf : buf.subarray(off));
      this.held = end - off;
    }
    return this.held >= this.need && frames === maxFrames;
  }
}

/** The one message of a unary call, read with `createUnaryFrameReader`. */
export interface UnaryFrameReader {
  /** Adds one chunk of the stream. */
  push(chunk: Buffer): void;
  /** The message's bytes once its frame is whole. */
  readonly body: Uint8Array | undefined;
  /** As `FrameReader.held` (non-zero at end of stream: the stream was cut inside a frame). */
  readonly held: number;
  /** As `FrameReader.need`. */
  readonly need: number;
}

/**
 * A reader for a unary request or answer: one frame. A second frame is refused through
 * `onExtra`, and nothing more is read; a compressed or oversized one through `onError`.
 */
export function createUnaryFrameReader(maxMessageBytes: number, onExtra: () => void, onError: (error: FrameError) => void): UnaryFrameReader {
  let body: Uint8Array | undefined;
  const frames = createFrameReader(
    maxMessageBytes,
    (bytes) => {
      if (body !== undefined) {
        onExtra();
        return false;
      }
      body = bytes;
      return true;
    },
    onError,
  );
  return {
    push: (chunk) => void frames.push(chunk),
    get body() {
      return body;
    },
    get held() {
      return frames.held;
    },
    get need() {
      return frames.need;
    },
  };
}
