/** The `fs.read` tool: reads a UTF-8 text range of a file inside the workspace root. */
import { open } from "node:fs/promises";
import { FsReadInputSchema, FsReadOutputSchema } from "../../../gen/mcp/tools/v1/tools_pb.js";
import { McpError } from "../../errors.js";
import { defineTypedTool } from "../define-tool.js";
import type { RegisteredTool } from "../registered-tool.js";
import { resolveInRoot } from "../workspace.js";
import { fsError } from "./fs-errors.js";
import type { ResolvedBuiltinToolsOptions } from "./options.js";

/** Creates `fs.read`; reads at most `maxReadBytes` per call (the rest via `next_offset`). */
export function createFsReadTool(options: ResolvedBuiltinToolsOptions): RegisteredTool {
  const { root, maxReadBytes } = options;
  return defineTypedTool({
    name: "fs.read",
    description:
      `Reads a text file (UTF-8) relative to the workspace root, from byte \`offset\`, at most \`length\` bytes ` +
      `(and at most ${maxReadBytes} per call). \`truncated\` is set when the file goes on; continue from \`next_offset\`.`,
    input: FsReadInputSchema,
    output: FsReadOutputSchema,
    securityLevel: options.securityLevels["fs.read"],
    annotations: { readOnly: true, idempotent: true },
    async handler(input, ctx) {
      const file = await resolveInRoot(root, input.path);
      const offset = safeNumber(input.offset, "offset");
      const wanted = input.length === 0n ? maxReadBytes : Math.min(safeNumber(input.length, "length"), maxReadBytes);
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
        const buffer = Buffer.alloc(Math.min(wanted, size - offset));
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

function safeNumber(value: bigint, field: string): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new McpError("invalid_argument", `${field} is too large`, { field });
  return Number(value);
}

/** The length of `buffer[0, length)` without a trailing incomplete UTF-8 sequence. */
function completeUtf8Length(buffer: Buffer, length: number): number {
  // A sequence is at most 4 bytes: look back at most 3 for its lead byte.
  for (let i = length - 1; i >= Math.max(0, length - 3); i--) {
    const byte = buffer[i] ?? 0;
    if ((byte & 0xc0) === 0x80) continue; // continuation byte: keep looking for the lead
    const needed = byte >= 0xf0 ? 4 : byte >= 0xe0 ? 3 : byte >= 0xc0 ? 2 : 1;
    return i + needed <= length ? length : i;
  }
  return length;
}
