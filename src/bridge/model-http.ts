/**
 * `/mcp`: the Model Context Protocol over Streamable HTTP on the server's own port, and
 * `/.well-known/oauth-protected-resource` (RFC 9728). The official SDK's `createMcpHandler`
 * serves both eras per request (2026-07-28 stateless, and 2025-era requests statelessly), so any
 * instance behind a load balancer can answer any request: nothing is kept between requests.
 *
 * Each request is authenticated like a unary RPC — `Authorization: Bearer <our JWT>` through the
 * same verifier, at the highest level token and transport allow — and every call goes through the
 * core (backend.ts `coreBackend`). A missing or refused token is a 401 whose `WWW-Authenticate`
 * names the resource metadata, so an OAuth-capable client knows where to go next.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import {
  OAuthError,
  OAuthErrorCode,
  bearerAuthChallengeResponse,
  createMcpHandler,
  getOAuthProtectedResourceMetadataUrl,
  hostHeaderValidationResponse,
  localhostAllowedHostnames,
  localhostAllowedOrigins,
  originValidationResponse,
  type ServerEvent,
  type ServerEventBus,
} from "@modelcontextprotocol/server";
import { SecurityLevel } from "../../gen/mcp/v1/types_pb.js";
import { McpError, isMcpError } from "../errors.js";
import type { McpCore, TransportInfo } from "../session/core.js";
import type { AuthState } from "../session/session.js";
import { pathOf, type HttpEndpoint, type HttpRequest, type HttpResponse } from "../server/http-endpoints.js";
import { connectionFacts } from "../server/listener.js";
import { coreBackend } from "./backend.js";
import { createModelServer } from "./model-server.js";
import { contextUri } from "./translate.js";
import { readBody, sendWebResponse, toWebRequest, webHeaders, webUrl } from "./web-request.js";

/** Options of `createModelHttpEndpoint`. */
export interface ModelHttpEndpointOptions {
  /**
   * The path served.
   * @default "/mcp"
   */
  path?: string;
  /**
   * Check `Host` and `Origin` against localhost names (DNS rebinding: a web page must not reach a
   * server on loopback through its own domain). On by default when bound to a loopback address.
   * @default true when `bindAddress` is loopback
   */
  localhostOnly?: boolean;
}

/** The caller of the request being served, for the factory and the listen bus. */
const caller = new AsyncLocalStorage<AuthState>();

/**
 * Change events for 2026-07-28 `subscriptions/listen` streams: each stream gets the changes of
 * the contexts its caller may read (our broadcast subscription, filtered by policy); the SDK then
 * keeps the URIs the stream asked for. The bus is ours because delivery depends on the caller.
 */
function contextChangeBus(core: McpCore): ServerEventBus {
  const listeners = new Set<(e: ServerEvent) => void>();
  return {
    publish(event) {
      for (const l of listeners) l(event);
    },
    subscribe(listener) {
      const auth = caller.getStore();
      if (auth === undefined) return () => {};
      listeners.add(listener);
      const stop = new AbortController();
      void (async () => {
        for await (const id of coreBackend(core, auth).contextChanges(stop.signal)) listener({ kind: "resource_updated", uri: contextUri(id) });
      })().catch(() => {
        // The subscription ended with the caller's rights (revoked, slow): the stream stays, silent.
      });
      return () => {
        listeners.delete(listener);
        stop.abort();
      };
    },
  };
}

function isLoopback(address: string): boolean {
  return address === "localhost" || address === "::1" || address.startsWith("127.");
}

/** The endpoint itself; http-endpoint.ts loads this module on the first request for it. */
export function createModelHttpEndpointNow(core: McpCore, options: ModelHttpEndpointOptions = {}): HttpEndpoint {
  const opts = core.deps.options;
  const path = options.path ?? "/mcp";
  const localhostOnly = options.localhostOnly ?? isLoopback(opts.bindAddress);
  // 2025-era calls in flight on this instance, for a notifications/cancelled POSTed after them.
  const inflight = new Map<string, AbortController>();
  const handler = createMcpHandler(
    ({ era }) => {
      const auth = caller.getStore();
      // The handler calls its factory only inside `fetch`, which runs inside `caller.run`.
      if (auth === undefined) throw new McpError("unauthenticated", "no caller for this request");
      const scope = auth.principal?.subject ?? "";
      return createModelServer(coreBackend(core, auth), { era, ...(era === "legacy" ? { crossRequestCancel: { scope, inflight } } : {}) });
    },
    { bus: contextChangeBus(core), maxRequestBodySize: opts.maxMessageBytes },
  );

  async function serve(req: HttpRequest, res: HttpResponse): Promise<void> {
    const facts = connectionFacts(req);
    // Host, Origin and the token are checked from the headers, before any body is read.
    const head = new Request(webUrl(req, facts.secure), { headers: webHeaders(req) });
    if (localhostOnly) {
      const refused = hostHeaderValidationResponse(head, localhostAllowedHostnames()) ?? originValidationResponse(head, localhostAllowedOrigins());
      if (refused !== undefined) return sendWebResponse(refused, res);
    }
    const resourceMetadataUrl = getOAuthProtectedResourceMetadataUrl(new URL(path, head.url));
    const challenge = (code: string, message: string) =>
      sendWebResponse(bearerAuthChallengeResponse(new OAuthError(code, message), { resourceMetadataUrl }), res);
    let auth: AuthState;
    try {
      const transport: TransportInfo = { secure: facts.secure, authorization: head.headers.get("authorization") };
      const token = core.bearer(transport);
      if (token === undefined && !core.allowLow) return challenge(OAuthErrorCode.InvalidToken, "authentication required: send Authorization: Bearer <token>");
      auth = await core.authenticate(token, transport, SecurityLevel.HIGH);
      core.requireReady(auth);
    } catch (e) {
      if (isMcpError(e) && e.kind === "SECURITY") return challenge(OAuthErrorCode.InvalidToken, `${e.code}: ${e.message}`);
      throw e;
    }
    const request = toWebRequest(req, res, await readBody(req, opts.maxMessageBytes), facts.secure);
    const response = await caller.run(auth, () => handler.fetch(request));
    await sendWebResponse(response, res, request);
  }

  const metadata = wellKnownPaths(path);
  return (req, res) => {
    const p = pathOf(req);
    if (metadata.has(p)) {
      serveMetadata(core, path, req, res);
      return true;
    }
    if (p !== path) return false;
    serve(req, res).catch((e: unknown) => {
      if (!res.headersSent) {
        res.writeHead(isMcpError(e) && e.code === "message_too_large" ? 413 : 500, { "content-type": "text/plain" });
        res.end(e instanceof Error ? e.message : String(e));
      } else {
        res.destroy();
      }
    });
    return true;
  };
}

/** RFC 9728 §3.1: the metadata of resource `/mcp` is at `/.well-known/oauth-protected-resource/mcp`; the bare path is kept for older clients. */
function wellKnownPaths(path: string): Set<string> {
  return new Set(["/.well-known/oauth-protected-resource", `/.well-known/oauth-protected-resource${path}`]);
}

function serveMetadata(core: McpCore, path: string, req: HttpRequest, res: HttpResponse): void {
  const opts = core.deps.options;
  const host = req.headers[":authority"] ?? req.headers.host ?? `${opts.bindAddress}:${opts.port}`;
  const scheme = connectionFacts(req).secure ? "https" : "http";
  const issuer = opts.jwtIssuer;
  const issuerIsUrl = /^https?:\/\//.test(issuer);
  // RFC 9728 §2: authorization_servers holds issuer URLs; a non-URL issuer (the dev default "mcp")
  // is still named, so a person reading it knows which tokens are accepted (`mcp token` mints them).
  const body = {
    resource: `${scheme}://${String(host)}${path}`,
    ...(issuerIsUrl ? { authorization_servers: [issuer] } : {}),
    bearer_methods_supported: ["header"],
    resource_name: "Machine Context Protocol server",
    token_issuer: issuer,
    token_audience: opts.jwtAudience,
  };
  res.writeHead(200, { "content-type": "application/json", "cache-control": "max-age=300" });
  res.end(JSON.stringify(body));
}
