/**
 * The Model Context Protocol face of our server, built on the official SDK's low-level `Server`
 * (we own dispatch: the tool set is computed per caller from our registry). One instance serves
 * one HTTP request (`/mcp`) or one stdio connection; the SDK does every bit of JSON-RPC.
 *
 * - tools/list  → our ToolDescriptors the caller may use
 * - tools/call  → our Command; events → notifications/progress (and log lines for output);
 *                 the request's cancellation (notifications/cancelled, or a closed response
 *                 stream in 2026-07-28) → our Cancel
 * - resources   → contexts as `mcp-context://ID`; read = snapshot; 2025-era subscribe = our
 *                 watch; 2026-07-28 listen streams are fed by the serving entry (see `changes`)
 */
import { Server, type McpRequestContext, type ServerContext, type Tool } from "@modelcontextprotocol/server";
import type { JsonObject } from "@bufbuild/protobuf";
import type { ToolDescriptor } from "../../gen/mcp/v1/command_pb.js";
import type { Event } from "../../gen/mcp/v1/event_pb.js";
import { toMcpError } from "../errors.js";
import { VERSION } from "../version.js";
import type { BridgeBackend } from "./backend.js";
import { CONTEXT_URI_PREFIX, callResultOf, contextIdOf, contextUri, eventText, resourceOf, toProtocolError, toolOf } from "./translate.js";

/** Options of `createModelServer`. */
export interface ModelServerOptions {
  /** The era the instance serves (the SDK's factory context). */
  era: McpRequestContext["era"];
  /**
   * Push `notifications/resources/updated` for every context the caller may read when it
   * changes (stdio in 2026-07-28: the SDK routes them onto matching listen streams). Over
   * HTTP the endpoint feeds listen streams itself and leaves this off.
   * @default false
   */
  pushAllChanges?: boolean;
  /**
   * 2025-era stateless HTTP serves each POST with a fresh instance, so a call's
   * `notifications/cancelled` reaches another instance than the call: calls in flight are kept
   * here, keyed by `scope` (the caller) and the JSON-RPC request id, for that instance to find.
   * @default none (the SDK's own per-connection cancellation)
   */
  crossRequestCancel?: { scope: string; inflight: Map<string, AbortController> };
  /**
   * Offer 2025-era `resources/subscribe` (the capability and the method). Off where no update
   * could reach the client — 2025-era stateless HTTP, where no connection outlives a request: a
   * client then sees no `resources.subscribe` capability and a subscribe gets "Method not found",
   * instead of a subscription that never delivers. 2026-07-28 listen streams need it on.
   * @default true
   */
  subscriptions?: boolean;
  /** Reports errors of background work (watches); never thrown. @default ignore */
  onerror?: (e: unknown) => void;
}

const SERVER_NAME = "machine-context-protocol-bridge";

/** Rejections of our backend, as the JSON-RPC errors a handler throws. */
async function bridged<T>(p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (e) {
    throw toProtocolError(toMcpError(e, "invalid_message"));
  }
}

/**
 * Translations of registered descriptors, made once: a descriptor does not change after its tool
 * is registered, and every request builds a fresh instance that lists them again. Only the
 * translation is kept; which tools a caller sees is decided per request (policy may change).
 */
const translated = new WeakMap<ToolDescriptor, Tool>();
function translatedTool(d: ToolDescriptor): Tool {
  let t = translated.get(d);
  if (t === undefined) translated.set(d, (t = toolOf(d)));
  return t;
}

/** Creates one Model Context Protocol server instance over `backend`. */
export function createModelServer(backend: BridgeBackend, options: ModelServerOptions): Server {
  const onerror = options.onerror ?? (() => {});
  const subscriptions = options.subscriptions ?? true;
  const server = new Server(
    { name: SERVER_NAME, version: VERSION },
    {
      capabilities: { tools: {}, resources: subscriptions ? { subscribe: true } : {}, logging: {} },
      instructions:
        "Tools and contexts of a Machine Context Protocol server, translated by its bridge. Contexts are resources mcp-context://ID.",
    },
  );
  // Background work of this instance (watches); ends with it. Made on first use: most instances
  // serve one call and never start any, and an abort costs a DOMException.
  let life: AbortController | undefined;
  const lifeSignal = () => (life ??= new AbortController()).signal;
  server.onclose = () => life?.abort();
  const watches = new Map<string, AbortController>();

  server.setRequestHandler("tools/list", async () => ({ tools: (await bridged(backend.listTools())).map(translatedTool) }));

  server.setRequestHandler("tools/call", async (request, ctx) => {
    const { name } = request.params;
    const args = (request.params.arguments ?? {}) as JsonObject; // JSON from the wire: the tool validates it against its schema
    const progressToken = ctx.mcpReq._meta?.progressToken;
    let progress = 0;
    // Notifications go out in order and before the result: a client stops listening for a
    // call's progress once its result arrived, so one sent after it would be lost.
    let sent: Promise<void> = Promise.resolve();
    const later = (send: () => Promise<void>) => {
      sent = sent.then(send).catch(onerror);
    };
    const onEvent = (e: Event) => {
      const text = eventText(e);
      if (progressToken !== undefined) {
        const total = e.data?.["total"];
        const params = { progressToken, progress: ++progress, ...(typeof total === "number" ? { total } : {}), message: `${e.type}: ${text}` };
        later(() => ctx.mcpReq.notify({ method: "notifications/progress", params }));
      }
      if (e.type === "command.output") later(() => logTo(ctx, name, e, text));
    };
    const run = async (signal: AbortSignal) => {
      const response = await bridged(backend.call(name, args, { signal, onEvent }));
      await sent;
      return callResultOf(response);
    };
    const cross = options.crossRequestCancel;
    if (cross === undefined) return run(ctx.mcpReq.signal);
    const key = `${cross.scope}\u0000${String(ctx.mcpReq.id)}`;
    const cancel = new AbortController();
    cross.inflight.set(key, cancel);
    try {
      return await run(AbortSignal.any([ctx.mcpReq.signal, cancel.signal]));
    } finally {
      if (cross.inflight.get(key) === cancel) cross.inflight.delete(key);
    }
  });

  const cross = options.crossRequestCancel;
  if (cross !== undefined) {
    server.setNotificationHandler("notifications/cancelled", (n) => {
      if (n.params.requestId !== undefined) cross.inflight.get(`${cross.scope}\u0000${String(n.params.requestId)}`)?.abort(n.params.reason);
    });
  }

  server.setRequestHandler("resources/list", async () => ({ resources: [] }));
  server.setRequestHandler("resources/templates/list", async () => ({
    resourceTemplates: [
      {
        uriTemplate: `${CONTEXT_URI_PREFIX}{contextId}`,
        name: "context",
        title: "Machine Context Protocol context",
        description: "A shared, versioned key/value context: read gives a snapshot, subscribe follows its versions.",
        mimeType: "application/json",
      },
    ],
  }));

  server.setRequestHandler("resources/read", async (request) => {
    const { uri } = request.params;
    return resourceOf(uri, await bridged(backend.readContext(contextIdOf(uri))));
  });

  if (subscriptions) subscribeHandlers(server, backend, watches, lifeSignal, onerror);

  if (options.pushAllChanges === true && options.era === "modern") {
    void (async () => {
      for await (const contextId of backend.contextChanges(lifeSignal())) await server.sendResourceUpdated({ uri: contextUri(contextId) });
    })().catch(onerror);
  }
  return server;
}

/** 2025 era: a subscribe is our watch on that context, for this connection's life. */
function subscribeHandlers(
  server: Server,
  backend: BridgeBackend,
  watches: Map<string, AbortController>,
  lifeSignal: () => AbortSignal,
  onerror: (e: unknown) => void,
): void {
  server.setRequestHandler("resources/subscribe", async (request) => {
    const { uri } = request.params;
    const contextId = contextIdOf(uri);
    if (watches.has(uri)) return {};
    const stop = new AbortController();
    const signal = AbortSignal.any([stop.signal, lifeSignal()]);
    const it = backend.watchContext(contextId, signal)[Symbol.asyncIterator]();
    // The first sync answers now: a refused or missing context fails the subscribe itself.
    await bridged(it.next());
    watches.set(uri, stop);
    void (async () => {
      for (;;) {
        const r = await it.next();
        if (r.done === true || signal.aborted) return;
        await server.sendResourceUpdated({ uri });
      }
    })()
      .catch(onerror)
      .finally(() => {
        if (watches.get(uri) === stop) watches.delete(uri);
      });
    return {};
  });

  server.setRequestHandler("resources/unsubscribe", async (request) => {
    watches.get(request.params.uri)?.abort();
    watches.delete(request.params.uri);
    return {};
  });
}

/** An output event as a log notification (the logging capability; dropped when the client set no level). */
function logTo(ctx: ServerContext, tool: string, e: Event, text: string): Promise<void> {
  const stream = e.data?.["stream"];
  return ctx.mcpReq.log(stream === "stderr" ? "warning" : "info", text, tool).catch(() => {
    // A client that asked for no logs, or went away: the Response still settles the call.
  });
}

