/**
 * The `fs.read` tool: reads a UTF-8 text range of a file inside the workspace root, or — with
 * `binary`, or a text range beyond the cap on a call that streams — streams any byte range of any
 * size as chunks (docs/streams.md "Bytes and chunks").
 */
import { createHash } from "node:crypto";
import { open, type FileHandle } from "node:fs/promises";
import { FsReadInputSchema, FsReadOutputSchema } from "../../../gen/mcp/tools/v1/tools_pb.js";
import { McpError } from "../../errors.js";
import { defineTypedTool } from "../define-tool.js";
import type { RegisteredTool, ToolContext } from "../registered-tool.js";
import { resolveInRoot } from "../workspace.js";
import { fsError } from "./fs-errors.js";
import type { ResolvedBuiltinToolsOptions } from "./options.js";
import { completeUtf8Length } from "./utf8.js";

/**
 * Creates `fs.read`. A text range within `maxReadBytes` is answered as `content`; a longer one is
 * streamed as chunks (`chunked`) where the call carries them, else cut at the cap (`truncated`,
 * the rest via `next_offset`).
 */
export function createFsReadTool(options: ResolvedBuiltinToolsOptions): RegisteredTool {
  const { root, maxReadBytes, readChunkBytes } = options;
  return defineTypedTool({
    name: "fs.read",
    description:
      `Reads a text file (UTF-8) relative to the workspace root, from byte \`offset\`, at most \`length\` bytes ` +
      `(0 = to the end). Up to ${maxReadBytes} bytes come as \`content\`; a longer range comes as chunks on command.output ` +
      `events where the call streams (ExecuteStream, the session stream: \`chunked\` set, \`content\` empty), else it is ` +
      `cut there: \`truncated\` is set and you continue from \`next_offset\`. With \`binary\`, always streams the bytes as ` +
      `they are — any content, any size — in chunks; chunked output carries their sha256.`,
    input: FsReadInputSchema,
    output: FsReadOutputSchema,
    securityLevel: options.securityLevels["fs.read"],
    annotations: { readOnly: true, idempotent: true, streaming: true },
    async handler(input, ctx) {
      const file = await resolveInRoot(root, input.path);
      const offset = safeNumber(input.offset, "offset");
      const asked = input.length === 0n ? Number.MAX_SAFE_INTEGER : safeNumber(input.length, "length");
      const handle = await open(file, "r").catch((e: unknown) => {
        throw fsError(e, "path", input.path);
      });
      try {
        const stat = await handle.stat();
        if (!stat.isFile()) throw new McpError("invalid_argument", `path "${input.path}" is not a regular file`, { field: "path" });
        const size = stat.size;
        if (offset > size) {
          throw new McpError("invalid_argument", `offset ${offset} is past the end of the file (${size} bytes)`, { field: "offset" });
        }
        ctx.signal.throwIfAborted();
        const range = Math.min(asked, size - offset);
        if (input.binary) return await streamRange(handle, offset, range, size, readChunkBytes, ctx);
        // Text beyond the cap: whole as chunks where the call can carry them, cut at the cap where not.
        if (range > maxReadBytes && ctx.streamsChunks === true) return { ...(await streamRange(handle, offset, range, size, readChunkBytes, ctx)), chunked: true };
        const buffer = Buffer.alloc(Math.min(range, maxReadBytes));
        let filled = 0;
        // read() may return fewer bytes than asked; loop until the range is full or the file ends.
        while (filled < buffer.length) {
          const { bytesRead } = await handle.read(buffer, filled, buffer.length - filled, offset + filled);
          if (bytesRead === 0) break;
          filled += bytesRead;
          ctx.signal.throwIfAborted();
        }
        let end = filled;
        // Stop before a UTF-8 sequence cut by the range, so that reading on from next_offset
        // decodes it whole instead of two replacement characters.
        if (offset + filled < size) end = completeUtf8Length(buffer, filled);
        const nextOffset = offset + end;
        return {
          content: buffer.subarray(0, end).toString("utf8"),
          size: BigInt(size),
          nextOffset: BigInt(nextOffset),
          truncated: nextOffset < size,
        };
      } catch (e) {
        throw fsError(e, "path", input.path);
      } finally {
        await handle.close();
      }
    },
  });
}

/**
 * Streams `length` bytes from `offset` as chunks, one buffer per chunk (a chunk is referenced
 * until the transport sent it, so buffers are not reused). The next chunk is read while the
 * current one is hashed and handed on, and used only once that one's `writeChunk` resolved: the
 * file is read as fast as the client takes it, one chunk ahead. Read one after the other, the
 * server waited for the disk between chunks: a 256 MiB read went 293–354 → 319–449 MB/s
 * (bench/README.md, "December 4").
 */
async function streamRange(handle: FileHandle, offset: number, length: number, size: number, chunkBytes: number, ctx: ToolContext) {
  const write = ctx.writeChunk;
  if (write === undefined) throw new McpError("invalid_argument", "binary reads need a context that streams chunks", { field: "binary" });
  const hash = createHash("sha256");
  const totalSize = BigInt(length);
  const readAt = async (from: number): Promise<Buffer> => {
    const buffer = Buffer.allocUnsafe(Math.min(chunkBytes, length - from));
    let filled = 0;
    while (filled < buffer.length) {
      const { bytesRead } = await handle.read(buffer, filled, buffer.length - filled, offset + from + filled);
      if (bytesRead === 0) break; // the file shrank meanwhile: stream what there is
      filled += bytesRead;
    }
    return buffer.subarray(0, filled);
  };
  const readAhead = (from: number): Promise<Buffer> => {
    const p = readAt(from);
    // Handled now: it may fail while a write is awaited (still thrown when awaited), or never be
    // awaited when the write fails (the command was aborted).
    p.catch(() => {});
    return p;
  };
  let done = 0;
  let next: Promise<Buffer> | undefined = readAhead(0);
  while (next !== undefined) {
    const data: Buffer = await next;
    const requested = Math.min(chunkBytes, length - done);
    done += data.length;
    const last: boolean = data.length < requested || done >= length;
    next = last ? undefined : readAhead(done);
    hash.update(data);
    await write.call(ctx, data, last ? { last, totalSize: BigInt(done) } : done === data.length ? { totalSize } : undefined);
  }
  return { content: "", size: BigInt(size), nextOffset: BigInt(offset + done), truncated: offset + done < size, sha256: hash.digest("hex") };
}

function safeNumber(value: bigint, field: string): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new McpError("invalid_argument", `${field} is too large`, { field });
  return Number(value);
}
