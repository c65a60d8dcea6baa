/**
 * Options of the built-in tools and their one resolver (STYLE.md §2: defaults live in one place).
 */
import { SecurityLevel } from "../../../gen/mcp/v1/types_pb.js";

/** Names of the built-in tools. */
export type BuiltinToolName = "echo" | "fs.read" | "fs.write" | "fs.list" | "fs.search" | "exec";

/** Options of the `exec` tool. */
export interface ExecToolOptions {
  /**
   * Register `exec` at all. Off unless asked for: it runs arbitrary programs as the server's user.
   * @default false
   */
  enabled?: boolean;
  /**
   * Environment variable names passed to programs: taken from the server's environment, and the
   * only names a command's `env` may set (others are `invalid_argument`).
   * @default ["PATH", "HOME", "LANG", "TERM"]
   */
  envAllowList?: readonly string[];
  /**
   * Bytes of stdout plus stderr kept and streamed per run; beyond it output is dropped and
   * `truncated` set (the program keeps running).
   * @default 1048576 (1 MiB)
   */
  maxOutputBytes?: number;
  /**
   * After an abort (timeout, Cancel), how long the process group gets between SIGTERM and SIGKILL.
   * @default 2000
   */
  killGraceMs?: number;
}

/** Options of `createBuiltinTools`. */
export interface BuiltinToolsOptions {
  /**
   * The workspace root: every path the tools accept is relative to it and may not leave it.
   * @default process.cwd()
   */
  root?: string;
  /**
   * Most bytes `fs.read` returns per call.
   * @default 1048576 (1 MiB)
   */
  maxReadBytes?: number;
  /**
   * Bytes per chunk `fs.read` streams in binary mode (at most 1 MiB, `Limits.max_chunk_bytes`).
   * @default 262144 (256 KiB)
   */
  readChunkBytes?: number;
  /**
   * Entries per `fs.list` page, and the most a command may ask for.
   * @default 1000
   */
  listPageSize?: number;
  /**
   * Most matches `fs.search` returns, and the most a command may ask for.
   * @default 1000
   */
  maxSearchResults?: number;
  /**
   * Files larger than this are not searched by `fs.search` (they are rarely source text).
   * @default 8388608 (8 MiB)
   */
  maxSearchFileBytes?: number;
  /**
   * Directory names `fs.search` never descends into.
   * @default ["node_modules", ".git"]
   */
  searchSkipDirs?: readonly string[];
  /**
   * Minimum security level per tool (PROTOCOL.md §5).
   * @default { "fs.write": HIGH, exec: HIGH, others: STANDARD }
   */
  securityLevels?: Partial<Record<BuiltinToolName, SecurityLevel>>;
  /** The `exec` tool. */
  exec?: ExecToolOptions;
}

/** `ExecToolOptions` with every default applied. */
export interface ResolvedExecToolOptions {
  enabled: boolean;
  envAllowList: readonly string[];
  maxOutputBytes: number;
  killGraceMs: number;
}

/** `BuiltinToolsOptions` with every default applied. */
export interface ResolvedBuiltinToolsOptions {
  root: string;
  maxReadBytes: number;
  readChunkBytes: number;
  listPageSize: number;
  maxSearchResults: number;
  maxSearchFileBytes: number;
  searchSkipDirs: readonly string[];
  securityLevels: Readonly<Record<BuiltinToolName, SecurityLevel>>;
  exec: ResolvedExecToolOptions;
}

const MIB = 1024 * 1024;

/** `maxReadBytes` when not set: fs.read's text cap (the bridges give a model at most this by default). */
export const DEFAULT_MAX_READ_BYTES = MIB;

/** Applies defaults and checks values; throws `TypeError` on misuse. Does not modify `options`. */
export function resolveBuiltinToolsOptions(options: BuiltinToolsOptions = {}): ResolvedBuiltinToolsOptions {
  const exec = options.exec ?? {};
  return {
    root: options.root ?? process.cwd(),
    maxReadBytes: positiveInteger("maxReadBytes", options.maxReadBytes ?? DEFAULT_MAX_READ_BYTES),
    readChunkBytes: atMost("readChunkBytes", positiveInteger("readChunkBytes", options.readChunkBytes ?? 256 * 1024), MIB),
    listPageSize: positiveInteger("listPageSize", options.listPageSize ?? 1000),
    maxSearchResults: positiveInteger("maxSearchResults", options.maxSearchResults ?? 1000),
    maxSearchFileBytes: positiveInteger("maxSearchFileBytes", options.maxSearchFileBytes ?? 8 * MIB),
    searchSkipDirs: [...(options.searchSkipDirs ?? ["node_modules", ".git"])],
    securityLevels: {
      echo: SecurityLevel.STANDARD,
      "fs.read": SecurityLevel.STANDARD,
      "fs.list": SecurityLevel.STANDARD,
      "fs.search": SecurityLevel.STANDARD,
      "fs.write": SecurityLevel.HIGH,
      exec: SecurityLevel.HIGH,
      ...options.securityLevels,
    },
    exec: {
      enabled: exec.enabled ?? false,
      envAllowList: [...(exec.envAllowList ?? ["PATH", "HOME", "LANG", "TERM"])],
      maxOutputBytes: positiveInteger("exec.maxOutputBytes", exec.maxOutputBytes ?? MIB),
      killGraceMs: nonNegativeInteger("exec.killGraceMs", exec.killGraceMs ?? 2000),
    },
  };
}

function positiveInteger(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value <= 0) throw new TypeError(`"${name}" option must be a positive integer`);
  return value;
}

function atMost(name: string, value: number, max: number): number {
  if (value > max) throw new TypeError(`"${name}" option must be at most ${max}`);
  return value;
}

function nonNegativeInteger(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 0) throw new TypeError(`"${name}" option must be a non-negative integer`);
  return value;
}
