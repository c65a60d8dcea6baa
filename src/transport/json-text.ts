/**
 * The JSON-text forms of a command's JSON input and output (`Command.arguments_json`,
 * `Response.output_json`): the same JSON object as `arguments` / `output`, carried as text so
 * both sides use the runtime's native `JSON.parse` / `JSON.stringify` instead of building a
 * `google.protobuf.Struct` tree only to convert it (docs/streams.md "JSON arguments and output").
 */
import type { JsonObject } from "@bufbuild/protobuf";
import { McpError } from "../errors.js";

/**
 * The Handshake capability asking the server to answer JSON outputs as `Response.output_json`;
 * a server that does so lists it in `HandshakeResult.capabilities`.
 */
export const OUTPUT_JSON_CAPABILITY = "output_json";

/**
 * Parses JSON text that must be one object. Anything else is an McpError of `code` naming
 * `field`: by default COMMAND `invalid_argument`, as for a Struct `arguments` that fails its
 * tool's checks; a client reading a server's `output_json` passes `invalid_message`.
 */
export function parseJsonObject(text: string, field: string, code: "invalid_argument" | "invalid_message" = "invalid_argument"): JsonObject {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new McpError(code, `${field} is not valid JSON: ${e instanceof Error ? e.message : String(e)}`, { field, cause: e });
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new McpError(code, `${field} must be a JSON object, got ${value === null ? "null" : Array.isArray(value) ? "an array" : typeof value}`, {
      field,
    });
  }
  return value as JsonObject;
}
