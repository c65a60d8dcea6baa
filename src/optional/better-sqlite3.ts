/**
 * better-sqlite3's `Database`, loaded when the first SQLite store opens (see ./load.ts).
 *
 * @private Internal code, does not follow semantic versioning.
 */
import type BetterSqlite3 from "better-sqlite3";
import { lazyClass, requireOptional } from "./load.js";

export const Database: typeof BetterSqlite3 = lazyClass(
  () =>
    requireOptional({
      name: "better-sqlite3",
      major: 12,
      neededBy: 'the SQLite context store ("sqlite:<file>", the default of `mcp serve`; "--store memory" needs nothing)',
    }) as typeof BetterSqlite3,
);
