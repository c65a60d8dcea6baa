/**
 * Connect routes: each RPC turns into calls on the shared core (ARCHITECTURE.md "Unary = stream").
 * Errors leave through `toConnectError` only.
 */
import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { createContextKey, type ConnectRouter, type HandlerContext } from "@connectrpc/connect";
import { AdminService, ListSessionsResponseSchema, RevokeSessionResponseSchema, RevokeTokenResponseSchema } from "../../gen/mcp/v1/admin_pb.js";
import {
  CommandService,
  ExecuteBatchResponseSchema,
  ExecuteStreamResponseSchema,
  ListToolsResponseSchema,
  type Command,
  type CommandBatch,
  type ExecuteBatchResponse,
  type ExecuteStreamResponse,
  type Response,
} from "../../gen/mcp/v1/command_pb.js";
import { ContextService } from "../../gen/mcp/v1/context_pb.js";
import { EventSchema, EventService } from "../../gen/mcp/v1/event_pb.js";
import { SessionService } from "../../gen/mcp/v1/session_pb.js";
import { McpError, fromProtoError } from "../errors.js";
import { openConnection, readError } from "../session/connection.js";
import type { McpCore, TransportInfo } from "../session/core.js";
import type { AuthState } from "../session/session.js";
import type { CommandRunner, OutboundPace } from "../session/command-runner.js";
import { chunkEvent } from "../session/chunks.js";
import { SecurityLevel } from "../../gen/mcp/v1/types_pb.js";
import { createPushable } from "../pushable.js";
import { toConnectError } from "./connect-error.js";
import { createQueueSink } from "./queue-sink.js";
import { kRequestRefusal } from "./request-check.js";
import { inheritTraceparent, rpcProtocolOf } from "../observability/tracing.js";
import { getStatus } from "../observability/status.js";

/** What the listener knows about the connection a request came on. */
export interface ConnectionFacts {
  secure: boolean;
  /** Set when the connection is beyond `maxConnections`: every request on it is refused. */
  overLimit: boolean;
  /** The client's address (logs). */
  remoteAddress?: string | undefined;
}

/** Context value carrying `ConnectionFacts` from the listener to the handlers. */
export const kConnectionFacts = createContextKey<ConnectionFacts>({ secure: false, overLimit: false }, { description: "mcp connection facts" });

function transportOf(ctx: HandlerContext): TransportInfo {
  const facts = ctx.values.get(kConnectionFacts);
  if (facts.overLimit) {
    throw new McpError("too_many_connections", "the server is at its connection limit: retry later", { retryAfterMs: 1000 });
  }
  return {
    secure: facts.secure,
    authorization: ctx.requestHeader.get("authorization"),
    remoteAddress: facts.remoteAddress,
    protocol: rpcProtocolOf(ctx.requestHeader.get("content-type")),
    traceparent: ctx.requestHeader.get("traceparent"),
    tracestate: ctx.requestHeader.get("tracestate"),
  };
}

/** Chunk bytes an ExecuteStream answer may have queued before its command waits for the client. */
const STREAM_HIGH_WATER_BYTES = 1024 * 1024;

function streamChunkBytes(r: ExecuteStreamResponse): number {
  return r.message.case === "event" ? (r.message.value.chunk?.data.length ?? 0) : 0;
}

/** Unary requests are authenticated by their Authorization header alone, at the highest level the token and transport allow. */
async function unaryAuth(core: McpCore, ctx: HandlerContext): Promise<AuthState> {
  const transport = transportOf(ctx);
  return core.authenticate(core.bearer(transport), transport, SecurityLevel.HIGH);
}

/**
 * Starts one command on a runner of its own — the same runner sessions use — and returns that
 * runner, so the caller can `abortAll` it when the client goes away. `onResponse` is called once.
 * Output chunks go to `onEvent` unless `chunks` is false: a caller that reads events but not
 * chunks (the /mcp bridge: a model reads `fs.read`'s text) gets what unary Execute gets.
 */
export function startCommand(
  core: McpCore,
  auth: AuthState,
  command: Command,
  onResponse: (r: Response) => void,
  onEvent?: (r: ExecuteStreamResponse) => void,
  pace?: OutboundPace,
  chunks = true,
): CommandRunner {
  if (command.id === "") command.id = randomUUID();
  const runner = core.createRunner(
    () => auth,
    onEvent === undefined
      ? () => {}
      : (commandId, type, data) =>
          onEvent(
            create(ExecuteStreamResponseSchema, {
              message: { case: "event", value: create(EventSchema, { type, commandId, data, time: timestampFromMs(core.now()) }) },
            }),
          ),
    undefined,
    pace,
    onEvent === undefined || !chunks
      ? undefined
      : (commandId, chunk) => onEvent(create(ExecuteStreamResponseSchema, { message: { case: "event", value: chunkEvent(commandId, chunk, core.now()) } })),
  );
  runner.start(command, onResponse);
  return runner;
}

/**
 * Starts a batch on a runner of its own and returns that runner (for `abortAll`). `onDone` gets
 * one Response per command, in the batch's order, once all have answered.
 */
export function startBatch(core: McpCore, auth: AuthState, batch: CommandBatch, onDone: (r: ExecuteBatchResponse) => void): CommandRunner {
  const runner = core.createRunner(() => auth, () => {});
  // Responses arrive in completion order; the reply lists them in the batch's order
  // (ids repeated within a batch keep their relative order).
  const byId = new Map<string, Response[]>();
  const done = () => {
    // Every command gets exactly one Response, so each id's list holds one per occurrence.
    const responses = batch.commands.map((c) => byId.get(c.id)!.shift()!);
    onDone(create(ExecuteBatchResponseSchema, { responses }));
  };
  let pending = batch.commands.length;
  if (pending === 0) {
    done();
    return runner;
  }
  runner.startBatch(batch, (r) => {
    const list = byId.get(r.commandId);
    if (list === undefined) byId.set(r.commandId, [r]);
    else list.push(r);
    if (--pending === 0) done();
  });
  return runner;
}

/**
 * Starts work on a runner of its own (`start` returns it) and resolves with what it delivers to
 * `done`; a client that goes away — before or during the work — aborts that runner.
 */
function untilDone<T>(signal: AbortSignal, start: (done: (value: T) => void) => CommandRunner): Promise<T> {
  return new Promise<T>((resolve) => {
    let runner: CommandRunner | undefined;
    const onAbort = () => runner?.abortAll(new McpError("cancelled", "the client cancelled the request"));
    signal.addEventListener("abort", onAbort, { once: true });
    runner = start((value) => {
      signal.removeEventListener("abort", onAbort);
      resolve(value);
    });
    if (signal.aborted) onAbort();
  });
}

/** Runs one command through the core's runner — the same one sessions use — and returns its Response. */
function runCommand(
  core: McpCore,
  auth: AuthState,
  command: Command,
  signal: AbortSignal,
  onEvent?: (r: ExecuteStreamResponse) => void,
  pace?: OutboundPace,
): Promise<Response> {
  return untilDone(signal, (done) => startCommand(core, auth, command, done, onEvent, pace));
}

/** A failed Response becomes the RPC's error (with the §7 status); a good one is returned. */
function unwrap(response: Response): Response {
  if (response.result.case === "error") throw fromProtoError(response.result.value);
  return response;
}

/** A request request-check.ts could not decode arrives as an empty message with its refusal: fail with that. */
function refuseUndecodable(ctx: HandlerContext): void {
  const refusal = ctx.values.get(kRequestRefusal);
  if (refusal !== undefined) throw refusal;
}

/** Wraps a unary implementation so every failure leaves as a ConnectError with an mcp.v1.Error detail. */
function guard<I, O>(fn: (req: I, ctx: HandlerContext) => Promise<O>): (req: I, ctx: HandlerContext) => Promise<O> {
  return async (req, ctx) => {
    try {
      refuseUndecodable(ctx);
      return await fn(req, ctx);
    } catch (e) {
      throw toConnectError(e);
    }
  };
}

/** The same for server-streaming implementations. */
function guardStream<I, O>(fn: (req: I, ctx: HandlerContext) => AsyncIterable<O>): (req: I, ctx: HandlerContext) => AsyncIterable<O> {
  return async function* (req, ctx) {
    try {
      refuseUndecodable(ctx);
      yield* fn(req, ctx);
    } catch (e) {
      throw toConnectError(e);
    }
  };
}

/** Registers every service of PROTOCOL.md §2 (and AdminService) on a Connect router. */
export function registerRoutes(router: ConnectRouter, core: McpCore): void {
  const opts = core.deps.options;

  router.service(SessionService, {
    async *connect(requests, ctx) {
      let transport: TransportInfo;
      try {
        transport = transportOf(ctx);
      } catch (e) {
        throw toConnectError(e);
      }
      const queue = createQueueSink(opts.maxOutboundMessages);
      const conn = openConnection(core, transport, queue.sink);
      conn.run(requests).catch((e: unknown) => conn.end(readError(e)));
      try {
        yield* queue.messages(ctx.signal);
      } finally {
        conn.end();
      }
    },
  });

  router.service(CommandService, {
    execute: guard(async (command, ctx) => {
      inheritTraceparent(command, ctx.requestHeader.get("traceparent"), ctx.requestHeader.get("tracestate"));
      return unwrap(await runCommand(core, await unaryAuth(core, ctx), command, ctx.signal));
    }),
    executeBatch: guard(async (batch, ctx) => {
      inheritTraceparent(batch, ctx.requestHeader.get("traceparent"), ctx.requestHeader.get("tracestate"));
      const auth = await unaryAuth(core, ctx);
      return untilDone<ExecuteBatchResponse>(ctx.signal, (done) => startBatch(core, auth, batch, done));
    }),
    executeStream: guardStream(async function* (command, ctx) {
      inheritTraceparent(command, ctx.requestHeader.get("traceparent"), ctx.requestHeader.get("tracestate"));
      const auth = await unaryAuth(core, ctx);
      // Events as they come, then the Response (or its error as the RPC's error).
      // Paced: a command streaming chunks waits while the client has not read what is queued.
      const out = createPushable<ExecuteStreamResponse>({ sizeOf: streamChunkBytes, highWaterBytes: STREAM_HIGH_WATER_BYTES });
      void runCommand(core, auth, command, ctx.signal, (r) => out.push(r), out).then((r) => {
        try {
          out.push(create(ExecuteStreamResponseSchema, { message: { case: "response", value: unwrap(r) } }));
          out.end();
        } catch (e) {
          out.end(e);
        }
      });
      yield* out;
    }),
    listTools: guard(async (_req, ctx) => create(ListToolsResponseSchema, { tools: core.listTools(await unaryAuth(core, ctx)) })),
  });

  router.service(ContextService, {
    getContext: guard(async (req, ctx) => core.getContext(await unaryAuth(core, ctx), req.contextId)),
    updateContext: guard(async (update, ctx) => core.updateContext(await unaryAuth(core, ctx), update)),
    syncContext: guard(async (sync, ctx) => core.syncContext(await unaryAuth(core, ctx), sync)),
    watchContext: guardStream(async function* (sync, ctx) {
      yield* core.watchContext(await unaryAuth(core, ctx), sync, ctx.signal);
    }),
  });

  router.service(EventService, {
    subscribe: guardStream(async function* (req, ctx) {
      yield* core.subscribe(await unaryAuth(core, ctx), req.sessionId, req.afterSeq, req.types, ctx.signal);
    }),
  });

  router.service(AdminService, {
    listSessions: guard(async (_req, ctx) => create(ListSessionsResponseSchema, { sessions: core.listSessions(await unaryAuth(core, ctx)) })),
    revokeSession: guard(async (req, ctx) => {
      await core.revokeSession(await unaryAuth(core, ctx), req.sessionId);
      return create(RevokeSessionResponseSchema);
    }),
    getStatus: guard(async (req, ctx) => getStatus(core, await unaryAuth(core, ctx), req.topTools)),
    revokeToken: guard(async (req, ctx) => {
      if (req.jti === "") throw new McpError("invalid_argument", "RevokeTokenRequest.jti must be set", { field: "jti" });
      await core.revokeToken(await unaryAuth(core, ctx), req.jti, req.expiresAt === undefined ? undefined : timestampMs(req.expiresAt));
      return create(RevokeTokenResponseSchema);
    }),
  });
}
