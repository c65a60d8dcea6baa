/**
 * ioredis's `Redis` client class, loaded when the first Redis store (context, session or
 * revocation store) opens (see ./load.ts). `Redis` is also the client's type, as in ioredis.
 *
 * @private Internal code, does not follow semantic versioning.
 */
import type * as IoRedis from "ioredis";
import { lazyClass, requireOptional } from "./load.js";

export const Redis: typeof IoRedis.Redis = lazyClass(
  () =>
    (
      requireOptional({
        name: "ioredis",
        major: 5,
        neededBy: 'a Redis store ("redis://host:port", shared by several server instances)',
      }) as typeof IoRedis
    ).Redis,
);
export type Redis = IoRedis.Redis;
