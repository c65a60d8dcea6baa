/**
 * Per-tool command statistics, kept in plain numbers on the hot path and turned into Prometheus
 * series only when scraped (metrics.ts). prom-client's own `Histogram#observe` hashes its label
 * set into a string on every call, even through a bound child; at ~240k commands/s that string
 * building alone would cost more than the few percent the hot path may lose, so a settled
 * command here costs two Map lookups, a short bucket search and a few additions.
 */
import { ERROR_TABLE, isMcpErrorCode, type McpErrorCode, type McpErrorKind } from "../errors.js";

/** Upper bounds of the command duration histogram, in seconds (Prometheus `le`). */
export const DURATION_BUCKETS_SECONDS: readonly number[] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];
const BUCKETS_MS = DURATION_BUCKETS_SECONDS.map((s) => s * 1000);

/** The label of a tool name that is not registered: clients choose names, so they are not labels. */
export const UNKNOWN_TOOL_LABEL = "_unknown";
/** The label of tools beyond `maxTools` distinct names (bounded cardinality). */
export const OTHER_TOOL_LABEL = "_other";

/** One (tool, outcome) cell: a histogram of durations. */
export class DurationCell {
  count = 0;
  /** Sum of durations, in milliseconds. */
  sumMs = 0;
  /** Non-cumulative counts per bucket; the last slot is +Inf. */
  readonly buckets: Float64Array;

  /** @param boundsMs the buckets' upper bounds in ms, ascending (default: the command buckets). */
  constructor(private readonly boundsMs: readonly number[] = BUCKETS_MS) {
    this.buckets = new Float64Array(boundsMs.length + 1);
  }

  observe(ms: number): void {
    const bounds = this.boundsMs;
    this.count++;
    this.sumMs += ms;
    let i = 0;
    while (i < bounds.length && ms > bounds[i]!) i++;
    this.buckets[i]!++;
  }
}

/** Everything recorded for one tool label. */
export class ToolStats {
  /** Successful commands (outcome code `ok`). */
  readonly ok = new DurationCell();
  /** Failed commands by error code. */
  readonly failed = new Map<string, DurationCell>();
  errors = 0;

  constructor(readonly tool: string) {}

  get calls(): number {
    return this.ok.count + this.errors;
  }
}

/** The table of all tools. */
export class CommandStats {
  readonly tools = new Map<string, ToolStats>();
  /** Errors sent to clients, by code (commands and everything else). */
  readonly errorsByCode = new Map<McpErrorCode, number>();

  /**
   * @param isKnownTool whether a name is registered (others are counted as `_unknown`).
   * @param maxTools distinct tool labels at most; more are counted as `_other`.
   */
  constructor(
    private readonly isKnownTool: (name: string) => boolean,
    private readonly maxTools: number,
  ) {}

  /** The stats of a tool name, creating its label on first use (bounded). */
  toolFor(name: string): ToolStats {
    const found = this.tools.get(name);
    if (found !== undefined) return found;
    let label = this.isKnownTool(name) ? name : UNKNOWN_TOOL_LABEL;
    if (label !== UNKNOWN_TOOL_LABEL && this.tools.size >= this.maxTools) label = OTHER_TOOL_LABEL;
    let stats = this.tools.get(label);
    if (stats === undefined) {
      stats = new ToolStats(label);
      this.tools.set(label, stats);
    }
    // Only registered names get a key of their own: an unknown name must not grow the map.
    return stats;
  }

  /** A command settled successfully after `ms`. */
  ok(stats: ToolStats, ms: number): void {
    stats.ok.observe(ms);
  }

  /** A command settled with error `code` after `ms`. */
  failed(stats: ToolStats, code: string, ms: number): void {
    stats.errors++;
    let cell = stats.failed.get(code);
    if (cell === undefined) {
      // Codes come from the closed table of PROTOCOL.md §7; anything else is one bucket.
      const key = isMcpErrorCode(code) ? code : "tool_failed";
      cell = stats.failed.get(key);
      if (cell === undefined) stats.failed.set(key, (cell = new DurationCell()));
    }
    cell.observe(ms);
    this.error(code);
  }

  /** An error of any origin was sent to a client. */
  error(code: string): void {
    const c = isMcpErrorCode(code) ? code : "tool_failed";
    this.errorsByCode.set(c, (this.errorsByCode.get(c) ?? 0) + 1);
  }

  /** The kind of an error code (PROTOCOL.md §7). */
  static kindOf(code: McpErrorCode): McpErrorKind {
    return ERROR_TABLE[code].kind;
  }

  /** The busiest tools by calls, most first. */
  top(n: number): ToolStats[] {
    return [...this.tools.values()].filter((t) => t.calls > 0).sort((a, b) => b.calls - a.calls || a.tool.localeCompare(b.tool)).slice(0, n);
  }
}
