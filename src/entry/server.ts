/**
 * `machine-context-protocol/server`: the server and the parts to assemble one — tools, tokens,
 * configuration, the session core — without the client. SQLite and Redis (better-sqlite3,
 * ioredis) load only when a store of that kind is opened.
 *
 * `machine-context-protocol` itself exports this and `machine-context-protocol/client`
 * together (test/package/entries.test.ts keeps the three lists in step).
 */
export { createMcpServer } from "../server/server.js";
export type { McpServer, McpServerOptions } from "../server/server.js";
export { McpError, ERROR_TABLE, isMcpError, toProtoError, fromProtoError } from "../errors.js";
export type { McpErrorCode, McpErrorKind, McpErrorDetails } from "../errors.js";
export { resolveServerOptions, loadServerOptions } from "../config.js";
export type { ServerOptions, ResolvedServerOptions, ConfigSources, TransportConfig } from "../config.js";
export { defineJsonTool, defineTypedTool, createToolRegistry, createBuiltinTools } from "../tools/index.js";
export type { RegisteredTool, ToolContext, ToolRegistry, WriteChunkOptions } from "../tools/index.js";
export { mintToken } from "../security/index.js";
export { ProtocolVersion, SecurityLevel } from "../../gen/mcp/v1/types_pb.js";
// Symbols below matter to those assembling their own server from the parts.
export { createCore } from "../session/core.js";
export type { McpCore, CoreDeps, TransportInfo } from "../session/core.js";
export { openConnection } from "../session/connection.js";
export type { Connection } from "../session/connection.js";
export type { EncodedBatch, MessageSink } from "../session/session.js";
