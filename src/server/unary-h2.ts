/**
 * gRPC unary fast path on node:http2 for `mcp.v1.CommandService` Execute, ExecuteBatch and
 * ListTools (beside the session stream's, src/server/session-h2.ts). connect-node spends ~90 % of
 * a unary call on its per-request machinery; here one request is: read one frame, `fromBinary`,
 * authenticate exactly like routes.ts `unaryAuth`, run the command(s) on the shared runner
 * (routes.ts `startCommand` / `startBatch`), and answer with one HEADERS + DATA + trailers, or a
 * trailers-only error carrying the §7 status and the `mcp.v1.Error` detail in
 * `grpc-status-details-bin` — what connect-node sends for the same error.
 *
 * Only gRPC over HTTP/2 with identity encoding takes this path; the Connect protocol, gRPC-Web,
 * HTTP/1.1, compressed requests and every other RPC still go through connect-node.
 */
import type { IncomingHttpHeaders, ServerHttp2Stream } from "node:http2";
import { create, fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import {
  CommandBatchSchema,
  CommandSchema,
  ExecuteBatchResponseSchema,
  ListToolsRequestSchema,
  ListToolsResponseSchema,
  ResponseSchema,
} from "../../gen/mcp/v1/command_pb.js";
import { SecurityLevel } from "../../gen/mcp/v1/types_pb.js";
import { McpError, fromProtoError } from "../errors.js";
import type { McpCore, TransportInfo } from "../session/core.js";
import type { AuthState } from "../session/session.js";
import { GRPC_HEADERS, OK_TRAILERS, frameRefusal, isGrpcIdentityPost, respondError } from "./grpc-h2.js";
import { streamFacts, type StreamHandler } from "./listener.js";
import { startBatch, startCommand } from "./routes.js";
import { createUnaryFrameReader, frameBytes } from "../transport/grpc-frames.js";
import { createTurnScheduler, type TurnScheduler } from "./turns.js";
import { headerValue, inheritTraceparent } from "../observability/tracing.js";

/** How an answer is delivered: the encoded output message, or the error that fails the RPC. */
type Finish = (out: Uint8Array | McpError) => void;

/** One unary RPC: its input message and how to run it. */
interface UnaryMethod<I extends DescMessage> {
  input: I;
  /**
   * Starts the call; `finish` is called once. `leftMs` is what remains of the client's deadline.
   * Returns how to abort it when the client goes away, if it can be aborted.
   */
  start(core: McpCore, auth: AuthState, input: MessageShape<I>, leftMs: number | undefined, finish: Finish): (() => void) | undefined;
}

const cancelled = () => new McpError("cancelled", "the client cancelled the request");

const execute: UnaryMethod<typeof CommandSchema> = {
  input: CommandSchema,
  start(core, auth, command, leftMs, finish) {
    if (leftMs !== undefined) {
      // The client's deadline caps the command's own timeout (the runner applies max_timeout_ms).
      const own = command.timeoutMs === 0 ? core.deps.options.defaultTimeoutMs : command.timeoutMs;
      command.timeoutMs = Math.min(own, leftMs);
    }
    const runner = startCommand(core, auth, command, (r) =>
      finish(r.result.case === "error" ? fromProtoError(r.result.value) : toBinary(ResponseSchema, r)),
    );
    return () => runner.abortAll(cancelled());
  },
};

const executeBatch: UnaryMethod<typeof CommandBatchSchema> = {
  input: CommandBatchSchema,
  start(core, auth, batch, leftMs, finish) {
    if (leftMs !== undefined) {
      for (const command of batch.commands) {
        const own = command.timeoutMs === 0 ? core.deps.options.defaultTimeoutMs : command.timeoutMs;
        command.timeoutMs = Math.min(own, leftMs);
      }
    }
    const runner = startBatch(core, auth, batch, (r) => finish(toBinary(ExecuteBatchResponseSchema, r)));
    return () => runner.abortAll(cancelled());
  },
};

const listTools: UnaryMethod<typeof ListToolsRequestSchema> = {
  input: ListToolsRequestSchema,
  start(core, auth, _req, _leftMs, finish) {
    finish(toBinary(ListToolsResponseSchema, create(ListToolsResponseSchema, { tools: core.listTools(auth) })));
    return undefined;
  },
};

/** Erases a method's input type for the table (each method decodes its own `input`). */
const erased = <I extends DescMessage>(m: UnaryMethod<I>) => m as unknown as UnaryMethod<DescMessage>;

/** The unary RPCs served here, by HTTP/2 path. */
export const UNARY_METHODS: ReadonlyMap<string, UnaryMethod<DescMessage>> = new Map([
  ["/mcp.v1.CommandService/Execute", erased(execute)],
  ["/mcp.v1.CommandService/ExecuteBatch", erased(executeBatch)],
  ["/mcp.v1.CommandService/ListTools", erased(listTools)],
]);

/**
 * Requests started per event-loop turn (turns.ts). Measured with 32 `Execute` calls in flight
 * (bench/, 2 cores): 4 → 11.3k calls/s, 8 → 12.3–13.3k, 16 → 11.8k, unlimited → 10.2k.
 */
const REQUESTS_PER_TURN = 8;

/**
 * Returns a stream handler that serves the RPCs of `UNARY_METHODS` when the request is gRPC over
 * HTTP/2 with identity encoding, and returns false (untouched) for anything else.
 */
export function createUnaryH2Handler(core: McpCore): StreamHandler {
  const maxMessageBytes = core.deps.options.maxMessageBytes;
  const turns = createTurnScheduler(REQUESTS_PER_TURN);
  return (stream, headers) => {
    const path = headers[":path"];
    if (path === undefined) return false;
    const method = UNARY_METHODS.get(path);
    if (method === undefined || !isGrpcIdentityPost(headers, path)) return false;
    serveUnary(core, stream, headers, maxMessageBytes, method, turns);
    return true;
  };
}

/**
 * `grpc-timeout` in milliseconds (gRPC over HTTP/2: 1–8 digits and a unit H M S m u n);
 * undefined when absent; an McpError when malformed.
 */
export function parseGrpcTimeout(value: string | string[] | undefined): number | undefined | McpError {
  if (value === undefined) return undefined;
  const m = typeof value === "string" ? /^(\d{1,8})([HMSmun])$/.exec(value) : null;
  if (m === null) return new McpError("invalid_message", `protocol error: invalid grpc timeout value: ${String(value)}`);
  const n = Number(m[1]);
  switch (m[2]) {
    case "H":
      return n * 3_600_000;
    case "M":
      return n * 60_000;
    case "S":
      return n * 1000;
    case "m":
      return n;
    case "u":
      return n / 1000;
    default:
      return n / 1_000_000;
  }
}

const ignore = () => {};
function sendOkTrailers(this: ServerHttp2Stream): void {
  this.sendTrailers(OK_TRAILERS);
}

function serveUnary(
  core: McpCore,
  stream: ServerHttp2Stream,
  headers: IncomingHttpHeaders,
  maxMessageBytes: number,
  method: UnaryMethod<DescMessage>,
  turns: TurnScheduler,
): void {
  // Errors of a reset stream surface as 'close'; an unhandled 'error' would crash the process.
  stream.on("error", ignore);
  // Reset in the packet that opened it (node emits 'stream' a tick later): nothing to answer.
  if (stream.destroyed || stream.closed) return;
  const startedAt = core.now();
  let done = false;

  /** Answers with an error before the command ran; the rest of the body is read and dropped. */
  const refuse = (reason: unknown) => {
    done = true;
    stream.removeListener("data", onData);
    respondError(stream, reason);
  };

  const facts = streamFacts(stream);
  if (facts.overLimit) {
    refuse(new McpError("too_many_connections", "the server is at its connection limit: retry later", { retryAfterMs: 1000 }));
    return;
  }
  const timeoutMs = parseGrpcTimeout(headers["grpc-timeout"]);
  if (timeoutMs instanceof McpError) {
    refuse(timeoutMs);
    return;
  }
  const deadline = timeoutMs === undefined ? undefined : startedAt + timeoutMs;

  // The one frame (a unary request is one frame + END_STREAM), cut by the shared frame reader:
  // a compressed or oversized frame is refused from its header, before its body is buffered.
  const frames = createUnaryFrameReader(
    maxMessageBytes,
    () => refuse(new McpError("invalid_message", "protocol error: received extra input message for unary method")),
    (e) => refuse(frameRefusal(e, maxMessageBytes)),
  );
  function onData(chunk: Buffer): void {
    if (!done) frames.push(chunk);
  }
  stream.on("data", onData);

  stream.once("end", () => {
    if (done) return;
    if (frames.held > 0) {
      return refuse(new McpError("invalid_message", `protocol error: the request ended inside a frame (${frames.held} of ${frames.need} bytes)`));
    }
    const body = frames.body;
    if (body === undefined) return refuse(new McpError("invalid_message", "protocol error: missing input message for unary method"));
    let input: MessageShape<DescMessage>;
    try {
      input = fromBinary(method.input, body);
    } catch (e) {
      return refuse(new McpError("invalid_message", `could not decode a ${method.input.name}: ${e instanceof Error ? e.message : String(e)}`, { cause: e }));
    }
    let auth: Promise<AuthState>;
    try {
      // Exactly routes.ts `unaryAuth`: the Authorization header, at the highest level allowed.
      const transport: TransportInfo = { secure: facts.secure, authorization: headers.authorization ?? null };
      auth = core.authenticate(core.bearer(transport), transport, SecurityLevel.HIGH);
    } catch (e) {
      return refuse(e);
    }
    auth.then((a) => turns.run(() => run(a, input)), refuse);
  });

  function run(auth: AuthState, input: MessageShape<DescMessage>): void {
    if (done || stream.destroyed || stream.closed) return;
    let leftMs: number | undefined;
    if (deadline !== undefined) {
      leftMs = Math.ceil(deadline - core.now());
      if (leftMs <= 0) {
        return refuse(new McpError("timeout", `the request's deadline (grpc-timeout ${String(headers["grpc-timeout"])}) passed before the call started`));
      }
    }
    let abort: (() => void) | undefined;
    const onClose = () => {
      // Client cancel or reset before the answer: abort the command (its handler's signal fires).
      if (!done) abort?.();
    };
    // A command without a traceparent of its own continues the request's trace.
    inheritTraceparent(input, headerValue(headers.traceparent), headerValue(headers.tracestate));
    try {
      abort = method.start(core, auth, input, leftMs, (out) => {
        done = true;
        stream.removeListener("close", onClose);
        if (stream.destroyed || stream.closed) return;
        if (out instanceof McpError) return respondError(stream, out);
        stream.respond(GRPC_HEADERS, { waitForTrailers: true });
        stream.once("wantTrailers", sendOkTrailers);
        stream.end(frameBytes(out));
      });
    } catch (e) {
      return refuse(e);
    }
    if (!done) stream.once("close", onClose);
  }
}
