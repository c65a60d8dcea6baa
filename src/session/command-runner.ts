/**
 * Runs a session's commands: the in-flight table, timeouts, Cancel, batches, and the rule that
 * every command settles exactly once (PROTOCOL.md §3, §4 step 4, §6). `settle()` below is the
 * only place a command ends; every path — result, error, timeout, cancel, crash, session gone —
 * goes through it.
 */
import { create, type JsonObject } from "@bufbuild/protobuf";
import { BatchMode, ResponseSchema, type Command, type CommandBatch, type Response } from "../../gen/mcp/v1/command_pb.js";
import { McpError, fromProtoError, toMcpError, toProtoError } from "../errors.js";
import type { ToolContext, WriteChunkOptions } from "../tools/registered-tool.js";
import type { CommandInput } from "../../gen/mcp/v1/session_pb.js";
import { abortInput, inputAckData, INPUT_EVENT, pushInput, readChunks, writeChunk, type CommandChunks, type EmitChunk } from "./chunks.js";
import type { CommandObserver } from "../observability/telemetry.js";
import type { Span } from "@opentelemetry/api";

/** What the runner needs from the rest of the core, per command. */
export interface CommandHost {
  /** Throws McpError when the session may not run `tool` (unknown tool, permission, level, expired token). */
  prepare(command: Command): PreparedCommand;
  /** Checks the command's context precondition; throws version_conflict / context_not_found. */
  checkPrecondition(contextId: string, version: bigint): Promise<void>;
  /** Publishes an event of a running command (progress, output). */
  emitEvent(commandId: string, type: string, data: JsonObject): void;
  /** Publishes a running command's output chunk (src/session/chunks.ts); none = the call cannot stream bytes (unary Execute). */
  emitChunk?: EmitChunk;
  /** The call can carry `CommandInput` (the session stream). @default false */
  acceptsInput?: boolean;
  /**
   * Answer JSON outputs as `Response.output_json` text instead of an `output` Struct: the session's
   * client asked for it (capability `output_json`, src/transport/json-text.ts). @default false
   */
  outputJson?: boolean;
}

/** A command that passed its checks and is ready to run. */
export interface PreparedCommand {
  /** The principal's subject, passed on to the tool's context (logs only). */
  readonly subject?: string;
  /**
   * Runs the command: its result, or a promise of it. `ctx.signal` is created on first read (most
   * tools never read it), and `ctx.aborted` says whether it fired without creating it.
   */
  run(ctx: ToolContext): Response["result"] | Promise<Response["result"]>;
}

/** Limits the runner enforces. */
export interface CommandRunnerLimits {
  maxInflightCommands: number;
  maxBatchSize: number;
  defaultTimeoutMs: number;
  maxTimeoutMs: number;
}

/** A session's command runner. */
export interface CommandRunner {
  /** Starts a command; `onResponse` is called exactly once, possibly synchronously for early errors. */
  start(command: Command, onResponse: (response: Response) => void): void;
  /** Runs a batch; `onResponse` is called exactly once per command. */
  startBatch(batch: CommandBatch, onResponse: (response: Response) => void): void;
  /** Cancels an in-flight command; false when no such command is in flight. */
  cancel(commandId: string): boolean;
  /** Commands in flight now. */
  readonly inflight: number;
  /** Ends every in-flight command with `reason` (session closed). */
  abortAll(reason: McpError): void;
  /** Ids of the commands in flight and of the batch commands not started yet (a session's hand-off). */
  pendingIds(): string[];
  /**
   * Commands of this session still running on the instance it moved from: their ids are refused
   * (`duplicate_command_id`) and their Cancels go there. Set by the session registry.
   */
  elsewhere: ElsewhereCommands | undefined;
  /**
   * Hands a CommandInput's chunk to its command. An McpError when no such command is in flight
   * (the caller reports it); a chunk that breaks the rules fails its command instead.
   */
  input(input: CommandInput): McpError | undefined;
}

/** Commands of a session that run on another instance (src/session/remote-commands.ts). */
export interface ElsewhereCommands {
  /** Their ids; the registry removes one when its Response arrives. */
  readonly ids: Set<string>;
  /** Routes a Cancel to the instance running the command. */
  cancel(commandId: string): void;
}

/**
 * One command in flight, and the `ToolContext` its tool gets. A class, not a closure set per
 * command: this is allocated once per command on the hot path, and its methods live on the
 * prototype. The AbortController (an EventTarget, ~10 % of a command's cost when made eagerly)
 * exists only once a tool reads `signal` or the command is aborted.
 */
class Inflight implements ToolContext {
  settled = false;
  /** Set once aborted (timeout, Cancel, session end); the signal's reason. */
  private reason: unknown = undefined;
  private isAborted = false;
  private controller: AbortController | undefined = undefined;
  readonly subject?: string;
  /** The tool's name and the command's span (tracing only), for the runner's observer. */
  tool = "";
  span: Span | undefined = undefined;
  /** Chunked output/input state, made by the first chunk (src/session/chunks.ts). */
  chunks: CommandChunks | undefined = undefined;

  constructor(
    readonly commandId: string,
    readonly startedAt: number,
    /** Epoch ms (runner clock) after which the command times out. */
    readonly deadline: number,
    readonly timeoutMs: number,
    private readonly host: CommandHost,
    readonly onResponse: (response: Response) => void,
    subject: string | undefined,
    private readonly pace: OutboundPace | undefined,
  ) {
    if (subject !== undefined) this.subject = subject;
  }

  writeChunk(data: Uint8Array, options?: WriteChunkOptions): Promise<void> {
    return writeChunk(this, this.host.emitChunk, this.pace, data, options);
  }

  get streamsChunks(): boolean {
    return this.host.emitChunk !== undefined;
  }

  readChunks(): AsyncIterable<Uint8Array> {
    return readChunks(this, this.host.acceptsInput === true, (consumed) => this.emit(INPUT_EVENT, inputAckData(consumed)));
  }

  get signal(): AbortSignal {
    if (this.controller === undefined) {
      this.controller = new AbortController();
      if (this.isAborted) this.controller.abort(this.reason);
    }
    return this.controller.signal;
  }

  get aborted(): boolean {
    return this.isAborted;
  }

  /**
   * A function bound to this command, made on first use: tools may call `ctx.emit(…)` or take
   * `const { emit } = ctx`, and the many that never emit cost no closure.
   */
  get emit(): (type: string, data: JsonObject) => void {
    return (this.boundEmit ??= (type, data) => {
      if (!this.settled) this.host.emitEvent(this.commandId, type, data);
    });
  }
  private boundEmit: ((type: string, data: JsonObject) => void) | undefined = undefined;

  /** Fires the signal (if anyone holds it) with `reason`. */
  abort(reason: unknown): void {
    if (this.isAborted) return;
    this.isAborted = true;
    this.reason = reason;
    this.controller?.abort(reason);
  }
}

/**
 * Command timeouts without a `setTimeout` per command: one timer per runner, armed for the
 * earliest deadline of the commands still running. Settling a command does not touch the timer
 * until the table is empty, then it is cleared: a runner whose commands are done holds nothing
 * (a unary request's runner, made per request, is garbage at once instead of for a timeout
 * period). When it fires it expires what is due and re-arms for the earliest deadline left (a
 * deadline the clock has not quite reached yet is re-armed 1 ms later). With one timeout for all
 * commands, deadlines grow in start order and the timer fires about once per timeout period; the
 * scan of the in-flight table (≤ max_inflight_commands) on each firing is cheap next to a timer
 * per command. A command that settles as it starts never arms it (see `start`).
 */
class DeadlineTimer {
  private timer: ReturnType<typeof setTimeout> | undefined = undefined;
  /** When the armed timer fires (runner clock); Infinity when none is armed. */
  private armedFor = Infinity;

  constructor(private readonly runner: Runner) {}

  /** A command with `deadline` is running. */
  added(deadline: number): void {
    if (deadline < this.armedFor) this.arm(deadline);
  }

  /** The table became empty. */
  idle(): void {
    if (this.timer === undefined) return;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.armedFor = Infinity;
  }

  private arm(deadline: number): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.armedFor = deadline;
    // The timer as an argument, not a bound function: nothing is allocated per runner for it.
    this.timer = setTimeout(fireDeadlines, Math.max(1, deadline - this.runner.now()), this);
  }

  /** The timer fired. */
  fire(): void {
    this.timer = undefined;
    this.armedFor = Infinity;
    const table = this.runner.table;
    const t = this.runner.now();
    const due: Inflight[] = [];
    let next = Infinity;
    for (const entry of table.values()) {
      if (entry.deadline <= t) due.push(entry);
      else if (entry.deadline < next) next = entry.deadline;
    }
    // Expire after the scan: settling edits the table. A Response handler may start a command
    // (a sequential batch), which arms the timer for its own deadline: keep the earlier one.
    for (const entry of due) this.runner.expire(entry);
    if (next < this.armedFor && table.size > 0) this.arm(next);
  }
}

function fireDeadlines(timer: DeadlineTimer): void {
  timer.fire();
}

/** Creates the runner of one session (or of one unary request). */
export function createCommandRunner(
  host: CommandHost,
  limits: CommandRunnerLimits,
  now: () => number = Date.now,
  pace?: OutboundPace,
  observer?: CommandObserver,
): CommandRunner {
  return new Runner(host, limits, now, pace, observer);
}

/**
 * The outbound side a batch paces itself by (the session: `Session` satisfies it). Without one
 * (a unary request, which collects its Responses itself) a batch runs straight through.
 */
export interface OutboundPace {
  /** True while the client has as many answers queued as it should take at once. */
  readonly isCongested: boolean;
  /** Resolves once it may have room again (or the session ended); never rejects. */
  writable(): Promise<void>;
  /** Why the session ended, once it did. */
  readonly closeReason: McpError | undefined;
}

type BatchWay = "parallel" | "sequential" | "refuse";

/**
 * One batch on its way through the runner (PROTOCOL.md §6 "backpressure inside a burst"). Its
 * commands start — or, refused or cancelled, are answered — one after another while the
 * session's client has room; when the outbound queue is full the batch waits for it to drain
 * instead of piling answers past the queue's bound (which would drop a client that reads, with
 * slow_consumer). A loop, not recursion: commands that answer synchronously must not grow the
 * stack by one `start` per command. The check per command is one getter read.
 */
class BatchRun {
  private i = 0;
  /** Set once a sequential batch failed: the rest are answered `cancelled`, not run. */
  private failed: McpError | undefined = undefined;
  private looping = false;
  private answeredInLoop = false;
  private readonly onEach: (response: Response) => void;

  constructor(
    private readonly runner: Runner,
    private readonly commands: readonly Command[],
    private readonly onResponse: (response: Response) => void,
    private readonly way: BatchWay,
    private readonly refusal: McpError | undefined,
  ) {
    this.onEach = way === "sequential" ? (response) => this.sequentialAnswered(response) : onResponse;
  }

  drive(): void {
    const { commands, runner } = this;
    const pace = runner.pace;
    this.looping = true;
    do {
      this.answeredInLoop = false;
      if (this.i >= commands.length) break;
      if (pace !== undefined && pace.isCongested) {
        const ended = pace.closeReason;
        if (ended === undefined) {
          this.looping = false;
          pace.writable().then(
            () => this.drive(),
            () => this.drive(), // never rejects; drive re-checks either way
          );
          return;
        }
        // The session is gone: what never started is answered with why (each command once).
        this.failed ??= ended;
      }
      const c = commands[this.i++]!; // i < length
      if (this.way === "refuse") {
        this.onResponse(errorResponse(c.id, this.refusal!)); // set for "refuse"
        this.answeredInLoop = true;
      } else if (this.failed !== undefined) {
        this.onResponse(errorResponse(c.id, this.failed));
        this.answeredInLoop = true;
      } else if (this.way === "parallel") {
        runner.start(c, this.onResponse);
        this.answeredInLoop = true; // parallel: start the next one at once
      } else {
        runner.start(c, this.onEach);
      }
    } while (this.answeredInLoop);
    this.looping = false;
    if (this.i >= commands.length) runner.batches.delete(this);
  }

  /** Ids of the commands not started yet. */
  notStarted(): string[] {
    return this.commands.slice(this.i).map((c) => c.id);
  }

  /** Sequential: one at a time; after the first error the rest answer `cancelled`. */
  private sequentialAnswered(response: Response): void {
    this.onResponse(response);
    if (response.result.case === "error" && this.failed === undefined) {
      const failedId = this.commands[this.i - 1]!.id; // the command that just answered
      this.failed = new McpError("cancelled", `not run: command "${failedId}" of the sequential batch failed`);
    }
    if (this.looping) this.answeredInLoop = true;
    else this.drive();
  }
}

/**
 * A class, not a closure set: a runner is made per session and per unary request, and under tsx
 * every closure made per runner would also cost a `__name()` call (an Object.defineProperty).
 * Its methods live on the prototype.
 */
class Runner implements CommandRunner {
  // Made by the first command and the first batch: every idle session has a runner (bench/scale.ts).
  private commands: Map<string, Inflight> | undefined = undefined;
  /**
   * The command whose tool is running right now, synchronously. It enters `commands` only if its
   * tool returns a promise: most tools answer as they run, and a Map that empties shrinks and
   * regrows — an insert and a delete cost ~0.2 µs per command, ~3 % of an echo (bench/core.ts).
   * Until then every view of the in-flight commands (`find`, `inflight`, `abortAll`,
   * `pendingIds`) counts it here, as if it were in the table.
   */
  private running: Inflight | undefined = undefined;
  private batchRuns: Set<BatchRun> | undefined = undefined;
  /** The last command's end, while the synchronous run that settled it goes on (see `startTime`). */
  private recentEnd: number | undefined = undefined;
  private forgetEnd: (() => void) | undefined = undefined;
  elsewhere: ElsewhereCommands | undefined = undefined;
  private readonly deadlines = new DeadlineTimer(this);

  constructor(
    private readonly host: CommandHost,
    private readonly limits: CommandRunnerLimits,
    readonly now: () => number,
    readonly pace: OutboundPace | undefined,
    /** Metrics, logs and spans of each command (src/observability/). */
    private readonly observer: CommandObserver | undefined = undefined,
  ) {}

  /** The commands in flight, by id. */
  get table(): Map<string, Inflight> {
    return (this.commands ??= new Map());
  }

  /** Batches with commands not started yet (waiting for room, or sequential). */
  get batches(): Set<BatchRun> {
    return (this.batchRuns ??= new Set());
  }

  get inflight(): number {
    return (this.commands === undefined ? 0 : this.commands.size) + (this.runningNow() === undefined ? 0 : 1);
  }

  /** The command running synchronously now, unless it settled already (a batch starts the next one from its Response). */
  private runningNow(): Inflight | undefined {
    const r = this.running;
    return r === undefined || r.settled ? undefined : r;
  }

  /** The command in flight with this id, if any. */
  private find(id: string): Inflight | undefined {
    const r = this.runningNow();
    return r !== undefined && r.commandId === id ? r : this.commands?.get(id);
  }

  /**
   * A start's clock: the end of the command that settled last in this same synchronous run (the
   * frames of one read, a batch), else a fresh read. Commands that answer as they run thus cost
   * one clock read each, not two: a read is a C++ call of ~0.1 µs, ~1.5 % of an echo command. The
   * time lost is what lies between the two commands in that run (decoding the next frame); the
   * run's end — the microtask checkpoint — forgets the value.
   */
  private startTime(): number {
    return this.recentEnd ?? this.now();
  }

  /** A command's end: a fresh clock read, kept for the starts that follow in this run. */
  private endTime(): number {
    const t = this.now();
    if (this.recentEnd === undefined) queueMicrotask((this.forgetEnd ??= () => (this.recentEnd = undefined)));
    this.recentEnd = t;
    return t;
  }

  /** The deadline timer's verdict on one command. */
  expire(entry: Inflight): void {
    const err = new McpError("timeout", `command "${entry.commandId}" did not finish within ${entry.timeoutMs} ms`);
    entry.abort(err);
    this.settle(entry, errorResponse(entry.commandId, err, this.endTime() - entry.startedAt));
  }

  // The one place a command ends.
  private settle(entry: Inflight, response: Response): void {
    if (entry.settled) return;
    entry.settled = true;
    if (entry.chunks !== undefined) abortInput(entry, errorOf(response));
    const table = this.commands;
    // One that answered as it ran never entered the table (see `running`).
    if (table !== undefined && table.get(entry.commandId) === entry) {
      table.delete(entry.commandId);
      if (table.size === 0) this.deadlines.idle();
    }
    this.observer?.settled(entry.tool, response, entry.span);
    entry.onResponse(response);
  }

  /** Aborts the command's signal and settles it with the reason (no abort listener per command). */
  private cancelEntry(entry: Inflight, reason: unknown): void {
    if (entry.settled) return;
    entry.abort(reason);
    this.settle(entry, errorResponse(entry.commandId, toMcpError(reason, "cancelled"), this.endTime() - entry.startedAt));
  }

  start(command: Command, onResponse: (response: Response) => void): void {
    const limits = this.limits;
    const id = command.id;
    if (id === "") {
      this.refuse(command, onResponse, errorResponse(id, new McpError("invalid_message", "Command.id must be set", { field: "id" })));
      return;
    }
    if (this.find(id) !== undefined) {
      this.refuse(command, onResponse, errorResponse(id, new McpError("duplicate_command_id", `command id "${id}" is already in flight`)));
      return;
    }
    if (this.elsewhere !== undefined && this.elsewhere.ids.has(id)) {
      const err = new McpError("duplicate_command_id", `command id "${id}" is still in flight on the server instance this session moved from`);
      this.refuse(command, onResponse, errorResponse(id, err));
      return;
    }
    const inflight = this.inflight;
    if (inflight >= limits.maxInflightCommands) {
      this.refuse(
        command,
        onResponse,
        errorResponse(
          id,
          new McpError("overloaded", `${inflight} commands in flight, the session's limit is ${limits.maxInflightCommands}`, {
            retryAfterMs: 100,
          }),
        ),
      );
      return;
    }
    let prepared: PreparedCommand;
    try {
      prepared = this.host.prepare(command);
    } catch (e) {
      this.refuse(command, onResponse, errorResponse(id, toMcpError(e, "invalid_argument")));
      return;
    }
    const startedAt = this.startTime();
    const timeoutMs = Math.min(command.timeoutMs === 0 ? limits.defaultTimeoutMs : command.timeoutMs, limits.maxTimeoutMs);
    const entry = new Inflight(id, startedAt, startedAt + timeoutMs, timeoutMs, this.host, onResponse, prepared.subject, this.pace);
    if (this.observer !== undefined) {
      entry.tool = command.tool;
      entry.span = this.observer.started(command);
    }

    if (command.contextVersion > 0n) {
      this.table.set(id, entry);
      this.deadlines.added(entry.deadline);
      this.host.checkPrecondition(command.contextId, command.contextVersion).then(
        () => {
          if (!entry.settled) this.runPrepared(entry, prepared, true);
        },
        (e: unknown) => this.fail(entry, e),
      );
      return;
    }
    this.runPrepared(entry, prepared);
    // Armed only for a command still running: one that answered synchronously could not have
    // been interrupted by the timer anyway, and costs no timer work at all.
    if (!entry.settled) this.deadlines.added(entry.deadline);
  }

  // A tool that answered synchronously settles here and now: no promise, no closure. Otherwise
  // `.then`, not an async function: a suspended async frame per command costs more than the two
  // closures (bench/README.md). Neither closure is bound to a name: tsx (esbuild keepNames) would
  // give each a `__name()` call — an Object.defineProperty per command, ~10 % of the core.
  private runPrepared(entry: Inflight, prepared: PreparedCommand, tabled = false): void {
    let running: Response["result"] | Promise<Response["result"]>;
    // Saved and restored: a sequential batch starts its next command from this one's Response.
    // One already in the table (it waited for its precondition) is counted there, not twice.
    const outer = this.running;
    this.running = tabled ? undefined : entry;
    try {
      running = prepared.run(entry);
    } catch (e) {
      this.running = outer;
      // A tool that throws instead of rejecting still gets its one Response.
      this.fail(entry, e);
      return;
    }
    this.running = outer;
    if (running instanceof Promise) {
      // Aborted while it ran (its session closed): already answered, nothing to wait for.
      if (!entry.settled) this.table.set(entry.commandId, entry);
      running.then(
        (result) => this.succeed(entry, result),
        (e: unknown) => this.fail(entry, e),
      );
    } else {
      this.succeed(entry, running);
    }
  }

  private succeed(entry: Inflight, result: Response["result"]): void {
    if (result.case === "output" && this.host.outputJson === true) result = { case: "outputJson", value: JSON.stringify(result.value) };
    // A literal, not create(): every field is given, and this runs once per command (hot path).
    this.settle(entry, {
      $typeName: "mcp.v1.Response",
      commandId: entry.commandId,
      result,
      durationMs: this.endTime() - entry.startedAt,
    } satisfies Response);
  }

  private fail(entry: Inflight, e: unknown): void {
    this.settle(entry, errorResponse(entry.commandId, toMcpError(e), this.endTime() - entry.startedAt));
  }

  /** Answers a command that never ran. */
  private refuse(command: Command, onResponse: (response: Response) => void, response: Response): void {
    this.observer?.refused(command.tool, response);
    onResponse(response);
  }

  startBatch(batch: CommandBatch, onResponse: (response: Response) => void): void {
    const commands = batch.commands;
    if (commands.length > this.limits.maxBatchSize) {
      // Refused as a whole — nothing in it runs — and still one Response per command (PROTOCOL.md
      // §3): a client waiting on each id is never left hanging. Paced like any batch.
      const err = new McpError(
        "invalid_message",
        `batch of ${commands.length} commands exceeds max_batch_size ${this.limits.maxBatchSize}: none of them ran`,
        { field: "commands" },
      );
      this.drive(new BatchRun(this, commands, onResponse, "refuse", err));
      return;
    }
    this.drive(new BatchRun(this, commands, onResponse, batch.mode === BatchMode.PARALLEL ? "parallel" : "sequential", undefined));
  }

  private drive(run: BatchRun): void {
    this.batches.add(run);
    run.drive(); // removes it once every command started
  }
  cancel(commandId: string): boolean {
    const entry = this.find(commandId);
    if (entry === undefined) {
      if (this.elsewhere === undefined || !this.elsewhere.ids.has(commandId)) return false;
      this.elsewhere.cancel(commandId);
      return true;
    }
    this.cancelEntry(entry, new McpError("cancelled", `command "${commandId}" was cancelled by the client`));
    return true;
  }

  abortAll(reason: McpError): void {
    const running = this.runningNow();
    if (running !== undefined) this.cancelEntry(running, reason);
    if (this.commands === undefined) return;
    for (const entry of [...this.commands.values()]) this.cancelEntry(entry, reason);
  }

  pendingIds(): string[] {
    const ids = this.commands === undefined ? [] : [...this.commands.keys()];
    const running = this.runningNow();
    if (running !== undefined) ids.push(running.commandId);
    if (this.batchRuns !== undefined) for (const b of this.batchRuns) ids.push(...b.notStarted());
    return ids;
  }
  input(input: CommandInput): McpError | undefined {
    const entry = this.find(input.commandId);
    if (entry === undefined) {
      return new McpError("invalid_message", `CommandInput for "${input.commandId}": no such command is in flight`, { commandId: input.commandId });
    }
    const refused = pushInput(entry, input.chunk);
    if (refused !== undefined) this.cancelEntry(entry, refused);
    return undefined;
  }
}

/** What an input reader still waiting is told when its command settled. */
function errorOf(response: Response): unknown {
  return response.result.case === "error" ? fromProtoError(response.result.value) : new McpError("cancelled", `command "${response.commandId}" already answered`);
}

function errorResponse(commandId: string, err: McpError, durationMs = 0): Response {
  return create(ResponseSchema, {
    commandId,
    result: { case: "error", value: toProtoError(err.withCommandId(commandId)) },
    durationMs,
  });
}
