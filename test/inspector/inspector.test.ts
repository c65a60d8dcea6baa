/**
 * The inspector page in a real browser (Debian's chromium through playwright-core, headless,
 * never downloaded): it calls fs.list through the form generated from the tool's schema, shows a
 * context change made by another client without a reload, and an admin sees the live sessions.
 * And who gets the page: refused to a non-allowed address, Host or Origin; a strict CSP.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, request, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fromJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { chromium, type BrowserContext } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMcpClient } from "../../src/client/index.js";
import { buildInspector } from "../../src/inspector/build.js";
import { createInspectorEndpoint } from "../../src/inspector/endpoint.js";
import { startServer, type TestServer } from "../helpers/server.js";
import { startCli, tempDir } from "../e2e/helpers.js";

const CHROMIUM = "/usr/bin/chromium";
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium) {
  if (process.env["CI"] === "true") throw new Error(`${CHROMIUM} is missing: .ci/run installs Debian's chromium`);
  console.warn(`\n*** SKIPPING the inspector browser test: ${CHROMIUM} not found (apt-get install chromium) ***\n`);
}

const put = (key: string, json: unknown) => ({ op: { case: "put" as const, value: { key, value: fromJson(ValueSchema, json as never) } } });

/** GET with chosen headers (fetch would not let us set Host). */
function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, path: u.pathname, headers }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.once("error", reject);
    req.end();
  });
}

describe.runIf(haveChromium)("the inspector page in chromium", () => {
  let server: TestServer;
  let browser: BrowserContext;
  let root: string;
  let profile: string;
  let shots: string;

  beforeAll(async () => {
    await buildInspector(); // the page under test is the current source
    root = mkdtempSync(join(tmpdir(), "mcp-inspector-ws-"));
    writeFileSync(join(root, "hello.txt"), "hi\n");
    mkdirSync(join(root, "src"));
    profile = mkdtempSync(join(tmpdir(), "mcp-inspector-profile-"));
    shots = mkdtempSync(join(tmpdir(), "mcp-inspector-shots-"));
    server = await startServer({ workspaceRoot: root });
    // A fresh profile per run (playwright's persistent context is how it takes --user-data-dir).
    browser = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      viewport: { width: 1400, height: 1000 },
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await server?.close();
    for (const d of [root, profile, shots]) if (d !== undefined) rmSync(d, { recursive: true, force: true });
  });

  it("calls fs.list through the form, follows a context changed by another client, and lists sessions for an admin", async () => {
    const token = await server.token("ada", ["admin"]);
    const other = createMcpClient({ baseUrl: server.url, token: await server.token("bob", ["developer"]) });
    await other.contexts.updateContext({ contextId: "ui", ops: [put("status", "draft")] });

    const page = await browser.newPage();
    const problems: string[] = [];
    page.on("pageerror", (e) => problems.push(e.message));
    page.on("console", (m) => {
      // A CSP violation is reported on the console: the page must not need anything it forbids.
      if (m.type() === "error") problems.push(m.text());
    });
    await page.goto(`${server.url}/inspector#token=${token}`);
    // The token moved from the fragment into this tab's sessionStorage, out of the address bar.
    await page.waitForFunction(() => location.hash === "");
    expect(await page.evaluate(() => sessionStorage.getItem("mcp-inspector-token"))).toBe(token);
    expect(await page.evaluate(() => localStorage.length)).toBe(0);
    await expect.poll(() => page.textContent("#whoami")).toContain("ada");

    // Tools: the form comes from fs.list's input schema.
    await page.click("#tools button:text-is('fs.list')");
    await page.fill("#call-form input[name=path]", ".");
    await page.click("#call-run");
    await page.waitForSelector("#call-response[data-state=done]", { timeout: 10_000 });
    const listed = JSON.parse((await page.textContent("#call-response")) ?? "null") as { entries: { path: string }[] };
    expect(listed.entries.map((e) => e.path)).toEqual(expect.arrayContaining(["hello.txt", "src"]));

    // Messages: follow this server's context changes, each shown with its seq.
    await page.click("#events-open button");

    // Context: open it, then another client changes it; the page follows without a reload.
    await page.evaluate(() => ((window as unknown as { marker: number }).marker = 42));
    await page.fill("#context-id", "ui");
    await page.click("#context-open button");
    await expect.poll(() => page.textContent("#context-version"), { timeout: 10_000 }).toBe("1");
    expect(await page.textContent("#context-entries tbody")).toContain('"draft"');
    await other.contexts.updateContext({ contextId: "ui", ops: [put("status", "published"), put("reviewer", "bob")] });
    await expect.poll(() => page.textContent("#context-version"), { timeout: 10_000 }).toBe("2");
    const table = (await page.textContent("#context-entries tbody")) ?? "";
    expect(table).toContain('"published"');
    expect(table).toContain("reviewer");
    expect(await page.evaluate(() => (window as unknown as { marker?: number }).marker)).toBe(42);
    // The subscription may have started after the first change; the second one is after it.
    await expect.poll(() => page.textContent("#events"), { timeout: 10_000 }).toMatch(/#\d+ context\.changed context ui/);

    // Compare-and-set from the page at the version shown: applied.
    await page.fill("#edit-key", "status");
    await page.fill("#edit-value", '"final"');
    await page.click("#context-edit button");
    await expect.poll(() => page.textContent("#context-status")).toContain("now at version 3");
    await expect.poll(() => page.textContent("#context-version")).toBe("3");

    // Admin: the live sessions, including another client's stream.
    const session = await other.connect({ heartbeatIntervalMs: 0 });
    await page.click("#refresh-sessions");
    await expect.poll(() => page.textContent("#sessions tbody")).toContain(session.sessionId);
    session.close();

    await page.screenshot({ path: join(shots, "inspector.png"), fullPage: true });
    if (process.env["MCP_UPDATE_SCREENSHOT"] === "1") await page.screenshot({ path: join(import.meta.dirname, "../../docs/inspector.png"), fullPage: true });
    expect(existsSync(join(shots, "inspector.png"))).toBe(true);
    expect(problems).toEqual([]);
    await page.close();
  }, 60_000);

  it("shows a compare-and-set conflict as such", async () => {
    const token = await server.token("ada", ["admin"]);
    const other = createMcpClient({ baseUrl: server.url, token });
    await other.contexts.updateContext({ contextId: "cas", ops: [put("k", 0)] });
    await other.contexts.updateContext({ contextId: "cas", ops: [put("k", 1)] });
    const page = await browser.newPage();
    await page.goto(`${server.url}/inspector#token=${token}`);
    await page.fill("#context-id", "cas");
    await page.click("#context-open button");
    await expect.poll(() => page.textContent("#context-version"), { timeout: 10_000 }).toBe("2");
    // The user asks for the update only if the context is still at version 1: it is at 2.
    await page.fill("#edit-key", "k");
    await page.fill("#edit-value", "5");
    await page.fill("#edit-expected", "1");
    await page.click("#context-edit button");
    await expect.poll(() => page.textContent("#context-status"), { timeout: 10_000 }).toContain("conflict");
    expect(await page.textContent("#context-status")).toContain("version_conflict");
    expect(await page.getAttribute("#context-status", "class")).toContain("error");
    // Nothing was written.
    expect((await other.contexts.getContext({ contextId: "cas" })).toVersion).toBe(2n);
    await page.close();
  }, 60_000);
});

describe("who gets the inspector page", () => {
  let server: TestServer;
  beforeAll(async () => {
    await buildInspector();
    server = await startServer();
  });
  afterAll(() => server.close());

  it("serves it on loopback with a strict Content-Security-Policy", async () => {
    const res = await get(`${server.url}/inspector`);
    expect(res.status).toBe(200);
    const csp = String(res.headers["content-security-policy"]);
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("default-src 'none'");
    expect(csp).not.toContain("unsafe-inline");
    expect(res.headers["x-frame-options"]).toBe("DENY");
    expect(res.body).not.toMatch(/<script>(?!<\/script>)/); // no inline script
  });

  const refusals: { name: string; headers: Record<string, string>; status: number }[] = [
    // DNS rebinding: a web page's own domain resolving to 127.0.0.1.
    { name: "a Host that is not a localhost name", headers: { host: "evil.example.com" }, status: 403 },
    // A page of another origin fetching the inspector.
    { name: "another Origin", headers: { origin: "http://evil.example.com" }, status: 403 },
  ];
  for (const r of refusals) {
    it(`refuses ${r.name}`, async () => {
      expect((await get(`${server.url}/inspector`, r.headers)).status).toBe(r.status);
    });
  }

  it("refuses an address inspectorAllow does not list", async () => {
    const other = await startServer({ inspectorAllow: "10.9.8.7" });
    try {
      const res = await get(`${other.url}/inspector`);
      expect(res.status).toBe(403);
      expect(res.body).toContain("not served to 127.0.0.1");
    } finally {
      await other.close();
    }
  });

  it("has no page at all when inspectorAllow is off", async () => {
    const other = await startServer({ inspectorAllow: "off" });
    try {
      expect((await get(`${other.url}/inspector`)).status).toBe(404);
    } finally {
      await other.close();
    }
  });

  it("says how to build the assets when they are missing", async () => {
    const empty = mkdtempSync(join(tmpdir(), "mcp-inspector-empty-"));
    const endpoint = createInspectorEndpoint({ dir: empty, buildIfMissing: false });
    const http: Server = createServer((req, res) => {
      if (!endpoint(req, res)) res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
    try {
      const res = await get(`http://127.0.0.1:${(http.address() as AddressInfo).port}/inspector`);
      expect(res.status).toBe(503);
      expect(res.body).toContain("npm run build:inspector");
    } finally {
      await new Promise((resolve) => http.close(resolve));
      rmSync(empty, { recursive: true, force: true });
    }
  });
});

it("mcp serve prints the inspector's address with the development token in the fragment, which the server never sees", async () => {
  await buildInspector();
  const dir = await tempDir("mcp-inspector-cli-");
  const cli = await startCli(["--port", "0"], { cwd: dir.path, env: { MCP_JWT_SECRET: undefined, MCP_JWKS: undefined, MCP_STATE_DIR: undefined } });
  try {
    const m = /inspector: (\S+)#token=(\S+)/.exec(cli.stdout);
    expect(m?.[1]).toBe(`${cli.url}/inspector`);
    expect(m?.[2]).toBe(/export MCP_TOKEN=(\S+)/.exec(cli.stdout)?.[1]);
    const page = await get(m![1]!); // the request line carries no fragment
    expect(page.status).toBe(200);
    expect(page.body).toContain("inspector.bundle.js");
  } finally {
    await cli.close();
    await dir.remove();
  }
}, 60_000);
