/**
 * `/mcp` and `/.well-known/oauth-protected-resource` on the server's port (model-http.ts does the
 * work). The official SDK and its schemas (~30 MB of heap) load on the first request for these
 * paths, so a server whose clients never speak the Model Context Protocol never pays for them.
 */
import type { McpCore } from "../session/core.js";
import { pathOf, type HttpEndpoint } from "../server/http-endpoints.js";
import type { ModelHttpEndpointOptions } from "./model-http.js";

export type { ModelHttpEndpointOptions } from "./model-http.js";

/** The endpoint, for the `endpoints` list of `createMcpServer`. */
export function createModelHttpEndpoint(core: McpCore, options: ModelHttpEndpointOptions = {}): HttpEndpoint {
  const path = options.path ?? "/mcp";
  const owned = new Set([path, "/.well-known/oauth-protected-resource", `/.well-known/oauth-protected-resource${path}`]);
  let real: Promise<HttpEndpoint> | undefined;
  return (req, res) => {
    // Every plain HTTP request (Connect over HTTP/1.1 too) is offered here first: one prefix test.
    const url = req.url;
    if (url === undefined || !(url.startsWith(path) || url.startsWith("/.well-known/"))) return false;
    if (!owned.has(pathOf(req))) return false;
    real ??= import("./model-http.js").then((m) => m.createModelHttpEndpointNow(core, options));
    real.then(
      (endpoint) => endpoint(req, res),
      (e: unknown) => {
        real = undefined;
        res.writeHead(500, { "content-type": "text/plain" });
        res.end(`the Model Context Protocol endpoint could not load: ${e instanceof Error ? e.message : String(e)}`);
      },
    );
    return true;
  };
}
