import { open, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test, vi } from "vitest";
import { FsReadInputSchema, FsReadOutputSchema } from "../../../gen/mcp/tools/v1/tools_pb.js";
import { createBuiltinTools, type RegisteredTool } from "../../../src/tools/index.js";
import { jsonCommand, makeContext, makeWorkspace, runJson, runTyped } from "../helpers.js";

let root = "";
let cleanup = async (): Promise<void> => {};
let read: RegisteredTool;

beforeAll(async () => {
  ({ root, cleanup } = await makeWorkspace());
  await writeFile(path.join(root, "digits.txt"), "0123456789");
  await writeFile(path.join(root, "utf8.txt"), "aé€😀"); // 1 + 2 + 3 + 4 bytes
  const tools = createBuiltinTools({ root, maxReadBytes: 8 });
  read = tools.find((t) => t.name === "fs.read") as RegisteredTool;
});
afterAll(() => cleanup());

describe("fs.read", () => {
  // maxReadBytes is 8 here, so a whole read of the 10-byte file stops early.
  const ranges: { name: string; args: { path: string; offset?: number; length?: number }; want: { content: string; size: string; nextOffset: string; truncated: boolean } }[] = [
    { name: "capped at maxReadBytes", args: { path: "digits.txt" }, want: { content: "01234567", size: "10", nextOffset: "8", truncated: true } },
    { name: "continue from next_offset", args: { path: "digits.txt", offset: 8 }, want: { content: "89", size: "10", nextOffset: "10", truncated: false } },
    { name: "offset and length", args: { path: "digits.txt", offset: 2, length: 3 }, want: { content: "234", size: "10", nextOffset: "5", truncated: true } },
    { name: "length beyond the cap is capped", args: { path: "digits.txt", offset: 1, length: 100 }, want: { content: "12345678", size: "10", nextOffset: "9", truncated: true } },
    { name: "at end of file", args: { path: "digits.txt", offset: 10 }, want: { content: "", size: "10", nextOffset: "10", truncated: false } },
    // a cut UTF-8 sequence is left for the next read instead of being mangled
    { name: "stops before a cut character", args: { path: "utf8.txt", length: 5 }, want: { content: "aé", size: "10", nextOffset: "3", truncated: true } },
    { name: "resumes at the whole character", args: { path: "utf8.txt", offset: 3 }, want: { content: "€😀", size: "10", nextOffset: "10", truncated: false } },
  ];
  for (const { name, args, want } of ranges) {
    test(name, async () => {
      expect(await runJson(read, args)).toEqual(want);
    });
  }

  test("typed input gives the same result", async () => {
    const out = await runTyped(read, FsReadInputSchema, { path: "digits.txt", offset: 2n, length: 3n }, FsReadOutputSchema);
    expect(out).toMatchObject({ content: "234", size: 10n, nextOffset: 5n, truncated: true });
  });

  test("beyond the cap in a context that streams chunks: the whole range as chunks, chunked set, no content", async () => {
    const chunks: Uint8Array[] = [];
    const ctx = { ...makeContext().ctx, streamsChunks: true, writeChunk: (data: Uint8Array) => (chunks.push(Buffer.from(data)), Promise.resolve()) };
    expect(await runJson(read, { path: "digits.txt", offset: 1 }, ctx)).toMatchObject({ content: "", nextOffset: "10", truncated: false, chunked: true });
    expect(Buffer.concat(chunks).toString()).toBe("123456789");
    // Within the cap the same context gets content: chunks only where text would be cut.
    expect(await runJson(read, { path: "digits.txt", offset: 2 }, ctx)).toEqual({ content: "23456789", size: "10", nextOffset: "10", truncated: false });
  });

  const failures: { name: string; args: { path: string; offset?: number }; code: string; field?: string }[] = [
    { name: "missing file", args: { path: "nope.txt" }, code: "invalid_argument", field: "path" },
    { name: "a directory", args: { path: "" }, code: "invalid_argument", field: "path" },
    { name: "offset past the end", args: { path: "digits.txt", offset: 11 }, code: "invalid_argument", field: "offset" },
    { name: "escaping the root", args: { path: "../x" }, code: "permission_denied" },
  ];
  for (const { name, args, code, field } of failures) {
    test(`${name} -> ${code}`, async () => {
      await expect(read.run(jsonCommand("fs.read", args), makeContext().ctx)).rejects.toMatchObject(field === undefined ? { code } : { code, details: { field } });
    });
  }
});

describe("fs.read binary, reading one chunk ahead", () => {
  test("a read that fails while the chunk before it is being written fails the command (tool_failed), nothing unhandled", async () => {
    const { root: dir, cleanup: done } = await makeWorkspace();
    try {
      await writeFile(path.join(dir, "big.bin"), Buffer.alloc(40_000, 1));
      const tool = createBuiltinTools({ root: dir, readChunkBytes: 16_384 }).find((t) => t.name === "fs.read") as RegisteredTool;
      // The second read (the one ahead of the first chunk's write) fails, as a disk error would.
      const probe = await open(path.join(dir, "big.bin"), "r");
      const proto = Object.getPrototypeOf(probe) as { read: (...args: unknown[]) => Promise<unknown> };
      await probe.close();
      const realRead = proto.read;
      let reads = 0;
      const spy = vi.spyOn(proto, "read").mockImplementation(function (this: unknown, ...args: unknown[]) {
        if (++reads === 2) return Promise.reject(Object.assign(new Error("EIO: i/o error, read"), { code: "EIO" }));
        return realRead.apply(this, args);
      });
      const unhandled: unknown[] = [];
      const onUnhandled = (reason: unknown) => unhandled.push(reason);
      process.on("unhandledRejection", onUnhandled);
      const written: number[] = [];
      try {
        const { ctx } = makeContext();
        // Each write takes a while: the failing read settles meanwhile.
        const slowCtx = { ...ctx, writeChunk: (data: Uint8Array) => new Promise<void>((resolve) => setTimeout(() => (written.push(data.length), resolve()), 50)) };
        await expect(tool.run(jsonCommand("fs.read", { path: "big.bin", binary: true }), slowCtx)).rejects.toMatchObject({ code: "tool_failed" });
        await new Promise((resolve) => setTimeout(resolve, 20));
      } finally {
        spy.mockRestore();
        process.off("unhandledRejection", onUnhandled);
      }
      expect(written).toEqual([16_384]);
      expect(unhandled).toEqual([]);
    } finally {
      await done();
    }
  });
});
