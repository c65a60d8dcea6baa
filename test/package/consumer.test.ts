/**
 * The package as a user gets it: `npm pack` (which builds dist/ first), the tarball installed
 * into fresh projects from the npm cache, then used the normal way —
 *   (a) a plain-Node ESM script starts a server and calls `echo` through the client,
 *   (b) the same with require() from CommonJS,
 *   (c) a strict TypeScript consumer type-checks (module nodenext, and moduleResolution bundler),
 *   (d) a client-only script runs in a project installed with --omit=optional (no better-sqlite3,
 *       no ioredis), loading no server code; there a SQLite or Redis store fails naming the package,
 *   (e) `npx mcp --version` and `npx mcp serve --port 0`.
 * The scripts are examples/package/*, which the README shows verbatim.
 *
 * The full install skips install scripts: better-sqlite3's would compile SQLite for minutes here
 * (no prebuilt binary can be downloaded); the repo's own build of the same version is copied in
 * instead, which is what its installer does with a prebuilt binary.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { cp, mkdir, readdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { REPO, run, tempDir, type RunResult } from "../e2e/helpers.js";

const NPM_FLAGS = ["--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"];
const EXAMPLES = join(REPO, "examples/package");
const TSC = join(REPO, "node_modules/typescript/bin/tsc");
const pkg = JSON.parse(await readFile(join(REPO, "package.json"), "utf8")) as { version: string; devDependencies: Record<string, string> };

interface PackResult {
  filename: string;
  size: number;
  unpackedSize: number;
  entryCount: number;
  files: { path: string }[];
}

let tmp: Awaited<ReturnType<typeof tempDir>>;
let pack: PackResult;
/** The default install (optional dependencies included) and the lean one (--omit=optional). */
let full: string;
let lean: string;
let track: string;

function ok(r: RunResult, what: string): RunResult {
  expect(r.code, `${what} exited with ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`).toBe(0);
  return r;
}

async function dirSize(dir: string): Promise<number> {
  let total = 0;
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) total += (await stat(join(e.parentPath, e.name))).size;
  }
  return total;
}

const mb = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MB`;

/** Every module a script loaded: ESM resolutions (a loader hook) and CommonJS `require.cache`. */
async function loadedModules(cwd: string, script: string, env: Record<string, string> = {}): Promise<{ out: RunResult; modules: string[] }> {
  const log = join(tmp.path, `loaded-${Math.random().toString(36).slice(2)}.txt`);
  await writeFile(log, "");
  const out = await run(process.execPath, ["--import", track, script], { cwd, env: { ...env, MCP_TRACK_OUT: log }, timeoutMs: 30_000 });
  return { out, modules: (await readFile(log, "utf8")).split("\n").filter((l) => l !== "") };
}

beforeAll(async () => {
  tmp = await tempDir("mcp-package-");
  const packed = ok(await run("npm", ["pack", "--json", "--pack-destination", tmp.path], { timeoutMs: 240_000 }), "npm pack");
  pack = (JSON.parse(packed.stdout) as PackResult[])[0]!;
  const tarball = join(tmp.path, pack.filename);
  full = join(tmp.path, "full");
  lean = join(tmp.path, "lean");
  for (const [dir, type] of [[full, "module"], [lean, "module"]] as const) {
    await mkdir(dir);
    await writeFile(join(dir, "package.json"), JSON.stringify({ name: "consumer", private: true, type }));
  }
  await Promise.all([
    run("npm", ["install", ...NPM_FLAGS, "--ignore-scripts", tarball, `@types/node@${pkg.devDependencies["@types/node"]}`], { cwd: full, timeoutMs: 180_000 }).then((r) => ok(r, "npm install (full)")),
    run("npm", ["install", ...NPM_FLAGS, "--omit=optional", tarball], { cwd: lean, timeoutMs: 180_000 }).then((r) => ok(r, "npm install --omit=optional")),
  ]);
  const release = "node_modules/better-sqlite3/build/Release";
  await mkdir(join(full, release), { recursive: true });
  await cp(join(REPO, release, "better_sqlite3.node"), join(full, release, "better_sqlite3.node"));
  for (const f of await readdir(EXAMPLES)) await cp(join(EXAMPLES, f), join(full, f));
  await cp(join(EXAMPLES, "client.mjs"), join(lean, "client.mjs"));
  track = join(tmp.path, "track.mjs");
  const hooks = `import { appendFileSync } from "node:fs";
export async function resolve(s, c, next) { const r = await next(s, c); appendFileSync(process.env.MCP_TRACK_OUT, r.url + "\\n"); return r; }`;
  await writeFile(
    track,
    `import { register, createRequire } from "node:module";
import { appendFileSync } from "node:fs";
register("data:text/javascript," + encodeURIComponent(${JSON.stringify(hooks)}));
process.on("exit", () => appendFileSync(process.env.MCP_TRACK_OUT, Object.keys(createRequire(import.meta.url).cache).join("\\n") + "\\n"));
`,
  );
  const ours = async (dir: string) => (await dirSize(join(dir, "node_modules"))) - (await dirSize(join(dir, "node_modules/@types")).catch(() => 0));
  console.log(
    `package: ${pack.filename}: ${pack.entryCount} files, ${mb(pack.size)} packed, ${mb(pack.unpackedSize)} unpacked; ` +
      `installed: ${mb(await ours(full))} with optional dependencies, ${mb(await ours(lean))} with --omit=optional (node_modules, without @types)`,
  );
}, 420_000);

afterAll(async () => {
  await tmp?.remove();
});

/** The server's own JSON log lines (session start/end at info) are all a plain run may print on stderr: no warning, no error. */
function expectOnlyInfoLogs(stderr: string): void {
  for (const line of stderr.split("\n").filter((l) => l !== "")) {
    expect((JSON.parse(line) as { level?: unknown }).level, line).toBe("info");
  }
}

describe("the installed package", () => {
  test("the tarball holds dist, bin, sources, proto, docs and the metadata files — no test, bench, CI or build files", () => {
    const paths = pack.files.map((f) => f.path);
    const top = [...new Set(paths.map((p) => p.split("/")[0]))].sort();
    expect(top).toEqual(["CHANGELOG.md", "LICENSE", "README.md", "bin", "dist", "docs", "gen", "package.json", "proto", "src"]);
    expect(paths.filter((p) => /^(test|bench|examples|\.ci)\/|tsbuildinfo|tsconfig|vitest|\.tgz$/.test(p))).toEqual([]);
    expect(paths).toContain("bin/mcp.js");
    expect(paths).not.toContain("bin/mcp-dev.js");
    for (const e of ["index", "entry/client", "entry/server"]) {
      expect(paths).toContain(`dist/src/${e}.js`);
      expect(paths).toContain(`dist/src/${e}.d.ts`);
      expect(paths).toContain(`dist/src/${e}.d.ts.map`);
    }
    expect(paths).toContain("dist/gen/mcp/v1/session_pb.js");
    expect(paths).toContain("proto/mcp/v1/session.proto");
  });

  test("(a) a plain ESM script starts a server and calls echo through the client, loading neither better-sqlite3 nor ioredis", async () => {
    const { out, modules } = await loadedModules(full, "server.mjs");
    ok(out, "node server.mjs");
    expect(out.stdout).toBe("{ text: 'hello' }\n");
    expectOnlyInfoLogs(out.stderr);
    expect(modules.some((m) => m.includes("/node_modules/machine-context-protocol/dist/src/index.js"))).toBe(true);
    expect(modules.filter((m) => /\/node_modules\/(better-sqlite3|ioredis)\//.test(m))).toEqual([]);
  });

  test("(b) the same from CommonJS with require()", async () => {
    const out = ok(await run(process.execPath, ["server.cjs"], { cwd: full, timeoutMs: 30_000 }), "node server.cjs");
    expect(out.stdout).toBe("{ text: 'hello' }\n");
    expectOnlyInfoLogs(out.stderr);
  });

  test("(c) a strict TypeScript consumer type-checks against the published types, with module nodenext and with moduleResolution bundler", async () => {
    const strict = {
      target: "es2022",
      // DOM: @connectrpc/connect's own types name fetch's HeadersInit.
      lib: ["es2022", "dom"],
      types: ["node"],
      strict: true,
      exactOptionalPropertyTypes: true,
      noUncheckedIndexedAccess: true,
      erasableSyntaxOnly: true,
      verbatimModuleSyntax: true,
      skipLibCheck: false,
      noEmit: true,
    };
    const modes = { nodenext: { module: "nodenext", moduleResolution: "nodenext" }, bundler: { module: "preserve", moduleResolution: "bundler" } };
    const results = await Promise.all(
      Object.entries(modes).map(async ([name, m]) => {
        await writeFile(join(full, `tsconfig.${name}.json`), JSON.stringify({ compilerOptions: { ...strict, ...m }, files: ["typed.ts"] }));
        return [name, await run(process.execPath, [TSC, "-p", `tsconfig.${name}.json`], { cwd: full, timeoutMs: 120_000 })] as const;
      }),
    );
    for (const [name, r] of results) expect(`${name}: ${r.stdout}${r.stderr}`, `tsc (${name})`).toBe(`${name}: `);
  }, 150_000);

  test("(c) in the --omit=optional project, a strict TypeScript consumer of /client type-checks too", async () => {
    await writeFile(join(lean, "check.ts"), 'import { createMcpClient, type McpSession } from "machine-context-protocol/client";\nexport const open: () => Promise<McpSession> = () => createMcpClient({ baseUrl: "http://127.0.0.1:9000" }).connect();\n');
    const compilerOptions = {
      module: "nodenext",
      target: "es2022",
      lib: ["es2022", "dom"],
      // @types/node from the repo: this project installed nothing but the package.
      typeRoots: [join(REPO, "node_modules/@types")],
      types: ["node"],
      strict: true,
      exactOptionalPropertyTypes: true,
      skipLibCheck: false,
      noEmit: true,
    };
    await writeFile(join(lean, "tsconfig.json"), JSON.stringify({ compilerOptions, files: ["check.ts"] }));
    const r = await run(process.execPath, [TSC, "-p", "tsconfig.json"], { cwd: lean, timeoutMs: 120_000 });
    expect(r.stdout + r.stderr).toBe("");
    expect(r.code).toBe(0);
  }, 150_000);

  test("the published .d.ts name no untyped dependency and no `any`", async () => {
    const dist = join(full, "node_modules/machine-context-protocol/dist");
    const files = (await readdir(dist, { recursive: true })).filter((f) => f.endsWith(".d.ts"));
    expect(files.length).toBeGreaterThan(50);
    const offenders: string[] = [];
    for (const f of files) {
      const text = (await readFile(join(dist, f), "utf8")).replace(/\/\*[\s\S]*?\*\//g, "").replace(/\/\/.*$/gm, "");
      // src/optional/ wraps the two optional packages: not exported, and imported by no other .d.ts.
      if (f.startsWith("src/optional/")) continue;
      if (/optional\/better-sqlite3/.test(text)) offenders.push(`${f}: imports optional/better-sqlite3`);
      if (/from "(better-sqlite3|picomatch|@types\/[^"]+)"/.test(text)) offenders.push(`${f}: imports an untyped package`);
      if (/\bany\b/.test(text)) offenders.push(`${f}: any`);
    }
    expect(offenders).toEqual([]);
  });

  test("(e) npx mcp --version; npx mcp serve --port 0 (SQLite by default) answers (d) a client-only script in a project without better-sqlite3 and ioredis, which loads no server code", async () => {
    const version = ok(await run("npx", ["mcp", "--version"], { cwd: full, timeoutMs: 30_000 }), "npx mcp --version");
    expect(version.stdout.trim()).toBe(pkg.version);

    for (const name of ["better-sqlite3", "ioredis"]) await expect(stat(join(lean, "node_modules", name))).rejects.toThrow(/ENOENT/);
    const server = await serve(full, []);
    try {
      expect(server.stdout).toMatch(/store: sqlite:/);
      const { out, modules } = await loadedModules(lean, "client.mjs", { MCP_URL: server.url, MCP_TOKEN: server.token });
      ok(out, "node client.mjs");
      expect(out.stdout).toBe("{ text: 'hello' }\n");
      const ours = modules.filter((m) => m.includes("/machine-context-protocol/dist/"));
      expect(ours.some((m) => m.endsWith("/dist/src/entry/client.js"))).toBe(true);
      expect(ours.filter((m) => /\/dist\/src\/(server|session|context|security|tools|optional)\//.test(m))).toEqual([]);
      expect(modules.filter((m) => /\/node_modules\/(better-sqlite3|ioredis)\//.test(m))).toEqual([]);
    } finally {
      expect(await server.close()).toContain("shutting down");
    }
  }, 90_000);

  test("(d) without the optional dependencies: --store memory serves; a SQLite or Redis store fails with a TypeError naming the package to install, no stack trace", async () => {
    const memory = await serve(lean, ["--store", "memory"]);
    expect(await memory.close()).toContain("shutting down");

    const sqlite = await run("npx", ["mcp", "serve", "--port", "0"], { cwd: lean, timeoutMs: 30_000 });
    expect(sqlite.code).toBe(2);
    expect(sqlite.stderr).toContain("needs the optional dependency better-sqlite3, which is not installed: run `npm install better-sqlite3@12`");
    expect(sqlite.stderr).not.toMatch(/^\s+at /m);

    const script = `import { createMcpServer } from "machine-context-protocol/server";
const server = createMcpServer({ port: 0, jwtSecret: "a-development-secret-of-32-bytes-or-more", store: "redis://127.0.0.1:6379" });
await server.listen().then(() => console.log("listening"), (e) => console.log(e.name + ": " + e.message));`;
    const redis = ok(await run(process.execPath, ["--input-type=module", "-e", script], { cwd: lean, timeoutMs: 30_000 }), "redis store");
    expect(redis.stdout).toBe(
      'TypeError: a Redis store ("redis://host:port", "redis+cluster://…" or "redis+sentinel://…", shared by several server instances) needs the optional dependency ioredis, which is not installed: run `npm install ioredis@5`\n',
    );
  }, 90_000);

  test("the .proto files resolve from the installed package and compile there (protoc)", async () => {
    const resolved = ok(
      await run(process.execPath, ["-p", 'require.resolve("machine-context-protocol/proto/mcp/v1/session.proto")'], { cwd: full }),
      "require.resolve",
    ).stdout.trim();
    expect(resolved).toBe(join(full, "node_modules/machine-context-protocol/proto/mcp/v1/session.proto"));
    const protoDir = join(full, "node_modules/machine-context-protocol/proto");
    const protos = (await readdir(protoDir, { recursive: true })).filter((f) => f.endsWith(".proto"));
    const protoc = await run("protoc", ["--version"]).catch(() => undefined);
    if (protoc?.code !== 0) {
      if (process.env["CI"] !== undefined) throw new Error("protoc is missing in CI (.ci/run installs protobuf-compiler)");
      console.warn("SKIPPED the protoc half of this test: protoc is not installed");
      return;
    }
    ok(await run("protoc", [`-I${protoDir}`, "--descriptor_set_out=/dev/null", ...protos], { cwd: full }), "protoc");
  });

  test("the README's 'Use it from your project' section shows the install line and examples/package/ verbatim", async () => {
    const readme = await readFile(join(REPO, "README.md"), "utf8");
    expect(readme).toContain("npm install machine-context-protocol\n");
    for (const [file, lang] of [["server.mjs", "js"], ["server.cjs", "js"], ["client.mjs", "js"], ["typed.ts", "ts"]]) {
      expect(readme, file).toContain("```" + lang + "\n" + (await readFile(join(EXAMPLES, file!), "utf8")) + "```");
    }
  });
});

interface Served {
  url: string;
  token: string;
  stdout: string;
  close(): Promise<string>;
}

/** `npx mcp serve --port 0 ARGS` in `cwd`, once it printed its URL and development token. */
function serve(cwd: string, args: string[]): Promise<Served> {
  // Its own process group, so that the server npx started can be found and, at worst, killed with it.
  const proc: ChildProcess = spawn("npx", ["mcp", "serve", "--port", "0", ...args], { cwd, stdio: ["ignore", "pipe", "pipe"], detached: true });
  let stdout = "";
  let stderr = "";
  // "close", not "exit": the server (npx's child) may still be writing to the pipes when npx exits.
  const exit = new Promise<number | null>((r) => proc.once("close", r));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill("SIGKILL");
      reject(new Error(`npx mcp serve did not listen within 30 s\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, 30_000);
    proc.stderr!.setEncoding("utf8").on("data", (c: string) => (stderr += c));
    proc.stdout!.setEncoding("utf8").on("data", (c: string) => {
      stdout += c;
      const url = /listening on (\S+)/.exec(stdout)?.[1];
      const token = /MCP_TOKEN=(\S+)/.exec(stdout)?.[1];
      if (url === undefined || token === undefined) return;
      clearTimeout(timer);
      resolve({
        url,
        token,
        stdout,
        /** SIGTERM to the group; resolves with what the server printed on stderr (a clean stop says "shutting down"). */
        async close() {
          // SIGTERM to the server alone: npx forwards some signals itself, and a second SIGTERM
          // during shutdown would kill the server before it says so.
          for (const pid of await serverPids(proc.pid!)) process.kill(pid, "SIGTERM");
          const t = setTimeout(() => {
            try {
              process.kill(-proc.pid!, "SIGKILL");
            } catch {
              // the group is gone already
            }
          }, 5_000);
          await exit;
          clearTimeout(t);
          return stderr;
        },
      });
    });
    void exit.then((code) => {
      clearTimeout(timer);
      reject(new Error(`npx mcp serve exited with ${code}\nstdout: ${stdout}\nstderr: ${stderr}`));
    });
  });
}

/** The `mcp serve` processes in process group `pgid` (npx's), from /proc. */
async function serverPids(pgid: number): Promise<number[]> {
  const pids: number[] = [];
  for (const d of await readdir("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    const [stat, cmd] = await Promise.all([readFile(`/proc/${d}/stat`, "utf8"), readFile(`/proc/${d}/cmdline`, "utf8")]).catch(() => ["", ""]);
    // Fields after the parenthesised command: state, ppid, pgrp.
    const pgrp = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2]);
    if (pgrp === pgid && /\/\.bin\/mcp\0serve/.test(cmd)) pids.push(Number(d));
  }
  expect(pids, "the mcp serve process under npx").toHaveLength(1);
  return pids;
}
