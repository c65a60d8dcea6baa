/**
 * A chunked upload (`fs.write` with `chunked`) whose connection breaks midway, through a TCP proxy
 * that cuts it (docs/streams.md "Bytes and chunks"): the session resumes, the upload's call
 * rejects with `TRANSPORT connection_lost` (retryable), the command was cancelled on the server,
 * and the target is as it was — no partial file, no temporary file. The same session then uploads
 * the file whole.
 */
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { createMcpClient, type McpClient, type SessionStateChange } from "../../src/client/index.js";
import { holdTool, sha, uploadTool } from "../helpers/chunk-tools.js";
import { eventually } from "../helpers/eventually.js";
import { clientFrame, connectH2, openH2Stream } from "../helpers/raw-h2.js";
import { handshake, startServer, type TestServer } from "../helpers/server.js";
import { startTcpProxy, type TcpProxy } from "./tcp-proxy.js";

let t: TestServer;
let proxy: TcpProxy;
let client: McpClient;
let root = "";

beforeAll(async () => {
  root = await mkdtemp(path.join(tmpdir(), "mcp-upload-cut-"));
  t = await startServer({ workspaceRoot: root, tools: [uploadTool(root), holdTool] });
  proxy = await startTcpProxy(Number(new URL(t.url).port));
  client = createMcpClient({ baseUrl: proxy.url, token: await t.token("alice", ["developer"]) });
});
afterAll(async () => {
  await proxy.close();
  await t.close();
  await rm(root, { recursive: true, force: true });
});

const temporaries = async (name: string) => (await readdir(root)).filter((f) => f.startsWith(`.${name}.`));

describe("an upload cut midway", () => {
  for (const how of ["reset", "close"] as const) {
    test(`a ${how}: the call rejects with connection_lost, the session resumes, the target is unchanged, no temporary file`, async () => {
      const name = `cut-${how}.bin`;
      const target = path.join(root, name);
      await writeFile(target, "old");
      const changes: SessionStateChange[] = [];
      const s = await client.connect({ reconnect: { initialDelayMs: 5, maxDelayMs: 30, attemptTimeoutMs: 2000 }, onStateChange: (c) => changes.push(c) });
      try {
        let sent = 0;
        let cut = false;
        // Pieces without end: only the cut stops this upload.
        async function* pieces() {
          for (;;) {
            yield Buffer.alloc(64 * 1024, 3);
            sent += 64 * 1024;
            if (!cut && sent >= 512 * 1024 && (await temporaries(name)).length > 0) {
              cut = true;
              expect(proxy.cut(how)).toBeGreaterThan(0);
            }
            await new Promise((r) => setTimeout(r, 2));
          }
        }
        const error = await s.upload("test.write", { path: name, chunked: true }, pieces()).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(cut).toBe(true);
        expect(error).toMatchObject({ kind: "TRANSPORT", code: "connection_lost", retryable: true });
        // The cancelled command's Response came on the resumed stream: the same session went on.
        expect(changes.map((c) => c.state)).toEqual(["open", "reconnecting", "open"]);
        expect(changes[2]).toMatchObject({ state: "open", resumed: true });
        expect(await readFile(target, "utf8")).toBe("old");
        await eventually(async () => (await temporaries(name)).length === 0, "the temporary file to be removed");
        // Retried on the same session, the upload goes through whole.
        const bytes = Buffer.alloc(2 * 1024 * 1024 + 1, 9);
        const r = await s.upload("test.write", { path: name, chunked: true, total_size: String(bytes.length) }, bytes);
        expect(r.result.value).toMatchObject({ bytesWritten: String(bytes.length), sha256: sha(bytes) });
        expect((await readFile(target)).equals(bytes)).toBe(true);
        expect(await temporaries(name)).toEqual([]);
      } finally {
        s.close();
      }
    });
  }

  test("a target that did not exist is not created", async () => {
    const name = "never.bin";
    const s = await client.connect({ reconnect: { initialDelayMs: 5, maxDelayMs: 30, attemptTimeoutMs: 2000 } });
    try {
      let cut = false;
      async function* pieces() {
        for (;;) {
          yield Buffer.alloc(64 * 1024, 4);
          if (!cut && (await temporaries(name)).length > 0) {
            cut = true;
            proxy.cut("reset");
          }
          await new Promise((r) => setTimeout(r, 2));
        }
      }
      await expect(s.upload("test.write", { path: name, chunked: true }, pieces())).rejects.toMatchObject({ kind: "TRANSPORT", code: "connection_lost" });
      await eventually(async () => (await temporaries(name)).length === 0, "the temporary file to be removed");
      await expect(readFile(path.join(root, name))).rejects.toMatchObject({ code: "ENOENT" });
    } finally {
      s.close();
    }
  });

  test("cut while the upload waits for the input window (no acks come on a broken stream): it notices and rejects", async () => {
    const changes: SessionStateChange[] = [];
    const s = await client.connect({ reconnect: { initialDelayMs: 5, maxDelayMs: 30, attemptTimeoutMs: 2000 }, onStateChange: (c) => changes.push(c) });
    try {
      let sent = 0;
      async function* pieces() {
        for (;;) {
          yield Buffer.alloc(256 * 1024, 5);
          sent += 256 * 1024;
        }
      }
      const upload = s.upload("test.hold", {}, pieces());
      // The window is full and nothing is consumed: the upload waits for acks that never come.
      await eventually(() => sent >= 4 * 1024 * 1024, "the upload to fill the input window");
      expect(proxy.cut("reset")).toBeGreaterThan(0);
      await expect(upload).rejects.toMatchObject({ kind: "TRANSPORT", code: "connection_lost", retryable: true });
      expect(changes.at(-1)).toMatchObject({ state: "open", resumed: true });
    } finally {
      s.close();
    }
  });
});

describe("the server tells a cut from a half-close", () => {
  test("a client that half-closes inside a frame (END_STREAM mid-message) is still refused: PROTOCOL invalid_message", async () => {
    const h2 = connectH2(t.url);
    try {
      const s = openH2Stream(h2);
      s.stream.write(clientFrame(handshake(await t.token("alice", ["developer"]))));
      expect(await s.until((m) => m.message.case === "handshakeResult")).toBeDefined();
      const input = clientFrame({ case: "commandInput", value: { commandId: "x", chunk: { data: new Uint8Array(1000), offset: 0n } } });
      s.stream.end(input.subarray(0, 500));
      const error = await s.until((m) => m.message.case === "error");
      expect(error?.message.value).toMatchObject({ kind: 4, code: "invalid_message", message: expect.stringContaining("ended inside a frame") });
    } finally {
      h2.close();
    }
  });
});
