/**
 * The unary and server-streaming RPCs of CommandService and EventService over real HTTP (PROTOCOL.md
 * §2, §3, §7): Execute, ExecuteBatch (batch order, sequential stop, parallel, max_batch_size),
 * ExecuteStream (events, then the Response), ListTools filtered by role and level, and
 * EventService/Subscribe for a session from `after_seq`. Every case runs over the Connect protocol
 * on HTTP/1.1 and over gRPC on HTTP/2; failures carry the §7 status and the `mcp.v1.Error` detail.
 */
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { Code, ConnectError, createClient, type Client, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { BatchMode, CommandService, type Response } from "../../gen/mcp/v1/command_pb.js";
import { ErrorKind, ErrorSchema } from "../../gen/mcp/v1/error_pb.js";
import { ContextService } from "../../gen/mcp/v1/context_pb.js";
import { EventService, type Event } from "../../gen/mcp/v1/event_pb.js";
import { SecurityLevel } from "../../gen/mcp/v1/types_pb.js";
import { args, createTestTools, errorOf, openReader, outputOf, sessionIdOf, startWithTestTools, type Probe } from "../helpers/command-tools.js";
import { handshake, startServer, type TestServer } from "../helpers/server.js";

let t: TestServer;
let probe: Probe;
let small: TestServer;
beforeAll(async () => {
  ({ server: t, probe } = await startWithTestTools({ execEnabled: true }));
  small = await startServer({ tools: createTestTools().tools, maxBatchSize: 2 });
});
afterAll(async () => {
  await t.close();
  await small.close();
});

const transports: { name: string; make: (baseUrl: string, token?: string) => Transport }[] = [
  { name: "connect/http1.1", make: (baseUrl, token) => createConnectTransport({ baseUrl, httpVersion: "1.1", interceptors: bearer(token) }) },
  { name: "grpc/http2", make: (baseUrl, token) => createGrpcTransport({ baseUrl, interceptors: bearer(token) }) },
];

function bearer(token: string | undefined) {
  if (token === undefined) return [];
  return [
    (next: Parameters<import("@connectrpc/connect").Interceptor>[0]) =>
      async (req: Parameters<Parameters<import("@connectrpc/connect").Interceptor>[0]>[0]) => {
        req.header.set("authorization", `Bearer ${token}`);
        return next(req);
      },
  ];
}

/** What a failed RPC carried: status, and the mcp.v1.Error detail's kind and code. */
async function failure(p: Promise<unknown>): Promise<{ status: Code; kind?: ErrorKind; code?: string; field?: string }> {
  try {
    await p;
  } catch (e) {
    if (!(e instanceof ConnectError)) throw e;
    const d = e.findDetails(ErrorSchema)[0];
    return { status: e.code, ...(d === undefined ? {} : { kind: d.kind, code: d.code, ...(d.field === "" ? {} : { field: d.field }) }) };
  }
  throw new Error("expected the RPC to fail");
}

let ids = 0;
const nextId = (p: string) => `${p}-${++ids}`;

for (const { name, make } of transports) {
  describe(name, () => {
    let commands: Client<typeof CommandService>;
    let asViewer: Client<typeof CommandService>;
    let anonymous: Client<typeof CommandService>;
    let nobody: Client<typeof CommandService>;
    beforeAll(async () => {
      // A valid token whose only role the policy does not know: authenticated, permitted nothing.
      nobody = createClient(CommandService, make(t.url, await t.token("nora", ["no-such-role"])));
      commands = createClient(CommandService, make(t.url, await t.token("alice", ["developer"])));
      asViewer = createClient(CommandService, make(t.url, await t.token("vera", ["viewer"])));
      anonymous = createClient(CommandService, make(t.url));
    });

    describe("Execute", () => {
      test("echo returns its Response", async () => {
        const r = await commands.execute({ id: "u1", tool: "echo", payload: args({ text: "unary" }) });
        expect(r.commandId).toBe("u1");
        expect(outputOf(r)).toEqual({ text: "unary" });
      });

      const failures: { name: string; client: () => Client<typeof CommandService>; command: Parameters<Client<typeof CommandService>["execute"]>[0]; want: Awaited<ReturnType<typeof failure>> }[] = [
        { name: "unknown tool", client: () => commands, command: { tool: "nope" }, want: { status: Code.NotFound, kind: ErrorKind.COMMAND, code: "unknown_tool", field: "tool" } },
        { name: "invalid argument", client: () => commands, command: { tool: "echo", payload: args({ bogus: 1 }) }, want: { status: Code.InvalidArgument, kind: ErrorKind.COMMAND, code: "invalid_argument", field: "bogus" } },
        { name: "handler throws", client: () => commands, command: { tool: "crash" }, want: { status: Code.Internal, kind: ErrorKind.COMMAND, code: "tool_failed" } },
        { name: "timeout_ms", client: () => commands, command: { tool: "sleep", timeoutMs: 30 }, want: { status: Code.DeadlineExceeded, kind: ErrorKind.COMMAND, code: "timeout" } },
        { name: "no token", client: () => anonymous, command: { tool: "echo", payload: args({ text: "x" }) }, want: { status: Code.Unauthenticated, kind: ErrorKind.SECURITY, code: "unauthenticated" } },
        { name: "viewer runs sleep", client: () => asViewer, command: { tool: "sleep", payload: args({ ms: 0 }) }, want: { status: Code.PermissionDenied, kind: ErrorKind.SECURITY, code: "permission_denied" } },
      ];
      for (const f of failures) {
        test(`${f.name} → ${Code[f.want.status]} with ${f.want.code}`, async () => {
          expect(await failure(f.client().execute({ id: nextId("uf"), ...f.command }))).toEqual(f.want);
        });
      }

      test("the timeout fires the handler's signal; the server serves the next request", async () => {
        const id = nextId("uto");
        await failure(commands.execute({ id, tool: "sleep", timeoutMs: 30 }));
        expect(await probe.abortedWith(id)).toBe("timeout");
        expect(outputOf(await commands.execute({ tool: "echo", payload: args({ text: "next" }) }))).toEqual({ text: "next" });
      });

      test("a client that abandons the request cancels the command: the handler's signal fires", async () => {
        const id = nextId("uab");
        const ac = new AbortController();
        const p = commands.execute({ id, tool: "gate", payload: args({ key: id }) }, { signal: ac.signal });
        await probe.startedOnce(id);
        ac.abort();
        expect((await failure(p)).status).toBe(Code.Canceled);
        expect(await probe.abortedWith(id)).toBe("cancelled");
      });
    });

    describe("ExecuteBatch", () => {
      const codes = (rs: Response[]) => rs.map((r) => [r.commandId, r.result.case === "error" ? r.result.value.code : "ok"]);

      test("sequential: stops at the first error; the rest answer cancelled and never run; one Response per command in batch order", async () => {
        const [a, b, c] = [nextId("bs"), nextId("bs"), nextId("bs")];
        const r = await commands.executeBatch({
          mode: BatchMode.SEQUENTIAL,
          commands: [
            { id: a, tool: "echo", payload: args({ text: "a" }) },
            { id: b, tool: "nope" },
            { id: c, tool: "sleep", payload: args({ ms: 0 }) },
          ],
        });
        expect(codes(r.responses)).toEqual([
          [a, "ok"],
          [b, "unknown_tool"],
          [c, "cancelled"],
        ]);
        expect(errorOf(r.responses[2]!)).toMatchObject({ kind: ErrorKind.COMMAND, code: "cancelled" });
        expect(probe.started).not.toContain(c);
      });

      test("parallel: all run; Responses come in batch order though they finish in another", async () => {
        const [slow, fast, bad] = [nextId("bp"), nextId("bp"), nextId("bp")];
        const p = commands.executeBatch({
          mode: BatchMode.PARALLEL,
          commands: [
            { id: slow, tool: "gate", payload: args({ key: slow }) },
            { id: bad, tool: "crash" },
            { id: fast, tool: "echo", payload: args({ text: "f" }) },
          ],
        });
        await probe.startedOnce(slow);
        // The gate finishes last, after the crash and the echo have answered.
        probe.release(slow);
        const r = await p;
        expect(codes(r.responses)).toEqual([
          [slow, "ok"],
          [bad, "tool_failed"],
          [fast, "ok"],
        ]);
      });

      test("more than max_batch_size: every command answered PROTOCOL invalid_message, in order", async () => {
        const client = createClient(CommandService, make(small.url, await small.token()));
        const batchIds = [nextId("bm"), nextId("bm"), nextId("bm")];
        const r = await client.executeBatch({ mode: BatchMode.PARALLEL, commands: batchIds.map((id) => ({ id, tool: "echo", payload: args({ text: id }) })) });
        expect(r.responses.map((x) => x.commandId)).toEqual(batchIds);
        for (const x of r.responses) expect(errorOf(x)).toMatchObject({ kind: ErrorKind.PROTOCOL, code: "invalid_message", field: "commands" });
      });

      test("an empty batch answers with no Responses", async () => {
        expect((await commands.executeBatch({ mode: BatchMode.PARALLEL, commands: [] })).responses).toEqual([]);
      });
    });

    describe("ExecuteStream", () => {
      test("the command's events, then its Response", async () => {
        const id = nextId("es");
        const got: string[] = [];
        const events: Event[] = [];
        for await (const m of commands.executeStream({ id, tool: "count", payload: args({ count: 5 }) })) {
          got.push(m.message.case ?? "empty");
          if (m.message.case === "event") events.push(m.message.value);
          if (m.message.case === "response") expect(outputOf(m.message.value)).toEqual({ emitted: 5 });
        }
        expect(got).toEqual(["event", "event", "event", "event", "event", "response"]);
        expect(events.map((e) => [e.type, e.commandId, e.data])).toEqual([1, 2, 3, 4, 5].map((i) => ["command.progress", id, { i }]));
      });

      test("a failing command ends the stream with its error", async () => {
        const it = commands.executeStream({ id: nextId("esf"), tool: "crash" });
        expect(await failure((async () => { for await (const _ of it) { /* drain */ } })())).toEqual({ status: Code.Internal, kind: ErrorKind.COMMAND, code: "tool_failed" });
      });
    });

    describe("ListTools", () => {
      test("a developer sees every STANDARD tool; fs.write and exec are HIGH, which cleartext cannot grant", async () => {
        const names = (await commands.listTools({})).tools.map((d) => d.name).sort();
        expect(names).toEqual(["count", "crash", "echo", "fs.list", "fs.read", "fs.search", "gate", "sleep", "spam"]);
      });

      test("a descriptor carries the tool's level, permission and input schema", async () => {
        const sleep = (await commands.listTools({})).tools.find((d) => d.name === "sleep");
        expect(sleep && [sleep.securityLevel, sleep.permission, sleep.inputSchema?.["type"]]).toEqual([SecurityLevel.STANDARD, "tool:sleep", "object"]);
      });

      test("a viewer sees only what it may run: no fs.write, no exec, no test tools", async () => {
        const names = (await asViewer.listTools({})).tools.map((d) => d.name).sort();
        expect(names).toEqual(["echo", "fs.list", "fs.read", "fs.search"]);
      });

      test("without a token → SECURITY unauthenticated, like every other RPC (not an empty list)", async () => {
        expect(await failure(anonymous.listTools({}))).toEqual({ status: Code.Unauthenticated, kind: ErrorKind.SECURITY, code: "unauthenticated" });
      });

      test("a caller whose roles permit no tool gets an empty list, not an error", async () => {
        expect((await nobody.listTools({})).tools).toEqual([]);
      });
    });
  });
}

describe("EventService/Subscribe", () => {
  test("the events of a session after after_seq, then its live events, filtered by type", async () => {
    const token = await t.token("alice");
    const s = await openReader(t.url, handshake(token));
    const sessionId = sessionIdOf(s);
    s.send({ case: "command", value: { id: "ev1", tool: "count", payload: args({ count: 3 }) } });
    await s.response("ev1");
    const seqs = s.messages.flatMap((m) => (m.message.case === "event" ? [m.seq] : []));
    expect(seqs).toHaveLength(3);

    const events = createClient(EventService, createGrpcTransport({ baseUrl: t.url, interceptors: bearer(token) }));
    const ac = new AbortController();
    const got: Event[] = [];
    const reading = (async () => {
      try {
        for await (const e of events.subscribe({ sessionId, afterSeq: seqs[0]!, types: ["command."] }, { signal: ac.signal })) {
          got.push(e);
          if (got.length === 4) ac.abort();
        }
      } catch (e) {
        if (!ac.signal.aborted) throw e;
      }
    })();
    // Two replayed (after the first), then live ones from a second command. No wait is needed:
    // whichever comes first, the replay or the tap, an event is neither lost nor doubled.
    s.send({ case: "command", value: { id: "ev2", tool: "count", payload: args({ count: 2 }) } });
    await reading;
    expect(got.map((e) => [e.commandId, e.data])).toEqual([
      ["ev1", { i: 2 }],
      ["ev1", { i: 3 }],
      ["ev2", { i: 1 }],
      ["ev2", { i: 2 }],
    ]);
    expect(got.slice(0, 2).map((e) => e.seq)).toEqual(seqs.slice(1));
    s.close();
  });

  test("after_seq 0 delivers only new events (mcp.v1.SubscribeRequest)", async () => {
    const token = await t.token("alice");
    const s = await openReader(t.url, handshake(token));
    const sessionId = sessionIdOf(s);
    s.send({ case: "command", value: { id: "old", tool: "count", payload: args({ count: 2 }) } });
    await s.response("old");
    const events = createClient(EventService, createGrpcTransport({ baseUrl: t.url, interceptors: bearer(token) }));
    const ac = new AbortController();
    const it = events.subscribe({ sessionId, afterSeq: 0n, types: [] }, { signal: ac.signal })[Symbol.asyncIterator]();
    const first = it.next();
    // The subscription is in place once the server taps the session.
    const session = t.server.core.sessions.get(sessionId);
    for (let i = 0; (session?.tapCount ?? 0) === 0; i++) {
      if (i > 500) throw new Error("the subscription never reached the session");
      await new Promise((r) => setTimeout(r, 10));
    }
    s.send({ case: "command", value: { id: "new", tool: "count", payload: args({ count: 1 }) } });
    const r = await first;
    expect(r.done !== true && [r.value.commandId, r.value.data]).toEqual(["new", { i: 1 }]);
    ac.abort();
    await it.return?.().catch(() => {});
    s.close();
  });

  test("without a session id: context.changed for every context the caller may read, filtered by type", async () => {
    const token = await t.token("alice");
    const events = createClient(EventService, createGrpcTransport({ baseUrl: t.url, interceptors: bearer(token) }));
    const contexts = createClient(ContextService, createGrpcTransport({ baseUrl: t.url, interceptors: bearer(token) }));
    const ac = new AbortController();
    const it = events.subscribe({ sessionId: "", afterSeq: 0n, types: ["context."] }, { signal: ac.signal })[Symbol.asyncIterator]();
    const first = it.next();
    const put = { op: { case: "put" as const, value: { key: "k", value: { kind: { case: "boolValue" as const, value: true } } } } };
    // The subscription registers asynchronously: write until the first change is heard.
    let heard: IteratorResult<Event> | undefined;
    void first.then((r) => (heard = r));
    for (let i = 0; heard === undefined; i++) {
      if (i > 200) throw new Error("no context.changed event arrived");
      await contexts.updateContext({ contextId: "broadcast-proj", ops: [put] });
      await new Promise((r) => setTimeout(r, 10));
    }
    const e = heard.done === true ? undefined : heard.value;
    expect([e?.type, e?.contextId, e?.seq, e?.data?.["context_id"], e?.data?.["updated_by"]]).toEqual([
      "context.changed",
      "broadcast-proj",
      1n,
      "broadcast-proj",
      "alice",
    ]);
    expect(Number(e?.data?.["version"])).toBeGreaterThanOrEqual(1);
    ac.abort();
    await it.return?.().catch(() => {});
  });

  test("an after_seq the session no longer holds → NotFound session_expired, never a silent gap", async () => {
    const ring = await startServer({ tools: createTestTools().tools, resumeBufferMessages: 8 });
    try {
      const token = await ring.token("alice");
      const s = await openReader(ring.url, handshake(token));
      const sessionId = sessionIdOf(s);
      s.send({ case: "command", value: { id: "many", tool: "count", payload: args({ count: 20 }) } });
      await s.response("many");
      const events = createClient(EventService, createGrpcTransport({ baseUrl: ring.url, interceptors: bearer(token) }));
      const drain = async () => {
        for await (const _ of events.subscribe({ sessionId, afterSeq: 1n, types: [] })) {
          /* the first events are gone from the ring */
        }
      };
      expect(await failure(drain())).toEqual({ status: Code.NotFound, kind: ErrorKind.PROTOCOL, code: "session_expired" });
      s.close();
    } finally {
      await ring.close();
    }
  });

  test("another principal's session → PermissionDenied permission_denied; an unknown one → NotFound session_expired", async () => {
    const s = await openReader(t.url, handshake(await t.token("alice")));
    const sessionId = sessionIdOf(s);
    const asBob = createClient(EventService, createGrpcTransport({ baseUrl: t.url, interceptors: bearer(await t.token("bob")) }));
    const drain = async (sessionId: string) => {
      for await (const _ of asBob.subscribe({ sessionId, afterSeq: 0n, types: [] })) {
        /* nothing expected */
      }
    };
    expect(await failure(drain(sessionId))).toEqual({ status: Code.PermissionDenied, kind: ErrorKind.SECURITY, code: "permission_denied" });
    expect(await failure(drain("00000000-0000-4000-8000-000000000000"))).toEqual({ status: Code.NotFound, kind: ErrorKind.PROTOCOL, code: "session_expired" });
    s.close();
  });
});
