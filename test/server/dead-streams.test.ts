/**
 * A bad peer costs its own stream, never the process (issue 12 item 1, ARCHITECTURE.md "Any
 * callback may meet a dead stream"): raw node:http2 clients reset streams at every point of their
 * life — in the packet that opened them, after the handshake, inside a frame, while commands run,
 * while a watch streams, inside a unary body — on the fast paths and on connect-node's. After
 * each, the same server still serves a normal client. An exception thrown in a transport callback
 * would surface as an unhandled error and fail this file.
 */
import { connect as h2connect, constants, type ClientHttp2Session, type ClientHttp2Stream } from "node:http2";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";
import { CommandService } from "../../gen/mcp/v1/command_pb.js";
import { createTestTools } from "../helpers/command-tools.js";
import { openSession, startServer, type TestServer } from "../helpers/server.js";

const { NGHTTP2_CANCEL } = constants;

let t: TestServer;
let token: string;
const sessions: ClientHttp2Session[] = [];

beforeAll(async () => {
  const tools = createTestTools();
  t = await startServer({ tools: tools.tools });
  token = await t.token("mallory", ["developer"]);
});
afterEach(() => {
  for (const s of sessions.splice(0)) s.destroy();
});
afterAll(() => t.close());

/** A connected raw HTTP/2 session (the preface and SETTINGS exchanged). */
async function connected(): Promise<ClientHttp2Session> {
  const session = h2connect(t.url);
  session.on("error", () => {});
  sessions.push(session);
  await new Promise<void>((resolve, reject) => {
    session.once("connect", () => resolve());
    session.once("error", reject);
  });
  return session;
}

function request(session: ClientHttp2Session, path: string, contentType: string, extra: Record<string, string> = {}): ClientHttp2Stream {
  const stream = session.request({ ":method": "POST", ":path": path, "content-type": contentType, te: "trailers", ...extra });
  stream.on("error", () => {});
  return stream;
}

const closed = (stream: ClientHttp2Stream) => new Promise<void>((resolve) => (stream.closed ? resolve() : stream.once("close", () => resolve())));

/** The server is up and a normal client works: a session stream with an echo, and a unary Execute. */
async function serverStillWorks(): Promise<void> {
  const { s } = await openSession(t.url, token);
  s.send({ case: "command", value: { id: "alive", tool: "echo", payload: { case: "arguments", value: { text: "still here" } } } });
  const m = await s.next();
  expect(m?.message.case === "response" ? m.message.value.result : undefined).toMatchObject({ case: "output", value: { text: "still here" } });
  s.close();
  const client = createClient(CommandService, createGrpcTransport({ baseUrl: t.url }));
  const r = await client.execute({ tool: "echo", payload: { case: "arguments", value: { text: "unary" } } }, { headers: { authorization: `Bearer ${token}` } });
  expect(r.result).toMatchObject({ case: "output", value: { text: "unary" } });
}

/** Every path a request can take: the node:http2 fast paths and connect-node's protocols. */
const PATHS = [
  { name: "session stream, gRPC (fast path)", path: "/mcp.v1.SessionService/Connect", ct: "application/grpc+proto" },
  { name: "session stream, gRPC gzip (connect-node)", path: "/mcp.v1.SessionService/Connect", ct: "application/grpc+proto", extra: { "grpc-encoding": "gzip" } },
  { name: "session stream, Connect protocol", path: "/mcp.v1.SessionService/Connect", ct: "application/connect+proto" },
  { name: "session stream, gRPC-Web", path: "/mcp.v1.SessionService/Connect", ct: "application/grpc-web+proto" },
  { name: "Execute, gRPC (fast path)", path: "/mcp.v1.CommandService/Execute", ct: "application/grpc" },
  { name: "ListTools, gRPC (fast path)", path: "/mcp.v1.CommandService/ListTools", ct: "application/grpc" },
  { name: "Execute, Connect unary", path: "/mcp.v1.CommandService/Execute", ct: "application/proto" },
  { name: "ExecuteStream, gRPC", path: "/mcp.v1.CommandService/ExecuteStream", ct: "application/grpc" },
  { name: "WatchContext, Connect", path: "/mcp.v1.ContextService/WatchContext", ct: "application/connect+proto" },
  { name: "unknown path", path: "/nope.Service/Nope", ct: "application/grpc" },
] as const;

describe("HEADERS immediately followed by RST_STREAM", () => {
  for (const p of PATHS) {
    test(`${p.name}: twenty on one connection, then the server still works`, async () => {
      const session = await connected();
      const streams: ClientHttp2Stream[] = [];
      for (let i = 0; i < 20; i++) {
        // request() and close() in one tick: node sends HEADERS and RST_STREAM in one write.
        const s = request(session, p.path, p.ct, "extra" in p ? p.extra : {});
        s.close(NGHTTP2_CANCEL);
        streams.push(s);
      }
      await Promise.all(streams.map(closed));
      // The connection itself survives the resets too.
      const ping = await new Promise<boolean>((resolve) => session.ping((err) => resolve(err === null)));
      expect(ping).toBe(true);
      await serverStillWorks();
    });
  }
});
