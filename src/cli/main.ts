/**
 * `mcp`: the command line. `mcp serve` runs a server; `token`, `call`, `tools`, `context` and
 * `sessions` talk to one. Exit codes: 0 ok, 1 the server answered with an error, 2 usage.
 */
import { fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { userInfo } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { ContextSyncSchema } from "../../gen/mcp/v1/context_pb.js";
import { EventSchema } from "../../gen/mcp/v1/event_pb.js";
import { GetStatusResponseSchema, SessionInfoSchema } from "../../gen/mcp/v1/admin_pb.js";
import { SecurityLevel } from "../../gen/mcp/v1/types_pb.js";
import { createMcpClient, fromConnectError, type McpClient } from "../client/index.js";
import {
  OPTION_SPECS,
  envName,
  flagName,
  loadServerOptions,
  protocolVersionName,
  resolveServerOptions,
  type ServerOptions,
} from "../config.js";
import { McpError } from "../errors.js";
import { loadOrCreateDevSecret, mintToken, levelName } from "../security/index.js";
import { createMcpServer } from "../server/server.js";
import { VERSION } from "../version.js";
import { formatStatus } from "../observability/status-text.js";

class UsageError extends Error {
  override name = "UsageError";
}

const HELP = `mcp ${VERSION} — the Machine Context Protocol toolkit

Usage:
  mcp serve [--port N] [--bind ADDR] [--config FILE] [options]   run a server (mcp serve --help lists every option)
  mcp token --sub NAME --role ROLE [--role ROLE2] [--ttl 1h] [--level standard|high]
                                                                  mint a development token (HS256, the server's secret)
  mcp tools                                                       list the tools you may run
  mcp call TOOL ['JSON'] [--timeout MS]                           run a tool; output events print live, then the result
  mcp context get ID                                              print a context
  mcp context set ID KEY JSON [--expect VERSION]                  set one key (compare-and-set with --expect)
  mcp context watch ID [--from VERSION]                           print each change as it arrives
  mcp sessions list | revoke ID                                   administer sessions (needs sessions:admin)
  mcp bridge --stdio [--url URL] [--token T]                      serve the Model Context Protocol on stdin/stdout,
                                                                  translated onto one session with the server
                                                                  (--max-text-bytes N: the server's fs.read cap)
  mcp status [--json]                                             version, uptime, sessions, commands, store, top tools (needs sessions:admin)
  mcp --version | --help

Client commands connect to --url (env MCP_URL, default http://127.0.0.1:9000) with --token
(env MCP_TOKEN); without one they mint a short-lived developer token from the local state
folder's development secret (--state-dir, env MCP_STATE_DIR, default .mcp), as \`mcp serve\` creates.
`;

function serveHelp(): string {
  const rows = OPTION_SPECS.map((s) => {
    const d = s.fallback?.();
    const shown = d === undefined ? "" : ` (default ${Array.isArray(d) ? d.map((v) => protocolVersionName(v as number)).join(",") : s.type === "level" ? levelName(d as number) : String(d)})`;
    return `  --${flagName(s.key).padEnd(26)} ${envName(s.key).padEnd(30)} ${s.help}${shown}`;
  });
  return `mcp serve — run a Machine Context Protocol server

Every option can be given as a flag, as an environment variable, or in a JSON config file
(--config FILE or MCP_CONFIG, keys as in ServerOptions, e.g. {"port": 9000}).
Precedence: flags > environment > config file > defaults. \`mcp serve\` stores context in
sqlite:<state-dir>/context.db unless --store says otherwise, and without --jwt-secret / --jwks
it generates a development secret in the state folder and prints a ready-to-use token.

  flag                         environment                    meaning
${rows.join("\n")}
  --config FILE                MCP_CONFIG                     JSON config file
`;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case undefined:
    case "--help":
    case "-h":
    case "help":
      process.stdout.write(HELP);
      return command === undefined ? 2 : 0;
    case "--version":
    case "-v":
      process.stdout.write(`${VERSION}\n`);
      return 0;
    case "bridge":
      return bridge(rest);
    case "serve":
      return serve(rest);
    case "token":
      return token(rest);
    case "tools":
    case "call":
    case "context":
    case "sessions":
    case "status":
      return clientCommand(command, rest);
    default:
      throw new UsageError(`unknown command "${command}" (see mcp --help)`);
  }
}

async function serve(args: string[]): Promise<number> {
  const options: Record<string, { type: "string" | "boolean"; short?: string }> = {
    config: { type: "string" },
    help: { type: "boolean", short: "h" },
    bind: { type: "string" },
  };
  for (const s of OPTION_SPECS) options[flagName(s.key)] = { type: s.type === "bool" ? "boolean" : "string" };
  const { values } = parseArgs({ args, options, strict: true, allowPositionals: false });
  if (values["help"] === true) {
    process.stdout.write(serveHelp());
    return 0;
  }
  const flags: Partial<Record<keyof ServerOptions, unknown>> = {};
  for (const s of OPTION_SPECS) if (values[flagName(s.key)] !== undefined) flags[s.key] = values[flagName(s.key)];
  if (values["bind"] !== undefined) flags.bindAddress = values["bind"];
  const loaded = await loadServerOptions({ flags, ...(typeof values["config"] === "string" ? { configFile: values["config"] } : {}) });
  const stateDir = loaded.stateDir ?? ".mcp";
  const opts: ServerOptions = { store: `sqlite:${join(stateDir, "context.db")}`, ...loaded };
  let devToken: string | undefined;
  if (opts.jwtSecret === undefined && opts.jwks === undefined) {
    const dev = await loadOrCreateDevSecret(stateDir);
    opts.jwtSecret = dev.secret;
    const r = resolveServerOptions(opts);
    devToken = await mintToken({
      secret: dev.secret,
      subject: userInfo().username || "developer",
      roles: ["developer"],
      ttlSec: 24 * 3600,
      issuer: r.jwtIssuer,
      audience: r.jwtAudience,
    });
    process.stderr.write(`${dev.created ? "generated" : "using"} development secret ${dev.path}\n`);
  }
  const server = createMcpServer(opts);
  const where = await server.listen();
  const o = server.options;
  process.stdout.write(
    [
      `mcp ${VERSION} listening on ${where.url} (HTTP/2 and HTTP/1.1${o.tlsCert === undefined ? ", cleartext" : ", TLS"}; Connect, gRPC, gRPC-Web)`,
      `  store: ${o.store}   workspace: ${o.workspaceRoot}   security level: ${levelName(o.securityLevel)}${o.execEnabled ? "   exec: enabled" : ""}`,
      ...(devToken === undefined
        ? []
        : [
            `  development token (developer role, 24 h):`,
            `    export MCP_TOKEN=${devToken}`,
            // The token rides in the fragment, which the browser never sends; the page keeps it in the tab only.
            ...(o.inspectorAllow === "off" ? [] : [`  inspector: ${where.url}/inspector#token=${devToken}`]),
          ]),
      `  try:  mcp tools     or     buf curl --http2-prior-knowledge --schema proto -H "Authorization: Bearer $MCP_TOKEN" \\`,
      `          -d '{"tool":"echo","arguments":{"text":"hi"}}' ${where.url}/mcp.v1.CommandService/Execute`,
      "",
    ].join("\n"),
  );
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once("SIGINT", stop);
    process.once("SIGTERM", stop);
  });
  // A second signal means "now": skip the grace period (issue 15, docs/deploy.md).
  const now = () => {
    process.stderr.write("second signal: exiting at once\n");
    process.exit(1);
  };
  process.once("SIGINT", now);
  process.once("SIGTERM", now);
  process.stderr.write(`shutting down: in-flight commands get ${o.shutdownGraceMs} ms\n`);
  await server.close({ graceMs: o.shutdownGraceMs });
  process.stderr.write("shut down\n");
  return 0;
}

function parseTtl(s: string): number {
  const m = /^(\d+)\s*(s|m|h|d)?$/.exec(s.trim());
  if (m === null) throw new UsageError(`--ttl must look like 90s, 15m, 1h or 7d, got "${s}"`);
  return Number(m[1]) * { s: 1, m: 60, h: 3600, d: 86400 }[(m[2] ?? "s") as "s"];
}

async function devSecret(stateDir: string | undefined): Promise<string> {
  const fromEnv = process.env[envName("jwtSecret")];
  if (fromEnv !== undefined && fromEnv !== "") return fromEnv;
  return (await loadOrCreateDevSecret(stateDir ?? process.env["MCP_STATE_DIR"] ?? ".mcp")).secret;
}

async function token(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      sub: { type: "string" },
      role: { type: "string", multiple: true },
      ttl: { type: "string", default: "1h" },
      level: { type: "string", default: "standard" },
      "state-dir": { type: "string" },
      jti: { type: "string" },
    },
    strict: true,
  });
  if (values.sub === undefined || values.sub === "") throw new UsageError("mcp token needs --sub NAME");
  if (values.level !== "standard" && values.level !== "high") throw new UsageError(`--level must be standard or high, got "${values.level}"`);
  const env = process.env;
  const t = await mintToken({
    secret: await devSecret(values["state-dir"]),
    subject: values.sub,
    roles: values.role ?? [],
    ttlSec: parseTtl(values.ttl),
    level: values.level,
    issuer: env[envName("jwtIssuer")] ?? "mcp",
    audience: env[envName("jwtAudience")] ?? "mcp",
    ...(values.jti === undefined ? {} : { jti: values.jti }),
  });
  process.stdout.write(`${t}\n`);
  return 0;
}

function parseJson(text: string, what: string): JsonValue {
  try {
    return JSON.parse(text) as JsonValue;
  } catch (e) {
    throw new UsageError(`${what} is not valid JSON: ${(e as Error).message}`);
  }
}

async function clientCommand(command: string, args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      url: { type: "string" },
      token: { type: "string" },
      timeout: { type: "string" },
      expect: { type: "string" },
      from: { type: "string" },
      "state-dir": { type: "string" },
      json: { type: "boolean" },
    },
    strict: true,
    allowPositionals: true,
  });
  const url = values.url ?? process.env["MCP_URL"] ?? "http://127.0.0.1:9000";
  let tok = values.token ?? process.env["MCP_TOKEN"];
  if (tok === undefined || tok === "") {
    tok = await mintToken({
      secret: await devSecret(values["state-dir"]),
      subject: userInfo().username || "developer",
      roles: ["developer"],
      ttlSec: 3600,
      issuer: process.env[envName("jwtIssuer")] ?? "mcp",
      audience: process.env[envName("jwtAudience")] ?? "mcp",
    });
  }
  const client = createMcpClient({ baseUrl: url, token: tok });
  const out = (v: unknown) => process.stdout.write(`${JSON.stringify(v, null, 2)}\n`);
  switch (command) {
    case "tools": {
      const r = await client.commands.listTools({});
      for (const t of r.tools) {
        process.stdout.write(`${t.name.padEnd(12)} ${levelName(t.securityLevel).padEnd(9)} ${t.description}\n`);
      }
      return 0;
    }
    case "call":
      return call(client, url, positionals, values.timeout);
    case "context":
      return context(client, positionals, values);
    case "sessions": {
      const [sub, id] = positionals;
      if (sub === "list" || sub === undefined) {
        const r = await client.admin.listSessions({});
        out(r.sessions.map((s) => toJson(SessionInfoSchema, s)));
        return 0;
      }
      if (sub === "revoke" && id !== undefined) {
        await client.admin.revokeSession({ sessionId: id });
        process.stdout.write(`revoked ${id}\n`);
        return 0;
      }
      throw new UsageError("usage: mcp sessions list | mcp sessions revoke ID");
    }
    case "status": {
      const r = await client.admin.getStatus({});
      if (values.json === true) out(toJson(GetStatusResponseSchema, r));
      else process.stdout.write(formatStatus(r));
      return 0;
    }
  }
  return 2;
}

async function call(client: McpClient, url: string, positionals: string[], timeout: string | undefined): Promise<number> {
  const [tool, json] = positionals;
  if (tool === undefined) throw new UsageError("usage: mcp call TOOL ['JSON'] [--timeout MS]");
  const args = json === undefined ? {} : parseJson(json, "the arguments");
  if (typeof args !== "object" || args === null || Array.isArray(args)) throw new UsageError("the arguments must be a JSON object");
  const timeoutMs = timeout === undefined ? 0 : Number(timeout);
  if (!Number.isInteger(timeoutMs) || timeoutMs < 0) throw new UsageError(`--timeout must be milliseconds, got "${timeout}"`);
  // Over TLS, HIGH — granted as far as the token allows — so a HIGH tool (exec, fs.write) runs
  // when the token permits it, as unary calls get; a cleartext session may not ask for HIGH (§5).
  const level = url.startsWith("https:") ? SecurityLevel.HIGH : SecurityLevel.UNSPECIFIED;
  const session = await client.connect({ heartbeatIntervalMs: 0, securityLevel: level });
  const abort = new AbortController();
  process.once("SIGINT", () => abort.abort());
  try {
    const result = await session.call(tool, args, {
      timeoutMs,
      signal: abort.signal,
      onEvent: (e) => {
        const data = e.data ?? {};
        if (e.type === "command.output" && typeof data["text"] === "string") {
          (data["stream"] === "stderr" ? process.stderr : process.stdout).write(data["text"]);
        } else {
          process.stderr.write(`${JSON.stringify(toJson(EventSchema, e))}\n`);
        }
      },
    });
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    return 0;
  } finally {
    await session.close();
  }
}

async function context(client: McpClient, positionals: string[], values: { expect?: string | undefined; from?: string | undefined }): Promise<number> {
  const [sub, id, key, json] = positionals;
  if (id === undefined) throw new UsageError("usage: mcp context get|set|watch ID …");
  const print = (s: unknown) => process.stdout.write(`${JSON.stringify(s)}\n`);
  switch (sub) {
    case "get":
      print(toJson(ContextSyncSchema, await client.contexts.getContext({ contextId: id })));
      return 0;
    case "set": {
      if (key === undefined || json === undefined) throw new UsageError("usage: mcp context set ID KEY JSON [--expect VERSION]");
      const expected = values.expect === undefined ? 0n : BigInt(values.expect);
      const value = parseJson(json, "the value");
      const r = await client.contexts.updateContext({
        contextId: id,
        expectedVersion: expected,
        ops: [{ op: { case: "put", value: { key, value: fromJson(ValueSchema, value) } } }],
      });
      process.stdout.write(`${id} is now at version ${r.version}\n`);
      return 0;
    }
    case "watch": {
      const abort = new AbortController();
      process.once("SIGINT", () => abort.abort());
      try {
        for await (const s of client.contexts.watchContext({ contextId: id, knownVersion: BigInt(values.from ?? "0") }, { signal: abort.signal })) {
          print(toJson(ContextSyncSchema, s));
        }
      } catch (e) {
        if (!abort.signal.aborted) throw e;
      }
      return 0;
    }
    default:
      throw new UsageError(`unknown context command "${sub ?? ""}": get, set or watch`);
  }
}

/**
 * `mcp bridge --stdio`: for desktop assistants that launch a Model Context Protocol server as a
 * child process. stdout carries only that protocol; everything else goes to stderr.
 */
async function bridge(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { stdio: { type: "boolean" }, url: { type: "string" }, token: { type: "string" }, "max-text-bytes": { type: "string" } }, strict: true });
  if (values.stdio !== true) throw new UsageError("usage: mcp bridge --stdio [--url URL] [--token T] [--max-text-bytes N] (stdio is the only way in; HTTP clients use the server's /mcp)");
  const url = values.url ?? process.env["MCP_URL"] ?? "http://127.0.0.1:9000";
  const tok = values.token ?? process.env["MCP_TOKEN"];
  const maxText = values["max-text-bytes"];
  // The server's fs.read cap when it is not the default (docs/bridge.md).
  if (maxText !== undefined && !/^[1-9]\d*$/.test(maxText)) throw new UsageError("--max-text-bytes must be a positive integer (bytes)");
  const { startStdioBridge } = await import("../bridge/stdio.js");
  const running = await startStdioBridge({
    url,
    ...(maxText === undefined ? {} : { maxTextBytes: Number(maxText) }),
    ...(tok === undefined || tok === "" ? {} : { token: tok }),
    onerror: (e) => process.stderr.write(`mcp bridge: ${e instanceof Error ? e.message : String(e)}\n`),
  });
  process.stderr.write(`mcp bridge: session ${running.session.sessionId} on ${url}; speaking the Model Context Protocol on stdio\n`);
  const end = await running.done;
  if (end.by === "client") return 0;
  process.stderr.write(`mcp bridge: the session ended${end.error === undefined ? "" : ` (${end.error.code}: ${end.error.message})`}\n`);
  return 1;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    const err = fromConnectError(e) ?? e;
    if (err instanceof UsageError || err instanceof TypeError) {
      process.stderr.write(`mcp: ${err.message}\n`);
      process.exitCode = 2;
    } else if (err instanceof McpError) {
      process.stderr.write(`mcp: ${err.kind} ${err.code}: ${err.message}\n`);
      process.exitCode = 1;
    } else {
      process.stderr.write(`mcp: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exitCode = 1;
    }
  },
);
