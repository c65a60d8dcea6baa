/**
 * Health for load balancers and orchestrators: `grpc.health.v1.Health` (Check and Watch, for the
 * server as a whole — service "" — and for each service it serves) and plain HTTP `GET /healthz`
 * (liveness: the process answers) and `GET /readyz` (readiness: it would serve a request now).
 *
 * Ready means: not shutting down (`McpCore.draining`) and the configured context store answers
 * `ping()`. Every service depends on both, so each reports the overall status. Public, like
 * reflection: see docs/security.md "Reflection and health".
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { Health, HealthCheckResponseSchema, HealthCheckResponse_ServingStatus as ServingStatus } from "../../gen/grpc/health/v1/health_pb.js";
import { pathOf, type HttpEndpoint } from "./http-endpoints.js";

export { ServingStatus };

/** Options of `createHealth`. */
export interface HealthOptions {
  /** Resolves when the context store answers (`ContextStore.ping`). */
  ping: () => Promise<void>;
  /** True while the server shuts down (`McpCore.draining`). */
  draining: () => boolean;
  /** The fully-qualified names of the services the server answers, for per-service status. */
  services: readonly string[];
  /**
   * How often a Watch re-evaluates the status, in ms; it sends only changes.
   * @default 1000
   */
  watchIntervalMs?: number;
}

/** The server's health, as RPCs and as HTTP endpoints. */
export interface HealthMonitor {
  /** The status of `service` ("" = overall) now; `undefined` for a service the server does not know. */
  check(service: string): Promise<ServingStatus | undefined>;
  /** Why the server is not ready, or `undefined` when it is. Pings the store (coalesced). */
  notReadyReason(): Promise<string | undefined>;
  /** The status now, then each change, until `signal` aborts. SERVICE_UNKNOWN (once) for an unknown service. */
  watch(service: string, signal: AbortSignal): AsyncIterable<ServingStatus>;
  /** `GET /healthz` and `GET /readyz`. */
  readonly endpoints: readonly HttpEndpoint[];
}

/** Resolves after `ms`, or early when `signal` aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

export function createHealth(options: HealthOptions): HealthMonitor {
  const watchIntervalMs = options.watchIntervalMs ?? 1000;
  const known = new Set(["", ...options.services]);
  // Probes from many balancers at once share one store round trip.
  let inflight: Promise<string | undefined> | undefined;

  function notReadyReason(): Promise<string | undefined> {
    if (options.draining()) return Promise.resolve("the server is shutting down");
    inflight ??= options
      .ping()
      .then(
        () => undefined,
        (e: unknown) => `the context store is unreachable: ${e instanceof Error ? e.message : String(e)}`,
      )
      .finally(() => (inflight = undefined));
    return inflight;
  }

  async function status(): Promise<ServingStatus> {
    return (await notReadyReason()) === undefined ? ServingStatus.SERVING : ServingStatus.NOT_SERVING;
  }

  const endpoint = (path: string, answer: () => Promise<{ ok: boolean; text: string }>): HttpEndpoint => (req, res) => {
    if (pathOf(req) !== path) return false;
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain; charset=utf-8" });
      res.end(`${path} answers GET and HEAD\n`);
      return true;
    }
    void answer().then(({ ok, text }) => {
      res.writeHead(ok ? 200 : 503, { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" });
      if (req.method === "HEAD") res.end();
      else res.end(`${text}\n`);
    });
    return true;
  };

  return {
    async check(service) {
      return known.has(service) ? status() : undefined;
    },
    notReadyReason,
    async *watch(service, signal) {
      if (!known.has(service)) {
        yield ServingStatus.SERVICE_UNKNOWN;
        // The service may never appear; the stream stays open until the client cancels, as the protocol says.
        if (!signal.aborted) await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
        return;
      }
      let last: ServingStatus | undefined;
      while (!signal.aborted) {
        const now = await status();
        if (now !== last) {
          last = now;
          yield now;
        }
        await sleep(watchIntervalMs, signal);
      }
    },
    endpoints: [
      endpoint("/healthz", async () => ({ ok: true, text: "ok" })),
      endpoint("/readyz", async () => {
        const reason = await notReadyReason();
        return reason === undefined ? { ok: true, text: "ready" } : { ok: false, text: `not ready: ${reason}` };
      }),
    ],
  };
}

/** Registers `grpc.health.v1.Health` on a Connect router. */
export function registerHealth(router: ConnectRouter, health: HealthMonitor): void {
  router.service(Health, {
    async check(req) {
      const s = await health.check(req.service);
      if (s === undefined) throw new ConnectError(`unknown service ${JSON.stringify(req.service)}`, Code.NotFound);
      return create(HealthCheckResponseSchema, { status: s });
    },
    async *watch(req, ctx) {
      for await (const s of health.watch(req.service, ctx.signal)) yield create(HealthCheckResponseSchema, { status: s });
    },
  });
}
