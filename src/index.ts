/**
 * MCP, the Machine Context Protocol toolkit (not to be confused with the Model Context Protocol):
 * a server, a client and the building blocks beneath them. The same symbols come apart as
 * `machine-context-protocol/server` and `machine-context-protocol/client` (the client alone,
 * without server code); generated message types are `machine-context-protocol/gen/mcp/v1/*_pb`
 * and the schema `machine-context-protocol/proto/mcp/v1/*.proto`.
 */
// The root is exactly /server plus /client (test/package/entries.test.ts): one list each, no third copy.
export * from "./entry/server.js";
export * from "./entry/client.js";
