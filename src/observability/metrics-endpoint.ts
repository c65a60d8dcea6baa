/**
 * `GET /metrics` on the server's port: the Prometheus text format of the server's registry.
 * Open like `/healthz` unless `metricsToken` is set; then it needs `Authorization: Bearer
 * <metricsToken>` (compared in constant time), so an instance reachable by its clients need not
 * show them its metrics. See docs/observability.md.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { ServerMetrics } from "./metrics.js";
import { pathOf, type HttpEndpoint, type HttpResponse } from "../server/http-endpoints.js";

/** The path the endpoint owns. */
export const METRICS_PATH = "/metrics";

/** Options of `createMetricsEndpoint`. */
export interface MetricsEndpointOptions {
  /** Bearer token a scrape must present; unset = no token needed. */
  token?: string | undefined;
}

// Both sides hashed to one length, so the comparison takes the same time whatever the input.
const digest = (s: string) => createHash("sha256").update(s).digest();

/** Serves `metrics` at `/metrics`. */
export function createMetricsEndpoint(metrics: ServerMetrics, options: MetricsEndpointOptions = {}): HttpEndpoint {
  const want = options.token === undefined ? undefined : digest(`Bearer ${options.token}`);
  return (req, res) => {
    if (pathOf(req) !== METRICS_PATH) return false;
    if (req.method !== "GET" && req.method !== "HEAD") {
      send(res, 405, { allow: "GET, HEAD", "content-type": "text/plain; charset=utf-8" }, "use GET\n");
      return true;
    }
    if (want !== undefined) {
      const got = req.headers.authorization;
      if (typeof got !== "string" || !timingSafeEqual(digest(got), want)) {
        send(res, 401, { "www-authenticate": 'Bearer realm="metrics"', "content-type": "text/plain; charset=utf-8" }, "metrics need Authorization: Bearer <metrics token>\n");
        return true;
      }
    }
    metrics.scrape().then(
      (text) => send(res, 200, { "content-type": metrics.contentType }, req.method === "HEAD" ? "" : text),
      (e: unknown) => send(res, 500, { "content-type": "text/plain; charset=utf-8" }, `could not collect metrics: ${e instanceof Error ? e.message : String(e)}\n`),
    );
    return true;
  };
}

function send(res: HttpResponse, status: number, headers: Record<string, string>, body: string): void {
  res.statusCode = status;
  for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
  res.end(body);
}
