/**
 * The raw ceiling's frame cutting (bench/run.ts's client, bench/server.ts's server): gRPC frames
 * cut from `data` chunks as plainly as can be — no codec, no limits — so the ceiling measures
 * node:http2 and little else.
 */

/** Returns a `data` listener that calls `onFrame(buf, start, end)` for each whole frame, header included. */
export function rawFrames(onFrame: (buf: Buffer, start: number, end: number) => void): (chunk: Buffer) => void {
  let rest: Buffer | undefined;
  return (chunk) => {
    const buf = rest === undefined ? chunk : Buffer.concat([rest, chunk]);
    let off = 0;
    while (buf.length - off >= 5) {
      const end = off + 5 + buf.readUInt32BE(off + 1);
      if (end > buf.length) break;
      onFrame(buf, off, end);
      off = end;
    }
    rest = off === buf.length ? undefined : buf.subarray(off);
  };
}
