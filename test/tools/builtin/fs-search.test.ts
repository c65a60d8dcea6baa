import { mkdir, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import type { JsonObject } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { createBuiltinTools, type RegisteredTool } from "../../../src/tools/index.js";
import { jsonCommand, makeContext, makeWorkspace, runJson } from "../helpers.js";

let root = "";
const cleanups: (() => Promise<void>)[] = [];
let search: RegisteredTool;

beforeAll(async () => {
  const ws = await makeWorkspace();
  const out = await makeWorkspace();
  root = ws.root;
  cleanups.push(ws.cleanup, out.cleanup);
  const files: Record<string, string | Buffer> = {
    "src/a.ts": "const TODO = 1;\n// todo: lower case\nexport {};\n",
    "src/b.js": "// TODO in js\n",
    "src/deep/c.ts": "x\ny\nlet z = 'TODO';\n",
    "docs/readme.md": "TODO write docs\r\nmore TODO\r\n",
    "node_modules/pkg/index.js": "// TODO hidden dependency\n",
    ".git/HEAD": "TODO never searched\n",
    "bin/blob.bin": Buffer.from([0x54, 0x4f, 0x44, 0x4f, 0x00, 0x01]),
  };
  for (const [name, content] of Object.entries(files)) {
    await mkdir(path.dirname(path.join(root, name)), { recursive: true });
    await writeFile(path.join(root, name), content);
  }
  await writeFile(path.join(out.root, "secret.ts"), "TODO outside\n");
  // Links are not followed, so files outside the root are never read.
  await symlink(out.root, path.join(root, "src", "outside"));
  search = createBuiltinTools({ root, maxSearchResults: 3 }).find((t) => t.name === "fs.search") as RegisteredTool;
});
afterAll(async () => {
  for (const cleanup of cleanups) await cleanup();
});

function hits(out: JsonObject): string[] {
  return (out["matches"] as JsonObject[]).map((m) => `${String(m["path"])}:${String(m["line"])}:${String(m["column"])}`);
}

describe("fs.search", () => {
  // Files are visited in sorted order; binary files, node_modules and .git are skipped.
  const cases: { name: string; args: JsonObject; want: string[]; truncated: boolean }[] = [
    {
      name: "include one extension",
      args: { pattern: "TODO", include: ["**/*.ts"] },
      want: ["src/a.ts:1:7", "src/deep/c.ts:3:10"],
      truncated: false,
    },
    {
      name: "case insensitive with exclude",
      args: { pattern: "todo", caseInsensitive: true, include: ["**/*.ts", "**/*.js"], exclude: ["src/deep/**"] },
      want: ["src/a.ts:1:7", "src/a.ts:2:4", "src/b.js:1:4"],
      truncated: false,
    },
    { name: "globs relative to path", args: { pattern: "TODO", path: "src", include: ["*.js"] }, want: ["src/b.js:1:4"], truncated: false },
    { name: "CRLF lines", args: { pattern: "TODO$", path: "docs" }, want: ["docs/readme.md:2:6"], truncated: false },
    // maxSearchResults is 3: the fourth match sets truncated
    { name: "capped by the server", args: { pattern: "TODO" }, want: ["docs/readme.md:1:1", "docs/readme.md:2:6", "src/a.ts:1:7"], truncated: true },
    { name: "capped by max_results", args: { pattern: "TODO", max_results: 1 }, want: ["docs/readme.md:1:1"], truncated: true },
    { name: "exactly at the cap is not truncated", args: { pattern: "TODO", include: ["src/**"], maxResults: 3 }, want: ["src/a.ts:1:7", "src/b.js:1:4", "src/deep/c.ts:3:10"], truncated: false },
    { name: "a single file", args: { pattern: "z", path: "src/deep/c.ts" }, want: ["src/deep/c.ts:3:5"], truncated: false },
  ];
  for (const { name, args, want, truncated } of cases) {
    test(name, async () => {
      const out = await runJson(search, args);
      expect(hits(out)).toEqual(want);
      expect(out["truncated"]).toBe(truncated);
    });
  }

  test("match text and files searched", async () => {
    const out = await runJson(search, { pattern: "lower" });
    expect(out["matches"]).toEqual([{ path: "src/a.ts", line: 2, column: 10, text: "// todo: lower case" }]);
    // a.ts, b.js, c.ts, readme.md: not the binary, not node_modules/.git, not through the link
    expect(out["filesSearched"]).toBe(4);
  });

  const failures: { name: string; args: JsonObject; code: string; field?: string }[] = [
    { name: "invalid regular expression", args: { pattern: "(" }, code: "invalid_argument", field: "pattern" },
    { name: "empty pattern", args: { pattern: "" }, code: "invalid_argument", field: "pattern" },
    { name: "missing directory", args: { pattern: "x", path: "nope" }, code: "invalid_argument", field: "path" },
    { name: "escape", args: { pattern: "x", path: "../" }, code: "permission_denied" },
  ];
  for (const { name, args, code, field } of failures) {
    test(`${name} -> ${code}`, async () => {
      await expect(search.run(jsonCommand("fs.search", args), makeContext().ctx)).rejects.toMatchObject(field === undefined ? { code } : { code, details: { field } });
    });
  }

  test("an aborted signal stops the search with its reason", async () => {
    const controller = new AbortController();
    const reason = new Error("timeout");
    controller.abort(reason);
    await expect(search.run(jsonCommand("fs.search", { pattern: "x" }), makeContext(controller.signal).ctx)).rejects.toBe(reason);
  });
});
