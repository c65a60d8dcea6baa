/**
 * The audit trail of denials (PROTOCOL.md §5: "Denials are audited (structured log line: who,
 * what, why)"). An `AuditSink` is a plain function, so a server can log, count or forward
 * entries, and tests can collect them into an array.
 */
import type { McpErrorCode } from "../errors.js";

/** One denial: who (subject, session), what (action, permission), why (reason, message). */
export interface AuditEntry {
  /** When, as an ISO 8601 timestamp. */
  time: string;
  event: "denied";
  /** The principal's subject; absent for an unauthenticated caller. */
  subject?: string;
  /** The session the request came on. */
  sessionId?: string;
  /** What was attempted, e.g. `tool fs.write` or `context proj-1 update`. */
  action: string;
  /** The permission that was required. */
  permission?: string;
  /** The roles that were considered (the principal's, or the anonymous roles). */
  roles?: string[];
  /** The session's security level (`levelName`). */
  level?: string;
  /** The level the action needed (`levelName`). */
  requiredLevel?: string;
  /** Why, as the error code the caller received. */
  reason: McpErrorCode;
  /** The message the caller received. */
  message: string;
}

/** Receives audit entries. Must not throw; a sink that does is ignored so a denial stays a denial. */
export type AuditSink = (entry: AuditEntry) => void;

/** Anything with a `write(string)`, such as `process.stderr` or a file stream. */
export interface AuditWritable {
  write(chunk: string): unknown;
}

/**
 * A sink writing one JSON object per line (`{"time":…,"event":"denied",…}\n`), the shape log
 * shippers expect.
 */
export function createJsonAuditSink(stream: AuditWritable = process.stderr): AuditSink {
  return (entry) => {
    stream.write(`${JSON.stringify({ audit: "mcp", ...entry })}\n`);
  };
}
