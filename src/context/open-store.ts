/**
 * One string picks the store: what `mcp serve --store …` and `MCP_STORE` accept.
 */
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { createMemoryContextStore } from "./memory-store.js";
import { isRedisUrl } from "./redis-client.js";
import { createRedisContextStore } from "./redis-store.js";
import { createSqliteContextStore } from "./sqlite-store.js";
import type { ChangeLogOptions, ContextStore } from "./store.js";

/** Options of `openContextStore` that apply to more than one kind of store. */
export interface OpenContextStoreOptions extends ChangeLogOptions {
  /**
   * Prefix of every Redis key and channel (Redis stores only).
   * @default "mcp:"
   */
  keyPrefix?: string;
}

/**
 * Opens the store a spec names:
 *
 * - `memory` — in-process, lost on exit;
 * - `sqlite:/path/file.db`, `sqlite:relative.db`, or a plain path ending in `.db` — durable
 *   embedded file (its folder is created when missing); `sqlite::memory:` for tests;
 * - `redis://host:port[/db]` or `rediss://…` — shared by several server instances;
 *   `redis+cluster://h1:p1,h2:p2` for a Redis Cluster, `redis+sentinel://h1:p1,…/master[/db]`
 *   for a Sentinel-managed master (see redis-client.ts, docs/deploy.md).
 *
 * Resolves once the store is usable (for Redis: connected and subscribed), so a wrong address
 * fails at startup rather than on the first update. Throws `TypeError` for any other spec.
 *
 * @example
 * const store = await openContextStore("sqlite:.mcp/state.db");
 */
export async function openContextStore(spec: string, options: OpenContextStoreOptions = {}): Promise<ContextStore> {
  const { keyPrefix, ...log } = options;
  if (spec === "memory") return createMemoryContextStore(log);
  if (isRedisUrl(spec)) {
    const store = createRedisContextStore({ ...log, url: spec, ...(keyPrefix === undefined ? {} : { keyPrefix }) });
    try {
      await store.countContexts();
    } catch (e) {
      await store.close();
      throw e;
    }
    return store;
  }
  let path: string | undefined;
  if (spec.startsWith("sqlite:")) path = spec.slice("sqlite:".length);
  else if (spec.endsWith(".db") && !spec.includes("://")) path = spec;
  if (path !== undefined && path !== "") {
    if (path !== ":memory:") mkdirSync(dirname(path), { recursive: true });
    return createSqliteContextStore({ ...log, path });
  }
  throw new TypeError(
    `unknown context store "${spec}": expected "memory", "sqlite:<file>", a path ending in .db, or "redis://host:port[/db]"`,
  );
}
