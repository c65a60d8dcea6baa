/** README snippets are tests (STYLE.md §6): the quick-start example is the file the suite runs. */
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { promisify } from "node:util";
import { expect, test } from "vitest";
import { VERSION } from "../src/version.js";

const run = promisify(execFile);

test("the README shows examples/quickstart.ts verbatim", async () => {
  const [readme, example] = await Promise.all([readFile("README.md", "utf8"), readFile("examples/quickstart.ts", "utf8")]);
  expect(readme).toContain("```ts\n" + example + "```");
});

test("examples/quickstart.ts runs and prints the update, the echo response and the pong in seq order", async () => {
  const { stdout } = await run(process.execPath, ["--import", "tsx", "examples/quickstart.ts"], { timeout: 30_000 });
  expect(stdout.trim().split("\n")).toEqual([
    "#2 context demo is at version 1",
    "#3 response to c1: { text: 'hello' }",
    "#4 pong 1",
  ]);
});

test("src/version.ts matches package.json", async () => {
  const pkg = JSON.parse(await readFile("package.json", "utf8")) as { version: string };
  expect(VERSION).toBe(pkg.version);
});
