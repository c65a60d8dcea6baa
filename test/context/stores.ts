/**
 * The three stores as test fixtures, so every contract and manager test runs against each.
 *
 * Redis: `REDIS_URL` or redis://127.0.0.1:6379, a unique key prefix per store, keys removed
 * afterwards. When Redis is unreachable the Redis fixture is left out with a loud warning —
 * unless `CI` is set, where it stays in and every Redis test fails.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import { createMemoryContextStore } from "../../src/context/memory-store.js";
import { createRedisContextStore } from "../../src/context/redis-store.js";
import { createSqliteContextStore } from "../../src/context/sqlite-store.js";
import type { ChangeLogOptions, ContextStore, ContextStoreEvent } from "../../src/context/store.js";

export const redisUrl = process.env["REDIS_URL"] ?? "redis://127.0.0.1:6379";

async function redisReachable(url: string): Promise<boolean> {
  const client = new Redis(url, {
    lazyConnect: true,
    connectTimeout: 1000,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => null,
  });
  client.on("error", () => {});
  try {
    await client.connect();
    return (await client.ping()) === "PONG";
  } catch {
    return false;
  } finally {
    client.disconnect();
  }
}

/** Whether a Redis answered at `redisUrl` when the tests started. */
export const reachable = await redisReachable(redisUrl);
if (!reachable && process.env["CI"] === undefined) {
  console.warn(
    `\n!!!!!!!!\n!!! Redis is not reachable at ${redisUrl}: the Redis context store tests are NOT RUN.\n` +
      `!!! Start one (redis-server --daemonize yes) or set REDIS_URL. With CI set they fail instead.\n!!!!!!!!\n`,
  );
}

/** A store under test, plus a way to open more store objects on the same data. */
export interface OpenedStore {
  store: ContextStore;
  /** A second store object on the same data (same file, same Redis prefix); not for memory. */
  twin?: (options?: ChangeLogOptions) => ContextStore;
}

export interface StoreFixture {
  name: "memory" | "sqlite" | "redis" | "redis-cluster" | "redis-sentinel";
  /** Whether the store keeps data for a twin or a restart (sqlite, redis). */
  durable: boolean;
  /** Whether a twin hears updates applied through another object (redis). */
  shared: boolean;
  open(options?: ChangeLogOptions): OpenedStore;
}

const opened: ContextStore[] = [];
const cleanups: (() => Promise<void> | void)[] = [];

function track(store: ContextStore): ContextStore {
  opened.push(store);
  return store;
}

let seq = 0;
const runId = `${process.pid}-${Date.now().toString(36)}`;

const memory: StoreFixture = {
  name: "memory",
  durable: false,
  shared: false,
  open: (options = {}) => ({ store: track(createMemoryContextStore(options)) }),
};

const sqlite: StoreFixture = {
  name: "sqlite",
  durable: true,
  shared: false,
  open(options = {}) {
    const dir = mkdtempSync(join(tmpdir(), "mcp-context-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, "state.db");
    return {
      store: track(createSqliteContextStore({ ...options, path })),
      twin: (o = options) => track(createSqliteContextStore({ ...o, path })),
    };
  },
};

const redis: StoreFixture = {
  name: "redis",
  durable: true,
  shared: true,
  open(options = {}) {
    if (!reachable) throw new Error(`Redis is not reachable at ${redisUrl} and CI is set: the Redis store must be tested`);
    const keyPrefix = `mcp-test:${runId}:${++seq}:`;
    cleanups.push(() => deleteKeys(keyPrefix));
    return {
      store: track(createRedisContextStore({ ...options, url: redisUrl, keyPrefix })),
      twin: (o = options) => track(createRedisContextStore({ ...o, url: redisUrl, keyPrefix })),
    };
  },
};

/**
 * A Redis Cluster named by `MCP_TEST_REDIS_CLUSTER_URL` (`redis+cluster://…`), set by
 * test/context/store-cluster.test.ts around the cluster it starts, or a Sentinel deployment named
 * by `MCP_TEST_REDIS_SENTINEL_URL` (test/context/store-sentinel.test.ts); either is thrown away
 * after the run, so keys are not removed one by one.
 */
function throwaway(name: "redis-cluster" | "redis-sentinel", url: string): StoreFixture {
  return {
    name,
    durable: true,
    shared: true,
    open(options = {}) {
      const keyPrefix = `mcp-test:${runId}:${++seq}:`;
      return {
        store: track(createRedisContextStore({ ...options, url, keyPrefix })),
        twin: (o = options) => track(createRedisContextStore({ ...o, url, keyPrefix })),
      };
    },
  };
}
const clusterUrl = process.env["MCP_TEST_REDIS_CLUSTER_URL"];
const sentinelUrl = process.env["MCP_TEST_REDIS_SENTINEL_URL"];

/** Removes every Redis key under a prefix. */
export async function deleteKeys(prefix: string): Promise<void> {
  const client = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
  client.on("error", () => {}); // failures surface through the commands below
  try {
    let cursor = "0";
    do {
      const [next, keys] = await client.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 1000);
      if (keys.length > 0) await client.del(...keys);
      cursor = next;
    } while (cursor !== "0");
  } finally {
    await client.quit();
  }
}

/** Every store to test here (Redis only when reachable or required by CI). */
export const storeFixtures: StoreFixture[] =
  clusterUrl !== undefined
    ? [throwaway("redis-cluster", clusterUrl)]
    : sentinelUrl !== undefined
      ? [throwaway("redis-sentinel", sentinelUrl)]
      : [memory, sqlite, ...(reachable || process.env["CI"] !== undefined ? [redis] : [])];

/** Closes every store the fixtures opened and removes their data. Use in `afterEach`. */
export async function cleanupStores(): Promise<void> {
  const stores = opened.splice(0);
  await Promise.all(stores.map((s) => s.close()));
  for (const c of cleanups.splice(0)) await c();
}

/** Records a store's events; `until` resolves once the recorded events satisfy a predicate. */
export function recordEvents(store: ContextStore): {
  events: ContextStoreEvent[];
  until(done: (events: ContextStoreEvent[]) => boolean): Promise<void>;
  stop(): void;
} {
  const events: ContextStoreEvent[] = [];
  let waiters: { done: (e: ContextStoreEvent[]) => boolean; resolve: () => void }[] = [];
  const stop = store.subscribe((e) => {
    events.push(e);
    waiters = waiters.filter((w) => {
      if (!w.done(events)) return true;
      w.resolve();
      return false;
    });
  });
  return {
    events,
    stop,
    until(done) {
      if (done(events)) return Promise.resolve();
      return new Promise<void>((resolve) => waiters.push({ done, resolve }));
    },
  };
}

/** The versions of the change events for one context, in arrival order. */
export function changeVersions(events: readonly ContextStoreEvent[], contextId: string): bigint[] {
  return events.flatMap((e) => (e.kind === "change" && e.change.contextId === contextId ? [e.change.version] : []));
}
