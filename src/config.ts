/**
 * Server options and the one resolver that applies defaults (STYLE.md §2). The CLI layers its
 * sources on top with `loadServerOptions`: flags > `MCP_*` environment > config file > defaults.
 */
import { readFile } from "node:fs/promises";
import { ProtocolVersion, SecurityLevel } from "../gen/mcp/v1/types_pb.js";
import { LOG_FORMATS, LOG_LEVELS, isLogFormat, isLogLevel } from "./observability/log-levels.js";

/** Everything a server can be configured with. All fields are optional; see each `@default`. */
export interface ServerOptions {
  /**
   * Address to listen on. Anything other than a loopback address exposes the server to the network.
   * @default "127.0.0.1"
   */
  bindAddress?: string;
  /**
   * TCP port; 0 picks a free one.
   * @default 9000
   */
  port?: number;
  /**
   * Open connections at most; further connections get `too_many_connections` and are closed.
   * @default 1024
   */
  maxConnections?: number;
  /**
   * Protocol versions this server speaks, most preferred first (PROTOCOL.md §4 step 1).
   * @default [ProtocolVersion.PROTOCOL_VERSION_1_0]
   */
  protocolVersions?: ProtocolVersion[];
  /**
   * The minimum security level a session needs before anything but handshake, authentication and
   * ping is accepted. `LOW` (no token) is only allowed when bound to loopback.
   * @default SecurityLevel.STANDARD
   */
  securityLevel?: SecurityLevel;
  /**
   * Largest message accepted, in bytes (`message_too_large` beyond).
   * @default 4194304 (4 MiB)
   */
  maxMessageBytes?: number;
  /**
   * Commands in flight per session before `overloaded`.
   * @default 256
   */
  maxInflightCommands?: number;
  /**
   * Most commands in one CommandBatch.
   * @default 100
   */
  maxBatchSize?: number;
  /**
   * How often clients should ping, in milliseconds; a peer silent for twice this is dropped.
   * @default 15000
   */
  heartbeatIntervalMs?: number;
  /**
   * Timeout of a command that names none, in milliseconds.
   * @default 30000
   */
  defaultTimeoutMs?: number;
  /**
   * Ceiling on any command's timeout, in milliseconds.
   * @default 300000
   */
  maxTimeoutMs?: number;
  /**
   * Messages queued for a session's client before the server stops reading from it (backpressure).
   * @default 1024
   */
  maxOutboundMessages?: number;
  /**
   * How long a client may leave the outbound queue full before it is dropped with `slow_consumer`, in milliseconds.
   * @default 10000
   */
  slowConsumerTimeoutMs?: number;
  /**
   * Sent messages kept per session for resume (PROTOCOL.md §4 step 5).
   * @default 4096
   */
  resumeBufferMessages?: number;
  /**
   * Encoded bytes of sent messages kept per session for resume; the oldest go first (a resume
   * from before them finds the session expired).
   * @default 1048576 (1 MiB)
   */
  resumeBufferBytes?: number;
  /**
   * Bytes all detached (resumable) sessions may hold together: their resume buffers plus a fixed
   * 8 KiB each. Beyond it the oldest detached session is evicted (a resume then gets
   * `session_expired`).
   * @default 268435456 (256 MiB)
   */
  maxDetachedBytes?: number;
  /**
   * The same bound per principal (token subject; all unauthenticated sessions share one).
   * @default 67108864 (64 MiB)
   */
  maxDetachedBytesPerPrincipal?: number;
  /**
   * Sessions (attached or detached) per principal. A new one beyond it evicts the principal's
   * oldest detached session, or — all attached — is refused with `overloaded`.
   * @default 128
   */
  maxSessionsPerPrincipal?: number;
  /**
   * Context watches (`StateSync` with `watch`) live at once per session; one more → `overloaded`.
   * @default 64
   */
  maxWatchesPerSession?: number;
  /**
   * `EventService/Subscribe` streams on one session at once; one more → `overloaded`.
   * @default 16
   */
  maxSubscriptionsPerSession?: number;
  /**
   * How long a disconnected session is kept for resume, in milliseconds.
   * @default 60000
   */
  resumeTtlMs?: number;
  /**
   * With a Redis store: how often this instance refreshes its liveness key, in milliseconds
   * (docs/deploy.md "When an instance dies or drains").
   * @default 1000
   */
  instanceHeartbeatMs?: number;
  /**
   * With a Redis store: how long after its last heartbeat an instance counts as dead, in
   * milliseconds; the commands it still ran for sessions that moved away are then answered
   * `TRANSPORT connection_lost` (outcome unknown) by the instance holding the session.
   * @default 3000
   */
  instanceDeadAfterMs?: number;
  /**
   * Graceful shutdown (SIGTERM, `server.close()`): how long in-flight commands may still run
   * before they are cancelled, in milliseconds. A second SIGTERM exits at once.
   * @default 10000
   */
  shutdownGraceMs?: number;
  /**
   * How long before a token expires the `session.expiring` event is sent, in milliseconds.
   * @default 60000
   */
  expiryWarningMs?: number;
  /** TLS certificate (PEM file path). With `tlsKey`, the server speaks TLS with ALPN h2 + http/1.1. */
  tlsCert?: string;
  /** TLS private key (PEM file path). */
  tlsKey?: string;
  /** HS256 shared secret for development tokens. */
  jwtSecret?: string;
  /** JWKS for asymmetric tokens: a file path or an http(s) URL. */
  jwks?: string;
  /**
   * Required `iss` claim.
   * @default "mcp"
   */
  jwtIssuer?: string;
  /**
   * Required `aud` claim.
   * @default "mcp"
   */
  jwtAudience?: string;
  /**
   * Clock tolerance for `exp`, `nbf` and `iat`, in seconds.
   * @default 30
   */
  clockToleranceSec?: number;
  /** Role → permissions policy (JSON file), merged over the built-in roles. */
  policyFile?: string;
  /**
   * Where context lives: `memory`, `sqlite:PATH` (or a path ending in `.db`), or `redis://host:port`.
   * @default "memory"
   */
  store?: string;
  /**
   * Folder for local state (the SQLite database, the generated development secret).
   * @default ".mcp"
   */
  stateDir?: string;
  /**
   * Root of the workspace the built-in tools may touch.
   * @default process.cwd()
   */
  workspaceRoot?: string;
  /**
   * Register the `exec` tool (runs programs in the workspace; HIGH level by default).
   * @default false
   */
  execEnabled?: boolean;
  /**
   * Who may open the inspector page at `/inspector`: `loopback`, `off`, `any`, or a
   * comma-separated list of client IP addresses.
   * @default "loopback"
   */
  inspectorAllow?: string;
  /**
   * Least level of the JSON log: fatal, error, warn, info, debug, trace or silent (docs/observability.md).
   * @default "info"
   */
  logLevel?: string;
  /**
   * Where the log goes: `stderr`, `stdout` or a file path.
   * @default "stderr"
   */
  logDestination?: string;
  /**
   * Log line format: `json`, `pretty`, or `auto` (pretty on a terminal, JSON otherwise).
   * @default "auto"
   */
  logFormat?: string;
  /**
   * A command running at least this long is logged as slow, in milliseconds.
   * @default 1000
   */
  slowCommandMs?: number;
  /** When set, `GET /metrics` needs `Authorization: Bearer <metricsToken>`; unset, it is open like `/healthz`. */
  metricsToken?: string;
}

/** The transport part of the options: where and how the server listens and what it speaks. */
export type TransportConfig = Pick<
  ServerOptions,
  "bindAddress" | "port" | "maxConnections" | "protocolVersions" | "securityLevel" | "maxMessageBytes" | "tlsCert" | "tlsKey"
>;

/** `ServerOptions` with every default applied. */
export type ResolvedServerOptions = Required<
  Omit<ServerOptions, "tlsCert" | "tlsKey" | "jwtSecret" | "jwks" | "policyFile" | "metricsToken">
> &
  Pick<ServerOptions, "tlsCert" | "tlsKey" | "jwtSecret" | "jwks" | "policyFile" | "metricsToken">;

type OptionType = "string" | "int" | "bool" | "level" | "versions";

interface OptionSpec {
  key: keyof ServerOptions;
  type: OptionType;
  help: string;
  /** Default as shown in `--help`; undefined = unset. */
  fallback?: () => ServerOptions[keyof ServerOptions];
}

/** The one table of options: defaults, env names, flags and help all derive from it. */
export const OPTION_SPECS: readonly OptionSpec[] = [
  { key: "bindAddress", type: "string", fallback: () => "127.0.0.1", help: "address to listen on" },
  { key: "port", type: "int", fallback: () => 9000, help: "TCP port (0 = any free port)" },
  { key: "maxConnections", type: "int", fallback: () => 1024, help: "open connections at most" },
  {
    key: "protocolVersions",
    type: "versions",
    fallback: () => [ProtocolVersion.PROTOCOL_VERSION_1_0],
    help: "protocol versions spoken, e.g. 1.0",
  },
  {
    key: "securityLevel",
    type: "level",
    fallback: () => SecurityLevel.STANDARD,
    help: "minimum session level: low (loopback only), standard, high",
  },
  { key: "maxMessageBytes", type: "int", fallback: () => 4 * 1024 * 1024, help: "largest message, bytes" },
  { key: "maxInflightCommands", type: "int", fallback: () => 256, help: "commands in flight per session" },
  { key: "maxBatchSize", type: "int", fallback: () => 100, help: "commands per batch" },
  { key: "heartbeatIntervalMs", type: "int", fallback: () => 15_000, help: "ping interval, ms" },
  { key: "defaultTimeoutMs", type: "int", fallback: () => 30_000, help: "default command timeout, ms" },
  { key: "maxTimeoutMs", type: "int", fallback: () => 300_000, help: "largest command timeout, ms" },
  { key: "maxOutboundMessages", type: "int", fallback: () => 1024, help: "queued messages per session" },
  { key: "slowConsumerTimeoutMs", type: "int", fallback: () => 10_000, help: "full queue before slow_consumer, ms" },
  { key: "resumeBufferMessages", type: "int", fallback: () => 4096, help: "messages kept for resume" },
  { key: "resumeBufferBytes", type: "int", fallback: () => 1024 * 1024, help: "bytes kept for resume per session" },
  { key: "maxDetachedBytes", type: "int", fallback: () => 256 * 1024 * 1024, help: "bytes all detached sessions hold, then oldest evicted" },
  {
    key: "maxDetachedBytesPerPrincipal",
    type: "int",
    fallback: () => 64 * 1024 * 1024,
    help: "bytes one principal's detached sessions hold, then oldest evicted",
  },
  { key: "maxSessionsPerPrincipal", type: "int", fallback: () => 128, help: "sessions per principal (attached + detached)" },
  { key: "maxWatchesPerSession", type: "int", fallback: () => 64, help: "context watches per session" },
  { key: "maxSubscriptionsPerSession", type: "int", fallback: () => 16, help: "event subscriptions per session" },
  { key: "resumeTtlMs", type: "int", fallback: () => 60_000, help: "how long a disconnected session is kept, ms" },
  { key: "instanceHeartbeatMs", type: "int", fallback: () => 1000, help: "with a Redis store: liveness heartbeat interval, ms" },
  { key: "instanceDeadAfterMs", type: "int", fallback: () => 3000, help: "with a Redis store: an instance silent this long is dead, ms" },
  { key: "shutdownGraceMs", type: "int", fallback: () => 10_000, help: "on SIGTERM, time in-flight commands get to finish, ms" },
  { key: "expiryWarningMs", type: "int", fallback: () => 60_000, help: "session.expiring lead time, ms" },
  { key: "tlsCert", type: "string", help: "TLS certificate PEM file" },
  { key: "tlsKey", type: "string", help: "TLS private key PEM file" },
  { key: "jwtSecret", type: "string", help: "HS256 secret (default: generated into the state folder)" },
  { key: "jwks", type: "string", help: "JWKS file path or URL for RS256/ES256/EdDSA tokens" },
  { key: "jwtIssuer", type: "string", fallback: () => "mcp", help: "required iss claim" },
  { key: "jwtAudience", type: "string", fallback: () => "mcp", help: "required aud claim" },
  { key: "clockToleranceSec", type: "int", fallback: () => 30, help: "clock tolerance, s" },
  { key: "policyFile", type: "string", help: "roles → permissions JSON file" },
  { key: "store", type: "string", fallback: () => "memory", help: "memory | sqlite:PATH | redis://HOST:PORT" },
  { key: "stateDir", type: "string", fallback: () => ".mcp", help: "local state folder" },
  { key: "workspaceRoot", type: "string", fallback: () => process.cwd(), help: "root for the built-in tools" },
  { key: "execEnabled", type: "bool", fallback: () => false, help: "enable the exec tool" },
  { key: "inspectorAllow", type: "string", fallback: () => "loopback", help: "who may open /inspector: loopback | off | any | IP,IP" },
  { key: "logLevel", type: "string", fallback: () => "info", help: "log level: fatal error warn info debug trace silent" },
  { key: "logDestination", type: "string", fallback: () => "stderr", help: "log to stderr, stdout or a file" },
  { key: "logFormat", type: "string", fallback: () => "auto", help: "log format: auto (pretty on a terminal), json, pretty" },
  { key: "slowCommandMs", type: "int", fallback: () => 1000, help: "log commands running this long, ms" },
  { key: "metricsToken", type: "string", help: "bearer token GET /metrics requires (default: none)" },
];

/** `maxConnections` → `max-connections` (flag) / `MCP_MAX_CONNECTIONS` (env). */
export function flagName(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}
export function envName(key: string): string {
  return `MCP_${flagName(key).replace(/-/g, "_").toUpperCase()}`;
}

/**
 * Applies defaults and checks values. The only place defaults live. Throws `TypeError` for a
 * value out of range, naming the option.
 */
export function resolveServerOptions(options: ServerOptions = {}): ResolvedServerOptions {
  const out: Record<string, unknown> = {};
  for (const spec of OPTION_SPECS) {
    const v = options[spec.key] ?? spec.fallback?.();
    if (v !== undefined) out[spec.key] = v;
  }
  // The loop above filled every key that has a fallback; the rest stay optional.
  const r = out as ResolvedServerOptions;
  for (const key of [
    "maxConnections",
    "maxMessageBytes",
    "maxInflightCommands",
    "maxBatchSize",
    "heartbeatIntervalMs",
    "defaultTimeoutMs",
    "maxTimeoutMs",
    "maxOutboundMessages",
    "resumeBufferMessages",
    "resumeBufferBytes",
    "maxDetachedBytes",
    "maxDetachedBytesPerPrincipal",
    "maxSessionsPerPrincipal",
    "maxWatchesPerSession",
    "maxSubscriptionsPerSession",
  ] as const) {
    if (!Number.isInteger(r[key]) || r[key] < 1) {
      throw new TypeError(`option "${key}" must be a positive integer, got ${String(r[key])}`);
    }
  }
  if (!Number.isInteger(r.port) || r.port < 0 || r.port > 65535) {
    throw new TypeError(`option "port" must be an integer from 0 to 65535, got ${String(r.port)}`);
  }
  if (r.defaultTimeoutMs > r.maxTimeoutMs) {
    throw new TypeError(`option "defaultTimeoutMs" (${r.defaultTimeoutMs}) must be <= "maxTimeoutMs" (${r.maxTimeoutMs})`);
  }
  if ((r.tlsCert === undefined) !== (r.tlsKey === undefined)) {
    throw new TypeError(`options "tlsCert" and "tlsKey" go together: set both or neither`);
  }
  if (!isLogLevel(r.logLevel)) {
    throw new TypeError(`option "logLevel" must be one of ${LOG_LEVELS.join(", ")}, got ${JSON.stringify(r.logLevel)}`);
  }
  if (!isLogFormat(r.logFormat)) {
    throw new TypeError(`option "logFormat" must be one of ${LOG_FORMATS.join(", ")}, got ${JSON.stringify(r.logFormat)}`);
  }
  if (!Number.isInteger(r.slowCommandMs) || r.slowCommandMs < 0) {
    throw new TypeError(`option "slowCommandMs" must be a non-negative integer, got ${String(r.slowCommandMs)}`);
  }
  if (r.protocolVersions.length === 0) {
    throw new TypeError(`option "protocolVersions" must name at least one version`);
  }
  return r;
}

function parseValue(spec: OptionSpec, raw: unknown, source: string): ServerOptions[keyof ServerOptions] {
  const bad = (want: string) =>
    new TypeError(`${source}: "${spec.key}" must be ${want}, got ${JSON.stringify(raw)}`);
  switch (spec.type) {
    case "string":
      if (typeof raw !== "string" || raw === "") throw bad("a non-empty string");
      return raw;
    case "int": {
      const n = typeof raw === "number" ? raw : typeof raw === "string" && /^\d+$/.test(raw) ? Number(raw) : NaN;
      if (!Number.isInteger(n)) throw bad("an integer");
      return n;
    }
    case "bool":
      if (typeof raw === "boolean") return raw;
      if (raw === "true" || raw === "1") return true;
      if (raw === "false" || raw === "0") return false;
      throw bad("true or false");
    case "level": {
      const level = typeof raw === "string" ? parseSecurityLevel(raw) : undefined;
      if (level === undefined) throw bad("one of low, standard, high");
      return level;
    }
    case "versions": {
      const list = typeof raw === "string" ? raw.split(",") : Array.isArray(raw) ? raw : undefined;
      const versions = list?.map((v) => (typeof v === "string" ? parseProtocolVersion(v.trim()) : undefined));
      if (versions === undefined || versions.length === 0 || versions.some((v) => v === undefined)) {
        throw bad('a comma-separated list of versions such as "1.0"');
      }
      return versions as ProtocolVersion[]; // checked above: no undefined left
    }
  }
}

/** `"high"` → `SecurityLevel.HIGH`; undefined for anything else. */
export function parseSecurityLevel(s: string): SecurityLevel | undefined {
  return ({ low: SecurityLevel.LOW, standard: SecurityLevel.STANDARD, high: SecurityLevel.HIGH } as const)[
    s.toLowerCase() as "low"
  ];
}

/** `"1.0"` → `ProtocolVersion.PROTOCOL_VERSION_1_0`. */
export function parseProtocolVersion(s: string): ProtocolVersion | undefined {
  return s === "1.0" || s === "1" ? ProtocolVersion.PROTOCOL_VERSION_1_0 : undefined;
}

/** `ProtocolVersion.PROTOCOL_VERSION_1_0` → `"1.0"`. */
export function protocolVersionName(v: ProtocolVersion): string {
  return ProtocolVersion[v]?.replace(/^PROTOCOL_VERSION_/, "").replace("_", ".") ?? String(v);
}

/** Where each source of configuration comes from (for `loadServerOptions`). */
export interface ConfigSources {
  /** Parsed command-line flags, keyed by option name (`port`, `maxConnections`, …). */
  flags?: Partial<Record<keyof ServerOptions, unknown>>;
  /** Environment; `MCP_*` variables are read. @default process.env */
  env?: Record<string, string | undefined>;
  /** JSON config file with option names as keys; `MCP_CONFIG` names one when unset. */
  configFile?: string;
}

/** Layers flags > `MCP_*` env > config file and returns options (defaults not yet applied). */
export async function loadServerOptions(sources: ConfigSources = {}): Promise<ServerOptions> {
  const env = sources.env ?? process.env;
  const file = sources.configFile ?? env["MCP_CONFIG"];
  let fileValues: Record<string, unknown> = {};
  if (file !== undefined && file !== "") {
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (e) {
      throw new TypeError(`config file ${file}: cannot read it (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (e) {
      throw new TypeError(`config file ${file}: not valid JSON (${(e as Error).message})`);
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
      throw new TypeError(`config file ${file}: must hold a JSON object of options`);
    }
    fileValues = parsed as Record<string, unknown>;
    const known = new Set<string>(OPTION_SPECS.map((s) => s.key));
    const unknown = Object.keys(fileValues).filter((k) => !known.has(k));
    if (unknown.length > 0) throw new TypeError(`config file ${file}: unknown option(s) ${unknown.join(", ")}`);
  }
  const out: Record<string, unknown> = {};
  for (const spec of OPTION_SPECS) {
    const flag = sources.flags?.[spec.key];
    const envValue = env[envName(spec.key)];
    if (flag !== undefined) out[spec.key] = parseValue(spec, flag, `flag --${flagName(spec.key)}`);
    else if (envValue !== undefined && envValue !== "") out[spec.key] = parseValue(spec, envValue, envName(spec.key));
    else if (fileValues[spec.key] !== undefined) out[spec.key] = parseValue(spec, fileValues[spec.key], `config file ${file}`);
  }
  // Env names the issue fixed for security settings (MCP_JWT_SECRET, MCP_JWKS, MCP_TLS_CERT …) are
  // exactly envName() of the option keys above, so no aliases are needed.
  return out as ServerOptions;
}
