/**
 * One session stream (SessionService/Connect): the handshake state machine and the dispatch of
 * every ClientMessage kind (PROTOCOL.md §4). The read side never waits for a command to finish;
 * it only waits while the outbound side is congested (backpressure).
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { Response } from "../../gen/mcp/v1/command_pb.js";
import { ContextUpdateResultSchema, type StateSync } from "../../gen/mcp/v1/context_pb.js";
import type { WatchSink } from "../context/index.js";
import {
  AuthenticationResultSchema,
  HandshakeResultSchema,
  PongSchema,
  ServerMessageSchema,
  type ClientMessage,
  type Handshake,
  type ServerMessage,
} from "../../gen/mcp/v1/session_pb.js";
import { SecurityLevel } from "../../gen/mcp/v1/types_pb.js";
import { protocolVersionName } from "../config.js";
import { McpError, toMcpError, toProtoError } from "../errors.js";
import type { McpCore, TransportInfo } from "./core.js";
import { INPUT_WINDOW_BYTES, MAX_CHUNK_BYTES } from "./chunks.js";
import { OUTPUT_JSON_CAPABILITY } from "../transport/json-text.js";
import type { AuthState, MessageSink, Session } from "./session.js";
import type { StreamObservation } from "../observability/telemetry.js";

type ConnectionState =
  | { kind: "awaiting_handshake" }
  | { kind: "handshaking" }
  | { kind: "bound"; session: Session; respond: (r: Response) => void }
  | { kind: "closed" };

/** A stream's connection to the core. Create one per stream with `openConnection`. */
export interface Connection {
  /** Handles one message. Never waits for the work it starts. */
  receive(msg: ClientMessage): void;
  /** Reads messages until the stream ends, pausing while the client does not read (backpressure). */
  run(requests: AsyncIterable<ClientMessage>): Promise<void>;
  /** True while the outbound side is full: a transport reading frames itself should pause. */
  readonly congested: boolean;
  /**
   * Resolves when the outbound side can take more; drops the client with `slow_consumer` when it
   * reads nothing for `slowConsumerTimeoutMs` (PROTOCOL.md §6). For transports that pause their
   * own reading.
   */
  waitWritable(): Promise<void>;
  /** The stream ended (client gone, transport error): detach the session, keep it for resume. */
  end(error?: McpError): void;
  /**
   * The client sent its last message (half-close = drain, ARCHITECTURE.md "A stream's life"):
   * the handshake completes, messages held meanwhile are handled, every command, batch, update,
   * sync and authentication it sent is answered on this stream (each command bounded by its own
   * timeout), context watches opened on it keep it open until the client cancels, and what is
   * queued for the client is written. Resolves then — or as soon as the stream ends otherwise
   * (reset, cancel, dead peer, `slow_consumer`, another stream resumed the session) — and the
   * session detaches as with `end()`. The transport then ends the RPC with OK.
   */
  endRequests(): Promise<void>;
  /** The session, once the handshake succeeded. */
  readonly session: Session | undefined;
}

/**
 * The getters of every Connection, on one prototype: an object literal with getters keeps its
 * properties in a dictionary, ~0.8 KB per stream (bench/scale.ts, idle sessions). `state` is a
 * copy of the stream's state, set by its `setState`.
 */
class ConnectionGetters {
  constructor(public state: ConnectionState) {}

  get congested(): boolean {
    const s = this.state;
    return s.kind === "bound" && s.session.isCongested;
  }

  get session(): Session | undefined {
    const s = this.state;
    return s.kind === "bound" ? s.session : undefined;
  }
}

/** Starts the state machine of one stream. */
export function openConnection(core: McpCore, transport: TransportInfo, sink: MessageSink): Connection {
  const opts = core.deps.options;
  let state: ConnectionState = { kind: "awaiting_handshake" };
  // Messages that arrive while the (async) handshake runs are held, then handled in order.
  let held: ClientMessage[] = [];
  // What the Handshake asked for; a refresh is granted against the same request.
  let requestedLevel = SecurityLevel.UNSPECIFIED;
  // Heartbeat ticks since the peer's last message: counted, not timed, so receiving costs no
  // clock read (a Date.now() per message is ~1 % of an echo command).
  let silentTicks = 0;
  // Set once the client half-closed: it can send nothing more, Pings included, so silence is no
  // sign of a dead peer (HTTP/2 PING still finds one, listener.ts).
  let halfClosed = false;
  const heartbeat = setInterval(() => {
    // A peer silent through three ticks in a row — so for more than twice the interval — is
    // dropped and its session kept for resume (§4 step 6).
    if (!halfClosed && ++silentTicks > 2) {
      end();
      sink.close();
    }
  }, opts.heartbeatIntervalMs);
  heartbeat.unref();
  let slowTimer: ReturnType<typeof setTimeout> | undefined;
  /** Settles once a started handshake has succeeded or failed. */
  let handshakeSettled: Promise<void> = Promise.resolve();
  /** Updates, syncs and authentications started and not answered yet (a drain waits for them). */
  let pendingReplies = 0;
  /** Set while `endRequests` waits for the last answers: called once everything is answered. */
  let drainWaiter: (() => void) | undefined;
  let drainCheckScheduled = false;
  /** The log line and span of this stream's session, from the handshake on. */
  let observed: StreamObservation | undefined;

  const getters = new ConnectionGetters(state);
  const self: Connection = Object.assign(getters, { receive, run, waitWritable, end, endRequests });

  /** Sends a message outside a session (before or instead of a handshake): seq 0. */
  function sendUnbound(payload: ServerMessage["message"]): void {
    sink.write([create(ServerMessageSchema, { seq: 0n, message: payload })]);
  }

  function setState(next: ConnectionState): void {
    if (next.kind === "closed") {
      clearInterval(heartbeat);
      clearTimeout(slowTimer);
    }
    state = next;
    getters.state = next;
    if (next.kind === "closed") releaseDrain();
  }

  function releaseDrain(): void {
    const w = drainWaiter;
    drainWaiter = undefined;
    w?.();
  }

  /**
   * Something was answered while draining: check, once the current call stack is done, whether
   * anything is still owed. Not now: a sequential batch starts its next command right after the
   * previous one's Response is emitted.
   */
  function answered(): void {
    if (drainWaiter === undefined || drainCheckScheduled) return;
    drainCheckScheduled = true;
    process.nextTick(checkDrained);
  }

  function checkDrained(): void {
    drainCheckScheduled = false;
    if (drainWaiter === undefined) return;
    if (state.kind === "bound" && state.session.isAttachedTo(self)) {
      const s = state.session;
      if (s.runner.inflight > 0 || pendingReplies > 0 || s.watches.size > 0) return;
    }
    releaseDrain();
  }

  /** Resolves once nothing the client sent is still unanswered and no watch is open on the stream. */
  function drained(): Promise<void> {
    return new Promise((resolve) => {
      drainWaiter = resolve;
      drainCheckScheduled = true;
      checkDrained();
    });
  }

  /** A fatal error: tell the client and end the stream (the session stays for resume). */
  function fail(err: McpError): void {
    observed?.ended(err.code);
    // Refused tokens were counted by the core; a bound session counts its drop itself.
    if (state.kind !== "bound" && state.kind !== "closed" && err.kind !== "SECURITY") core.telemetry.failed(err);
    if (state.kind === "bound") {
      if (state.session.isAttachedTo(self)) state.session.drop(err);
      else sink.close();
    } else if (state.kind !== "closed") {
      sendUnbound({ case: "error", value: toProtoError(err) });
      sink.close();
    }
    setState({ kind: "closed" });
  }

  function end(error?: McpError): void {
    if (error !== undefined) return fail(error);
    observed?.ended(state.kind === "bound" && state.session.closed ? (state.session.closeReason?.code ?? "closed") : "disconnected");
    if (state.kind === "bound") state.session.detach(self);
    setState({ kind: "closed" });
  }

  async function endRequests(): Promise<void> {
    halfClosed = true;
    await handshakeSettled;
    if (state.kind === "bound" && state.session.isAttachedTo(self)) {
      await drained();
      // Everything is answered; what waits in the session's queue (congested) goes out first.
      const s = self.session;
      while (s !== undefined && s.isAttachedTo(self) && s.isCongested) await s.writable();
      if (s !== undefined && s.isAttachedTo(self)) s.flush();
    }
    observed?.ended("client_closed");
    end();
  }

  function receive(msg: ClientMessage): void {
    silentTicks = 0;
    switch (state.kind) {
      case "closed":
        return;
      case "handshaking":
        held.push(msg);
        return;
      case "awaiting_handshake":
        if (msg.message.case !== "handshake") {
          return fail(new McpError("handshake_required", `the first message must be a Handshake, got ${msg.message.case ?? "an empty message"}`));
        }
        setState({ kind: "handshaking" });
        handshakeSettled = handshake(msg.message.value).then(
          (session) => {
            if (state.kind === "closed") {
              observed?.ended("disconnected");
              session.detach(self);
              return;
            }
            // One response callback per stream, not a closure per command (hot path).
            setState({
              kind: "bound",
              session,
              respond: (r) => {
                session.emit({ case: "response", value: r });
                if (drainWaiter !== undefined) answered();
              },
            });
            const queued = held;
            held = [];
            for (const m of queued) receive(m);
          },
          (e: unknown) => fail(toMcpError(e, "invalid_message")),
        );
        return;
      case "bound":
        // Late frames of a stream another one took over: the resumed stream's client re-sends
        // them (counted by `received`), so running them here too would run them twice.
        if (!state.session.isAttachedTo(self)) return;
        state.session.received++;
        dispatch(state.session, state.respond, msg);
    }
  }

  async function handshake(h: Handshake): Promise<Session> {
    const supported = opts.protocolVersions;
    const version = h.protocolVersions.find((v) => supported.includes(v));
    if (version === undefined) {
      throw new McpError(
        "unsupported_version",
        `no common protocol version: the client offered [${h.protocolVersions.map(protocolVersionName).join(", ")}], this server speaks [${supported.map(protocolVersionName).join(", ")}]`,
        { supportedVersions: supported },
      );
    }
    if (h.securityLevel === SecurityLevel.HIGH && !transport.secure) {
      throw new McpError("insufficient_security_level", "security level high needs a TLS connection; this one is cleartext");
    }
    requestedLevel = h.securityLevel;
    const token = h.token ?? core.bearer(transport);
    const auth = await core.authenticate(token, transport, h.securityLevel);
    if (h.resume !== undefined && h.resume.sessionId !== "") {
      return resume(h, auth, version);
    }
    const session = core.newSession(auth, { sink, owner: self }, h.capabilities.includes(OUTPUT_JSON_CAPABILITY));
    session.emit({ case: "handshakeResult", value: handshakeResult(session, auth, version, false) });
    observed = core.telemetry.streamOpened(session, transport, false, 0);
    return session;
  }

  async function resume(h: Handshake, auth: AuthState, version: number): Promise<Session> {
    const r = h.resume!; // checked by the caller
    const session = await core.findForResume(r.sessionId, auth);
    const replay = session.replayFor(r.lastSeq);
    if (replay === undefined) {
      throw new McpError(
        "session_expired",
        `session ${r.sessionId} can no longer replay from seq ${r.lastSeq} (the resume buffer moved on): start a new session and re-sync context`,
      );
    }
    session.attach(sink, self);
    // The client's credentials may be newer than the session's (a refreshed token).
    if (auth.principal !== undefined) session.setAuth(auth);
    // Every message after last_seq exactly once, in order, then the live stream (§4 step 5). An
    // earlier stream's HandshakeResult is not replayed: it answered that stream's Handshake, and a
    // client resuming from seq 0 would take it for the answer to this one (resumed = false).
    const messages = replay.filter((m) => m.message.case !== "handshakeResult");
    if (messages.length > 0) sink.write(messages);
    const result = handshakeResult(session, session.auth, version, true);
    if (session.countsReceived) result.receivedMessages = BigInt(session.received);
    session.emit({ case: "handshakeResult", value: result });
    observed = core.telemetry.streamOpened(session, transport, true, messages.length);
    return session;
  }

  function handshakeResult(session: Session, auth: AuthState, version: number, resumed: boolean) {
    return create(HandshakeResultSchema, {
      protocolVersion: version,
      sessionId: session.id,
      server: core.deps.server,
      securityLevel: auth.level,
      limits: {
        maxMessageBytes: opts.maxMessageBytes,
        maxInflightCommands: opts.maxInflightCommands,
        maxBatchSize: opts.maxBatchSize,
        heartbeatIntervalMs: opts.heartbeatIntervalMs,
        defaultTimeoutMs: opts.defaultTimeoutMs,
        maxTimeoutMs: opts.maxTimeoutMs,
        maxChunkBytes: MAX_CHUNK_BYTES,
        inputWindowBytes: INPUT_WINDOW_BYTES,
      },
      ...(auth.principal === undefined ? {} : { principal: auth.principal }),
      ...(auth.expiresAt === undefined ? {} : { expiresAt: timestampFromMs(auth.expiresAt) }),
      resumed,
      // The session's, not this Handshake's: a resumed session keeps the form it started with.
      capabilities: session.outputJson ? [OUTPUT_JSON_CAPABILITY] : [],
    });
  }

  /** The session's answer to an error that belongs to no command. */
  function sendError(session: Session, err: McpError): void {
    session.emit({ case: "error", value: toProtoError(err) });
  }

  function dispatch(session: Session, respond: (r: Response) => void, msg: ClientMessage): void {
    const m = msg.message;
    switch (m.case) {
      case "command":
        // Readiness (authenticated, not expired) is checked per command by the runner's host, so a
        // refused command still gets its one Response.
        session.runner.start(m.value, respond);
        return;
      case "batch":
        session.runner.startBatch(m.value, respond);
        return;
      case "cancel":
        // Cancelling a command that already finished is not an error: its Response is on its way.
        session.runner.cancel(m.value.commandId);
        return;
      case "ping":
        // Answered at once: a Pong measures the round trip, it does not wait for earlier work.
        session.emit({ case: "pong", value: create(PongSchema, { id: m.value.id }) });
        return;
      case "authentication":
        authenticateSession(session, m.value.token);
        return;
      case "sync":
        startSync(session, m.value);
        return;
      case "update": {
        const update = m.value;
        pendingReplies++;
        core.updateContext(session.auth, update, session.id).then(
          (result) => {
            replied();
            session.emit({ case: "updateResult", value: result });
          },
          (e: unknown) => {
            replied();
            const err = toMcpError(e, "invalid_argument");
            session.emit({
              case: "updateResult",
              value: create(ContextUpdateResultSchema, {
                id: update.id,
                contextId: update.contextId,
                version: err.details.currentVersion ?? 0n,
                error: toProtoError(err),
              }),
            });
          },
        );
        return;
      }
      case "commandInput": {
        // Input for a command in flight (src/session/chunks.ts); one that is not is the client's mistake, not fatal.
        const refused = session.runner.input(m.value);
        if (refused !== undefined) sendError(session, refused);
        return;
      }
      case "handshake":
        return sendError(session, new McpError("invalid_message", "the session already completed its Handshake"));
      case undefined:
        return sendError(session, new McpError("invalid_message", "empty ClientMessage: set one of its fields"));
    }
  }

  /** One of `pendingReplies` was answered. */
  function replied(): void {
    pendingReplies--;
    answered();
  }

  function authenticateSession(session: Session, token: string): void {
    pendingReplies++;
    core.authenticate(token, transport, requestedLevel).then(
      (auth) => {
        const current = session.auth.principal?.subject;
        if (current !== undefined && auth.principal?.subject !== current) {
          throw new McpError("permission_denied", `this session belongs to "${current}": a token for another subject cannot take it over`);
        }
        const level = auth.level;
        session.setAuth(auth);
        session.emit({
          case: "authenticationResult",
          value: create(AuthenticationResultSchema, {
            ...(auth.principal === undefined ? {} : { principal: auth.principal }),
            ...(auth.expiresAt === undefined ? {} : { expiresAt: timestampFromMs(auth.expiresAt) }),
            securityLevel: level,
          }),
        });
      },
    )
      .catch((e: unknown) => sendError(session, toMcpError(e, "unauthenticated")))
      .finally(replied);
  }

  function startSync(session: Session, sync: StateSync): void {
    const id = sync.contextId;
    const contextError = (e: unknown) => {
      const err = toMcpError(e, "invalid_argument");
      sendError(session, new McpError(err.code, err.message, { ...err.details, contextId: id }));
    };
    if (!sync.watch) {
      session.watches.get(id)?.abort();
      pendingReplies++;
      core.syncContext(session.auth, sync)
        .then((s) => session.emit({ case: "contextSync", value: s }), contextError)
        .finally(replied);
      return;
    }
    if (!session.watches.has(id) && session.watches.size >= opts.maxWatchesPerSession) {
      return contextError(
        new McpError("overloaded", `${session.watches.size} context watches are live on this session, the limit is ${opts.maxWatchesPerSession}`, {
          retryAfterMs: 1000,
        }),
      );
    }
    const ac = new AbortController();
    try {
      // Stopped by aborting `ac` (a new sync of the context, the session's end).
      core.watchContextInto(session.auth, sync, ac.signal, watchSink(session, id, ac, contextError));
    } catch (e) {
      return contextError(e);
    }
    session.watches.get(id)?.abort();
    // Set after the old one's abort: its end (a later microtask) finds the new one and keeps it.
    session.watches.set(id, ac);
  }

  /**
   * Where a watch's changes go: straight into the session's queue, synchronously with the
   * store's notification (ContextManager.watchInto). While the session is congested the next
   * changes wait in the context manager, which collapses a slow watcher to one catch-up sync
   * instead of growing this session's queue.
   */
  function watchSink(session: Session, id: string, ac: AbortController, contextError: (e: unknown) => void): WatchSink {
    return {
      deliver(s) {
        if (session.closed) return true;
        session.emit({ case: "contextSync", value: s });
        return !session.isCongested;
      },
      writable: () => session.writable(),
      end(error) {
        if (error !== undefined && !ac.signal.aborted) contextError(error);
        if (session.watches.get(id) === ac) session.watches.delete(id);
        answered();
      },
    };
  }

  async function run(requests: AsyncIterable<ClientMessage>): Promise<void> {
    const it = requests[Symbol.asyncIterator]();
    try {
      for (;;) {
        if (self.congested) await waitWritable();
        if (state.kind === "closed") break;
        // The session dropped this stream (slow consumer) or another stream took it over.
        if (state.kind === "bound" && !state.session.isAttachedTo(self)) break;
        const r = await it.next();
        if (r.done === true) {
          // The client half-closed: answer what it sent, then end the RPC.
          await endRequests();
          sink.close();
          return;
        }
        receive(r.value);
      }
      end();
    } catch (e) {
      end(readError(e));
    } finally {
      // Tell the source we stopped reading (no-op when it ended by itself).
      it.return?.().catch(() => {});
    }
  }

  /** Waits for the client to read; drops it with `slow_consumer` when it does not in time. */
  async function waitWritable(): Promise<void> {
    slowTimer = setTimeout(
      () =>
        fail(
          new McpError("slow_consumer", `the client read nothing for ${opts.slowConsumerTimeoutMs} ms while its queue was full`, {
            retryAfterMs: 1000,
          }),
        ),
      opts.slowConsumerTimeoutMs,
    );
    try {
      if (state.kind === "bound") await state.session.writable();
    } finally {
      clearTimeout(slowTimer);
    }
  }

  return self;
}

/** Errors raised while reading a stream, as McpErrors (the transport's own words in `cause`). */
export function readError(e: unknown): McpError | undefined {
  if (e instanceof McpError) return e;
  const code = (e as { code?: unknown } | null)?.code;
  const message = e instanceof Error ? e.message : String(e);
  // connect-es raises resource_exhausted (8) when a message exceeds readMaxBytes.
  if (code === 8 && /readMaxBytes|too large|larger than/i.test(message)) {
    return new McpError("message_too_large", message, { cause: e });
  }
  // A compressed envelope on a stream that negotiated no compression is malformed input too.
  if (code === 3 || /parse|decode|invalid wire|premature|compress/i.test(message)) {
    return new McpError("invalid_message", `could not decode a ClientMessage: ${message}`, { cause: e });
  }
  // The client went away (reset, abort): nothing to tell it.
  return undefined;
}
