/**
 * The gRPC message envelope (gRPC over HTTP/2, "Length-Prefixed-Message": a compressed flag
 * byte, a uint32 big-endian length, the protobuf bytes). Shared by the server's and the client's
 * node:http2 paths; the protobuf bytes themselves are always protobuf-es's.
 */
import { toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";

/** Size of the envelope header. */
export const FRAME_HEADER_BYTES = 5;

/** Encodes messages as uncompressed gRPC frames, concatenated in one buffer (one write). */
export function encodeFrames<Desc extends DescMessage>(schema: Desc, messages: readonly MessageShape<Desc>[]): Buffer {
  const bins = new Array<Uint8Array>(messages.length);
  let total = 0;
  for (let i = 0; i < messages.length; i++) {
    const bin = toBinary(schema, messages[i]!); // i < length
    bins[i] = bin;
    total += FRAME_HEADER_BYTES + bin.length;
  }
  const out = Buffer.allocUnsafe(total);
  let off = 0;
  for (const bin of bins) {
    out[off] = 0;
    out.writeUInt32BE(bin.length, off + 1);
    out.set(bin, off + FRAME_HEADER_BYTES);
    off += FRAME_HEADER_BYTES + bin.length;
  }
  return out;
}

/** One uncompressed gRPC frame around bytes already encoded. */
export function frameBytes(bin: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + bin.length);
  out[0] = 0;
  out.writeUInt32BE(bin.length, 1);
  out.set(bin, FRAME_HEADER_BYTES);
  return out;
}
