import { mkdir, readdir, readFile, stat, symlink, writeFile, chmod } from "node:fs/promises";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { FsWriteInputSchema, FsWriteOutputSchema } from "../../../gen/mcp/tools/v1/tools_pb.js";
import { createBuiltinTools, type RegisteredTool } from "../../../src/tools/index.js";
import { jsonCommand, makeContext, makeWorkspace, runJson, runTyped } from "../helpers.js";

let root = "";
let outside = "";
const cleanups: (() => Promise<void>)[] = [];
let write: RegisteredTool;

beforeEach(async () => {
  const ws = await makeWorkspace();
  const out = await makeWorkspace();
  root = ws.root;
  outside = out.root;
  cleanups.push(ws.cleanup, out.cleanup);
  write = createBuiltinTools({ root }).find((t) => t.name === "fs.write") as RegisteredTool;
});
afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) await cleanup();
});

describe("fs.write", () => {
  test("creates a file and reports bytes written", async () => {
    expect(await runJson(write, { path: "new.txt", content: "héllo" })).toEqual({ bytesWritten: "6" });
    expect(await readFile(path.join(root, "new.txt"), "utf8")).toBe("héllo");
  });

  test("replaces content atomically: no temporary file is left, permissions are kept", async () => {
    const file = path.join(root, "keep.sh");
    await writeFile(file, "old content that is longer");
    await chmod(file, 0o750);
    const out = await runTyped(write, FsWriteInputSchema, { path: "keep.sh", content: "new" }, FsWriteOutputSchema);
    expect(out.bytesWritten).toBe(3n);
    expect(await readFile(file, "utf8")).toBe("new");
    expect((await stat(file)).mode & 0o777).toBe(0o750);
    expect(await readdir(root)).toEqual(["keep.sh"]);
  });

  test("create_parents makes missing directories", async () => {
    await runJson(write, { path: "a/b/c.txt", content: "x", create_parents: true });
    expect(await readFile(path.join(root, "a", "b", "c.txt"), "utf8")).toBe("x");
  });

  test("writing through a symlink inside the root replaces the target, keeps the link", async () => {
    await writeFile(path.join(root, "target.txt"), "old");
    await symlink("target.txt", path.join(root, "link.txt"));
    await runJson(write, { path: "link.txt", content: "new" });
    expect(await readFile(path.join(root, "target.txt"), "utf8")).toBe("new");
    expect((await readdir(root)).sort()).toEqual(["link.txt", "target.txt"]);
  });

  // Nothing may be written outside the root, whichever way the path gets there.
  const refused: { name: string; setup?: () => Promise<void>; args: { path: string; content: string; createParents?: boolean }; code: string; field?: string }[] = [
    { name: "parent directory escape", args: { path: "../evil.txt", content: "x" }, code: "permission_denied" },
    { name: "absolute path", args: { path: "/tmp/evil.txt", content: "x" }, code: "permission_denied" },
    { name: "NUL byte", args: { path: "a\0b", content: "x" }, code: "invalid_argument", field: "path" },
    {
      name: "symlinked parent directory pointing outside",
      setup: () => symlink(outside, path.join(root, "linked")),
      args: { path: "linked/evil.txt", content: "x" },
      code: "permission_denied",
    },
    {
      name: "symlinked parent with create_parents",
      setup: () => symlink(outside, path.join(root, "linked")),
      args: { path: "linked/sub/evil.txt", content: "x", createParents: true },
      code: "permission_denied",
    },
    {
      name: "dangling symlink pointing outside",
      setup: () => symlink(path.join(outside, "evil.txt"), path.join(root, "dangling")),
      args: { path: "dangling", content: "x" },
      code: "permission_denied",
    },
    { name: "missing parent without create_parents", args: { path: "no/such/dir.txt", content: "x" }, code: "invalid_argument", field: "path" },
    { name: "a directory", setup: () => mkdir(path.join(root, "dir")), args: { path: "dir", content: "x" }, code: "invalid_argument", field: "path" },
    { name: "the root itself", args: { path: "", content: "x" }, code: "invalid_argument", field: "path" },
  ];
  for (const { name, setup, args, code, field } of refused) {
    test(`${name} -> ${code}`, async () => {
      await setup?.();
      await expect(write.run(jsonCommand("fs.write", args), makeContext().ctx)).rejects.toMatchObject(field === undefined ? { code } : { code, details: { field } });
      expect(await readdir(outside)).toEqual([]);
    });
  }

  test("an already aborted write rejects with the reason and writes nothing", async () => {
    const controller = new AbortController();
    const reason = new Error("stop");
    controller.abort(reason);
    await expect(write.run(jsonCommand("fs.write", { path: "x.txt", content: "x" }), makeContext(controller.signal).ctx)).rejects.toBe(reason);
    expect(await readdir(root)).toEqual([]);
  });
});
