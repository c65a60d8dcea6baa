/**
 * Shared context (PROTOCOL.md §4 step 3, §8): versioned key/value state that every authorised
 * client sees consistently.
 *
 * `createContextManager` validates updates, enforces limits and fans changes out to watchers;
 * below it, one `ContextStore` interface has three implementations: memory, SQLite (durable,
 * the default of `mcp serve`) and Redis (shared by several server instances). `openContextStore`
 * picks one from a spec string such as `memory`, `sqlite:state.db` or `redis://host:6379`.
 *
 * @example
 * const store = await openContextStore("sqlite:.mcp/state.db");
 * const contexts = createContextManager({ store });
 * await contexts.update({ contextId: "proj", ops: [{ op: { case: "put", value: { key: "k", value } } }] }, "alice");
 * for await (const sync of contexts.watch("proj", 0n, signal)) apply(sync);
 */
export { createContextManager } from "./manager.js";
export type { ContextManager, ContextManagerOptions, WatchSink } from "./manager.js";
export { openContextStore } from "./open-store.js";
export type { OpenContextStoreOptions } from "./open-store.js";
export { createMemoryContextStore } from "./memory-store.js";
export type { MemoryContextStoreOptions } from "./memory-store.js";
export { createSqliteContextStore } from "./sqlite-store.js";
export type { SqliteContextStoreOptions } from "./sqlite-store.js";
export { createRedisContextStore } from "./redis-store.js";
export type { RedisContextStoreOptions } from "./redis-store.js";
// Symbols below matter only to those writing another ContextStore.
export type {
  ChangeLogOptions,
  ContextChange,
  ContextDelta,
  ContextSnapshot,
  ContextStore,
  ContextStoreEvent,
  ContextStoreListener,
  ContextWrite,
  StoredEntry,
  StoredPut,
} from "./store.js";
