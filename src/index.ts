/**
 * MCP, the Machine Context Protocol toolkit (not to be confused with the Model Context Protocol):
 * a server, a client and the building blocks beneath them. The same symbols come apart as
 * `machine-context-protocol/server` and `machine-context-protocol/client` (the client alone,
 * without server code); generated message types are `machine-context-protocol/gen/mcp/v1/*_pb`
 * and the schema `machine-context-protocol/proto/mcp/v1/*.proto`.
 */
export { createMcpServer } from "./server/server.js";
export type { McpServer, McpServerOptions } from "./server/server.js";
export { createMcpClient, fromConnectError } from "./client/index.js";
export type { CallOptions, ClientPayload, McpClient, McpClientOptions, McpSession, SessionOptions } from "./client/index.js";
export type { ReconnectOptions, SessionState, SessionStateChange } from "./client/index.js";
export { builtinTools, callTyped } from "./client/index.js";
export { McpError, ERROR_TABLE, isMcpError, toProtoError, fromProtoError } from "./errors.js";
export type { McpErrorCode, McpErrorKind, McpErrorDetails } from "./errors.js";
export { resolveServerOptions, loadServerOptions } from "./config.js";
export type { ServerOptions, ResolvedServerOptions, ConfigSources, TransportConfig } from "./config.js";
export { defineJsonTool, defineTypedTool, createToolRegistry, createBuiltinTools } from "./tools/index.js";
export type { RegisteredTool, ToolContext, ToolRegistry } from "./tools/index.js";
export { mintToken } from "./security/index.js";
export { ProtocolVersion, SecurityLevel } from "../gen/mcp/v1/types_pb.js";
// Symbols below matter to those assembling their own server from the parts.
export { createCore } from "./session/core.js";
export type { McpCore, CoreDeps, TransportInfo } from "./session/core.js";
export { openConnection } from "./session/connection.js";
export type { Connection } from "./session/connection.js";
export type { EncodedBatch, MessageSink } from "./session/session.js";
