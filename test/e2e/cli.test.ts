/**
 * The `mcp` command line as a user runs it: real child processes of `node bin/mcp.js`, a real
 * `mcp serve --port 0`, and client commands pointed at it through MCP_URL / MCP_TOKEN.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { OPTION_SPECS, flagName } from "../../src/config.js";
import { selfSignedCert } from "../security/e2e-helpers.js";
import { REPO, mcp, startCli, tempDir, type CliServer } from "./helpers.js";

const SECRET = "cli-e2e-secret-0123456789-0123456789-ab";
const version = (JSON.parse(readFileSync(join(REPO, "package.json"), "utf8")) as { version: string }).version;

describe("mcp without a server", () => {
  test("--version prints the package version", async () => {
    const r = await mcp(["--version"]);
    expect(r).toMatchObject({ code: 0, stdout: `${version}\n`, stderr: "" });
  });

  test("--help prints the usage of every command", async () => {
    const r = await mcp(["--help"]);
    expect(r.code).toBe(0);
    for (const cmd of ["mcp serve", "mcp token", "mcp tools", "mcp call", "mcp context get", "mcp context set", "mcp context watch", "mcp sessions"]) {
      expect(r.stdout).toContain(cmd);
    }
  });

  test("serve --help lists every server option as a flag with its environment variable", async () => {
    const r = await mcp(["serve", "--help"]);
    expect(r.code).toBe(0);
    for (const spec of OPTION_SPECS) {
      expect(r.stdout).toMatch(new RegExp(`--${flagName(spec.key)}\\s+MCP_`));
    }
    expect(r.stdout).toContain("--config FILE");
  });

  // Usage errors exit 2 with a message naming the problem, and start nothing.
  const usage = [
    { args: ["serve", "--no-such-flag"], says: "--no-such-flag" },
    { args: ["serve", "--port", "abc"], says: '"port" must be an integer' },
    { args: ["serve", "--security-level", "max"], says: "one of low, standard, high" },
    { args: ["frobnicate"], says: 'unknown command "frobnicate"' },
    { args: ["token", "--role", "developer"], says: "mcp token needs --sub NAME" },
    { args: ["call", "echo", "{not json", "--url", "http://127.0.0.1:1"], says: "the arguments is not valid JSON" },
  ];
  for (const u of usage) {
    test(`mcp ${u.args.join(" ")} → exit 2, "${u.says}"`, async () => {
      const r = await mcp(u.args, { env: { MCP_JWT_SECRET: SECRET } });
      expect(r.code).toBe(2);
      expect(r.stdout).toBe("");
      expect(r.stderr).toMatch(/^mcp: /);
      expect(r.stderr).toContain(u.says);
    });
  }
});

describe("mcp serve with --jwt-secret and client commands", () => {
  let cli: CliServer;
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let env: Record<string, string>;

  beforeAll(async () => {
    dir = await tempDir();
    cli = await startCli(["--port", "0", "--store", "memory", "--jwt-secret", SECRET], { cwd: dir.path });
    const tok = await mcp(["token", "--sub", "a", "--role", "developer"], { env: { MCP_JWT_SECRET: SECRET } });
    expect(tok.code, tok.stderr).toBe(0);
    expect(tok.stdout.trim()).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);
    env = { MCP_URL: cli.url, MCP_TOKEN: tok.stdout.trim() };
  });
  afterAll(async () => {
    await cli?.close();
    await dir?.remove();
  });

  test("the listening line names a loopback URL and no development token (a secret was given)", () => {
    expect(cli.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(cli.stdout).not.toContain("MCP_TOKEN=");
  });

  test("mcp call echo prints the result", async () => {
    const r = await mcp(["call", "echo", '{"text":"hi"}'], { env, cwd: dir.path });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ text: "hi" });
  });

  test("mcp tools lists what the caller may run: STANDARD tools, not HIGH ones over cleartext", async () => {
    const r = await mcp(["tools"], { env, cwd: dir.path });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^echo\s+standard\s/m);
    expect(r.stdout).toMatch(/^fs\.read\s+standard\s/m);
    expect(r.stdout).not.toMatch(/^fs\.write\s/m);
  });

  test("mcp context set then get", async () => {
    const s1 = await mcp(["context", "set", "cli-ctx", "answer", "42"], { env, cwd: dir.path });
    expect(s1.code, s1.stderr).toBe(0);
    expect(s1.stdout).toBe("cli-ctx is now at version 1\n");
    const s2 = await mcp(["context", "set", "cli-ctx", "who", '{"name":"a"}', "--expect", "1"], { env, cwd: dir.path });
    expect(s2.stdout).toBe("cli-ctx is now at version 2\n");
    const g = await mcp(["context", "get", "cli-ctx"], { env, cwd: dir.path });
    expect(g.code, g.stderr).toBe(0);
    const sync = JSON.parse(g.stdout) as { contextId: string; toVersion: string; entries: { key: string; value: unknown; updatedBy: string }[] };
    expect(sync.contextId).toBe("cli-ctx");
    expect(sync.toVersion).toBe("2");
    expect(Object.fromEntries(sync.entries.map((e) => [e.key, e.value]))).toEqual({ answer: 42, who: { name: "a" } });
    expect(sync.entries.map((e) => e.updatedBy)).toEqual(["a", "a"]);
  });

  // Server-side refusals exit 1 and print kind and code.
  const refusals = [
    { args: ["call", "no.such.tool"], says: "mcp: COMMAND unknown_tool:" },
    { args: ["context", "set", "cli-ctx", "answer", "1", "--expect", "1"], says: "mcp: CONTEXT version_conflict:" },
    { args: ["sessions", "list"], says: "mcp: SECURITY permission_denied:" },
  ];
  for (const r of refusals) {
    test(`mcp ${r.args.join(" ")} → exit 1, ${r.says}`, async () => {
      const out = await mcp(r.args, { env, cwd: dir.path });
      expect(out.code).toBe(1);
      expect(out.stderr).toContain(r.says);
    });
  }

  test("a bad token → exit 1, SECURITY unauthenticated", async () => {
    const r = await mcp(["call", "echo", '{"text":"x"}'], { env: { ...env, MCP_TOKEN: "garbage" }, cwd: dir.path });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("mcp: SECURITY unauthenticated:");
  });
});

describe("mcp call over TLS with a HIGH token: exec's output live, --timeout", () => {
  let cli: CliServer;
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let env: Record<string, string>;

  beforeAll(async () => {
    dir = await tempDir();
    const { cert, key } = await selfSignedCert(dir.path);
    cli = await startCli(["--port", "0", "--store", "memory", "--jwt-secret", SECRET, "--tls-cert", cert, "--tls-key", key, "--exec-enabled"], { cwd: dir.path });
    const tok = await mcp(["token", "--sub", "a", "--role", "developer", "--level", "high"], { env: { MCP_JWT_SECRET: SECRET } });
    expect(tok.code, tok.stderr).toBe(0);
    // The client trusts the self-signed certificate the way any Node program can be told to.
    env = { MCP_URL: cli.url, MCP_TOKEN: tok.stdout.trim(), NODE_EXTRA_CA_CERTS: cert };
  });
  afterAll(async () => {
    await cli?.close();
    await dir?.remove();
  });

  test("exec's stdout and stderr print as they come, then the result", async () => {
    expect(cli.url).toMatch(/^https:\/\//);
    const r = await mcp(["call", "exec", '{"argv":["sh","-c","echo one; echo two >&2"]}'], { env, cwd: dir.path });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.startsWith("one\n")).toBe(true);
    expect(JSON.parse(r.stdout.slice("one\n".length))).toMatchObject({ exitCode: 0, stdout: "one\n", stderr: "two\n" });
    expect(r.stderr).toBe("two\n");
  });

  test("a STANDARD token over TLS still runs STANDARD tools, and is refused exec with insufficient_security_level", async () => {
    const tok = await mcp(["token", "--sub", "b", "--role", "developer"], { env: { MCP_JWT_SECRET: SECRET } });
    const standard = { ...env, MCP_TOKEN: tok.stdout.trim() };
    const echo = await mcp(["call", "echo", '{"text":"hi"}'], { env: standard, cwd: dir.path });
    expect(echo.code, echo.stderr).toBe(0);
    expect(JSON.parse(echo.stdout)).toEqual({ text: "hi" });
    const exec = await mcp(["call", "exec", '{"argv":["true"]}'], { env: standard, cwd: dir.path });
    expect(exec.code).toBe(1);
    expect(exec.stderr).toContain("mcp: SECURITY insufficient_security_level:");
  });

  test("--timeout ends a command that runs longer → exit 1, COMMAND timeout", async () => {
    const r = await mcp(["call", "exec", '{"argv":["sleep","5"]}', "--timeout", "300"], { env, cwd: dir.path });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("mcp: COMMAND timeout:");
  });
});

describe("mcp serve without a secret", () => {
  let cli: CliServer;
  let dir: Awaited<ReturnType<typeof tempDir>>;

  beforeAll(async () => {
    dir = await tempDir();
    // No MCP_JWT_SECRET / MCP_JWKS from the environment of whoever runs the tests.
    cli = await startCli(["--port", "0"], { cwd: dir.path, env: { MCP_JWT_SECRET: undefined, MCP_JWKS: undefined, MCP_STATE_DIR: undefined } });
  });
  afterAll(async () => {
    await cli?.close();
    await dir?.remove();
  });

  test("generates .mcp/dev-secret (mode 0600) and prints a development token that works", async () => {
    const secretFile = join(dir.path, ".mcp", "dev-secret");
    expect(existsSync(secretFile)).toBe(true);
    expect(statSync(secretFile).mode & 0o777).toBe(0o600);
    expect(cli.stderr).toContain(`generated development secret .mcp/dev-secret`);
    const m = /export MCP_TOKEN=(\S+)/.exec(cli.stdout);
    expect(m).not.toBeNull();
    const r = await mcp(["call", "echo", '{"text":"dev"}'], { env: { MCP_URL: cli.url, MCP_TOKEN: m![1]!, MCP_JWT_SECRET: undefined }, cwd: dir.path });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ text: "dev" });
  });

  test("client commands in the same folder mint their own token from .mcp/dev-secret", async () => {
    const r = await mcp(["call", "echo", '{"text":"local"}'], { env: { MCP_URL: cli.url, MCP_TOKEN: undefined, MCP_JWT_SECRET: undefined }, cwd: dir.path });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ text: "local" });
  });

  test("a token from another secret is refused", async () => {
    const other = await mcp(["token", "--sub", "x", "--role", "developer"], { env: { MCP_JWT_SECRET: SECRET } });
    const r = await mcp(["call", "echo", "{}"], { env: { MCP_URL: cli.url, MCP_TOKEN: other.stdout.trim() }, cwd: dir.path });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("mcp: SECURITY unauthenticated: token signature is invalid");
  });
});
