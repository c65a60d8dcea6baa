/**
 * The ContextStore contract suite (store.test.ts) — cross-instance delivery included — through
 * Redis Sentinel: a master, a replica and three sentinels started for this file
 * (test/helpers/redis-sentinel.ts) and stopped after it; the store finds the master by asking the
 * sentinels (`redis+sentinel://…/mymaster/db`). Failover: test/e2e/sentinel-failover.test.ts.
 */
import { afterAll } from "vitest";
import { haveProgram } from "../e2e/scaleout-fixtures.js";
import { tempDir } from "../e2e/helpers.js";
import { startRedisSentinel } from "../helpers/redis-sentinel.js";

if (haveProgram("redis-server")) {
  const dir = await tempDir("mcp-sentinel-");
  const sentinel = await startRedisSentinel(dir.path);
  afterAll(async () => {
    await sentinel.stop();
    await dir.remove();
  });
  // stores.ts reads this when it loads: the suite then runs on the Sentinel fixture alone. db 3:
  // the database part of the URL reaches the master; wait=1: every update waits for the replica.
  process.env["MCP_TEST_REDIS_SENTINEL_URL"] = `${sentinel.url}/3?wait=1`;
  await import("./store.test.js");
}
