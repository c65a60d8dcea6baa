/**
 * `/mcp` hands each request's caller to the SDK on its pass-through `authInfo` and gives every
 * 2026-07-28 listen stream a change bus of its own: two callers with different rights listening
 * at the same time each hear only the contexts they may read. And the body reaches the SDK
 * parsed, so a body that is not JSON must still get the SDK's own JSON-RPC answer.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fromJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMcpClient, type McpClient } from "../../src/client/index.js";
import { startServer, type TestServer } from "../helpers/server.js";

const ROOM_A = "room-a";
const ROOM_B = "room-b";
const uriOf = (id: string) => `mcp-context://${id}`;

async function modernClient(server: TestServer, token: string): Promise<Client> {
  const client = new Client({ name: "caller-test", version: "1.0.0" }, { versionNegotiation: { mode: { pin: "2026-07-28" } } });
  await client.connect(new StreamableHTTPClientTransport(new URL("/mcp", server.url), { requestInit: { headers: { authorization: `Bearer ${token}` } } }));
  return client;
}

/** A listen stream on both rooms; returns the URIs heard, in order, and its close. */
async function listenBoth(client: Client): Promise<{ heard: string[]; close(): Promise<void> }> {
  const heard: string[] = [];
  client.setNotificationHandler("notifications/resources/updated", (n) => {
    heard.push(n.params.uri);
  });
  const sub = await client.listen({ resourceSubscriptions: [uriOf(ROOM_A), uriOf(ROOM_B)] });
  // The SDK honours what the filter asks; what reaches the stream is decided by our policy.
  expect(sub.honoredFilter.resourceSubscriptions).toEqual([uriOf(ROOM_A), uriOf(ROOM_B)]);
  return { heard, close: () => sub.close() };
}

describe("/mcp: the caller of each request", () => {
  let server: TestServer;
  let dir: string;
  let native: McpClient;
  let readerA: Client;
  let readerB: Client;

  const write = (contextId: string, n: number) =>
    native.contexts.updateContext({ contextId, ops: [{ op: { case: "put", value: { key: "n", value: fromJson(ValueSchema, n) } } }] });

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "mcp-bridge-caller-"));
    const policyFile = join(dir, "policy.json");
    writeFileSync(policyFile, JSON.stringify({ roles: { "reader-a": [`context:${ROOM_A}:read`], "reader-b": [`context:${ROOM_B}:read`] } }));
    server = await startServer({ policyFile });
    native = createMcpClient({ baseUrl: server.url, token: await server.token("dana", ["developer"]) });
    readerA = await modernClient(server, await server.token("ann", ["reader-a"]));
    readerB = await modernClient(server, await server.token("ben", ["reader-b"]));
  }, 60_000);

  afterAll(async () => {
    await readerA?.close();
    await readerB?.close();
    await server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("gives each listen stream the changes its own caller may read, when two callers listen at once", async () => {
    const a = await listenBoth(readerA);
    const b = await listenBoth(readerB);
    try {
      // The streams attach to our subscription asynchronously: write until each has heard one.
      for (let i = 0; a.heard.length === 0 || b.heard.length === 0; i++) {
        if (i > 200) throw new Error(`no notifications arrived (a: ${a.heard.length}, b: ${b.heard.length})`);
        await write(ROOM_A, i);
        await write(ROOM_B, i);
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(new Set(a.heard)).toEqual(new Set([uriOf(ROOM_A)]));
      expect(new Set(b.heard)).toEqual(new Set([uriOf(ROOM_B)]));
      // Now in a known order: A, B, A. A stream bound to the wrong caller (or to both) would hear
      // B's change between A's two, and B's stream would hear A's first.
      const aFrom = a.heard.length;
      const bFrom = b.heard.length;
      await write(ROOM_A, 1000);
      await write(ROOM_B, 1000);
      await write(ROOM_A, 1001);
      for (let i = 0; a.heard.length < aFrom + 2 || b.heard.length < bFrom + 1; i++) {
        if (i > 250) throw new Error(`changes missing (a: ${a.heard.slice(aFrom).join(",")}, b: ${b.heard.slice(bFrom).join(",")})`);
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(a.heard.slice(aFrom, aFrom + 2)).toEqual([uriOf(ROOM_A), uriOf(ROOM_A)]);
      expect(b.heard[bFrom]).toBe(uriOf(ROOM_B));
    } finally {
      await a.close();
      await b.close();
    }
  });

  it("answers each request for its own caller: a read of the other's room is refused with our code", async () => {
    const ok = await readerA.readResource({ uri: uriOf(ROOM_A) });
    expect(ok.contents[0]?.uri).toBe(uriOf(ROOM_A));
    const err = (await readerA.readResource({ uri: uriOf(ROOM_B) }).catch((e: unknown) => e)) as { data?: Record<string, unknown> };
    expect(err.data?.["machine-context-protocol/error"]).toMatchObject({ kind: "SECURITY", code: "permission_denied" });
  });

  it("answers a body that is not JSON with the SDK's JSON-RPC parse error, token accepted", async () => {
    const res = await fetch(new URL("/mcp", server.url), {
      method: "POST",
      headers: {
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
        authorization: `Bearer ${await server.token("ann", ["reader-a"])}`,
      },
      body: "{ not json",
    });
    expect(res.status).toBe(400);
    const body = (await res.json()) as { error?: { code?: number } };
    expect(body.error?.code).toBe(-32700);
  });
});
