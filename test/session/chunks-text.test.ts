/**
 * Text reads beyond the cap (docs/streams.md "Bytes and chunks"), on a real server on loopback:
 * `fs.read` without `binary` of a file three times `maxReadBytes` comes whole, byte for byte, as
 * chunks on the session stream and on ExecuteStream (`chunked` set, `content` empty); unary
 * Execute still answers the first bytes up to the cap with `truncated`, and so does the in-process
 * `/mcp` bridge (a model reads text, not chunks); a read within the cap is `content` as before,
 * with no chunks.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { createClient } from "@connectrpc/connect";
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, expect, test } from "vitest";
import { CommandService } from "../../gen/mcp/v1/command_pb.js";
import { createMcpClient, type McpSession } from "../../src/client/index.js";
import { collect, sha } from "../helpers/chunk-tools.js";
import { startServer, type TestServer } from "../helpers/server.js";

/** The server's default text cap (`maxReadBytes`). */
const CAP = 1024 * 1024;

let t: TestServer;
let root = "";
let token = "";
let session: McpSession;
/** Three caps of UTF-8 text with 1- to 4-byte characters, so chunk edges cut characters. */
let text: Buffer;

beforeAll(async () => {
  root = await mkdtemp(path.join(tmpdir(), "mcp-chunks-text-"));
  const line = "plain ascii, é, €, 😀 and a newline\n";
  text = Buffer.from(line.repeat(Math.ceil((3 * CAP) / Buffer.byteLength(line))), "utf8");
  await writeFile(path.join(root, "big.txt"), text);
  await writeFile(path.join(root, "small.txt"), "within the cap\n");
  t = await startServer({ workspaceRoot: root });
  token = await t.token("alice", ["developer"]);
  session = await createMcpClient({ baseUrl: t.url, token }).connect();
});
afterAll(async () => {
  session.close();
  await t.close();
  await rm(root, { recursive: true, force: true });
});

test("the file is over three caps (the cases below read beyond the cap)", () => {
  expect(text.length).toBeGreaterThanOrEqual(3 * CAP);
});

test("session stream: a text read of 3× the cap arrives whole and byte-identical as chunks, the Response says chunked", async () => {
  const file = session.callChunks("fs.read", { path: "big.txt" });
  const got = await collect(file);
  expect(got.length).toBe(text.length);
  expect(got.equals(text)).toBe(true);
  const r = await file.response;
  expect(r.result.case).toBe("output");
  expect(r.result.value).toEqual({ content: "", size: String(text.length), nextOffset: String(text.length), truncated: false, sha256: sha(text), chunked: true });
});

test("session stream: offset and a length beyond the cap stream that range only", async () => {
  const from = 12345;
  const length = 2 * CAP + 7;
  const file = session.callChunks("fs.read", { path: "big.txt", offset: from, length });
  expect((await collect(file)).equals(text.subarray(from, from + length))).toBe(true);
  expect((await file.response).result.value).toMatchObject({ chunked: true, truncated: true, nextOffset: String(from + length) });
});

test("session stream: a text read within the cap is content as before, no chunks", async () => {
  const file = session.callChunks("fs.read", { path: "small.txt" });
  expect((await collect(file)).length).toBe(0);
  expect((await file.response).result.value).toEqual({ content: "within the cap\n", size: "15", nextOffset: "15", truncated: false });
});

test("ExecuteStream (connect-es gRPC): the text comes as chunks in offset order, then the Response with chunked", async () => {
  const commands = createClient(CommandService, createGrpcTransport({ baseUrl: t.url }));
  const parts: Uint8Array[] = [];
  let expected = 0n;
  let output: unknown;
  for await (const m of commands.executeStream({ tool: "fs.read", payload: { case: "arguments", value: { path: "big.txt" } } }, { headers: { authorization: `Bearer ${token}` } })) {
    if (m.message.case === "event") {
      const c = m.message.value.chunk!;
      expect(c.offset).toBe(expected);
      expected += BigInt(c.data.length);
      parts.push(c.data);
    } else if (m.message.case === "response") {
      output = m.message.value.result.value;
    }
  }
  expect(Buffer.concat(parts).equals(text)).toBe(true);
  expect(output).toMatchObject({ chunked: true, content: "", sha256: sha(text) });
});

test("unary Execute: the same read is cut at the cap (on a whole character) with truncated and next_offset", async () => {
  const out = await createMcpClient({ baseUrl: t.url, token }).call("fs.read", { path: "big.txt" });
  const content = out["content"] as string;
  const bytes = Buffer.from(content, "utf8");
  expect(bytes.length).toBeLessThanOrEqual(CAP);
  expect(bytes.length).toBeGreaterThan(CAP - 4);
  expect(bytes.equals(text.subarray(0, bytes.length))).toBe(true);
  expect(out).toMatchObject({ truncated: true, nextOffset: String(bytes.length), size: String(text.length) });
  expect(out["chunked"]).toBeUndefined();
});

test("the /mcp bridge (official SDK client): the same read is cut at the cap as on unary, not chunked", async () => {
  const mcp = new Client({ name: "chunks-text", version: "1.0.0" });
  await mcp.connect(new StreamableHTTPClientTransport(new URL("/mcp", t.url), { requestInit: { headers: { authorization: `Bearer ${token}` } } }));
  try {
    const r = await mcp.callTool({ name: "fs.read", arguments: { path: "big.txt" } });
    const out = r.structuredContent as { content: string; truncated: boolean; chunked?: boolean };
    expect(Buffer.byteLength(out.content, "utf8")).toBeGreaterThan(CAP - 4);
    expect(out.truncated).toBe(true);
    expect(out.chunked).toBeUndefined();
  } finally {
    await mcp.close();
  }
});
