/**
 * The TypeScript client: plain Connect clients for the unary services, and `connect()` for a
 * session stream with handshake, commands awaited by id, context sync, events and ping.
 */
import type { JsonObject } from "@bufbuild/protobuf";
import { createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { AdminService } from "../../gen/mcp/v1/admin_pb.js";
import { CommandService } from "../../gen/mcp/v1/command_pb.js";
import { ContextService } from "../../gen/mcp/v1/context_pb.js";
import { EventService } from "../../gen/mcp/v1/event_pb.js";
import { SessionService } from "../../gen/mcp/v1/session_pb.js";
import { fromConnectError } from "./errors.js";
import { createH2GrpcTransport } from "./h2-grpc-transport.js";
import { createH2Channel } from "./h2-channel.js";
import { h2SessionStream } from "./session-h2.js";
import { openSession, outputOf, type McpSession, type SessionOptions } from "./session.js";
import { connectSessionStream, type OpenSessionStream } from "./session-stream.js";

export type { CallOptions, ClientPayload, McpSession, SessionOptions, SessionState, SessionStateChange } from "./session.js";

/** Options of `createMcpClient`. */
export interface McpClientOptions {
  /** The server, e.g. `http://127.0.0.1:9000`. */
  baseUrl: string;
  /** A JWT sent as `Authorization: Bearer` on every request and in the Handshake. */
  token?: string;
  /**
   * Wire protocol for unary and server-streaming calls. The session stream always uses HTTP/2.
   * `"grpc"` (HTTP/2 only) is the fastest for unary calls: they go straight to node:http2 on one
   * shared connection; `"connect"` also works over HTTP/1.1.
   * @default "connect"
   */
  protocol?: "connect" | "grpc";
  /**
   * HTTP version for unary calls with the Connect protocol (gRPC is always HTTP/2).
   * @default "2"
   */
  httpVersion?: "1.1" | "2";
  /** A prebuilt transport (overrides `protocol` / `httpVersion`). */
  transport?: Transport;
  /**
   * Sessions (`connect()`) sharing one HTTP/2 connection, each its own stream, like the calls of a
   * gRPC channel; the next session past it opens another connection, and a connection closes with
   * its last session. 1 gives each session its own connection. The server's
   * SETTINGS_MAX_CONCURRENT_STREAMS caps it too (ours: 2^32 − 1). Sessions on one connection
   * share its fate: when it breaks, all of them reconnect and resume (docs/client.md).
   * @default 100
   */
  maxSessionsPerConnection?: number;
}

/** A connected client. */
export interface McpClient {
  readonly commands: Client<typeof CommandService>;
  readonly contexts: Client<typeof ContextService>;
  readonly events: Client<typeof EventService>;
  readonly admin: Client<typeof AdminService>;
  /**
   * Opens a session and completes the handshake; rejects with McpError when the server refuses
   * or cannot be reached (`TRANSPORT connection_lost`). The session then reconnects by itself
   * (`SessionOptions.reconnect`).
   */
  connect(options?: SessionOptions): Promise<McpSession>;
  /** Runs one tool over unary `Execute` and returns its JSON output. */
  call(tool: string, args?: JsonObject, options?: { timeoutMs?: number }): Promise<JsonObject>;
  /** HTTP/2 connections the sessions hold now (0 with a caller's own `transport`). */
  readonly sessionConnections: number;
  /**
   * Closes every session opened by this client for good (as `McpSession.close()` does), then
   * their connections; resolves once that is done. Unary calls still work; `connect()` opens afresh.
   */
  close(): Promise<void>;
}

/** Creates a client. */
export function createMcpClient(options: McpClientOptions): McpClient {
  const headers = options.token === undefined ? undefined : { authorization: `Bearer ${options.token}` };
  const bearer: Interceptor = (next) => async (req) => {
    if (headers !== undefined) req.header.set("authorization", headers.authorization);
    return next(req);
  };
  const interceptors = [bearer];
  const transport = options.transport ?? defaultTransport(options, interceptors, headers);
  // The session stream: node:http2 with gRPC framing and one write per tick (session-h2.ts);
  // a caller's own transport is used as given.
  const channel =
    options.transport === undefined && /^https?:\/\//i.test(options.baseUrl)
      ? createH2Channel({ origin: new URL(options.baseUrl).origin, maxStreamsPerConnection: options.maxSessionsPerConnection ?? 100 })
      : undefined;
  const openStream: OpenSessionStream =
    channel !== undefined
      ? h2SessionStream({ baseUrl: options.baseUrl, channel, ...(headers === undefined ? {} : { headers }) })
      : connectSessionStream(createClient(SessionService, options.transport ?? createGrpcTransport({ baseUrl: options.baseUrl, interceptors })));
  const commands = createClient(CommandService, transport);
  const sessions = new Set<McpSession>();
  return {
    commands,
    contexts: createClient(ContextService, transport),
    events: createClient(EventService, transport),
    admin: createClient(AdminService, transport),
    async connect(o = {}) {
      const s = await openSession(openStream, options.token, o);
      sessions.add(s);
      void s.closed.then(() => sessions.delete(s));
      return s;
    },
    async call(tool, args = {}, o = {}) {
      try {
        const r = await commands.execute({ tool, payload: { case: "arguments", value: args }, timeoutMs: o.timeoutMs ?? 0 });
        return outputOf(r);
      } catch (e) {
        throw fromConnectError(e) ?? e;
      }
    },
    get sessionConnections() {
      return channel?.connections ?? 0;
    },
    async close() {
      const closing = [...sessions].map((s) => s.close());
      sessions.clear();
      // After the sessions' SessionClose went out and the server ended their streams.
      await Promise.all(closing);
      channel?.close();
    },
  };
}

/**
 * gRPC over HTTP/2: unary calls on node:http2 directly (h2-grpc-transport.ts), streaming calls
 * through connect-node. Otherwise connect-node's Connect transport.
 */
function defaultTransport(options: McpClientOptions, interceptors: Interceptor[], headers: Record<string, string> | undefined): Transport {
  if (options.protocol !== "grpc") {
    return createConnectTransport({ baseUrl: options.baseUrl, httpVersion: options.httpVersion ?? "2", interceptors });
  }
  const streams = createGrpcTransport({ baseUrl: options.baseUrl, interceptors });
  return /^https?:\/\//i.test(options.baseUrl) ? createH2GrpcTransport({ baseUrl: options.baseUrl, streams, ...(headers === undefined ? {} : { headers }) }) : streams;
}


