/**
 * better-sqlite3 and ioredis are optional dependencies loaded on first use (src/optional/): the
 * package imports without them, a store of their kind loads them, and a missing one is a
 * TypeError naming the package and the version to install. (The real "not installed" case, an
 * install with --omit=optional, is in consumer.test.ts.)
 */
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { expect, test } from "vitest";
import { lazyClass, requireOptional } from "../../src/optional/load.js";

const loaded = (name: string) => Object.keys(createRequire(import.meta.url).cache).some((k) => k.includes(`/node_modules/${name}/`));

test("importing the package loads neither better-sqlite3 nor ioredis; opening a SQLite store loads better-sqlite3 only", async () => {
  const { createMcpServer } = await import("../../src/index.js");
  const { openContextStore } = await import("../../src/context/index.js");
  expect(loaded("better-sqlite3")).toBe(false);
  expect(loaded("ioredis")).toBe(false);
  const server = createMcpServer({ port: 0, jwtSecret: "a-secret-of-at-least-32-bytes-long!!" });
  await server.listen();
  await server.close();
  expect(loaded("better-sqlite3")).toBe(false);
  expect(loaded("ioredis")).toBe(false);
  const store = await openContextStore("sqlite::memory:");
  expect(loaded("better-sqlite3")).toBe(true);
  expect(await store.countContexts()).toBe(0);
  await store.close();
  expect(loaded("ioredis")).toBe(false);
});

test("a package that cannot be found is a TypeError naming it, who needs it and what to install", () => {
  const e = catchError(() => requireOptional({ name: "mcp-no-such-package", major: 3, neededBy: "the test store" }));
  expect(e).toBeInstanceOf(TypeError);
  expect(e.message).toBe(
    "the test store needs the optional dependency mcp-no-such-package, which is not installed: run `npm install mcp-no-such-package@3`",
  );
  expect((e.cause as NodeJS.ErrnoException).code).toBe("MODULE_NOT_FOUND");
});

test("a lazy class is loaded at the first new, and new, statics and instanceof reach the real class", () => {
  let loads = 0;
  class Real {
    static kind = "real";
    constructor(readonly n: number) {}
  }
  const Lazy = lazyClass(() => (loads++, Real));
  expect(loads).toBe(0);
  const r = new Lazy(7);
  expect(loads).toBe(1);
  expect(r.n).toBe(7);
  expect(r).toBeInstanceOf(Real);
  expect(r).toBeInstanceOf(Lazy);
  expect(Lazy.kind).toBe("real");
  class Sub extends Lazy {}
  expect(new Sub(1)).toBeInstanceOf(Sub);
  expect(loads).toBe(1);
});

test("the versions the messages name are the majors of package.json's optionalDependencies", async () => {
  const pkg = JSON.parse(await readFile("package.json", "utf8")) as { optionalDependencies: Record<string, string> };
  const sources = await Promise.all(["better-sqlite3", "ioredis"].map((n) => readFile(`src/optional/${n}.ts`, "utf8")));
  for (const [i, name] of ["better-sqlite3", "ioredis"].entries()) {
    const major = Number(pkg.optionalDependencies[name]!.split(".")[0]);
    expect(sources[i]).toMatch(new RegExp(`name: "${name}",\\s+major: ${major},`));
  }
});

function catchError(f: () => unknown): Error {
  try {
    f();
  } catch (e) {
    return e as Error;
  }
  throw new Error("did not throw");
}
