/**
 * Bytes in chunks end to end (docs/streams.md "Bytes and chunks"), on a real server on loopback:
 * `fs.read` with `binary` through the client session (default node:http2 path) and through
 * ExecuteStream with a connect-es gRPC client, byte for byte with invalid UTF-8 included; a 64 MiB
 * read whose server-side memory stays bounded while a slow reader holds it back; chunked
 * `fs.write` uploads, atomic when cancelled midway; and every refusal with its exact kind + code.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { create, type JsonObject } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { CommandService } from "../../gen/mcp/v1/command_pb.js";
import { ChunkSchema } from "../../gen/mcp/v1/event_pb.js";
import { createMcpClient, type McpSession } from "../../src/client/index.js";
import { INPUT_WINDOW_BYTES, MAX_CHUNK_BYTES } from "../../src/session/chunks.js";
import { collect, holdTool, sha, uploadTool } from "../helpers/chunk-tools.js";
import { eventually } from "../helpers/eventually.js";
import { startServerProcess, type ChildMemory } from "../helpers/server-process.js";
import { handshake, openRawStream, startServer, type RawStream, type TestServer } from "../helpers/server.js";

let t: TestServer;
let root = "";
let token = "";
let session: McpSession;

beforeAll(async () => {
  root = await mkdtemp(path.join(tmpdir(), "mcp-chunks-"));
  t = await startServer({ workspaceRoot: root, tools: [uploadTool(root), holdTool] });
  token = await t.token("alice", ["developer"]);
  session = await createMcpClient({ baseUrl: t.url, token }).connect();
});
afterAll(async () => {
  session.close();
  await t.close();
  await rm(root, { recursive: true, force: true });
});

/** Random bytes that are certainly not UTF-8 (a lone continuation byte and 0xff up front). */
function binary(n: number): Buffer {
  const b = randomBytes(n);
  b[0] = 0x80;
  b[1] = 0xff;
  return b;
}

describe("fs.read binary", () => {
  test("round trip through the client session: every byte, sha256 and size in the Response", async () => {
    const bytes = binary(3 * 256 * 1024 + 12345);
    await writeFile(path.join(root, "r1.bin"), bytes);
    const file = session.callChunks("fs.read", { path: "r1.bin", binary: true });
    const got = await collect(file);
    expect(got.equals(bytes)).toBe(true);
    const r = await file.response;
    expect(r.result.case).toBe("output");
    expect(r.result.value).toMatchObject({ sha256: sha(bytes), size: String(bytes.length), nextOffset: String(bytes.length), truncated: false, content: "" });
  });

  test("an offset/length range, and an empty file (one empty last chunk)", async () => {
    const bytes = binary(100_000);
    await writeFile(path.join(root, "r2.bin"), bytes);
    expect((await collect(session.callChunks("fs.read", { path: "r2.bin", binary: true, offset: 777, length: 50_000 }))).equals(bytes.subarray(777, 50_777))).toBe(true);
    await writeFile(path.join(root, "empty.bin"), "");
    const empty = session.callChunks("fs.read", { path: "empty.bin", binary: true });
    expect((await collect(empty)).length).toBe(0);
    expect((await empty.response).result.value).toMatchObject({ sha256: sha(new Uint8Array(0)), size: "0" });
  });

  test("round trip through ExecuteStream with a connect-es gRPC client: chunks in order, then the Response", async () => {
    const bytes = binary(2 * 1024 * 1024 + 3);
    await writeFile(path.join(root, "r3.bin"), bytes);
    const commands = createClient(CommandService, createGrpcTransport({ baseUrl: t.url }));
    const parts: Uint8Array[] = [];
    let expected = 0n;
    let last = false;
    let output: unknown;
    for await (const m of commands.executeStream(
      { tool: "fs.read", payload: { case: "arguments", value: { path: "r3.bin", binary: true } } },
      { headers: { authorization: `Bearer ${token}` } },
    )) {
      if (m.message.case === "event") {
        const c = m.message.value.chunk!;
        expect(m.message.value.type).toBe("command.output");
        expect(c.offset).toBe(expected);
        expect(last).toBe(false);
        expected += BigInt(c.data.length);
        last = c.last;
        parts.push(c.data);
      } else if (m.message.case === "response") {
        output = m.message.value.result.value;
      }
    }
    expect(last).toBe(true);
    expect(Buffer.concat(parts).equals(bytes)).toBe(true);
    expect(output).toMatchObject({ sha256: sha(bytes) });
  });

  test("round trip on the session stream over the Connect protocol (the connect-node path and its queue)", async () => {
    const bytes = binary(1024 * 1024 + 5);
    await writeFile(path.join(root, "r6.bin"), bytes);
    const raw = openRawStream(t.url, {}, createConnectTransport({ baseUrl: t.url, httpVersion: "2" }));
    try {
      raw.send(handshake(token));
      expect((await raw.next())?.message.case).toBe("handshakeResult");
      raw.send({ case: "command", value: { id: "c6", tool: "fs.read", payload: { case: "arguments", value: { path: "r6.bin", binary: true } } } });
      const parts: Uint8Array[] = [];
      for (let i = 0; i < 100; i++) {
        const m = await raw.next();
        if (m === undefined || m.message.case === "response") break;
        if (m.message.case === "event" && m.message.value.chunk !== undefined) {
          expect(m.message.value.seq).toBe(m.seq);
          parts.push(m.message.value.chunk.data);
        }
      }
      expect(Buffer.concat(parts).equals(bytes)).toBe(true);
    } finally {
      raw.close();
    }
  });

  test("64 MiB with a slow reader: the server (a child process) waits for it, its memory stays bounded", async () => {
    const size = 64 * 1024 * 1024;
    const want = await (async () => {
      const bytes = Buffer.alloc(size, 7);
      await writeFile(path.join(root, "big.bin"), bytes);
      return sha(bytes);
    })();
    const child = await startServerProcess({ workspaceRoot: root });
    try {
      const commands = createClient(CommandService, createGrpcTransport({ baseUrl: child.url }));
      const held = (m: ChildMemory) => m.heapUsed + m.arrayBuffers;
      const base = held(await child.memory());
      let during = 0;
      let got = 0;
      let n = 0;
      const hash = createHash("sha256");
      for await (const m of commands.executeStream(
        { tool: "fs.read", payload: { case: "arguments", value: { path: "big.bin", binary: true } } },
        { headers: { authorization: `Bearer ${await child.token()}` } },
      )) {
        if (m.message.case !== "event") continue;
        const data = m.message.value.chunk!.data;
        got += data.length;
        hash.update(data);
        // Slow for the first chunks: a server that did not wait would have read the whole file into
        // its queue meanwhile. What it retains (after a full GC) is measured then.
        if (++n <= 40) await new Promise((r) => setTimeout(r, 20));
        if (n === 40) during = held(await child.memory()) - base;
      }
      expect(got).toBe(size);
      expect(hash.digest("hex")).toBe(want);
      // About a chunk times the outbound buffer (1 MiB high water + what HTTP/2 holds), not the file.
      expect(during).toBeLessThan(8 * 1024 * 1024);
    } finally {
      await child.close();
    }
  });

  test("breaking out of for await cancels the command (its Response is cancelled)", async () => {
    await writeFile(path.join(root, "r4.bin"), Buffer.alloc(8 * 1024 * 1024, 1));
    const file = session.callChunks("fs.read", { path: "r4.bin", binary: true });
    let seen = 0;
    for await (const c of file) {
      seen += c.length;
      break;
    }
    expect(seen).toBeGreaterThan(0);
    const r = await file.response;
    expect(r.result.case).toBe("error");
    expect(r.result.value).toMatchObject({ code: "cancelled" });
  });

  // Refusals, each with its exact kind and code (PROTOCOL.md §7).
  const refusals: { name: string; args: JsonObject; kind: string; code: string }[] = [
    { name: "path outside the root", args: { path: "../outside.bin", binary: true }, kind: "SECURITY", code: "permission_denied" },
    { name: "a file that does not exist", args: { path: "nope.bin", binary: true }, kind: "COMMAND", code: "invalid_argument" },
  ];
  for (const { name, args, kind, code } of refusals) {
    test(`refused: ${name}`, async () => {
      await expect(collect(session.callChunks("fs.read", args))).rejects.toMatchObject({ kind, code });
    });
  }

  test("refused: binary over unary Execute (no stream to carry chunks) is invalid_argument", async () => {
    await writeFile(path.join(root, "r5.bin"), "x");
    const client = createMcpClient({ baseUrl: t.url, token });
    await expect(client.call("fs.read", { path: "r5.bin", binary: true })).rejects.toMatchObject({ kind: "COMMAND", code: "invalid_argument" });
  });
});

describe("fs.write chunked", () => {
  test("upload round trip: random bytes in many chunks, sha256 and size answered, no temp file left", async () => {
    const bytes = binary(3 * 1024 * 1024 + 99);
    const r = await session.upload("test.write", { path: "up1.bin", chunked: true, total_size: String(bytes.length) }, bytes, { chunkBytes: 100_000 });
    expect(r.result.case).toBe("output");
    expect(r.result.value).toMatchObject({ bytesWritten: String(bytes.length), sha256: sha(bytes) });
    expect((await readFile(path.join(root, "up1.bin"))).equals(bytes)).toBe(true);
    expect((await readdir(root)).filter((f) => f.endsWith(".tmp"))).toEqual([]);
  });

  test("an upload larger than the input window goes through (the client waits for command.input)", async () => {
    const bytes = binary(3 * INPUT_WINDOW_BYTES);
    async function* pieces() {
      for (let i = 0; i < bytes.length; i += 1_000_000) yield bytes.subarray(i, i + 1_000_000);
    }
    const r = await session.upload("test.write", { path: "up2.bin", chunked: true }, pieces());
    expect(r.result.value).toMatchObject({ sha256: sha(bytes) });
  });

  test("cancelled midway: the target keeps its old content and no temporary file is left", async () => {
    const target = path.join(root, "keep.bin");
    await writeFile(target, "old");
    const abort = new AbortController();
    let sent = 0;
    async function* slow() {
      for (;;) {
        yield Buffer.alloc(64 * 1024, 2);
        sent += 64 * 1024;
        if (sent >= 512 * 1024) abort.abort();
        await new Promise((r) => setTimeout(r, 5));
      }
    }
    const r = await session.upload("test.write", { path: "keep.bin", chunked: true }, slow(), { signal: abort.signal });
    expect(r.result.value).toMatchObject({ code: "cancelled" });
    expect(await readFile(target, "utf8")).toBe("old");
    expect((await readdir(root)).filter((f) => f.endsWith(".tmp"))).toEqual([]);
  });

  test("disconnected midway: the command ends at its timeout, the temporary file goes with it, the target is never created", async () => {
    const raw = openRawStream(t.url);
    raw.send(handshake(token));
    expect((await raw.next())?.message.case).toBe("handshakeResult");
    raw.send({ case: "command", value: { id: "gone", tool: "test.write", timeoutMs: 300, payload: { case: "arguments", value: { path: "gone.bin", chunked: true } } } });
    raw.send({ case: "commandInput", value: { commandId: "gone", chunk: { data: new Uint8Array(1000), offset: 0n } } });
    await eventually(async () => (await readdir(root)).some((f) => f.startsWith(".gone.bin.")), "the temporary file to appear");
    raw.close();
    await eventually(async () => !(await readdir(root)).some((f) => f.startsWith(".gone.bin.")), "the temporary file to be removed");
    await expect(readFile(path.join(root, "gone.bin"))).rejects.toMatchObject({ code: "ENOENT" });
  });

  test("a size that differs from total_size fails with invalid_argument and leaves the target as it was", async () => {
    const r = await session.upload("test.write", { path: "up3.bin", chunked: true, total_size: "10" }, Buffer.alloc(11));
    expect(r.result.value).toMatchObject({ kind: 5, code: "invalid_argument" });
    await expect(readFile(path.join(root, "up3.bin"))).rejects.toMatchObject({ code: "ENOENT" });
  });

  test("refused: chunked over unary Execute (no input channel) is invalid_argument", async () => {
    const client = createMcpClient({ baseUrl: t.url, token });
    await expect(client.call("test.write", { path: "u.bin", chunked: true })).rejects.toMatchObject({ kind: "COMMAND", code: "invalid_argument" });
  });

  test("refused: a path outside the root is permission_denied", async () => {
    const r = await session.upload("test.write", { path: "../escape.bin", chunked: true }, Buffer.alloc(10));
    expect(r.result.value).toMatchObject({ code: "permission_denied" });
  });
});

describe("CommandInput rules on the raw session stream", () => {
  let s: RawStream;
  beforeAll(async () => {
    s = openRawStream(t.url);
    s.send(handshake(token));
    const hr = await s.next();
    expect(hr?.message.case).toBe("handshakeResult");
    if (hr?.message.case === "handshakeResult") {
      expect(hr.message.value.limits).toMatchObject({ maxChunkBytes: MAX_CHUNK_BYTES, inputWindowBytes: INPUT_WINDOW_BYTES });
    }
  });
  afterAll(() => s.close());

  /** The next message that is not an event (acks), bounded. */
  async function nextAnswer() {
    for (let i = 0; i < 1000; i++) {
      const m = await s.next();
      if (m === undefined || m.message.case !== "event") return m;
    }
    throw new Error("no answer in 1000 messages");
  }

  const chunk = (data: Uint8Array, offset: bigint, last = false) => create(ChunkSchema, { data, offset, last });
  const start = (id: string, tool = "test.hold") => s.send({ case: "command", value: { id, tool, payload: { case: "arguments", value: {} } } });

  test("a chunk for a command that is not in flight: Error{PROTOCOL, invalid_message} naming it, the stream goes on", async () => {
    s.send({ case: "commandInput", value: { commandId: "ghost", chunk: chunk(new Uint8Array(3), 0n) } });
    const m = await nextAnswer();
    expect(m?.message.case).toBe("error");
    expect(m?.message.value).toMatchObject({ kind: 4, code: "invalid_message", commandId: "ghost" });
    s.send({ case: "ping", value: { id: 5n } });
    expect((await nextAnswer())?.message.case).toBe("pong");
  });

    // Chunks that break the rules fail their command with this code (COMMAND or TRANSPORT kind);
  // `test.hold` runs until cancelled and never reads its input, so only the core's rules answer.
  const cases: { name: string; chunks: (ReturnType<typeof chunk>)[]; code: string }[] = [
    { name: "a gap in the offsets", chunks: [chunk(new Uint8Array(10), 0n), chunk(new Uint8Array(10), 20n)], code: "invalid_argument" },
    { name: "out of order (an offset already sent)", chunks: [chunk(new Uint8Array(10), 0n), chunk(new Uint8Array(10), 0n)], code: "invalid_argument" },
    { name: "a first chunk not at 0", chunks: [chunk(new Uint8Array(10), 5n)], code: "invalid_argument" },
    { name: "a chunk after the last", chunks: [chunk(new Uint8Array(1), 0n, true), chunk(new Uint8Array(1), 1n)], code: "invalid_argument" },
    { name: "a chunk over max_chunk_bytes", chunks: [chunk(new Uint8Array(MAX_CHUNK_BYTES + 1), 0n)], code: "message_too_large" },
  ];
  let n = 0;
  for (const { name, chunks, code } of cases) {
    test(`refused: ${name} → the command fails with ${code}`, async () => {
      const id = `bad-${++n}`;
      start(id);
      for (const c of chunks) s.send({ case: "commandInput", value: { commandId: id, chunk: c } });
      const m = await nextAnswer();
      expect(m?.message.case).toBe("response");
      expect(m?.message.value).toMatchObject({ commandId: id, result: { case: "error", value: { code } } });
    });
  }

  test("more than the input window unconsumed fails the command with overloaded", async () => {
    start("flood", "test.hold");
    let offset = 0n;
    for (let i = 0; i <= INPUT_WINDOW_BYTES / MAX_CHUNK_BYTES; i++) {
      s.send({ case: "commandInput", value: { commandId: "flood", chunk: chunk(new Uint8Array(MAX_CHUNK_BYTES), offset) } });
      offset += BigInt(MAX_CHUNK_BYTES);
    }
    const m = await nextAnswer();
    expect(m?.message.case).toBe("response");
    expect(m?.message.value).toMatchObject({ commandId: "flood", result: { case: "error", value: { kind: 1, code: "overloaded" } } });
  });
});
