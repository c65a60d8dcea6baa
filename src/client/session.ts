/**
 * The client's session: one logical session over a succession of streams (PROTOCOL.md §4). When
 * a stream breaks — reset, GOAWAY, socket error, a server silent past twice its heartbeat — it
 * reconnects with backoff and resumes (`Handshake.resume`), re-sends exactly what the server did
 * not get (`HandshakeResult.received_messages`), and carries on; a session that is gone is
 * replaced by a fresh one whose watches re-sync from their known versions. Every call settles:
 * with its answer, or — once the session is over for good — with one classified McpError.
 */
import { create, type JsonObject, type MessageInitShape } from "@bufbuild/protobuf";
import { BatchMode, CommandSchema, type Command, type Response } from "../../gen/mcp/v1/command_pb.js";
import { ContextUpdateSchema, type ContextSync, type ContextUpdate, type ContextUpdateResult } from "../../gen/mcp/v1/context_pb.js";
import type { Event } from "../../gen/mcp/v1/event_pb.js";
import { ClientMessageSchema, type AuthenticationResult, type ClientMessage, type HandshakeResult, type ServerMessage } from "../../gen/mcp/v1/session_pb.js";
import { ProtocolVersion, SecurityLevel } from "../../gen/mcp/v1/types_pb.js";
import { McpError, fromProtoError, toMcpError, toProtoError } from "../errors.js";
import { IdMap } from "../id-map.js";
import { OUTPUT_JSON_CAPABILITY, parseJsonObject } from "../transport/json-text.js";
import { callChunks, uploadChunks, type ChunkStream, type ChunkStreamOptions, type ChunkUploadOptions } from "./chunks.js";
import { VERSION } from "../version.js";
import { fromConnectError } from "./errors.js";
import { createReader, type Reader } from "./reader.js";
import { backoffDelayMs, resolveReconnectOptions, type ReconnectOptions, type ResolvedReconnectOptions } from "./reconnect.js";
import type { OpenSessionStream, SessionStream } from "./session-stream.js";

/** One ClientMessage's content, e.g. `{ case: "ping", value: { id: 1n } }`. */
export type ClientPayload = NonNullable<MessageInitShape<typeof ClientMessageSchema>["message"]>;

/**
 * Where a session is: `connecting` (first Handshake), `open` (a stream is up), `reconnecting`
 * (the stream broke; calls wait and are sent once it is back), `closed` (for good: every call
 * rejects at once).
 */
export type SessionState = "connecting" | "open" | "reconnecting" | "closed";

/** A change of `McpSession.state`, as `stateChanges()` and `SessionOptions.onStateChange` report it. */
export type SessionStateChange =
  /** The stream broke; attempt `attempt` starts after `delayMs`. */
  | { state: "reconnecting"; attempt: number; delayMs: number; reason: McpError }
  /**
   * A stream is up again. `resumed`: the same session continued, nothing lost. Otherwise the
   * old session was gone (`session_expired`): `sessionId` is a fresh one, watched contexts were
   * re-synced from their known versions, and calls whose outcome is unknown rejected; `expired`
   * is the server's `PROTOCOL session_expired` answer to the resume, when there was one.
   */
  | { state: "open"; resumed: boolean; sessionId: string; expired?: McpError }
  /** Over for good; `error` is what every pending call rejected with (none: closed by this client). */
  | { state: "closed"; error: McpError | undefined };

/** Options of `McpClient.connect`. */
export interface SessionOptions {
  /**
   * Security level to require.
   * @default SecurityLevel.UNSPECIFIED (what the token and transport allow, up to STANDARD)
   */
  securityLevel?: SecurityLevel;
  /**
   * Resume this session (e.g. one a previous process held) instead of opening a new one. Messages
   * replayed by the server reach `messages()`, `events()` and `contextSyncs()` readers created
   * right after `connect()` resolves. List the ids of commands still awaiting a Response in
   * `commandIds` and read each one's with `McpSession.response(id)`.
   * @default undefined (a new session)
   */
  resume?: { sessionId: string; lastSeq: bigint; commandIds?: readonly string[] };
  /**
   * Send a Ping this often, in ms; 0 disables pings and silence detection. A server silent for
   * more than twice this counts as a broken stream.
   * @default the server's heartbeat_interval_ms
   */
  heartbeatIntervalMs?: number;
  /**
   * How to come back after the stream breaks; `false` ends the session at the first break (every
   * pending call rejects with `TRANSPORT connection_lost`). The first connect is not retried.
   * @default {} (the defaults of ReconnectOptions)
   */
  reconnect?: ReconnectOptions | false;
  /**
   * Called on every state change (as `stateChanges()` yields them), synchronously.
   * @default undefined
   */
  onStateChange?: (change: SessionStateChange) => void;
  /** Versions to offer. @default [PROTOCOL_VERSION_1_0] */
  protocolVersions?: ProtocolVersion[];
  /** Client name for the Handshake. @default "mcp-client-ts" */
  clientName?: string;
  /**
   * Carry JSON as text: ask for `Response.output_json` (Handshake capability `output_json`) and,
   * once the server confirmed it in its HandshakeResult, send `call()` arguments as
   * `Command.arguments_json`. Both sides then use native `JSON.parse`/`JSON.stringify` instead of
   * a `google.protobuf.Struct` tree. What `call()`, `execute()` and `batch()` return is the same
   * either way (an `output_json` answer is handed on as `output`); `false` keeps Struct both ways.
   * A server that does not know the capability gets Struct (it would not understand the text).
   * @default true
   */
  jsonText?: boolean;
  /**
   * Aborting closes the session for good and stops any reconnecting.
   * @default undefined
   */
  signal?: AbortSignal;
  /**
   * How long `close()` waits, in ms, for the server to end the stream after `SessionClose`
   * before it drops the stream itself (the server then ends the session by its resume window).
   * @default 2000
   */
  closeTimeoutMs?: number;
}

/** Options of one call on a session. */
export interface CallOptions {
  /** Time allowed, in ms; 0 = the server's default. @default 0 */
  timeoutMs?: number;
  /** Command id; a fresh one when unset. @default a fresh id */
  id?: string;
  /** Aborting sends a Cancel. @default undefined */
  signal?: AbortSignal;
  /** Receives the command's events (output, progress) while it runs. @default undefined */
  onEvent?: (event: Event) => void;
}

/**
 * A session. Every method that returns a promise settles: with its answer, or with one McpError
 * once the session is closed for good (`TRANSPORT connection_lost` when the connection was lost,
 * `COMMAND cancelled` after `close()`, else the error that ended it).
 */
export interface McpSession {
  /** The session's id (a new one after the old session expired while disconnected). */
  readonly sessionId: string;
  /** The last HandshakeResult (of the latest stream). */
  readonly handshake: HandshakeResult;
  /** The highest seq received (for resume). */
  readonly lastSeq: bigint;
  /** Where the session is now. */
  readonly state: SessionState;
  /** Every state change from now on; ends after `closed`. */
  stateChanges(): AsyncIterable<SessionStateChange>;
  /** Runs a tool with JSON arguments; resolves with its output or rejects with the McpError. */
  call(tool: string, args?: JsonObject, options?: CallOptions): Promise<JsonObject>;
  /** Sends a Command and resolves with its Response (errors are in the Response). */
  execute(command: MessageInitShape<typeof CommandSchema>, options?: Omit<CallOptions, "id" | "timeoutMs">): Promise<Response>;
  /** Sends a CommandBatch; resolves with one Response per command, in the batch's order. */
  batch(commands: MessageInitShape<typeof CommandSchema>[], mode?: BatchMode): Promise<Response[]>;
  /** The Response of a command listed in `SessionOptions.resume.commandIds`; TypeError for any other id. */
  response(commandId: string): Promise<Response>;
  /** Ids of the commands still awaiting a Response (to resume elsewhere with `resume.commandIds`). */
  readonly pendingCommandIds: readonly string[];
  /** Sends a Cancel (again after a reconnect if the command is still pending). */
  cancel(commandId: string): void;
  /** Applies a context update; rejects with `version_conflict` etc. */
  update(update: MessageInitShape<typeof ContextUpdateSchema>): Promise<ContextUpdateResult>;
  /** Asks for a context's changes since `knownVersion`; with `watch`, later changes arrive on `contextSyncs()`. */
  sync(contextId: string, knownVersion?: bigint, watch?: boolean): Promise<ContextSync>;
  /**
   * Every ContextSync pushed for a watched context, across reconnects without gaps or duplicates.
   * Read-only: sessions of one client watching the same context get the same object for a change
   * (decoded once, server-message-decoder.ts), and `sync()` resolves with it too.
   */
  contextSyncs(): AsyncIterable<ContextSync>;
  /** Re-authenticates (token refresh) without reconnecting; later reconnects use this token. */
  authenticate(token: string): Promise<AuthenticationResult>;
  /** Round trip in ms. */
  ping(): Promise<number>;
  /** Sends any ClientMessage as is (the low-level API; not re-sent after a reconnect, dropped while reconnecting). */
  send(message: ClientPayload): void;
  /** Every ServerMessage received from now on, once each (the low-level API). */
  messages(): AsyncIterable<ServerMessage>;
  /** Events (command output and progress, session notices). */
  events(): AsyncIterable<Event>;
  /** A tool's chunked output as bytes (e.g. `fs.read` with `binary`); breaking out of the loop cancels it (chunks.ts). */
  callChunks(tool: string, args?: JsonObject, options?: ChunkStreamOptions): ChunkStream;
  /** Runs a tool and uploads `source` as its chunked input (e.g. `fs.write` with `chunked`); resolves with its Response (chunks.ts). */
  upload(tool: string, args: JsonObject, source: AsyncIterable<Uint8Array> | Uint8Array, options?: ChunkUploadOptions): Promise<Response>;
  /**
   * Stops reading the session stream until the returned function is called (holds nest): what the
   * server sends then waits in its bounded outbound buffer (PROTOCOL.md §6) instead of this
   * process. Everything on the session waits too (head-of-line); heartbeat silence is not counted
   * while held. `callChunks` holds while its reader is behind (docs/streams.md "Bytes and chunks").
   */
  holdReading(): () => void;
  /** Resolves when the session is closed for good; with the error that ended it, if any. */
  readonly closed: Promise<McpError | undefined>;
  /**
   * Closes the session for good: every pending call rejects at once with `COMMAND cancelled`,
   * reconnecting stops, and the server is told (`SessionClose`): it cancels the session's running
   * commands, releases its context leases and forgets it. Resolves when the server has ended the
   * stream (at most `SessionOptions.closeTimeoutMs` later). When the stream is down at the time,
   * the server ends the session once its resume window passes. `{ resumable: true }` only ends
   * the stream and leaves the session on the server for a later `connect({ resume })`.
   */
  close(options?: { resumable?: boolean }): Promise<void>;
}

/** A batch as sent, shared by its commands' pending entries so a re-send keeps it one batch. */
interface SentBatch {
  commands: Command[];
  mode: BatchMode;
  sentAt: number;
}

/**
 * A command waiting for its Response; `map` turns the Response into what the caller gets (may
 * throw). `sentAt` is the message's index in the session (> 0), or — not sent yet — minus its
 * place in the queue of what waits for the stream (< 0).
 */
interface PendingCommand {
  resolve(value: unknown): void;
  reject(e: unknown): void;
  map(r: Response): unknown;
  onEvent: ((e: Event) => void) | undefined;
  /** What to re-send; undefined for commands sent on another stream (`resume.commandIds`) or in a batch. */
  command: Command | undefined;
  batch: SentBatch | undefined;
  sentAt: number;
  /** Re-sent without knowing whether the server had it: a `duplicate_command_id` answer means it had. */
  resent: boolean;
  cancelled: boolean;
}

interface PendingUpdate {
  resolve(r: ContextUpdateResult): void;
  reject(e: McpError): void;
  update: ContextUpdate;
  sentAt: number;
}

interface PendingSync {
  resolve(s: ContextSync): void;
  reject(e: McpError): void;
  knownVersion: bigint;
  watch: boolean;
  /** The session's own re-sync after a fresh session: its answer is for the watchers only. */
  internal: boolean;
  sentAt: number;
}

interface PendingPing {
  resolve(): void;
  reject(e: McpError): void;
  id: bigint;
  sentAt: number;
}

interface PendingAuth {
  resolve(r: AuthenticationResult): void;
  reject(e: McpError): void;
  token: string;
  sentAt: number;
}

type Link =
  | { kind: "connecting" }
  | { kind: "open" }
  | { kind: "reconnecting"; attempt: number }
  | { kind: "closed"; error: McpError };

const asIs = (r: Response): Response => r;
/** The options of a call given none (not a fresh `{}` per call). */
const NO_OPTIONS: CallOptions = Object.freeze({});

let nextId = 0;
// Unique within the process and distinct across restarts; computed once, not per call.
const idPrefix = `c${Date.now().toString(36)}-`;
const freshId = () => idPrefix + (++nextId).toString(36);

/**
 * A copy of `init` with `id`. Not `{ ...init, id }`: V8 (Node 20) builds a spread followed by
 * more properties the slow way, ~1 µs per call (measured); Object.assign copies into a fresh
 * object at a tenth of that.
 */
function withId<T extends object>(init: T, id: string): T & { id: string } {
  return Object.assign({}, init, { id });
}

/** Server errors after which coming back cannot help: the session ends with them. */
function endsSession(e: McpError): boolean {
  return !e.retryable && e.code !== "session_expired";
}

/** Why a stream ended, as an McpError: the server's own error when it sent one, else `connection_lost`. */
function streamEndError(reason: unknown): McpError {
  const m = fromConnectError(reason);
  // A reset or cancelled stream is a lost connection here, not a cancelled command.
  if (m !== undefined && m.code !== "cancelled" && m.code !== "timeout") return m;
  const why = reason === undefined ? "the server ended the session stream" : `the session stream broke: ${reason instanceof Error ? reason.message : String(reason)}`;
  return new McpError("connection_lost", why, reason === undefined ? {} : { cause: reason });
}

/** Opens a session over `openStream` and completes its first Handshake. */
export async function openSession(openStream: OpenSessionStream, initialToken: string | undefined, o: SessionOptions): Promise<McpSession> {
  const reconnect: ResolvedReconnectOptions | undefined = o.reconnect === false ? undefined : resolveReconnectOptions(o.reconnect);
  const closeTimeoutMs = o.closeTimeoutMs ?? 2000;
  // By id, entering and leaving at the rate of calls: IdMap, not Map (src/id-map.ts says why).
  const pendingResponses = new IdMap<PendingCommand>();
  const pendingUpdates = new IdMap<PendingUpdate>();
  const pendingSyncs = new Map<string, PendingSync[]>();
  const pendingPings = new Map<bigint, PendingPing>();
  let pendingAuth: PendingAuth | undefined;
  // Responses of commands sent on another stream (`resume.commandIds`), until the caller asks.
  const resumedResponses = new Map<string, Promise<Response>>();
  // Watched contexts and the version their watchers have seen: re-synced from it on a fresh session.
  const watched = new Map<string, bigint>();
  const readers = new Set<Reader<ServerMessage>>();
  const syncReaders = new Set<Reader<ContextSync>>();
  const eventReaders = new Set<Reader<Event>>();
  const stateReaders = new Set<Reader<SessionStateChange>>();

  let token = initialToken;
  let link: Link = { kind: "connecting" };
  let current: SessionStream | undefined;
  /** The stream a SessionClose went on, until the server ends it (close()). */
  let closingStream: { stream: SessionStream; done: () => void } | undefined;
  let handshake: HandshakeResult | undefined;
  /** call() sends `arguments_json` (SessionOptions.jsonText, confirmed by the server). */
  let argumentsAsText = false;
  let sessionId = o.resume?.sessionId ?? "";
  let lastSeq = o.resume?.lastSeq ?? 0n;
  // Messages sent on this session (Handshakes excluded), to compare with the server's count.
  let sent = 0;
  // Places in the queue of messages waiting for a stream (see PendingCommand.sentAt).
  let queued = 0;
  let pingId = 0n;
  let silentTicks = 0;
  let heartbeat: ReturnType<typeof setInterval> | undefined;
  // The server's last error that answered no call: it says why the stream is about to end.
  let lastServerError: McpError | undefined;
  // While resuming a session for the caller (`resume`): what arrived, for readers not yet created.
  let holding: ServerMessage[] | undefined = o.resume === undefined ? undefined : [];
  let attempt: { resolve(h: HandshakeResult): void; reject(e: McpError): void } | undefined;
  let wake: (() => void) | undefined;
  let resolveClosed!: (e: McpError | undefined) => void;
  const closed = new Promise<McpError | undefined>((r) => (resolveClosed = r));

  for (const id of o.resume?.commandIds ?? []) {
    const p = new Promise<Response>((resolve, reject) => {
      pendingResponses.set(id, { resolve: resolve as (v: unknown) => void, reject, map: asIs, onEvent: undefined, command: undefined, batch: undefined, sentAt: 1, resent: false, cancelled: false });
    });
    // Rejected when the session ends; whoever asks with response(id) sees it then.
    p.catch(() => {});
    resumedResponses.set(id, p);
  }

  function setLink(next: Link): void {
    link = next;
  }
  // A function, not `link.kind === "closed"` inline: after an await the compiler's narrowing
  // of `link` is stale (another callback may have closed the session meanwhile).
  const closedError = (): McpError | undefined => (link.kind === "closed" ? link.error : undefined);

  function notify(change: SessionStateChange): void {
    for (const r of stateReaders) r.push(change);
    try {
      o.onStateChange?.(change);
    } catch (e) {
      // The callback's own failure: reported like an uncaught listener error, not swallowed,
      // and without breaking the session's state machine.
      queueMicrotask(() => {
        throw e;
      });
    }
  }

  /** Sends on the live stream and returns the message's index, or queues (returns < 0) while there is none. */
  function sendMessage(m: ClientMessage): number {
    if (link.kind !== "open" || current === undefined) return -++queued;
    current.send(m);
    return ++sent;
  }

  const payload = (message: ClientPayload) => create(ClientMessageSchema, { message });

  /**
   * The stream gets dropped without telling it again (its end callback is ignored from now on).
   * `silent`: dropped because the server went quiet, so its connection is suspect (h2-channel.ts).
   */
  /** Holds taken by holdReading, and the release of the stream they pause. */
  let readHolds = 0;
  let releaseStream: (() => void) | undefined;

  function dropStream(silent = false): void {
    const s = current;
    current = undefined;
    s?.close(silent);
  }

  /** Opens a stream and sends the Handshake; resolves with the HandshakeResult. */
  function handshakeOn(resume: { sessionId: string; lastSeq: bigint } | undefined, timeoutMs: number): Promise<HandshakeResult> {
    lastServerError = undefined;
    return new Promise<HandshakeResult>((resolve, reject) => {
      const timer = setTimeout(() => {
        attempt = undefined;
        dropStream(true);
        reject(new McpError("connection_lost", `no HandshakeResult within ${timeoutMs} ms`));
      }, timeoutMs);
      attempt = {
        resolve(h) {
          clearTimeout(timer);
          attempt = undefined;
          resolve(h);
        },
        reject(e) {
          clearTimeout(timer);
          attempt = undefined;
          dropStream();
          reject(e);
        },
      };
      const s = openStream({
        message(m) {
          if (s === current) onMessage(m);
        },
        end(reason) {
          if (closingStream?.stream === s) closingStream.done();
          if (s !== current) return;
          current = undefined;
          onStreamEnd(reason);
        },
      });
      current = s;
      s.send(
        payload({
          case: "handshake",
          value: {
            protocolVersions: o.protocolVersions ?? [ProtocolVersion.PROTOCOL_VERSION_1_0],
            client: { name: o.clientName ?? "mcp-client-ts", version: VERSION },
            securityLevel: o.securityLevel ?? SecurityLevel.UNSPECIFIED,
            ...(token === undefined ? {} : { token }),
            ...(resume === undefined ? {} : { resume }),
            capabilities: o.jsonText === false ? [] : [OUTPUT_JSON_CAPABILITY],
          },
        }),
      );
    });
  }

  function onStreamEnd(reason: unknown): void {
    const err = lastServerError ?? streamEndError(reason);
    if (attempt !== undefined) return attempt.reject(err);
    if (link.kind === "open") broken(err);
  }

  /** The live stream is gone: come back, or end the session when that cannot help. */
  function broken(err: McpError, silent = false): void {
    dropStream(silent);
    stopHeartbeat();
    if (link.kind === "closed") return;
    if (endsSession(err)) return finish(err);
    // Without reconnecting, a transport error the server named (slow_consumer, overloaded) is the end's reason.
    if (reconnect === undefined) return finish(err.kind === "TRANSPORT" ? err : new McpError("connection_lost", err.message, { cause: err }));
    reconnectLoop(err).catch((e: unknown) => finish(e instanceof McpError ? e : new McpError("connection_lost", String(e), { cause: e })));
  }

  async function reconnectLoop(first: McpError): Promise<void> {
    const r = reconnect!; // broken() checked
    let last = first;
    let fresh = first.code === "session_expired";
    let expired = fresh ? first : undefined;
    // Set after a session_expired answer: the fresh session is tried at once, as the same attempt.
    let immediate = false;
    for (let n = 1; ; n++) {
      if (n > r.maxAttempts) {
        return finish(new McpError("connection_lost", `gave up reconnecting after ${r.maxAttempts} attempts: ${last.message}`, { cause: last }));
      }
      if (!immediate) {
        const delayMs = backoffDelayMs(n, r);
        setLink({ kind: "reconnecting", attempt: n });
        notify({ state: "reconnecting", attempt: n, delayMs, reason: last });
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, delayMs);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        wake = undefined;
        if (closedError() !== undefined) return;
      }
      immediate = false;
      try {
        if (fresh) lastSeq = 0n;
        const h = await handshakeOn(fresh ? undefined : { sessionId, lastSeq }, r.attemptTimeoutMs);
        if (closedError() !== undefined) return dropStream();
        if (fresh || !h.resumed) openedFresh(h, expired);
        else resumed(h);
        return;
      } catch (e) {
        if (closedError() !== undefined) return;
        const err = e instanceof McpError ? e : streamEndError(e);
        if (err.code === "session_expired" && !fresh) {
          // Gone for good on the server: open a fresh session at once (not a failed attempt).
          fresh = true;
          expired = err;
          immediate = true;
          n--;
          last = err;
          continue;
        }
        if (endsSession(err)) return finish(err);
        last = err;
      }
    }
  }

  function startHeartbeat(h: HandshakeResult): void {
    stopHeartbeat();
    silentTicks = 0;
    const interval = o.heartbeatIntervalMs ?? h.limits?.heartbeatIntervalMs ?? 0;
    if (interval === 0) return;
    heartbeat = setInterval(() => {
      if (link.kind !== "open") return;
      // Held by this side: the server's Pongs wait unread, its silence means nothing.
      if (readHolds > 0) {
        silentTicks = 0;
        return;
      }
      // Counted, not timed, like the server: no clock read per message. More than two silent
      // ticks = silent for more than twice the interval (§4 step 6); a live server answers each Ping.
      if (++silentTicks > 2) {
        const said = lastServerError;
        return broken(said !== undefined && endsSession(said) ? said : new McpError("connection_lost", `the server sent nothing for more than ${2 * interval} ms (twice the heartbeat interval)`), true);
      }
      sendMessage(payload({ case: "ping", value: { id: ++pingId } }));
    }, interval);
    heartbeat.unref();
  }

  function stopHeartbeat(): void {
    clearInterval(heartbeat);
    heartbeat = undefined;
  }

  /** Whether a message with index `sentAt` must go (again) on the new stream. */
  const mustSend = (sentAt: number, acked: number | undefined) => sentAt < 0 || acked === undefined || sentAt > acked;
  /** Sort key: sent messages in their order, then the queued ones in theirs. */
  const order = (sentAt: number) => (sentAt > 0 ? sentAt : Number.MAX_SAFE_INTEGER / 2 - sentAt);

  /** The same session continues: send what it did not get, in the original order. */
  function resumed(h: HandshakeResult): void {
    const acked = h.receivedMessages === undefined ? undefined : Number(h.receivedMessages);
    if (acked !== undefined) sent = acked;
    becomeOpen(h);
    const resends: { key: number; go: () => void }[] = [];
    const batches = new Set<SentBatch>();
    const cancels: string[] = [];
    for (const [id, p] of pendingResponses) {
      if (p.cancelled) cancels.push(id);
      if (p.batch !== undefined) {
        if (mustSend(p.batch.sentAt, acked)) batches.add(p.batch);
      } else if (p.command !== undefined && mustSend(p.sentAt, acked)) {
        const command = p.command;
        p.resent ||= acked === undefined && p.sentAt > 0;
        resends.push({ key: order(p.sentAt), go: () => (p.sentAt = sendMessage(payload({ case: "command", value: command }))) });
      }
    }
    for (const b of batches) {
      resends.push({
        key: order(b.sentAt),
        go: () => {
          const still = b.commands.filter((c) => pendingResponses.has(c.id));
          if (acked === undefined && b.sentAt > 0) for (const c of still) pendingResponses.get(c.id)!.resent = true; // has() above
          b.sentAt = sendMessage(payload({ case: "batch", value: { commands: still, mode: b.mode } }));
        },
      });
    }
    collectOthers(resends, acked, false);
    // A server that does not count what it received continued a session parked by another
    // instance: the watches lived there, so they start again here from their known versions.
    if (acked === undefined) resyncWatches(resends);
    resends.sort((a, b) => a.key - b.key);
    for (const r of resends) r.go();
    // A Cancel may have been lost with the stream; cancelling twice is harmless.
    for (const id of cancels) sendMessage(payload({ case: "cancel", value: { commandId: id } }));
    notify({ state: "open", resumed: true, sessionId });
  }

  /** Updates, syncs, pings and a pending authentication that must go (again) on the new stream. */
  function collectOthers(resends: { key: number; go: () => void }[], acked: number | undefined, all: boolean): void {
    for (const p of pendingUpdates.values()) {
      if (all || mustSend(p.sentAt, acked)) resends.push({ key: order(p.sentAt), go: () => (p.sentAt = sendMessage(payload({ case: "update", value: p.update }))) });
    }
    for (const [contextId, list] of pendingSyncs) {
      for (const p of list) {
        if (all || mustSend(p.sentAt, acked)) {
          resends.push({
            key: order(p.sentAt),
            go: () => (p.sentAt = sendMessage(payload({ case: "sync", value: { contextId, knownVersion: p.knownVersion, watch: p.watch } }))),
          });
        }
      }
    }
    for (const p of pendingPings.values()) {
      if (all || mustSend(p.sentAt, acked)) resends.push({ key: order(p.sentAt), go: () => (p.sentAt = sendMessage(payload({ case: "ping", value: { id: p.id } }))) });
    }
    const a = pendingAuth;
    if (a !== undefined && (all || mustSend(a.sentAt, acked))) {
      resends.push({ key: order(a.sentAt), go: () => (a.sentAt = sendMessage(payload({ case: "authentication", value: { token: a.token } }))) });
    }
  }

  /**
   * A new session replaced one that expired while away: what it had received is lost with it, so
   * calls already sent reject (outcome unknown, retryable); queued ones go now; watches re-sync.
   */
  function openedFresh(h: HandshakeResult, expired: McpError | undefined): void {
    const previous = sessionId;
    sent = 0;
    becomeOpen(h);
    const unknown = (what: string) =>
      new McpError("connection_lost", `session ${previous} expired while disconnected: the outcome of this ${what} is unknown; retry it`, {
        cause: expired ?? new McpError("session_expired", `session ${previous} is gone`),
      });
    const resends: { key: number; go: () => void }[] = [];
    const batches = new Set<SentBatch>();
    for (const [id, p] of pendingResponses) {
      const sentAt = p.batch?.sentAt ?? p.sentAt;
      if (sentAt > 0 || (p.command === undefined && p.batch === undefined)) {
        pendingResponses.delete(id);
        p.reject(unknown("command"));
      } else if (p.batch !== undefined) batches.add(p.batch);
      else {
        const command = p.command!; // checked above
        resends.push({ key: order(p.sentAt), go: () => (p.sentAt = sendMessage(payload({ case: "command", value: command }))) });
      }
    }
    for (const b of batches) resends.push({ key: order(b.sentAt), go: () => (b.sentAt = sendMessage(payload({ case: "batch", value: { commands: b.commands, mode: b.mode } }))) });
    for (const [id, p] of pendingUpdates) {
      if (p.sentAt > 0) {
        pendingUpdates.delete(id);
        p.reject(unknown("context update"));
      }
    }
    // Reads and pings are safe to repeat; an authentication is needed on the new session anyway.
    collectOthers(resends, undefined, true);
    resyncWatches(resends);
    resends.sort((a, b) => a.key - b.key);
    for (const r of resends) r.go();
    notify({ state: "open", resumed: false, sessionId, ...(expired === undefined ? {} : { expired }) });
  }

  /** Re-sends a watching StateSync from its known version for every watched context (after the re-sends). */
  function resyncWatches(resends: { key: number; go: () => void }[]): void {
    for (const [contextId, known] of watched) {
      if ((pendingSyncs.get(contextId) ?? []).some((p) => p.watch)) continue; // re-sent with the others
      const p: PendingSync = { resolve: () => {}, reject: () => {}, knownVersion: known, watch: true, internal: true, sentAt: 0 };
      const list = pendingSyncs.get(contextId) ?? [];
      list.push(p);
      pendingSyncs.set(contextId, list);
      resends.push({ key: Number.MAX_SAFE_INTEGER, go: () => (p.sentAt = sendMessage(payload({ case: "sync", value: { contextId, knownVersion: known, watch: true } }))) });
    }
  }

  function becomeOpen(h: HandshakeResult): void {
    handshake = h;
    // Only a server that confirmed it reads arguments_json: an older one would see no arguments.
    argumentsAsText = h.capabilities.includes(OUTPUT_JSON_CAPABILITY);
    sessionId = h.sessionId;
    setLink({ kind: "open" });
    startHeartbeat(h);
    // A new stream starts unpaused (its HandshakeResult had to come through): pause it now.
    releaseStream = readHolds > 0 ? current?.hold?.() : undefined;
  }

  /** Closed for good: every pending call rejects with `error`, readers end. */
  function finish(error: McpError | undefined): void {
    if (link.kind === "closed") return;
    const err = error ?? new McpError("cancelled", "the session was closed by this client");
    setLink({ kind: "closed", error: err });
    o.signal?.removeEventListener("abort", onAbort);
    stopHeartbeat();
    wake?.();
    attempt?.reject(err);
    dropStream();
    for (const p of pendingResponses.values()) p.reject(err);
    pendingResponses.clear();
    for (const p of pendingUpdates.values()) p.reject(err);
    pendingUpdates.clear();
    for (const list of pendingSyncs.values()) for (const p of list) p.reject(err);
    pendingSyncs.clear();
    for (const p of pendingPings.values()) p.reject(err);
    pendingPings.clear();
    pendingAuth?.reject(err);
    pendingAuth = undefined;
    holding = undefined;
    notify({ state: "closed", error });
    for (const r of readers) r.end();
    for (const r of syncReaders) r.end();
    for (const r of eventReaders) r.end();
    for (const r of stateReaders) r.end();
    resolveClosed(error);
  }

  function onMessage(m: ServerMessage): void {
    silentTicks = 0;
    const seq = m.seq;
    if (seq !== 0n) {
      // Seen already (a replay overlapping what arrived): once each, in order (§4 step 5).
      if (seq <= lastSeq) return;
      lastSeq = seq;
    }
    // Held: the replay (numbered). Not held: the answer to the Handshake — a HandshakeResult, or
    // an unnumbered Error refusing it.
    if (holding !== undefined && seq !== 0n && m.message.case !== "handshakeResult") {
      holding.push(m);
      return;
    }
    dispatch(m);
  }

  function dispatch(m: ServerMessage): void {
    const msg = m.message;
    // Every reader — messages(), execute(), batch(), the bridge — sees JSON as `output`.
    if (msg.case === "response" && msg.value.result.case === "outputJson") msg.value.result = outputFromText(msg.value.result.value);
    if (readers.size > 0) for (const r of readers) r.push(m);
    switch (msg.case) {
      case "handshakeResult":
        attempt?.resolve(msg.value);
        return;
      case "response": {
        const r = msg.value;
        const p = pendingResponses.get(r.commandId);
        if (p === undefined) return;
        // The server had the re-sent command already: its real Response is still to come.
        if (p.resent && r.result.case === "error" && r.result.value.code === "duplicate_command_id") return;
        pendingResponses.delete(r.commandId);
        let value: unknown;
        try {
          value = p.map(r);
        } catch (e) {
          p.reject(e);
          return;
        }
        p.resolve(value);
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
        const s = msg.value;
        const id = s.contextId;
        const p = pendingSyncs.get(id)?.shift();
        if (p !== undefined) {
          if (p.watch) watched.set(id, watched.get(id) ?? p.knownVersion);
          else watched.delete(id);
          p.resolve(s);
        }
        const known = watched.get(id);
        if (known !== undefined) {
          // Nothing new for the watchers (the re-sync of a fresh session found no change).
          if (!s.full && s.toVersion <= known && (p === undefined || p.internal)) return;
          if (s.full || s.toVersion > known) watched.set(id, s.toVersion);
        }
        for (const r of syncReaders) r.push(s);
        return;
      }
      case "authenticationResult": {
        const a = pendingAuth;
        if (a === undefined) return;
        pendingAuth = undefined;
        token = a.token;
        a.resolve(msg.value);
        return;
      }
      case "pong": {
        const p = pendingPings.get(msg.value.id);
        if (p === undefined) return;
        pendingPings.delete(msg.value.id);
        p.resolve();
        return;
      }
      case "error": {
        const err = fromProtoError(msg.value);
        if (attempt !== undefined) return attempt.reject(err);
        if (err.details.contextId !== undefined) {
          const list = pendingSyncs.get(err.details.contextId);
          const p = list?.shift();
          if (p !== undefined) {
            if (p.watch && !p.internal) watched.delete(err.details.contextId);
            return p.reject(err);
          }
        }
        if (pendingAuth !== undefined && err.kind === "SECURITY") {
          const a = pendingAuth;
          pendingAuth = undefined;
          return a.reject(err);
        }
        // A revoked session or token ends the session on the server (§5); resuming cannot help.
        if (err.code === "token_revoked") return finish(err);
        lastServerError = err;
        return;
      }
    }
  }

  const onAbort = () => finish(undefined);
  o.signal?.addEventListener("abort", onAbort, { once: true });

  let first: HandshakeResult;
  try {
    if (o.signal?.aborted === true) throw new McpError("cancelled", "the session's AbortSignal was already aborted");
    first = await handshakeOn(o.resume === undefined ? undefined : { sessionId: o.resume.sessionId, lastSeq: o.resume.lastSeq }, reconnect?.attemptTimeoutMs ?? 10_000);
  } catch (e) {
    const err = e instanceof McpError ? e : streamEndError(e);
    finish(err);
    throw err;
  }
  const refused = closedError();
  if (refused !== undefined) throw refused;
  if (o.resume !== undefined) {
    if (first.receivedMessages !== undefined) sent = Number(first.receivedMessages);
    // Replayed messages go out once the caller had the session and could create its readers.
    const held = holding ?? [];
    setImmediate(() => {
      holding = undefined;
      for (const m of held) {
        if (link.kind === "closed") break;
        dispatch(m);
      }
    });
  }
  becomeOpen(first);
  notify({ state: "open", resumed: first.resumed, sessionId });

  function execute(command: MessageInitShape<typeof CommandSchema>, co: Omit<CallOptions, "id" | "timeoutMs"> = {}): Promise<Response> {
    const id = command.id !== undefined && command.id !== "" ? command.id : freshId();
    return start(create(CommandSchema, withId(command, id)), co, asIs);
  }

  /** Sends a command; the promise gets `map(response)` — one promise per command, no `.then` hop. */
  function start<T>(command: Command, co: Omit<CallOptions, "id" | "timeoutMs">, map: (r: Response) => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (link.kind === "closed") return reject(link.error);
      const id = command.id;
      const p: PendingCommand = { resolve: resolve as (v: unknown) => void, reject, map, onEvent: co.onEvent, command, batch: undefined, sentAt: 0, resent: false, cancelled: false };
      pendingResponses.set(id, p);
      if (co.signal !== undefined) co.signal.addEventListener("abort", () => cancel(id), { once: true });
      p.sentAt = sendMessage({ $typeName: "mcp.v1.ClientMessage", message: { case: "command", value: command } } satisfies ClientMessage);
    });
  }

  function cancel(commandId: string): void {
    const p = pendingResponses.get(commandId);
    if (p !== undefined) p.cancelled = true;
    if (link.kind === "open") sendMessage(payload({ case: "cancel", value: { commandId } }));
  }

  const refuseIfClosed = (): Promise<never> | undefined => (link.kind === "closed" ? Promise.reject(link.error) : undefined);

  return {
    get sessionId() {
      return sessionId;
    },
    get handshake() {
      return handshake ?? first;
    },
    get lastSeq() {
      return lastSeq;
    },
    get state() {
      return link.kind;
    },
    stateChanges() {
      return createReader(stateReaders, link.kind === "closed");
    },
    call(tool, args = {}, co = NO_OPTIONS) {
      // A literal, not create(): every field is given, and this runs once per call (hot path).
      const command: Command = {
        $typeName: "mcp.v1.Command",
        id: co.id ?? freshId(),
        tool,
        payload: argumentsAsText ? { case: "argumentsJson", value: JSON.stringify(args) } : { case: "arguments", value: args },
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
      const refused = refuseIfClosed();
      if (refused !== undefined) return refused;
      const withIds = commands.map((c) => create(CommandSchema, withId(c, c.id !== undefined && c.id !== "" ? c.id : freshId())));
      const b: SentBatch = { commands: withIds, mode, sentAt: 0 };
      const promises = withIds.map(
        (c) =>
          new Promise<Response>((resolve, reject) =>
            pendingResponses.set(c.id, { resolve: resolve as (v: unknown) => void, reject, map: asIs, onEvent: undefined, command: undefined, batch: b, sentAt: 0, resent: false, cancelled: false }),
          ),
      );
      b.sentAt = sendMessage(payload({ case: "batch", value: { commands: withIds, mode } }));
      return Promise.all(promises);
    },
    response(commandId) {
      const p = resumedResponses.get(commandId);
      if (p === undefined) return Promise.reject(new TypeError(`command "${commandId}" was not listed in resume.commandIds (or its Response was already taken)`));
      resumedResponses.delete(commandId);
      return p;
    },
    get pendingCommandIds() {
      return [...pendingResponses.keys()];
    },
    cancel,
    update(update) {
      const refused = refuseIfClosed();
      if (refused !== undefined) return refused;
      const id = update.id !== undefined && update.id !== "" ? update.id : freshId();
      return new Promise((resolve, reject) => {
        const u: ContextUpdate = create(ContextUpdateSchema, withId(update, id));
        const p: PendingUpdate = { resolve, reject, update: u, sentAt: 0 };
        pendingUpdates.set(id, p);
        // A literal around it, not create(): once per update (hot path).
        p.sentAt = sendMessage({ $typeName: "mcp.v1.ClientMessage", message: { case: "update", value: u } } satisfies ClientMessage);
      });
    },
    sync(contextId, knownVersion = 0n, watch = false) {
      const refused = refuseIfClosed();
      if (refused !== undefined) return refused;
      return new Promise((resolve, reject) => {
        const p: PendingSync = { resolve, reject, knownVersion, watch, internal: false, sentAt: 0 };
        const list = pendingSyncs.get(contextId) ?? [];
        list.push(p);
        pendingSyncs.set(contextId, list);
        p.sentAt = sendMessage(payload({ case: "sync", value: { contextId, knownVersion, watch } }));
      });
    },
    contextSyncs() {
      return createReader(syncReaders, link.kind === "closed");
    },
    authenticate(newToken) {
      const refused = refuseIfClosed();
      if (refused !== undefined) return refused;
      return new Promise((resolve, reject) => {
        pendingAuth?.reject(new McpError("cancelled", "a newer authenticate() replaced this one"));
        const a: PendingAuth = { resolve, reject, token: newToken, sentAt: 0 };
        pendingAuth = a;
        a.sentAt = sendMessage(payload({ case: "authentication", value: { token: newToken } }));
      });
    },
    ping() {
      const refused = refuseIfClosed();
      if (refused !== undefined) return refused;
      const id = ++pingId;
      const started = performance.now();
      return new Promise((resolve, reject) => {
        const p: PendingPing = { resolve: () => resolve(performance.now() - started), reject, id, sentAt: 0 };
        pendingPings.set(id, p);
        p.sentAt = sendMessage(payload({ case: "ping", value: { id } }));
      });
    },
    send(message) {
      if (link.kind === "closed") throw link.error;
      sendMessage(payload(message));
    },
    holdReading() {
      if (link.kind === "closed") return () => {};
      if (readHolds++ === 0) releaseStream = link.kind === "open" ? current?.hold?.() : undefined;
      let released = false;
      return () => {
        if (released) return;
        released = true;
        if (--readHolds > 0) return;
        const r = releaseStream;
        releaseStream = undefined;
        r?.();
      };
    },
    messages() {
      return createReader(readers, link.kind === "closed");
    },
    events() {
      return createReader(eventReaders, link.kind === "closed");
    },
    callChunks(this: McpSession, tool: string, args: JsonObject = {}, co: ChunkStreamOptions = {}) {
      return callChunks(this, tool, args, co);
    },
    upload(this: McpSession, tool: string, args: JsonObject, source: AsyncIterable<Uint8Array> | Uint8Array, co: ChunkUploadOptions = {}) {
      return uploadChunks(this, { tool, payload: { case: "arguments", value: args } }, source, co);
    },
    closed,
    close(co = {}) {
      const s = link.kind === "open" && co.resumable !== true ? current : undefined;
      if (s === undefined) {
        finish(undefined);
        return Promise.resolve();
      }
      // Taken off the session first, so finish() leaves it open for the SessionClose to go out.
      current = undefined;
      s.send(payload({ case: "close", value: {} }));
      finish(undefined);
      return new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          closingStream = undefined;
          s.close();
          resolve();
        };
        const timer = setTimeout(done, closeTimeoutMs);
        timer.unref();
        closingStream = { stream: s, done };
      });
    },
  };
}

/** A Response's JSON output; its error as the McpError. */
export function outputOf(r: Response): JsonObject {
  switch (r.result.case) {
    case "output":
      return r.result.value;
    case "outputJson":
      return parseJsonObject(r.result.value, "output_json", "invalid_message");
    case "error":
      throw fromProtoError(r.result.value);
    case "typedOutput":
      throw new TypeError(`command ${r.commandId} returned a typed output (${r.result.value.typeUrl}); use execute() for typed tools`);
    default:
      return {};
  }
}

/** An `output_json` answer as the `output` it stands for; text that is no JSON object is a PROTOCOL `invalid_message` error. */
function outputFromText(text: string): Response["result"] {
  try {
    return { case: "output", value: parseJsonObject(text, "output_json", "invalid_message") };
  } catch (e) {
    return { case: "error", value: toProtoError(toMcpError(e)) };
  }
}
