/**
 * Runs a session's commands: the in-flight table, timeouts, Cancel, batches, and the rule that
 * every command settles exactly once (PROTOCOL.md §3, §4 step 4, §6). `settle()` below is the
 * only place a command ends; every path — result, error, timeout, cancel, crash, session gone —
 * goes through it.
 */
import { create, type JsonObject } from "@bufbuild/protobuf";
import { BatchMode, ResponseSchema, type Command, type CommandBatch, type Response } from "../../gen/mcp/v1/command_pb.js";
import { McpError, toMcpError, toProtoError } from "../errors.js";

/** What the runner needs from the rest of the core, per command. */
export interface CommandHost {
  /** Throws McpError when the session may not run `tool` (unknown tool, permission, level, expired token). */
  prepare(command: Command): PreparedCommand;
  /** Checks the command's context precondition; throws version_conflict / context_not_found. */
  checkPrecondition(contextId: string, version: bigint): Promise<void>;
  /** Publishes an event of a running command (progress, output). */
  emitEvent(commandId: string, type: string, data: JsonObject): void;
}

/** A command that passed its checks and is ready to run. */
export interface PreparedCommand {
  run(signal: AbortSignal, emit: (type: string, data: JsonObject) => void): Promise<Response["result"]>;
}

/** Limits the runner enforces. */
export interface CommandRunnerLimits {
  maxInflightCommands: number;
  maxBatchSize: number;
  defaultTimeoutMs: number;
  maxTimeoutMs: number;
}

interface Inflight {
  readonly abort: AbortController;
  settled: boolean;
  /** Aborts the command's signal and settles it with the reason (no abort listener per command). */
  cancel(reason: unknown): void;
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
}

/** Creates the runner of one session. */
export function createCommandRunner(
  host: CommandHost,
  limits: CommandRunnerLimits,
  now: () => number = Date.now,
): CommandRunner {
  const table = new Map<string, Inflight>();

  function errorResponse(commandId: string, err: McpError, durationMs = 0): Response {
    return create(ResponseSchema, {
      commandId,
      result: { case: "error", value: toProtoError(err.withCommandId(commandId)) },
      durationMs,
    });
  }

  function start(command: Command, onResponse: (response: Response) => void): void {
    const id = command.id;
    if (id === "") {
      onResponse(errorResponse(id, new McpError("invalid_message", "Command.id must be set", { field: "id" })));
      return;
    }
    if (table.has(id)) {
      onResponse(errorResponse(id, new McpError("duplicate_command_id", `command id "${id}" is already in flight`)));
      return;
    }
    if (table.size >= limits.maxInflightCommands) {
      onResponse(
        errorResponse(
          id,
          new McpError("overloaded", `${table.size} commands in flight, the session's limit is ${limits.maxInflightCommands}`, {
            retryAfterMs: 100,
          }),
        ),
      );
      return;
    }
    let prepared: PreparedCommand;
    try {
      prepared = host.prepare(command);
    } catch (e) {
      onResponse(errorResponse(id, toMcpError(e, "invalid_argument")));
      return;
    }
    const startedAt = now();
    const entry: Inflight = {
      abort: new AbortController(),
      settled: false,
      cancel(reason) {
        if (entry.settled) return;
        entry.abort.abort(reason);
        settle(errorResponse(id, toMcpError(reason, "cancelled"), now() - startedAt));
      },
    };
    table.set(id, entry);
    const timeoutMs = Math.min(command.timeoutMs === 0 ? limits.defaultTimeoutMs : command.timeoutMs, limits.maxTimeoutMs);
    const timer = setTimeout(() => {
      const err = new McpError("timeout", `command "${id}" did not finish within ${timeoutMs} ms`);
      entry.abort.abort(err);
      settle(errorResponse(id, err, now() - startedAt));
    }, timeoutMs);

    // The one place a command ends.
    function settle(response: Response): void {
      if (entry.settled) return;
      entry.settled = true;
      clearTimeout(timer);
      table.delete(id);
      onResponse(response);
    }

    const emit = (type: string, data: JsonObject) => {
      if (!entry.settled) host.emitEvent(id, type, data);
    };
    const precondition =
      command.contextVersion > 0n ? host.checkPrecondition(command.contextId, command.contextVersion) : undefined;
    const run = precondition === undefined
      ? prepared.run(entry.abort.signal, emit)
      : precondition.then(() => (entry.settled ? undefined : prepared.run(entry.abort.signal, emit)));
    run.then(
      (result) => {
        if (result !== undefined) {
          // A literal, not create(): every field is given, and this runs once per command (hot path).
          settle({ $typeName: "mcp.v1.Response", commandId: id, result, durationMs: now() - startedAt } satisfies Response);
        }
      },
      (e: unknown) => settle(errorResponse(id, toMcpError(e), now() - startedAt)),
    );
  }

  function startBatch(batch: CommandBatch, onResponse: (response: Response) => void): void {
    const commands = batch.commands;
    if (commands.length > limits.maxBatchSize) {
      const err = new McpError(
        "invalid_message",
        `batch of ${commands.length} commands exceeds max_batch_size ${limits.maxBatchSize}`,
        { field: "commands" },
      );
      for (const c of commands) onResponse(errorResponse(c.id, err));
      return;
    }
    if (batch.mode === BatchMode.PARALLEL) {
      for (const c of commands) start(c, onResponse);
      return;
    }
    // Sequential: one at a time; after the first error the rest answer `cancelled`.
    let i = 0;
    const next = (): void => {
      const c = commands[i++];
      if (c === undefined) return;
      start(c, (response) => {
        onResponse(response);
        if (response.result.case === "error") {
          for (const rest of commands.slice(i)) {
            onResponse(
              errorResponse(rest.id, new McpError("cancelled", `not run: command "${c.id}" of the sequential batch failed`)),
            );
          }
          i = commands.length;
          return;
        }
        next();
      });
    };
    next();
  }

  return {
    start,
    startBatch,
    cancel(commandId) {
      const entry = table.get(commandId);
      if (entry === undefined) return false;
      entry.cancel(new McpError("cancelled", `command "${commandId}" was cancelled by the client`));
      return true;
    },
    get inflight() {
      return table.size;
    },
    abortAll(reason) {
      for (const entry of [...table.values()]) entry.cancel(reason);
    },
  };
}
