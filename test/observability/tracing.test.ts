/**
 * W3C traceparent through the server, with an in-memory OpenTelemetry SDK installed by the test
 * as an embedding program would: the server's spans are children of what the client sent — on
 * the unary fast path, through connect-node, per Command field, and on the session stream.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { trace } from "@opentelemetry/api";
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from "@opentelemetry/sdk-trace-base";
import { create } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { CommandService, CommandSchema } from "../../gen/mcp/v1/command_pb.js";
import { createMcpClient } from "../../src/client/index.js";
import { contextFromTraceparent } from "../../src/observability/tracing.js";
import { handshake, openRawStream, startServer, type TestServer } from "../helpers/server.js";
import { eventually } from "../helpers/eventually.js";

const exporter = new InMemorySpanExporter();
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
beforeAll(() => {
  trace.setGlobalTracerProvider(provider);
});
afterAll(async () => {
  trace.disable();
  await provider.shutdown();
});

const TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";
const tp = (spanId: string) => `00-${TRACE_ID}-${spanId}-01`;

let server: TestServer;
beforeEach(async () => {
  exporter.reset();
  server = await startServer();
});
afterEach(async () => {
  await server.close();
});

const spans = (name: string): ReadableSpan[] => exporter.getFinishedSpans().filter((s) => s.name === name);
const isChildOf = (s: ReadableSpan, spanId: string) =>
  s.spanContext().traceId === TRACE_ID && s.parentSpanContext?.spanId === spanId && s.parentSpanContext.isRemote === true;

describe("traceparent", () => {
  const unaryTransports = [
    // gRPC over h2c takes the unary fast path (unary-h2.ts); the Connect protocol over HTTP/1.1 goes through connect-node.
    { name: "gRPC (fast path)", transport: (url: string) => createGrpcTransport({ baseUrl: url }) },
    { name: "Connect over HTTP/1.1", transport: (url: string) => createConnectTransport({ baseUrl: url, httpVersion: "1.1" }) },
  ];
  for (const { name, transport } of unaryTransports) {
    it(`on a unary Execute over ${name}: the command span is a child of the header's span`, async () => {
      const client = createClient(CommandService, transport(server.url));
      const headers = { authorization: `Bearer ${await server.token()}`, traceparent: tp("00f067aa0ba902b7") };
      await client.execute(create(CommandSchema, { id: "u1", tool: "echo", payload: { case: "arguments", value: { text: "hi" } } }), { headers });
      await eventually(() => spans("mcp.command echo").length === 1, "the command span");
      const [span] = spans("mcp.command echo");
      expect(isChildOf(span!, "00f067aa0ba902b7")).toBe(true);
      expect(span!.attributes["mcp.command.id"]).toBe("u1");
    });
  }

  it("on a Command's own field, on the stream: that command's span is its child, the others the session's", async () => {
    const client = createMcpClient({ baseUrl: server.url, token: await server.token() });
    const session = await client.connect();
    await session.execute({ id: "own", tool: "echo", payload: { case: "arguments", value: { text: "a" } }, traceparent: tp("a3ce929d0e0e4736") });
    const failed = await session.execute({ id: "bad", tool: "echo", payload: { case: "arguments", value: { text: 5 } }, traceparent: tp("b7ad6b7169203331") });
    expect(failed.result.case).toBe("error");
    await session.call("echo", { text: "plain" });
    session.close();
    await eventually(() => spans("mcp.session").length === 1, "the session span to end");
    const commands = spans("mcp.command echo");
    const own = commands.find((s) => s.attributes["mcp.command.id"] === "own")!;
    expect(isChildOf(own, "a3ce929d0e0e4736")).toBe(true);
    const bad = commands.find((s) => s.attributes["mcp.command.id"] === "bad")!;
    expect(isChildOf(bad, "b7ad6b7169203331")).toBe(true);
    expect(bad.status.code).toBe(2); // SpanStatusCode.ERROR
    expect(bad.attributes["mcp.error.code"]).toBe("invalid_argument");
    const sessionSpan = spans("mcp.session")[0]!;
    const plain = commands.find((s) => s.attributes["mcp.command.id"] !== "own" && s.attributes["mcp.command.id"] !== "bad")!;
    expect(plain.parentSpanContext?.spanId).toBe(sessionSpan.spanContext().spanId);
    expect(sessionSpan.attributes["mcp.session.id"]).toBe(session.sessionId);
  });

  it("on the session stream's header: the session span is its child", async () => {
    const raw = openRawStream(server.url, { traceparent: tp("0123456789abcdef") });
    raw.send(handshake(await server.token()));
    const first = await raw.next();
    expect(first?.message.case).toBe("handshakeResult");
    raw.send({ case: "command", value: { id: "c", tool: "echo", payload: { case: "arguments", value: { text: "x" } } } });
    expect((await raw.next())?.message.case).toBe("response");
    raw.end();
    await raw.rest();
    await eventually(() => spans("mcp.session").length === 1, "the session span");
    const sessionSpan = spans("mcp.session")[0]!;
    expect(isChildOf(sessionSpan, "0123456789abcdef")).toBe(true);
    const command = spans("mcp.command echo")[0]!;
    expect(command.spanContext().traceId).toBe(TRACE_ID);
    expect(command.parentSpanContext?.spanId).toBe(sessionSpan.spanContext().spanId);
  });

  it("context updates make store spans", async () => {
    const client = createMcpClient({ baseUrl: server.url, token: await server.token() });
    await client.contexts.updateContext({ contextId: "traced", ops: [{ op: { case: "delete", value: { key: "k" } } }] });
    await eventually(() => spans("mcp.store apply").length === 1, "the store span");
    expect(spans("mcp.store apply")[0]!.attributes["db.system"]).toBe("memory");
  });

  // W3C Trace Context §3.2: malformed values restart the trace rather than fail the request.
  const malformed = [
    "",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", // no flags
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // version ff is invalid
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // all-zero trace id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // all-zero span id
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // uppercase hex
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", // version 00 has no more fields
  ];
  for (const value of malformed) {
    it(`ignores the malformed traceparent ${JSON.stringify(value)}`, () => {
      expect(contextFromTraceparent(value)).toBeUndefined();
    });
  }
  it("accepts a later version's extra fields", () => {
    const ctx = contextFromTraceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more", "k=v");
    expect(trace.getSpanContext(ctx!)).toMatchObject({ traceId: TRACE_ID, spanId: "00f067aa0ba902b7", traceFlags: 1, isRemote: true });
  });
});
