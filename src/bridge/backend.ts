/**
 * What the bridge needs of our server, in two shapes: `coreBackend` calls the core in-process
 * (the server's `/mcp` endpoint, one per HTTP request and caller), `clientBackend` goes through
 * our TypeScript client (`mcp bridge --stdio`, one session stream to a remote server). Both reach
 * the same core — security, levels, policy, audit, timeouts, one Response per command.
 */
import type { JsonObject } from "@bufbuild/protobuf";
import type { Response, ToolDescriptor } from "../../gen/mcp/v1/command_pb.js";
import type { ContextSync } from "../../gen/mcp/v1/context_pb.js";
import type { Event } from "../../gen/mcp/v1/event_pb.js";
import type { McpClient, McpSession } from "../client/index.js";
import { fromConnectError } from "../client/index.js";
import { McpError } from "../errors.js";
import type { McpCore } from "../session/core.js";
import type { AuthState } from "../session/session.js";
import { startCommand } from "../server/routes.js";
import { chunkPolicy, resolveMaxTextBytes } from "./no-chunks.js";

/** One call's options. */
export interface BackendCallOptions {
  /** Aborting cancels the command (our `Cancel`); its Response then says `cancelled`. */
  signal: AbortSignal;
  /** The command's events while it runs. */
  onEvent: (event: Event) => void;
}

/** Our server as the bridge uses it. */
export interface BridgeBackend {
  /** The tools the caller may use (already filtered by permissions). */
  listTools(): Promise<ToolDescriptor[]>;
  /** Runs a tool with JSON arguments; resolves with its one Response (errors inside it). */
  call(tool: string, args: JsonObject, options: BackendCallOptions): Promise<Response>;
  /** A context's snapshot; rejects with an McpError (`context_not_found`, `permission_denied`, …). */
  readContext(contextId: string): Promise<ContextSync>;
  /** Our watch: a sync now, then one per change, until `signal` aborts. */
  watchContext(contextId: string, signal: AbortSignal): AsyncIterable<ContextSync>;
  /** Ids of contexts the caller may read as they change, until `signal` aborts. */
  contextChanges(signal: AbortSignal): AsyncIterable<string>;
}

/** Iterates an async iterable until `signal` aborts, without an unhandled rejection after it. */
async function* until<T>(source: AsyncIterable<T>, signal: AbortSignal): AsyncIterable<T> {
  try {
    for await (const v of source) {
      if (signal.aborted) return;
      yield v;
    }
  } catch (e) {
    if (signal.aborted) return;
    throw e;
  }
}

/** The in-process backend: `auth` is the caller's, verified from the request's Authorization header. */
export function coreBackend(core: McpCore, auth: AuthState): BridgeBackend {
  return {
    listTools: () => Promise.resolve(core.listTools(auth)),
    call(tool, args, { signal, onEvent }) {
      return new Promise<Response>((resolve) => {
        let settled = false;
        // The unary path's own start (routes.ts): the same runner, timeouts and exactly-once Response.
        const runner = startCommand(
          core,
          auth,
          { $typeName: "mcp.v1.Command", id: "", tool, payload: { case: "arguments", value: args }, timeoutMs: 0, contextId: "", contextVersion: 0n, traceparent: "", tracestate: "" },
          (r) => {
            settled = true;
            signal.removeEventListener("abort", onAbort);
            resolve(r);
          },
          (r) => {
            if (r.message.case === "event") onEvent(r.message.value);
          },
          undefined,
          // A model reads text: fs.read beyond its cap answers the first part with truncated, not chunks.
          false,
        );
        function onAbort(): void {
          runner.abortAll(new McpError("cancelled", "the Model Context Protocol client cancelled the call"));
        }
        // A synchronous tool settles inside startCommand: no listener then, or it would stay on
        // the SDK's signal and fire (building an error) when the SDK aborts it at the request's close.
        if (settled) return;
        if (signal.aborted) onAbort();
        else signal.addEventListener("abort", onAbort, { once: true });
      });
    },
    readContext: (contextId) => core.getContext(auth, contextId),
    watchContext(contextId, signal) {
      return until(core.watchContext(auth, { $typeName: "mcp.v1.StateSync", contextId, knownVersion: 0n, watch: true }, signal), signal);
    },
    async *contextChanges(signal) {
      for await (const e of until(core.subscribe(auth, "", 0n, ["context.changed"], signal), signal)) yield e.contextId;
    },
  };
}

/** Unary and server-stream calls of our client reject with ConnectError; the bridge speaks McpError. */
async function connectCall<T>(p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (e) {
    throw fromConnectError(e);
  }
}

async function* connectStream<T>(source: AsyncIterable<T>, signal: AbortSignal): AsyncIterable<T> {
  try {
    yield* until(source, signal);
  } catch (e) {
    throw fromConnectError(e);
  }
}

/** Options of `clientBackend`. */
export interface ClientBackendOptions {
  /**
   * Most bytes of text a model gets from one `fs.read` (docs/bridge.md): set it to the server's
   * `maxReadBytes` so the answer is the one `/mcp` gives.
   * @default 1048576 (1 MiB, the server's default cap)
   */
  maxTextBytes?: number;
}

/**
 * The remote backend over our TypeScript client: commands on the one session stream (so they
 * share its resume), tools and contexts over the unary and server-stream RPCs with the same token.
 */
export function clientBackend(client: McpClient, session: McpSession, options: ClientBackendOptions = {}): BridgeBackend {
  const maxTextBytes = resolveMaxTextBytes(options.maxTextBytes);
  return {
    listTools: async () => (await connectCall(client.commands.listTools({}))).tools,
    async call(tool, args, { signal, onEvent }) {
      // A session stream may answer in chunks; a model gets what /mcp gives, which carries none.
      const policy = chunkPolicy(tool, args, maxTextBytes);
      const cut = new AbortController();
      const response = await session.execute(
        { tool, payload: { case: "arguments", value: policy.args } },
        {
          signal: AbortSignal.any([signal, cut.signal]),
          onEvent(event) {
            if (event.chunk === undefined) onEvent(event);
            // Cancel the rest instead of taking bytes no model will see.
            else if (!cut.signal.aborted && !policy.accept(event.chunk)) cut.abort(policy.refusal);
          },
        },
      );
      return signal.aborted ? response : policy.answer(response);
    },
    readContext: (contextId) => connectCall(client.contexts.getContext({ contextId })),
    watchContext: (contextId, signal) => connectStream(client.contexts.watchContext({ contextId, knownVersion: 0n, watch: true }, { signal }), signal),
    async *contextChanges(signal) {
      for await (const e of connectStream(client.events.subscribe({ sessionId: "", types: ["context.changed"] }, { signal }), signal)) yield e.contextId;
    },
  };
}
