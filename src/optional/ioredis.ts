/**
 * ioredis's `Redis` and `Cluster` client classes and its `Command`, loaded when the first Redis
 * store (context, session or revocation store) opens (see ./load.ts). Each is also its type, as in
 * ioredis.
 *
 * @private Internal code, does not follow semantic versioning.
 */
import type * as IoRedis from "ioredis";
import { lazyClass, requireOptional } from "./load.js";

const loadIoRedis = (): typeof IoRedis =>
  requireOptional({
    name: "ioredis",
    major: 5,
    neededBy: 'a Redis store ("redis://host:port", "redis+cluster://…" or "redis+sentinel://…", shared by several server instances)',
  }) as typeof IoRedis;

export const Redis: typeof IoRedis.Redis = lazyClass(() => loadIoRedis().Redis);
export type Redis = IoRedis.Redis;
export const Cluster: typeof IoRedis.Cluster = lazyClass(() => loadIoRedis().Cluster);
export type Cluster = IoRedis.Cluster;
export const Command: typeof IoRedis.Command = lazyClass(() => loadIoRedis().Command);
export type { RedisOptions } from "ioredis";
