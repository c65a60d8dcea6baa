import { mkdir, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import type { JsonObject } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { createBuiltinTools, type RegisteredTool } from "../../../src/tools/index.js";
import { jsonCommand, makeContext, makeWorkspace, runJson } from "../helpers.js";

let root = "";
let outside = "";
const cleanups: (() => Promise<void>)[] = [];
let list: RegisteredTool;

// Depth first, names in code-unit order: "B" < "a" < "a-b" and a directory's children follow it.
const RECURSIVE = [
  "B.txt file 1",
  "a directory 0",
  "a/x.txt file 2",
  "a/y directory 0",
  "a/y/z.txt file 3",
  "a-b.txt file 4",
  "empty directory 0",
  "link symlink 0",
];

beforeAll(async () => {
  const ws = await makeWorkspace();
  const out = await makeWorkspace();
  root = ws.root;
  outside = out.root;
  cleanups.push(ws.cleanup, out.cleanup);
  await mkdir(path.join(root, "a", "y"), { recursive: true });
  await mkdir(path.join(root, "empty"));
  await writeFile(path.join(root, "B.txt"), "1");
  await writeFile(path.join(root, "a", "x.txt"), "22");
  await writeFile(path.join(root, "a", "y", "z.txt"), "333");
  await writeFile(path.join(root, "a-b.txt"), "4444");
  await writeFile(path.join(outside, "secret.txt"), "s");
  // A link to a directory outside: listed, never followed.
  await symlink(outside, path.join(root, "link"));
  list = createBuiltinTools({ root, listPageSize: 3 }).find((t) => t.name === "fs.list") as RegisteredTool;
});
afterAll(async () => {
  for (const cleanup of cleanups) await cleanup();
});

function show(output: JsonObject): string[] {
  return (output["entries"] as JsonObject[]).map((e) => `${String(e["path"])} ${String(e["type"])} ${String(e["size"])}`);
}

async function allPages(args: JsonObject): Promise<{ pages: string[][]; entries: string[] }> {
  const pages: string[][] = [];
  let token = "";
  do {
    const out = await runJson(list, { ...args, pageToken: token });
    pages.push(show(out));
    token = String(out["nextPageToken"]);
  } while (token !== "");
  return { pages, entries: pages.flat() };
}

describe("fs.list", () => {
  test("non-recursive lists one level, sorted", async () => {
    const { entries } = await allPages({ path: "" });
    expect(entries).toEqual(["B.txt file 1", "a directory 0", "a-b.txt file 4", "empty directory 0", "link symlink 0"]);
  });

  // listPageSize is 3: the page size asked for is capped by it.
  const pagings: { name: string; args: JsonObject; pageSizes: number[] }[] = [
    { name: "server page size", args: { recursive: true }, pageSizes: [3, 3, 2] },
    { name: "smaller page size", args: { recursive: true, pageSize: 2 }, pageSizes: [2, 2, 2, 2] },
    { name: "page size above the cap", args: { recursive: true, pageSize: 50 }, pageSizes: [3, 3, 2] },
    { name: "page size 1", args: { recursive: true, pageSize: 1 }, pageSizes: [1, 1, 1, 1, 1, 1, 1, 1] },
  ];
  for (const { name, args, pageSizes } of pagings) {
    test(`recursive paging with ${name} returns every entry once, in order`, async () => {
      const { pages, entries } = await allPages(args);
      expect(pages.map((p) => p.length)).toEqual(pageSizes);
      expect(entries).toEqual(RECURSIVE);
    });
  }

  test("a subdirectory lists paths relative to the root", async () => {
    const { entries } = await allPages({ path: "a", recursive: true });
    expect(entries).toEqual(["a/x.txt file 2", "a/y directory 0", "a/y/z.txt file 3"]);
  });

  test("entries created between pages neither repeat nor shift the rest", async () => {
    const { root: dir, cleanup } = await makeWorkspace();
    try {
      for (const name of ["b", "d", "f", "h"]) await writeFile(path.join(dir, name), "");
      const tool = createBuiltinTools({ root: dir, listPageSize: 2 }).find((t) => t.name === "fs.list") as RegisteredTool;
      const first = await runJson(tool, {});
      await writeFile(path.join(dir, "a"), ""); // sorts before the page already seen
      await writeFile(path.join(dir, "e"), ""); // sorts after it
      const second = await runJson(tool, { pageToken: first["nextPageToken"] ?? "" });
      expect([...show(first), ...show(second)].map((s) => s.split(" ")[0])).toEqual(["b", "d", "e", "f"]);
    } finally {
      await cleanup();
    }
  });

  const failures: { name: string; args: JsonObject; code: string; field?: string }[] = [
    { name: "garbage page token", args: { pageToken: "not-a-token" }, code: "invalid_argument", field: "page_token" },
    { name: "a file", args: { path: "B.txt" }, code: "invalid_argument", field: "path" },
    { name: "missing directory", args: { path: "nope" }, code: "invalid_argument", field: "path" },
    { name: "escape", args: { path: ".." }, code: "permission_denied" },
    { name: "symlinked directory outside", args: { path: "link" }, code: "permission_denied" },
  ];
  for (const { name, args, code, field } of failures) {
    test(`${name} -> ${code}`, async () => {
      await expect(list.run(jsonCommand("fs.list", args), makeContext().ctx)).rejects.toMatchObject(field === undefined ? { code } : { code, details: { field } });
    });
  }

  test("a token from another listing is refused", async () => {
    const first = await runJson(list, { recursive: true });
    await expect(list.run(jsonCommand("fs.list", { path: "a", recursive: true, pageToken: first["nextPageToken"] ?? "" }), makeContext().ctx)).rejects.toMatchObject({
      code: "invalid_argument",
      details: { field: "page_token" },
    });
  });
});
