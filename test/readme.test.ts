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

test("examples/quickstart.ts runs: the update result and the echo response (any order), then the pong", async () => {
  const { stdout } = await run(process.execPath, ["--import", "tsx", "examples/quickstart.ts"], { timeout: 30_000 });
  const lines = stdout.trim().split("\n");
  expect(lines).toHaveLength(3);
  // Seq 1 is the HandshakeResult; 2 and 3 go to the two answers in whichever order they finished.
  const answers = lines.slice(0, 2).map((l) => /^#(\d+) (.*)$/.exec(l));
  expect(answers.map((a) => a?.[1]).sort()).toEqual(["2", "3"]);
  expect(answers.map((a) => a?.[2]).sort()).toEqual(["context demo is at version 1", "response to c1: { text: 'hello' }"]);
  expect(lines[2]).toBe("#4 pong 1");
});

test("src/version.ts matches package.json", async () => {
  const pkg = JSON.parse(await readFile("package.json", "utf8")) as { version: string };
  expect(VERSION).toBe(pkg.version);
});
