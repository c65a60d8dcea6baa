/**
 * One server's telemetry: its metrics registry, its logger and its spans, behind the few calls
 * the core and the transports make (`commandObserver`, `streamOpened`, `failed`, …). Everything
 * counted per command is a plain number (command-stats.ts); everything else is counted per
 * session, per stream or per refusal, never per message.
 */
import { SpanKind, SpanStatusCode, context as otelContext, trace, type Context, type Span } from "@opentelemetry/api";
import type { Command, Response } from "../../gen/mcp/v1/command_pb.js";
import type { ContextStore } from "../context/store.js";
import { ERROR_TABLE, isMcpError, isMcpErrorCode, type McpError } from "../errors.js";
import type { AuthState } from "../session/session.js";
import { CommandStats, type ToolStats } from "./command-stats.js";
import { createLogger, type Logger } from "./logger.js";
import { EventCounters, createServerMetrics, type MetricSources, type ServerMetrics } from "./metrics.js";
import { contextFromTraceparent, serverTracer, tracingActive } from "./tracing.js";

/** Options of `createTelemetry`. */
export interface TelemetryOptions {
  /**
   * The logger (createLogger).
   * @default a logger writing nothing
   */
  logger?: Logger;
  /**
   * A command running at least this long is logged, in milliseconds.
   * @default 1000
   */
  slowCommandMs?: number;
  /**
   * Whether a tool name is registered; other names are counted under `_unknown`.
   * @default every name is known
   */
  isKnownTool?: (name: string) => boolean;
  /**
   * Distinct tool labels at most; tools beyond it are counted as `_other`.
   * @default 100
   */
  maxToolLabels?: number;
  /**
   * Register prom-client's default process metrics (CPU, memory, event-loop lag, GC).
   * @default false
   */
  processMetrics?: boolean;
  /**
   * The clock, epoch ms.
   * @default Date.now
   */
  now?: () => number;
}

/** Who a session or request acts for and where it came from, as the log shows it. */
export interface PeerFacts {
  /** The client's address. */
  remoteAddress?: string | undefined;
  /** The RPC protocol: `grpc`, `grpc-web` or `connect`. */
  protocol?: string | undefined;
  /** The W3C `traceparent` header of the RPC. */
  traceparent?: string | null | undefined;
  /** The W3C `tracestate` header of the RPC. */
  tracestate?: string | null | undefined;
}

/** The identity of a session (structural: the core's `Session`). */
export interface SessionFacts {
  readonly id: string;
  readonly auth: AuthState;
  readonly closeReason?: McpError | undefined;
  readonly createdAt: number;
}

/** Observes the commands of one runner (a session's, or a unary request's). */
export interface CommandObserver {
  /** A command passed its checks and runs; returns its span when tracing. */
  started(command: Command): Span | undefined;
  /** A started command got its Response. */
  settled(tool: string, response: Response, span: Span | undefined): void;
  /** A command was answered before it ran (unknown tool, refused, overloaded, …). */
  refused(tool: string, response: Response): void;
}

/** A stream attached to a session; `ended` once, with why. */
export interface StreamObservation {
  ended(reason: string): void;
}

/** The server's telemetry. */
export interface Telemetry {
  readonly metrics: ServerMetrics;
  readonly logger: Logger;
  readonly stats: CommandStats;
  readonly counters: EventCounters;
  /** When the server started, epoch ms. */
  readonly startedAt: number;
  /** Commands running now. */
  readonly inflight: number;
  /** Context watches open now. */
  readonly watchers: number;
  /** Open connections now (0 until `setSources`). */
  readonly connections: number;
  /** The kind of the instrumented store (`memory`, `sqlite`, `redis`), once `instrumentStore` ran. */
  readonly storeKind: string;
  /** Sets where scrape-time values come from (the server, once listening). */
  setSources(sources: Omit<MetricSources, "inflight" | "watchers">): void;
  /** The observer of one runner's commands. */
  commandObserver(sessionId: string | undefined, getAuth: () => AuthState): CommandObserver;
  /** A stream completed its Handshake (new session or resume). */
  streamOpened(session: SessionFacts, peer: PeerFacts, resumed: boolean, replayed: number): StreamObservation;
  /** A session closed for good (expired, revoked, shut down). */
  sessionClosed(session: SessionFacts): void;
  /** A session's stream was dropped with `err` (slow consumer, fatal protocol error). */
  sessionDropped(session: SessionFacts, err: McpError): void;
  /** A token was refused. */
  tokenRefused(err: McpError, peer?: PeerFacts): void;
  /** A connection was refused with too_many_connections. */
  connectionRefused(remoteAddress: string | undefined): void;
  /** An error other than a command's was sent to a client (counted by kind and code). */
  failed(reason: unknown): void;
  /** A ContextUpdate was applied here. */
  contextUpdated(): void;
  /** Counts a watch while it is open. */
  watched<T>(watch: AsyncIterable<T>): AsyncIterable<T>;
  /** Counts one watch delivered into a sink as open; call the returned function (once or more) when it ends. */
  watching(): () => void;
  /** The store with its operations timed (and traced when tracing). */
  instrumentStore(store: ContextStore, kind: string): ContextStore;
  /** Flushes the log. */
  close(): Promise<void>;
}

const quiet = createLogger({ level: "silent", stream: { write: () => {} } });

/** Creates a server's telemetry. */
export function createTelemetry(options: TelemetryOptions = {}): Telemetry {
  const logger = options.logger ?? quiet;
  const now = options.now ?? Date.now;
  const slowMs = options.slowCommandMs ?? 1000;
  const stats = new CommandStats(options.isKnownTool ?? (() => true), options.maxToolLabels ?? 100);
  const counters = new EventCounters();
  let sources: Omit<MetricSources, "inflight" | "watchers"> | undefined;
  let watchers = 0;
  let storeKind = "unknown";
  /** The span context of each session's attached stream, parent of its commands (tracing only). */
  const sessionSpans = new Map<string, Context>();
  const tracer = serverTracer();

  const state = { running: 0 };
  const metrics = createServerMetrics(
    stats,
    counters,
    () =>
      sources === undefined
        ? undefined
        : { ...sources, inflight: () => state.running, watchers: () => watchers },
    { processMetrics: options.processMetrics ?? false },
  );

  function principalOf(auth: AuthState): string | undefined {
    return auth.principal?.subject;
  }

  /** Ends a command's span with its outcome. */
  function endSpan(span: Span, response: Response): void {
    const r = response.result;
    if (r.case === "error") {
      span.setAttribute("mcp.error.code", r.value.code);
      span.setStatus({ code: SpanStatusCode.ERROR, message: r.value.message });
    }
    span.end();
  }

  class Observer implements CommandObserver {
    private readonly tracing = tracingActive();
    constructor(
      private readonly sessionId: string | undefined,
      private readonly getAuth: () => AuthState,
    ) {}

    started(command: Command): Span | undefined {
      state.running++;
      if (!this.tracing) return undefined;
      const parent =
        contextFromTraceparent(command.traceparent, command.tracestate) ??
        (this.sessionId === undefined ? undefined : sessionSpans.get(this.sessionId)) ??
        otelContext.active();
      return tracer.startSpan(
        `mcp.command ${command.tool}`,
        {
          kind: SpanKind.SERVER,
          attributes: {
            "mcp.tool": command.tool,
            "mcp.command.id": command.id,
            ...(this.sessionId === undefined ? {} : { "mcp.session.id": this.sessionId }),
          },
        },
        parent,
      );
    }

    settled(tool: string, response: Response, span: Span | undefined): void {
      state.running--;
      this.record(stats.toolFor(tool), response);
      if (span !== undefined) endSpan(span, response);
    }

    refused(tool: string, response: Response): void {
      this.record(stats.toolFor(tool), response);
    }

    private record(t: ToolStats, response: Response): void {
      const r = response.result;
      const ms = response.durationMs;
      if (r.case === "error") {
        stats.failed(t, r.value.code, ms);
        logger.warn(
          {
            event: "command.failed",
            sessionId: this.sessionId,
            commandId: response.commandId,
            principal: principalOf(this.getAuth()),
            tool: t.tool,
            kind: isMcpErrorCode(r.value.code) ? ERROR_TABLE[r.value.code].kind : undefined,
            code: r.value.code,
            durationMs: ms,
          },
          `command failed: ${r.value.message}`,
        );
        return;
      }
      stats.ok(t, ms);
      if (ms >= slowMs) {
        logger.warn(
          { event: "command.slow", sessionId: this.sessionId, commandId: response.commandId, principal: principalOf(this.getAuth()), tool: t.tool, durationMs: ms },
          "command ran past the slow threshold",
        );
      }
    }
  }

  function countError(code: string): void {
    stats.error(code);
  }

  return {
    metrics,
    logger,
    stats,
    counters,
    startedAt: now(),
    get inflight() {
      return state.running;
    },
    get watchers() {
      return watchers;
    },
    get connections() {
      return sources?.connections() ?? 0;
    },
    get storeKind() {
      return storeKind;
    },
    setSources(s) {
      sources = s;
    },
    commandObserver: (sessionId, getAuth) => new Observer(sessionId, getAuth),

    streamOpened(session, peer, resumed, replayed) {
      const started = now();
      counters.sessionsStarted++;
      if (resumed) {
        counters.resumes++;
        counters.resumedMessages += replayed;
      }
      const fields = {
        sessionId: session.id,
        principal: principalOf(session.auth),
        remoteAddress: peer.remoteAddress,
        protocol: peer.protocol,
      };
      logger.info({ event: "session.start", ...fields, resumed, ...(resumed ? { replayed } : {}) }, resumed ? "session resumed" : "session started");
      let span: Span | undefined;
      let spanContext: Context | undefined;
      if (tracingActive()) {
        const parent = contextFromTraceparent(peer.traceparent, peer.tracestate) ?? otelContext.active();
        span = tracer.startSpan("mcp.session", { kind: SpanKind.SERVER, attributes: { "mcp.session.id": session.id, "mcp.session.resumed": resumed } }, parent);
        spanContext = trace.setSpan(parent, span);
        sessionSpans.set(session.id, spanContext);
      }
      let done = false;
      return {
        ended(reason) {
          if (done) return;
          done = true;
          logger.info({ event: "session.end", ...fields, principal: principalOf(session.auth), durationMs: now() - started, reason }, "session stream ended");
          if (span !== undefined) {
            span.setAttribute("mcp.session.end_reason", reason);
            span.end();
            // A resume on another stream may already have put its own span there.
            if (sessionSpans.get(session.id) === spanContext) sessionSpans.delete(session.id);
          }
        },
      };
    },

    sessionClosed(session) {
      const reason = session.closeReason;
      logger.info(
        {
          event: "session.closed",
          sessionId: session.id,
          principal: principalOf(session.auth),
          reason: reason?.code,
          ageMs: now() - session.createdAt,
        },
        `session closed: ${reason?.message ?? "no reason"}`,
      );
    },

    sessionDropped(session, err) {
      if (err.code === "slow_consumer") counters.slowConsumerDrops++;
      countError(err.code);
      logger.warn({ event: "session.dropped", sessionId: session.id, principal: principalOf(session.auth), code: err.code }, `stream dropped: ${err.message}`);
    },

    tokenRefused(err, peer) {
      counters.refusedTokens.set(err.code, (counters.refusedTokens.get(err.code) ?? 0) + 1);
      logger.warn(
        { event: "token.refused", code: err.code, remoteAddress: peer?.remoteAddress, protocol: peer?.protocol },
        `token refused: ${err.message}`,
      );
    },

    connectionRefused(remoteAddress) {
      counters.refusedConnections++;
      countError("too_many_connections");
      logger.warn({ event: "connection.refused", code: "too_many_connections", remoteAddress }, "connection refused: at the connection limit");
    },

    failed(reason) {
      if (isMcpError(reason)) countError(reason.code);
    },

    contextUpdated() {
      counters.contextUpdates++;
    },

    watched<T>(watch: AsyncIterable<T>): AsyncIterable<T> {
      // An iterator passing each next() through, not an async generator with `yield*`: that cost
      // every change several promise hops per watcher (a fan-out to 1,000 watchers, bench/scale.ts).
      return {
        [Symbol.asyncIterator]() {
          const it = watch[Symbol.asyncIterator]();
          let open = true;
          watchers++;
          const over = () => {
            if (open) {
              open = false;
              watchers--;
            }
          };
          const counted = (r: IteratorResult<T>) => {
            if (r.done === true) over();
            return r;
          };
          const failed = (e: unknown) => {
            over();
            throw e;
          };
          return {
            next: () => it.next().then(counted, failed),
            return: (value?: unknown) => {
              over();
              // A source without return() is simply done; the cast only restates that result's type.
              return it.return === undefined ? Promise.resolve({ done: true, value } as IteratorResult<T>) : it.return(value);
            },
          };
        },
      };
    },

    watching() {
      watchers++;
      let open = true;
      return () => {
        if (open) {
          open = false;
          watchers--;
        }
      };
    },

    instrumentStore(store, kind) {
      storeKind = kind;
      store.subscribe((e) => {
        if (e.kind === "change") counters.contextChanges++;
      });
      // Runs on every context update: one `.then` on the store's own promise (no async frame),
      // the duration into a plain cell (metrics.ts reads it when scraped), a span only while
      // tracing is on.
      const timed = <A extends unknown[], R>(operation: string, fn: (...args: A) => Promise<R>) => {
        const cell = metrics.storeDuration(kind, operation);
        return (...args: A): Promise<R> => {
          const span = tracingActive() ? tracer.startSpan(`mcp.store ${operation}`, { kind: SpanKind.CLIENT, attributes: { "db.system": kind, "mcp.store.operation": operation } }) : undefined;
          const t0 = performance.now();
          let running: Promise<R>;
          try {
            running = fn(...args);
          } catch (e) {
            running = Promise.reject(e);
          }
          return running.then(
            (r) => {
              cell.observe(performance.now() - t0);
              span?.end();
              return r;
            },
            (e: unknown) => {
              cell.observe(performance.now() - t0);
              span?.setStatus({ code: SpanStatusCode.ERROR, message: e instanceof Error ? e.message : String(e) });
              span?.end();
              throw e;
            },
          );
        };
      };
      // Spread first: operations this wrapper does not time still reach the store.
      return {
        ...store,
        apply: timed("apply", (w) => store.apply(w)),
        snapshot: timed("snapshot", (id) => store.snapshot(id)),
        changesSince: timed("changes_since", (id, v) => store.changesSince(id, v)),
        countContexts: timed("count_contexts", () => store.countContexts()),
        ping: timed("ping", () => store.ping()),
        subscribe: (listener) => store.subscribe(listener),
        close: () => store.close(),
      };
    },

    async close() {
      await new Promise<void>((resolve) => {
        logger.flush(() => resolve());
      });
    },
  };
}

/** The context operations of the core (structural, to keep this module free of the core's imports). */
interface ContextOperations {
  getContext(...args: never[]): Promise<unknown>;
  updateContext(...args: never[]): Promise<unknown>;
  syncContext(...args: never[]): Promise<unknown>;
  watchContext(...args: never[]): AsyncIterable<unknown>;
  watchContextInto(auth: never, sync: never, signal: never, sink: EndingSink): () => void;
}

/** What the wrapper needs of a watch's sink (ContextManager's WatchSink). */
interface EndingSink {
  deliver(sync: never): boolean;
  writable(): Promise<void>;
  end(error?: unknown): void;
}

/**
 * Wraps the core's context operations in place: failures count in `mcp_errors_total`, applied
 * updates in `mcp_context_updates_total`, open watches in `mcp_context_watchers`. Returns `core`.
 */
export function observeContextOperations<C extends ContextOperations>(telemetry: Telemetry, core: C): C {
  const counted = (e: unknown): never => {
    telemetry.failed(e);
    throw e;
  };
  const { getContext, updateContext, syncContext, watchContext, watchContextInto } = core;
  // Each wrapper keeps the original's signature; the casts only restate it.
  core.getContext = ((...args: never[]) => getContext.apply(core, args).catch(counted)) as C["getContext"];
  core.updateContext = ((...args: never[]) =>
    updateContext.apply(core, args).then((r) => {
      telemetry.contextUpdated();
      return r;
    }, counted)) as C["updateContext"];
  core.syncContext = ((...args: never[]) => syncContext.apply(core, args).catch(counted)) as C["syncContext"];
  core.watchContext = ((...args: never[]) => {
    try {
      return telemetry.watched(watchContext.apply(core, args));
    } catch (e) {
      return counted(e);
    }
  }) as C["watchContext"];
  core.watchContextInto = ((auth: never, sync: never, signal: never, sink: EndingSink) => {
    let ended: (() => void) | undefined;
    // Only its end is wrapped, to count the watch out.
    const counting: EndingSink = {
      deliver: (s) => sink.deliver(s),
      writable: () => sink.writable(),
      end(error) {
        ended?.();
        sink.end(error);
      },
    };
    try {
      const stop = watchContextInto.call(core, auth, sync, signal, counting);
      ended = telemetry.watching();
      return stop;
    } catch (e) {
      return counted(e);
    }
  }) as C["watchContextInto"];
  return core;
}
