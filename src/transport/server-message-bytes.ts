/**
 * One ServerMessage as protobuf bytes and a gRPC frame, for a batch of one — what a session that
 * is mostly idle sends (a watcher's ContextSync, a Pong, a Response). The batch wrapper of
 * `encodeMessages` and its BinaryReader pass for the bounds cost more than the message itself here.
 *
 * A context change reaches every watcher as the same ContextSync object (ContextManager.watch
 * shares its deltas, read-only): its bytes are encoded once, on first use, and each session's
 * ServerMessage is its own `seq` plus those bytes, written with protobuf-es's BinaryWriter — the
 * same bytes `toBinary` gives (fields in number order, test/transport/server-message-bytes.test.ts).
 * For 1,000 watchers that is one ContextSync encoding per change instead of 1,000.
 *
 * A chunk of bytes output (`Event.chunk`, up to 1 MiB) is framed once, its data copied once: the
 * resume ring keeps a view of the frame and the transport writes the frame itself. Through
 * `toBinary`, its data was copied four times — twice through BinaryWriter's growing buffer, once
 * when it joins its pieces, once into the frame — and the message encoded twice (ring and
 * transport): ~16 % of the server's time in a 256 MiB `fs.read` (bench/README.md, "December 4").
 */
import { toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { ContextSyncSchema, type ContextSync } from "../../gen/mcp/v1/context_pb.js";
import { ChunkSchema, EventSchema, type Chunk, type Event } from "../../gen/mcp/v1/event_pb.js";
import { ServerMessageSchema, type ServerMessage } from "../../gen/mcp/v1/session_pb.js";
import { FRAME_HEADER_BYTES, frameBytes, framePieces, type EncodedMessages } from "./grpc-frames.js";

const SEQ_FIELD = ServerMessageSchema.field.seq.number;
const CONTEXT_SYNC_FIELD = ServerMessageSchema.field.contextSync.number;
const EVENT_FIELD = ServerMessageSchema.field.event.number;
const EVENT_CHUNK_FIELD = EventSchema.field.chunk.number;
const CHUNK_DATA_FIELD = ChunkSchema.field.data.number;

/** Chunks with fewer bytes than this go through `toBinary`: composing them saves nothing. */
const CHUNK_FRAME_MIN_BYTES = 4096;

/**
 * One writer for every call: a fresh one allocates (and zero-fills) its first KiB each time.
 * Safe to share: each call writes and `finish()`es synchronously.
 */
const writer = new BinaryWriter();

/** Encoded ContextSyncs by object: kept as long as the object lives (the change log's delta, a session's ring slot). */
const contextSyncBytes = new WeakMap<ContextSync, Uint8Array>();

/** Frames of chunk-carrying messages by object: made by the first of the ring and the transport to ask. */
const chunkFrames = new WeakMap<ServerMessage, Buffer>();

const NO_DATA = new Uint8Array(0);

/** A ContextSync's bytes, encoded on first use. */
function contextSyncPayload(sync: ContextSync): Uint8Array {
  let payload = contextSyncBytes.get(sync);
  if (payload === undefined) {
    payload = toBinary(ContextSyncSchema, sync);
    contextSyncBytes.set(sync, payload);
  }
  return payload;
}

/**
 * A batch of one ServerMessage as `encodeFrameBatch` returns it: bytes, bounds and the frame. A
 * ContextSync's frame is written into one buffer from Node's pool — the frame header, protobuf-es's
 * writer's seq and field header, the shared payload — and its bytes are a view of the frame: no
 * buffer of their own per watcher (the resume ring copies what it keeps).
 */
export function encodeOneServerMessage(m: ServerMessage): EncodedMessages & { wire: Buffer } {
  const chunk = largeChunkFrame(m);
  if (chunk !== undefined) return { wire: chunk, bytes: chunk.subarray(FRAME_HEADER_BYTES), bounds: [0, chunk.length - FRAME_HEADER_BYTES] };
  if (m.message.case !== "contextSync") {
    const bytes = toBinary(ServerMessageSchema, m);
    return { wire: frameBytes(bytes), bytes, bounds: [0, bytes.length] };
  }
  const payload = contextSyncPayload(m.message.value);
  const w = writer;
  // proto3: a zero seq (a message outside a session) is not written, as toBinary does.
  if (m.seq !== 0n) w.tag(SEQ_FIELD, WireType.Varint).uint64(m.seq);
  // What `bytes(payload)` writes before the payload: the tag and the length.
  const head = w.tag(CONTEXT_SYNC_FIELD, WireType.LengthDelimited).uint32(payload.length).finish();
  const wire = framePieces(head, payload);
  return { wire, bytes: wire.subarray(FRAME_HEADER_BYTES), bounds: [0, wire.length - FRAME_HEADER_BYTES] };
}

/**
 * The gRPC frame of a message whose event carries a chunk of at least CHUNK_FRAME_MIN_BYTES, made
 * once per message object; undefined for every other message. The bytes are toBinary's: the
 * fields in number order, and the chunk's data is the first field of the last field (`chunk`) of
 * the last field (`event`), so they are the heads of the three messages, the data, and the rest
 * of the chunk (test/transport/server-message-bytes.test.ts).
 */
export function largeChunkFrame(m: ServerMessage): Buffer | undefined {
  if (m.message.case !== "event") return undefined;
  const event = m.message.value;
  const data = event.chunk?.data;
  if (data === undefined || data.length < CHUNK_FRAME_MIN_BYTES) return undefined;
  let frame = chunkFrames.get(m);
  if (frame === undefined) {
    frame = composeChunkFrame(m.seq, event, event.chunk!, data); // data !== undefined: chunk is set
    chunkFrames.set(m, frame);
  }
  return frame;
}

function composeChunkFrame(seq: bigint, event: Event, chunk: Chunk, data: Uint8Array): Buffer {
  const chunkRest = toBinary(ChunkSchema, { ...chunk, data: NO_DATA });
  const eventRest = toBinary(EventSchema, { ...event, chunk: undefined });
  const w = writer;
  const dataHead = w.tag(CHUNK_DATA_FIELD, WireType.LengthDelimited).uint32(data.length).finish();
  const chunkLength = dataHead.length + data.length + chunkRest.length;
  const chunkHead = w.tag(EVENT_CHUNK_FIELD, WireType.LengthDelimited).uint32(chunkLength).finish();
  if (seq !== 0n) w.tag(SEQ_FIELD, WireType.Varint).uint64(seq);
  w.tag(EVENT_FIELD, WireType.LengthDelimited).uint32(eventRest.length + chunkHead.length + chunkLength);
  const head = w.raw(eventRest).raw(chunkHead).raw(dataHead).finish();
  return framePieces(head, data, chunkRest);
}
