/** The `fs.search` tool: a regular expression over the lines of the text files under a directory. */
import { lstat, readdir, readFile } from "node:fs/promises";
import path from "node:path";
import type { MessageInitShape } from "@bufbuild/protobuf";
import picomatch from "picomatch";
import { FsSearchInputSchema, FsSearchOutputSchema, type FsSearchMatchSchema } from "../../../gen/mcp/tools/v1/tools_pb.js";
import { McpError } from "../../errors.js";
import { defineTypedTool } from "../define-tool.js";
import type { RegisteredTool } from "../registered-tool.js";
import { resolveInRoot, toRootRelative } from "../workspace.js";
import { fsError } from "./fs-errors.js";
import type { ResolvedBuiltinToolsOptions } from "./options.js";

type Match = MessageInitShape<typeof FsSearchMatchSchema>;

/** Longest line text returned per match, in UTF-16 code units. */
const MAX_LINE_CHARS = 500;
/** Bytes inspected for a NUL to decide a file is binary (git's heuristic uses the same 8000). */
const BINARY_SNIFF_BYTES = 8000;

/** Creates `fs.search`. */
export function createFsSearchTool(options: ResolvedBuiltinToolsOptions): RegisteredTool {
  const { root, maxSearchResults, maxSearchFileBytes } = options;
  const skipDirs = new Set(options.searchSkipDirs);
  return defineTypedTool({
    name: "fs.search",
    description:
      "Searches the text files under a directory (relative to the workspace root) for a JavaScript regular " +
      "expression, line by line. `include`/`exclude` are globs relative to `path` (e.g. `**/*.ts`). Binary files, " +
      `symbolic links and ${[...skipDirs].join(", ") || "no"} directories are skipped. At most ${maxSearchResults} ` +
      "matches (one per line); `truncated` says the search stopped early.",
    input: FsSearchInputSchema,
    output: FsSearchOutputSchema,
    securityLevel: options.securityLevels["fs.search"],
    annotations: { readOnly: true, idempotent: true },
    async handler(input, ctx) {
      if (input.pattern === "") throw new McpError("invalid_argument", "pattern must not be empty", { field: "pattern" });
      let regex: RegExp;
      try {
        regex = new RegExp(input.pattern, input.caseInsensitive ? "i" : "");
      } catch (e) {
        throw new McpError("invalid_argument", `pattern is not a valid regular expression: ${e instanceof Error ? e.message : String(e)}`, {
          field: "pattern",
          cause: e,
        });
      }
      const include = input.include.length === 0 ? undefined : picomatch(input.include, { dot: true });
      const exclude = input.exclude.length === 0 ? undefined : picomatch(input.exclude, { dot: true });
      const limit = input.maxResults === 0 ? maxSearchResults : Math.min(input.maxResults, maxSearchResults);

      const realRoot = await resolveInRoot(root, "");
      const base = await resolveInRoot(root, input.path);
      const matches: Match[] = [];
      let truncated = false;
      let filesSearched = 0;

      async function searchFile(abs: string): Promise<void> {
        const size = (await lstat(abs)).size;
        if (size > maxSearchFileBytes) return;
        const bytes = await readFile(abs, { signal: ctx.signal });
        if (bytes.subarray(0, BINARY_SNIFF_BYTES).includes(0)) return;
        filesSearched++;
        const shown = toRootRelative(realRoot, abs);
        const lines = bytes.toString("utf8").split(/\r?\n/);
        for (let i = 0; i < lines.length; i++) {
          const line = lines[i] ?? "";
          const found = regex.exec(line);
          if (found === null) continue;
          if (matches.length === limit) {
            truncated = true;
            return;
          }
          matches.push({ path: shown, line: i + 1, column: found.index + 1, text: line.slice(0, MAX_LINE_CHARS) });
        }
      }

      async function walk(abs: string, rel: string): Promise<void> {
        ctx.signal.throwIfAborted();
        const children = await readdir(abs, { withFileTypes: true });
        // Sorted so that which matches a capped search returns does not depend on the file system.
        children.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
        for (const child of children) {
          if (truncated) return;
          const childRel = rel === "" ? child.name : `${rel}/${child.name}`;
          const childAbs = path.join(abs, child.name);
          if (child.isDirectory()) {
            if (skipDirs.has(child.name) || exclude?.(childRel) === true) continue;
            await walk(childAbs, childRel);
          } else if (child.isFile()) {
            if (include !== undefined && !include(childRel)) continue;
            if (exclude?.(childRel) === true) continue;
            await searchFile(childAbs);
          }
          // Symbolic links are not followed: their targets may lie outside the root.
        }
      }

      try {
        const stat = await lstat(base);
        if (stat.isFile()) {
          await searchFile(base);
        } else {
          await walk(base, "");
        }
      } catch (e) {
        throw fsError(e, "path", input.path);
      }
      return { matches, truncated, filesSearched };
    },
  });
}
