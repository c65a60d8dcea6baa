/** What the chunk tests share: an upload tool at STANDARD, a tool that only waits, and byte helpers. */
import { createHash } from "node:crypto";
import { SecurityLevel } from "../../gen/mcp/v1/types_pb.js";
import { createBuiltinTools, defineJsonTool, type RegisteredTool } from "../../src/tools/index.js";

/**
 * fs.write needs HIGH (TLS) by default; the uploads in tests run the real fs.write at STANDARD
 * under another name over cleartext loopback — the same code, only the level differs.
 */
export function uploadTool(dir: string): RegisteredTool {
  const w = createBuiltinTools({ root: dir, securityLevels: { "fs.write": SecurityLevel.STANDARD } }).find((x) => x.name === "fs.write")!;
  return { ...w, name: "test.write", descriptor: { ...w.descriptor, name: "test.write" }, permission: "tool:test.write" };
}

/** Runs until aborted and never reads its input: an upload to it stops at the input window. */
export const holdTool = defineJsonTool({
  name: "test.hold",
  description: "waits for its abort",
  inputSchema: { type: "object" },
  handler: (_input, ctx) => new Promise((_resolve, reject) => ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason), { once: true })),
});

export const sha = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");

/** Every chunk of `chunks`, in one buffer. */
export async function collect(chunks: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const c of chunks) parts.push(c);
  return Buffer.concat(parts);
}
