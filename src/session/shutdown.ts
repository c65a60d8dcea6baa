/**
 * Graceful shutdown of the sessions of one instance (issue 15, docs/deploy.md): tell every
 * session, let its in-flight commands finish up to a deadline, then cancel what still runs.
 * Every command keeps its one Response (ARCHITECTURE.md "every Command settles exactly once").
 */
import { McpError } from "../errors.js";
import type { Session } from "./session.js";

/** How often the drain looks whether every command has finished; shutdown only, never per message. */
const POLL_MS = 10;

function inflight(sessions: ReadonlyMap<string, Session>): number {
  let n = 0;
  for (const s of sessions.values()) if (!s.closed) n += s.runner.inflight;
  return n;
}

/**
 * Sends `server.shutdown` on every open session, waits until no command is in flight or
 * `graceMs` passed, then cancels the rest with `cancelled`. `resumable` says whether the
 * sessions will be parked for another instance (a shared store) or end here.
 */
export async function drainSessions(sessions: ReadonlyMap<string, Session>, graceMs: number, resumable: boolean): Promise<void> {
  const deadline = Date.now() + graceMs;
  for (const s of sessions.values()) {
    if (!s.closed) s.emitEvent("server.shutdown", { grace_ms: graceMs, resumable, session_id: s.id });
  }
  while (inflight(sessions) > 0 && Date.now() < deadline) {
    await new Promise<void>((resolve) => setTimeout(resolve, Math.min(POLL_MS, Math.max(1, deadline - Date.now()))));
  }
  const reason = new McpError("cancelled", `the server shut down before this command finished (grace ${graceMs} ms)`);
  for (const s of sessions.values()) if (!s.closed) s.runner.abortAll(reason);
}
