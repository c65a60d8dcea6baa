/**
 * What our messages look like in the Model Context Protocol (not our Machine Context Protocol):
 * a `ToolDescriptor` as a tool of `tools/list`, a `Response` as a `tools/call` result, an
 * `McpError` as a JSON-RPC error or an `isError` result carrying our `kind` and `code`, a
 * `ContextSync` as a resource's contents. Pure functions; the SDK does all framing.
 */
import { toJson, type JsonObject, type JsonValue } from "@bufbuild/protobuf";
import { ValueSchema, timestampMs } from "@bufbuild/protobuf/wkt";
import { ProtocolError, ResourceNotFoundError, type CallToolResult, type ReadResourceResult, type Tool } from "@modelcontextprotocol/server";
import type { Response, ToolDescriptor } from "../../gen/mcp/v1/command_pb.js";
import type { ContextSync } from "../../gen/mcp/v1/context_pb.js";
import type { Event } from "../../gen/mcp/v1/event_pb.js";
import { McpError, fromProtoError, type McpErrorKind } from "../errors.js";

/** The URI scheme of contexts as resources: `mcp-context://ID`. */
export const CONTEXT_URI_PREFIX = "mcp-context://";

/** Where our error sits in a result's `_meta` and in a JSON-RPC error's `data`. */
export const ERROR_META_KEY = "machine-context-protocol/error";

/** Our error as plain JSON: what a Model Context Protocol client sees of an `McpError`. */
export interface BridgedError {
  kind: McpErrorKind;
  code: string;
  message: string;
  retryable: boolean;
  [key: string]: JsonValue;
}

/**
 * JSON-RPC error codes per kind, in the range JSON-RPC 2.0 §5.1 leaves to servers
 * (-32000…-32099). -32002 is avoided: older SDKs read it as "resource not found".
 */
const RPC_CODE: Readonly<Record<McpErrorKind, number>> = {
  PROTOCOL: -32600,
  SECURITY: -32001,
  CONTEXT: -32003,
  COMMAND: -32004,
  TRANSPORT: -32005,
};

export function bridgedError(err: McpError): BridgedError {
  const out: BridgedError = { kind: err.kind, code: err.code, message: err.message, retryable: err.retryable };
  if (err.details.field !== undefined) out["field"] = err.details.field;
  if (err.details.contextId !== undefined) out["contextId"] = err.details.contextId;
  if (err.details.currentVersion !== undefined) out["currentVersion"] = err.details.currentVersion.toString();
  if (err.details.retryAfterMs !== undefined) out["retryAfterMs"] = err.details.retryAfterMs;
  return out;
}

/**
 * An `McpError` as the JSON-RPC error a request handler throws: our `kind` and `code` in `data`.
 * An unknown tool or bad arguments are "Invalid params" (-32602), as the Model Context Protocol
 * asks for unknown tools.
 */
export function toProtocolError(err: McpError): ProtocolError {
  const rpc = err.code === "unknown_tool" || err.code === "invalid_argument" ? -32602 : RPC_CODE[err.kind];
  return new ProtocolError(rpc, `${err.code}: ${err.message}`, { [ERROR_META_KEY]: bridgedError(err) });
}

/** Reads a tool's JSON Schema into the `{ type: "object", … }` shape tools/list requires. */
function objectSchema(s: JsonObject | undefined): Tool["inputSchema"] {
  if (s === undefined || Object.keys(s).length === 0) return { type: "object" };
  // The descriptor's schema is JSON Schema already (checked where the tool was defined).
  return { ...s, type: "object" } as Tool["inputSchema"];
}

/** One of our tools as a Model Context Protocol tool (input/output schemas and annotations kept). */
export function toolOf(d: ToolDescriptor): Tool {
  const tool: Tool = { name: d.name, description: d.description, inputSchema: objectSchema(d.inputSchema) };
  // tools/list requires an object output schema; ours may describe any JSON, so only objects pass.
  if (d.outputSchema !== undefined && d.outputSchema["type"] === "object") tool.outputSchema = objectSchema(d.outputSchema);
  const a = d.annotations;
  if (a !== undefined) {
    tool.annotations = { readOnlyHint: a.readOnly, destructiveHint: a.destructive, idempotentHint: a.idempotent };
  }
  tool._meta = { "machine-context-protocol/tool": { permission: d.permission, streaming: a?.streaming ?? false } };
  return tool;
}

/**
 * A command's Response as a tools/call result. Output → `structuredContent` plus its JSON as text
 * (text, never base64: the protocol's text content carries any size). A tool's own failure
 * (kind COMMAND, except `unknown_tool`) is an `isError` result the model can read, our error in
 * `_meta`; every other error (security, context, protocol, transport) is thrown as a JSON-RPC
 * error with our error in its `data`.
 */
export function callResultOf(r: Response): CallToolResult {
  switch (r.result.case) {
    case "output":
      return { content: [{ type: "text", text: JSON.stringify(r.result.value) }], structuredContent: r.result.value };
    case "error": {
      const err = fromProtoError(r.result.value);
      if (err.kind !== "COMMAND" || err.code === "unknown_tool" || err.code === "invalid_argument") throw toProtocolError(err);
      return { isError: true, content: [{ type: "text", text: `${err.code}: ${err.message}` }], _meta: { [ERROR_META_KEY]: bridgedError(err) } };
    }
    case "typedOutput":
      // We send JSON arguments, so tools answer with JSON output; a typed answer is a server bug.
      throw toProtocolError(new McpError("invalid_message", `tool answered with a typed ${r.result.value.typeUrl}; the bridge sends JSON arguments`));
    default:
      throw toProtocolError(new McpError("invalid_message", "the Response carries no result"));
  }
}

/** The context id of an `mcp-context://ID` URI; a ResourceNotFoundError for any other URI. */
export function contextIdOf(uri: string): string {
  if (!uri.startsWith(CONTEXT_URI_PREFIX) || uri.length === CONTEXT_URI_PREFIX.length) throw new ResourceNotFoundError(uri);
  return decodeURIComponent(uri.slice(CONTEXT_URI_PREFIX.length));
}

export function contextUri(contextId: string): string {
  return CONTEXT_URI_PREFIX + encodeURIComponent(contextId);
}

/** A context snapshot as a resource: one JSON text `{ context_id, version, entries }`. */
export function resourceOf(uri: string, sync: ContextSync): ReadResourceResult {
  const entries: JsonObject = {};
  for (const e of sync.entries) {
    entries[e.key] = {
      value: e.value === undefined ? null : toJson(ValueSchema, e.value),
      version: e.version.toString(),
      updated_by: e.updatedBy,
      ...(e.updatedAt === undefined ? {} : { updated_at: new Date(timestampMs(e.updatedAt)).toISOString() }),
    };
  }
  const body = { context_id: sync.contextId, version: sync.toVersion.toString(), entries };
  return { contents: [{ uri, mimeType: "application/json", text: JSON.stringify(body), _meta: { version: sync.toVersion.toString() } }] };
}

/** The text of an event for a progress message or a log line. */
export function eventText(e: Event): string {
  const text = e.data?.["text"];
  return typeof text === "string" ? text : JSON.stringify(e.data ?? {});
}
