/**
 * Test tools for the command paths (PROTOCOL.md §3, §4 step 4, §6): real tools registered on a
 * real server through `createMcpServer({ tools })`, with a `Probe` that records what their
 * handlers saw — started, finished, and the reason their AbortSignal fired — so tests observe
 * the handler side of timeouts and Cancel instead of mocking the runner.
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { JsonObject } from "@bufbuild/protobuf";
import type { Response } from "../../gen/mcp/v1/command_pb.js";
import type { ErrorKind } from "../../gen/mcp/v1/error_pb.js";
import type { ServerMessage } from "../../gen/mcp/v1/session_pb.js";
import { SecurityLevel } from "../../gen/mcp/v1/types_pb.js";
import { McpError } from "../../src/errors.js";
import { defineJsonTool, type RegisteredTool } from "../../src/tools/index.js";
import type { McpServerOptions } from "../../src/server/server.js";
import { openRawStream, startServer, type ClientPayload, type RawStream, type TestServer } from "./server.js";

/** What the test tools' handlers did, by command id. */
export interface Probe {
  /** Command ids whose handler started, in start order. */
  readonly started: string[];
  /** Command ids whose handler returned normally. */
  readonly finished: string[];
  /** The code of each handler's `signal.reason` once it fired (McpError codes). */
  readonly aborted: Map<string, string>;
  /** Lets a `gate` command with this key return. */
  release(key: string): void;
  /** Resolves once the handler of `commandId` saw its signal fire; rejects after `ms`. */
  abortedWith(commandId: string, ms?: number): Promise<string>;
  /** Resolves once a handler of `commandId` started; rejects after `ms`. */
  startedOnce(commandId: string, ms?: number): Promise<void>;
}

/** The tools and their probe. Every tool is STANDARD level; `developer` may run them (`tool:*`). */
export function createTestTools(): { tools: RegisteredTool[]; probe: Probe } {
  const started: string[] = [];
  const finished: string[] = [];
  const aborted = new Map<string, string>();
  const gates = new Map<string, () => void>();
  const released = new Set<string>();
  const listeners = new Set<() => void>();
  const changed = () => {
    for (const l of [...listeners]) l();
  };

  function until(check: () => boolean, what: string, ms: number): Promise<void> {
    if (check()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        listeners.delete(l);
        reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
      }, ms);
      const l = () => {
        if (!check()) return;
        clearTimeout(timer);
        listeners.delete(l);
        resolve();
      };
      listeners.add(l);
    });
  }

  /** Records the start and the abort of a handler. */
  function track(commandId: string, signal: AbortSignal): void {
    started.push(commandId);
    signal.addEventListener(
      "abort",
      () => {
        const r: unknown = signal.reason;
        aborted.set(commandId, r instanceof McpError ? r.code : String(r));
        changed();
      },
      { once: true },
    );
    changed();
  }

  /** Records a handler that returned normally. */
  function finish(commandId: string): void {
    finished.push(commandId);
    changed();
  }

  /** Waits until `signal` fires; then rejects with its reason (as handlers must). */
  const untilAborted = (signal: AbortSignal) =>
    new Promise<never>((_, reject) => {
      if (signal.aborted) return reject(signal.reason as Error);
      signal.addEventListener("abort", () => reject(signal.reason as Error), { once: true });
    });

  const standard = { securityLevel: SecurityLevel.STANDARD };
  const tools: RegisteredTool[] = [
    // Waits `ms` (or until aborted when `ms` is absent) and returns `{ slept: ms }`.
    defineJsonTool({
      ...standard,
      name: "sleep",
      description: "Waits; honours its signal.",
      inputSchema: { type: "object", properties: { ms: { type: "integer", minimum: 0 } }, additionalProperties: false },
      async handler(args, ctx) {
        track(ctx.commandId, ctx.signal);
        const ms = typeof args["ms"] === "number" ? args["ms"] : undefined;
        // Either way an abort rejects; the tool layer answers with the signal's reason.
        await (ms === undefined ? untilAborted(ctx.signal) : sleep(ms, undefined, { signal: ctx.signal }));
        finish(ctx.commandId);
        return { slept: ms ?? 0 };
      },
    }),
    // Returns once the test calls `probe.release(key)` (or fails when aborted).
    defineJsonTool({
      ...standard,
      name: "gate",
      description: "Waits for the test to release it.",
      inputSchema: { type: "object", properties: { key: { type: "string" } }, required: ["key"], additionalProperties: false },
      async handler(args, ctx) {
        track(ctx.commandId, ctx.signal);
        const key = String(args["key"]);
        if (!released.has(key)) {
          await Promise.race([new Promise<void>((resolve) => gates.set(key, resolve)), untilAborted(ctx.signal)]);
        }
        finish(ctx.commandId);
        return { key };
      },
    }),
    // Throws a plain Error: the tool's own failure (tool_failed).
    defineJsonTool({
      ...standard,
      name: "crash",
      description: "Throws.",
      inputSchema: { type: "object" },
      async handler(_args, ctx) {
        track(ctx.commandId, ctx.signal);
        throw new Error("boom");
      },
    }),
    // Emits `count` `command.progress` events, then returns `{ emitted: count }`.
    defineJsonTool({
      ...standard,
      name: "count",
      description: "Emits numbered progress events.",
      inputSchema: { type: "object", properties: { count: { type: "integer", minimum: 0 } }, required: ["count"], additionalProperties: false },
      async handler(args, ctx) {
        track(ctx.commandId, ctx.signal);
        const n = Number(args["count"]);
        for (let i = 1; i <= n; i++) ctx.emit("command.progress", { i });
        finish(ctx.commandId);
        return { emitted: n };
      },
    }),
    // Emits `command.output` events until aborted, yielding to the event loop between bursts.
    defineJsonTool({
      ...standard,
      name: "spam",
      description: "Emits output events until aborted.",
      inputSchema: { type: "object", properties: { burst: { type: "integer", minimum: 1 } }, additionalProperties: false },
      async handler(args, ctx) {
        track(ctx.commandId, ctx.signal);
        const burst = typeof args["burst"] === "number" ? args["burst"] : 100;
        const text = "x".repeat(256);
        for (let n = 0; !ctx.signal.aborted; ) {
          for (let i = 0; i < burst; i++) ctx.emit("command.output", { n: n++, text });
          await new Promise<void>((r) => setImmediate(r));
        }
        throw ctx.signal.reason;
      },
    }),
  ];

  return {
    tools,
    probe: {
      started,
      finished,
      aborted,
      release(key) {
        released.add(key);
        gates.get(key)?.();
        gates.delete(key);
      },
      async abortedWith(commandId, ms = 5000) {
        await until(() => aborted.has(commandId), `the signal of ${commandId}`, ms);
        return aborted.get(commandId)!; // checked by `until`
      },
      startedOnce(commandId, ms = 5000) {
        return until(() => started.includes(commandId), `${commandId} to start`, ms);
      },
    },
  };
}

/** A real server (`startServer`) with a fresh set of the test tools registered, and their probe. */
export async function startWithTestTools(options: Omit<McpServerOptions, "tools"> = {}): Promise<{ server: TestServer; probe: Probe }> {
  const { tools, probe } = createTestTools();
  return { server: await startServer({ ...options, tools }), probe };
}

/** The session id from a reader's HandshakeResult; throws when the handshake was refused. */
export function sessionIdOf(reader: SessionReader): string {
  const hr = reader.first;
  if (hr?.message.case !== "handshakeResult") throw new Error(`expected a HandshakeResult, got ${hr?.message.case}`);
  return hr.message.value.sessionId;
}

/** `{ case: "arguments", value }` for a Command's payload. */
export const args = (value: JsonObject) => ({ case: "arguments" as const, value });

/** A raw session stream read in the background: every ServerMessage kept, waiters by predicate. */
export interface SessionReader {
  readonly stream: RawStream;
  /** Every message received so far, in arrival order. */
  readonly messages: ServerMessage[];
  /** The HandshakeResult (or the error that refused the handshake). */
  readonly first: ServerMessage | undefined;
  send(message: ClientPayload): void;
  /** The first message (from the start) matching `pred`; rejects after `ms`. */
  waitFor(pred: (m: ServerMessage) => boolean, what: string, ms?: number): Promise<ServerMessage>;
  /** The Response of `commandId` (the first one); rejects after `ms`. */
  response(commandId: string, ms?: number): Promise<Response>;
  /** Every Response received for `commandId`. */
  responsesOf(commandId: string): Response[];
  /** Sends a Ping and waits for its Pong: everything the server emitted before it has arrived. */
  roundTrip(ms?: number): Promise<void>;
  /** Resolves when the stream ended. */
  readonly ended: Promise<void>;
  close(): void;
}

let pingIds = 1_000_000n;

/** Opens a stream, sends `hello` (a Handshake) and reads everything in the background. */
export async function openReader(url: string, hello: ClientPayload, headers: Record<string, string> = {}): Promise<SessionReader> {
  const stream = openRawStream(url, headers);
  const messages: ServerMessage[] = [];
  const listeners = new Set<() => void>();
  let done = false;
  const ended = (async () => {
    for (let m = await stream.next(); m !== undefined; m = await stream.next()) {
      messages.push(m);
      for (const l of [...listeners]) l();
    }
    done = true;
    for (const l of [...listeners]) l();
  })();
  function waitFor(pred: (m: ServerMessage) => boolean, what: string, ms = 5000): Promise<ServerMessage> {
    const found = messages.find(pred);
    if (found !== undefined) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        listeners.delete(l);
        reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
      }, ms);
      const l = () => {
        const m = messages.find(pred);
        if (m === undefined && !done) return;
        clearTimeout(timer);
        listeners.delete(l);
        if (m === undefined) reject(new Error(`the stream ended before ${what}`));
        else resolve(m);
      };
      listeners.add(l);
    });
  }
  stream.send(hello);
  await waitFor(() => true, "the handshake answer");
  const responsesOf = (id: string) =>
    messages.flatMap((m) => (m.message.case === "response" && m.message.value.commandId === id ? [m.message.value] : []));
  return {
    stream,
    messages,
    get first() {
      return messages[0];
    },
    send: (m) => stream.send(m),
    waitFor,
    async response(commandId, ms) {
      const m = await waitFor((x) => x.message.case === "response" && x.message.value.commandId === commandId, `the Response of ${commandId}`, ms);
      if (m.message.case !== "response") throw new Error("unreachable");
      return m.message.value;
    },
    responsesOf,
    async roundTrip(ms) {
      const id = ++pingIds;
      stream.send({ case: "ping", value: { id } });
      await waitFor((m) => m.message.case === "pong" && m.message.value.id === id, `pong ${id}`, ms);
    },
    ended,
    close: () => stream.close(),
  };
}

/** The error of a Response as `{ kind, code, … }` for exact comparisons; undefined on success. */
export function errorOf(r: Response): { kind: ErrorKind; code: string; commandId: string; retryable: boolean; field: string; currentVersion: bigint } | undefined {
  if (r.result.case !== "error") return undefined;
  const e = r.result.value;
  return { kind: e.kind, code: e.code, commandId: e.commandId, retryable: e.retryable, field: e.field, currentVersion: e.currentVersion };
}

/** The JSON output of a successful Response; throws (failing the test) otherwise. */
export function outputOf(r: Response): JsonObject {
  if (r.result.case !== "output") throw new Error(`expected an output for ${r.commandId}, got ${r.result.case} ${r.result.case === "error" ? `${r.result.value.code}: ${r.result.value.message}` : ""}`);
  return r.result.value;
}
