/**
 * The server's Prometheus metrics (prom-client), in a registry of its own per server, so two
 * servers in one process do not collide. Values the server already holds — sessions,
 * connections, bytes, per-tool statistics — are read when scraped (`collect`), not maintained
 * per message; see docs/observability.md for every series.
 */
import { Counter, Gauge, Registry, collectDefaultMetrics, type Metric } from "prom-client";
import { CommandStats, DURATION_BUCKETS_SECONDS, DurationCell } from "./command-stats.js";

/** Bytes a connection protocol carried (`h2` or `http1`), from the listener's sockets. */
export interface TrafficTotals {
  readonly protocol: string;
  readonly received: number;
  readonly sent: number;
}

/** What the metrics read at scrape time. */
export interface MetricSources {
  sessions(): { connected: number; detached: number };
  connections(): number;
  traffic(): readonly TrafficTotals[];
  inflight(): number;
  watchers(): number;
}

/** Plain counters the server bumps (none of them per message). */
export class EventCounters {
  contextUpdates = 0;
  contextChanges = 0;
  resumes = 0;
  resumedMessages = 0;
  slowConsumerDrops = 0;
  refusedConnections = 0;
  readonly refusedTokens = new Map<string, number>();
  sessionsStarted = 0;
}

/** The registry and the instruments written outside the scrape. */
export interface ServerMetrics {
  /** This server's own series. */
  readonly registry: Registry;
  /** The text exposition: this server's series plus, when enabled, the process's. */
  scrape(): Promise<string>;
  /** The exposition's content type. */
  readonly contentType: string;
  /**
   * The cell that store operation `operation` of a `store` kind is timed into, in ms: plain
   * numbers on every context update, read when scraped (like the command durations).
   */
  storeDuration(store: string, operation: string): DurationCell;
}

/** Upper bounds of the store operation histogram, in seconds (Prometheus `le`). */
const STORE_BUCKETS_SECONDS: readonly number[] = [0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5];
const STORE_BUCKETS_MS = STORE_BUCKETS_SECONDS.map((s) => s * 1000);

/** Builds the registry over `stats`, `counters` and `sources`. */
export function createServerMetrics(
  stats: CommandStats,
  counters: EventCounters,
  sources: () => MetricSources | undefined,
  options: { processMetrics: boolean },
): ServerMetrics {
  const registry = new Registry();

  const gauge = (name: string, help: string, labelNames: string[], read: (g: Gauge) => void) =>
    new Gauge({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        read(this);
      },
    });
  // A counter whose total lives elsewhere: reset, then set to the total at each scrape.
  const counter = (name: string, help: string, labelNames: string[], read: (set: (labels: Record<string, string>, v: number) => void) => void) =>
    new Counter({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        this.reset();
        read((labels, v) => this.inc(labels, v));
      },
    });

  gauge("mcp_sessions", "Sessions held by this instance, by state (connected: a stream is attached; detached: kept for resume).", ["state"], (g) => {
    const s = sources()?.sessions() ?? { connected: 0, detached: 0 };
    g.set({ state: "connected" }, s.connected);
    g.set({ state: "detached" }, s.detached);
  });
  gauge("mcp_connections", "Open TCP connections.", [], (g) => g.set(sources()?.connections() ?? 0));
  gauge("mcp_commands_inflight", "Commands running now (streams and unary RPCs).", [], (g) => g.set(sources()?.inflight() ?? 0));
  gauge("mcp_context_watchers", "Context watches open now (stream StateSync with watch, WatchContext).", [], (g) => g.set(sources()?.watchers() ?? 0));

  counter("mcp_commands_total", "Commands that got their Response, by tool and outcome code (ok or the error code).", ["tool", "code"], (set) => {
    for (const t of stats.tools.values()) {
      if (t.ok.count > 0) set({ tool: t.tool, code: "ok" }, t.ok.count);
      for (const [code, cell] of t.failed) set({ tool: t.tool, code }, cell.count);
    }
  });
  counter("mcp_errors_total", "Errors sent to clients, by kind and code (PROTOCOL.md §7).", ["kind", "code"], (set) => {
    for (const [code, n] of stats.errorsByCode) set({ kind: CommandStats.kindOf(code), code }, n);
  });
  counter("mcp_sessions_started_total", "Streams that completed a Handshake (new sessions and resumes).", [], (set) => set({}, counters.sessionsStarted));
  counter("mcp_context_updates_total", "ContextUpdates this instance applied (each made one new version).", [], (set) => set({}, counters.contextUpdates));
  counter(
    "mcp_context_versions_total",
    "Context versions this instance heard of from its store, its own and (with a shared store) other instances'.",
    [],
    (set) => set({}, counters.contextChanges),
  );
  counter("mcp_resume_replays_total", "Resumed sessions (Handshake.resume accepted).", [], (set) => set({}, counters.resumes));
  counter("mcp_resume_replayed_messages_total", "Messages replayed to resumed sessions.", [], (set) => set({}, counters.resumedMessages));
  counter("mcp_slow_consumer_drops_total", "Streams dropped with slow_consumer.", [], (set) => set({}, counters.slowConsumerDrops));
  counter("mcp_refused_connections_total", "Connections refused with too_many_connections.", [], (set) => set({}, counters.refusedConnections));
  counter("mcp_refused_tokens_total", "Tokens refused, by error code.", ["code"], (set) => {
    for (const [code, n] of counters.refusedTokens) set({ code }, n);
  });
  counter("mcp_received_bytes_total", "Bytes received, by connection protocol (h2, http1).", ["protocol"], (set) => {
    for (const t of sources()?.traffic() ?? []) set({ protocol: t.protocol }, t.received);
  });
  counter("mcp_sent_bytes_total", "Bytes sent, by connection protocol (h2, http1).", ["protocol"], (set) => {
    for (const t of sources()?.traffic() ?? []) set({ protocol: t.protocol }, t.sent);
  });

  registry.registerMetric(
    histogramMetric("mcp_command_duration_seconds", "Command duration from start to Response, by tool and outcome code, in seconds.", DURATION_BUCKETS_SECONDS, function* () {
      for (const t of stats.tools.values()) {
        if (t.ok.count > 0) yield [{ tool: t.tool, code: "ok" }, t.ok];
        for (const [code, cell] of t.failed) yield [{ tool: t.tool, code }, cell];
      }
    }),
  );

  const storeCells = new Map<string, { labels: Record<string, string>; cell: DurationCell }>();
  registry.registerMetric(
    histogramMetric(
      "mcp_store_operation_duration_seconds",
      "Context store operation latency, by store kind (memory, sqlite, redis) and operation.",
      STORE_BUCKETS_SECONDS,
      function* () {
        for (const { labels, cell } of storeCells.values()) if (cell.count > 0) yield [labels, cell];
      },
    ),
  );
  const storeDuration = (store: string, operation: string): DurationCell => {
    const key = `${store} ${operation}`;
    let found = storeCells.get(key);
    if (found === undefined) storeCells.set(key, (found = { labels: { store, operation }, cell: new DurationCell(STORE_BUCKETS_MS) }));
    return found.cell;
  };
  const scraped = options.processMetrics ? Registry.merge([processRegistry(), registry]) : registry;
  return { registry, storeDuration, scrape: () => scraped.metrics(), contentType: registry.contentType };
}

let processRegistryOnce: Registry | undefined;

/**
 * prom-client's default metrics (CPU, memory, event-loop lag, GC, handles) in one registry per
 * process: they describe the process, and each registration adds its own GC observer and
 * event-loop monitor that are never removed, so servers share one.
 */
function processRegistry(): Registry {
  if (processRegistryOnce === undefined) {
    processRegistryOnce = new Registry();
    collectDefaultMetrics({ register: processRegistryOnce });
  }
  return processRegistryOnce;
}

/**
 * A histogram series from cells of plain numbers (`DurationCell`, ms), by the labels `cells`
 * yields. prom-client has no way to set a histogram's buckets, so this is a collector of its own:
 * the registry asks each metric for `get()` and formats what it returns.
 */
function histogramMetric(
  name: string,
  help: string,
  bucketsSeconds: readonly number[],
  cells: () => Iterable<[Record<string, string>, DurationCell]>,
): Metric {
  const collector = {
    name,
    help,
    type: "histogram",
    aggregator: "sum",
    collect: undefined,
    async get() {
      const values: { metricName: string; labels: Record<string, string | number>; value: number }[] = [];
      for (const [labels, cell] of cells()) {
        let cumulative = 0;
        for (let i = 0; i < bucketsSeconds.length; i++) {
          cumulative += cell.buckets[i]!;
          values.push({ metricName: `${name}_bucket`, labels: { ...labels, le: bucketsSeconds[i]! }, value: cumulative });
        }
        values.push({ metricName: `${name}_bucket`, labels: { ...labels, le: "+Inf" }, value: cell.count });
        values.push({ metricName: `${name}_sum`, labels, value: cell.sumMs / 1000 });
        values.push({ metricName: `${name}_count`, labels, value: cell.count });
      }
      return { name, help, type: "histogram", aggregator: "sum", values };
    },
    reset() {},
  };
  // Registry#registerMetric only reads name, type, help and get(): the shape above. Its type is
  // prom-client's Metric class, which cannot be built with preset buckets.
  return collector as unknown as Metric;
}
