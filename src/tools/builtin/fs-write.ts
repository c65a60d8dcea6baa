/** The `fs.write` tool: writes a text file atomically (temporary file in the same directory, then rename). */
import { randomUUID } from "node:crypto";
import { mkdir, rename, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { FsWriteInputSchema, FsWriteOutputSchema } from "../../../gen/mcp/tools/v1/tools_pb.js";
import { McpError } from "../../errors.js";
import { defineTypedTool } from "../define-tool.js";
import type { RegisteredTool } from "../registered-tool.js";
import { resolveInRoot } from "../workspace.js";
import { fsError } from "./fs-errors.js";
import type { ResolvedBuiltinToolsOptions } from "./options.js";

/** Creates `fs.write`. */
export function createFsWriteTool(options: ResolvedBuiltinToolsOptions): RegisteredTool {
  const { root } = options;
  return defineTypedTool({
    name: "fs.write",
    description:
      "Writes a text file (UTF-8) relative to the workspace root, replacing it atomically: readers see the old " +
      "or the new content, never a mix. Set `create_parents` to create missing directories.",
    input: FsWriteInputSchema,
    output: FsWriteOutputSchema,
    securityLevel: options.securityLevels["fs.write"],
    annotations: { destructive: true, idempotent: true },
    async handler(input, ctx) {
      if (input.path === "" || input.path === ".") {
        throw new McpError("invalid_argument", "path must name a file", { field: "path" });
      }
      // Resolved through symlinks: writing a link inside the root replaces its target's content.
      const file = await resolveInRoot(root, input.path);
      const dir = path.dirname(file);
      try {
        if (input.createParents) {
          // `dir` is the real path of an existing ancestor inside the root plus plain names.
          await mkdir(dir, { recursive: true });
        }
        const existing = await stat(file).catch((e: unknown) => {
          if (e instanceof Error && "code" in e && e.code === "ENOENT") return undefined;
          throw e;
        });
        if (existing?.isDirectory() === true) throw new McpError("invalid_argument", `path "${input.path}" is a directory`, { field: "path" });
        const parent = await stat(dir).catch(() => undefined);
        if (parent === undefined) {
          throw new McpError("invalid_argument", `the directory of "${input.path}" does not exist (set create_parents)`, { field: "path" });
        }
        const temp = path.join(dir, `.${path.basename(file)}.${randomUUID()}.tmp`);
        let renamed = false;
        try {
          // Keep an existing file's permissions. `wx`: never clobber a file that happens to have the temporary name.
          await writeFile(temp, input.content, { encoding: "utf8", flag: "wx", signal: ctx.signal, mode: existing === undefined ? 0o666 : existing.mode & 0o7777 });
          ctx.signal.throwIfAborted();
          await rename(temp, file);
          renamed = true;
        } finally {
          // Aborted or failed: leave no temporary file behind.
          if (!renamed) await rm(temp, { force: true });
        }
        return { bytesWritten: BigInt(Buffer.byteLength(input.content, "utf8")) };
      } catch (e) {
        throw fsError(e, "path", input.path);
      }
    },
  });
}
