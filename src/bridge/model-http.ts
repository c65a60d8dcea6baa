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
  type AuthInfo,
  type McpHttpHandler,
  type McpServerFactory,
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
import { readBody, sendWebResponse, webHeaders, webRequest, webUrl } from "./web-request.js";

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

/**
 * Our caller behind the SDK's pass-through `authInfo`: the handler hands the object it was given
 * to the factory untouched, so the AuthState rides on it without an AsyncLocalStorage (whose
 * promise hooks, once on, would tax every promise of the process, native paths included).
 */
const callers = new WeakMap<AuthInfo, AuthState>();

function authInfoOf(auth: AuthState, token: string | undefined): AuthInfo {
  const info: AuthInfo = { token: token ?? "", clientId: auth.principal?.subject ?? "", scopes: [] };
  callers.set(info, auth);
  return info;
}

/**
 * Change events for one 2026-07-28 `subscriptions/listen` stream: the changes of the contexts
 * its caller may read (our broadcast subscription, filtered by policy); the SDK then keeps the
 * URIs the stream asked for. The bus is per stream because delivery depends on the caller (the
 * SDK's bus interface does not say who subscribes).
 */
function contextChangeBus(core: McpCore, auth: AuthState): ServerEventBus {
  const listeners = new Set<(e: ServerEvent) => void>();
  return {
    publish(event) {
      for (const l of listeners) l(event);
    },
    subscribe(listener) {
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

/** Whether a parsed body is a 2026-07-28 `subscriptions/listen` request (a long-lived change stream). */
function isListen(body: unknown): boolean {
  return typeof body === "object" && body !== null && (body as { method?: unknown }).method === "subscriptions/listen";
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
  const factory: McpServerFactory = ({ era, authInfo }) => {
    const auth = authInfo === undefined ? undefined : callers.get(authInfo);
    // `serve` passes authInfo with every request, and the handler hands it on untouched.
    if (auth === undefined) throw new McpError("unauthenticated", "no caller for this request");
    const scope = auth.principal?.subject ?? "";
    // 2025-era requests are served statelessly: no subscription could outlive the request.
    return createModelServer(coreBackend(core, auth), { era, ...(era === "legacy" ? { crossRequestCancel: { scope, inflight }, subscriptions: false } : {}) });
  };
  const handlerOptions = { maxRequestBodySize: opts.maxMessageBytes };
  // Every request but a listen stream: one handler, nothing per caller in it.
  const handler = createMcpHandler(factory, handlerOptions);
  // A listen stream gets a handler of its own, whose bus knows the caller (cheap next to the stream).
  const listenHandler = (auth: AuthState): McpHttpHandler => createMcpHandler(factory, { ...handlerOptions, bus: contextChangeBus(core, auth), maxSubscriptions: 1 });

  async function serve(req: HttpRequest, res: HttpResponse): Promise<void> {
    const facts = connectionFacts(req);
    // One Request, built from the headers before any body is read: Host, Origin and the token are
    // checked on it, and the body goes to the SDK parsed (its `parsedBody`), not copied into it.
    const request = webRequest(req, res, webUrl(req, facts.secure), webHeaders(req), undefined);
    if (localhostOnly) {
      const refused = hostHeaderValidationResponse(request, localhostAllowedHostnames()) ?? originValidationResponse(request, localhostAllowedOrigins());
      if (refused !== undefined) return sendWebResponse(refused, res);
    }
    // The metadata URL is only needed for a refusal: built then, not for every request.
    const challenge = (code: string, message: string) =>
      sendWebResponse(
        bearerAuthChallengeResponse(new OAuthError(code, message), { resourceMetadataUrl: getOAuthProtectedResourceMetadataUrl(new URL(path, request.url)) }),
        res,
      );
    let auth: AuthState;
    let token: string | undefined;
    try {
      const transport: TransportInfo = { secure: facts.secure, authorization: request.headers.get("authorization") };
      token = core.bearer(transport);
      if (token === undefined && !core.allowLow) return challenge(OAuthErrorCode.InvalidToken, "authentication required: send Authorization: Bearer <token>");
      auth = await core.authenticate(token, transport, SecurityLevel.HIGH);
      core.requireReady(auth);
    } catch (e) {
      if (isMcpError(e) && e.kind === "SECURITY") return challenge(OAuthErrorCode.InvalidToken, `${e.code}: ${e.message}`);
      throw e;
    }
    const authInfo = authInfoOf(auth, token);
    const text = await readBody(req, opts.maxMessageBytes);
    let parsedBody: unknown;
    if (text !== undefined && text !== "") {
      try {
        parsedBody = JSON.parse(text);
      } catch {
        // Not JSON: the SDK words the answer, so it gets the bytes (rare; a second Request is fine).
      }
    }
    let response: Response;
    if (parsedBody === undefined) {
      const withBody = text === undefined ? request : new Request(request, { body: text });
      response = await handler.fetch(withBody, { authInfo });
    } else {
      response = await (isListen(parsedBody) ? listenHandler(auth) : handler).fetch(request, { authInfo, parsedBody });
    }
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
