/**
 * One session stream (SessionService/Connect): the handshake state machine and the dispatch of
 * every ClientMessage kind (PROTOCOL.md §4). The read side never waits for a command to finish;
 * it only waits while the outbound side is congested (backpressure).
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { Response } from "../../gen/mcp/v1/command_pb.js";
import { ContextUpdateResultSchema, type ContextUpdate, type StateSync } from "../../gen/mcp/v1/context_pb.js";
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

type ConnectionState = "awaiting_handshake" | "handshaking" | "bound" | "closed";

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

/** Starts the state machine of one stream. */
export function openConnection(core: McpCore, transport: TransportInfo, sink: MessageSink): Connection {
  return new StreamConnection(core, transport, sink);
}

/** One heartbeat tick of `conn` (a module function: no closure per stream). */
function heartbeatTick(conn: StreamConnection): void {
  conn.tick();
}

/**
 * The state machine of one stream. A class, not closures in `openConnection`: an idle session
 * costs one object and its fields, with every method on the prototype (bench/scale.ts, idle
 * sessions: a closure per function was ~40 × 64 B per stream).
 */
class StreamConnection implements Connection {
  private state: ConnectionState = "awaiting_handshake";
  /** The session, while `state` is "bound". */
  private bound: Session | undefined = undefined;
  /**
   * The one response callback of the bound session, made by its first command: one closure per
   * stream, not one per command (hot path), and none for a session that runs no command.
   */
  private respond: ((r: Response) => void) | undefined = undefined;
  /** Messages that arrive while the (async) handshake runs are held, then handled in order. */
  private held: ClientMessage[] | undefined = undefined;
  /** What the Handshake asked for; a refresh is granted against the same request. */
  private requestedLevel = SecurityLevel.UNSPECIFIED;
  /**
   * Heartbeat ticks since the peer's last message: counted, not timed, so receiving costs no
   * clock read (a Date.now() per message is ~1 % of an echo command).
   */
  private silentTicks = 0;
  /**
   * Set once the client half-closed: it can send nothing more, Pings included, so silence is no
   * sign of a dead peer (HTTP/2 PING still finds one, listener.ts).
   */
  private halfClosed = false;
  private readonly heartbeat: ReturnType<typeof setInterval>;
  private slowTimer: ReturnType<typeof setTimeout> | undefined = undefined;
  /** Settles once a started handshake has succeeded or failed; undefined until one starts. */
  private handshakeSettled: Promise<void> | undefined = undefined;
  /** Updates, syncs and authentications started and not answered yet (a drain waits for them). */
  private pendingReplies = 0;
  /** Set once the client sent SessionClose: the session ends for good when pendingReplies is 0. */
  private closing: Session | undefined = undefined;
  /** Set while `endRequests` waits for the last answers: called once everything is answered. */
  private drainWaiter: (() => void) | undefined = undefined;
  private drainCheckScheduled = false;
  /** The log line and span of this stream's session, from the handshake on. */
  private observed: StreamObservation | undefined = undefined;

  constructor(
    private readonly core: McpCore,
    private readonly transport: TransportInfo,
    private readonly sink: MessageSink,
  ) {
    this.heartbeat = setInterval(heartbeatTick, core.deps.options.heartbeatIntervalMs, this);
    this.heartbeat.unref();
  }

  get congested(): boolean {
    return this.state === "bound" && this.bound!.isCongested;
  }

  get session(): Session | undefined {
    return this.state === "bound" ? this.bound : undefined;
  }

  tick(): void {
    // A peer silent through three ticks in a row — so for more than twice the interval — is
    // dropped and its session kept for resume (§4 step 6).
    if (!this.halfClosed && ++this.silentTicks > 2) {
      this.end();
      this.sink.close();
    }
  }

  /** Sends a message outside a session (before or instead of a handshake): seq 0. */
  private sendUnbound(payload: ServerMessage["message"]): void {
    this.sink.write([create(ServerMessageSchema, { seq: 0n, message: payload })]);
  }

  private setState(next: ConnectionState, session?: Session): void {
    if (next === "closed") {
      clearInterval(this.heartbeat);
      clearTimeout(this.slowTimer);
    }
    this.state = next;
    this.bound = session;
    if (next === "closed") this.releaseDrain();
  }

  private releaseDrain(): void {
    const w = this.drainWaiter;
    this.drainWaiter = undefined;
    w?.();
  }

  /**
   * Something was answered while draining: check, once the current call stack is done, whether
   * anything is still owed. Not now: a sequential batch starts its next command right after the
   * previous one's Response is emitted.
   */
  answered(): void {
    if (this.drainWaiter === undefined || this.drainCheckScheduled) return;
    this.drainCheckScheduled = true;
    process.nextTick(checkDrained, this);
  }

  checkDrained(): void {
    this.drainCheckScheduled = false;
    if (this.drainWaiter === undefined) return;
    if (this.state === "bound" && this.bound!.isAttachedTo(this)) {
      const s = this.bound!;
      if (s.runner.inflight > 0 || this.pendingReplies > 0 || s.watchCount > 0) return;
    }
    this.releaseDrain();
  }

  /** Resolves once nothing the client sent is still unanswered and no watch is open on the stream. */
  private drained(): Promise<void> {
    return new Promise((resolve) => {
      this.drainWaiter = resolve;
      this.drainCheckScheduled = true;
      this.checkDrained();
    });
  }

  /** A fatal error: tell the client and end the stream (the session stays for resume). */
  private fail(err: McpError): void {
    this.observed?.ended(err.code);
    const state = this.state;
    // Refused tokens were counted by the core; a bound session counts its drop itself.
    if (state !== "bound" && state !== "closed" && err.kind !== "SECURITY") this.core.telemetry.failed(err);
    if (state === "bound") {
      const s = this.bound!;
      if (s.isAttachedTo(this)) s.drop(err);
      else this.sink.close();
    } else if (state !== "closed") {
      this.sendUnbound({ case: "error", value: toProtoError(err) });
      this.sink.close();
    }
    this.setState("closed");
  }

  end(error?: McpError): void {
    if (error !== undefined) return this.fail(error);
    const s = this.state === "bound" ? this.bound! : undefined;
    // A SessionClose is the client's own end, like a half-close, not the session's "cancelled".
    this.observed?.ended(this.closing !== undefined ? "client_closed" : s !== undefined && s.closed ? (s.closeReason?.code ?? "closed") : "disconnected");
    if (s !== undefined) s.detach(this);
    this.setState("closed");
  }

  async endRequests(): Promise<void> {
    this.halfClosed = true;
    await this.handshakeSettled;
    if (this.state === "bound" && this.bound!.isAttachedTo(this)) {
      await this.drained();
      // Everything is answered; what waits in the session's queue (congested) goes out first.
      const s = this.session;
      while (s !== undefined && s.isAttachedTo(this) && s.isCongested) await s.writable();
      if (s !== undefined && s.isAttachedTo(this)) s.flush();
    }
    this.observed?.ended("client_closed");
    this.end();
  }

  receive(msg: ClientMessage): void {
    this.silentTicks = 0;
    switch (this.state) {
      case "closed":
        return;
      case "handshaking":
        (this.held ??= []).push(msg);
        return;
      case "awaiting_handshake":
        if (msg.message.case !== "handshake") {
          return this.fail(new McpError("handshake_required", `the first message must be a Handshake, got ${msg.message.case ?? "an empty message"}`));
        }
        this.setState("handshaking");
        this.handshakeSettled = this.handshake(msg.message.value).then(
          (session) => this.bind(session),
          (e: unknown) => this.fail(toMcpError(e, "invalid_message")),
        );
        return;
      case "bound": {
        const session = this.bound!;
        // Late frames of a stream another one took over: the resumed stream's client re-sends
        // them (counted by `received`), so running them here too would run them twice.
        if (!session.isAttachedTo(this) || this.closing !== undefined) return;
        session.received++;
        this.dispatch(session, msg);
      }
    }
  }

  /** The handshake succeeded: bind the session, then handle what arrived meanwhile. */
  private bind(session: Session): void {
    if (this.state === "closed") {
      this.observed?.ended("disconnected");
      session.detach(this);
      return;
    }
    this.setState("bound", session);
    const queued = this.held;
    this.held = undefined;
    if (queued !== undefined) for (const m of queued) this.receive(m);
  }

  /** The bound session's response callback (see `respond`). */
  private responder(session: Session): (r: Response) => void {
    return (this.respond ??= (r) => {
      session.emit({ case: "response", value: r });
      if (this.drainWaiter !== undefined) this.answered();
    });
  }

  private async handshake(h: Handshake): Promise<Session> {
    const core = this.core;
    const supported = core.deps.options.protocolVersions;
    const version = h.protocolVersions.find((v) => supported.includes(v));
    if (version === undefined) {
      throw new McpError(
        "unsupported_version",
        `no common protocol version: the client offered [${h.protocolVersions.map(protocolVersionName).join(", ")}], this server speaks [${supported.map(protocolVersionName).join(", ")}]`,
        { supportedVersions: supported },
      );
    }
    if (h.securityLevel === SecurityLevel.HIGH && !this.transport.secure) {
      throw new McpError("insufficient_security_level", "security level high needs a TLS connection; this one is cleartext");
    }
    this.requestedLevel = h.securityLevel;
    const token = h.token ?? core.bearer(this.transport);
    const auth = await core.authenticate(token, this.transport, h.securityLevel);
    if (h.resume !== undefined && h.resume.sessionId !== "") {
      return this.resume(h, auth, version);
    }
    const session = core.newSession(auth, { sink: this.sink, owner: this }, h.capabilities.includes(OUTPUT_JSON_CAPABILITY));
    session.emit({ case: "handshakeResult", value: this.handshakeResult(session, auth, version, false) });
    this.observed = core.telemetry.streamOpened(session, this.transport, false, 0);
    return session;
  }

  private async resume(h: Handshake, auth: AuthState, version: number): Promise<Session> {
    const r = h.resume!; // checked by the caller
    const session = await this.core.findForResume(r.sessionId, auth);
    const replay = session.replayFor(r.lastSeq);
    if (replay === undefined) {
      throw new McpError(
        "session_expired",
        `session ${r.sessionId} can no longer replay from seq ${r.lastSeq} (the resume buffer moved on): start a new session and re-sync context`,
      );
    }
    session.attach(this.sink, this);
    // The client's credentials may be newer than the session's (a refreshed token).
    if (auth.principal !== undefined) session.setAuth(auth);
    // Every message after last_seq exactly once, in order, then the live stream (§4 step 5). An
    // earlier stream's HandshakeResult is not replayed: it answered that stream's Handshake, and a
    // client resuming from seq 0 would take it for the answer to this one (resumed = false).
    const messages = replay.filter((m) => m.message.case !== "handshakeResult");
    if (messages.length > 0) this.sink.write(messages);
    const result = this.handshakeResult(session, session.auth, version, true);
    if (session.countsReceived) result.receivedMessages = BigInt(session.received);
    session.emit({ case: "handshakeResult", value: result });
    this.observed = this.core.telemetry.streamOpened(session, this.transport, true, messages.length);
    return session;
  }

  private handshakeResult(session: Session, auth: AuthState, version: number, resumed: boolean) {
    const opts = this.core.deps.options;
    return create(HandshakeResultSchema, {
      protocolVersion: version,
      sessionId: session.id,
      server: this.core.deps.server,
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
  private sendError(session: Session, err: McpError): void {
    session.emit({ case: "error", value: toProtoError(err) });
  }

  private dispatch(session: Session, msg: ClientMessage): void {
    const m = msg.message;
    switch (m.case) {
      case "command":
        // Readiness (authenticated, not expired) is checked per command by the runner's host, so a
        // refused command still gets its one Response.
        session.runner.start(m.value, this.respond ?? this.responder(session));
        return;
      case "batch":
        session.runner.startBatch(m.value, this.respond ?? this.responder(session));
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
        this.authenticateSession(session, m.value.token);
        return;
      case "sync":
        this.startSync(session, m.value);
        return;
      case "update":
        this.startUpdate(session, m.value);
        return;
      case "commandInput": {
        // Input for a command in flight (src/session/chunks.ts); one that is not is the client's mistake, not fatal.
        const refused = session.runner.input(m.value);
        if (refused !== undefined) this.sendError(session, refused);
        return;
      }
      case "close":
        this.closing = session;
        return this.endIfClosing();
      case "handshake":
        return this.sendError(session, new McpError("invalid_message", "the session already completed its Handshake"));
      case undefined:
        return this.sendError(session, new McpError("invalid_message", "empty ClientMessage: set one of its fields"));
    }
  }

  /** One of `pendingReplies` was answered. */
  private replied(): void {
    this.pendingReplies--;
    this.answered();
    this.endIfClosing();
  }

  /**
   * SessionClose: once the updates and authentications it sent are answered (a lease put in
   * flight lands before the session's leases are released), the session ends for good. Its
   * commands are aborted then, with no Response: the client is gone.
   */
  private endIfClosing(): void {
    const s = this.closing;
    if (s !== undefined && this.pendingReplies === 0) s.close(new McpError("cancelled", `session ${s.id} was closed by its client`), false);
  }

  private startUpdate(session: Session, update: ContextUpdate): void {
    this.pendingReplies++;
    const applied = this.core.updateContext(session.auth, update, session.id);
    // The manager has read the ops (ContextManager.update); the decoded message is ours, and only
    // its id and context id are used from here on. Emptied because V8 pretenures protobuf-es's
    // one allocation site for every repeated field (bench/README.md, "Why updates ÷ echo
    // swings"): this array is born in the old generation and, until a full GC collects it, keeps
    // its ops, their values and strings alive through every scavenge. Under a stream of updates
    // that promoted garbage took ~15 % of the server's time in GC; emptied, GC takes ~5 %.
    update.ops.length = 0;
    applied.then(
      (result) => {
        this.replied();
        session.emit({ case: "updateResult", value: result });
      },
      (e: unknown) => {
        this.replied();
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
  }

  private authenticateSession(session: Session, token: string): void {
    this.pendingReplies++;
    this.core
      .authenticate(token, this.transport, this.requestedLevel)
      .then((auth) => {
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
      })
      .catch((e: unknown) => this.sendError(session, toMcpError(e, "unauthenticated")))
      .finally(() => this.replied());
  }

  private startSync(session: Session, sync: StateSync): void {
    const core = this.core;
    const id = sync.contextId;
    const contextError = (e: unknown) => {
      const err = toMcpError(e, "invalid_argument");
      this.sendError(session, new McpError(err.code, err.message, { ...err.details, contextId: id }));
    };
    if (!sync.watch) {
      session.watchOf(id)?.abort();
      this.pendingReplies++;
      core
        .syncContext(session.auth, sync)
        .then((s) => session.emit({ case: "contextSync", value: s }), contextError)
        .finally(() => this.replied());
      return;
    }
    const maxWatches = core.deps.options.maxWatchesPerSession;
    if (session.watchOf(id) === undefined && session.watchCount >= maxWatches) {
      return contextError(
        new McpError("overloaded", `${session.watchCount} context watches are live on this session, the limit is ${maxWatches}`, {
          retryAfterMs: 1000,
        }),
      );
    }
    const ac = new AbortController();
    try {
      // Stopped by aborting `ac` (a new sync of the context, the session's end).
      core.watchContextInto(session.auth, sync, ac.signal, this.watchSink(session, id, ac, contextError));
    } catch (e) {
      return contextError(e);
    }
    session.watchOf(id)?.abort();
    // Set after the old one's abort: its end (a later microtask) finds the new one and keeps it.
    session.setWatch(id, ac);
  }

  /**
   * Where a watch's changes go: straight into the session's queue, synchronously with the
   * store's notification (ContextManager.watchInto). While the session is congested the next
   * changes wait in the context manager, which collapses a slow watcher to one catch-up sync
   * instead of growing this session's queue.
   */
  private watchSink(session: Session, id: string, ac: AbortController, contextError: (e: unknown) => void): WatchSink {
    return {
      deliver(s) {
        if (session.closed) return true;
        session.emit({ case: "contextSync", value: s });
        return !session.isCongested;
      },
      writable: () => session.writable(),
      end: (error) => {
        if (error !== undefined && !ac.signal.aborted) contextError(error);
        session.unsetWatch(id, ac);
        this.answered();
      },
    };
  }

  async run(requests: AsyncIterable<ClientMessage>): Promise<void> {
    const it = requests[Symbol.asyncIterator]();
    try {
      for (;;) {
        if (this.congested) await this.waitWritable();
        if (this.state === "closed") break;
        // The session dropped this stream (slow consumer) or another stream took it over.
        if (this.state === "bound" && !this.bound!.isAttachedTo(this)) break;
        const r = await it.next();
        if (r.done === true) {
          // The client half-closed: answer what it sent, then end the RPC.
          await this.endRequests();
          this.sink.close();
          return;
        }
        this.receive(r.value);
      }
      this.end();
    } catch (e) {
      this.end(readError(e));
    } finally {
      // Tell the source we stopped reading (no-op when it ended by itself).
      it.return?.().catch(() => {});
    }
  }

  /** Waits for the client to read; drops it with `slow_consumer` when it does not in time. */
  async waitWritable(): Promise<void> {
    const ms = this.core.deps.options.slowConsumerTimeoutMs;
    this.slowTimer = setTimeout(
      () =>
        this.fail(
          new McpError("slow_consumer", `the client read nothing for ${ms} ms while its queue was full`, {
            retryAfterMs: 1000,
          }),
        ),
      ms,
    );
    try {
      if (this.state === "bound") await this.bound!.writable();
    } finally {
      clearTimeout(this.slowTimer);
    }
  }
}

function checkDrained(conn: StreamConnection): void {
  conn.checkDrained();
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
