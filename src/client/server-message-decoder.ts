/**
 * ServerMessages decoded for all the sessions of one client. A context change reaches every
 * session watching it as the same ContextSync bytes behind each session's own `seq`
 * (src/transport/server-message-bytes.ts): a ServerMessage that is a seq and a ContextSync and
 * nothing else has its ContextSync decoded once, and every later frame with the same bytes gets
 * the same ContextSync object — read-only, like the server's shared deltas. For 1,000 watcher
 * sessions of one client that is one ContextSync decoding per change instead of 1,000. Anything
 * else is decoded by protobuf-es's `fromBinary` as before.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { ContextSyncSchema, type ContextSync } from "../../gen/mcp/v1/context_pb.js";
import { ServerMessageSchema, type ServerMessage } from "../../gen/mcp/v1/session_pb.js";

/** The tag bytes of `seq` (field 1, varint) and `context_sync` (field 4, length-delimited). */
const SEQ_TAG = (ServerMessageSchema.field.seq.number << 3) | 0;
const CONTEXT_SYNC_TAG = (ServerMessageSchema.field.contextSync.number << 3) | 2;
/** Recent ContextSyncs kept: a client's watchers of a few contexts interleave their changes. */
const RECENT = 4;

/** Decodes ServerMessage bytes; one per client (its sessions share the decoded ContextSyncs). */
export type ServerMessageDecoder = (bytes: Uint8Array) => ServerMessage;

export function createServerMessageDecoder(): ServerMessageDecoder {
  // Newest first; each entry's bytes are a copy (not a view keeping a whole read chunk alive).
  const recent: { bytes: Uint8Array; sync: ContextSync }[] = [];

  function contextSyncOf(payload: Uint8Array): ContextSync {
    for (const r of recent) if (r.bytes.length === payload.length && Buffer.compare(r.bytes, payload) === 0) return r.sync;
    const sync = fromBinary(ContextSyncSchema, payload);
    if (recent.unshift({ bytes: payload.slice(), sync }) > RECENT) recent.pop();
    return sync;
  }

  return (bytes) => {
    let pos = 0;
    let seq = 0;
    if (bytes[0] === SEQ_TAG) {
      // A varint of at most 7 bytes (49 bits) is exact in a double; longer ones go to fromBinary.
      let scale = 1;
      for (pos = 1; ; pos++) {
        const b = bytes[pos];
        if (b === undefined || pos > 7) return fromBinary(ServerMessageSchema, bytes);
        seq += (b & 0x7f) * scale;
        scale *= 128;
        if (b < 0x80) break;
      }
      pos++;
    }
    if (bytes[pos] !== CONTEXT_SYNC_TAG) return fromBinary(ServerMessageSchema, bytes);
    let length = 0;
    let scale = 1;
    for (let i = 0; ; i++) {
      const b = bytes[++pos];
      if (b === undefined || i > 3) return fromBinary(ServerMessageSchema, bytes);
      length += (b & 0x7f) * scale;
      scale *= 128;
      if (b < 0x80) break;
    }
    pos++;
    // Something after the ContextSync (another field, a repeated one): the general decoder.
    if (pos + length !== bytes.length) return fromBinary(ServerMessageSchema, bytes);
    const sync = contextSyncOf(bytes.subarray(pos));
    // A literal: what fromBinary makes for these two fields (proto3 messages are plain objects).
    return { $typeName: "mcp.v1.ServerMessage", seq: BigInt(seq), message: { case: "contextSync", value: sync } };
  };
}
