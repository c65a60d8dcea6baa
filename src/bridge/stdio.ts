/**
 * `mcp bridge --stdio`: a local process a desktop assistant launches. It holds one session stream
 * to our server (our TypeScript client) and speaks the Model Context Protocol on stdin/stdout
 * through the official SDK's `serveStdio`, which decides the era from the opening exchange
 * (2025-era `initialize`, or 2026-07-28). Nothing but the protocol is written to stdout.
 */
import type { Readable, Writable } from "node:stream";
import { StdioServerTransport, serveStdio } from "@modelcontextprotocol/server/stdio";
import { SecurityLevel } from "../../gen/mcp/v1/types_pb.js";
import { createMcpClient, type McpSession } from "../client/index.js";
import type { McpError } from "../errors.js";
import { clientBackend } from "./backend.js";
import { createModelServer } from "./model-server.js";
import { resolveMaxTextBytes } from "./no-chunks.js";

/** Options of `startStdioBridge`. */
export interface StdioBridgeOptions {
  /** Our server, e.g. `http://127.0.0.1:9000`. */
  url: string;
  /** Our JWT; none for a server that admits LOW on loopback. */
  token?: string;
  /** @default process.stdin */
  stdin?: Readable;
  /** @default process.stdout */
  stdout?: Writable;
  /**
   * Most bytes of text a model gets from one `fs.read`; set it to the server's `maxReadBytes` when
   * that is not the default, so the answer is the one `/mcp` gives (docs/bridge.md).
   * @default 1048576 (1 MiB)
   */
  maxTextBytes?: number;
  /** Errors of background work and of the SDK (never on stdout). @default ignore */
  onerror?: (e: unknown) => void;
}

/** Why a bridge stopped. */
export interface StdioBridgeEnd {
  by: "client" | "server";
  error?: McpError;
}

/** A running bridge. */
export interface StdioBridge {
  /** The session on our server. */
  readonly session: McpSession;
  /**
   * Resolves when the bridge stops: `client` when stdin ended or `close()` was called, `server`
   * when our session ended (with the error that ended it, if any).
   */
  readonly done: Promise<StdioBridgeEnd>;
  /** Stops: ends the Model Context Protocol connection and our session. */
  close(): Promise<void>;
}

/** Connects to our server, then serves the Model Context Protocol on stdio. */
export async function startStdioBridge(options: StdioBridgeOptions): Promise<StdioBridge> {
  const onerror = options.onerror ?? (() => {});
  const stdin = options.stdin ?? process.stdin;
  const stdout = options.stdout ?? process.stdout;
  // Checked before connecting, so a bad option leaves no session behind.
  const maxTextBytes = resolveMaxTextBytes(options.maxTextBytes);
  const client = createMcpClient({ baseUrl: options.url, ...(options.token === undefined ? {} : { token: options.token }) });
  // Over TLS ask for HIGH (granted as far as the token allows), as `mcp call` does; cleartext may not (§5).
  const session = await client.connect({
    clientName: "mcp-bridge",
    securityLevel: options.url.startsWith("https:") ? SecurityLevel.HIGH : SecurityLevel.UNSPECIFIED,
  });
  const backend = clientBackend(client, session, { maxTextBytes });
  const handle = serveStdio(({ era }) => createModelServer(backend, { era, pushAllChanges: true, onerror }), {
    transport: new StdioServerTransport(stdin, stdout),
    onerror,
  });

  let stopped = false;
  let finish: (end: StdioBridgeEnd) => void = () => {};
  const done = new Promise<StdioBridgeEnd>((resolve) => (finish = resolve));
  async function stop(reason: StdioBridgeEnd): Promise<void> {
    if (stopped) return;
    stopped = true;
    stdin.removeListener("end", onEnd);
    await handle.close().catch(onerror);
    await session.close();
    finish(reason);
  }
  // The stdio binding: a client that closes our stdin is done with us.
  const onEnd = () => void stop({ by: "client" });
  stdin.once("end", onEnd);
  session.closed.then((error) => stop(error === undefined ? { by: "server" } : { by: "server", error })).catch(onerror);
  return { session, done, close: () => stop({ by: "client" }) };
}
