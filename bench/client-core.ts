/**
 * The client's cost per `McpSession.call("echo", { text })` without the network or a server: the
 * real `openSession` and `h2SessionStream` (encode, frames, decode, dispatch, JSON) over a fake
 * HTTP/2 stream whose "server" answers each Command at once from a byte template (ServerMessage
 * { seq, response { command_id, output_json } }: a few bytes written per answer, so nearly all the
 * CPU measured is the client's). 64 calls in flight, as bench/run.ts's stream figure. Prints CPU µs
 * per call (all threads: GC helpers included) of `R` rounds (default 5) of `MS` ms (default 1500)
 * and bytes allocated per call (V8's sampling heap profiler, collected objects included;
 * `ALLOC=1` lists the top allocation sites). The client-side counterpart of bench/core.ts:
 * `node --import tsx bench/client-core.ts`.
 */
import { EventEmitter } from "node:events";
import { Session as Inspector } from "node:inspector/promises";
import { create, toBinary } from "@bufbuild/protobuf";
import { ServerMessageSchema } from "../gen/mcp/v1/session_pb.js";
import { h2SessionStream } from "../src/client/session-h2.js";
import { openSession } from "../src/client/session.js";
import { drive } from "./lib/drive.js";

const hsBytes = toBinary(ServerMessageSchema, create(ServerMessageSchema, { message: { case: "handshakeResult", value: { sessionId: "s", capabilities: ["output_json"] } } }));
// Tags of the template: ClientMessage.handshake 0x0a, .command 0x2a; Command.id 0x0a; ServerMessage.seq
// 0x08, .response 0x32; Response.command_id 0x0a, .output_json 0x32. The answer echoes the call's JSON.
const JSONB = Buffer.from('{"text":"hello, benchmark"}');
let seq = 1;
const varint = (out: Buffer, p: number, v: number) => { while (v > 0x7f) { out[p++] = (v & 0x7f) | 0x80; v >>>= 7; } out[p++] = v; return p; };
class FakeStream extends EventEmitter {
  destroyed = false; rstCode: number | undefined = undefined;
  pause() {} resume() {}
  close() { this.destroyed = true; setImmediate(() => this.emit("close")); }
  write(buf: Buffer) {
    setImmediate(() => {
      const out = Buffer.allocUnsafe(buf.length * 2 + 256);
      let o = 0;
      for (let off = 0; off < buf.length; ) {
        const len = buf.readUInt32BE(off + 1);
        const body = off + 5;
        off += 5 + len;
        if (buf[body] === 0x0a) { out[o] = 0; out.writeUInt32BE(hsBytes.length, o + 1); out.set(hsBytes, o + 5); o += 5 + hsBytes.length; continue; }
        if (buf[body] !== 0x2a) continue;
        let p = body + 1; while (buf[p]! & 0x80) p++; p++; // command length
        if (buf[p] !== 0x0a) throw new Error("no id first");
        const idLen = buf[p + 1]!; const idStart = p + 2;
        const respLen = 2 + idLen + 2 + JSONB.length;
        const start = o; o += 5;
        out[o++] = 0x08; o = varint(out, o, seq++);
        out[o++] = 0x32; out[o++] = respLen;
        out[o++] = 0x0a; out[o++] = idLen; buf.copy(out, o, idStart, idStart + idLen); o += idLen;
        out[o++] = 0x32; out[o++] = JSONB.length; JSONB.copy(out, o); o += JSONB.length;
        out[start] = 0; out.writeUInt32BE(o - start - 5, start + 1);
      }
      this.emit("data", out.subarray(0, o));
    });
    return true;
  }
}
const channel = { open: () => { const s = new FakeStream(); setImmediate(() => s.emit("response", { ":status": 200 })); return { stream: s as never, connectionError: () => undefined, suspect() {}, release() {} }; }, connections: 1, close() {} };
const open = h2SessionStream({ baseUrl: "http://127.0.0.1:1", channel });
const session = await openSession(open, "t", { heartbeatIntervalMs: 0, reconnect: false });
if (!session.handshake.capabilities.includes("output_json")) throw new Error("no output_json");
const opener = (done: () => void) => ({ send: () => void session.call("echo", { text: "hello, benchmark" }).then(done, (e) => { console.error(e); process.exit(1); }), close: () => {} });
const INFLIGHT = 64;
const rounds = Number(process.env.R ?? 5);
const res: number[] = [];
await drive(opener, INFLIGHT, 1500, 0);
for (let r = 0; r < rounds; r++) {
  const c0 = process.cpuUsage();
  const d = await drive(opener, INFLIGHT, Number(process.env.MS ?? 1500), 0);
  const c = process.cpuUsage(c0);
  res.push((c.user + c.system) / d.calls);
}
const inspector = new Inspector(); inspector.connect();
await inspector.post("HeapProfiler.startSampling", { samplingInterval: 1024, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
const d = await drive(opener, INFLIGHT, 1000, 0);
const { profile } = await inspector.post("HeapProfiler.stopSampling");
let sampled = 0; const by = new Map<string, number>();
const stack: { node: typeof profile.head; path: string }[] = [{ node: profile.head, path: "" }];
for (let it = stack.pop(); it !== undefined; it = stack.pop()) {
  const n = it.node; sampled += n.selfSize;
  const k = `${n.callFrame.functionName || "(anon)"} ${n.callFrame.url.replace(/.*node_modules\//, "").replace(/.*hotpath\//, "")}`;
  by.set(k, (by.get(k) ?? 0) + n.selfSize);
  for (const c of n.children) stack.push({ node: c, path: "" });
}
res.sort((a, b) => a - b);
console.log(`client CPU µs/call (all threads): ${res.map((x) => x.toFixed(2)).join(" ")}  median ${res[Math.floor(res.length / 2)]!.toFixed(2)};  ~${Math.round(sampled / d.calls)} bytes allocated per call`);
if (process.env.ALLOC) for (const [k, v] of [...by].sort((a, b) => b[1] - a[1]).slice(0, 25)) console.log(String(Math.round(v / d.calls)).padStart(6), k);
session.close(); process.exit(0);
