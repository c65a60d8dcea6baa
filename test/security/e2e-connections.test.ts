/**
 * `maxConnections` over real HTTP/2 connections (PROTOCOL.md §6): with N open, connection N+1 is
 * refused with TRANSPORT too_many_connections (Connect code unavailable, retryable) on unary
 * calls over Connect and gRPC and on the session stream, while the first N keep working.
 */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, expect, test } from "vitest";
import { CommandService } from "../../gen/mcp/v1/command_pb.js";
import { ErrorSchema } from "../../gen/mcp/v1/error_pb.js";
import { SessionService } from "../../gen/mcp/v1/session_pb.js";
import { createPushable } from "../../src/pushable.js";
import { handshake, startServer, type TestServer } from "../helpers/server.js";
import { bearer, openStream, refused, transportFor, type UnaryPath } from "./e2e-helpers.js";

const N = 3;
let t: TestServer;
let token: string;
beforeAll(async () => {
  t = await startServer({ maxConnections: N });
  token = await t.token("connie", ["developer"]);
});
afterAll(() => t.close());

const echoOn = (path: UnaryPath) => {
  const client = createClient(CommandService, transportFor(path, t.url));
  return (text: string) => client.execute({ tool: "echo", payload: { case: "arguments", value: { text } } }, bearer(token));
};

test(`with ${N} connections open, the next is refused with too_many_connections and the ${N} keep working`, async () => {
  // N connections: a session stream and two unary transports, each its own HTTP/2 connection.
  const stream = openStream(t.url);
  stream.send(handshake(token));
  expect((await stream.next())?.message.case).toBe("handshakeResult");
  const first = echoOn("grpc-h2");
  const second = echoOn("connect-h2");
  expect((await first("1")).result.case).toBe("output");
  expect((await second("2")).result.case).toBe("output");
  expect(t.server.connections).toBe(N);

  // Connection N+1, over each protocol: refused with the mcp.v1.Error detail.
  for (const path of ["connect-h2", "grpc-h2"] as const) {
    expect(await refused(echoOn(path)("extra"))).toEqual({ kind: "TRANSPORT", code: "too_many_connections", rpc: "Unavailable" });
  }
  // …and a session stream on its own connection.
  const extra = createClient(SessionService, transportFor("grpc-stream", t.url));
  const out = createPushable<never>();
  const failure = await (async () => {
    try {
      for await (const m of extra.connect(out)) return new Error(`unexpected message ${m.message.case}`);
    } catch (e) {
      return e;
    } finally {
      out.end();
    }
    return new Error("the stream ended without an error");
  })();
  expect(failure).toBeInstanceOf(ConnectError);
  const detail = (failure as ConnectError).findDetails(ErrorSchema)[0];
  expect([ConnectError.from(failure).code, detail?.code, detail?.retryable]).toEqual([Code.Unavailable, "too_many_connections", true]);

  // The first N are unaffected.
  expect((await first("again")).result).toMatchObject({ case: "output", value: { text: "again" } });
  expect((await second("again")).result).toMatchObject({ case: "output", value: { text: "again" } });
  stream.send({ case: "ping", value: { id: 7n } });
  const pong = await stream.next();
  expect(pong?.message.case === "pong" && pong.message.value.id).toBe(7n);
  stream.close();
});
