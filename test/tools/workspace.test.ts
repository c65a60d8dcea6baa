import { mkdir, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { isInside, resolveInRoot, toRootRelative } from "../../src/tools/index.js";
import { makeWorkspace } from "./helpers.js";

let root = "";
let outside = "";
const cleanups: (() => Promise<void>)[] = [];

beforeAll(async () => {
  const ws = await makeWorkspace();
  const out = await makeWorkspace();
  root = ws.root;
  outside = out.root;
  cleanups.push(ws.cleanup, out.cleanup);
  await mkdir(path.join(root, "a"));
  await writeFile(path.join(root, "a", "b.txt"), "inside");
  await writeFile(path.join(root, "..foo"), "a name that starts with two dots");
  await writeFile(path.join(outside, "secret.txt"), "outside");
  await symlink(path.join("a", "b.txt"), path.join(root, "link-in"));
  await symlink(path.join(root, "a"), path.join(root, "dir-in"));
  await symlink(path.join(outside, "secret.txt"), path.join(root, "out-file"));
  await symlink(outside, path.join(root, "out-dir"));
  await symlink(path.join(outside, "missing.txt"), path.join(root, "dangling-out"));
  await symlink(path.join("a", "new.txt"), path.join(root, "dangling-in"));
});

afterAll(async () => {
  for (const cleanup of cleanups) await cleanup();
});

describe("resolveInRoot refuses", () => {
  const refused: { name: string; path: string; code: string; field?: string }[] = [
    // `..` climbing out, directly or after descending
    { name: "parent directory", path: "..", code: "permission_denied" },
    { name: "climb after descending", path: "a/../../x", code: "permission_denied" },
    { name: "sibling of the root", path: "../other/file", code: "permission_denied" },
    // absolute paths are never accepted, even when they point inside the root
    { name: "absolute outside", path: "/etc/passwd", code: "permission_denied" },
    // NUL bytes would be cut by the OS and name another file
    { name: "NUL byte", path: "a/b.txt\0.png", code: "invalid_argument", field: "path" },
    // symlinks leading out: to a file, to a directory, through a directory, dangling
    { name: "symlink to a file outside", path: "out-file", code: "permission_denied" },
    { name: "symlink to a directory outside", path: "out-dir", code: "permission_denied" },
    { name: "existing file under a symlinked directory outside", path: "out-dir/secret.txt", code: "permission_denied" },
    { name: "new file under a symlinked directory outside", path: "out-dir/new/file.txt", code: "permission_denied" },
    { name: "dangling symlink whose target is outside", path: "dangling-out", code: "permission_denied" },
  ];
  for (const { name, path: userPath, code, field } of refused) {
    test(`${name}: ${JSON.stringify(userPath)} -> ${code}`, async () => {
      const want = field === undefined ? { code } : { code, details: { field } };
      await expect(resolveInRoot(root, userPath)).rejects.toMatchObject(want);
    });
  }

  test("absolute path pointing inside the root is still refused", async () => {
    await expect(resolveInRoot(root, path.join(root, "a", "b.txt"))).rejects.toMatchObject({ code: "permission_denied", kind: "SECURITY" });
  });

  test("the field named in errors follows options.field", async () => {
    await expect(resolveInRoot(root, "x\0", { field: "cwd" })).rejects.toMatchObject({ code: "invalid_argument", details: { field: "cwd" } });
  });

  test("messages carry the user's path, never contents", async () => {
    await expect(resolveInRoot(root, "out-file")).rejects.toMatchObject({ message: 'path "out-file" resolves outside the workspace root' });
  });
});

describe("resolveInRoot accepts", () => {
  const accepted: { path: string; want: string[] }[] = [
    { path: "", want: [] },
    { path: ".", want: [] },
    { path: "a/b.txt", want: ["a", "b.txt"] },
    { path: "a/../a/b.txt", want: ["a", "b.txt"] },
    { path: "..foo", want: ["..foo"] },
    // missing files and parents resolve under their nearest existing ancestor
    { path: "new/deep/file.txt", want: ["new", "deep", "file.txt"] },
    // links inside the root resolve to their targets
    { path: "link-in", want: ["a", "b.txt"] },
    { path: "dir-in/b.txt", want: ["a", "b.txt"] },
    { path: "dangling-in", want: ["a", "new.txt"] },
  ];
  for (const { path: userPath, want } of accepted) {
    test(JSON.stringify(userPath), async () => {
      expect(await resolveInRoot(root, userPath)).toBe(path.join(root, ...want));
    });
  }
});

describe("helpers", () => {
  const cases: { candidate: string; want: boolean }[] = [
    { candidate: "/r", want: true },
    { candidate: "/r/a", want: true },
    { candidate: "/r/..a", want: true },
    { candidate: "/ra", want: false },
    { candidate: "/", want: false },
  ];
  for (const { candidate, want } of cases) {
    test(`isInside("/r", ${candidate}) -> ${want}`, () => {
      expect(isInside("/r", candidate)).toBe(want);
    });
  }

  test("toRootRelative uses / separators", () => {
    expect(toRootRelative("/r", path.join("/r", "a", "b"))).toBe("a/b");
  });
});
