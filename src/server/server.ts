/**
 * `createMcpServer`: assembles the stores, security, tools and the core, and serves every
 * service of PROTOCOL.md §2 over Connect, gRPC and gRPC-Web on one port.
 */
import { isIP } from "node:net";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { createContextValues } from "@connectrpc/connect";
import { envName, flagName, resolveServerOptions, type ResolvedServerOptions, type ServerOptions } from "../config.js";
import { createContextManager, openContextStore, type ContextManager } from "../context/index.js";
import { isRedisUrl } from "../context/redis-client.js";
import {
  createAuthorizer,
  createJsonAuditSink,
  createMemoryRevocationStore,
  createPolicy,
  createRedisRevocationStore,
  createTokenVerifier,
  loadPolicyFile,
  withVerificationCache,
  type AuditSink,
  type RevocationStore,
  type TokenVerifier,
} from "../security/index.js";
import { createBuiltinTools, createToolRegistry, type RegisteredTool, type ToolRegistry } from "../tools/index.js";
import { SecurityLevel } from "../../gen/mcp/v1/types_pb.js";
import { createCore, type McpCore } from "../session/core.js";
import { createRedisSessionStore } from "../session/session-store.js";
import { withHttpEndpoints, type HttpEndpoint } from "./http-endpoints.js";
import { createHealth, registerHealth } from "./health.js";
import { createReflectionIndex, registerReflection } from "./reflection.js";
import { reflectionFiles } from "./reflection-files.js";
import { connectionFacts, listen, type Listener, type StreamHandler } from "./listener.js";
import { kConnectionFacts, registerRoutes } from "./routes.js";
import { checkRequestMessages } from "./request-check.js";
import { createSessionH2Handler } from "./session-h2.js";
import { createUnaryH2Handler } from "./unary-h2.js";
import { VERSION } from "../version.js";
import { createModelHttpEndpoint } from "../bridge/http-endpoint.js";
import { createInspectorEndpoint } from "../inspector/endpoint.js";
import { createLogger, type LogFormat, type LogLevel, type Logger } from "../observability/logger.js";
import { createMetricsEndpoint } from "../observability/metrics-endpoint.js";
import { createTelemetry, type Telemetry } from "../observability/telemetry.js";

/** Options of `createMcpServer`: the configuration plus parts an embedder may supply. */
export interface McpServerOptions extends ServerOptions {
  /** Extra tools, registered beside the built-ins. */
  tools?: readonly RegisteredTool[];
  /**
   * Where denials are audited.
   * @default JSON lines on stderr
   */
  audit?: AuditSink;
  /**
   * The clock, epoch ms (tests).
   * @default Date.now
   */
  now?: () => number;
  /**
   * For `jwks`: least time between two key-set reloads triggered by an unknown `kid`, in ms
   * (`TokenVerifierOptions.jwksCooldownMs`).
   * @default 30000
   */
  jwksCooldownMs?: number;
  /**
   * For a `jwks` URL: how long fetched keys are used before they are fetched again, in ms
   * (`TokenVerifierOptions.jwksCacheMaxAgeMs`).
   * @default 600000
   */
  jwksCacheMaxAgeMs?: number;
  /**
   * How often a grpc.health.v1 Watch re-checks the store and shutdown state, in ms (`HealthOptions.watchIntervalMs`).
   * @default 1000
   */
  healthWatchIntervalMs?: number;
  /**
   * The server's logger (a pino logger); replaces `logLevel` / `logDestination` / `logFormat`.
   * @default createLogger() from those options
   */
  logger?: Logger;
  /**
   * Where JSON log lines go instead of `logDestination` (embedding, tests), one `write` per line.
   * @default undefined: `logDestination`
   */
  logStream?: { write(line: string): void };
  /**
   * Include the process's default metrics (CPU, memory, event-loop lag, GC) in `/metrics`.
   * @default true
   */
  processMetrics?: boolean;
}

/** A running (or ready to run) server. */
export interface McpServer {
  /** Opens stores and starts listening. Resolves with where it listens. */
  listen(): Promise<{ address: string; port: number; url: string }>;
  /**
   * Shuts down: stops accepting (HTTP/2 GOAWAY), lets in-flight commands finish for
   * `graceMs` and cancels the rest, parks resumable sessions in the shared store, closes stores.
   */
  close(options?: CloseOptions): Promise<void>;
  /** The effective configuration. */
  readonly options: ResolvedServerOptions;
  /** The core, once listening (for embedding and tests). */
  readonly core: McpCore;
  /** Open connections right now. */
  readonly connections: number;
}

/** Options of `McpServer.close`. */
export interface CloseOptions {
  /**
   * How long in-flight commands may still run, in ms; then they are cancelled. `mcp serve`
   * passes `shutdownGraceMs` on SIGTERM.
   * @default 0
   */
  graceMs?: number;
}

function isLoopback(address: string): boolean {
  if (address === "localhost") return true;
  if (isIP(address) === 4) return address.startsWith("127.");
  return address === "::1";
}

/** `memory`, `sqlite` or `redis`: the store kind label of a `store` option. */
function storeKind(spec: string): string {
  if (spec === "memory") return "memory";
  return spec.startsWith("redis://") || spec.startsWith("rediss://") ? "redis" : "sqlite";
}

/** Sessions by state, read when scraped. */
function sessionCounts(core: McpCore): { connected: number; detached: number } {
  let connected = 0;
  for (const s of core.sessions.values()) if (s.connected) connected++;
  return { connected, detached: core.sessions.size - connected };
}

/** Creates a server; nothing is opened until `listen()`. */
export function createMcpServer(options: McpServerOptions = {}): McpServer {
  const opts = resolveServerOptions(options);
  if (opts.securityLevel === SecurityLevel.LOW && !isLoopback(opts.bindAddress)) {
    throw new TypeError(
      `security level low (no authentication) is only allowed on a loopback address, but bindAddress is ${opts.bindAddress}: bind to 127.0.0.1 or raise securityLevel`,
    );
  }
  if (opts.jwtSecret !== undefined && opts.jwks !== undefined) {
    // One verifier, one key source: a shared secret beside public keys would invite algorithm confusion.
    throw new TypeError("set either jwtSecret (HS256, development) or jwks (asymmetric keys), not both");
  }
  if (opts.securityLevel !== SecurityLevel.LOW && opts.jwtSecret === undefined && opts.jwks === undefined) {
    throw new TypeError("no way to verify tokens: set jwtSecret (development) or jwks, or securityLevel low on loopback");
  }
  let core: McpCore | undefined;
  let listener: Listener | undefined;
  let telemetry: Telemetry | undefined;
  const closers: (() => Promise<void> | void)[] = [];

  async function build(): Promise<McpCore> {
    const redisUrl = isRedisUrl(opts.store) ? opts.store : undefined;
    const logger =
      options.logger ??
      createLogger({
        // Checked by resolveServerOptions.
        level: opts.logLevel as LogLevel,
        destination: opts.logDestination,
        format: opts.logFormat as LogFormat,
        ...(options.logStream === undefined ? {} : { stream: options.logStream }),
      });
    // `tools` is assigned below, before any command can be counted.
    const t = createTelemetry({
      logger,
      slowCommandMs: opts.slowCommandMs,
      isKnownTool: (name) => tools.get(name) !== undefined,
      processMetrics: options.processMetrics ?? true,
      ...(options.now === undefined ? {} : { now: options.now }),
    });
    telemetry = t;
    const revocations: RevocationStore =
      redisUrl === undefined ? createMemoryRevocationStore() : createRedisRevocationStore({ url: redisUrl });
    closers.push(() => revocations.close());
    // With a shared Redis, detached sessions are parked there so any instance can resume them (§8).
    const sessionStore = redisUrl === undefined ? undefined : await createRedisSessionStore({
            url: redisUrl,
            maxMessages: opts.resumeBufferMessages,
            ttlMs: opts.resumeTtlMs,
            heartbeatMs: opts.instanceHeartbeatMs,
            deadAfterMs: opts.instanceDeadAfterMs,
          });
    if (sessionStore !== undefined) closers.push(() => sessionStore.close());
    let verifier: TokenVerifier | undefined;
    if (opts.jwtSecret !== undefined || opts.jwks !== undefined) {
      verifier = createTokenVerifier({
        ...(opts.jwtSecret === undefined ? {} : { secret: opts.jwtSecret }),
        ...(opts.jwks === undefined ? {} : { jwks: opts.jwks }),
        issuer: opts.jwtIssuer,
        audience: opts.jwtAudience,
        clockToleranceSec: opts.clockToleranceSec,
        ...(options.jwksCooldownMs === undefined ? {} : { jwksCooldownMs: options.jwksCooldownMs }),
        ...(options.jwksCacheMaxAgeMs === undefined ? {} : { jwksCacheMaxAgeMs: options.jwksCacheMaxAgeMs }),
        revocations,
        ...(options.now === undefined ? {} : { now: options.now }),
      });
      // With a shared secret, repeated tokens skip the signature check (see withVerificationCache).
      if (opts.jwks === undefined) verifier = withVerificationCache(verifier, { revocations, ...(options.now === undefined ? {} : { now: options.now }) });
      const v = verifier;
      closers.push(() => v.close());
    }
    const policy = opts.policyFile === undefined ? createPolicy() : await loadPolicyFile(opts.policyFile);
    const audit = options.audit ?? createJsonAuditSink();
    const authorizer = createAuthorizer({ policy, audit });
    const store = t.instrumentStore(await openContextStore(opts.store), storeKind(opts.store));
    closers.push(() => store.close());
    const contexts: ContextManager = createContextManager({ store });
    closers.push(() => contexts.close());
    const tools: ToolRegistry = createToolRegistry();
    for (const t of createBuiltinTools({ root: opts.workspaceRoot, exec: { enabled: opts.execEnabled } })) tools.register(t);
    if (!opts.execEnabled) {
      tools.withhold("exec", `exec is disabled on this server (enable it with --${flagName("execEnabled")} or ${envName("execEnabled")}=true)`);
    }
    for (const t of options.tools ?? []) tools.register(t);
    return createCore({
      options: opts,
      verifier,
      authorizer,
      revocations,
      contexts,
      store,
      ...(sessionStore === undefined ? {} : { sessionStore }),
      tools,
      server: { name: "mcp-server", version: VERSION },
      audit,
      telemetry: t,
      ...(options.now === undefined ? {} : { now: options.now }),
    });
  }

  return {
    options: opts,
    get core() {
      if (core === undefined) throw new Error("the server is not listening yet: call listen() first");
      return core;
    },
    get connections() {
      return listener?.connections ?? 0;
    },
    async listen() {
      if (listener !== undefined) throw new Error("the server is already listening");
      const c = await build();
      core = c;
      const reflection = createReflectionIndex(reflectionFiles);
      const health = createHealth({
        ping: () => c.deps.store.ping(),
        draining: () => c.draining,
        services: reflection.services,
        ...(options.healthWatchIntervalMs === undefined ? {} : { watchIntervalMs: options.healthWatchIntervalMs }),
      });
      const connectHandler = connectNodeAdapter({
        routes: (router) => {
          registerRoutes(router, c);
          registerReflection(router, reflection);
          registerHealth(router, health);
          // Last: it wraps every handler registered above.
          checkRequestMessages(router, opts.maxMessageBytes);
        },
        readMaxBytes: opts.maxMessageBytes,
        maxTimeoutMs: opts.maxTimeoutMs,
        contextValues: (req) => createContextValues().set(kConnectionFacts, connectionFacts(req)),
      });
      // The session stream and unary CommandService calls over gRPC/HTTP/2 take fast paths; everything else goes to connect-node.
      const sessionStream = createSessionH2Handler(c);
      const unaryCommands = createUnaryH2Handler(c);
      const fastPaths: StreamHandler = (stream, headers) => sessionStream(stream, headers) || unaryCommands(stream, headers);
      // Plain HTTP endpoints on the same port, each owning its paths (see http-endpoints.ts).
      const endpoints: HttpEndpoint[] = [
        ...health.endpoints,
        createMetricsEndpoint(c.telemetry.metrics, { token: opts.metricsToken }),
        createModelHttpEndpoint(c),
        createInspectorEndpoint({ allow: opts.inspectorAllow, bindAddress: opts.bindAddress }),
      ];
      listener = await listen(
        {
          bindAddress: opts.bindAddress,
          port: opts.port,
          maxConnections: opts.maxConnections,
          tls: opts.tlsCert !== undefined && opts.tlsKey !== undefined ? { cert: opts.tlsCert, key: opts.tlsKey } : undefined,
          pingIntervalMs: opts.heartbeatIntervalMs,
          onRefusedConnection: (remote) => c.telemetry.connectionRefused(remote),
        },
        withHttpEndpoints(endpoints, connectHandler),
        fastPaths,
      );
      const l = listener;
      c.telemetry.setSources({ sessions: () => sessionCounts(c), connections: () => l.connections, traffic: () => l.traffic() });
      const scheme = opts.tlsCert === undefined ? "http" : "https";
      const host = listener.address.includes(":") ? `[${listener.address}]` : listener.address;
      const url = `${scheme}://${host}:${listener.port}`;
      c.telemetry.logger.info({ event: "server.listening", url, store: c.telemetry.storeKind, version: VERSION }, `listening on ${url}`);
      return { address: listener.address, port: listener.port, url };
    },
    async close(closeOptions = {}) {
      listener?.stopAccepting();
      await core?.close({ graceMs: closeOptions.graceMs ?? 0 });
      await listener?.close();
      for (const c of closers.splice(0).reverse()) await c();
      await telemetry?.close();
    },
  };
}
