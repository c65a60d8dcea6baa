/**
 * Graceful shutdown of the sessions of one instance (issue 15, docs/deploy.md): tell every
 * session, let its in-flight commands finish up to a deadline, then cancel what still runs.
 * Every command keeps its one Response (ARCHITECTURE.md "every Command settles exactly once").
 */
import { McpError } from "../errors.js";
import type { Session } from "./session.js";

/** How often the drain looks whether every command has finished; shutdown only, never per message. */
const POLL_MS = 10;

function inflight(sessions: ReadonlyMap<string, Session>, ghosts: () => Iterable<Session>): number {
  let n = 0;
  for (const s of sessions.values()) if (!s.closed) n += s.runner.inflight;
  for (const g of ghosts()) n += g.runner.inflight;
  return n;
}

/**
 * Sends `server.shutdown` on every open session, waits until no command is in flight or
 * `graceMs` passed, then cancels the rest with `cancelled`. `resumable` says whether the
 * sessions will be parked for another instance (a shared store) or end here. `ghosts` are
 * sessions that moved away while their commands run here: those commands get the same grace,
 * and their Responses (real or `cancelled`) go through the forward path like any other.
 */
export async function drainSessions(
  sessions: ReadonlyMap<string, Session>,
  graceMs: number,
  resumable: boolean,
  ghosts: () => Iterable<Session> = () => [],
): Promise<void> {
  const deadline = Date.now() + graceMs;
  for (const s of sessions.values()) {
    if (!s.closed) s.emitEvent("server.shutdown", { grace_ms: graceMs, resumable, session_id: s.id });
  }
  while (inflight(sessions, ghosts) > 0 && Date.now() < deadline) {
    await new Promise<void>((resolve) => setTimeout(resolve, Math.min(POLL_MS, Math.max(1, deadline - Date.now()))));
  }
  const reason = new McpError("cancelled", `the server shut down before this command finished (grace ${graceMs} ms)`);
  for (const s of sessions.values()) if (!s.closed) s.runner.abortAll(reason);
  for (const g of [...ghosts()]) g.runner.abortAll(reason);
}
