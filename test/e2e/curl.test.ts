/**
 * Plain `curl` over HTTP/1.1 with the Connect protocol (JSON bodies): what any HTTP client can do
 * without our code. Includes the "typed tool three ways" check: `fs.read` with JSON arguments
 * over HTTP/1.1, with a typed `input` Any over the session stream, and with JSON arguments over
 * the session stream all return the same content.
 */
import { create, fromBinary } from "@bufbuild/protobuf";
import { anyPack, anyUnpack } from "@bufbuild/protobuf/wkt";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { FsReadInputSchema, FsReadOutputSchema } from "../../gen/mcp/tools/v1/tools_pb.js";
import { ErrorKind, ErrorSchema } from "../../gen/mcp/v1/error_pb.js";
import { handshake, openRawStream, startServer, type TestServer } from "../helpers/server.js";
import { run, tempDir } from "./helpers.js";

const CONTENT = "line one\nzweite Zeile — ünïcödé\n";
let t: TestServer;
let dir: Awaited<ReturnType<typeof tempDir>>;
let token: string;

beforeAll(async () => {
  dir = await tempDir();
  await writeFile(join(dir.path, "notes.txt"), CONTENT);
  t = await startServer({ workspaceRoot: dir.path });
  token = await t.token("dora", ["developer"]);
});
afterAll(async () => {
  await t?.close();
  await dir?.remove();
});

/** `curl --http1.1` a Connect unary call with a JSON body; returns status, headers and body. */
async function curl(method: string, body: unknown, bearer: string | null = token) {
  const args = ["-sS", "--http1.1", "-i", "-X", "POST", "-H", "content-type: application/json"];
  if (bearer !== null) args.push("-H", `authorization: Bearer ${bearer}`);
  args.push("--data-binary", JSON.stringify(body), `${t.url}/${method}`);
  const r = await run("curl", args);
  expect(r.code, r.stderr).toBe(0);
  const [head = "", ...rest] = r.stdout.split("\r\n\r\n");
  const status = /^HTTP\/1\.1 (\d+)/.exec(head);
  return { httpVersion: head.slice(0, 8), status: Number(status?.[1]), head, json: JSON.parse(rest.join("\r\n\r\n")) as Record<string, unknown> };
}

describe("curl, HTTP/1.1, Connect protocol with JSON", () => {
  test("Execute echo → 200 and the Response as JSON", async () => {
    const r = await curl("mcp.v1.CommandService/Execute", { id: "c-1", tool: "echo", arguments: { text: "over http/1.1" } });
    expect(r.httpVersion).toBe("HTTP/1.1");
    expect(r.status).toBe(200);
    expect(r.head.toLowerCase()).toContain("content-type: application/json");
    expect(r.json).toEqual({ commandId: "c-1", output: { text: "over http/1.1" }, ...(r.json["durationMs"] === undefined ? {} : { durationMs: r.json["durationMs"] }) });
  });

  // The Connect error body: HTTP status from the Connect code, and the mcp.v1.Error as a binary detail.
  const errors = [
    { name: "unknown tool", body: { id: "c-2", tool: "nope" }, bearer: "dev", http: 404, code: "not_found", kind: ErrorKind.COMMAND, mcp: "unknown_tool" },
    { name: "echo without a token", body: { tool: "echo" }, bearer: "none", http: 401, code: "unauthenticated", kind: ErrorKind.SECURITY, mcp: "unauthenticated" },
    { name: "fs.write over cleartext (HIGH tool)", body: { tool: "fs.write", arguments: { path: "x.txt", content: "x" } }, bearer: "dev", http: 403, code: "permission_denied", kind: ErrorKind.SECURITY, mcp: "insufficient_security_level" },
  ] as const;
  for (const c of errors) {
    test(`${c.name} → HTTP ${c.http} {"code":"${c.code}"} with mcp.v1.Error ${c.mcp}`, async () => {
      const r = await curl("mcp.v1.CommandService/Execute", c.body, c.bearer === "dev" ? token : null);
      expect(r.status).toBe(c.http);
      expect(r.json["code"]).toBe(c.code);
      const details = r.json["details"] as { type: string; value: string }[];
      expect(details).toHaveLength(1);
      expect(details[0]?.type).toBe("mcp.v1.Error");
      const err = fromBinary(ErrorSchema, Buffer.from(details[0]!.value, "base64"));
      expect(err.kind).toBe(c.kind);
      expect(err.code).toBe(c.mcp);
      expect(err.message).toBe(r.json["message"]);
      if ("id" in c.body) expect(err.commandId).toBe(c.body.id);
    });
  }
});

describe("typed tool three ways: fs.read", () => {
  test("JSON over HTTP/1.1, typed Any over the session stream and JSON over the stream return the same content", async () => {
    // 1. curl, HTTP/1.1, JSON arguments → JSON output
    const viaCurl = await curl("mcp.v1.CommandService/Execute", { id: "r-1", tool: "fs.read", arguments: { path: "notes.txt" } });
    expect(viaCurl.status).toBe(200);
    const curlOut = viaCurl.json["output"] as { content: string; size: string | number; truncated?: boolean };
    expect(curlOut.content).toBe(CONTENT);

    const s = openRawStream(t.url);
    try {
      s.send(handshake(token));
      expect((await s.next())?.message.case).toBe("handshakeResult");
      // 2. session stream, typed input Any(mcp.tools.v1.FsReadInput) → typed_output Any(FsReadOutput)
      s.send({
        case: "command",
        value: { id: "r-2", tool: "fs.read", payload: { case: "input", value: anyPack(FsReadInputSchema, create(FsReadInputSchema, { path: "notes.txt" })) } },
      });
      // 3. session stream, JSON arguments → JSON output
      s.send({ case: "command", value: { id: "r-3", tool: "fs.read", payload: { case: "arguments", value: { path: "notes.txt" } } } });
      const responses = new Map<string, NonNullable<Awaited<ReturnType<typeof s.next>>>>();
      while (responses.size < 2) {
        const m = await s.next();
        if (m === undefined) throw new Error(`stream ended: ${String(s.failure)}`);
        if (m.message.case === "response") responses.set(m.message.value.commandId, m);
      }
      const typed = responses.get("r-2");
      if (typed?.message.case !== "response" || typed.message.value.result.case !== "typedOutput") {
        throw new Error(`r-2: expected a typed_output, got ${JSON.stringify(typed?.message.value)}`);
      }
      const typedOut = anyUnpack(typed.message.value.result.value, FsReadOutputSchema);
      expect(typedOut?.content).toBe(CONTENT);
      expect(typedOut?.size).toBe(BigInt(Buffer.byteLength(CONTENT)));
      expect(typedOut?.truncated).toBe(false);

      const json = responses.get("r-3");
      if (json?.message.case !== "response" || json.message.value.result.case !== "output") {
        throw new Error(`r-3: expected a JSON output, got ${JSON.stringify(json?.message.value)}`);
      }
      expect(json.message.value.result.value["content"]).toBe(CONTENT);
      expect(String(curlOut.size)).toBe(String(Buffer.byteLength(CONTENT)));
      expect(String(json.message.value.result.value["size"])).toBe(String(Buffer.byteLength(CONTENT)));
    } finally {
      s.close();
    }
  });
});
