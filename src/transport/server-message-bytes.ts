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
 */
import { toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { ContextSyncSchema, type ContextSync } from "../../gen/mcp/v1/context_pb.js";
import { ServerMessageSchema, type ServerMessage } from "../../gen/mcp/v1/session_pb.js";
import { FRAME_HEADER_BYTES, frameBytes, framePieces, type EncodedMessages } from "./grpc-frames.js";

const SEQ_FIELD = ServerMessageSchema.field.seq.number;
const CONTEXT_SYNC_FIELD = ServerMessageSchema.field.contextSync.number;

/**
 * One writer for every call: a fresh one allocates (and zero-fills) its first KiB each time.
 * Safe to share: each call writes and `finish()`es synchronously.
 */
const writer = new BinaryWriter();

/** Encoded ContextSyncs by object: kept as long as the object lives (the change log's delta, a session's ring slot). */
const contextSyncBytes = new WeakMap<ContextSync, Uint8Array>();

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
