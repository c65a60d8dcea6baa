/**
 * Half-close = drain (issue 13 item 1, ARCHITECTURE.md "A stream's life"): after the client's last
 * message every command, batch, update and sync it sent is answered on the same stream, then the
 * RPC ends with OK; a watch opened on the stream keeps it open until the client cancels. On every
 * path: the node:http2 gRPC fast path and connect-node's gRPC (compressed requests go there),
 * Connect and gRPC-Web, with connect-es clients used the ordinary way.
 */
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { createClient, type Transport } from "@connectrpc/connect";
import { compressionGzip, createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { BatchMode, CommandService } from "../../gen/mcp/v1/command_pb.js";
import { ContextService } from "../../gen/mcp/v1/context_pb.js";
import type { ServerMessage } from "../../gen/mcp/v1/session_pb.js";
import { args, createTestTools } from "../helpers/command-tools.js";
import { eventually } from "../helpers/eventually.js";
import { handshake, openRawStream, startServer, type TestServer } from "../helpers/server.js";
import { tempDir } from "../e2e/helpers.js";

let t: TestServer;
let token: string;
let dir: Awaited<ReturnType<typeof tempDir>>;

beforeAll(async () => {
  dir = await tempDir("mcp-half-close-");
  await mkdir(join(dir.path, "sub"));
  await writeFile(join(dir.path, "a.txt"), "alpha");
  await writeFile(join(dir.path, "sub", "b.txt"), "beta");
  // A short heartbeat: a half-closed client sends no Pings, and that must not drop it.
  t = await startServer({ tools: createTestTools().tools, workspaceRoot: dir.path, heartbeatIntervalMs: 100 });
  token = await t.token("hana", ["developer"]);
});
afterAll(async () => {
  await t.close();
  await dir.remove();
});

const PATHS: { name: string; transport: (url: string) => Transport }[] = [
  { name: "gRPC, node:http2 fast path", transport: (url) => createGrpcTransport({ baseUrl: url }) },
  {
    name: "gRPC gzip, connect-node",
    transport: (url) => createGrpcTransport({ baseUrl: url, sendCompression: compressionGzip, acceptCompression: [compressionGzip] }),
  },
  { name: "Connect over HTTP/2, connect-node", transport: (url) => createConnectTransport({ baseUrl: url, httpVersion: "2" }) },
  { name: "gRPC-Web over HTTP/2, connect-node", transport: (url) => createGrpcWebTransport({ baseUrl: url, httpVersion: "2" }) },
];

const responses = (all: ServerMessage[]) => all.flatMap((m) => (m.message.case === "response" ? [m.message.value] : []));

for (const p of PATHS) {
  describe(p.name, () => {
    test("slow commands, fs.list, a sequential batch, an update and a sync sent before the half-close are all answered, then the RPC ends with OK", async () => {
      const s = openRawStream(t.url, {}, p.transport(t.url));
      s.send(handshake(token));
      const n = 12;
      for (let i = 0; i < n; i++) {
        s.send({ case: "command", value: { id: `slow-${i}`, tool: "sleep", payload: args({ ms: 50 + ((i * 37) % 151) }) } });
      }
      s.send({ case: "command", value: { id: "list", tool: "fs.list", payload: args({ path: ".", recursive: true }) } });
      s.send({ case: "command", value: { id: "read", tool: "fs.read", payload: args({ path: "a.txt" }) } });
      s.send({
        case: "batch",
        value: {
          mode: BatchMode.SEQUENTIAL,
          commands: [0, 1, 2].map((i) => ({ id: `seq-${i}`, tool: "sleep", payload: args({ ms: 60 }) })),
        },
      });
      const ctx = `hc-${p.name.replace(/\W+/g, "-")}`;
      s.send({ case: "update", value: { id: "u1", contextId: ctx, ops: [{ op: { case: "put", value: { key: "k", value: { kind: { case: "stringValue", value: "v" } } } } }] } });
      s.send({ case: "sync", value: { contextId: ctx, knownVersion: 0n } });
      s.send({ case: "ping", value: { id: 7n } });
      s.end();
      const all = await s.rest();
      expect(s.failure).toBeUndefined();
      expect(all[0]?.message.case).toBe("handshakeResult");
      const byId = new Map(responses(all).map((r) => [r.commandId, r]));
      expect([...byId.keys()].sort()).toEqual(
        [...Array.from({ length: n }, (_, i) => `slow-${i}`), "list", "read", "seq-0", "seq-1", "seq-2"].sort(),
      );
      expect(responses(all)).toHaveLength(n + 5);
      for (const r of byId.values()) expect(r.result.case, `${r.commandId}: ${JSON.stringify(r.result.value)}`).not.toBe("error");
      const list = byId.get("list")!.result;
      expect(JSON.stringify(list.value)).toContain("sub/b.txt");
      expect(all.some((m) => m.message.case === "updateResult" && m.message.value.version === 1n)).toBe(true);
      expect(all.some((m) => m.message.case === "contextSync" && m.message.value.toVersion === 1n)).toBe(true);
      expect(all.some((m) => m.message.case === "pong")).toBe(true);
      // Seq by one, no gaps: nothing was lost between the half-close and the end.
      expect(all.map((m) => m.seq)).toEqual(all.map((_, i) => BigInt(i + 1)));
    });

    test("a command still running at the half-close ends with its own timeout, on the same stream", async () => {
      const s = openRawStream(t.url, {}, p.transport(t.url));
      s.send(handshake(token));
      s.send({ case: "command", value: { id: "forever", tool: "sleep", payload: args({}), timeoutMs: 150 } });
      s.end();
      const all = await s.rest();
      expect(s.failure).toBeUndefined();
      const [r] = responses(all);
      expect(r?.commandId).toBe("forever");
      expect(r?.result.case === "error" ? r.result.value.code : r?.result.case).toBe("timeout");
    });

    test("a watch keeps the half-closed stream open and delivers a change another client makes, until the client cancels", async () => {
      const ctx = `watch-${p.name.replace(/\W+/g, "-")}`;
      const s = openRawStream(t.url, {}, p.transport(t.url));
      s.send(handshake(token));
      s.send({ case: "sync", value: { contextId: ctx, knownVersion: 0n, watch: true } });
      s.end();
      const got: ServerMessage[] = [];
      const reading = (async () => {
        for (let m = await s.next(); m !== undefined; m = await s.next()) got.push(m);
      })();
      await eventually(() => got.some((m) => m.message.case === "contextSync"), "the watch's first sync");
      // Past many heartbeat intervals the stream is still open (a silent half-closed client is not dropped).
      await new Promise((r) => setTimeout(r, 500));
      const other = createClient(ContextService, createGrpcTransport({ baseUrl: t.url }));
      await other.updateContext(
        { contextId: ctx, ops: [{ op: { case: "put", value: { key: "who", value: { kind: { case: "stringValue", value: "other" } } } } }] },
        { headers: { authorization: `Bearer ${token}` } },
      );
      await eventually(
        () => got.some((m) => m.message.case === "contextSync" && m.message.value.toVersion === 1n),
        "the change pushed on the half-closed stream",
      );
      s.close();
      await reading;
    });

    test("ExecuteStream: a slow command's Response arrives after the request's end", async () => {
      const client = createClient(CommandService, p.transport(t.url));
      const out: string[] = [];
      for await (const m of client.executeStream(
        { id: "es", tool: "count", payload: args({ count: 3 }) },
        { headers: { authorization: `Bearer ${token}` } },
      )) {
        out.push(m.message.case === "event" ? m.message.value.type : `${m.message.case}:${m.message.value?.commandId}`);
      }
      expect(out).toEqual(["command.progress", "command.progress", "command.progress", "response:es"]);
      const slow: string[] = [];
      for await (const m of client.executeStream({ id: "es2", tool: "sleep", payload: args({ ms: 150 }) }, { headers: { authorization: `Bearer ${token}` } })) {
        slow.push(`${m.message.case}:${m.message.case === "response" ? m.message.value.commandId : ""}`);
      }
      expect(slow).toEqual(["response:es2"]);
    });
  });
}

