/**
 * The TypeScript client: `createMcpClient({ baseUrl, token })` gives Connect clients for the unary
 * services and `connect()` for a session stream (PROTOCOL.md §4).
 */
export { createMcpClient } from "./client.js";
export type { CallOptions, ClientPayload, McpClient, McpClientOptions, McpSession, SessionOptions, SessionState, SessionStateChange } from "./client.js";
export type { ReconnectOptions } from "./reconnect.js";
export { callChunks, readChunks, uploadChunks } from "./chunks.js";
export type { ChunkReadOptions, ChunkStream, ChunkStreamOptions, ChunkUploadOptions } from "./chunks.js";
export { fromConnectError } from "./errors.js";
export { builtinTools, callTyped } from "./typed-tools.js";
