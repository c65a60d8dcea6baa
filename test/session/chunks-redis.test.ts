/**
 * Chunks and the shared session store (src/session/session-registry.ts): a chunk stream's bytes
 * stay out of the Redis mirror, and a resume on another instance is exact after the stream and
 * refused (`session_expired`) from inside it — never served with a gap. Needs the shared Redis
 * (its own database, 13, emptied first); skipped loudly outside CI without one.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { eventually } from "../helpers/eventually.js";
import { handshake, openRawStream, openSession, startServer, type TestServer } from "../helpers/server.js";
import { redisDatabase } from "../helpers/redis-db.js";

const { url: DB_URL, available: haveRedis } = await redisDatabase(13, "the chunks-and-Redis test");

describe.runIf(haveRedis)("chunks with a shared session store", () => {
  let root = "";
  let a: TestServer;
  let b: TestServer;
  let redis: Redis;
  beforeAll(async () => {
    root = await mkdtemp(path.join(tmpdir(), "mcp-chunks-redis-"));
    await writeFile(path.join(root, "f.bin"), Buffer.alloc(2 * 1024 * 1024, 9));
    [a, b] = await Promise.all([startServer({ store: DB_URL, workspaceRoot: root }), startServer({ store: DB_URL, workspaceRoot: root })]);
    redis = new Redis(DB_URL);
  });
  afterAll(async () => {
    redis.disconnect();
    await Promise.all([a.close(), b.close()]);
    await rm(root, { recursive: true, force: true });
  });

  test("2 MiB of chunks leave the mirror small; resume elsewhere: exact after them, session_expired from inside them", async () => {
    const tok = await a.token();
    const { s, sessionId } = await openSession(a.url, tok);
    s.send({ case: "command", value: { id: "r", tool: "fs.read", payload: { case: "arguments", value: { path: "f.bin", binary: true } } } });
    let firstChunkSeq = 0n;
    let responseSeq = 0n;
    for (let i = 0; i < 100 && responseSeq === 0n; i++) {
      const m = await s.next();
      if (m === undefined) throw new Error("the stream ended early");
      if (m.message.case === "event" && m.message.value.chunk !== undefined && firstChunkSeq === 0n) firstChunkSeq = m.seq;
      if (m.message.case === "response") responseSeq = m.seq;
    }
    expect(firstChunkSeq).toBeGreaterThan(0n);
    s.close();
    const key = `mcp:session:{${sessionId}}`;
    await eventually(async () => (await redis.exists(key)) === 1, "instance A to park the session");
    let mirrored = 0;
    for (const k of await redis.keys(`*${sessionId}*`)) mirrored += Number((await redis.memory("USAGE", k)) ?? 0);
    expect(mirrored).toBeLessThan(256 * 1024);

    const inside = openRawStream(b.url);
    inside.send(handshake(tok, { resume: { sessionId, lastSeq: firstChunkSeq } }));
    const refused = await inside.rest();
    expect(refused.map((m) => m.message.case === "error" && m.message.value.code)).toEqual(["session_expired"]);

    const after = openRawStream(b.url);
    after.send(handshake(tok, { resume: { sessionId, lastSeq: responseSeq } }));
    const first = await after.next();
    expect(first?.message.case === "handshakeResult" && first.message.value.resumed).toBe(true);
    after.close();
  });
});
