/** Test fixtures: a real server on 127.0.0.1 port 0, real tokens, and a raw session stream. */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { createClient, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ClientMessageSchema, HandshakeSchema, PeerInfoSchema, SessionService, type HandshakeResult, type ServerMessage } from "../../gen/mcp/v1/session_pb.js";
import { ProtocolVersion } from "../../gen/mcp/v1/types_pb.js";
import { createPushable } from "../../src/pushable.js";
import { mintToken } from "../../src/security/index.js";
import { createMcpServer, type McpServer, type McpServerOptions } from "../../src/server/server.js";
import type { AuditEntry } from "../../src/security/index.js";

export const SECRET = "test-secret-0123456789-0123456789-abcdef";

export interface TestServer {
  server: McpServer;
  url: string;
  audit: AuditEntry[];
  token(subject?: string, roles?: string[], extra?: { level?: "standard" | "high"; ttlSec?: number; jti?: string }): Promise<string>;
  close(): Promise<void>;
}

/** Starts a server on a free loopback port with an HS256 secret, an in-memory store and an audit log. */
export async function startServer(options: McpServerOptions = {}): Promise<TestServer> {
  const audit: AuditEntry[] = [];
  const server = createMcpServer({
    port: 0,
    jwtSecret: SECRET,
    store: "memory",
    audit: (e) => audit.push(e),
    // Tests that read the log pass their own level and logStream.
    logLevel: "silent",
    ...options,
  });
  const { url } = await server.listen();
  return {
    server,
    url,
    audit,
    token: (subject = "alice", roles = ["developer"], extra = {}) =>
      mintToken({
        secret: SECRET,
        subject,
        roles,
        ttlSec: extra.ttlSec ?? 600,
        issuer: "mcp",
        audience: "mcp",
        ...(extra.level === undefined ? {} : { level: extra.level }),
        ...(extra.jti === undefined ? {} : { jti: extra.jti }),
      }),
    close: () => server.close(),
  };
}

export type ClientPayload = NonNullable<MessageInitShape<typeof ClientMessageSchema>["message"]>;

/** A session stream with nothing in between: send ClientMessages, read ServerMessages one by one. */
export interface RawStream {
  send(message: ClientPayload): void;
  /** The next message, or undefined when the stream ended. */
  next(): Promise<ServerMessage | undefined>;
  /** Everything until the stream ends. */
  rest(): Promise<ServerMessage[]>;
  /** The error the stream ended with, if the RPC failed. */
  readonly failure: unknown;
  /** Half-closes: everything sent so far still reaches the server, then the client goes quiet. */
  end(): void;
  close(): void;
}

/** Opens a raw stream over `transport` (default: connect-es gRPC over h2c to `url`). */
export function openRawStream(url: string, headers: Record<string, string> = {}, transport?: Transport): RawStream {
  const client = createClient(SessionService, transport ?? createGrpcTransport({ baseUrl: url }));
  const out = createPushable<ReturnType<typeof create<typeof ClientMessageSchema>>>();
  const abort = new AbortController();
  const it = client.connect(out, { headers, signal: abort.signal })[Symbol.asyncIterator]();
  let failure: unknown;
  const next = async () => {
    try {
      const r = await it.next();
      return r.done === true ? undefined : r.value;
    } catch (e) {
      failure = e;
      return undefined;
    }
  };
  return {
    send: (message) => out.push(create(ClientMessageSchema, { message })),
    next,
    async rest() {
      const all: ServerMessage[] = [];
      for (let m = await next(); m !== undefined; m = await next()) all.push(m);
      return all;
    },
    get failure() {
      return failure;
    },
    end() {
      out.end();
    },
    close() {
      out.end();
      abort.abort();
    },
  };
}

/** Opens a raw stream and completes a Handshake with `token`; throws unless the answer is a HandshakeResult. */
export async function openSession(url: string, token?: string): Promise<{ s: RawStream; sessionId: string; seq: bigint; result: HandshakeResult }> {
  const s = openRawStream(url);
  s.send(handshake(token));
  const hr = await s.next();
  if (hr?.message.case !== "handshakeResult") throw new Error(`expected a HandshakeResult, got ${hr?.message.case}`);
  return { s, sessionId: hr.message.value.sessionId, seq: hr.seq, result: hr.message.value };
}

/** A Handshake for protocol 1.0 with an optional token. */
export function handshake(token?: string, extra: MessageInitShape<typeof HandshakeSchema> = {}): ClientPayload {
  const value = create(HandshakeSchema, extra);
  if (value.protocolVersions.length === 0 && extra.protocolVersions === undefined) {
    value.protocolVersions = [ProtocolVersion.PROTOCOL_VERSION_1_0];
  }
  value.client ??= create(PeerInfoSchema, { name: "test", version: "0" });
  if (token !== undefined) value.token = token;
  return { case: "handshake", value };
}
