/**
 * The sessions of one server instance: creating them, keeping them for resume, and — with a
 * shared `SessionStore` — parking detached ones where another instance can claim them, and
 * letting go of those another instance claims (PROTOCOL.md §4 step 5, §8). Every revocation
 * heard from the `RevocationStore`, made here or elsewhere, ends the sessions it concerns.
 */
import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { ResponseSchema } from "../../gen/mcp/v1/command_pb.js";
import { chunkBytesOf } from "./chunks.js";
import type { ServerMessage } from "../../gen/mcp/v1/session_pb.js";
import { PrincipalSchema } from "../../gen/mcp/v1/types_pb.js";
import type { ResolvedServerOptions } from "../config.js";
import { McpError, toProtoError } from "../errors.js";
import type { RevocationStore } from "../security/index.js";
import type { CommandRunner } from "./command-runner.js";
import { Session, type AuthState, type MessageSink, type ServerPayload, type SessionHooks } from "./session.js";
import type { RemoteCommands } from "./remote-commands.js";
import type { ParkedSession, SessionStore } from "./session-store.js";
import type { Telemetry } from "../observability/telemetry.js";

/** What the registry is built from. */
export interface SessionRegistryOptions {
  options: Pick<
    ResolvedServerOptions,
    | "resumeBufferMessages"
    | "resumeBufferBytes"
    | "maxOutboundMessages"
    | "resumeTtlMs"
    | "expiryWarningMs"
    | "maxDetachedBytes"
    | "maxDetachedBytesPerPrincipal"
    | "maxSessionsPerPrincipal"
  >;
  revocations: RevocationStore;
  /** Where detached sessions are parked for other instances; none = this instance only. */
  sessionStore?: SessionStore | undefined;
  /** Called once when a session ends for good here (not when it moves to another instance). */
  onEnded?: (session: Session) => void;
  /** Called once, on one instance, for a session whose instance died and that nobody resumed in time. */
  onOrphanEnded?: (sessionId: string) => void;
  /** Gives a new session its command runner (the core's, bound to the session). */
  createRunner(session: Session): CommandRunner;
  now: () => number;
  /** Logs and counts sessions closing and streams dropped. */
  telemetry?: Telemetry;
}

/** The sessions of this instance. */
export interface SessionRegistry {
  /** Live and detached sessions held here, by id. */
  readonly sessions: Map<string, Session>;
  /**
   * A new session attached to `stream`. Throws `overloaded` when its principal holds
   * `maxSessionsPerPrincipal` sessions that are all attached (a detached one is evicted instead).
   */
  /** `outputJson`: see SessionInit.outputJson. */
  create(auth: AuthState, stream: { sink: MessageSink; owner: object }, outputJson?: boolean): Session;
  /** Bytes the detached sessions held here are charged (resume buffers plus a fixed overhead each). */
  readonly detachedBytes: number;
  /**
   * The session to resume: held here, or claimed from the shared store. Undefined when gone;
   * "other_subject" — and nothing moved — when it belongs to a subject other than `subject`.
   */
  lookup(sessionId: string, subject: string | undefined): Promise<Session | "other_subject" | undefined>;
  /** Sessions that moved away while their commands still run here (ghosts), for a graceful drain. */
  ghosts(): Iterable<Session>;
  /** Shutdown: parked sessions stay claimable elsewhere, the rest close with `reason`. */
  close(reason: McpError): void;
}

/**
 * What a detached session costs besides its resume buffer: the session, its runner, timers and
 * maps, measured at about 5 KB of heap after a full GC (test/session/limits.test.ts); rounded up.
 */
export const DETACHED_OVERHEAD_BYTES = 8192;

/** One principal's sessions here (key: the subject; "" for every unauthenticated session). */
interface PrincipalSessions {
  /** Attached and detached, in creation order. */
  readonly sessions: Set<Session>;
  /** The detached ones, in the order they detached. */
  readonly detached: Set<Session>;
  detachedBytes: number;
}

/** Builds the registry and subscribes it to revocations and claims. */
export function createSessionRegistry(init: SessionRegistryOptions): SessionRegistry {
  const { options, sessionStore, now } = init;
  const sessions = new Map<string, Session>();
  // Detached sessions in the order they detached (oldest first: evicted first), with what each is charged.
  const detached = new Map<Session, number>();
  let detachedBytes = 0;
  const principals = new Map<string, PrincipalSessions>();
  // Fixed when the session is made: a later Authentication may name a subject an unauthenticated session lacked.
  const ownerOf = new Map<Session, { key: string; p: PrincipalSessions }>();

  function principalOf(key: string): PrincipalSessions {
    let p = principals.get(key);
    if (p === undefined) {
      p = { sessions: new Set(), detached: new Set(), detachedBytes: 0 };
      principals.set(key, p);
    }
    return p;
  }

  /** (Re)charges a detached session for what it holds now, then evicts until every bound holds. */
  function charge(s: Session): void {
    const p = ownerOf.get(s)?.p;
    if (p === undefined || s.closed || s.connected) return;
    const before = detached.get(s);
    const cost = s.heldBytes + DETACHED_OVERHEAD_BYTES;
    if (before !== undefined) {
      detachedBytes -= before;
      p.detachedBytes -= before;
    }
    detached.set(s, cost);
    p.detached.add(s);
    detachedBytes += cost;
    p.detachedBytes += cost;
    evictWhileOver(p);
  }

  function uncharge(s: Session): void {
    const cost = detached.get(s);
    if (cost === undefined) return;
    detached.delete(s);
    detachedBytes -= cost;
    const p = ownerOf.get(s)?.p;
    if (p !== undefined) {
      p.detachedBytes -= cost;
      p.detached.delete(s);
    }
  }

  /** A detached session's holdings changed (a command answered while it was away). */
  function recharge(s: Session): void {
    if (detached.has(s)) charge(s);
  }

  function evict(s: Session, why: string): void {
    // Uncharged first: the error that close() keeps for it must not charge it again.
    uncharge(s);
    s.close(new McpError("session_expired", `session ${s.id} was evicted before it was resumed: ${why}`));
  }

  function evictWhileOver(p: PrincipalSessions): void {
    while (p.detachedBytes > options.maxDetachedBytesPerPrincipal) {
      const oldest = oldestDetached(p);
      if (oldest === undefined) break;
      evict(oldest, `its principal's detached sessions passed ${options.maxDetachedBytesPerPrincipal} bytes`);
    }
    while (detachedBytes > options.maxDetachedBytes) {
      const oldest = detached.keys().next().value;
      if (oldest === undefined) break;
      evict(oldest, `the server's detached sessions passed ${options.maxDetachedBytes} bytes`);
    }
  }

  /** The principal's session that detached first. */
  function oldestDetached(p: PrincipalSessions): Session | undefined {
    return p.detached.keys().next().value;
  }

  /** Room for one more session of `key`: evicts its oldest detached session, or refuses. */
  function admit(key: string): void {
    const p = principals.get(key);
    if (p === undefined || p.sessions.size < options.maxSessionsPerPrincipal) return;
    const oldest = oldestDetached(p);
    if (oldest !== undefined) {
      evict(oldest, `its principal opened more than ${options.maxSessionsPerPrincipal} sessions`);
      return;
    }
    throw new McpError(
      "overloaded",
      `${p.sessions.size} sessions of ${key === "" ? "unauthenticated clients" : `"${key}"`} are open here, the limit is ${options.maxSessionsPerPrincipal}: end or resume one`,
      { retryAfterMs: 1000 },
    );
  }
  // Sessions parked in the shared store, with the tap that forwards what they emit meanwhile.
  const parked = new Map<string, (m: ServerMessage) => void>();

  function park(s: Session): void {
    if (sessionStore === undefined || parked.has(s.id)) return;
    // Chunks (bytes output, src/session/chunks.ts) stay out of the mirror: a 256 MiB read must not
    // go through Redis. A resume elsewhere from before them finds the gap and reports
    // session_expired (never a silent gap); the client re-reads from the offset it has.
    const tap = (m: ServerMessage) => {
      if (chunkBytesOf(m) === 0) void sessionStore.append(s.id, m);
    };
    const ring = BigInt(options.resumeBufferMessages);
    const held = (s.messagesAfter(s.lastSeq > ring ? s.lastSeq - ring : 0n) ?? []).filter((m) => chunkBytesOf(m) === 0);
    parked.set(s.id, tap);
    s.addTap(tap);
    void sessionStore.park(
      {
        id: s.id,
        roles: [...(s.auth.principal?.roles ?? [])],
        level: s.auth.level,
        createdAt: s.createdAt,
        lastSeq: s.lastSeq,
        messages: held,
        outputJson: s.outputJson,
        ...(s.auth.principal === undefined ? {} : { subject: s.auth.principal.subject }),
        ...(s.auth.expiresAt === undefined ? {} : { expiresAt: s.auth.expiresAt }),
        ...(s.auth.jti === undefined ? {} : { jti: s.auth.jti }),
      },
      options.resumeTtlMs,
    );
  }

  // Mirrors of live sessions would expire under an instance that is alive but quiet.
  const keepAlive =
    sessionStore === undefined
      ? undefined
      : setInterval(() => {
          void sessionStore.touch([...parked.keys()], options.resumeTtlMs);
          if (ghosts.size > 0) sessionStore.remote?.keepAlive([...ghosts.keys()]).catch(() => {}); // the next round retries
          sessionStore.reapOrphans(now()).then(
            (ids) => {
              for (const id of ids) if (!sessions.has(id)) init.onOrphanEnded?.(id);
            },
            () => {}, // Redis unreachable: the next round retries
          );
        }, Math.max(100, Math.floor(options.resumeTtlMs / 3)));
  keepAlive?.unref();

  function unpark(s: Session): void {
    const tap = parked.get(s.id);
    if (tap === undefined || sessionStore === undefined) return;
    parked.delete(s.id);
    s.removeTap(tap);
    void sessionStore.unpark(s.id);
  }

  /** Lets a parked session go, leaving it in the store for whoever resumes it. */
  function handOffParked(s: Session, reason: McpError, forward?: (payload: ServerPayload) => void): void {
    const tap = parked.get(s.id);
    if (tap === undefined) return;
    // Claimed while a stream is still attached here (a half-dead connection): end it first.
    s.release();
    parked.delete(s.id); // closing here must not delete what is parked
    s.handOff(reason, forward); // without forward, the commands' last Responses still go through the tap
    s.removeTap(tap);
  }

  // Sessions handed off while their commands still ran here (by id; a session may leave twice).
  const ghosts = new Map<string, Set<Session>>();

  /** Hands a claimed session off and keeps what it still runs running, for whoever holds it next. */
  async function handOffRunning(s: Session, reason: McpError, remote: RemoteCommands): Promise<void> {
    const running = s.runner.pendingIds();
    if (running.length === 0) return handOffParked(s, reason);
    let set = ghosts.get(s.id);
    if (set === undefined) ghosts.set(s.id, (set = new Set()));
    const mine = set;
    mine.add(s);
    // Recorded first (the same write chain as the forwards), so no forward overtakes it.
    const recorded = remote.handedOff(s.id, running);
    handOffParked(s, reason, (payload) => {
      remote.forward(s.id, payload, payload.case === "response" ? payload.value.commandId : undefined);
      if (payload.case === "response" && s.runner.pendingIds().length === 0) {
        mine.delete(s);
        if (mine.size === 0 && ghosts.get(s.id) === mine) ghosts.delete(s.id);
      }
    });
    await recorded; // the claimer reads the ids once it has the session
  }

  /** Emits in `s` what ghosts elsewhere forwarded to it; gives it back when `s` left meanwhile. */
  async function deliverForwarded(s: Session, remote: RemoteCommands): Promise<void> {
    const payloads = await remote.take(s.id);
    if (payloads.length === 0) return;
    if (s.closed || sessions.get(s.id) !== s) return remote.giveBack(s.id, payloads);
    for (const p of payloads) {
      if (p.case === "response") s.runner.elsewhere?.ids.delete(p.value.commandId);
      const msg = s.emit(p);
      if (p.case === "event") p.value.seq = msg.seq; // an Event's seq is its carrier's, numbered here
    }
  }

  /** A session restored from the store: what it still runs elsewhere, and what was forwarded meanwhile. */
  async function adoptRemote(s: Session, remote: RemoteCommands): Promise<void> {
    const ids = await remote.runningElsewhere(s.id).catch(() => [] as string[]);
    if (ids.length > 0) {
      s.runner.elsewhere = {
        ids: new Set(ids),
        cancel: (commandId) => void remote.cancel(s.id, commandId).catch(() => {}), // Redis down: the command's own deadline still ends it
      };
    }
    deliverForwarded(s, remote).catch(() => {}); // the next announcement retries
    if (ids.length > 0) watchOrphans(s, remote);
  }

  // Restored sessions waiting for commands that run elsewhere: their instances' liveness is read
  // on a timer that runs only while there are any.
  const waiting = new Set<Session>();
  let orphanTimer: NodeJS.Timeout | undefined;

  function watchOrphans(s: Session, remote: RemoteCommands): void {
    waiting.add(s);
    if (orphanTimer !== undefined) return;
    orphanTimer = setInterval(() => {
      for (const w of [...waiting]) {
        if (w.closed || sessions.get(w.id) !== w || (w.runner.elsewhere?.ids.size ?? 0) === 0) {
          waiting.delete(w);
          continue;
        }
        answerOrphans(w, remote).catch(() => {}); // Redis unreachable: nobody is declared dead; the next round retries
      }
      if (waiting.size === 0) {
        clearInterval(orphanTimer);
        orphanTimer = undefined;
      }
    }, remote.checkIntervalMs);
    orphanTimer.unref();
  }

  /**
   * Answers, once each, the commands of `s` whose instance died: `connection_lost`, outcome
   * unknown (the command may have run, or partly). The records are read before what was
   * forwarded is taken, so a Response forwarded meanwhile is emitted, not doubled by an answer.
   */
  async function answerOrphans(s: Session, remote: RemoteCommands): Promise<void> {
    const owners = await remote.owners(s.id);
    await deliverForwarded(s, remote);
    const dead = await remote.deadInstances(owners.values());
    const elsewhere = s.runner.elsewhere;
    if (elsewhere === undefined || s.closed || sessions.get(s.id) !== s) return;
    for (const id of [...elsewhere.ids]) {
      const owner = owners.get(id);
      // No record and no Response: the record expired with its dead instance's keep-alive.
      if (owner !== undefined && !(dead.has(owner) && (await remote.abandon(s.id, id)))) continue;
      if (!elsewhere.ids.delete(id) || s.closed) continue;
      const err = new McpError(
        "connection_lost",
        `the server instance running command "${id}" stopped before it answered (no heartbeat): its outcome is unknown; retry it if that is safe`,
      );
      s.emit({ case: "response", value: create(ResponseSchema, { commandId: id, result: { case: "error", value: toProtoError(err) } }) });
    }
  }

  const remoteCommands = sessionStore?.remote;
  remoteCommands?.onForwarded((id) => {
    const s = sessions.get(id);
    if (s !== undefined && !s.closed) deliverForwarded(s, remoteCommands).catch(() => {}); // the next announcement retries
  });
  remoteCommands?.onCancel((id, commandId) => {
    for (const g of ghosts.get(id) ?? []) g.runner.cancel(commandId);
  });

  /** Every session's hooks: one object, not closures per session. */
  const hooks: SessionHooks = {
    onClosed(s) {
      sessions.delete(s.id);
      uncharge(s);
      const owner = ownerOf.get(s);
      ownerOf.delete(s);
      owner?.p.sessions.delete(s);
      if (owner?.p.sessions.size === 0) principals.delete(owner.key);
      const movedOn = sessionStore !== undefined && !parked.has(s.id); // handed off: it lives on elsewhere
      unpark(s);
      if (!movedOn) init.onEnded?.(s);
      init.telemetry?.sessionClosed(s);
    },
    onDropped: (s, err) => init.telemetry?.sessionDropped(s, err),
    // Mirrored from the first message on (see session-store.ts: a crash loses at most the last batch);
    // park() is a no-op for a session already mirrored.
    onDetached(s) {
      park(s);
      charge(s);
    },
    onAttached: uncharge,
    onHeldBytesChanged: recharge,
  };

  function make(auth: AuthState, stream?: { sink: MessageSink; owner: object }, restored?: ParkedSession, outputJson = false): Session {
    const session = new Session(
      {
        id: restored?.id ?? randomUUID(),
        auth,
        resumeBufferMessages: options.resumeBufferMessages,
        resumeBufferBytes: options.resumeBufferBytes,
        maxOutboundMessages: options.maxOutboundMessages,
        resumeTtlMs: options.resumeTtlMs,
        expiryWarningMs: options.expiryWarningMs,
        now,
        hooks,
        ...(restored === undefined ? {} : { restored }),
        outputJson: restored?.outputJson ?? outputJson,
      },
      stream,
    );
    session.runner = init.createRunner(session);
    sessions.set(session.id, session);
    const key = auth.principal?.subject ?? "";
    const p = principalOf(key);
    p.sessions.add(session);
    ownerOf.set(session, { key, p });
    park(session);
    // A restored session starts detached: charged like one that detached here.
    if (!session.connected) charge(session);
    return session;
  }

  sessionStore?.onClaim(async (id) => {
    const s = sessions.get(id);
    // Not here, or resumed here meanwhile (then not parked: the claimer finds nothing).
    if (s === undefined) return;
    const reason = new McpError("cancelled", "the session moved to another server instance before this command finished");
    // With remote commands, what runs here runs on: Cancels and deadlines still reach it.
    if (remoteCommands !== undefined && parked.has(id)) await handOffRunning(s, reason, remoteCommands);
    else handOffParked(s, reason);
  });

  // Every revocation — made here or through another instance sharing the store — ends the live
  // sessions it concerns at once, not only at their next authentication.
  const stopRevocationFeed = init.revocations.subscribe((r) => {
    if (r.kind === "session") {
      sessions.get(r.id)?.close(new McpError("token_revoked", `session ${r.id} was revoked by an administrator`));
      return;
    }
    for (const s of [...sessions.values()]) {
      if (s.auth.jti === r.id) s.close(new McpError("token_revoked", `the session's token was revoked`));
    }
  });

  return {
    sessions,
    create(auth, stream, outputJson) {
      admit(auth.principal?.subject ?? "");
      return make(auth, stream, undefined, outputJson);
    },
    get detachedBytes() {
      return detachedBytes;
    },
    async lookup(sessionId, subject) {
      const here = sessions.get(sessionId);
      if (here !== undefined || sessionStore === undefined) return here;
      const p = await sessionStore.claim(sessionId, subject);
      if (p === undefined || p === "other_subject") return p;
      const auth: AuthState = { level: p.level, expired: false };
      if (p.subject !== undefined) auth.principal = create(PrincipalSchema, { subject: p.subject, roles: p.roles });
      if (p.expiresAt !== undefined) auth.expiresAt = p.expiresAt;
      if (p.jti !== undefined) auth.jti = p.jti;
      const s = make(auth, undefined, p);
      if (remoteCommands !== undefined) await adoptRemote(s, remoteCommands);
      return s;
    },
    *ghosts() {
      for (const set of ghosts.values()) yield* set;
    },
    close(reason) {
      stopRevocationFeed();
      if (keepAlive !== undefined) clearInterval(keepAlive);
      clearInterval(orphanTimer);
      for (const s of [...sessions.values()]) {
        // With a shared store, a session still attached is parked too: its client resumes elsewhere.
        if (sessionStore !== undefined) s.release();
        if (parked.has(s.id)) handOffParked(s, new McpError("cancelled", "the server instance shut down before this command finished"));
        else s.close(reason);
      }
      // Ghosts' commands end too; their Responses are forwarded before the store closes.
      const shutDown = new McpError("cancelled", "the server instance shut down before this command finished");
      for (const set of [...ghosts.values()]) for (const g of [...set]) g.runner.abortAll(shutDown);
    },
  };
}
