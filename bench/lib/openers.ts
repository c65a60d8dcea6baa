/**
 * Openers (see drive.ts) for the peers bench/run.ts and bench/compare.ts measure: our session
 * stream and unary Execute (our TypeScript client), @grpc/grpc-js unary and bidi against
 * bench/server.ts's `grpcjs` echo, the raw node:http2 ceiling against its `raw` echo, and the
 * codec floor against its `codec` server.
 */
import { connect as h2connect, constants } from "node:http2";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { createConnectTransport } from "@connectrpc/connect-node";
import { create, toBinary } from "@bufbuild/protobuf";
import { ClientMessageSchema } from "../../gen/mcp/v1/session_pb.js";
import { EchoInputSchema, EchoOutputSchema } from "../../gen/mcp/tools/v1/tools_pb.js";
import { callTyped, createMcpClient } from "../../src/client/index.js";
import { mintToken } from "../../src/security/index.js";
import { rawFrames } from "../raw-frames.js";
import type { Opener } from "./drive.js";

/** The HS256 secret bench/server.ts's `mcp` server verifies with. */
export const BENCH_SECRET = "bench-secret-0123456789-0123456789-abcdef";

/** A token the `mcp` bench server accepts (role developer, an hour). */
export function benchToken(): Promise<string> {
  return mintToken({ secret: BENCH_SECRET, subject: "bench", roles: ["developer"], ttlSec: 3600, issuer: "mcp", audience: "mcp" });
}

const ECHO = { input: EchoInputSchema, output: EchoOutputSchema };

function fail(what: string): (e: unknown) => never {
  return (e) => {
    console.error(`${what} failed:`, e);
    process.exit(1);
  };
}

export interface SessionOpenerOptions {
  /**
   * JSON as `google.protobuf.Struct` both ways (`SessionOptions.jsonText: false`), the form every
   * call took before `arguments_json` / `output_json`.
   * @default false
   */
  struct?: boolean;
  /**
   * The Connect protocol through connect-es and connect-node, one promise per message on both
   * sides — the path every session stream took before the node:http2 fast path.
   * @default false
   */
  perMessage?: boolean;
  /**
   * Typed echo: Command.input (an Any of EchoInput) in, typed_output (an Any of EchoOutput) back —
   * no Struct conversions. Otherwise JSON: Command.arguments (Struct) in, output (Struct) back.
   * @default false
   */
  typed?: boolean;
}

/** `echo` calls on ONE session stream (`McpSession.call`), a session opened per drive. */
export async function mcpSessionOpener(port: number, token: string, text: string, options: SessionOpenerOptions = {}): Promise<Opener> {
  const baseUrl = `http://127.0.0.1:${port}`;
  const transport = options.perMessage
    ? createConnectTransport({ baseUrl, httpVersion: "2", interceptors: [(next) => (req) => (req.header.set("authorization", `Bearer ${token}`), next(req))] })
    : undefined;
  const session = await createMcpClient({ baseUrl, token, ...(transport === undefined ? {} : { transport }) }).connect({ heartbeatIntervalMs: 0, jsonText: options.struct !== true });
  const failed = fail("session call");
  const typed = options.typed === true;
  return (done) => ({
    send: () => {
      const call = typed ? callTyped(session, "echo", ECHO, { text }) : session.call("echo", { text });
      call.then(done, failed);
    },
    close: () => session.close(),
  });
}

/** Unary `Execute` of `echo` (JSON arguments) with our client over HTTP/2. */
export function mcpUnaryOpener(port: number, token: string, protocol: "grpc" | "connect", text: string): Opener {
  const client = createMcpClient({ baseUrl: `http://127.0.0.1:${port}`, token, protocol, httpVersion: "2" });
  const failed = fail("unary call");
  return (done) => ({
    send: () => {
      client.commands.execute({ tool: "echo", payload: { case: "arguments", value: { text } } }).then(done, failed);
    },
    close: () => {},
  });
}

export type EchoClient = grpc.Client & {
  echo(req: { text: string }, cb: (err: grpc.ServiceError | null) => void): void;
  echoStream(): grpc.ClientDuplexStream<{ text: string }, { text: string }>;
};

/** A grpc-js client of bench/echo.proto's EchoService (one channel: one HTTP/2 connection). */
export function grpcJsClient(port: number): EchoClient {
  const def = protoLoader.loadSync(fileURLToPath(new URL("../echo.proto", import.meta.url)));
  const pkg = grpc.loadPackageDefinition(def) as unknown as { bench: { v1: { EchoService: grpc.ServiceClientConstructor } } };
  return new pkg.bench.v1.EchoService(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as EchoClient;
}

/** Messages on one `EchoStream` bidi call. */
export function grpcJsBidiOpener(client: EchoClient, text: string): Opener {
  return (done) => {
    const call = client.echoStream();
    call.on("data", () => done());
    call.on("error", () => {});
    return { send: () => call.write({ text }), close: () => call.end() };
  };
}

/** Unary `Echo` calls. */
export function grpcJsUnaryOpener(client: EchoClient, text: string): Opener {
  const failed = fail("grpc-js unary");
  return (done) => ({
    send: () => client.echo({ text }, (err) => (err === null ? done() : failed(err))),
    close: () => {},
  });
}

/** Length-prefixed frames over one node:http2 stream, every tick's frames in one write. */
export function rawOpener(port: number, text: string): Opener {
  return framesOpener(port, Buffer.from(text));
}

/**
 * The raw client, its frames an echo Command as our client encodes it (a ClientMessage with
 * `arguments_json`), for bench/server.ts's `codec` floor: the client costs what the raw one does,
 * so the figure is the server's.
 */
export function codecOpener(port: number, text: string): Opener {
  const command = create(ClientMessageSchema, {
    message: { case: "command", value: { id: "c1000000", tool: "echo", payload: { case: "argumentsJson", value: JSON.stringify({ text }) } } },
  });
  return framesOpener(port, toBinary(ClientMessageSchema, command));
}

function framesOpener(port: number, payload: Uint8Array): Opener {
  return (done) => {
    const session = h2connect(`http://127.0.0.1:${port}`);
    const stream = session.request({ ":method": "POST", ":path": "/bench.v1.EchoService/EchoStream", "content-type": "application/grpc+proto", te: "trailers" });
    stream.on("error", () => {});
    const frame = Buffer.alloc(5 + payload.length);
    frame.writeUInt32BE(payload.length, 1);
    frame.set(payload, 5);
    let pending = 0;
    let scheduled = false;
    const flush = () => {
      scheduled = false;
      const n = pending;
      pending = 0;
      const b = Buffer.allocUnsafe(n * frame.length);
      for (let i = 0; i < n; i++) frame.copy(b, i * frame.length);
      stream.write(b);
    };
    stream.on("data", rawFrames(() => done()));
    return {
      send: () => {
        pending++;
        if (!scheduled) {
          scheduled = true;
          process.nextTick(flush);
        }
      },
      close: () => {
        stream.close(constants.NGHTTP2_CANCEL);
        session.close();
      },
    };
  };
}
