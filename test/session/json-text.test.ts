/**
 * The JSON-text forms of a command's JSON (`Command.arguments_json`, `Response.output_json`;
 * docs/streams.md "JSON arguments and output"): accepted wherever `arguments` is, refused with
 * COMMAND invalid_argument when not a JSON object; `output_json` only to a session that asked
 * (Handshake capability `output_json`, echoed in HandshakeResult, kept on resume), Struct to
 * everyone else — unary callers included. Real servers on loopback, real JWTs.
 */
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { BatchMode, CommandService, type Response } from "../../gen/mcp/v1/command_pb.js";
import { ErrorKind, ErrorSchema } from "../../gen/mcp/v1/error_pb.js";
import { createMcpClient } from "../../src/client/index.js";
import { errorOf, openReader, outputOf, sessionIdOf, startWithTestTools, type SessionReader } from "../helpers/command-tools.js";
import { handshake, startServer, type TestServer } from "../helpers/server.js";
import { redisDatabase } from "../helpers/redis-db.js";
import { eventually } from "../helpers/eventually.js";
import { Redis } from "ioredis";

const { url: DB_URL, available: haveRedis } = await redisDatabase(12, "the output_json-across-instances test");

let t: TestServer;
beforeAll(async () => {
  ({ server: t } = await startWithTestTools());
});
afterAll(async () => {
  await t.close();
});

const text = (value: string) => ({ case: "argumentsJson" as const, value });
let ids = 0;
const nextId = (p: string) => `${p}-${++ids}`;

async function open(capabilities: string[] = []): Promise<SessionReader> {
  return openReader(t.url, handshake(await t.token("alice", ["developer"]), { capabilities }));
}

function capabilitiesOf(s: SessionReader): string[] {
  const m = s.first;
  if (m?.message.case !== "handshakeResult") throw new Error("expected a HandshakeResult");
  return m.message.value.capabilities;
}

function outputJsonOf(r: Response): string {
  if (r.result.case !== "outputJson") throw new Error(`expected output_json for ${r.commandId}, got ${r.result.case}`);
  return r.result.value;
}

const invalid: { name: string; json: string }[] = [
  { name: "not JSON", json: "{text:" },
  { name: "an array", json: '["hi"]' },
  { name: "null", json: "null" },
  { name: "a number", json: "3" },
  { name: "a string", json: '"hi"' },
];

describe("session stream", () => {
  test("arguments_json runs like arguments; without the capability the output is a Struct and nothing is echoed", async () => {
    const s = await open();
    expect(capabilitiesOf(s)).toEqual([]);
    const id = nextId("plain");
    s.send({ case: "command", value: { id, tool: "echo", payload: text('{"text":"hi"}') } });
    expect(outputOf(await s.response(id))).toEqual({ text: "hi" });
    s.close();
  });

  test("with capability output_json: echoed, and JSON outputs come as output_json (errors stay Error)", async () => {
    const s = await open(["output_json"]);
    expect(capabilitiesOf(s)).toEqual(["output_json"]);
    const id = nextId("cap");
    s.send({ case: "command", value: { id, tool: "echo", payload: text('{"text":"hé \\u2603"}') } });
    expect(JSON.parse(outputJsonOf(await s.response(id)))).toEqual({ text: "hé ☃" });
    const bad = nextId("cap-bad");
    s.send({ case: "command", value: { id: bad, tool: "echo", payload: text('{"txt":"x"}') } });
    expect(errorOf(await s.response(bad))).toMatchObject({ kind: ErrorKind.COMMAND, code: "invalid_argument", field: "txt" });
    s.close();
  });

  for (const { name, json } of invalid) {
    test(`arguments_json that is ${name} → COMMAND invalid_argument (field arguments_json), the session keeps working`, async () => {
      const s = await open();
      const id = nextId("inv");
      s.send({ case: "command", value: { id, tool: "echo", payload: text(json) } });
      expect(errorOf(await s.response(id))).toMatchObject({ kind: ErrorKind.COMMAND, code: "invalid_argument", field: "arguments_json", commandId: id, retryable: false });
      const after = nextId("after");
      s.send({ case: "command", value: { id: after, tool: "echo", payload: text('{"text":"ok"}') } });
      expect(outputOf(await s.response(after))).toEqual({ text: "ok" });
      s.close();
    });
  }

  test("a batch takes arguments_json; a sequential one stops at an invalid one", async () => {
    const s = await open();
    const [a, b, c] = [nextId("b"), nextId("b"), nextId("b")];
    s.send({
      case: "batch",
      value: {
        mode: BatchMode.SEQUENTIAL,
        commands: [
          { id: a, tool: "echo", payload: text('{"text":"one"}') },
          { id: b, tool: "echo", payload: text("[]") },
          { id: c, tool: "echo", payload: text('{"text":"three"}') },
        ],
      },
    });
    expect(outputOf(await s.response(a))).toEqual({ text: "one" });
    expect(errorOf(await s.response(b))).toMatchObject({ kind: ErrorKind.COMMAND, code: "invalid_argument", field: "arguments_json" });
    expect(errorOf(await s.response(c))).toMatchObject({ code: "cancelled" });
    s.close();
  });

  test("a resumed session keeps output_json even when the resuming Handshake does not ask", async () => {
    const tok = await t.token("alice", ["developer"]);
    const first = await openReader(t.url, handshake(tok, { capabilities: ["output_json"] }));
    const sessionId = sessionIdOf(first);
    await first.roundTrip();
    const lastSeq = first.messages.reduce((max, m) => (m.seq > max ? m.seq : max), 0n);
    first.close();
    await first.ended;
    const again = await openReader(t.url, handshake(tok, { resume: { sessionId, lastSeq } }));
    const hr = await again.waitFor((m) => m.message.case === "handshakeResult", "the resume's HandshakeResult");
    if (hr.message.case !== "handshakeResult") throw new Error("unreachable");
    expect(hr.message.value.resumed).toBe(true);
    expect(hr.message.value.capabilities).toEqual(["output_json"]);
    const id = nextId("res");
    again.send({ case: "command", value: { id, tool: "echo", payload: text('{"text":"back"}') } });
    expect(JSON.parse(outputJsonOf(await again.response(id)))).toEqual({ text: "back" });
    again.close();
  });
});

describe("unary (gRPC): arguments_json accepted, output always a Struct", () => {
  const commands = () => createClient(CommandService, createGrpcTransport({ baseUrl: t.url, interceptors: [] }));
  let token = "";
  beforeAll(async () => {
    token = await t.token("alice", ["developer"]);
  });
  const auth = () => ({ headers: { authorization: `Bearer ${token}` } });

  test("Execute and ExecuteBatch run arguments_json and answer output", async () => {
    const r = await commands().execute({ id: nextId("u"), tool: "echo", payload: text('{"text":"unary"}') }, auth());
    expect(outputOf(r)).toEqual({ text: "unary" });
    const b = await commands().executeBatch({ commands: [{ id: nextId("ub"), tool: "echo", payload: text('{"text":"batch"}') }] }, auth());
    expect(b.responses.map(outputOf)).toEqual([{ text: "batch" }]);
  });

  for (const { name, json } of invalid) {
    test(`Execute with arguments_json that is ${name} → InvalidArgument, COMMAND invalid_argument (field arguments_json)`, async () => {
      const e = await commands()
        .execute({ id: nextId("uf"), tool: "echo", payload: text(json) }, auth())
        .then(
          () => undefined,
          (x: unknown) => x,
        );
      expect(e).toBeInstanceOf(ConnectError);
      const d = (e as ConnectError).findDetails(ErrorSchema)[0];
      expect({ status: (e as ConnectError).code, kind: d?.kind, code: d?.code, field: d?.field }).toEqual({
        status: Code.InvalidArgument,
        kind: ErrorKind.COMMAND,
        code: "invalid_argument",
        field: "arguments_json",
      });
    });
  }
});

describe("our client", () => {
  for (const jsonText of [true, false]) {
    test(`jsonText ${jsonText}: call() returns the same JSON; capability ${jsonText ? "asked and confirmed" : "not asked"}`, async () => {
      const c = createMcpClient({ baseUrl: t.url, token: await t.token("alice", ["developer"]) });
      const session = await c.connect({ jsonText });
      try {
        expect(session.handshake.capabilities).toEqual(jsonText ? ["output_json"] : []);
        expect(await session.call("echo", { text: "x", n: 1 }).catch((e: unknown) => e)).toMatchObject({ kind: "COMMAND", code: "invalid_argument", message: "n: unknown field" });
        expect(await session.call("echo", { text: "round ☃" })).toEqual({ text: "round ☃" });
        // execute() and messages() see `output`, never the text form.
        const r = await session.execute({ tool: "echo", payload: { case: "arguments", value: { text: "e" } } });
        expect(r.result).toEqual({ case: "output", value: { text: "e" } });
      } finally {
        session.close();
        await c.close?.();
      }
    });
  }
});

describe.runIf(haveRedis)("with the Redis session mirror", () => {
  test("a session resumed on another instance keeps output_json", async () => {
    const [a, b] = await Promise.all([startServer({ store: DB_URL }), startServer({ store: DB_URL })]);
    const redis = new Redis(DB_URL);
    try {
      const tok = await a.token();
      const first = await openReader(a.url, handshake(tok, { capabilities: ["output_json"] }));
      const sessionId = sessionIdOf(first);
      await first.roundTrip();
      const lastSeq = first.messages.reduce((max, m) => (m.seq > max ? m.seq : max), 0n);
      first.close();
      await eventually(async () => (await redis.exists(`mcp:session:{${sessionId}}`)) === 1, "instance A to park the session");
      const again = await openReader(b.url, handshake(tok, { resume: { sessionId, lastSeq } }));
      const hr = await again.waitFor((m) => m.message.case === "handshakeResult", "the resume's HandshakeResult");
      if (hr.message.case !== "handshakeResult") throw new Error("unreachable");
      expect([hr.message.value.resumed, hr.message.value.capabilities]).toEqual([true, ["output_json"]]);
      const id = nextId("moved");
      again.send({ case: "command", value: { id, tool: "echo", payload: text('{"text":"elsewhere"}') } });
      expect(JSON.parse(outputJsonOf(await again.response(id)))).toEqual({ text: "elsewhere" });
      again.close();
    } finally {
      redis.disconnect();
      await Promise.all([a.close(), b.close()]);
    }
  });
});
