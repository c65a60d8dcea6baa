/**
 * `createCommandRunner` at unit level (ARCHITECTURE.md "Every Command settles exactly once",
 * PROTOCOL.md §3, §6): a small in-test CommandHost whose commands the test finishes by hand, so
 * every ending — result, throw, timeout then a late result, Cancel then a late result, abortAll —
 * is provoked in a known order and the Responses counted per command id.
 */
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { describe, expect, test, vi } from "vitest";
import { create, type JsonObject } from "@bufbuild/protobuf";
import { BatchMode, CommandBatchSchema, CommandSchema, type Command, type Response } from "../../gen/mcp/v1/command_pb.js";
import { ErrorKind } from "../../gen/mcp/v1/error_pb.js";
import { McpError } from "../../src/errors.js";
import { createCommandRunner, type CommandHost, type CommandRunnerLimits } from "../../src/session/command-runner.js";

/** One command the host prepared: the test decides how and when it ends. */
interface Job {
  command: Command;
  signal: AbortSignal;
  emit: (type: string, data: JsonObject) => void;
  resolve(output: JsonObject): void;
  reject(e: unknown): void;
}

/**
 * A real CommandHost: tools are `work` (runs until the test ends it), `sync` (answers at once,
 * without a promise: its output is the command's id), `sync-throw` (its run throws synchronously),
 * `probe` (answers at once like `sync`, after calling the test's `probe.during` while it runs),
 * anything else is refused at prepare with unknown_tool. Preconditions hold for context "here" at version 3 only.
 */
function createHost() {
  const probe: { during: (command: Command) => void } = { during: () => {} };
  const jobs = new Map<string, Job>();
  const events: { commandId: string; type: string }[] = [];
  const preconditions: { contextId: string; version: bigint; release: () => void }[] = [];
  let holdPreconditions = false;
  const host: CommandHost = {
    prepare(command) {
      if (command.tool === "sync-throw") {
        // A RegisteredTool need not be made by defineTypedTool: one that throws instead of rejecting.
        return {
          run: () => {
            throw new Error("thrown, not rejected");
          },
        };
      }
      if (command.tool === "sync") return { run: () => ({ case: "output", value: { id: command.id } }) };
      if (command.tool === "probe") {
        return {
          run: () => {
            probe.during(command);
            return { case: "output", value: { id: command.id } };
          },
        };
      }
      if (command.tool !== "work") throw new McpError("unknown_tool", `no tool named "${command.tool}"`, { field: "tool" });
      return {
        run: (ctx) =>
          new Promise((resolve, reject) => {
            jobs.set(command.id, {
              command,
              signal: ctx.signal,
              emit: ctx.emit,
              resolve: (output) => resolve({ case: "output", value: output }),
              reject,
            });
          }),
      };
    },
    async checkPrecondition(contextId, version) {
      if (holdPreconditions) await new Promise<void>((release) => preconditions.push({ contextId, version, release }));
      if (contextId !== "here") throw new McpError("context_not_found", `context "${contextId}" has never been written`);
      if (version !== 3n) throw new McpError("version_conflict", `context "here" is at version 3`, { currentVersion: 3n, contextId });
    },
    emitEvent(commandId, type) {
      events.push({ commandId, type });
    },
  };
  return {
    host,
    probe,
    jobs,
    events,
    preconditions,
    holdPreconditions() {
      holdPreconditions = true;
    },
  };
}

const limits: CommandRunnerLimits = { maxInflightCommands: 3, maxBatchSize: 4, defaultTimeoutMs: 10_000, maxTimeoutMs: 60_000 };

function setup(l: CommandRunnerLimits = limits) {
  const h = createHost();
  const runner = createCommandRunner(h.host, l);
  const responses: Response[] = [];
  const waiters = new Set<() => void>();
  const onResponse = (r: Response) => {
    responses.push(r);
    for (const w of [...waiters]) w();
  };
  const of = (id: string) => responses.filter((r) => r.commandId === id);
  /** Resolves once `id` has a Response; rejects after `ms`. */
  const settled = (id: string, ms = 5000) =>
    new Promise<Response>((resolve, reject) => {
      const check = () => {
        const r = of(id)[0];
        if (r === undefined) return;
        clearTimeout(timer);
        waiters.delete(check);
        resolve(r);
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`no Response for ${id} within ${ms} ms`));
      }, ms);
      waiters.add(check);
      check();
    });
  const start = (init: Parameters<typeof create<typeof CommandSchema>>[1]) => runner.start(create(CommandSchema, init), onResponse);
  return { ...h, runner, responses, of, settled, start, onResponse };
}

/** Lets pending promise callbacks (a late result's `.then`) run. */
const flush = () => new Promise<void>((r) => setImmediate(r));

function job(jobs: Map<string, Job>, id: string): Job {
  const j = jobs.get(id);
  if (j === undefined) throw new Error(`command ${id} did not start`);
  return j;
}

function codeOf(r: Response | undefined): string {
  if (r === undefined) return "(none)";
  return r.result.case === "error" ? r.result.value.code : r.result.case ?? "(empty)";
}

describe("exactly-once settle", () => {
  test("a result settles once; a second resolution and a Cancel afterwards change nothing", async () => {
    const { runner, jobs, start, settled, of } = setup();
    start({ id: "r", tool: "work" });
    await flush();
    const j = job(jobs, "r");
    j.resolve({ answer: 42 });
    const r = await settled("r");
    expect(r.result).toEqual({ case: "output", value: { answer: 42 } });
    j.resolve({ answer: 43 });
    expect(runner.cancel("r")).toBe(false);
    await flush();
    expect(of("r")).toHaveLength(1);
    expect(j.signal.aborted).toBe(false);
    expect(runner.inflight).toBe(0);
  });

  test("a handler that throws settles once as COMMAND tool_failed", async () => {
    const { runner, jobs, start, settled, of } = setup();
    start({ id: "t", tool: "work" });
    await flush();
    job(jobs, "t").reject(new Error("disk on fire"));
    const r = await settled("t");
    expect(r.result.case === "error" && [r.result.value.kind, r.result.value.code, r.result.value.commandId, r.result.value.message]).toEqual([
      ErrorKind.COMMAND,
      "tool_failed",
      "t",
      "disk on fire",
    ]);
    await flush();
    expect(of("t")).toHaveLength(1);
    expect(runner.inflight).toBe(0);
  });

  test("a tool whose run throws synchronously settles once as COMMAND tool_failed; the runner goes on", async () => {
    const { runner, start, settled, of } = setup();
    start({ id: "s", tool: "sync-throw" });
    const r = await settled("s");
    expect(r.result.case === "error" && [r.result.value.kind, r.result.value.code, r.result.value.message]).toEqual([
      ErrorKind.COMMAND,
      "tool_failed",
      "thrown, not rejected",
    ]);
    await flush();
    expect(of("s")).toHaveLength(1);
    expect(runner.inflight).toBe(0);
    start({ id: "next", tool: "work" });
    expect(runner.inflight).toBe(1);
  });

  test("a tool that answers synchronously settles once, before start returns; a second command with its id is not a duplicate", () => {
    const { runner, start, of } = setup();
    start({ id: "now", tool: "sync" });
    expect(of("now").map((r) => r.result)).toEqual([{ case: "output", value: { id: "now" } }]);
    expect(runner.inflight).toBe(0);
    start({ id: "now", tool: "sync" });
    expect(of("now").map(codeOf)).toEqual(["output", "output"]);
  });

  // A command whose tool answers as it runs never enters the in-flight table (command-runner.ts
  // `running`); while its tool runs it is in flight all the same, for every view of the table.
  test("while a synchronous tool runs, its command is in flight: counted, listed, a duplicate id is refused", () => {
    const { runner, probe, start, of } = setup();
    const seen: { inflight: number; pending: string[] }[] = [];
    probe.during = (command) => {
      seen.push({ inflight: runner.inflight, pending: runner.pendingIds() });
      if (command.id === "outer") start({ id: "outer", tool: "sync" });
    };
    start({ id: "outer", tool: "probe" });
    expect(seen).toEqual([{ inflight: 1, pending: ["outer"] }]);
    expect(of("outer").map(codeOf)).toEqual(["duplicate_command_id", "output"]);
    expect(runner.inflight).toBe(0);
    expect(runner.pendingIds()).toEqual([]);
  });

  test("a synchronous tool run after its precondition is counted and listed once", async () => {
    const { runner, probe, start, of } = setup();
    const seen: { inflight: number; pending: string[] }[] = [];
    probe.during = () => seen.push({ inflight: runner.inflight, pending: runner.pendingIds() });
    start({ id: "pc", tool: "probe", contextId: "here", contextVersion: 3n });
    await vi.waitFor(() => expect(of("pc").map(codeOf)).toEqual(["output"]));
    expect(seen).toEqual([{ inflight: 1, pending: ["pc"] }]);
    expect(runner.inflight).toBe(0);
  });

  test("abortAll while a synchronous tool runs answers its command once, with the reason; its own result is dropped", () => {
    const { runner, probe, start, of } = setup();
    probe.during = () => runner.abortAll(new McpError("session_expired", "the session closed"));
    start({ id: "p", tool: "probe" });
    expect(of("p").map(codeOf)).toEqual(["session_expired"]);
    expect(runner.inflight).toBe(0);
  });

  test("a Cancel while a synchronous tool runs answers it cancelled, once", () => {
    const { runner, probe, start, of } = setup();
    const cancelled: boolean[] = [];
    probe.during = (command) => cancelled.push(runner.cancel(command.id));
    start({ id: "p", tool: "probe" });
    expect(cancelled).toEqual([true]);
    expect(of("p").map(codeOf)).toEqual(["cancelled"]);
    expect(runner.cancel("p")).toBe(false);
  });

  test("a sequential batch of synchronous tools: each one in flight alone while it runs, the rest pending", () => {
    const { runner, probe, onResponse } = setup();
    const seen: [number, string[]][] = [];
    probe.during = () => seen.push([runner.inflight, runner.pendingIds()]);
    runner.startBatch(
      create(CommandBatchSchema, { mode: BatchMode.SEQUENTIAL, commands: ["a", "b", "c"].map((id) => create(CommandSchema, { id, tool: "probe" })) }),
      onResponse,
    );
    expect(seen).toEqual([
      [1, ["a", "b", "c"]],
      [1, ["b", "c"]],
      [1, ["c"]],
    ]);
    expect(runner.inflight).toBe(0);
  });

  // A start takes its time from the end of the command settled last in the same synchronous run
  // (command-runner.ts `startTime`): one clock read per command that answers as it runs.
  test("commands answering as they run read the clock once each; the next run reads afresh", async () => {
    const h = createHost();
    let t = 1000;
    const reads: number[] = [];
    const now = () => (reads.push(t), t);
    const runner = createCommandRunner(h.host, limits, now);
    const responses: Response[] = [];
    // Each probe "runs" 5 ms of the test's clock.
    h.probe.during = () => (t += 5);
    for (const id of ["a", "b", "c"]) runner.start(create(CommandSchema, { id, tool: "probe" }), (r) => responses.push(r));
    expect(reads).toEqual([1000, 1005, 1010, 1015]);
    expect(responses.map((r) => r.durationMs)).toEqual([5, 5, 5]);
    await Promise.resolve();
    t += 100; // idle between runs: not counted in the next command's time
    runner.start(create(CommandSchema, { id: "d", tool: "probe" }), (r) => responses.push(r));
    expect(reads.slice(4)).toEqual([1115, 1120]);
    expect(responses[3]?.durationMs).toBe(5);
  });

  test("the deadline timer exists only while commands are in flight", async () => {
    // Timers that hold the event loop open.
    const refTimers = () => process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
    const before = refTimers();
    const { jobs, start, settled } = setup();
    start({ id: "w", tool: "work" });
    expect(refTimers()).toBe(before + 1);
    await flush();
    job(jobs, "w").resolve({});
    await settled("w");
    await flush();
    expect(refTimers()).toBe(before);
    // Commands that settle as they start never arm it.
    for (let i = 0; i < 3; i++) start({ id: `s${i}`, tool: "sync" });
    expect(refTimers()).toBe(before);
    start({ id: "w2", tool: "work" });
    expect(refTimers()).toBe(before + 1);
  });

  test("a runner whose commands are done holds nothing: no timer keeps it or its host alive", async () => {
    // A unary request makes a runner per request; a timer left armed for the timeout period would
    // keep each one (and what its host holds) for that long.
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as () => void;
    const collected: string[] = [];
    const registry = new FinalizationRegistry<string>((name) => collected.push(name));
    (() => {
      const h = createHost();
      registry.register(h.host, "host");
      createCommandRunner(h.host, limits).start(create(CommandSchema, { id: "a", tool: "work" }), () => {});
      job(h.jobs, "a").resolve({});
    })();
    for (let i = 0; i < 5 && collected.length === 0; i++) {
      await flush();
      gc();
    }
    await flush();
    expect(collected).toEqual(["host"]);
  });

  const lateEndings: { name: string; end: (j: Job) => void }[] = [
    { name: "a late result", end: (j) => j.resolve({ late: true }) },
    { name: "a late throw", end: (j) => j.reject(new Error("late")) },
  ];
  for (const { name, end } of lateEndings) {
    test(`timeout, then ${name}: one Response, COMMAND timeout, the signal fired with it`, async () => {
      const { runner, jobs, start, settled, of } = setup();
      start({ id: "slow", tool: "work", timeoutMs: 20 });
      await flush();
      const j = job(jobs, "slow");
      const r = await settled("slow");
      expect(r.result.case === "error" && [r.result.value.kind, r.result.value.code, r.result.value.retryable]).toEqual([ErrorKind.COMMAND, "timeout", true]);
      expect(j.signal.aborted).toBe(true);
      expect((j.signal.reason as McpError).code).toBe("timeout");
      expect(runner.inflight).toBe(0);
      end(j);
      await flush();
      expect(of("slow")).toHaveLength(1);
    });

    test(`Cancel, then ${name}: one Response, COMMAND cancelled, the signal fired with it`, async () => {
      const { runner, jobs, start, of } = setup();
      start({ id: "c", tool: "work" });
      await flush();
      const j = job(jobs, "c");
      expect(runner.cancel("c")).toBe(true);
      // Cancel settles synchronously: the id is free at once.
      expect(codeOf(of("c")[0])).toBe("cancelled");
      expect((j.signal.reason as McpError).code).toBe("cancelled");
      expect(runner.cancel("c")).toBe(false);
      end(j);
      await flush();
      expect(of("c")).toHaveLength(1);
      expect(runner.inflight).toBe(0);
    });
  }

  test("abortAll ends every in-flight command once with its reason; late results are dropped", async () => {
    const { runner, jobs, start, of, responses } = setup();
    for (const id of ["a", "b", "c"]) start({ id, tool: "work" });
    await flush();
    job(jobs, "b").resolve({ done: "b" });
    await flush();
    runner.abortAll(new McpError("session_expired", "gone"));
    expect(["a", "b", "c"].map((id) => codeOf(of(id)[0]))).toEqual(["session_expired", "output", "session_expired"]);
    expect(job(jobs, "a").signal.aborted).toBe(true);
    expect(job(jobs, "b").signal.aborted).toBe(false);
    for (const id of ["a", "c"]) job(jobs, id).resolve({ late: true });
    runner.abortAll(new McpError("session_expired", "again"));
    await flush();
    expect(responses.map((r) => r.commandId).sort()).toEqual(["a", "b", "c"]);
    expect(runner.inflight).toBe(0);
  });

  test("events of a settled command are dropped", async () => {
    const { runner, jobs, events, start } = setup();
    start({ id: "e", tool: "work" });
    await flush();
    const j = job(jobs, "e");
    j.emit("command.progress", { n: 1 });
    runner.cancel("e");
    j.emit("command.progress", { n: 2 });
    expect(events).toEqual([{ commandId: "e", type: "command.progress" }]);
  });
});

describe("timeouts share one timer per runner", () => {
  test("each command times out on its own deadline, shortest first, whatever the start order", async () => {
    const { start, settled } = setup();
    const startedAt = Date.now();
    start({ id: "long", tool: "work", timeoutMs: 300 });
    start({ id: "short", tool: "work", timeoutMs: 30 });
    const short = await settled("short");
    const shortAt = Date.now() - startedAt;
    const long = await settled("long");
    const longAt = Date.now() - startedAt;
    expect([codeOf(short), codeOf(long)]).toEqual(["timeout", "timeout"]);
    // Generous bounds: only the order and "not a deadline of the other command" matter here.
    expect(shortAt).toBeLessThan(250);
    expect(longAt).toBeGreaterThanOrEqual(290);
  });

  test("a command started from a timeout's Response keeps its own, earlier deadline", async () => {
    const h = createHost();
    const runner = createCommandRunner(h.host, limits);
    const codes = new Map<string, { code: string; at: number }>();
    const startedAt = Date.now();
    const done = new Promise<void>((resolve) => {
      const onResponse = (r: Response) => {
        codes.set(r.commandId, { code: codeOf(r), at: Date.now() - startedAt });
        if (r.commandId === "first") runner.start(create(CommandSchema, { id: "next", tool: "work", timeoutMs: 30 }), onResponse);
        if (r.commandId === "next") resolve();
      };
      runner.start(create(CommandSchema, { id: "first", tool: "work", timeoutMs: 20 }), onResponse);
      runner.start(create(CommandSchema, { id: "later", tool: "work", timeoutMs: 5_000 }), onResponse);
    });
    await done;
    expect(codes.get("next")?.code).toBe("timeout");
    // Started at ~20 ms with 30 ms to go: far before "later"'s 5 s deadline.
    expect(codes.get("next")!.at).toBeLessThan(2_000);
    runner.abortAll(new McpError("cancelled", "test over"));
  });
});

describe("refused before running: one synchronous Response each", () => {
  const cases: { name: string; init: { id: string; tool: string }; want: { kind: ErrorKind; code: string; field?: string } }[] = [
    // The id is the key of the in-flight table; without one nothing can be matched.
    { name: "empty id", init: { id: "", tool: "work" }, want: { kind: ErrorKind.PROTOCOL, code: "invalid_message", field: "id" } },
    // The host's own refusal keeps its code.
    { name: "host refuses", init: { id: "x", tool: "bad" }, want: { kind: ErrorKind.COMMAND, code: "unknown_tool", field: "tool" } },
  ];
  for (const { name, init, want } of cases) {
    test(`${name} → ${ErrorKind[want.kind]} ${want.code}`, () => {
      const { runner, start, responses, jobs } = setup();
      start(init);
      expect(responses).toHaveLength(1);
      expect(responses[0]?.result.case === "error" && responses[0].result.value).toMatchObject({ ...want, commandId: init.id });
      expect(jobs.size).toBe(0);
      expect(runner.inflight).toBe(0);
    });
  }

  test("a duplicate in-flight id → PROTOCOL duplicate_command_id; the original keeps running and settles once", async () => {
    const { jobs, start, of, settled } = setup();
    start({ id: "d", tool: "work" });
    start({ id: "d", tool: "work" });
    expect(of("d").map(codeOf)).toEqual(["duplicate_command_id"]);
    await flush();
    job(jobs, "d").resolve({ ok: true });
    await settled("d");
    await flush();
    expect(of("d").map(codeOf)).toEqual(["duplicate_command_id", "output"]);
  });

  test("beyond maxInflightCommands → TRANSPORT overloaded, retryable with retry_after_ms; room again once one settles", async () => {
    const { runner, jobs, start, of } = setup();
    for (const id of ["1", "2", "3"]) start({ id, tool: "work" });
    start({ id: "4", tool: "work" });
    const r = of("4")[0];
    expect(r?.result.case === "error" && r.result.value).toMatchObject({ kind: ErrorKind.TRANSPORT, code: "overloaded", retryable: true });
    expect(r?.result.case === "error" && r.result.value.retryAfterMs).toBeGreaterThan(0);
    await flush();
    runner.cancel("1");
    start({ id: "5", tool: "work" });
    await flush();
    expect(jobs.has("5")).toBe(true);
    expect(runner.inflight).toBe(3);
    runner.abortAll(new McpError("session_expired", "end"));
  });
});

describe("context precondition", () => {
  const cases: { name: string; contextId: string; version: bigint; want: string }[] = [
    { name: "matching version runs", contextId: "here", version: 3n, want: "runs" },
    { name: "other version", contextId: "here", version: 2n, want: "version_conflict" },
    { name: "missing context", contextId: "nowhere", version: 1n, want: "context_not_found" },
  ];
  for (const { name, contextId, version, want } of cases) {
    test(`${name} → ${want}`, async () => {
      const { jobs, start, settled, of } = setup();
      start({ id: "p", tool: "work", contextId, contextVersion: version });
      if (want === "runs") {
        await flush();
        job(jobs, "p").resolve({});
        expect(codeOf(await settled("p"))).toBe("output");
      } else {
        const r = await settled("p");
        expect(codeOf(r)).toBe(want);
        expect(jobs.has("p")).toBe(false);
      }
      await flush();
      expect(of("p")).toHaveLength(1);
    });
  }

  test("Cancel while the precondition is checked: cancelled once, and the tool never runs", async () => {
    const { runner, jobs, start, of, preconditions, holdPreconditions } = setup();
    holdPreconditions();
    start({ id: "pc", tool: "work", contextId: "here", contextVersion: 3n });
    await flush();
    expect(preconditions).toHaveLength(1);
    runner.cancel("pc");
    preconditions[0]!.release();
    await flush();
    await flush();
    expect(of("pc").map(codeOf)).toEqual(["cancelled"]);
    expect(jobs.has("pc")).toBe(false);
  });
});

describe("batches", () => {
  const batch = (mode: BatchMode, ids: string[], tool = "work") =>
    create(CommandBatchSchema, { mode, commands: ids.map((id) => ({ id, tool: id.startsWith("bad") ? "bad" : tool })) });

  test("sequential: one at a time; the first error cancels the rest, each answered once", async () => {
    const { runner, jobs, responses, onResponse } = setup();
    runner.startBatch(batch(BatchMode.SEQUENTIAL, ["s1", "s2", "s3", "s4"]), onResponse);
    await flush();
    expect([...jobs.keys()]).toEqual(["s1"]);
    job(jobs, "s1").resolve({});
    await flush();
    expect([...jobs.keys()]).toEqual(["s1", "s2"]);
    job(jobs, "s2").reject(new Error("no"));
    await flush();
    expect(responses.map((r) => [r.commandId, codeOf(r)])).toEqual([
      ["s1", "output"],
      ["s2", "tool_failed"],
      ["s3", "cancelled"],
      ["s4", "cancelled"],
    ]);
    expect(jobs.has("s3")).toBe(false);
  });

  test("sequential: 100,000 commands that answer synchronously run in order without growing the stack", () => {
    const { runner, responses, onResponse } = setup({ ...limits, maxBatchSize: 100_000 });
    const ids = Array.from({ length: 100_000 }, (_, i) => `q${i}`);
    runner.startBatch(batch(BatchMode.SEQUENTIAL, ids, "sync"), onResponse);
    expect(responses.map((r) => r.commandId)).toEqual(ids);
    expect(responses.every((r) => r.result.case === "output")).toBe(true);
  });

  test("sequential: a synchronous error stops the batch; the rest answer cancelled", () => {
    const { runner, responses, onResponse } = setup();
    const b = create(CommandBatchSchema, {
      mode: BatchMode.SEQUENTIAL,
      commands: [
        { id: "a", tool: "sync" },
        { id: "b", tool: "sync-throw" },
        { id: "c", tool: "sync" },
      ],
    });
    runner.startBatch(b, onResponse);
    expect(responses.map((r) => [r.commandId, codeOf(r)])).toEqual([
      ["a", "output"],
      ["b", "tool_failed"],
      ["c", "cancelled"],
    ]);
  });

  test("sequential: a command refused up front stops the batch too", () => {
    const { runner, responses, onResponse } = setup();
    runner.startBatch(batch(BatchMode.SEQUENTIAL, ["bad1", "n2"]), onResponse);
    expect(responses.map((r) => [r.commandId, codeOf(r)])).toEqual([
      ["bad1", "unknown_tool"],
      ["n2", "cancelled"],
    ]);
  });

  test("parallel: all start at once and each settles on its own", async () => {
    const { runner, jobs, responses, onResponse } = setup();
    runner.startBatch(batch(BatchMode.PARALLEL, ["p1", "bad2", "p3"]), onResponse);
    await flush();
    expect([...jobs.keys()].sort()).toEqual(["p1", "p3"]);
    job(jobs, "p3").resolve({});
    job(jobs, "p1").reject(new Error("x"));
    await flush();
    expect(responses.map((r) => [r.commandId, codeOf(r)])).toEqual([
      ["bad2", "unknown_tool"],
      ["p3", "output"],
      ["p1", "tool_failed"],
    ]);
  });

  test("over maxBatchSize: every command answered PROTOCOL invalid_message, none started", () => {
    const { runner, jobs, responses, onResponse } = setup();
    runner.startBatch(batch(BatchMode.PARALLEL, ["o1", "o2", "o3", "o4", "o5"]), onResponse);
    expect(responses.map((r) => r.commandId)).toEqual(["o1", "o2", "o3", "o4", "o5"]);
    for (const r of responses) {
      expect(r.result.case === "error" && r.result.value).toMatchObject({ kind: ErrorKind.PROTOCOL, code: "invalid_message", field: "commands" });
    }
    expect(jobs.size).toBe(0);
  });
});


describe("batches pace themselves by the outbound side (PROTOCOL.md §6)", () => {
  /**
   * An outbound side of `room` answers: congested once that many answers were taken since the
   * last drain; `drain()` empties it and wakes the batch, `end(reason)` ends the session.
   */
  function createPace(room: number) {
    let taken = 0;
    let wake: (() => void) | undefined;
    let closeReason: McpError | undefined;
    const pace = {
      get isCongested() {
        return closeReason !== undefined || taken >= room;
      },
      writable: () => new Promise<void>((resolve) => (wake = resolve)),
      get closeReason() {
        return closeReason;
      },
    };
    return {
      pace,
      take: () => void taken++,
      drain() {
        taken = 0;
        wake?.();
      },
      end(reason: McpError) {
        closeReason = reason;
        wake?.();
      },
    };
  }

  const batchOf = (mode: BatchMode, n: number, tool = "sync") =>
    create(CommandBatchSchema, { mode, commands: Array.from({ length: n }, (_, i) => ({ id: `c${i}`, tool })) });

  for (const [name, mode, n, l] of [
    ["parallel", BatchMode.PARALLEL, 10, { ...limits, maxBatchSize: 10 }],
    ["sequential", BatchMode.SEQUENTIAL, 10, { ...limits, maxBatchSize: 10 }],
    ["refused (over max_batch_size)", BatchMode.PARALLEL, 10, limits],
  ] as const) {
    test(`${name}: answers stop at the room there is and go on after each drain, each command once`, async () => {
      const h = createHost();
      const p = createPace(4);
      const runner = createCommandRunner(h.host, l, Date.now, p.pace);
      const responses: Response[] = [];
      runner.startBatch(batchOf(mode, n), (r) => {
        responses.push(r);
        p.take();
      });
      expect(responses).toHaveLength(4);
      p.drain();
      await flush();
      expect(responses).toHaveLength(8);
      p.drain();
      await flush();
      expect(responses.map((r) => r.commandId)).toEqual(Array.from({ length: n }, (_, i) => `c${i}`));
      const want = l.maxBatchSize < n ? "invalid_message" : "output";
      expect(responses.every((r) => codeOf(r) === want)).toBe(true);
    });
  }

  test("the session ends while a batch waits: the rest are answered with the reason and never run", async () => {
    const h = createHost();
    const p = createPace(2);
    const runner = createCommandRunner(h.host, { ...limits, maxBatchSize: 6 }, Date.now, p.pace);
    const responses: Response[] = [];
    runner.startBatch(batchOf(BatchMode.PARALLEL, 6), (r) => {
      responses.push(r);
      p.take();
    });
    expect(responses).toHaveLength(2);
    p.end(new McpError("session_expired", "gone"));
    await flush();
    expect(responses.map((r) => [r.commandId, codeOf(r)])).toEqual([
      ["c0", "output"],
      ["c1", "output"],
      ["c2", "session_expired"],
      ["c3", "session_expired"],
      ["c4", "session_expired"],
      ["c5", "session_expired"],
    ]);
  });
});
