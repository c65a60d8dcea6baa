/**
 * The client's bound on a slow reader (docs/streams.md "Bytes and chunks"): a 64 MiB `fs.read`
 * whose consumer stops, then reads slowly, keeps at most about `highWaterBytes` of received chunks
 * in this process (`ChunkStream.bufferedBytes`): the session stops reading its stream
 * (`McpSession.holdReading`) and the server waits. The same consumer with `highWaterBytes:
 * Infinity` (no hold) buffers the whole file — so the bound is what the first case measures.
 */
import { createHash } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";
import { createMcpClient, type ChunkStream, type McpSession } from "../../src/client/index.js";
import { eventually } from "../helpers/eventually.js";
import { startServer, type TestServer } from "../helpers/server.js";

const SIZE = 64 * 1024 * 1024;
const HIGH_WATER = 4 * 1024 * 1024;

let t: TestServer;
let root = "";
let session: McpSession;
let want = "";

beforeAll(async () => {
  root = await mkdtemp(path.join(tmpdir(), "mcp-chunks-hold-"));
  const bytes = Buffer.alloc(SIZE);
  for (let i = 0; i < SIZE; i += 4096) bytes[i] = i % 251;
  want = createHash("sha256").update(bytes).digest("hex");
  await writeFile(path.join(root, "big.bin"), bytes);
  t = await startServer({ workspaceRoot: root });
  session = await createMcpClient({ baseUrl: t.url, token: await t.token("alice", ["developer"]) }).connect();
});
afterAll(async () => {
  session.close();
  await t.close();
  await rm(root, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Reads `file` as a consumer that stops after its first chunk until nothing more arrives for
 * `quietMs` (or, with `until`, until that holds), then takes each chunk with a pause. Returns the
 * most bytes `file` held unread at any point, what the stop left buffered, and the bytes' sha256.
 */
async function slowRead(file: ChunkStream, until?: (received: number) => boolean) {
  const hash = createHash("sha256");
  let taken = 0;
  let peak = 0;
  let stalled = 0;
  let n = 0;
  for await (const data of file) {
    peak = Math.max(peak, file.bufferedBytes);
    if (++n === 1) {
      const received = () => taken + file.bufferedBytes;
      if (until !== undefined) {
        await eventually(() => until(received()), "the stopped reader to receive it all", 50_000);
      } else {
        // Stopped until the flow stops: what arrives meanwhile is what the client lets in.
        for (let last = -1, quiet = 0; quiet < 5; ) {
          await sleep(100);
          const now = received();
          quiet = now === last ? quiet + 1 : 0;
          last = now;
        }
      }
      stalled = file.bufferedBytes;
      peak = Math.max(peak, stalled);
    } else if (n % 8 === 0) {
      await sleep(5);
    }
    hash.update(data);
    taken += data.length;
  }
  return { peak, stalled, taken, sha256: hash.digest("hex") };
}

test("64 MiB with a stopped, then slow reader: the client holds about highWaterBytes, the file arrives whole", async () => {
  const file = session.callChunks("fs.read", { path: "big.bin", binary: true }, { highWaterBytes: HIGH_WATER });
  const r = await slowRead(file);
  expect(r.taken).toBe(SIZE);
  expect(r.sha256).toBe(want);
  // The stop did fill the buffer to the high-water mark (the flow stopped there, not earlier)…
  expect(r.stalled).toBeGreaterThanOrEqual(HIGH_WATER);
  // …and no further than that plus what was on its way when reading stopped (a few chunks).
  expect(r.peak).toBeLessThanOrEqual(HIGH_WATER + 2 * 1024 * 1024);
  // The session is usable afterwards: the hold was released.
  expect(await session.call("echo", { text: "after" })).toEqual({ text: "after" });
}, 60_000);

test("the same reader without a bound (highWaterBytes: Infinity) buffers the whole file: the bound above is the hold", async () => {
  const file = session.callChunks("fs.read", { path: "big.bin", binary: true }, { highWaterBytes: Infinity });
  const r = await slowRead(file, (received) => received === SIZE);
  expect(r.sha256).toBe(want);
  expect(r.peak).toBeGreaterThan(SIZE - 1024 * 1024);
}, 60_000);
