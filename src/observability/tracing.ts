/**
 * OpenTelemetry tracing through `@opentelemetry/api` only: no SDK is bundled, so every span is a
 * no-op until the embedding program registers a tracer provider (docs/observability.md). The hot
 * path asks `tracingActive()` once per runner (a session or a unary request), not per command,
 * and does no span work at all while it is false.
 */
import { ProxyTracerProvider, ROOT_CONTEXT, createTraceState, trace, type Context, type Tracer } from "@opentelemetry/api";
import { VERSION } from "../version.js";

/** The instrumentation scope of the server's spans. */
export const TRACER_NAME = "machine-context-protocol";

/** The server's tracer (a proxy: it follows whatever provider is registered later). */
export function serverTracer(): Tracer {
  return trace.getTracer(TRACER_NAME, VERSION);
}

/**
 * Whether a real tracer provider is registered. The API's global is a `ProxyTracerProvider`
 * whose delegate stays unset until an SDK registers itself; without one, spans would be
 * non-recording no-ops, so the server skips making them.
 */
export function tracingActive(): boolean {
  const provider = trace.getTracerProvider();
  if (!(provider instanceof ProxyTracerProvider)) return true;
  return provider.getDelegateTracer(TRACER_NAME, VERSION) !== undefined;
}

// W3C Trace Context §3.2: version-traceid-parentid-flags, lowercase hex. Future versions may
// append fields after a dash; version ff is invalid.
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[^\s]*)?$/;
const ZERO_TRACE = "00000000000000000000000000000000";
const ZERO_SPAN = "0000000000000000";

/**
 * The context of a remote parent named by a `traceparent` (and `tracestate`) value, over `base`;
 * undefined when the value is absent or malformed (W3C Trace Context §3.2.2: then the trace
 * restarts, the request is not refused).
 */
export function contextFromTraceparent(traceparent: string | undefined | null, tracestate?: string | null, base: Context = ROOT_CONTEXT): Context | undefined {
  if (traceparent === undefined || traceparent === null || traceparent === "") return undefined;
  const m = TRACEPARENT.exec(traceparent.trim());
  if (m === null) return undefined;
  const [, version, traceId, spanId, flags, rest] = m as unknown as [string, string, string, string, string, string | undefined];
  if (version === "ff" || (version === "00" && rest !== undefined)) return undefined;
  if (traceId === ZERO_TRACE || spanId === ZERO_SPAN) return undefined;
  return trace.setSpanContext(base, {
    traceId,
    spanId,
    // Only the sampled bit is defined (§3.2.2.5).
    traceFlags: parseInt(flags, 16) & 1,
    isRemote: true,
    ...(tracestate === undefined || tracestate === null || tracestate === "" ? {} : { traceState: createTraceState(tracestate) }),
  });
}

/** The first value of a header that node may give as a list. */
export function headerValue(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/** The RPC protocol of a request by its content type: `grpc`, `grpc-web` or `connect`. */
export function rpcProtocolOf(contentType: string | null): string {
  if (contentType === null) return "connect";
  if (contentType.startsWith("application/grpc-web")) return "grpc-web";
  if (contentType.startsWith("application/grpc")) return "grpc";
  return "connect";
}

/** A message that may carry commands: a `Command`, or a `CommandBatch` of them. */
type MaybeCommands = { $typeName: string; traceparent?: unknown; tracestate?: unknown; commands?: unknown };
type TraceFields = { traceparent: string; tracestate: string };

/**
 * Gives a unary request's commands its `traceparent` (and `tracestate`) header where they name
 * none of their own, so their spans continue the RPC's trace. Other messages are left alone.
 */
export function inheritTraceparent(message: MaybeCommands, traceparent: string | null | undefined, tracestate: string | null | undefined): void {
  if (traceparent === undefined || traceparent === null || traceparent === "") return;
  const give = (c: TraceFields) => {
    if (c.traceparent !== "") return;
    c.traceparent = traceparent;
    if (tracestate !== undefined && tracestate !== null) c.tracestate = tracestate;
  };
  // Both checks are on the generated type names: mcp.v1.Command has the two string fields, and
  // mcp.v1.CommandBatch a list of Commands.
  if (message.$typeName === "mcp.v1.Command") give(message as unknown as TraceFields);
  else if (message.$typeName === "mcp.v1.CommandBatch") for (const c of message.commands as TraceFields[]) give(c);
}
