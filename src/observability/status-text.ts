/** `mcp status`'s text form of a `GetStatusResponse`. */
import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { GetStatusResponse } from "../../gen/mcp/v1/admin_pb.js";
import { SecurityLevel } from "../../gen/mcp/v1/types_pb.js";

function duration(ms: number): string {
  const s = Math.floor(ms / 1000);
  const parts = [[Math.floor(s / 86400), "d"], [Math.floor(s / 3600) % 24, "h"], [Math.floor(s / 60) % 60, "m"], [s % 60, "s"]] as const;
  const shown = parts.filter(([n], i) => n > 0 || i === parts.length - 1).map(([n, u]) => `${n}${u}`);
  return shown.join(" ");
}

/** Several lines for a terminal: server, uptime, sessions, commands, store, top tools, then each session. */
export function formatStatus(r: GetStatusResponse): string {
  const lines: string[] = [];
  const started = r.startedAt === undefined ? "" : ` (since ${new Date(timestampMs(r.startedAt)).toISOString()})`;
  lines.push(`${r.server?.name ?? "server"} ${r.server?.version ?? ""}   up ${duration(Number(r.uptimeMs))}${started}`);
  lines.push(`sessions: ${r.sessionsConnected} connected, ${r.sessionsDetached} detached   commands in flight: ${r.inflightCommands}   connections: ${r.connections}`);
  const st = r.store;
  if (st !== undefined) {
    lines.push(`store: ${st.kind} ${st.healthy ? "healthy" : `UNHEALTHY: ${st.error}`} (ping ${st.latencyMs.toFixed(1)} ms)`);
  }
  if (r.topTools.length > 0) {
    lines.push(`top tools:${" ".repeat(22)}calls    errors`);
    for (const t of r.topTools) lines.push(`  ${t.tool.padEnd(24)} ${String(t.calls).padStart(9)} ${String(t.errors).padStart(9)}`);
  } else {
    lines.push("top tools: none called yet");
  }
  if (r.sessions.length > 0) {
    lines.push("sessions:");
    for (const s of r.sessions) {
      const level = (SecurityLevel[s.securityLevel] ?? "").replace(/^SECURITY_LEVEL_/, "").toLowerCase();
      lines.push(`  ${s.sessionId}  ${(s.principal?.subject ?? "(anonymous)").padEnd(16)} ${s.connected ? "connected" : "detached "}  ${level.padEnd(8)} seq ${s.lastSeq}`);
    }
  }
  return `${lines.join("\n")}\n`;
}
