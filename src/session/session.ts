/**
 * A session: who it acts for, its numbered outbound messages, the ring of recent messages kept
 * for resume, its commands and context watches (PROTOCOL.md §4). It outlives the stream that
 * opened it: a disconnect detaches it, a resume attaches a new stream.
 */
import { create, type JsonObject } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { EventSchema } from "../../gen/mcp/v1/event_pb.js";
import type { ServerMessage } from "../../gen/mcp/v1/session_pb.js";
import type { Principal, SecurityLevel } from "../../gen/mcp/v1/types_pb.js";
import { McpError, toProtoError } from "../errors.js";
import type { CommandRunner } from "./command-runner.js";
import { ResumeRing } from "./resume-ring.js";

/** Who a session acts for, at which level. */
export interface AuthState {
  principal?: Principal;
  level: SecurityLevel;
  /** Token expiry, epoch ms. */
  expiresAt?: number;
  /** Token id, for revocation. */
  jti?: string;
  /** Set once the token expired: rights end until a fresh Authentication. */
  expired: boolean;
}

/** Where a session's messages go while a stream is attached. Implemented by each transport. */
export interface MessageSink {
  /**
   * Takes a batch in seq order; false when the transport's buffer is full (stop producing).
   * `encoded`, when given, is what `encode` made of this batch.
   */
  write(batch: readonly ServerMessage[], encoded?: EncodedBatch): boolean;
  /**
   * For a transport that sends protobuf bytes itself: encodes a batch its way. The session calls
   * it once per batch, passes the result to `write`, and keeps the bytes — not the message
   * objects — for resume. Such a transport is done with the batch array when `write` returns:
   * the session empties it and reuses it for a later batch.
   */
  encode?(batch: readonly ServerMessage[]): EncodedBatch;
  /** Resolves once the transport can take more after `write` returned false. */
  drain(): Promise<void>;
  /** Ends the stream (after anything already written). */
  close(): void;
}

/** A batch as a transport encoded it (`MessageSink.encode`). */
export interface EncodedBatch {
  /** What the transport sends, e.g. gRPC frames. */
  readonly wire: Uint8Array;
  /** The protobuf bytes of the batch's messages: message i is `bytes[bounds[2i] .. bounds[2i+1])`. */
  readonly bytes: Uint8Array;
  readonly bounds: readonly number[];
}

/** The `message` oneof of a ServerMessage, without seq. */
export type ServerPayload = ServerMessage["message"];

type SessionState =
  | { kind: "attached"; sink: MessageSink; owner: object }
  | { kind: "detached"; since: number; timer: ReturnType<typeof setTimeout> }
  | { kind: "closed"; reason: McpError };

/** Options of a session; resolved by the core. */
export interface SessionInit {
  id: string;
  auth: AuthState;
  resumeBufferMessages: number;
  /** Encoded bytes kept for resume at most; the oldest messages go first. */
  resumeBufferBytes: number;
  /** Messages queued for a congested stream before it is dropped with `slow_consumer` (§6). */
  maxOutboundMessages: number;
  resumeTtlMs: number;
  expiryWarningMs: number;
  now: () => number;
  /** What the session tells its owner; one object for every session of a registry. */
  hooks: SessionHooks;
  /** Continue a session another instance parked: its creation time, last seq and the messages held for resume. */
  restored?: { createdAt: number; lastSeq: bigint; messages: readonly ServerMessage[] };
  /**
   * JSON outputs go to this session's client as `Response.output_json` text (it asked with the
   * Handshake capability `output_json`). Fixed for the session's life: resumed streams get the
   * same form, as the resume ring replays the bytes already encoded. @default false
   */
  outputJson?: boolean;
}

/**
 * What a session tells the registry that holds it. One object shared by all its sessions (each
 * call names the session), not closures per session: an idle session's cost is mostly fixed
 * objects like these (bench/scale.ts).
 */
export interface SessionHooks {
  /** Called once when the session closes for good (TTL, revoke, shutdown, hand-off). */
  onClosed(session: Session): void;
  /** Called when the stream goes away (the core parks the session where other instances can resume it). */
  onDetached?(session: Session): void;
  /** Called when a stream resumes it here. */
  onAttached?(session: Session): void;
  /** Called when a detached session's `heldBytes` changed (a command answered while it was away). */
  onHeldBytesChanged?(session: Session): void;
  /** Called when the attached stream is dropped with an error (`drop`). */
  onDropped?(session: Session, err: McpError): void;
}

/** `Session.flush` as a callback for `setImmediate`: no bound function per session. */
function flushSession(session: Session): void {
  session.flush();
}

/** Sessions flushed in the first turn of a pass at most (`scheduleFlush`); each next turn of the same pass flushes twice as many. */
const FIRST_SLICE = 32;
/** Sessions with messages to send, in the order they had them; `flushHead` is the next to flush. */
const flushQueue: (Session | undefined)[] = [];
let flushHead = 0;
let flushSlice = FIRST_SLICE;
let flushesScheduled = false;

/**
 * Flushes `session` at the end of this tick — one write per tick, not per message (ARCHITECTURE.md
 * "hot path"). When more than FIRST_SLICE sessions have messages at once (a change to a context
 * 1,000 sessions watch) the pass goes on over the next event-loop turns: node:http2 writes a
 * turn's frames to the socket only after the turn, so the first watchers' frames go out, and the
 * client reads them, while the next slice is encoded. Each turn flushes twice as many as the one
 * before, so a pass over N sessions takes about log2(N / FIRST_SLICE) turns, and a session never
 * waits long behind sessions that keep having messages (each is in the queue once).
 */
function scheduleFlush(session: Session): void {
  flushQueue.push(session);
  if (flushesScheduled) return;
  flushesScheduled = true;
  process.nextTick(runFlushes);
}

function runFlushes(): void {
  const end = Math.min(flushQueue.length, flushHead + flushSlice);
  try {
    while (flushHead < end) {
      const session = flushQueue[flushHead]!; // flushHead < end <= length
      flushQueue[flushHead++] = undefined;
      session.flush();
    }
  } finally {
    // Also after a flush threw: the other sessions still get theirs.
    if (flushHead < flushQueue.length) {
      flushSlice *= 2;
      setImmediate(runFlushes);
    } else {
      flushQueue.length = 0;
      flushHead = 0;
      flushSlice = FIRST_SLICE;
      flushesScheduled = false;
    }
  }
}

/**
 * One session. A class because it is a long-lived resource with private state and a lifecycle
 * (STYLE.md §2); `setState` makes every transition.
 */
export class Session {
  readonly id: string;
  readonly createdAt: number;
  auth: AuthState;
  /** Set by the core right after construction (the runner needs the session's host callbacks). */
  runner!: CommandRunner;
  /** Context watches by context id; aborted on replace or close. Made by the first watch. */
  private watchMap: Map<string, AbortController> | undefined = undefined;
  /** Observers of every emitted message (EventService/Subscribe). Made by the first tap. */
  private tapSet: Set<(m: ServerMessage) => void> | undefined = undefined;
  /** EventService/Subscribe streams following this session now (bounded by `maxSubscriptionsPerSession`). */
  subscriptions = 0;
  /**
   * ClientMessages accepted from the client over all its streams, Handshakes excluded: a resuming
   * client re-sends what it sent after this many (`HandshakeResult.received_messages`).
   */
  received = 0;
  /** False for a session continued from another instance's parking, which does not carry `received`. */
  readonly countsReceived: boolean;
  /** See `SessionInit.outputJson`. */
  readonly outputJson: boolean;

  private seq = 0n;
  /**
   * Set on a session handed off while its commands still ran (a ghost): what they emit goes to
   * the instance that holds the session now (src/session/remote-commands.ts), not numbered here.
   */
  private forwarding: ((payload: ServerPayload) => void) | undefined = undefined;
  /** What is kept for resume, bounded by count and bytes. */
  private readonly ring: ResumeRing;
  private pending: ServerMessage[] = [];
  /** The array the last flush sent, emptied: the next flush's queue (see `flush`). */
  private spare: ServerMessage[] | undefined = undefined;
  private flushScheduled = false;
  private congested = false;
  /** Producers waiting for `writable()`; made by the first. */
  private writableWaiters: (() => void)[] | undefined = undefined;
  private state: SessionState;
  private expiryTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly init: SessionInit;
  /** Queued messages at which `isCongested` turns true: half the hard bound. */
  private readonly backlogLimit: number;
  /** Restored from a mirror and not attached since (see `replayFor`). */
  private mirrorMayLag = false;

  /** A new session attached to `stream`, or — without one — a restored session waiting for its resume. */
  constructor(init: SessionInit, stream?: { sink: MessageSink; owner: object }) {
    this.init = init;
    this.backlogLimit = Math.max(1, init.maxOutboundMessages >> 1);
    this.id = init.id;
    this.auth = init.auth;
    this.createdAt = init.restored?.createdAt ?? init.now();
    this.countsReceived = init.restored === undefined;
    this.outputJson = init.outputJson === true;
    this.ring = new ResumeRing(init.resumeBufferMessages, init.resumeBufferBytes);
    if (init.restored !== undefined) {
      this.mirrorMayLag = true;
      this.seq = init.restored.lastSeq;
      this.ring.restore(Number(init.restored.lastSeq), init.restored.messages);
    }
    this.state = stream === undefined ? { kind: "detached", since: init.now(), timer: this.resumeTimer() } : { kind: "attached", ...stream };
    this.scheduleExpiry();
  }

  /** Context watches open now. */
  get watchCount(): number {
    return this.watchMap === undefined ? 0 : this.watchMap.size;
  }

  /** The watch of context `id`, if one is open. */
  watchOf(id: string): AbortController | undefined {
    return this.watchMap?.get(id);
  }

  /** Records the watch of context `id` (the caller aborted the one it replaces). */
  setWatch(id: string, ac: AbortController): void {
    (this.watchMap ??= new Map()).set(id, ac);
  }

  /** Forgets the watch of context `id` if it is still `ac`. */
  unsetWatch(id: string, ac: AbortController): void {
    if (this.watchMap?.get(id) === ac) this.watchMap.delete(id);
  }

  /** Observers of every emitted message now (`addTap`, `removeTap`). */
  get tapCount(): number {
    return this.tapSet === undefined ? 0 : this.tapSet.size;
  }

  addTap(tap: (m: ServerMessage) => void): void {
    (this.tapSet ??= new Set()).add(tap);
  }

  removeTap(tap: (m: ServerMessage) => void): void {
    this.tapSet?.delete(tap);
  }

  /** The last seq assigned. */
  get lastSeq(): bigint {
    return this.seq;
  }

  get connected(): boolean {
    return this.state.kind === "attached";
  }

  get closed(): boolean {
    return this.state.kind === "closed";
  }

  /** Whether `owner` (a stream connection) is the one attached now. */
  isAttachedTo(owner: object): boolean {
    return this.state.kind === "attached" && this.state.owner === owner;
  }

  /** Encoded bytes held for resume (what a detached session costs, besides a small fixed overhead). */
  get heldBytes(): number {
    return this.ring.heldBytes;
  }

  /** Numbers a message and keeps it for resume. */
  private numbered(payload: ServerPayload): ServerMessage {
    const seq = ++this.seq;
    // A literal, not create(): both fields are given, and this runs once per message (hot path).
    const msg: ServerMessage = { $typeName: "mcp.v1.ServerMessage", seq, message: payload };
    // Exact while seq < 2^53: more messages than a session will ever send.
    this.ring.put(Number(seq), msg);
    const taps = this.tapSet;
    if (taps !== undefined && taps.size > 0) for (const tap of taps) tap(msg);
    return msg;
  }

  /** Numbers a message, keeps it for resume and queues it for the attached stream. */
  emit(payload: ServerPayload): ServerMessage {
    if (this.forwarding !== undefined) {
      this.forwarding(payload);
      return { $typeName: "mcp.v1.ServerMessage", seq: 0n, message: payload };
    }
    const msg = this.numbered(payload);
    if (this.state.kind === "attached") {
      if (this.pending.length >= this.init.maxOutboundMessages) {
        this.drop(
          new McpError("slow_consumer", `the client is not reading: ${this.init.maxOutboundMessages} messages are queued for it`, {
            retryAfterMs: 1000,
          }),
        );
        return msg;
      }
      this.pending.push(msg);
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        // One write per tick, not per message (ARCHITECTURE.md "hot path").
        scheduleFlush(this);
      }
    } else if (this.state.kind === "detached") {
      // No stream: what a finishing command answers is kept as bytes, within the ring's bounds.
      const before = this.ring.heldBytes;
      this.ring.compactLast();
      if (this.ring.heldBytes !== before) this.init.hooks.onHeldBytesChanged?.(this);
    }
    return msg;
  }

  /** An Event on this session's stream; its seq equals the carrying ServerMessage's. */
  emitEvent(type: string, data: JsonObject, ids: { commandId?: string; contextId?: string } = {}): void {
    const event = create(EventSchema, {
      type,
      data,
      commandId: ids.commandId ?? "",
      contextId: ids.contextId ?? "",
      time: timestampFromMs(this.init.now()),
    });
    const msg = this.emit({ case: "event", value: event });
    event.seq = msg.seq;
  }

  /** Sends whatever is queued now (also called by the tick set in `emit`). */
  flush(): void {
    this.flushScheduled = false;
    // While congested, messages wait here — bounded by maxOutboundMessages — not in the transport.
    if (this.state.kind !== "attached" || this.pending.length === 0 || this.congested) return;
    const batch = this.pending;
    const sink = this.state.sink;
    // Two arrays take turns instead of a new one per flush: a fresh array would live until the
    // session's next message, long enough on a watcher's session to reach the old generation and
    // take the messages pushed into it there too (a full GC's work, not a scavenge's). Only with
    // a transport that encodes (see `encode`); another may keep the array it was given.
    const reuse = sink.encode !== undefined;
    this.pending = (reuse ? this.spare : undefined) ?? [];
    this.spare = undefined;
    let encoded: EncodedBatch | undefined;
    if (sink.encode !== undefined) {
      encoded = sink.encode(batch);
      this.ring.encoded(batch, encoded.bytes, encoded.bounds);
    }
    if (!sink.write(batch, encoded) && !this.congested) {
      this.congested = true;
      sink.drain().then(
        () => this.setUncongested(sink),
        () => this.setUncongested(sink),
      );
    }
    if (reuse) {
      batch.length = 0;
      this.spare = batch;
    }
    // Producers that waited for the backlog (not the transport) to go out may go on.
    if (!this.congested) this.releaseWriters();
  }

  /** Resolves every `writable()` waiting now. */
  private releaseWriters(): void {
    const ws = this.writableWaiters;
    if (ws === undefined || ws.length === 0) return;
    this.writableWaiters = undefined;
    for (const w of ws) w();
  }

  private setUncongested(sink: MessageSink): void {
    if (this.state.kind !== "attached" || this.state.sink !== sink) return;
    this.congested = false;
    this.releaseWriters();
    if (this.pending.length > 0 && !this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(flushSession, this);
    }
  }

  /**
   * Ends the attached stream with a final error, written past any queue so the client learns
   * why (slow consumer, a fatal protocol error). The session stays for resume; what the stream
   * could not take is in the resume ring.
   */
  drop(err: McpError): void {
    if (this.state.kind !== "attached") return;
    this.init.hooks.onDropped?.(this, err);
    const sink = this.state.sink;
    if (!this.congested) this.flush();
    sink.write([this.numbered({ case: "error", value: toProtoError(err) })]);
    this.enterDetached();
    sink.close();
  }

  /**
   * True while producers should wait (`writable()`): the attached stream's buffer is full, no
   * stream is attached, or half the outbound bound is queued in this tick already (a burst — a
   * batch's answers, frames read in one turn — waits for its flush instead of reaching the
   * bound that drops the client with slow_consumer).
   */
  get isCongested(): boolean {
    return this.congested || this.state.kind !== "attached" || this.pending.length >= this.backlogLimit;
  }

  /** Resolves when a stream is attached and can take more, or the session closed; rejects never. */
  writable(): Promise<void> {
    // A closed session will never be writable again: callers re-check `closed` and stop.
    if (!this.isCongested || this.state.kind === "closed") return Promise.resolve();
    return new Promise((resolve) => (this.writableWaiters ??= []).push(resolve));
  }

  /**
   * The messages after `lastSeq`, for a resume; undefined when the ring no longer holds all of
   * them (then the session cannot resume exactly-once and counts as expired).
   */
  messagesAfter(lastSeq: bigint): ServerMessage[] | undefined {
    return this.ring.after(lastSeq);
  }

  /**
   * What a resume from `lastSeq` replays. A restored session's mirror may end before what its
   * client received: a crash loses the batch not yet written (session-store.ts). The client holds
   * those messages, so the session goes on after them — the next message gets a seq the client has
   * not seen — rather than expiring a session it could continue. Only the first resume of a
   * restored session can be ahead; later, a seq past the last one sent is the client's mistake.
   */
  replayFor(lastSeq: bigint): ServerMessage[] | undefined {
    if (this.mirrorMayLag && lastSeq > this.seq) {
      this.seq = lastSeq;
      this.ring.restore(Number(lastSeq), []);
      return [];
    }
    return this.ring.after(lastSeq);
  }

  /** Attaches a (new) stream; the previous one, if any, is closed. Returns the replay. */
  attach(sink: MessageSink, owner: object): void {
    if (this.state.kind === "closed") throw this.state.reason;
    this.mirrorMayLag = false;
    this.setState({ kind: "attached", sink, owner });
    this.init.hooks.onAttached?.(this);
  }

  /**
   * Shutdown with a shared store: sends what is queued, ends the attached stream cleanly and
   * keeps the session detached, so it is parked for another instance to resume.
   */
  release(): void {
    if (this.state.kind !== "attached") return;
    const sink = this.state.sink;
    if (!this.congested) this.flush();
    this.enterDetached();
    sink.close();
  }

  /** The stream went away: keep the session for resume for `resumeTtlMs`. */
  detach(owner: object): void {
    if (this.isAttachedTo(owner)) this.enterDetached();
  }

  private enterDetached(): void {
    this.setState({ kind: "detached", since: this.init.now(), timer: this.resumeTimer() });
    // From here on the session costs what it holds: bytes, counted and bounded.
    this.ring.compact();
    this.init.hooks.onDetached?.(this);
  }

  /** Closes the session unless it is resumed within `resumeTtlMs`. */
  private resumeTimer(): ReturnType<typeof setTimeout> {
    const timer = setTimeout(
      () => this.close(new McpError("session_expired", `session ${this.id} was not resumed within ${this.init.resumeTtlMs} ms`)),
      this.init.resumeTtlMs,
    );
    timer.unref();
    return timer;
  }

  /**
   * Another instance takes the session over (§8) and the session lets go without a word to the
   * client, who is now connected elsewhere. Without `forward`, what still runs here ends — each
   * command still gets its one Response, `reason`, which the core forwards with the session.
   * With it, the commands run on and everything they emit goes to `forward`.
   */
  handOff(reason: McpError, forward?: (payload: ServerPayload) => void): void {
    if (this.state.kind !== "detached") return;
    if (forward !== undefined && this.runner.pendingIds().length > 0) this.forwarding = forward;
    else this.runner.abortAll(reason);
    this.abortWatches(reason);
    this.setState({ kind: "closed", reason });
    this.init.hooks.onClosed(this);
  }

  /**
   * Ends the session for good: the client is told why (unless it asked for the end itself,
   * `tell = false`), commands aborted, watches stopped, stream closed.
   */
  close(reason: McpError, tell = true): void {
    if (this.state.kind === "closed") return;
    if (tell) this.emit({ case: "error", value: toProtoError(reason) });
    this.setState({ kind: "closed", reason });
    this.runner.abortAll(reason);
    this.abortWatches(reason);
    this.releaseWriters();
    this.init.hooks.onClosed(this);
  }

  private abortWatches(reason: McpError): void {
    const watches = this.watchMap;
    if (watches === undefined) return;
    for (const w of watches.values()) w.abort(reason);
    watches.clear();
  }

  /** Why the session closed, if it did. */
  get closeReason(): McpError | undefined {
    return this.state.kind === "closed" ? this.state.reason : undefined;
  }

  /** The single transition function: cleans up what the old state held. */
  private setState(next: SessionState): void {
    const prev = this.state;
    if (prev.kind === "detached") clearTimeout(prev.timer);
    if (prev.kind === "attached" && (next.kind !== "attached" || next.sink !== prev.sink)) {
      // Whatever was queued for the old stream stays in the ring; a resume replays it.
      if (next.kind === "closed") prev.sink.write(this.pending); // the final error goes out first
      this.pending = [];
      if (next.kind !== "detached") prev.sink.close();
    }
    if (next.kind === "closed") clearTimeout(this.expiryTimer);
    this.state = next;
    this.congested = false;
    // Waiters re-check their condition after every transition (attached again, detached, closed).
    this.releaseWriters();
  }

  /** Replaces the session's credentials (Authentication refresh) and re-arms the expiry timers. */
  setAuth(auth: AuthState): void {
    this.auth = auth;
    this.scheduleExpiry();
  }

  /**
   * One timer at a time, not two: the warning, which then arms the expiry (an idle session's
   * cost is mostly fixed objects like these; bench/scale.ts).
   */
  private scheduleExpiry(): void {
    clearTimeout(this.expiryTimer);
    this.expiryTimer = undefined;
    const expiresAt = this.auth.expiresAt;
    if (expiresAt === undefined) return;
    const now = this.init.now();
    const warnIn = Math.max(0, expiresAt - this.init.expiryWarningMs - now);
    // Measured from now, as if both were armed now (the clock may be a test's).
    const expireIn = Math.max(0, expiresAt - now);
    this.expiryTimer = setTimeout(expiryWarning, warnIn, this, expiresAt, Math.max(0, expireIn - warnIn));
    this.expiryTimer.unref();
  }

  /** The token expires soon: warn, and arm the expiry `expireAfterMs` from now. */
  warnExpiring(expiresAt: number, expireAfterMs: number): void {
    this.emitEvent("session.expiring", { expires_at: new Date(expiresAt).toISOString(), session_id: this.id });
    this.expiryTimer = setTimeout(sessionExpired, expireAfterMs, this);
    this.expiryTimer.unref();
  }

  /** The token expired: rights end until a fresh Authentication. */
  expire(): void {
    this.auth = { ...this.auth, expired: true };
    this.emitEvent("session.expired", { session_id: this.id });
  }
}

// Timer callbacks as module functions, given the session as an argument: no closures per session.
function expiryWarning(session: Session, expiresAt: number, expireAfterMs: number): void {
  session.warnExpiring(expiresAt, expireAfterMs);
}

function sessionExpired(session: Session): void {
  session.expire();
}
