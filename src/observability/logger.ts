/**
 * The server's structured log: pino, one JSON object per line, or a short human-readable line
 * when the destination is a terminal. Level and destination come from the configuration
 * (`--log-level` / `MCP_LOG_LEVEL`, `--log-destination`, `--log-format`).
 *
 * The human-readable form is a small formatter here rather than pino-pretty: pino-pretty runs as
 * a worker-thread transport with a dozen dependencies, and a terminal only needs the time, the
 * level, the message and the fields.
 */
import { isatty } from "node:tty";
import { pino, type DestinationStream, type Logger } from "pino";
import type { LogFormat, LogLevel } from "./log-levels.js";

export { LOG_FORMATS, LOG_LEVELS, isLogFormat, isLogLevel, type LogFormat, type LogLevel } from "./log-levels.js";

export type { Logger };

/** Options of `createLogger`. */
export interface LoggerOptions {
  /**
   * Least level written.
   * @default "info"
   */
  level?: LogLevel;
  /**
   * `stderr`, `stdout`, or a file path (appended to, its folder created).
   * @default "stderr"
   */
  destination?: string;
  /**
   * Line format.
   * @default "auto"
   */
  format?: LogFormat;
  /** Where lines go instead of `destination` (embedding, tests); each write is one JSON line. */
  stream?: DestinationStream;
}

/** Builds the logger. Lines carry `time` (ISO 8601), `level` (a name), `msg` and the fields. */
export function createLogger(options: LoggerOptions = {}): Logger {
  const level = options.level ?? "info";
  const destination = options.destination ?? "stderr";
  const format = options.format ?? "auto";
  let stream: DestinationStream;
  if (options.stream !== undefined) {
    stream = options.stream;
  } else {
    const fd = destination === "stdout" ? 1 : destination === "stderr" ? 2 : undefined;
    const out = pino.destination(fd === undefined ? { dest: destination, mkdir: true, append: true, sync: false } : { dest: fd, sync: false });
    const pretty = format === "pretty" || (format === "auto" && fd !== undefined && isatty(fd));
    stream = pretty ? { write: (line: string) => void out.write(prettyLine(line)) } : out;
  }
  return pino(
    {
      level,
      base: null,
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    stream,
  );
}

const LEVEL_TAGS: Record<string, string> = { fatal: "FATAL", error: "ERROR", warn: "WARN ", info: "INFO ", debug: "DEBUG", trace: "TRACE" };

/** One JSON log line as `HH:MM:SS.mmm LEVEL message key=value …`. */
export function prettyLine(line: string): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line;
  }
  const { time, level, msg, ...rest } = o;
  const t = typeof time === "string" && time.length >= 23 ? time.slice(11, 23) : String(time ?? "");
  const fields = Object.entries(rest)
    .map(([k, v]) => `${k}=${typeof v === "string" && !/\s/.test(v) ? v : JSON.stringify(v)}`)
    .join(" ");
  return `${t} ${LEVEL_TAGS[String(level)] ?? String(level)} ${String(msg ?? "")}${fields === "" ? "" : `  ${fields}`}\n`;
}
