/**
 * The `fs.write` tool: writes a text file atomically (temporary file in the same directory, then
 * rename) — or, with `chunked`, any bytes uploaded as CommandInput chunks on the session stream,
 * the same way (docs/streams.md "Bytes and chunks").
 */
import { createHash, randomUUID } from "node:crypto";
import { mkdir, open, rename, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { FsWriteInputSchema, FsWriteOutputSchema } from "../../../gen/mcp/tools/v1/tools_pb.js";
import { McpError } from "../../errors.js";
import { defineTypedTool } from "../define-tool.js";
import type { RegisteredTool, ToolContext } from "../registered-tool.js";
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
      "or the new content, never a mix. Set `create_parents` to create missing directories. With `chunked`, the " +
      "content (any bytes, any size) arrives as CommandInput chunks on the session stream after the command.",
    input: FsWriteInputSchema,
    output: FsWriteOutputSchema,
    securityLevel: options.securityLevels["fs.write"],
    annotations: { destructive: true, idempotent: true },
    async handler(input, ctx) {
      if (input.path === "" || input.path === ".") {
        throw new McpError("invalid_argument", "path must name a file", { field: "path" });
      }
      if (input.chunked && input.content !== "") {
        throw new McpError("invalid_argument", "content must be empty with chunked: the bytes come as CommandInput chunks", { field: "content" });
      }
      // Asked before touching the disk: a call that cannot carry input fails at once.
      const chunks = input.chunked ? inputOf(ctx) : undefined;
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
          const mode = existing === undefined ? 0o666 : existing.mode & 0o7777;
          let written: { bytesWritten: bigint; sha256?: string };
          if (chunks === undefined) {
            await writeFile(temp, input.content, { encoding: "utf8", flag: "wx", signal: ctx.signal, mode });
            written = { bytesWritten: BigInt(Buffer.byteLength(input.content, "utf8")) };
          } else {
            written = await writeChunks(temp, mode, chunks, input.totalSize);
          }
          ctx.signal.throwIfAborted();
          await rename(temp, file);
          renamed = true;
          return written;
        } finally {
          // Aborted or failed: leave no temporary file behind.
          if (!renamed) await rm(temp, { force: true });
        }
      } catch (e) {
        throw fsError(e, "path", input.path);
      }
    },
  });
}

function inputOf(ctx: ToolContext): AsyncIterable<Uint8Array> {
  if (ctx.readChunks === undefined) throw new McpError("invalid_argument", "chunked writes need a context that carries input", { field: "chunked" });
  return ctx.readChunks();
}

/**
 * Appends each uploaded chunk to `temp` as it comes: one chunk in memory at a time (the input
 * window bounds what waits), the size checked against `totalSize` as soon as it is passed.
 */
async function writeChunks(temp: string, mode: number, chunks: AsyncIterable<Uint8Array>, totalSize: bigint | undefined) {
  const handle = await open(temp, "wx", mode);
  const hash = createHash("sha256");
  let n = 0;
  try {
    for await (const data of chunks) {
      n += data.length;
      if (totalSize !== undefined && BigInt(n) > totalSize) {
        throw new McpError("invalid_argument", `the upload is longer than total_size ${totalSize}`, { field: "total_size" });
      }
      hash.update(data);
      let off = 0;
      while (off < data.length) off += (await handle.write(data, off, data.length - off)).bytesWritten;
    }
    if (totalSize !== undefined && BigInt(n) !== totalSize) {
      throw new McpError("invalid_argument", `the upload has ${n} bytes, total_size said ${totalSize}`, { field: "total_size" });
    }
  } finally {
    await handle.close();
  }
  return { bytesWritten: BigInt(n), sha256: hash.digest("hex") };
}
