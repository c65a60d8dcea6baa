/**
 * `/mcp` over Streamable HTTP, driven by the official SDK's `Client` and its
 * `StreamableHTTPClientTransport`, in both protocol eras; and its authorization (RFC 9728).
 */
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startServer, type TestServer } from "../helpers/server.js";
import { bridgeScenarios, type Connect } from "./scenarios.js";

const connect: Connect = async (server, token, era) => {
  const client = new Client({ name: "bridge-test", version: "1.0.0" }, era.options);
  await client.connect(new StreamableHTTPClientTransport(new URL("/mcp", server.url), { requestInit: { headers: { authorization: `Bearer ${token}` } } }));
  return client;
};

// 2025-era requests are served statelessly (any instance answers any request), so no connection
// outlives a request and resources/updated has nowhere to go; 2026-07-28 listen streams carry it.
bridgeScenarios("Streamable HTTP", connect, (era) => era.era === "2026-07-28");

describe("/mcp authorization", () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startServer();
  });
  afterAll(() => server.close());

  const initialize = (headers: Record<string, string>) =>
    fetch(new URL("/mcp", server.url), {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json, text/event-stream", ...headers },
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 1,
        method: "initialize",
        params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "curl-like", version: "1" } },
      }),
    });

  const cases: { name: string; headers: Record<string, string> }[] = [
    // No token at all on a server that needs STANDARD.
    { name: "no token", headers: {} },
    // A token that is not one of ours.
    { name: "a forged token", headers: { authorization: "Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl" } },
    // Not a bearer credential.
    { name: "basic credentials", headers: { authorization: "Basic dXNlcjpwYXNz" } },
  ];
  for (const c of cases) {
    it(`answers ${c.name} with 401 and a WWW-Authenticate naming the resource metadata`, async () => {
      const res = await initialize(c.headers);
      expect(res.status).toBe(401);
      const challenge = res.headers.get("www-authenticate") ?? "";
      expect(challenge).toMatch(/^Bearer /);
      expect(challenge).toContain(`resource_metadata="${new URL("/.well-known/oauth-protected-resource/mcp", server.url).href}"`);
      expect(challenge).toContain('error="invalid_token"');
    });
  }

  it("serves RFC 9728 protected resource metadata naming the configured issuer", async () => {
    for (const path of ["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"]) {
      const res = await fetch(new URL(path, server.url));
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({
        resource: new URL("/mcp", server.url).href,
        bearer_methods_supported: ["header"],
        token_issuer: "mcp",
        token_audience: "mcp",
      });
    }
  });

  it("lists an issuer URL as the authorization server", async () => {
    const other = await startServer({ jwtIssuer: "https://auth.example.com" });
    try {
      const res = await fetch(new URL("/.well-known/oauth-protected-resource/mcp", other.url));
      expect(await res.json()).toMatchObject({ authorization_servers: ["https://auth.example.com"] });
    } finally {
      await other.close();
    }
  });

  it("accepts our JWT as the bearer token", async () => {
    const res = await initialize({ authorization: `Bearer ${await server.token()}` });
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text).toContain('"protocolVersion":"2025-11-25"');
  });

  it("serves the same over HTTP/2 (h2c), where connection-specific headers are not allowed", async () => {
    const { connect } = await import("node:http2");
    const session = connect(server.url);
    try {
      const token = await server.token();
      const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        const stream = session.request({
          ":method": "POST",
          ":path": "/mcp",
          "content-type": "application/json",
          accept: "application/json, text/event-stream",
          authorization: `Bearer ${token}`,
        });
        let status = 0;
        let body = "";
        stream.setEncoding("utf8");
        stream.on("response", (h) => (status = Number(h[":status"])));
        stream.on("data", (c: string) => (body += c));
        stream.on("end", () => resolve({ status, body }));
        stream.on("error", reject);
        stream.end(
          JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "h2", version: "1" } } }),
        );
      });
      expect(status).toBe(200);
      expect(body).toContain('"protocolVersion":"2025-11-25"');
    } finally {
      session.close();
    }
  });

  it("answers a body over maxMessageBytes with 413 before parsing it", async () => {
    const small = await startServer({ maxMessageBytes: 1024 });
    try {
      const res = await fetch(new URL("/mcp", small.url), {
        method: "POST",
        headers: { "content-type": "application/json", accept: "application/json, text/event-stream", authorization: `Bearer ${await small.token()}` },
        body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list", params: { pad: "x".repeat(4096) } }),
      });
      expect(res.status).toBe(413);
    } finally {
      await small.close();
    }
  });

  it("refuses a request whose Host is not a localhost name on a loopback server (DNS rebinding)", async () => {
    const token = await server.token();
    const { request } = await import("node:http");
    const url = new URL("/mcp", server.url);
    const status = await new Promise<number>((resolve, reject) => {
      const req = request(
        { host: url.hostname, port: url.port, path: url.pathname, method: "POST", headers: { host: "evil.example.com", authorization: `Bearer ${token}`, "content-type": "application/json" } },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.once("error", reject);
      req.end("{}");
    });
    expect(status).toBe(403);
  });
});
