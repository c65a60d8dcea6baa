/**
 * THE CORE (ARCHITECTURE.md): one implementation of authentication, authorisation, command
 * dispatch and context access that the session stream and every unary RPC share. Transports
 * (src/server/) turn requests into calls on `McpCore`; nothing here knows about HTTP.
 */
import { create, type JsonObject } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { Command, Response, ToolDescriptor } from "../../gen/mcp/v1/command_pb.js";
import type { ContextSync, ContextUpdate, ContextUpdateResult, StateSync } from "../../gen/mcp/v1/context_pb.js";
import { EventSchema, type Event } from "../../gen/mcp/v1/event_pb.js";
import { SessionInfoSchema, type SessionInfo } from "../../gen/mcp/v1/admin_pb.js";
import type { ServerMessage } from "../../gen/mcp/v1/session_pb.js";
import { SecurityLevel } from "../../gen/mcp/v1/types_pb.js";
import type { ResolvedServerOptions } from "../config.js";
import type { ContextManager, ContextStore, WatchSink } from "../context/index.js";
import { McpError } from "../errors.js";
import type { AuditSink, Authorizer, AuthSubject, RevocationStore, TokenVerifier } from "../security/index.js";
import { grantedLevel, levelAtLeast, levelName } from "../security/index.js";
import type { ToolRegistry } from "../tools/index.js";
import type { RegisteredTool, ToolContext } from "../tools/registered-tool.js";
import { createCommandRunner, type CommandHost, type CommandRunner, type OutboundPace, type PreparedCommand } from "./command-runner.js";
import type { AuthState, MessageSink, Session } from "./session.js";
import { createPushable } from "../pushable.js";
import { emitSessionChunk, type EmitChunk } from "./chunks.js";
import { createSessionRegistry } from "./session-registry.js";
import { drainSessions } from "./shutdown.js";
import { parseJsonObject } from "../transport/json-text.js";
import type { SessionStore } from "./session-store.js";
import { createTelemetry, observeContextOperations, type PeerFacts, type Telemetry } from "../observability/telemetry.js";

/** What the transport knows about a request or stream (`PeerFacts`: address, protocol, trace headers, for telemetry). */
export interface TransportInfo extends PeerFacts {
  /** TLS connection. */
  secure: boolean;
  /** The `Authorization` header, if any. */
  authorization?: string | null;
}

/** The parts the core is assembled from (built by `createMcpServer`). */
export interface CoreDeps {
  options: ResolvedServerOptions;
  /** Undefined when the server runs without tokens (LOW only). */
  verifier: TokenVerifier | undefined;
  authorizer: Authorizer;
  revocations: RevocationStore;
  contexts: ContextManager;
  /** The store under `contexts`: its change feed drives broadcast `context.changed` events. */
  store: ContextStore;
  /** Where detached sessions are parked so another instance can resume them; none = this instance only. */
  sessionStore?: SessionStore;
  tools: ToolRegistry;
  server: { name: string; version: string };
  /** Where refused authentications are audited (authorisation denials go through `authorizer`). */
  audit?: AuditSink;
  /** @default Date.now */
  now?: () => number;
  /**
   * Metrics, logs and spans (src/observability/).
   * @default createTelemetry(): counted, logged nowhere
   */
  telemetry?: Telemetry;
}

/** The shared core. */
export interface McpCore {
  readonly deps: CoreDeps;
  readonly now: () => number;
  readonly telemetry: Telemetry;
  /** Whether unauthenticated (LOW) sessions are admitted. */
  readonly allowLow: boolean;
  /** Verifies a token (or none) into an auth state for a requested level. */
  authenticate(token: string | undefined, transport: TransportInfo, requested: SecurityLevel): Promise<AuthState>;
  /** The bearer token of an Authorization header; undefined when absent. */
  bearer(transport: TransportInfo): string | undefined;
  /** Throws unless `auth` may do more than handshake/authenticate/ping (PROTOCOL.md §4 step 2). */
  requireReady(auth: AuthState): void;
  /** A command runner bound to an auth state (a session's, or a unary request's). */
  createRunner(
    getAuth: () => AuthState,
    emitEvent: (commandId: string, type: string, data: JsonObject) => void,
    sessionId?: string,
    pace?: OutboundPace,
    emitChunk?: EmitChunk,
  ): CommandRunner;
  /** The tools `auth` may use. */
  listTools(auth: AuthState): ToolDescriptor[];
  getContext(auth: AuthState, contextId: string): Promise<ContextSync>;
  /** `sessionId`: the writing session, which puts with `lease = SESSION` bind their keys to. */
  updateContext(auth: AuthState, update: ContextUpdate, sessionId?: string): Promise<ContextUpdateResult>;
  syncContext(auth: AuthState, sync: StateSync): Promise<ContextSync>;
  watchContext(auth: AuthState, sync: StateSync, signal: AbortSignal): AsyncIterable<ContextSync>;
  /** `watchContext` delivered into a sink, synchronously per change (ContextManager.watchInto); returns its stop. */
  watchContextInto(auth: AuthState, sync: StateSync, signal: AbortSignal, sink: WatchSink): () => void;
  /** Sessions: registry for resume and administration. */
  readonly sessions: Map<string, Session>;
  /** `outputJson`: the client asked for `Response.output_json` (Handshake capability `output_json`). */
  newSession(auth: AuthState, init: { sink: MessageSink; owner: object }, outputJson?: boolean): Session;
  /** Finds a session to resume; throws session_expired / token_revoked / permission_denied. */
  findForResume(sessionId: string, auth: AuthState): Promise<Session>;
  /** Session events (from a seq) or broadcast events, for EventService/Subscribe. */
  subscribe(auth: AuthState, sessionId: string, afterSeq: bigint, types: readonly string[], signal: AbortSignal): AsyncIterable<Event>;
  listSessions(auth: AuthState): SessionInfo[];
  revokeSession(auth: AuthState, sessionId: string): Promise<void>;
  revokeToken(auth: AuthState, jti: string, untilMs: number | undefined): Promise<void>;
  /** False until shutdown starts, true from its first moment (health reports NOT_SERVING). */
  readonly draining: boolean;
  /**
   * Shutdown: sends `server.shutdown` on every session, lets in-flight commands run up to
   * `graceMs`, cancels the rest (each still answered once), then parks every session in the
   * shared store (resumable on another instance) or, without one, ends it.
   */
  close(options?: CoreCloseOptions): Promise<void>;
}

/** Options of `McpCore.close`. */
export interface CoreCloseOptions {
  /**
   * How long in-flight commands may still run before they are cancelled, in ms.
   * @default 0
   */
  graceMs?: number;
}

function subjectOf(auth: AuthState, sessionId?: string): AuthSubject {
  const s: AuthSubject = { level: auth.level };
  if (auth.principal !== undefined) s.principal = auth.principal;
  if (sessionId !== undefined) s.sessionId = sessionId;
  return s;
}

/**
 * A command ready to run its tool. A class, not `{ run: (ctx) => … }`: no closure per command on
 * the hot path (under tsx every closure also costs a `__name` call). The runner's context is the
 * ToolContext itself (its signal made on first read).
 */
class PreparedToolRun implements PreparedCommand {
  readonly subject?: string;
  constructor(
    private readonly tool: RegisteredTool,
    private readonly command: Command,
    subject: string | undefined,
  ) {
    if (subject !== undefined) this.subject = subject;
  }

  run(ctx: ToolContext): Response["result"] | Promise<Response["result"]> {
    const command = this.command;
    // JSON text is parsed here, once, and the tool sees plain `arguments`: every tool takes both
    // forms without knowing of them. The decoded Command is the core's own (nothing else reads
    // its payload after this), so it is updated in place rather than copied per command. A
    // throw here is the command's Response (the runner's `fail`), as a tool's own check is.
    const payload = command.payload;
    if (payload.case === "argumentsJson") {
      command.payload = { case: "arguments", value: parseJsonObject(payload.value, "arguments_json") };
    }
    return this.tool.run(command, ctx);
  }
}

/** What every runner host checks with: the core's parts, one object per core. */
interface HostChecks {
  readonly tools: ToolRegistry;
  readonly authorizer: Authorizer;
  readonly contexts: ContextManager;
  requireReady(auth: AuthState): void;
}

/**
 * The `CommandHost` of a runner: the checks before a command runs and its precondition. A class:
 * one object per runner with its methods on the prototype, not an object literal of closures —
 * every idle session has a runner (bench/scale.ts). Subclasses say whose auth state it is and
 * where a command's events go.
 */
abstract class RunnerHost implements CommandHost {
  /**
   * The authorizer's view of the last auth state checked, kept while that state is current: a
   * session replaces its AuthState object whenever it changes (refresh, expiry) and never edits
   * one in place, so every command of a session costs no AuthSubject of its own.
   */
  private checkedAuth: AuthState | undefined = undefined;
  private checkedSubject: AuthSubject | undefined = undefined;

  constructor(
    private readonly checks: HostChecks,
    readonly sessionId: string | undefined,
    readonly outputJson: boolean,
  ) {}

  private subjectOf(auth: AuthState): AuthSubject {
    if (auth !== this.checkedAuth || this.checkedSubject === undefined) {
      this.checkedSubject = subjectOf(auth, this.sessionId);
      this.checkedAuth = auth;
    }
    return this.checkedSubject;
  }

  /** The auth state commands are checked against now. */
  abstract auth(): AuthState;
  abstract emitEvent(commandId: string, type: string, data: JsonObject): void;

  get acceptsInput(): boolean {
    return this.sessionId !== undefined;
  }

  prepare(command: Command): PreparedCommand {
    const { tools, authorizer } = this.checks;
    const auth = this.auth();
    this.checks.requireReady(auth);
    const tool = tools.get(command.tool);
    if (tool === undefined) {
      const why = tools.withheldReason(command.tool);
      throw new McpError("unknown_tool", `no tool named "${command.tool}"${why === undefined ? "" : `: ${why}`}`, { field: "tool" });
    }
    const subject = this.subjectOf(auth);
    authorizer.require(subject, tool.permission, tool.securityLevel, `run ${tool.name}`);
    if (command.contextVersion > 0n) {
      authorizer.require(subject, `context:${command.contextId}:read`, SecurityLevel.STANDARD, `precondition on ${command.contextId}`);
    }
    return new PreparedToolRun(tool, command, auth.principal?.subject);
  }

  async checkPrecondition(contextId: string, version: bigint): Promise<void> {
    // A sync from the expected version is an empty delta when the context is there; its
    // to_version is the current version either way (context_not_found when it never existed).
    const current = (await this.checks.contexts.sync(contextId, version)).toVersion;
    if (current !== version) {
      throw new McpError("version_conflict", `context "${contextId}" is at version ${current}, the command requires ${version}`, {
        currentVersion: current,
        contextId,
      });
    }
  }
}

/** The host of `McpCore.createRunner`: a unary request's (or a caller's own) auth state and event callbacks. */
class CallRunnerHost extends RunnerHost {
  readonly emitChunk?: EmitChunk;

  constructor(
    checks: HostChecks,
    private readonly getAuth: () => AuthState,
    private readonly onEvent: (commandId: string, type: string, data: JsonObject) => void,
    sessionId: string | undefined,
    emitChunk: EmitChunk | undefined,
    outputJson: boolean,
  ) {
    super(checks, sessionId, outputJson);
    // A unary call streams chunks only when its RPC does (ExecuteStream).
    if (emitChunk !== undefined) this.emitChunk = emitChunk;
  }

  auth(): AuthState {
    return this.getAuth();
  }

  emitEvent(commandId: string, type: string, data: JsonObject): void {
    this.onEvent(commandId, type, data);
  }
}

/** The host of a session's runner: the session's auth state; events and chunks go on its stream. */
class SessionRunnerHost extends RunnerHost {
  private chunkEmitter: EmitChunk | undefined = undefined;

  constructor(
    checks: HostChecks,
    private readonly session: Session,
    private readonly now: () => number,
  ) {
    super(checks, session.id, session.outputJson);
  }

  auth(): AuthState {
    return this.session.auth;
  }

  emitEvent(commandId: string, type: string, data: JsonObject): void {
    this.session.emitEvent(type, data, { commandId });
  }

  /** Made by the first chunk a command writes (the runner calls it as a plain function). */
  get emitChunk(): EmitChunk {
    return (this.chunkEmitter ??= (commandId, chunk) => emitSessionChunk(this.session, commandId, chunk, this.now()));
  }
}

/** Assembles the core. */
export function createCore(deps: CoreDeps): McpCore {
  const { options, authorizer, contexts, tools, revocations } = deps;
  const now = deps.now ?? Date.now;
  const allowLow = options.securityLevel === SecurityLevel.LOW;
  const minLevel = options.securityLevel;
  const telemetry = deps.telemetry ?? createTelemetry({ now });

  function bearer(transport: TransportInfo): string | undefined {
    const h = transport.authorization;
    if (h === undefined || h === null || h === "") return undefined;
    const m = /^Bearer\s+(\S+)\s*$/i.exec(h);
    if (m === null) throw new McpError("unauthenticated", "Authorization header must be `Bearer <token>`");
    return m[1];
  }

  async function authenticate(token: string | undefined, transport: TransportInfo, requested: SecurityLevel): Promise<AuthState> {
    if (token === undefined) {
      return { level: grantedLevel({ requested, tokenMax: undefined, transportSecure: transport.secure, allowLow }), expired: false };
    }
    if (deps.verifier === undefined) {
      throw new McpError("unauthenticated", "this server accepts no tokens (no secret or JWKS configured)");
    }
    let v: Awaited<ReturnType<TokenVerifier["verify"]>>;
    try {
      v = await deps.verifier.verify(token);
    } catch (e) {
      if (e instanceof McpError) {
        auditRefusal(e);
        telemetry.tokenRefused(e, transport);
        telemetry.failed(e);
      }
      throw e;
    }
    const auth: AuthState = {
      principal: v.principal,
      level: grantedLevel({ requested, tokenMax: v.maxLevel, transportSecure: transport.secure, allowLow }),
      expiresAt: v.expiresAt,
      expired: false,
    };
    if (v.jti !== undefined) auth.jti = v.jti;
    return auth;
  }

  /** A refused token is a denial too (§5): who is unknown, so the entry says what and why. */
  function auditRefusal(err: McpError): void {
    try {
      deps.audit?.({ time: new Date(now()).toISOString(), event: "denied", action: "authenticate", reason: err.code, message: err.message });
    } catch {
      // A failing sink must not turn a refusal into something else.
    }
  }

  function requireReady(auth: AuthState): void {
    if (auth.expired) throw new McpError("token_expired", "the session's token expired: send a fresh Authentication");
    if (!levelAtLeast(auth.level, minLevel)) {
      throw new McpError(
        "unauthenticated",
        `authenticate first: this server needs security level ${levelName(minLevel)} (token in the Handshake, an Authorization header or an Authentication message)`,
      );
    }
  }

  function authorize(auth: AuthState, permission: string, level: SecurityLevel, action: string, sessionId?: string): void {
    requireReady(auth);
    authorizer.require(subjectOf(auth, sessionId), permission, level, action);
  }

  const checks: HostChecks = { tools, authorizer, contexts, requireReady };

  function createRunner(
    getAuth: () => AuthState,
    emitEvent: (commandId: string, type: string, data: JsonObject) => void,
    sessionId?: string,
    pace?: OutboundPace,
    emitChunk?: EmitChunk,
    outputJson = false,
  ): CommandRunner {
    const host = new CallRunnerHost(checks, getAuth, emitEvent, sessionId, emitChunk, outputJson);
    return createCommandRunner(host, options, now, pace, telemetry.commandObserver(sessionId, getAuth));
  }

  /** A session's runner: sessions carry chunks both ways. */
  function createSessionRunner(session: Session): CommandRunner {
    const host = new SessionRunnerHost(checks, session, now);
    return createCommandRunner(host, options, now, session, telemetry.commandObserver(session.id, () => session.auth));
  }

  const contextPermission = (id: string, access: "read" | "write") => `context:${id}:${access}`;

  // Context leases (ContextPut.lease) end with their session; shutdown waits for the deletes.
  const releasing = new Set<Promise<unknown>>();
  function releaseLease(sessionId: string, updatedBy: string): void {
    const p = contexts.releaseLease(sessionId, updatedBy).catch(() => {
      // The store is unreachable: the keys stay (docs/deploy.md "Leases").
    });
    releasing.add(p);
    void p.finally(() => releasing.delete(p));
  }
  const registry = createSessionRegistry({
    options,
    revocations,
    sessionStore: deps.sessionStore,
    now,
    onEnded: (session) => releaseLease(session.id, session.auth.principal?.subject ?? "anonymous"),
    onOrphanEnded: (sessionId) => releaseLease(sessionId, "session-expired"),
    telemetry,
    createRunner: createSessionRunner,
  });
  const sessions = registry.sessions;
  let draining = false;

  /** Audited like any denial; even an administrator does not take over another principal's session (its rights are the owner's). */
  function refuseForeignResume(auth: AuthState, sessionId: string): never {
    authorizer.require(subjectOf(auth), "sessions:admin", SecurityLevel.STANDARD, `resume session ${sessionId} of another principal`);
    throw new McpError("permission_denied", `session ${sessionId} belongs to another principal`);
  }

  return observeContextOperations(telemetry, {
    get draining() {
      return draining;
    },
    deps,
    now,
    telemetry,
    allowLow,
    authenticate,
    bearer,
    requireReady,
    createRunner,
    sessions,
    newSession: (auth, stream, outputJson) => registry.create(auth, stream, outputJson),

    listTools(auth) {
      // "No token" must not look like "no tools": unauthenticated like every other RPC (issue 13).
      requireReady(auth);
      const subject = subjectOf(auth);
      return tools
        .list()
        .filter((t) => authorizer.allows(subject, t.permission, t.securityLevel))
        .map((t) => t.descriptor);
    },

    async getContext(auth, contextId) {
      authorize(auth, contextPermission(contextId, "read"), SecurityLevel.STANDARD, `read context ${contextId}`);
      return contexts.get(contextId);
    },

    // Not async: returning the manager's promise from an async function costs two more turns per update.
    updateContext(auth, update, sessionId) {
      try {
        authorize(auth, contextPermission(update.contextId, "write"), SecurityLevel.STANDARD, `write context ${update.contextId}`);
      } catch (e) {
        return Promise.reject(e);
      }
      return contexts.update(update, auth.principal?.subject ?? "anonymous", sessionId);
    },

    async syncContext(auth, sync) {
      authorize(auth, contextPermission(sync.contextId, "read"), SecurityLevel.STANDARD, `read context ${sync.contextId}`);
      return contexts.sync(sync.contextId, sync.knownVersion);
    },

    watchContext(auth, sync, signal) {
      authorize(auth, contextPermission(sync.contextId, "read"), SecurityLevel.STANDARD, `watch context ${sync.contextId}`);
      return contexts.watch(sync.contextId, sync.knownVersion, signal);
    },

    watchContextInto(auth, sync, signal, sink) {
      authorize(auth, contextPermission(sync.contextId, "read"), SecurityLevel.STANDARD, `watch context ${sync.contextId}`);
      return contexts.watchInto(sync.contextId, sync.knownVersion, signal, sink);
    },

    async findForResume(sessionId, auth) {
      if (await revocations.isSessionRevoked(sessionId)) {
        throw new McpError("token_revoked", `session ${sessionId} was revoked`);
      }
      const s = await registry.lookup(sessionId, auth.principal?.subject);
      if (s === "other_subject") refuseForeignResume(auth, sessionId);
      if (s === undefined || s.closed) {
        throw new McpError("session_expired", `session ${sessionId} is gone: start a new session and re-sync context`);
      }
      if (s.auth.principal?.subject !== auth.principal?.subject) refuseForeignResume(auth, sessionId);
      return s;
    },

    async *subscribe(auth, sessionId, afterSeq, types, signal) {
      requireReady(auth);
      const wanted = (type: string) => types.length === 0 || types.some((t) => (t.endsWith(".") ? type.startsWith(t) : type === t));
      if (sessionId === "") {
        // Broadcast: this server's context changes the caller may read, as `context.changed`.
        yield* broadcastEvents(auth, wanted, signal);
        return;
      }
      const s = sessions.get(sessionId);
      if (s === undefined) throw new McpError("session_expired", `session ${sessionId} is gone`);
      if (s.auth.principal?.subject !== auth.principal?.subject) {
        throw new McpError("permission_denied", `session ${sessionId} belongs to another principal`);
      }
      if (s.subscriptions >= options.maxSubscriptionsPerSession) {
        throw new McpError("overloaded", `${s.subscriptions} subscriptions follow session ${sessionId}, the limit is ${options.maxSubscriptionsPerSession}`, {
          retryAfterMs: 1000,
        });
      }
      const events = createPushable<Event>();
      const tap = (m: ServerMessage) => {
        if (m.message.case === "event" && wanted(m.message.value.type)) events.push(m.message.value);
      };
      // after_seq 0 means only new events (mcp.v1.SubscribeRequest), not a replay of the whole ring.
      const replay = afterSeq === 0n ? [] : s.messagesAfter(afterSeq);
      if (replay === undefined) {
        // Never a silent gap: the caller learns it must start from the present.
        throw new McpError("session_expired", `session ${sessionId} no longer holds events after seq ${afterSeq}: subscribe with after_seq 0`);
      }
      for (const m of replay) tap(m);
      s.addTap(tap);
      s.subscriptions++;
      const stop = () => events.end();
      signal.addEventListener("abort", stop, { once: true });
      try {
        for await (const e of events) {
          yield e;
          if (s.closed) return;
        }
      } finally {
        s.removeTap(tap);
        s.subscriptions--;
        signal.removeEventListener("abort", stop);
      }
    },

    listSessions(auth) {
      authorize(auth, "sessions:admin", SecurityLevel.STANDARD, "list sessions");
      return [...sessions.values()].map((s) =>
        create(SessionInfoSchema, {
          sessionId: s.id,
          ...(s.auth.principal === undefined ? {} : { principal: s.auth.principal }),
          securityLevel: s.auth.level,
          createdAt: timestampFromMs(s.createdAt),
          connected: s.connected,
          lastSeq: s.lastSeq,
          ...(s.auth.expiresAt === undefined ? {} : { expiresAt: timestampFromMs(s.auth.expiresAt) }),
        }),
      );
    },

    async revokeSession(auth, sessionId) {
      authorize(auth, "sessions:admin", SecurityLevel.STANDARD, `revoke session ${sessionId}`);
      // The revocation feed ends it here and on every other instance.
      await revocations.revokeSession(sessionId, now() + options.resumeTtlMs + 24 * 3600_000);
    },

    async revokeToken(auth, jti, untilMs) {
      authorize(auth, "sessions:admin", SecurityLevel.STANDARD, `revoke token ${jti}`);
      await revocations.revokeToken(jti, untilMs ?? now() + 30 * 24 * 3600_000);
    },

    async close(closeOptions = {}) {
      if (draining) return;
      draining = true;
      await drainSessions(sessions, closeOptions.graceMs ?? 0, deps.sessionStore !== undefined, () => registry.ghosts());
      registry.close(new McpError("session_expired", "the server is shutting down"));
      await Promise.all(releasing);
    },
  });

  async function* broadcastEvents(auth: AuthState, wanted: (type: string) => boolean, signal: AbortSignal): AsyncIterable<Event> {
    const subject = subjectOf(auth);
    const events = createPushable<Event>();
    let seq = 0n;
    const unsubscribe = deps.store.subscribe((e) => {
      if (e.kind !== "change" || !wanted("context.changed")) return;
      const c = e.change;
      if (!authorizer.allows(subject, contextPermission(c.contextId, "read"), SecurityLevel.STANDARD)) return;
      // Bounded: a subscriber that does not read is dropped rather than buffered without limit.
      if (events.size >= options.maxOutboundMessages) {
        events.end(new McpError("slow_consumer", "the subscriber fell more than its queue behind", { retryAfterMs: 1000 }));
        return;
      }
      events.push(
        create(EventSchema, {
          seq: ++seq,
          type: "context.changed",
          contextId: c.contextId,
          data: { context_id: c.contextId, version: c.version.toString(), updated_by: c.updatedBy },
          time: timestampFromMs(c.updatedAtMs),
        }),
      );
    });
    const stop = () => events.end();
    signal.addEventListener("abort", stop, { once: true });
    try {
      yield* events;
    } finally {
      unsubscribe();
      signal.removeEventListener("abort", stop);
    }
  }
}
