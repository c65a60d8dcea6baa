/**
 * The bridge's behaviour as a Model Context Protocol client sees it, written once and run over
 * every way in (stdio, Streamable HTTP) and both protocol eras. The client is the official SDK's
 * own `Client`; the server is ours, real, on loopback with real tokens and the test tools.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fromJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { Client, ProtocolError } from "@modelcontextprotocol/client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMcpClient } from "../../src/client/index.js";
import { ERROR_META_KEY } from "../../src/bridge/translate.js";
import { SecurityLevel } from "../../gen/mcp/v1/types_pb.js";
import { defineJsonTool } from "../../src/tools/index.js";
import { createTestTools, type Probe } from "../helpers/command-tools.js";
import { startServer, type TestServer } from "../helpers/server.js";

/** The two protocol eras and how the SDK's Client is told to speak each. */
export const ERAS = [
  { era: "2025-11-25", options: {} },
  { era: "2026-07-28", options: { versionNegotiation: { mode: { pin: "2026-07-28" as const } } } },
] as const;
export type Era = (typeof ERAS)[number];

/** How a test reaches the bridge: returns a connected SDK Client for `token` in `era`. */
export type Connect = (server: TestServer, token: string, era: Era) => Promise<Client>;

const put = (key: string, json: unknown) => ({ op: { case: "put" as const, value: { key, value: fromJson(ValueSchema, json as never) } } });

/** A write at STANDARD level (fs.write needs HIGH, so TLS): `developer` may run it, `viewer` may not. */
const noteWrite = defineJsonTool({
  name: "note.write",
  description: "Keeps a note.",
  securityLevel: SecurityLevel.STANDARD,
  annotations: { destructive: true },
  inputSchema: { type: "object", properties: { text: { type: "string" } }, required: ["text"] },
  handler: (args) => ({ kept: String(args["text"]) }),
});

/**
 * Emits `count` progress events, pausing between them and before it returns. Back-to-back
 * events just before the result can be dropped by the SDK's own client (2.4.0): it dispatches a
 * response at once but notifications a microtask later, so one read holding both loses the
 * progress (modelcontextprotocol/typescript-sdk#2580). A real long call spaces its events.
 */
const ticks = defineJsonTool({
  name: "ticks",
  description: "Emits spaced progress events.",
  securityLevel: SecurityLevel.STANDARD,
  inputSchema: { type: "object", properties: { count: { type: "integer" } }, required: ["count"] },
  async handler(args, ctx) {
    const n = Number(args["count"]);
    for (let i = 1; i <= n; i++) {
      ctx.emit("command.progress", { i, total: n });
      await sleep(50, undefined, { signal: ctx.signal });
    }
    return { emitted: n };
  },
});

/** The server's default text cap of fs.read (`maxReadBytes`), and the size of its chunks. */
const CAP = 1024 * 1024;
const CHUNK = 256 * 1024;

/**
 * A text file of `size` bytes of ASCII with a multi-byte character across each offset in
 * `across`: `ch`'s first byte is at `at - 1`, so a cut at `at` splits it.
 */
export function textFile(size: number, across: number[], ch = "€"): Buffer {
  const file = Buffer.alloc(size, "a");
  for (let i = 79; i < size; i += 80) file[i] = 0x0a; // lines, as a model's text has
  for (const at of across) Buffer.from(ch).copy(file, at - 1);
  return file;
}

/** Writes chunks until aborted: a tool whose bytes a model cannot take. */
export function endlessBytes(stopped: (reason: unknown) => void) {
  return defineJsonTool({
    name: "bytes.endless",
    description: "Streams bytes until cancelled.",
    securityLevel: SecurityLevel.STANDARD,
    inputSchema: { type: "object" },
    async handler(_args, ctx) {
      try {
        // Where the call carries no chunks (/mcp), writeChunk rejects with invalid_argument.
        for (;;) await ctx.writeChunk!(new Uint8Array(CHUNK));
      } finally {
        stopped(ctx.signal.aborted ? ctx.signal.reason : "returned");
      }
    },
  });
}

/** Our error's kind and code as a tools/call outcome shows them (thrown or isError). */
export async function outcomeOf(call: Promise<unknown>): Promise<unknown> {
  try {
    const r = (await call) as { isError?: boolean; _meta?: Record<string, unknown>; structuredContent?: unknown };
    return r.isError === true ? { isError: true, error: r._meta?.[ERROR_META_KEY] } : { result: r.structuredContent };
  } catch (e) {
    if (!(e instanceof ProtocolError)) throw e;
    const data = e.data as Record<string, { kind: string; code: string; field?: string }>;
    return { thrown: e.code, kind: data[ERROR_META_KEY]?.kind, code: data[ERROR_META_KEY]?.code };
  }
}

/** Waits for `what` with a bound, so a broken case fails instead of hanging. */
function within<T>(p: Promise<T>, what: string, ms = 10_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, limit]).finally(() => clearTimeout(timer));
}

/**
 * Registers the scenarios. `changesOverThisEra(era)` says whether the way in can deliver change
 * notifications in that era (2025-era stateless HTTP cannot: no connection outlives a request).
 */
export function bridgeScenarios(way: string, connect: Connect, changesOverThisEra: (era: Era) => boolean): void {
  for (const era of ERAS) {
    describe(`${way}, protocol ${era.era}`, () => {
      let server: TestServer;
      let probe: Probe;
      let root: string;
      let dev: Client;
      let viewer: Client;
      let devToken: string;

      let big: Buffer;
      const stops: unknown[] = [];

      beforeAll(async () => {
        root = mkdtempSync(join(tmpdir(), "mcp-bridge-"));
        writeFileSync(join(root, "hello.txt"), "hello from the workspace\n");
        // Over the cap, a "€" across the cap (where the text is cut) and across two chunk boundaries.
        big = textFile(CAP + 3 * CHUNK + 17, [CHUNK, 2 * CHUNK, CAP]);
        writeFileSync(join(root, "big.txt"), big);
        const test = createTestTools();
        probe = test.probe;
        server = await startServer({ workspaceRoot: root, tools: [...test.tools, noteWrite, ticks, endlessBytes((r) => stops.push(r))] });
        devToken = await server.token("alice", ["developer"]);
        dev = await connect(server, devToken, era);
        viewer = await connect(server, await server.token("vera", ["viewer"]), era);
      }, 60_000);

      afterAll(async () => {
        await dev?.close();
        await viewer?.close();
        await server?.close();
        rmSync(root, { recursive: true, force: true });
      });

      it("lists our tools with their schemas and annotations, filtered by the caller's permissions", async () => {
        const devTools = (await dev.listTools()).tools;
        const read = devTools.find((t) => t.name === "fs.read");
        expect(read?.inputSchema).toMatchObject({ type: "object", properties: { path: { type: "string" } } });
        expect(read?.outputSchema).toMatchObject({ type: "object", properties: { content: { type: "string" } } });
        expect(read?.annotations).toMatchObject({ readOnlyHint: true, destructiveHint: false });
        expect(devTools.map((t) => t.name)).toEqual(expect.arrayContaining(["fs.read", "note.write", "sleep", "count"]));
        // A viewer may read, not write: tools/list shows only what the caller may run.
        const viewerTools = (await viewer.listTools()).tools.map((t) => t.name);
        expect(viewerTools).toContain("fs.read");
        expect(viewerTools).not.toContain("note.write");
        expect(viewerTools).not.toContain("sleep");
      });

      it("calls fs.read and returns its structured output, the same as a native call", async () => {
        const result = await dev.callTool({ name: "fs.read", arguments: { path: "hello.txt" } });
        expect(result.isError).not.toBe(true);
        expect(result.structuredContent).toMatchObject({ content: "hello from the workspace\n", truncated: false });
        // The text rendering is the same JSON, not base64.
        const [first] = result.content as { type: string; text: string }[];
        expect(first?.type).toBe("text");
        expect(JSON.parse(first?.text ?? "null")).toEqual(result.structuredContent);
        const native = await createMcpClient({ baseUrl: server.url, token: devToken }).call("fs.read", { path: "hello.txt" });
        expect(result.structuredContent).toEqual(native);
      });

      it("reads a text file over the cap as its first part with truncated, the same as a native unary call", async () => {
        const result = await dev.callTool({ name: "fs.read", arguments: { path: "big.txt" } });
        expect(result.isError).not.toBe(true);
        const out = result.structuredContent as { content: string; size: string; nextOffset: string; truncated: boolean; chunked?: boolean };
        // The cut falls before the "€" the cap splits: the bytes up to it, exactly.
        expect(Buffer.from(out.content, "utf8").equals(big.subarray(0, CAP - 1))).toBe(true);
        expect(out).toEqual({ content: out.content, size: String(big.length), nextOffset: String(CAP - 1), truncated: true });
        // Unary Execute carries no chunks, as /mcp: the answer a model must get either way.
        const native = await createMcpClient({ baseUrl: server.url, token: devToken }).call("fs.read", { path: "big.txt" });
        expect(out).toEqual(native);
        // Reading on from next_offset starts with the whole character.
        const next = await dev.callTool({ name: "fs.read", arguments: { path: "big.txt", offset: CAP - 1, length: 3 } });
        expect(next.structuredContent).toMatchObject({ content: "€", nextOffset: String(CAP + 2), truncated: true });
      });

      it("reads a text range with a length over the cap the same way", async () => {
        const result = await dev.callTool({ name: "fs.read", arguments: { path: "big.txt", offset: 10, length: 2 * CAP } });
        const native = await createMcpClient({ baseUrl: server.url, token: devToken }).call("fs.read", { path: "big.txt", offset: 10, length: 2 * CAP });
        expect(result.structuredContent).toEqual(native);
        expect(native).toMatchObject({ size: String(big.length), nextOffset: String(CAP + 10), truncated: true });
      });

      it("refuses a binary fs.read with COMMAND invalid_argument, as a call without chunks does", async () => {
        expect(await outcomeOf(dev.callTool({ name: "fs.read", arguments: { path: "big.txt", binary: true } }))).toEqual({
          thrown: -32602,
          kind: "COMMAND",
          code: "invalid_argument",
        });
      });

      it("stops a tool that streams bytes a model cannot take, and refuses the call with invalid_argument", async () => {
        const before = stops.length;
        expect(await within(outcomeOf(dev.callTool({ name: "bytes.endless", arguments: {} })), "the endless call to settle")).toEqual({
          thrown: -32602,
          kind: "COMMAND",
          code: "invalid_argument",
        });
        await within(
          (async () => {
            while (stops.length === before) await sleep(10);
          })(),
          "the tool to stop",
        );
      });

      it("refuses a viewer's write with our kind and code in the error data", async () => {
        const err: unknown = await viewer.callTool({ name: "note.write", arguments: { text: "no" } }).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(ProtocolError);
        const data = (err as ProtocolError).data as Record<string, { kind: string; code: string }>;
        expect(data[ERROR_META_KEY]).toMatchObject({ kind: "SECURITY", code: "permission_denied" });
        expect((err as ProtocolError).message).toContain("permission_denied");
      });

      it("returns a tool's own failure as an isError result carrying our code", async () => {
        const result = await dev.callTool({ name: "crash", arguments: {} });
        expect(result.isError).toBe(true);
        expect(result._meta?.[ERROR_META_KEY]).toMatchObject({ kind: "COMMAND", code: "tool_failed" });
      });

      it("refuses an unknown tool as invalid params with code unknown_tool", async () => {
        const err = (await dev.callTool({ name: "no.such.tool", arguments: {} }).catch((e: unknown) => e)) as ProtocolError;
        expect(err).toBeInstanceOf(ProtocolError);
        expect(err.code).toBe(-32602);
        expect((err.data as Record<string, unknown>)[ERROR_META_KEY]).toMatchObject({ kind: "COMMAND", code: "unknown_tool" });
      });

      it("sends progress notifications for our progress events", async () => {
        const updates: { progress: number; total?: number | undefined; message?: string | undefined }[] = [];
        const result = await dev.callTool({ name: "ticks", arguments: { count: 3 } }, { onprogress: (p) => updates.push(p) });
        expect(result.structuredContent).toEqual({ emitted: 3 });
        expect(updates.map((u) => u.progress)).toEqual([1, 2, 3]);
        expect(updates.map((u) => u.total)).toEqual([3, 3, 3]);
        expect(updates[0]?.message).toContain("command.progress");
      });

      it("cancels a long call: the tool's AbortSignal fires with cancelled, and it has exactly one outcome", async () => {
        const before = probe.started.length;
        const ac = new AbortController();
        const call = dev.callTool({ name: "sleep", arguments: {} }, { signal: ac.signal });
        const outcome = call.then(
          () => "resolved",
          () => "rejected",
        );
        await within(
          (async () => {
            while (probe.started.length === before) await new Promise((r) => setTimeout(r, 10));
          })(),
          "the sleep tool to start",
        );
        const commandId = probe.started[before]!; // the loop above waited for it
        ac.abort("the user pressed stop");
        expect(await probe.abortedWith(commandId)).toBe("cancelled");
        expect(await within(outcome, "the call to settle")).toBe("rejected");
        expect(probe.finished).not.toContain(commandId);
        // One command started for the call, and it ended once.
        expect(probe.started.filter((id) => id === commandId)).toHaveLength(1);
      });

      it("reads a context as a resource, and notifies a change to it", async () => {
        const contextId = `bridge-${era.era}-${way.replace(/\W/g, "")}`;
        const native = createMcpClient({ baseUrl: server.url, token: devToken });
        await native.contexts.updateContext({ contextId, ops: [put("greeting", "hello")] });
        const uri = `mcp-context://${contextId}`;
        const read = await viewer.readResource({ uri });
        const [content] = read.contents as { uri: string; text: string }[];
        expect(content?.uri).toBe(uri);
        expect(JSON.parse(content?.text ?? "null")).toMatchObject({ context_id: contextId, version: "1", entries: { greeting: { value: "hello", version: "1" } } });

        const updated: string[] = [];
        viewer.setNotificationHandler("notifications/resources/updated", (n) => {
          updated.push(n.params.uri);
        });
        let close = async () => {};
        if (era.era === "2026-07-28") {
          const sub = await viewer.listen({ resourceSubscriptions: [uri] });
          expect(sub.honoredFilter.resourceSubscriptions).toEqual([uri]);
          close = () => sub.close();
        } else if (changesOverThisEra(era)) {
          expect(viewer.getServerCapabilities()?.resources?.subscribe).toBe(true);
          await viewer.subscribeResource({ uri });
          close = async () => {
            await viewer.unsubscribeResource({ uri });
          };
        } else {
          // No update could reach this client: the capability is not offered, and a subscribe
          // sent anyway is refused rather than accepted and never served.
          expect(viewer.getServerCapabilities()?.resources?.subscribe).toBeFalsy();
          const err = (await viewer.subscribeResource({ uri }).catch((e: unknown) => e)) as ProtocolError;
          expect(err).toBeInstanceOf(ProtocolError);
          expect(err.code).toBe(-32601);
          return;
        }
        try {
          // The watch registers asynchronously: write until the first notification is heard.
          for (let i = 0; updated.length === 0; i++) {
            if (i > 200) throw new Error("no notifications/resources/updated arrived");
            await native.contexts.updateContext({ contextId, ops: [put("n", i)] });
            await new Promise((r) => setTimeout(r, 20));
          }
          expect(updated[0]).toBe(uri);
          const after = JSON.parse(((await viewer.readResource({ uri })).contents[0] as { text: string }).text) as { version: string };
          expect(Number(after.version)).toBeGreaterThan(1);
        } finally {
          await close();
        }
      });

      it("refuses a context the caller may not read, with our code", async () => {
        const noContext = await connectWithRoles(server, connect, era, ["nobody"]);
        try {
          const err = (await noContext.readResource({ uri: "mcp-context://secret" }).catch((e: unknown) => e)) as ProtocolError;
          expect(err).toBeInstanceOf(ProtocolError);
          expect((err.data as Record<string, unknown>)[ERROR_META_KEY]).toMatchObject({ kind: "SECURITY", code: "permission_denied" });
        } finally {
          await noContext.close();
        }
      });
    });
  }
}

async function connectWithRoles(server: TestServer, connect: Connect, era: Era, roles: string[]): Promise<Client> {
  return connect(server, await server.token("nora", roles), era);
}
