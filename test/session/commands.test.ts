/**
 * Commands on the session stream over real HTTP/2 connections (PROTOCOL.md §3 Command/Response/
 * Cancel, §4 step 4, §7): every command gets exactly one Response with the exact kind and code;
 * timeouts and Cancel fire the handler's AbortSignal; context preconditions are checked before the
 * tool runs; batches stop or run on as their mode says.
 */
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { BatchMode, type CommandSchema } from "../../gen/mcp/v1/command_pb.js";
import { ErrorKind } from "../../gen/mcp/v1/error_pb.js";
import { args, startWithTestTools, errorOf, openReader, outputOf, type Probe, type SessionReader } from "../helpers/command-tools.js";
import { handshake, type TestServer } from "../helpers/server.js";

let t: TestServer;
let probe: Probe;
/** A second server with small timeouts and batch size. */
let small: TestServer;
let smallProbe: Probe;

beforeAll(async () => {
  ({ server: t, probe } = await startWithTestTools());
  ({ server: small, probe: smallProbe } = await startWithTestTools({ defaultTimeoutMs: 150, maxTimeoutMs: 200, maxBatchSize: 3 }));
});
afterAll(async () => {
  await t.close();
  await small.close();
});

async function open(server: TestServer = t, roles = ["developer"]): Promise<SessionReader> {
  return openReader(server.url, handshake(await server.token("alice", roles)));
}

type CommandInit = MessageInitShape<typeof CommandSchema>;
let ids = 0;
const nextId = (prefix: string) => `${prefix}-${++ids}`;

/** Sends one command and returns its Response, after proving no second Response follows. */
async function runOne(s: SessionReader, command: CommandInit & { id: string }) {
  s.send({ case: "command", value: command });
  const r = await s.response(command.id);
  await s.roundTrip();
  expect(s.responsesOf(command.id)).toHaveLength(1);
  return r;
}

describe("one command, one Response", () => {
  test("echo succeeds with its output, the command id and a duration", async () => {
    const s = await open();
    const r = await runOne(s, { id: "ok-1", tool: "echo", payload: args({ text: "hello" }) });
    expect(r.commandId).toBe("ok-1");
    expect(outputOf(r)).toEqual({ text: "hello" });
    expect(r.durationMs).toBeGreaterThanOrEqual(0);
    s.close();
  });

  const failures: { name: string; command: CommandInit; roles?: string[]; want: { kind: ErrorKind; code: string; field?: string } }[] = [
    // The tool name is looked up first: nothing else is checked for an unknown tool.
    { name: "unknown tool", command: { tool: "no.such.tool" }, want: { kind: ErrorKind.COMMAND, code: "unknown_tool" } },
    // Arguments are validated against the tool's schema; the error names the offending field.
    { name: "unknown field", command: { tool: "echo", payload: args({ txt: "x" }) }, want: { kind: ErrorKind.COMMAND, code: "invalid_argument", field: "txt" } },
    { name: "wrong type", command: { tool: "sleep", payload: args({ ms: "soon" }) }, want: { kind: ErrorKind.COMMAND, code: "invalid_argument", field: "ms" } },
    { name: "below minimum", command: { tool: "sleep", payload: args({ ms: -1 }) }, want: { kind: ErrorKind.COMMAND, code: "invalid_argument", field: "ms" } },
    { name: "missing required field", command: { tool: "gate", payload: args({}) }, want: { kind: ErrorKind.COMMAND, code: "invalid_argument", field: "key" } },
    // A handler that throws is the tool's own failure.
    { name: "handler throws", command: { tool: "crash" }, want: { kind: ErrorKind.COMMAND, code: "tool_failed" } },
    // viewer has no tool:sleep.
    { name: "not permitted", command: { tool: "sleep", payload: args({ ms: 0 }) }, roles: ["viewer"], want: { kind: ErrorKind.SECURITY, code: "permission_denied" } },
  ];
  for (const { name, command, roles, want } of failures) {
    test(`${name} → ${ErrorKind[want.kind]} ${want.code}${want.field === undefined ? "" : ` (field ${want.field})`}, and the session keeps working`, async () => {
      const s = await open(t, roles);
      const id = nextId("fail");
      const r = await runOne(s, { ...command, id });
      expect(errorOf(r)).toMatchObject({ ...want, commandId: id, retryable: false });
      // The server is still up and the session still usable.
      expect(outputOf(await runOne(s, { id: nextId("after"), tool: "echo", payload: args({ text: "still here" }) }))).toEqual({ text: "still here" });
      s.close();
    });
  }

  // The runner's host keeps the authorizer's view of the session's auth state between commands
  // (core.ts `RunnerHost.subjectOf`): a refresh must replace it.
  test("after an Authentication refresh with other roles, the next command is checked against the new roles", async () => {
    const s = await open(t, ["developer"]);
    expect(outputOf(await runOne(s, { id: nextId("dev"), tool: "sleep", payload: args({ ms: 0 }) }))).toEqual({ slept: 0 });
    s.send({ case: "authentication", value: { token: await t.token("alice", ["viewer"]) } });
    await s.waitFor((m) => m.message.case === "authenticationResult", "the AuthenticationResult");
    const id = nextId("viewer");
    expect(errorOf(await runOne(s, { id, tool: "sleep", payload: args({ ms: 0 }) }))).toMatchObject({
      kind: ErrorKind.SECURITY,
      code: "permission_denied",
      commandId: id,
    });
    s.close();
  });

  test("exec while switched off → COMMAND unknown_tool, saying how to switch it on", async () => {
    const s = await open();
    const r = await runOne(s, { id: nextId("exec"), tool: "exec", payload: args({ argv: ["true"] }) });
    expect(errorOf(r)).toMatchObject({ kind: ErrorKind.COMMAND, code: "unknown_tool", field: "tool" });
    expect(r.result.case === "error" && r.result.value.message).toBe(
      'no tool named "exec": exec is disabled on this server (enable it with --exec-enabled or MCP_EXEC_ENABLED=true)',
    );
    s.close();
  });

  test("tool_failed says why in its message", async () => {
    const s = await open();
    const r = await runOne(s, { id: nextId("crash"), tool: "crash" });
    expect(r.result.case === "error" && r.result.value.message).toContain("boom");
    s.close();
  });

  test("a command without an id → PROTOCOL invalid_message naming the field id", async () => {
    const s = await open();
    s.send({ case: "command", value: { tool: "echo", payload: args({ text: "x" }) } });
    const r = await s.response("");
    expect(errorOf(r)).toMatchObject({ kind: ErrorKind.PROTOCOL, code: "invalid_message", field: "id" });
    s.close();
  });

  test("a duplicate in-flight id → PROTOCOL duplicate_command_id, and the original still completes", async () => {
    const s = await open();
    const id = nextId("dup");
    s.send({ case: "command", value: { id, tool: "gate", payload: args({ key: id }) } });
    await probe.startedOnce(id);
    s.send({ case: "command", value: { id, tool: "echo", payload: args({ text: "second" }) } });
    const first = await s.response(id);
    expect(errorOf(first)).toMatchObject({ kind: ErrorKind.PROTOCOL, code: "duplicate_command_id", commandId: id });
    probe.release(id);
    await s.waitFor((m) => m.message.case === "response" && m.message.value.commandId === id && m.message.value.result.case === "output", "the original's Response");
    await s.roundTrip();
    const all = s.responsesOf(id);
    expect(all.map((r) => r.result.case)).toEqual(["error", "output"]);
    expect(outputOf(all[1]!)).toEqual({ key: id });
    // Once the original settled, its id is free again.
    expect(outputOf(await runOne(s, { id: nextId("reuse"), tool: "echo", payload: args({ text: "x" }) }))).toEqual({ text: "x" });
    s.close();
  });
});

describe("timeouts", () => {
  test("timeout_ms → COMMAND timeout (retryable) and the handler's signal fired with it", async () => {
    const s = await open();
    const id = nextId("to");
    const r = await runOne(s, { id, tool: "sleep", timeoutMs: 50 });
    expect(errorOf(r)).toMatchObject({ kind: ErrorKind.COMMAND, code: "timeout", commandId: id, retryable: true });
    expect(await probe.abortedWith(id)).toBe("timeout");
    s.close();
  });

  test("a timeout_ms above maxTimeoutMs is capped at the server's ceiling", async () => {
    const s = await open(small);
    const id = nextId("cap");
    const r = await runOne(s, { id, tool: "sleep", timeoutMs: 3_600_000 });
    expect(errorOf(r)).toMatchObject({ kind: ErrorKind.COMMAND, code: "timeout" });
    // The message names the effective limit: the ceiling, not the hour asked for.
    expect(r.result.case === "error" && r.result.value.message).toContain("within 200 ms");
    expect(await smallProbe.abortedWith(id)).toBe("timeout");
    s.close();
  });

  test("timeout_ms 0 means the server's default timeout", async () => {
    const s = await open(small);
    const id = nextId("default");
    const r = await runOne(s, { id, tool: "sleep" });
    expect(errorOf(r)).toMatchObject({ kind: ErrorKind.COMMAND, code: "timeout" });
    expect(r.result.case === "error" && r.result.value.message).toContain("within 150 ms");
    s.close();
  });

  test("a command that finishes within its timeout succeeds", async () => {
    const s = await open();
    const r = await runOne(s, { id: nextId("quick"), tool: "sleep", payload: args({ ms: 1 }), timeoutMs: 10_000 });
    expect(outputOf(r)).toEqual({ slept: 1 });
    s.close();
  });
});

describe("Cancel", () => {
  test("Cancel → COMMAND cancelled and the handler's signal fired", async () => {
    const s = await open();
    const id = nextId("cancel");
    s.send({ case: "command", value: { id, tool: "gate", payload: args({ key: id }) } });
    await probe.startedOnce(id);
    s.send({ case: "cancel", value: { commandId: id } });
    const r = await s.response(id);
    expect(errorOf(r)).toMatchObject({ kind: ErrorKind.COMMAND, code: "cancelled", commandId: id, retryable: false });
    expect(await probe.abortedWith(id)).toBe("cancelled");
    // A second Cancel and a late release change nothing: still exactly one Response.
    s.send({ case: "cancel", value: { commandId: id } });
    probe.release(id);
    await s.roundTrip();
    expect(s.responsesOf(id)).toHaveLength(1);
    s.close();
  });

  test("Cancel of an unknown id is harmless: no message, the session goes on", async () => {
    const s = await open();
    const before = s.messages.length;
    s.send({ case: "cancel", value: { commandId: "never-sent" } });
    await s.roundTrip();
    // Only the Pong arrived.
    expect(s.messages.slice(before).map((m) => m.message.case)).toEqual(["pong"]);
    expect(outputOf(await runOne(s, { id: nextId("after-cancel"), tool: "echo", payload: args({ text: "y" }) }))).toEqual({ text: "y" });
    s.close();
  });

  test("Cancel of a finished command is harmless: its one Response stands", async () => {
    const s = await open();
    const id = nextId("done");
    await runOne(s, { id, tool: "echo", payload: args({ text: "z" }) });
    s.send({ case: "cancel", value: { commandId: id } });
    await s.roundTrip();
    expect(s.responsesOf(id).map((r) => r.result.case)).toEqual(["output"]);
    s.close();
  });
});

describe("context precondition", () => {
  let s: SessionReader;
  const ctx = `pre-${Date.now()}`;
  let version: bigint;
  beforeAll(async () => {
    s = await open();
    // Two updates: the context is at version 2.
    for (const id of ["u1", "u2"]) {
      s.send({ case: "update", value: { id, contextId: ctx, ops: [{ op: { case: "put", value: { key: "k", value: { kind: { case: "stringValue", value: id } } } } }] } });
    }
    const m = await s.waitFor((x) => x.message.case === "updateResult" && x.message.value.id === "u2", "the second update");
    if (m.message.case !== "updateResult") throw new Error("unreachable");
    expect(m.message.value.error).toBeUndefined();
    version = m.message.value.version;
    expect(version).toBe(2n);
  });
  afterAll(() => s.close());

  test("a matching context_version runs the command", async () => {
    const id = nextId("pre-ok");
    const r = await runOne(s, { id, tool: "sleep", payload: args({ ms: 0 }), contextId: ctx, contextVersion: version });
    expect(outputOf(r)).toEqual({ slept: 0 });
    expect(probe.started).toContain(id);
  });

  const refused: { name: string; contextId: () => string; contextVersion: () => bigint; want: { kind: ErrorKind; code: string; currentVersion?: bigint } }[] = [
    // An older version: the context moved on; the error carries where it is now.
    { name: "an older version", contextId: () => ctx, contextVersion: () => 1n, want: { kind: ErrorKind.CONTEXT, code: "version_conflict", currentVersion: 2n } },
    // A version the context never reached.
    { name: "a future version", contextId: () => ctx, contextVersion: () => 7n, want: { kind: ErrorKind.CONTEXT, code: "version_conflict", currentVersion: 2n } },
    { name: "a context never written", contextId: () => `${ctx}-missing`, contextVersion: () => 1n, want: { kind: ErrorKind.CONTEXT, code: "context_not_found" } },
  ];
  for (const { name, contextId, contextVersion, want } of refused) {
    test(`${name} → ${ErrorKind[want.kind]} ${want.code}, and the tool did not run`, async () => {
      const id = nextId("pre-no");
      const r = await runOne(s, { id, tool: "sleep", payload: args({ ms: 0 }), contextId: contextId(), contextVersion: contextVersion() });
      expect(errorOf(r)).toMatchObject({ ...want, commandId: id });
      expect(probe.started).not.toContain(id);
    });
  }
});

describe("batches on the stream", () => {
  test("sequential: runs in order and stops at the first error; the rest answer cancelled and never run", async () => {
    const s = await open();
    const [a, b, c, d] = ["a", "b", "c", "d"].map((x) => nextId(`seq-${x}`)) as [string, string, string, string];
    s.send({
      case: "batch",
      value: {
        mode: BatchMode.SEQUENTIAL,
        commands: [
          { id: a, tool: "sleep", payload: args({ ms: 1 }) },
          { id: b, tool: "crash" },
          { id: c, tool: "sleep", payload: args({ ms: 0 }) },
          { id: d, tool: "sleep", payload: args({ ms: 0 }) },
        ],
      },
    });
    await s.response(d);
    await s.roundTrip();
    const responses = s.messages.flatMap((m) => (m.message.case === "response" ? [m.message.value] : []));
    expect(responses.map((r) => [r.commandId, r.result.case === "error" ? r.result.value.code : "ok"])).toEqual([
      [a, "ok"],
      [b, "tool_failed"],
      [c, "cancelled"],
      [d, "cancelled"],
    ]);
    expect(errorOf(responses[2]!)).toMatchObject({ kind: ErrorKind.COMMAND, code: "cancelled", commandId: c });
    expect(probe.started).not.toContain(c);
    expect(probe.started).not.toContain(d);
    s.close();
  });

  test("sequential: each command starts only after the previous one answered", async () => {
    const s = await open();
    const [a, b] = [nextId("order-a"), nextId("order-b")];
    s.send({
      case: "batch",
      value: { mode: BatchMode.SEQUENTIAL, commands: [{ id: a, tool: "gate", payload: args({ key: a }) }, { id: b, tool: "sleep", payload: args({ ms: 0 }) }] },
    });
    await probe.startedOnce(a);
    await s.roundTrip();
    expect(probe.started).not.toContain(b);
    probe.release(a);
    expect(outputOf(await s.response(b))).toEqual({ slept: 0 });
    s.close();
  });

  test("parallel: every command runs and answers, a failure stops nothing", async () => {
    const s = await open();
    const [g, e, x, u] = [nextId("par-gate"), nextId("par-echo"), nextId("par-crash"), nextId("par-unknown")];
    s.send({
      case: "batch",
      value: {
        mode: BatchMode.PARALLEL,
        commands: [
          { id: g, tool: "gate", payload: args({ key: g }) },
          { id: x, tool: "crash" },
          { id: u, tool: "nope" },
          { id: e, tool: "echo", payload: args({ text: "p" }) },
        ],
      },
    });
    // The echo answers while the gate is still running: they run side by side.
    expect(outputOf(await s.response(e))).toEqual({ text: "p" });
    expect(errorOf(await s.response(x))).toMatchObject({ kind: ErrorKind.COMMAND, code: "tool_failed" });
    expect(errorOf(await s.response(u))).toMatchObject({ kind: ErrorKind.COMMAND, code: "unknown_tool" });
    expect(s.responsesOf(g)).toHaveLength(0);
    probe.release(g);
    expect(outputOf(await s.response(g))).toEqual({ key: g });
    await s.roundTrip();
    for (const id of [g, e, x, u]) expect(s.responsesOf(id)).toHaveLength(1);
    s.close();
  });

  for (const mode of [BatchMode.SEQUENTIAL, BatchMode.PARALLEL]) {
    test(`${BatchMode[mode]}: more than max_batch_size commands → every command answered PROTOCOL invalid_message, none run`, async () => {
      const s = await open(small);
      const batchIds = [1, 2, 3, 4].map((i) => nextId(`big-${i}`));
      s.send({ case: "batch", value: { mode, commands: batchIds.map((id) => ({ id, tool: "sleep", payload: args({ ms: 0 }) })) } });
      for (const id of batchIds) {
        expect(errorOf(await s.response(id))).toMatchObject({ kind: ErrorKind.PROTOCOL, code: "invalid_message", field: "commands", commandId: id });
      }
      await s.roundTrip();
      for (const id of batchIds) expect(s.responsesOf(id)).toHaveLength(1);
      for (const id of batchIds) expect(smallProbe.started).not.toContain(id);
      s.close();
    });
  }

  test("a batch of exactly max_batch_size runs", async () => {
    const s = await open(small);
    const batchIds = [1, 2, 3].map((i) => nextId(`fit-${i}`));
    s.send({ case: "batch", value: { mode: BatchMode.PARALLEL, commands: batchIds.map((id) => ({ id, tool: "echo", payload: args({ text: id }) })) } });
    for (const id of batchIds) expect(outputOf(await s.response(id))).toEqual({ text: id });
    s.close();
  });
});
