/** The `fs.list` tool: lists a directory (optionally recursively) in pages, in a stable order. */
import type { Dirent } from "node:fs";
import { lstat, readdir } from "node:fs/promises";
import path from "node:path";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { FsListInputSchema, FsListOutputSchema, type FsEntrySchema } from "../../../gen/mcp/tools/v1/tools_pb.js";
import { McpError } from "../../errors.js";
import { defineTypedTool } from "../define-tool.js";
import type { RegisteredTool } from "../registered-tool.js";
import { resolveInRoot, toRootRelative } from "../workspace.js";
import { fsError } from "./fs-errors.js";
import type { ResolvedBuiltinToolsOptions } from "./options.js";

type Entry = MessageInitShape<typeof FsEntrySchema>;

/**
 * What a page token holds. It resumes *after* the last entry shown rather than at a count, so
 * files created or deleted between pages neither repeat nor skip the others.
 */
interface PageToken {
  v: 1;
  /** The listed directory (root-relative), so a token is not replayed against another listing. */
  dir: string;
  recursive: boolean;
  /** Path segments, relative to the listed directory, of the last entry returned. */
  after: string[];
}

/** Creates `fs.list`. */
export function createFsListTool(options: ResolvedBuiltinToolsOptions): RegisteredTool {
  const { root, listPageSize } = options;
  return defineTypedTool({
    name: "fs.list",
    description:
      "Lists a directory relative to the workspace root (\"\" = the root), optionally recursively, in a stable " +
      `order (depth first, names sorted). Pages hold up to ${listPageSize} entries; pass \`next_page_token\` back as ` +
      "`page_token` for the next one. Symbolic links are listed, not followed.",
    input: FsListInputSchema,
    output: FsListOutputSchema,
    securityLevel: options.securityLevels["fs.list"],
    annotations: { readOnly: true, idempotent: true },
    async handler(input, ctx) {
      const realRoot = await resolveInRoot(root, "");
      const dir = await resolveInRoot(root, input.path);
      const dirRel = toRootRelative(realRoot, dir);
      const pageSize = input.pageSize === 0 ? listPageSize : Math.min(input.pageSize, listPageSize);
      const after = input.pageToken === "" ? [] : decodeToken(input.pageToken, dirRel, input.recursive).after;

      const entries: Entry[] = [];
      let more = false;
      // Depth-first with sorted names is the same order as comparing segment lists, which is
      // what lets a token skip whole subtrees already shown.
      async function walk(abs: string, segments: string[]): Promise<void> {
        ctx.signal.throwIfAborted();
        const children = await readdir(abs, { withFileTypes: true });
        children.sort((a, b) => compareStrings(a.name, b.name));
        for (const child of children) {
          if (more) return;
          const childSegments = [...segments, child.name];
          const order = compareSegments(childSegments, after);
          if (order > 0) {
            if (entries.length === pageSize) {
              more = true;
              return;
            }
            entries.push(await describe(realRoot, path.join(abs, child.name), child));
          }
          // Descend into new directories, the one shown last (order 0: its children are still to
          // come) and the ones holding the last entry shown; skip subtrees wholly before it.
          if (input.recursive && child.isDirectory() && (order >= 0 || isPrefix(childSegments, after))) {
            await walk(path.join(abs, child.name), childSegments);
          }
        }
      }
      try {
        await walk(dir, []);
      } catch (e) {
        throw fsError(e, "path", input.path);
      }
      const last = entries.at(-1);
      const nextPageToken =
        more && last?.path !== undefined
          ? encodeToken({ v: 1, dir: dirRel, recursive: input.recursive, after: lastSegments(dirRel, last.path) })
          : "";
      return { entries, nextPageToken };
    },
  });
}

async function describe(realRoot: string, abs: string, dirent: Dirent): Promise<Entry> {
  const rel = toRootRelative(realRoot, abs);
  if (dirent.isFile()) return { path: rel, type: "file", size: BigInt((await lstat(abs)).size) };
  if (dirent.isDirectory()) return { path: rel, type: "directory", size: 0n };
  if (dirent.isSymbolicLink()) return { path: rel, type: "symlink", size: 0n };
  return { path: rel, type: "other", size: 0n };
}

function lastSegments(dirRel: string, entryPath: string): string[] {
  const rel = dirRel === "" ? entryPath : entryPath.slice(dirRel.length + 1);
  return rel.split("/");
}

// Code-unit order: unlike localeCompare it does not depend on the server's locale.
function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function compareSegments(a: readonly string[], b: readonly string[]): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const order = compareStrings(a[i] ?? "", b[i] ?? "");
    if (order !== 0) return order;
  }
  return a.length - b.length;
}

function isPrefix(prefix: readonly string[], of: readonly string[]): boolean {
  return prefix.length < of.length && prefix.every((s, i) => s === of[i]);
}

function encodeToken(token: PageToken): string {
  return Buffer.from(JSON.stringify(token), "utf8").toString("base64url");
}

function decodeToken(text: string, dir: string, recursive: boolean): PageToken {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(text, "base64url").toString("utf8"));
  } catch {
    value = undefined;
  }
  if (!isPageToken(value)) throw new McpError("invalid_argument", "page_token is not a token from fs.list", { field: "page_token" });
  if (value.dir !== dir || value.recursive !== recursive) {
    throw new McpError("invalid_argument", "page_token belongs to a different listing (path or recursive changed)", { field: "page_token" });
  }
  return value;
}

function isPageToken(value: unknown): value is PageToken {
  if (typeof value !== "object" || value === null) return false;
  const v: Record<string, unknown> = { ...value };
  return (
    v["v"] === 1 &&
    typeof v["dir"] === "string" &&
    typeof v["recursive"] === "boolean" &&
    Array.isArray(v["after"]) &&
    v["after"].length > 0 &&
    v["after"].every((s) => typeof s === "string")
  );
}
