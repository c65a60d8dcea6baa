/**
 * Shared by test/security/e2e-*.test.ts: real clients over real connections. Unary calls go
 * through connect-es with the Connect protocol (HTTP/1.1 and HTTP/2) and the gRPC protocol
 * (HTTP/2); the session stream is a raw SessionService/Connect stream. Outcomes are read back as
 * the exact `mcp.v1.Error` kind/code (plus the Connect code for unary calls).
 */
import { Code, ConnectError, createClient, type Client, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { AdminService } from "../../gen/mcp/v1/admin_pb.js";
import { CommandService } from "../../gen/mcp/v1/command_pb.js";
import { ContextService } from "../../gen/mcp/v1/context_pb.js";
import { ErrorKind, ErrorSchema, type Error as McpWireError } from "../../gen/mcp/v1/error_pb.js";
import type { ServerMessage } from "../../gen/mcp/v1/session_pb.js";
import { openRawStream, type ClientPayload } from "../helpers/server.js";

/** The ways a unary RPC can reach the server. */
export const UNARY_PATHS = ["connect-h1", "connect-h2", "grpc-h2"] as const;
export type UnaryPath = (typeof UNARY_PATHS)[number];

export interface Clients {
  commands: Client<typeof CommandService>;
  contexts: Client<typeof ContextService>;
  admin: Client<typeof AdminService>;
}

/** A transport for `path`; `ca` trusts a self-signed server certificate. */
export function transportFor(path: UnaryPath | "grpc-stream", baseUrl: string, ca?: string): Transport {
  const nodeOptions = ca === undefined ? {} : { nodeOptions: { ca } };
  switch (path) {
    case "connect-h1":
      return createConnectTransport({ baseUrl, httpVersion: "1.1", ...nodeOptions });
    case "connect-h2":
      return createConnectTransport({ baseUrl, httpVersion: "2", ...nodeOptions });
    case "grpc-h2":
    case "grpc-stream":
      return createGrpcTransport({ baseUrl, ...nodeOptions });
  }
}

export function clientsFor(path: UnaryPath, baseUrl: string, ca?: string): Clients {
  const t = transportFor(path, baseUrl, ca);
  return { commands: createClient(CommandService, t), contexts: createClient(ContextService, t), admin: createClient(AdminService, t) };
}

/** `Authorization: Bearer` call options (none for undefined). */
export function bearer(token: string | undefined): { headers: Record<string, string> } {
  return { headers: token === undefined ? {} : { authorization: `Bearer ${token}` } };
}

/** What a refusal looked like on the wire. */
export interface Outcome {
  kind: keyof typeof ErrorKind;
  code: string;
  /** The Connect code name of a unary failure (absent on the stream). */
  rpc?: string;
}

export function outcomeOf(e: McpWireError, rpc?: Code): Outcome {
  const o: Outcome = { kind: ErrorKind[e.kind] as keyof typeof ErrorKind, code: e.code };
  if (rpc !== undefined) o.rpc = Code[rpc];
  return o;
}

/** Runs a unary call that must fail; returns its mcp.v1.Error detail and Connect code. */
export async function refused(call: Promise<unknown>): Promise<Outcome> {
  try {
    await call;
  } catch (e) {
    if (!(e instanceof ConnectError)) throw e;
    const detail = e.findDetails(ErrorSchema)[0];
    if (detail === undefined) throw new Error(`no mcp.v1.Error detail on [${Code[e.code]}] ${e.rawMessage}`);
    return outcomeOf(detail, e.code);
  }
  throw new Error("the call succeeded but should have been refused");
}

/** A raw session stream (like test/helpers openRawStream) that can also trust a TLS certificate. */
export interface Stream {
  send(message: ClientPayload): void;
  /** The next message (undefined when the stream ended); rejects after `timeoutMs`. */
  next(timeoutMs?: number): Promise<ServerMessage | undefined>;
  /** The next message matching `pick`, skipping others (events, pongs…). */
  until<T>(pick: (m: ServerMessage) => T | undefined, timeoutMs?: number): Promise<T>;
  /** Everything until the stream ends. */
  rest(timeoutMs?: number): Promise<ServerMessage[]>;
  readonly failure: unknown;
  close(): void;
}

export function openStream(url: string, options: { ca?: string; headers?: Record<string, string> } = {}): Stream {
  const raw = openRawStream(url, options.headers ?? {}, transportFor("grpc-stream", url, options.ca));
  let pending: Promise<ServerMessage | undefined> | undefined;
  // A timed-out read is not lost: the next call waits for the same message.
  const next = async (timeoutMs = 10_000) => {
    pending ??= raw.next();
    const p = pending;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const m = await Promise.race([
      p,
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no ServerMessage within ${timeoutMs} ms`)), timeoutMs))),
    ]).finally(() => clearTimeout(timer));
    pending = undefined;
    return m;
  };
  return {
    send: raw.send,
    next,
    async until(pick, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const m = await next(Math.max(1, deadline - Date.now()));
        if (m === undefined) throw new Error(`stream ended while waiting (${String(raw.failure)})`);
        const v = pick(m);
        if (v !== undefined) return v;
      }
    },
    async rest(timeoutMs = 10_000) {
      const all: ServerMessage[] = [];
      for (let m = await next(timeoutMs); m !== undefined; m = await next(timeoutMs)) all.push(m);
      return all;
    },
    get failure() {
      return raw.failure;
    },
    close: raw.close,
  };
}

/** The refusal in a ServerMessage, if it carries one: an Error, a failed Response or UpdateResult. */
export function refusalIn(m: ServerMessage): Outcome | undefined {
  switch (m.message.case) {
    case "error":
      return outcomeOf(m.message.value);
    case "response":
      return m.message.value.result.case === "error" ? outcomeOf(m.message.value.result.value) : undefined;
    case "updateResult":
      return m.message.value.error === undefined ? undefined : outcomeOf(m.message.value.error);
    default:
      return undefined;
  }
}

/** A self-signed P-256 certificate for localhost / 127.0.0.1, made with openssl into `dir`. */
export async function selfSignedCert(dir: string): Promise<{ cert: string; key: string }> {
  const cert = join(dir, "cert.pem");
  const key = join(dir, "key.pem");
  await promisify(execFile)("openssl", [
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
    "-keyout", key, "-out", cert, "-days", "1",
    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
  ]);
  return { cert, key };
}
