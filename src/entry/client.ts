/**
 * `machine-context-protocol/client`: the TypeScript client alone — no server code and no
 * native module, so an agent, an IDE plugin or a bot can depend on it and load only this.
 * The generated message types are under `machine-context-protocol/gen/mcp/v1/*_pb`.
 *
 * @example
 * import { createMcpClient, isMcpError } from "machine-context-protocol/client";
 * const session = await createMcpClient({ baseUrl: "http://127.0.0.1:9000", token }).connect();
 * const output = await session.call("echo", { text: "hi" });
 */
export { createMcpClient, fromConnectError, builtinTools, callTyped } from "../client/index.js";
export type { CallOptions, ClientPayload, McpClient, McpClientOptions, McpSession, SessionOptions } from "../client/index.js";
export type { ReconnectOptions, SessionState, SessionStateChange } from "../client/index.js";
export { callChunks, readChunks, uploadChunks } from "../client/index.js";
export type { ChunkReadOptions, ChunkStream, ChunkUploadOptions } from "../client/index.js";
export { McpError, ERROR_TABLE, isMcpError, toProtoError, fromProtoError } from "../errors.js";
export type { McpErrorCode, McpErrorKind, McpErrorDetails } from "../errors.js";
export { ProtocolVersion, SecurityLevel } from "../../gen/mcp/v1/types_pb.js";
