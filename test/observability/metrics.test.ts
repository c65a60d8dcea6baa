/**
 * GET /metrics after real traffic: stream and unary commands, an error, a context update and a
 * watch, scraped over HTTP/1.1 like Prometheus does, parsed with a strict line grammar of the
 * text exposition format (0.0.4), and checked series by series against what the traffic makes.
 */
import { afterEach, describe, expect, it } from "vitest";
import { createMcpClient } from "../../src/client/index.js";
import { startServer, type TestServer } from "../helpers/server.js";
import { eventually } from "../helpers/eventually.js";

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

// https://prometheus.io/docs/instrumenting/exposition_formats/#text-format-details
const NAME = "[a-zA-Z_:][a-zA-Z0-9_:]*";
const HELP = new RegExp(`^# HELP (${NAME}) (.*)$`);
const TYPE = new RegExp(`^# TYPE (${NAME}) (counter|gauge|histogram|summary|untyped)$`);
const SAMPLE = new RegExp(`^(${NAME})(?:\\{(.*)\\})? ([-+]?(?:[0-9.]+(?:[eE][+-]?[0-9]+)?|[Nn][Aa][Nn]|[Ii]nf))(?: -?[0-9]+)?$`);
const LABEL = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\["\\n])*)"(?:,|$)/;

/** Parses the text format; throws on any line that does not fit it. */
function parseExposition(text: string): { samples: Sample[]; types: Map<string, string> } {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split("\n")) {
    if (line === "") continue;
    if (line.startsWith("#")) {
      const t = TYPE.exec(line);
      if (t !== null) {
        expect(types.has(t[1]!), `TYPE ${t[1]} twice`).toBe(false);
        types.set(t[1]!, t[2]!);
        continue;
      }
      if (HELP.test(line)) continue;
      throw new Error(`not a HELP or TYPE line: ${line}`);
    }
    const m = SAMPLE.exec(line);
    if (m === null) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    let rest = m[2] ?? "";
    while (rest !== "") {
      const l = LABEL.exec(rest);
      if (l === null) throw new Error(`bad labels in: ${line}`);
      labels[l[1]!] = l[2]!;
      rest = rest.slice(l[0].length);
    }
    const name = m[1]!;
    // Every sample belongs to a declared family (histograms add _bucket, _sum and _count).
    const family = types.has(name) ? name : name.replace(/_(bucket|sum|count)$/, "");
    if (!types.has(family)) throw new Error(`sample of an undeclared metric: ${line}`);
    // Go's ParseFloat, which Prometheus uses, takes NaN and Inf in any case (prom-client writes "Nan").
    const raw = m[3]!.toLowerCase();
    samples.push({ name, labels, value: raw.endsWith("inf") ? (raw.startsWith("-") ? -Infinity : Infinity) : raw.endsWith("nan") ? NaN : Number(raw) });
  }
  return { samples, types };
}

function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const hit = samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v) && Object.keys(s.labels).length === Object.keys(labels).length);
  return hit?.value;
}

async function scrape(url: string, headers: Record<string, string> = {}): Promise<{ status: number; text: string; type: string | null }> {
  const r = await fetch(`${url}/metrics`, { headers });
  return { status: r.status, text: await r.text(), type: r.headers.get("content-type") };
}

let server: TestServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

describe("GET /metrics", () => {
  it("shows the series that stream and unary traffic, an error, an update and a watch produce", async () => {
    server = await startServer();
    const token = await server.token("alice", ["developer"]);
    const client = createMcpClient({ baseUrl: server.url, token });
    const session = await client.connect();
    for (let i = 0; i < 3; i++) await session.call("echo", { text: `s${i}` });
    const unknown = await session.execute({ id: "bad-1", tool: "no.such.tool" });
    expect(unknown.result.case === "error" && unknown.result.value.code).toBe("unknown_tool");
    await client.call("echo", { text: "unary" });
    await session.update({ contextId: "ctx-m", ops: [{ op: { case: "put", value: { key: "k", value: { kind: { case: "stringValue", value: "v" } } } } }] });
    await session.sync("ctx-m", 0n, true);

    let parsed: ReturnType<typeof parseExposition> | undefined;
    // The watch is counted once the stream's sync has started it.
    await eventually(async () => {
      const r = await scrape(server!.url);
      expect(r.status).toBe(200);
      expect(r.type).toMatch(/^text\/plain; version=0\.0\.4/);
      parsed = parseExposition(r.text);
      return value(parsed.samples, "mcp_context_watchers") === 1;
    }, "the watch to be counted");
    const { samples, types } = parsed!;

    expect(types.get("mcp_commands_total")).toBe("counter");
    expect(types.get("mcp_command_duration_seconds")).toBe("histogram");
    // 3 on the stream + 1 unary; the unknown tool is one bounded label, not its name.
    expect(value(samples, "mcp_commands_total", { tool: "echo", code: "ok" })).toBe(4);
    expect(value(samples, "mcp_commands_total", { tool: "_unknown", code: "unknown_tool" })).toBe(1);
    expect(samples.some((s) => s.labels["tool"] === "no.such.tool")).toBe(false);
    expect(value(samples, "mcp_command_duration_seconds_count", { tool: "echo", code: "ok" })).toBe(4);
    expect(value(samples, "mcp_command_duration_seconds_bucket", { tool: "echo", code: "ok", le: "+Inf" })).toBe(4);
    expect(value(samples, "mcp_command_duration_seconds_count", { tool: "_unknown", code: "unknown_tool" })).toBe(1);
    expect(value(samples, "mcp_errors_total", { kind: "COMMAND", code: "unknown_tool" })).toBe(1);
    expect(value(samples, "mcp_context_updates_total")).toBe(1);
    expect(value(samples, "mcp_context_versions_total")).toBe(1);
    expect(value(samples, "mcp_store_operation_duration_seconds_count", { store: "memory", operation: "apply" })).toBe(1);
    expect(value(samples, "mcp_sessions", { state: "connected" })).toBe(1);
    expect(value(samples, "mcp_sessions", { state: "detached" })).toBe(0);
    expect(value(samples, "mcp_sessions_started_total")).toBe(1);
    expect(value(samples, "mcp_commands_inflight")).toBe(0);
    // The stream's h2c connection, the unary call's and this scrape's HTTP/1.1 connection.
    expect(value(samples, "mcp_connections")).toBeGreaterThanOrEqual(2);
    expect(value(samples, "mcp_received_bytes_total", { protocol: "h2" })).toBeGreaterThan(0);
    expect(value(samples, "mcp_sent_bytes_total", { protocol: "h2" })).toBeGreaterThan(0);
    expect(value(samples, "mcp_refused_tokens_total")).toBeUndefined();
    // The process's default metrics ride along.
    expect(types.get("process_cpu_user_seconds_total")).toBe("counter");
    expect(types.has("nodejs_eventloop_lag_seconds")).toBe(true);
    // Bounded cardinality: no session ids or principals as labels anywhere.
    for (const s of samples) {
      expect(Object.values(s.labels)).not.toContain(session.sessionId);
      expect(Object.values(s.labels)).not.toContain("alice");
    }
    session.close();
  });

  it("counts refused tokens by code and leaves the session count alone", async () => {
    server = await startServer();
    const bad = createMcpClient({ baseUrl: server.url, token: "not-a-jwt" });
    await expect(bad.call("echo", { text: "x" })).rejects.toMatchObject({ kind: "SECURITY", code: "unauthenticated" });
    const { samples } = parseExposition((await scrape(server.url)).text);
    expect(value(samples, "mcp_refused_tokens_total", { code: "unauthenticated" })).toBe(1);
    expect(value(samples, "mcp_errors_total", { kind: "SECURITY", code: "unauthenticated" })).toBe(1);
    expect(value(samples, "mcp_sessions_started_total")).toBe(0);
  });

  it("with metricsToken, needs it: 401 without, 200 with", async () => {
    server = await startServer({ metricsToken: "scrape-secret" });
    const none = await scrape(server.url);
    expect(none.status).toBe(401);
    expect((await scrape(server.url, { authorization: "Bearer wrong" })).status).toBe(401);
    const ok = await scrape(server.url, { authorization: "Bearer scrape-secret" });
    expect(ok.status).toBe(200);
    expect(parseExposition(ok.text).types.get("mcp_sessions")).toBe("gauge");
  });

  it("two servers in one process keep their own registries", async () => {
    server = await startServer();
    const other = await startServer();
    try {
      await createMcpClient({ baseUrl: other.url, token: await other.token() }).call("echo", { text: "only here" });
      const mine = parseExposition((await scrape(server.url)).text).samples;
      const theirs = parseExposition((await scrape(other.url)).text).samples;
      expect(value(mine, "mcp_commands_total", { tool: "echo", code: "ok" })).toBeUndefined();
      expect(value(theirs, "mcp_commands_total", { tool: "echo", code: "ok" })).toBe(1);
    } finally {
      await other.close();
    }
  });
});
