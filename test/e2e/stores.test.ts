/**
 * Storage through real server processes (PROTOCOL.md §8): an acknowledged update survives a
 * SIGKILL of `mcp serve` on SQLite, and two `mcp serve` processes sharing one Redis see each
 * other's changes (a watcher on B hears an update made through A).
 */
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { fromJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { createMcpClient } from "../../src/client/index.js";
import { mintToken } from "../../src/security/index.js";
import { startCli, tempDir } from "./helpers.js";

const SECRET = "e2e-stores-secret-0123456789-abcdefgh";
const token = () => mintToken({ secret: SECRET, subject: "carol", roles: ["developer"], ttlSec: 600 });
const put = (key: string, json: unknown) => ({ op: { case: "put" as const, value: { key, value: fromJson(ValueSchema, json as never) } } });

describe("SQLite durability", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  beforeAll(async () => {
    dir = await tempDir();
  });
  afterAll(() => dir.remove());

  test("an acknowledged update is there after SIGKILL and a restart on the same file", async () => {
    const args = ["--port", "0", "--store", `sqlite:${join(dir.path, "ctx.db")}`, "--jwt-secret", SECRET, "--state-dir", dir.path];
    const first = await startCli(args);
    const client = createMcpClient({ baseUrl: first.url, token: await token() });
    let acked = 0n;
    for (let i = 1; i <= 20; i++) {
      const r = await client.contexts.updateContext({ contextId: "durable", ops: [put("n", i), put(`k${i}`, { i })] });
      acked = r.version;
    }
    expect(acked).toBe(20n);
    first.proc.kill("SIGKILL");
    expect(await first.close()).toBeNull(); // killed by the signal, no exit code

    const second = await startCli(args);
    try {
      const again = createMcpClient({ baseUrl: second.url, token: await token() });
      const snap = await again.contexts.getContext({ contextId: "durable" });
      expect(snap.toVersion).toBe(20n);
      const n = snap.entries.find((e) => e.key === "n");
      expect(n?.value?.kind).toEqual({ case: "numberValue", value: 20 });
      expect(n?.version).toBe(20n);
      expect(n?.updatedBy).toBe("carol");
      expect(snap.entries.filter((e) => e.key.startsWith("k"))).toHaveLength(20);
    } finally {
      await second.close();
    }
  });
});

const REDIS_URL = process.env["REDIS_URL"] ?? "redis://127.0.0.1:6379";
// A database of its own, emptied first, so earlier runs leave nothing behind.
const DB_URL = `${REDIS_URL.replace(/\/\d+$/, "")}/5`;

async function redisAvailable(): Promise<boolean> {
  const r = new Redis(DB_URL, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  try {
    await r.connect();
    await r.flushdb();
    return true;
  } catch {
    return false;
  } finally {
    r.disconnect();
  }
}

const haveRedis = await redisAvailable();
if (!haveRedis) {
  if (process.env["CI"] !== undefined) throw new Error(`CI needs Redis at ${DB_URL}: .ci/run starts one`);
  console.warn(`\n*** SKIPPING the two-instance Redis test: no Redis answers at ${DB_URL} (set REDIS_URL) ***\n`);
}

describe.runIf(haveRedis)("two server processes on one Redis", () => {
  test("an update through instance A reaches a watcher connected to instance B", async () => {
    const args = ["--port", "0", "--store", DB_URL, "--jwt-secret", SECRET];
    const [a, b] = await Promise.all([startCli(args), startCli(args)]);
    try {
      const tok = await token();
      const onA = createMcpClient({ baseUrl: a.url, token: tok });
      const onB = createMcpClient({ baseUrl: b.url, token: tok });
      const id = `shared-${randomUUID()}`;
      const abort = new AbortController();
      const seen: bigint[] = [];
      const watching = (async () => {
        for await (const s of onB.contexts.watchContext({ contextId: id, knownVersion: 0n }, { signal: abort.signal })) {
          seen.push(s.toVersion);
          if (s.toVersion === 0n) {
            // The watch is live on B: now write through A.
            for (let i = 1; i <= 5; i++) await onA.contexts.updateContext({ contextId: id, ops: [put("step", i)] });
          }
          if (s.toVersion === 5n) {
            expect(s.full).toBe(false);
            expect(s.entries.map((e) => [e.key, e.value?.kind.value])).toEqual([["step", 5]]);
            break;
          }
        }
      })();
      await watching;
      abort.abort();
      expect(seen).toEqual([0n, 1n, 2n, 3n, 4n, 5n]);
      // And the other way round, through plain reads: B sees A's state.
      expect((await onB.contexts.getContext({ contextId: id })).toVersion).toBe(5n);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });
});
