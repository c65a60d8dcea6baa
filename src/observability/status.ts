/**
 * `AdminService/GetStatus`: what an operator without Prometheus needs to see — version, uptime,
 * sessions, commands in flight, store health and the busiest tools (`mcp status`).
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { GetStatusResponseSchema, type GetStatusResponse } from "../../gen/mcp/v1/admin_pb.js";
import type { McpCore } from "../session/core.js";
import type { AuthState } from "../session/session.js";

/** Top tools listed when the request names no number. */
const DEFAULT_TOP_TOOLS = 10;

/**
 * The server's status as `auth` may see it: `sessions:admin` (checked and audited by
 * `listSessions`, like the other admin RPCs).
 */
export async function getStatus(core: McpCore, auth: AuthState, topTools: number): Promise<GetStatusResponse> {
  const sessions = core.listSessions(auth);
  const t = core.telemetry;
  const now = core.now();
  let healthy = true;
  let error = "";
  const t0 = performance.now();
  try {
    await core.deps.store.ping();
  } catch (e) {
    healthy = false;
    error = e instanceof Error ? e.message : String(e);
  }
  const latencyMs = performance.now() - t0;
  const connected = sessions.filter((s) => s.connected).length;
  return create(GetStatusResponseSchema, {
    server: core.deps.server,
    startedAt: timestampFromMs(t.startedAt),
    uptimeMs: BigInt(Math.max(0, now - t.startedAt)),
    sessionsConnected: connected,
    sessionsDetached: sessions.length - connected,
    inflightCommands: t.inflight,
    connections: t.connections,
    store: { kind: t.storeKind, healthy, latencyMs, error },
    topTools: t.stats.top(topTools === 0 ? DEFAULT_TOP_TOOLS : topTools).map((s) => ({ tool: s.tool, calls: BigInt(s.calls), errors: BigInt(s.errors) })),
    sessions,
  });
}
