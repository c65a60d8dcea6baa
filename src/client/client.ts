/**
 * The TypeScript client: plain Connect clients for the unary services, and `connect()` for a
 * session stream with handshake, commands awaited by id, context sync, events and ping.
 */
import { create, type JsonObject, type MessageInitShape } from "@bufbuild/protobuf";
import { createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { AdminService } from "../../gen/mcp/v1/admin_pb.js";
import { BatchMode, CommandSchema, CommandService, type Command, type Response } from "../../gen/mcp/v1/command_pb.js";
import { ContextService, type ContextSync, type ContextUpdateResult, type ContextUpdateSchema } from "../../gen/mcp/v1/context_pb.js";
import type { Event } from "../../gen/mcp/v1/event_pb.js";
import { EventService } from "../../gen/mcp/v1/event_pb.js";
import {
  ClientMessageSchema,
  SessionService,
  type ClientMessage,
  type AuthenticationResult,
  type HandshakeResult,
  type ServerMessage,
} from "../../gen/mcp/v1/session_pb.js";
import { ProtocolVersion, SecurityLevel } from "../../gen/mcp/v1/types_pb.js";
import { McpError, fromProtoError } from "../errors.js";
import { VERSION } from "../version.js";
import { fromConnectError } from "./errors.js";
import { createPushable, type Pushable } from "../pushable.js";
import { createH2GrpcTransport } from "./h2-grpc-transport.js";
import { h2SessionStream } from "./session-h2.js";
import { connectSessionStream, type OpenSessionStream } from "./session-stream.js";

/** One ClientMessage's content, e.g. `{ case: "ping", value: { id: 1n } }`. */
export type ClientPayload = NonNullable<MessageInitShape<typeof ClientMessageSchema>["message"]>;

/** Options of `createMcpClient`. */
export interface McpClientOptions {
  /** The server, e.g. `http://127.0.0.1:9000`. */
  baseUrl: string;
  /** A JWT sent as `Authorization: Bearer` on every request and in the Handshake. */
  token?: string;
  /**
   * Wire protocol for unary and server-streaming calls. The session stream always uses HTTP/2.
   * `"grpc"` (HTTP/2 only) is the fastest for unary calls: they go straight to node:http2 on one
   * shared connection; `"connect"` also works over HTTP/1.1.
   * @default "connect"
   */
  protocol?: "connect" | "grpc";
  /**
   * HTTP version for unary calls with the Connect protocol (gRPC is always HTTP/2).
   * @default "2"
   */
  httpVersion?: "1.1" | "2";
  /** A prebuilt transport (overrides `protocol` / `httpVersion`). */
  transport?: Transport;
}

/** Options of `McpClient.connect`. */
export interface SessionOptions {
  /**
   * Security level to require.
   * @default SecurityLevel.UNSPECIFIED (what the token and transport allow, up to STANDARD)
   */
  securityLevel?: SecurityLevel;
  /** Resume this session instead of opening a new one. */
  resume?: { sessionId: string; lastSeq: bigint };
  /**
   * Send a Ping this often, in ms; 0 disables. The server drops peers silent for twice its interval.
   * @default the server's heartbeat_interval_ms
   */
  heartbeatIntervalMs?: number;
  /** Versions to offer. @default [PROTOCOL_VERSION_1_0] */
  protocolVersions?: ProtocolVersion[];
  /** Client name for the Handshake. @default "mcp-client-ts" */
  clientName?: string;
  /** Aborting closes the session stream. */
  signal?: AbortSignal;
}

/** Options of one call on a session. */
export interface CallOptions {
  /** Time allowed, in ms; 0 = the server's default. */
  timeoutMs?: number;
  /** Command id; a fresh one when unset. */
  id?: string;
  /** Aborting sends a Cancel. */
  signal?: AbortSignal;
  /** Receives the command's events (output, progress) while it runs. */
  onEvent?: (event: Event) => void;
}

/** A connected client. */
export interface McpClient {
  readonly commands: Client<typeof CommandService>;
  readonly contexts: Client<typeof ContextService>;
  readonly events: Client<typeof EventService>;
  readonly admin: Client<typeof AdminService>;
  /** Opens a session stream and completes the handshake. Rejects with McpError when the server refuses. */
  connect(options?: SessionOptions): Promise<McpSession>;
  /** Runs one tool over unary `Execute` and returns its JSON output. */
  call(tool: string, args?: JsonObject, options?: { timeoutMs?: number }): Promise<JsonObject>;
}

/** An open session stream. */
export interface McpSession {
  readonly sessionId: string;
  readonly handshake: HandshakeResult;
  /** The highest seq received (for resume). */
  readonly lastSeq: bigint;
  /** Runs a tool with JSON arguments; resolves with its output or rejects with the McpError. */
  call(tool: string, args?: JsonObject, options?: CallOptions): Promise<JsonObject>;
  /** Sends a Command and resolves with its Response (errors are in the Response). */
  execute(command: MessageInitShape<typeof CommandSchema>, options?: Omit<CallOptions, "id" | "timeoutMs">): Promise<Response>;
  /** Sends a CommandBatch; resolves with one Response per command, in the batch's order. */
  batch(commands: MessageInitShape<typeof CommandSchema>[], mode?: BatchMode): Promise<Response[]>;
  /** Sends a Cancel. */
  cancel(commandId: string): void;
  /** Applies a context update; rejects with `version_conflict` etc. */
  update(update: MessageInitShape<typeof ContextUpdateSchema>): Promise<ContextUpdateResult>;
  /** Asks for a context's changes since `knownVersion`; with `watch`, later changes arrive on `contextSyncs()`. */
  sync(contextId: string, knownVersion?: bigint, watch?: boolean): Promise<ContextSync>;
  /** Every ContextSync pushed for a watched context. */
  contextSyncs(): AsyncIterable<ContextSync>;
  /** Re-authenticates (token refresh) without reconnecting. */
  authenticate(token: string): Promise<AuthenticationResult>;
  /** Round trip in ms. */
  ping(): Promise<number>;
  /** Sends any ClientMessage as is (the low-level API). */
  send(message: ClientPayload): void;
  /** Every ServerMessage received from now on (the low-level API). */
  messages(): AsyncIterable<ServerMessage>;
  /** Events (command output and progress, session notices). */
  events(): AsyncIterable<Event>;
  /** Resolves when the stream ends; with the error that ended it, if any. */
  readonly closed: Promise<McpError | undefined>;
  /** Ends the stream (the server keeps the session for resume). */
  close(): void;
}

/** Creates a client. */
export function createMcpClient(options: McpClientOptions): McpClient {
  const headers = options.token === undefined ? undefined : { authorization: `Bearer ${options.token}` };
  const bearer: Interceptor = (next) => async (req) => {
    if (headers !== undefined) req.header.set("authorization", headers.authorization);
    return next(req);
  };
  const interceptors = [bearer];
  const transport = options.transport ?? defaultTransport(options, interceptors, headers);
  // The session stream: node:http2 with gRPC framing and one write per tick (session-h2.ts);
  // a caller's own transport is used as given.
  const openStream: OpenSessionStream =
    options.transport === undefined && /^https?:\/\//i.test(options.baseUrl)
      ? h2SessionStream({ baseUrl: options.baseUrl, ...(headers === undefined ? {} : { headers }) })
      : connectSessionStream(createClient(SessionService, options.transport ?? createGrpcTransport({ baseUrl: options.baseUrl, interceptors })));
  const commands = createClient(CommandService, transport);
  return {
    commands,
    contexts: createClient(ContextService, transport),
    events: createClient(EventService, transport),
    admin: createClient(AdminService, transport),
    connect: (o = {}) => openSession(openStream, options.token, o),
    async call(tool, args = {}, o = {}) {
      try {
        const r = await commands.execute({ tool, payload: { case: "arguments", value: args }, timeoutMs: o.timeoutMs ?? 0 });
        return outputOf(r);
      } catch (e) {
        throw fromConnectError(e) ?? e;
      }
    },
  };
}

/**
 * gRPC over HTTP/2: unary calls on node:http2 directly (h2-grpc-transport.ts), streaming calls
 * through connect-node. Otherwise connect-node's Connect transport.
 */
function defaultTransport(options: McpClientOptions, interceptors: Interceptor[], headers: Record<string, string> | undefined): Transport {
  if (options.protocol !== "grpc") {
    return createConnectTransport({ baseUrl: options.baseUrl, httpVersion: options.httpVersion ?? "2", interceptors });
  }
  const streams = createGrpcTransport({ baseUrl: options.baseUrl, interceptors });
  return /^https?:\/\//i.test(options.baseUrl) ? createH2GrpcTransport({ baseUrl: options.baseUrl, streams, ...(headers === undefined ? {} : { headers }) }) : streams;
}

function outputOf(r: Response): JsonObject {
  switch (r.result.case) {
    case "output":
      return r.result.value;
    case "error":
      throw fromProtoError(r.result.value);
    case "typedOutput":
      throw new TypeError(`command ${r.commandId} returned a typed output (${r.result.value.typeUrl}); use execute() for typed tools`);
    default:
      return {};
  }
}

/** A command waiting for its Response; `map` turns the Response into what the caller gets (may throw). */
interface PendingCommand {
  resolve(value: unknown): void;
  reject(e: unknown): void;
  map(r: Response): unknown;
  onEvent?: ((e: Event) => void) | undefined;
}

const asIs = (r: Response): Response => r;
/** The options of a call given none (not a fresh `{}` per call). */
const NO_OPTIONS: CallOptions = Object.freeze({});

let nextId = 0;
// Unique within the process and distinct across restarts; computed once, not per call.
const idPrefix = `c${Date.now().toString(36)}-`;
const freshId = () => idPrefix + (++nextId).toString(36);

async function openSession(openStream: OpenSessionStream, token: string | undefined, o: SessionOptions): Promise<McpSession> {
  const pendingResponses = new Map<string, PendingCommand>();
  const pendingUpdates = new Map<string, { resolve: (r: ContextUpdateResult) => void; reject: (e: McpError) => void }>();
  const pendingSyncs = new Map<string, { resolve: (s: ContextSync) => void; reject: (e: McpError) => void }[]>();
  const pendingPings = new Map<bigint, () => void>();
  let pendingAuth: { resolve: (r: AuthenticationResult) => void; reject: (e: McpError) => void } | undefined;
  const readers = new Set<Pushable<ServerMessage>>();
  const syncReaders = new Set<Pushable<ContextSync>>();
  const eventReaders = new Set<Pushable<Event>>();
  let lastSeq = o.resume?.lastSeq ?? 0n;
  // Declared before the stream can end: a refused handshake ends it before the interval exists.
  let heartbeat: ReturnType<typeof setInterval> | undefined;
  let resolveClosed!: (e: McpError | undefined) => void;
  const closed = new Promise<McpError | undefined>((r) => (resolveClosed = r));

  let sessionReady = false;
  let endError: McpError | undefined;
  const stream = openStream({
    message(m) {
      onMessage(m);
      if (m.message.case === "error" && !sessionReady) endError = fromProtoError(m.message.value);
    },
    end(reason) {
      if (reason !== undefined) {
        endError = fromConnectError(reason) ?? new McpError("invalid_message", reason instanceof Error ? reason.message : String(reason), { cause: reason });
      }
      onEnd();
    },
  });
  o.signal?.addEventListener("abort", () => stream.close(), { once: true });

  const send = (message: ClientPayload) => stream.send(create(ClientMessageSchema, { message }));

  let handshakeDone: ((h: HandshakeResult) => void) | undefined;
  let handshakeFailed: ((e: McpError) => void) | undefined;
  const handshake = new Promise<HandshakeResult>((resolve, reject) => {
    handshakeDone = resolve;
    handshakeFailed = reject;
  });

  send({
    case: "handshake",
    value: {
      protocolVersions: o.protocolVersions ?? [ProtocolVersion.PROTOCOL_VERSION_1_0],
      client: { name: o.clientName ?? "mcp-client-ts", version: VERSION },
      securityLevel: o.securityLevel ?? SecurityLevel.UNSPECIFIED,
      ...(token === undefined ? {} : { token }),
      ...(o.resume === undefined ? {} : { resume: o.resume }),
    },
  });

  function onMessage(m: ServerMessage): void {
    if (m.seq > lastSeq) lastSeq = m.seq;
    if (readers.size > 0) for (const r of readers) r.push(m);
    const msg = m.message;
    switch (msg.case) {
      case "handshakeResult":
        handshakeDone?.(msg.value);
        return;
      case "response": {
        const p = pendingResponses.get(msg.value.commandId);
        if (p !== undefined) {
          pendingResponses.delete(msg.value.commandId);
          let value: unknown;
          try {
            value = p.map(msg.value);
          } catch (e) {
            p.reject(e);
            return;
          }
          p.resolve(value);
        }
        return;
      }
      case "event":
        if (msg.value.commandId !== "") pendingResponses.get(msg.value.commandId)?.onEvent?.(msg.value);
        for (const r of eventReaders) r.push(msg.value);
        return;
      case "updateResult": {
        const p = pendingUpdates.get(msg.value.id);
        if (p === undefined) return;
        pendingUpdates.delete(msg.value.id);
        if (msg.value.error !== undefined) p.reject(fromProtoError(msg.value.error));
        else p.resolve(msg.value);
        return;
      }
      case "contextSync": {
        const waiting = pendingSyncs.get(msg.value.contextId);
        const p = waiting?.shift();
        if (p !== undefined) p.resolve(msg.value);
        for (const r of syncReaders) r.push(msg.value);
        return;
      }
      case "authenticationResult":
        pendingAuth?.resolve(msg.value);
        pendingAuth = undefined;
        return;
      case "pong":
        pendingPings.get(msg.value.id)?.();
        pendingPings.delete(msg.value.id);
        return;
      case "error": {
        const err = fromProtoError(msg.value);
        if (handshakeFailed !== undefined && handshakeDone !== undefined && !sessionReady) {
          handshakeFailed(err);
          return;
        }
        if (err.details.contextId !== undefined) {
          const p = pendingSyncs.get(err.details.contextId)?.shift();
          if (p !== undefined) return p.reject(err);
        }
        if (pendingAuth !== undefined && err.kind === "SECURITY") {
          pendingAuth.reject(err);
          pendingAuth = undefined;
        }
        return;
      }
    }
  }

  function onEnd(): void {
    const err = endError ?? new McpError("session_expired", "the session stream ended");
    handshakeFailed?.(err);
    for (const r of readers) r.end();
    for (const r of syncReaders) r.end();
    for (const r of eventReaders) r.end();
    // A command whose Response can no longer arrive on this stream: after a resume it will.
    for (const p of pendingResponses.values()) p.reject(err);
    pendingResponses.clear();
    for (const p of pendingUpdates.values()) p.reject(err);
    for (const list of pendingSyncs.values()) for (const p of list) p.reject(err);
    pendingAuth?.reject(err);
    clearInterval(heartbeat);
    resolveClosed(endError);
  }

  const hs = await handshake;
  sessionReady = true;
  const interval = o.heartbeatIntervalMs ?? hs.limits?.heartbeatIntervalMs ?? 0;
  let pingId = 0n;
  heartbeat = setInterval(() => send({ case: "ping", value: { id: ++pingId } }), Math.max(interval, 1));
  if (interval === 0) clearInterval(heartbeat);
  heartbeat.unref();

  function execute(command: MessageInitShape<typeof CommandSchema>, co: Omit<CallOptions, "id" | "timeoutMs"> = {}): Promise<Response> {
    const id = command.id !== undefined && command.id !== "" ? command.id : freshId();
    return start(create(CommandSchema, { ...command, id }), co, asIs);
  }

  /** Sends a command; the promise gets `map(response)` — one promise per command, no `.then` hop. */
  function start<T>(command: Command, co: Omit<CallOptions, "id" | "timeoutMs">, map: (r: Response) => T): Promise<T> {
    const id = command.id;
    return new Promise<T>((resolve, reject) => {
      if (stream.ended) return reject(endError ?? new McpError("session_expired", "the session stream has ended"));
      pendingResponses.set(id, { resolve: resolve as (v: unknown) => void, reject, map, onEvent: co.onEvent });
      co.signal?.addEventListener("abort", () => send({ case: "cancel", value: { commandId: id } }), { once: true });
      stream.send({ $typeName: "mcp.v1.ClientMessage", message: { case: "command", value: command } } satisfies ClientMessage);
    });
  }

  return {
    sessionId: hs.sessionId,
    handshake: hs,
    get lastSeq() {
      return lastSeq;
    },
    call(tool, args = {}, co = NO_OPTIONS) {
      // A literal, not create(): every field is given, and this runs once per call (hot path).
      const command: Command = {
        $typeName: "mcp.v1.Command",
        id: co.id ?? freshId(),
        tool,
        payload: { case: "arguments", value: args },
        timeoutMs: co.timeoutMs ?? 0,
        contextId: "",
        contextVersion: 0n,
        traceparent: "",
        tracestate: "",
      };
      return start(command, co, outputOf);
    },
    execute,
    batch(commands, mode = BatchMode.SEQUENTIAL) {
      const withIds = commands.map((c) => ({ ...c, id: c.id !== undefined && c.id !== "" ? c.id : freshId() }));
      const promises = withIds.map(
        (c) => new Promise<Response>((resolve, reject) => pendingResponses.set(c.id, { resolve: resolve as (v: unknown) => void, reject, map: asIs })),
      );
      send({ case: "batch", value: { commands: withIds, mode } });
      return Promise.all(promises);
    },
    cancel(commandId) {
      send({ case: "cancel", value: { commandId } });
    },
    update(update) {
      const id = update.id !== undefined && update.id !== "" ? update.id : freshId();
      return new Promise((resolve, reject) => {
        pendingUpdates.set(id, { resolve, reject });
        send({ case: "update", value: { ...update, id } });
      });
    },
    sync(contextId, knownVersion = 0n, watch = false) {
      return new Promise((resolve, reject) => {
        const list = pendingSyncs.get(contextId) ?? [];
        list.push({ resolve, reject });
        pendingSyncs.set(contextId, list);
        send({ case: "sync", value: { contextId, knownVersion, watch } });
      });
    },
    contextSyncs() {
      const p = createPushable<ContextSync>();
      syncReaders.add(p);
      return p;
    },
    authenticate(newToken) {
      return new Promise((resolve, reject) => {
        pendingAuth = { resolve, reject };
        send({ case: "authentication", value: { token: newToken } });
      });
    },
    ping() {
      const id = ++pingId;
      const started = performance.now();
      return new Promise((resolve) => {
        pendingPings.set(id, () => resolve(performance.now() - started));
        send({ case: "ping", value: { id } });
      });
    },
    send,
    messages() {
      const p = createPushable<ServerMessage>();
      readers.add(p);
      return p;
    },
    events() {
      const p = createPushable<Event>();
      eventReaders.add(p);
      return p;
    },
    closed,
    close() {
      stream.close();
    },
  };
}
