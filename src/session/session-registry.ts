/**
 * The sessions of one server instance: creating them, keeping them for resume, and — with a
 * shared `SessionStore` — parking detached ones where another instance can claim them, and
 * letting go of those another instance claims (PROTOCOL.md §4 step 5, §8). Every revocation
 * heard from the `RevocationStore`, made here or elsewhere, ends the sessions it concerns.
 */
import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import type { ServerMessage } from "../../gen/mcp/v1/session_pb.js";
import { PrincipalSchema } from "../../gen/mcp/v1/types_pb.js";
import type { ResolvedServerOptions } from "../config.js";
import { McpError } from "../errors.js";
import type { RevocationStore } from "../security/index.js";
import type { CommandRunner } from "./command-runner.js";
import { Session, type AuthState, type MessageSink } from "./session.js";
import type { ParkedSession, SessionStore } from "./session-store.js";
import type { Telemetry } from "../observability/telemetry.js";

/** What the registry is built from. */
export interface SessionRegistryOptions {
  options: Pick<ResolvedServerOptions, "resumeBufferMessages" | "maxOutboundMessages" | "resumeTtlMs" | "expiryWarningMs">;
  revocations: RevocationStore;
  /** Where detached sessions are parked for other instances; none = this instance only. */
  sessionStore?: SessionStore | undefined;
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
  /** A new session attached to `stream`. */
  create(auth: AuthState, stream: { sink: MessageSink; owner: object }): Session;
  /**
   * The session to resume: held here, or claimed from the shared store. Undefined when gone;
   * "other_subject" — and nothing moved — when it belongs to a subject other than `subject`.
   */
  lookup(sessionId: string, subject: string | undefined): Promise<Session | "other_subject" | undefined>;
  /** Shutdown: parked sessions stay claimable elsewhere, the rest close with `reason`. */
  close(reason: McpError): void;
}

/** Builds the registry and subscribes it to revocations and claims. */
export function createSessionRegistry(init: SessionRegistryOptions): SessionRegistry {
  const { options, sessionStore, now } = init;
  const sessions = new Map<string, Session>();
  // Sessions parked in the shared store, with the tap that forwards what they emit meanwhile.
  const parked = new Map<string, (m: ServerMessage) => void>();

  function park(s: Session): void {
    if (sessionStore === undefined || parked.has(s.id)) return;
    const tap = (m: ServerMessage) => void sessionStore.append(s.id, m);
    const ring = BigInt(options.resumeBufferMessages);
    const held = s.messagesAfter(s.lastSeq > ring ? s.lastSeq - ring : 0n) ?? [];
    parked.set(s.id, tap);
    s.taps.add(tap);
    void sessionStore.park(
      {
        id: s.id,
        roles: [...(s.auth.principal?.roles ?? [])],
        level: s.auth.level,
        createdAt: s.createdAt,
        lastSeq: s.lastSeq,
        messages: held,
        ...(s.auth.principal === undefined ? {} : { subject: s.auth.principal.subject }),
        ...(s.auth.expiresAt === undefined ? {} : { expiresAt: s.auth.expiresAt }),
        ...(s.auth.jti === undefined ? {} : { jti: s.auth.jti }),
      },
      options.resumeTtlMs,
    );
  }

  function unpark(s: Session): void {
    const tap = parked.get(s.id);
    if (tap === undefined || sessionStore === undefined) return;
    parked.delete(s.id);
    s.taps.delete(tap);
    void sessionStore.unpark(s.id);
  }

  /** Lets a parked session go, leaving it in the store for whoever resumes it. */
  function handOffParked(s: Session, reason: McpError): void {
    const tap = parked.get(s.id);
    if (tap === undefined) return;
    parked.delete(s.id); // closing here must not delete what is parked
    s.handOff(reason); // the commands' last Responses still go through the tap
    s.taps.delete(tap);
  }

  function make(auth: AuthState, stream?: { sink: MessageSink; owner: object }, restored?: ParkedSession): Session {
    const session = new Session(
      {
        id: restored?.id ?? randomUUID(),
        auth,
        resumeBufferMessages: options.resumeBufferMessages,
        maxOutboundMessages: options.maxOutboundMessages,
        resumeTtlMs: options.resumeTtlMs,
        expiryWarningMs: options.expiryWarningMs,
        now,
        onClosed: (s) => {
          sessions.delete(s.id);
          unpark(s);
          init.telemetry?.sessionClosed(s);
        },
        onDropped: (s, err) => init.telemetry?.sessionDropped(s, err),
        onDetached: park,
        onAttached: unpark,
        ...(restored === undefined ? {} : { restored }),
      },
      stream,
    );
    session.runner = init.createRunner(session);
    sessions.set(session.id, session);
    return session;
  }

  sessionStore?.onClaim(async (id) => {
    const s = sessions.get(id);
    // Not here, or resumed here meanwhile (then not parked: the claimer finds nothing).
    if (s !== undefined) handOffParked(s, new McpError("cancelled", "the session moved to another server instance before this command finished"));
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
    create: (auth, stream) => make(auth, stream),
    async lookup(sessionId, subject) {
      const here = sessions.get(sessionId);
      if (here !== undefined || sessionStore === undefined) return here;
      const p = await sessionStore.claim(sessionId, subject);
      if (p === undefined || p === "other_subject") return p;
      const auth: AuthState = { level: p.level, expired: false };
      if (p.subject !== undefined) auth.principal = create(PrincipalSchema, { subject: p.subject, roles: p.roles });
      if (p.expiresAt !== undefined) auth.expiresAt = p.expiresAt;
      if (p.jti !== undefined) auth.jti = p.jti;
      return make(auth, undefined, p);
    },
    close(reason) {
      stopRevocationFeed();
      for (const s of [...sessions.values()]) {
        if (parked.has(s.id)) handOffParked(s, new McpError("cancelled", "the server instance shut down before this command finished"));
        else s.close(reason);
      }
    },
  };
}
