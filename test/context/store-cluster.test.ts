/**
 * The ContextStore contract suite (store.test.ts) — cross-instance delivery included — on a
 * local three-master Redis Cluster started for this file and stopped after it: the keys of one
 * context share a hash tag, so every apply script touches one slot (src/context/redis-store.ts).
 */
import { afterAll } from "vitest";
import { haveProgram, startRedisCluster } from "../e2e/scaleout-fixtures.js";
import { tempDir } from "../e2e/helpers.js";

if (haveProgram("redis-server") && haveProgram("redis-cli")) {
  const dir = await tempDir("mcp-cluster-");
  const cluster = await startRedisCluster(dir.path);
  afterAll(async () => {
    await cluster.stop();
    await dir.remove();
  });
  // stores.ts reads this when it loads: the suite then runs on the cluster fixture alone.
  process.env["MCP_TEST_REDIS_CLUSTER_URL"] = cluster.url;
  await import("./store.test.js");
}
