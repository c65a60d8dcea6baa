/**
 * Tools: what a Command runs (PROTOCOL.md §3). Define tools with `defineTypedTool` (protobuf
 * input/output, callable with a typed Any or JSON arguments) or `defineJsonTool` (JSON Schema),
 * register them in a `createToolRegistry()`, and let the session core look them up and `run`
 * them with a `ToolContext` (signal, events). `createBuiltinTools` gives the file and process
 * tools, confined to a workspace root by `resolveInRoot`.
 *
 * The registry holds definitions only: permissions, security levels, timeouts, Cancel and the
 * "exactly one Response" rule belong to the session core.
 *
 * @module
 */
export { createToolRegistry } from "./registry.js";
export type { ToolRegistry } from "./registry.js";
export type { RegisteredTool, ToolContext, WriteChunkOptions } from "./registered-tool.js";
export { defineJsonTool, defineTypedTool } from "./define-tool.js";
export type { JsonToolDefinition, ToolAnnotationsInit, ToolDefinitionBase, TypedToolDefinition } from "./define-tool.js";
export { deriveJsonSchema, JSON_SCHEMA_DRAFT } from "./json-schema.js";
export type { DeriveJsonSchemaOptions } from "./json-schema.js";
export { isInside, resolveInRoot, toRootRelative } from "./workspace.js";
export type { ResolveInRootOptions } from "./workspace.js";
export { createBuiltinTools } from "./builtin/index.js";
export type { BuiltinToolName, BuiltinToolsOptions, ExecToolOptions } from "./builtin/index.js";
