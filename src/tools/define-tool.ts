/**
 * Defining tools: `defineTypedTool` for tools whose input and output are protobuf messages
 * (callable with a typed `Command.input` or with JSON `Command.arguments`), and `defineJsonTool`
 * for tools described by a JSON Schema only. Both return a `RegisteredTool` whose `run` owns
 * decoding, validation and error mapping, so every tool fails the same way (PROTOCOL.md §7).
 */
import {
  create,
  createRegistry,
  fromJson,
  toJson,
  type DescMessage,
  type JsonObject,
  type JsonValue,
  type MessageInitShape,
  type MessageShape,
  type Registry,
} from "@bufbuild/protobuf";
import { anyIs, anyPack, anyUnpack, type Any } from "@bufbuild/protobuf/wkt";
import { Ajv2020, type ErrorObject, type ValidateFunction } from "ajv/dist/2020.js";
import {
  type Response,
  ToolAnnotationsSchema,
  ToolDescriptorSchema,
  type ToolDescriptor,
} from "../../gen/mcp/v1/command_pb.js";
import { SecurityLevel } from "../../gen/mcp/v1/types_pb.js";
import { McpError, isMcpError } from "../errors.js";
import { parseJsonObject } from "../transport/json-text.js";
import { deriveJsonSchema } from "./json-schema.js";
import type { RegisteredTool, ToolContext } from "./registered-tool.js";

/** Behaviour hints shown in the descriptor (`mcp.v1.ToolAnnotations`). */
export type ToolAnnotationsInit = MessageInitShape<typeof ToolAnnotationsSchema>;

/** What every tool definition has. */
export interface ToolDefinitionBase {
  /** Unique name: dot-separated words of letters, digits, `_` and `-`, e.g. `fs.read`. */
  name: string;
  /** What the tool does, for humans and models. */
  description: string;
  /**
   * Minimum session security level that may run it (PROTOCOL.md §5).
   * @default SecurityLevel.STANDARD
   */
  securityLevel?: SecurityLevel;
  /**
   * Permission needed to run it.
   * @default `tool:<name>`
   */
  permission?: string;
  /**
   * Behaviour hints.
   * @default all false
   */
  annotations?: ToolAnnotationsInit;
}

/** A tool whose input and output are protobuf messages. */
export interface TypedToolDefinition<I extends DescMessage, O extends DescMessage> extends ToolDefinitionBase {
  /** The input message; its JSON Schema becomes the descriptor's `input_schema`. */
  input: I;
  /** The output message. */
  output: O;
  /**
   * Runs the tool: returns the output, or a promise of it (a tool with nothing to wait for
   * answers synchronously and costs no promise). Throws or rejects with an `McpError` for
   * expected failures; anything else becomes `tool_failed`. Must honour `ctx.signal`.
   */
  handler(input: MessageShape<I>, ctx: ToolContext): MessageInitShape<O> | PromiseLike<MessageInitShape<O>>;
}

/** A tool described by JSON Schemas only. */
export interface JsonToolDefinition extends ToolDefinitionBase {
  /** JSON Schema (draft 2020-12) of the arguments; compiled once, here. */
  inputSchema: JsonObject;
  /** JSON Schema of the output; when given, outputs are checked against it. */
  outputSchema?: JsonObject;
  /** Runs the tool with validated arguments; the output or a promise of it, same error rules as typed tools. */
  handler(input: JsonObject, ctx: ToolContext): JsonObject | PromiseLike<JsonObject>;
}

const NAME_PATTERN = /^[A-Za-z][A-Za-z0-9_-]*(\.[A-Za-z][A-Za-z0-9_-]*)*$/;

/**
 * Defines a typed tool. The command's input may be:
 * - `input`: an Any that must hold exactly the `input` message (else `invalid_argument`, field `input`);
 * - `arguments`: JSON in the protobuf JSON mapping, with lowerCamelCase or proto field names
 *   (unknown or mistyped fields are `invalid_argument` naming the field as sent);
 * - nothing: the input message with every field at its default.
 * A typed input gets a typed output (`typedOutput`); JSON or nothing gets JSON `output`.
 *
 * @example
 * const echo = defineTypedTool({
 *   name: "echo", description: "Returns its input.",
 *   input: EchoInputSchema, output: EchoOutputSchema,
 *   handler: async (input) => ({ text: input.text }),
 * });
 */
export function defineTypedTool<I extends DescMessage, O extends DescMessage>(def: TypedToolDefinition<I, O>): RegisteredTool {
  const base = resolveBase(def);
  const { input, output, handler } = def;
  // Any fields inside inputs/outputs need their types resolvable for JSON.
  const registry: Registry = createRegistry(input.file, output.file);
  // Made once: these run on every call.
  const readOptions = { registry };
  const writeOptions = { alwaysEmitImplicit: true, registry };
  const validate = compile(def.name, "input", deriveJsonSchema(input, { protoNames: true }));
  const descriptor = makeDescriptor(base, deriveJsonSchema(input), deriveJsonSchema(output), input.typeName, output.typeName);

  function unpackInput(any: Any): MessageShape<I> {
    if (!anyIs(any, input)) {
      throw new McpError("invalid_argument", `tool ${base.name} expects input of type ${input.typeName}, got "${any.typeUrl}"`, {
        field: "input",
      });
    }
    try {
      const message = anyUnpack(any, input);
      if (message !== undefined) return message;
    } catch (e) {
      throw new McpError("invalid_argument", `input is not a valid ${input.typeName}`, { field: "input", cause: e });
    }
    throw new McpError("invalid_argument", `input is not a valid ${input.typeName}`, { field: "input" });
  }

  function parseArguments(json: JsonObject): MessageShape<I> {
    try {
      return fromJson(input, json, readOptions);
    } catch (e) {
      // The schema check above catches nearly everything; this covers what JSON Schema cannot
      // say (a field given under both its names, two members of a oneof).
      const cause: unknown = e instanceof Error ? e.cause : undefined;
      const field = fieldErrorName(cause) ?? "arguments";
      const message = e instanceof Error ? e.message : String(e);
      throw new McpError("invalid_argument", message, { field, cause: e });
    }
  }

  // What a handler's output becomes — a typed input gets a typed output; JSON arguments (or none)
  // get JSON —, and an output that does not encode is the tool's failure too.
  function typedResult(init: MessageInitShape<O>): Response["result"] {
    try {
      return { case: "typedOutput", value: anyPack(output, create(output, init)) };
    } catch (e) {
      throw toolFailure(base.name, e);
    }
  }
  function jsonResult(init: MessageInitShape<O>): Response["result"] {
    try {
      return { case: "output", value: outputJson(init) };
    } catch (e) {
      throw toolFailure(base.name, e);
    }
  }

  /** The handler's output as `output` JSON (ProtoJSON by protobuf-es, every field written). */
  function outputJson(init: MessageInitShape<O>): JsonObject {
    const json = toJson(output, create(output, init), writeOptions);
    if (!isJsonObject(json)) throw new TypeError(`output ${output.typeName} is not a JSON object`);
    return json;
  }

  return {
    ...base,
    descriptor,
    // Not an async function: a suspended one keeps its whole frame per command (measured ~0.5 KB
    // on this hot path); the checks run synchronously, the handler's promise is chained once.
    run(command, ctx) {
      const payload = command.payload;
      let message: MessageShape<I>;
      try {
        if (isAborted(ctx)) throw ctx.signal.reason;
        switch (payload.case) {
          case "input":
            message = unpackInput(payload.value);
            break;
          case "arguments":
            checkArguments(validate, payload.value);
            message = parseArguments(payload.value);
            break;
          case "argumentsJson": {
            // The core hands tools `arguments` only; this is for a caller of run() itself.
            const args = parseJsonObject(payload.value, "arguments_json");
            checkArguments(validate, args);
            message = parseArguments(args);
            break;
          }
          case undefined:
            message = create(input);
            break;
        }
      } catch (e) {
        return Promise.reject(e);
      }
      const toResult = payload.case === "input" ? typedResult : jsonResult;
      let out: MessageInitShape<O> | PromiseLike<MessageInitShape<O>>;
      try {
        out = handler(message, ctx);
        if (!isThenable(out)) return toResult(out);
      } catch (e) {
        return Promise.reject(handlerError(base.name, ctx, e));
      }
      return Promise.resolve(out).then(toResult, (e: unknown) => {
        throw handlerError(base.name, ctx, e);
      });
    },
  };
}

/**
 * Defines a JSON tool: arguments are validated against `inputSchema` (ajv, compiled once here;
 * a bad schema throws `TypeError` now, not at call time) and a violation is `invalid_argument`
 * naming the field. Commands with a typed `input` are refused (`invalid_argument`, field `input`).
 */
export function defineJsonTool(def: JsonToolDefinition): RegisteredTool {
  const base = resolveBase(def);
  const validateInput = compile(def.name, "inputSchema", def.inputSchema);
  const validateOutput = def.outputSchema === undefined ? undefined : compile(def.name, "outputSchema", def.outputSchema);
  const descriptor = makeDescriptor(base, def.inputSchema, def.outputSchema, "", "");
  const { handler } = def;

  return {
    ...base,
    descriptor,
    async run(command, ctx) {
      if (isAborted(ctx)) throw ctx.signal.reason;
      const payload = command.payload;
      if (payload.case === "input") {
        throw new McpError("invalid_argument", `tool ${base.name} takes JSON arguments, not a typed input`, { field: "input" });
      }
      const args = payload.case === "arguments" ? payload.value : payload.case === "argumentsJson" ? parseJsonObject(payload.value, "arguments_json") : {};
      checkArguments(validateInput, args);
      try {
        const value = await handler(args, ctx);
        if (validateOutput !== undefined && !validateOutput(value)) {
          const [first] = validateOutput.errors ?? [];
          throw new TypeError(`output does not match outputSchema${first === undefined ? "" : ` at ${fieldOf(first) || "(root)"}: ${first.message ?? ""}`}`);
        }
        return { case: "output", value };
      } catch (e) {
        throw handlerError(base.name, ctx, e);
      }
    },
  };
}

interface ResolvedBase {
  name: string;
  description: string;
  securityLevel: SecurityLevel;
  permission: string;
  annotations: ToolAnnotationsInit;
}

/** The one place tool-definition defaults are resolved and checked. */
function resolveBase(def: ToolDefinitionBase): ResolvedBase {
  if (!NAME_PATTERN.test(def.name)) {
    throw new TypeError(`tool name "${def.name}" must be dot-separated words of letters, digits, "_" and "-"`);
  }
  const securityLevel = def.securityLevel ?? SecurityLevel.STANDARD;
  if (![SecurityLevel.LOW, SecurityLevel.STANDARD, SecurityLevel.HIGH].includes(securityLevel)) {
    throw new TypeError(`tool ${def.name}: securityLevel must be LOW, STANDARD or HIGH`);
  }
  const permission = def.permission ?? `tool:${def.name}`;
  if (permission === "") throw new TypeError(`tool ${def.name}: permission must not be empty`);
  return { name: def.name, description: def.description, securityLevel, permission, annotations: def.annotations ?? {} };
}

function makeDescriptor(
  base: ResolvedBase,
  inputSchema: JsonObject,
  outputSchema: JsonObject | undefined,
  inputType: string,
  outputType: string,
): ToolDescriptor {
  return create(ToolDescriptorSchema, {
    name: base.name,
    description: base.description,
    inputSchema,
    ...(outputSchema === undefined ? {} : { outputSchema }),
    inputType,
    outputType,
    securityLevel: base.securityLevel,
    permission: base.permission,
    annotations: create(ToolAnnotationsSchema, base.annotations),
  });
}

function compile(toolName: string, what: string, schema: JsonObject): ValidateFunction {
  // One ajv per schema: tool authors' `$id`s must not collide across tools. Unknown keywords are
  // refused (they are usually typos that would silently validate nothing); ajv's stricter
  // style checks (strictRequired, strictTypes) would refuse valid schemas, so they are off.
  // Formats are annotations only: ajv-formats is not a dependency.
  const ajv = new Ajv2020({
    strictSchema: true,
    strictNumbers: true,
    strictTypes: false,
    strictTuples: false,
    strictRequired: false,
    allowUnionTypes: true,
    validateFormats: false,
    allErrors: false,
  });
  try {
    return ajv.compile(schema);
  } catch (e) {
    throw new TypeError(`tool ${toolName}: invalid ${what}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
}

function checkArguments(validate: ValidateFunction, args: JsonObject): void {
  if (validate(args)) return;
  const [first] = validate.errors ?? [];
  if (first === undefined) throw new McpError("invalid_argument", "arguments are invalid", { field: "arguments" });
  const field = fieldOf(first);
  throw new McpError("invalid_argument", `${field === "" ? "arguments" : field}: ${describe(first)}`, {
    field: field === "" ? "arguments" : field,
  });
}

function describe(error: ErrorObject): string {
  switch (error.keyword) {
    case "additionalProperties":
      return "unknown field";
    case "required":
      return "required field is missing";
    default:
      return error.message ?? error.keyword;
  }
}

/**
 * The field an ajv error is about, as a path like `env.FOO` or `include[0]`: the JSON pointer
 * `instancePath`, plus the offending property for `additionalProperties` / `required`.
 */
function fieldOf(error: ErrorObject): string {
  const segments = error.instancePath === "" ? [] : error.instancePath.slice(1).split("/").map((s) => s.replace(/~1/g, "/").replace(/~0/g, "~"));
  const params: Record<string, unknown> = error.params;
  const extra = error.keyword === "additionalProperties" ? params["additionalProperty"] : error.keyword === "required" ? params["missingProperty"] : undefined;
  if (typeof extra === "string") segments.push(extra);
  let path = "";
  for (const s of segments) path += /^[0-9]+$/.test(s) ? `[${s}]` : path === "" ? s : `.${s}`;
  return path;
}

/** Whether the command was aborted, without making the core create its AbortSignal. */
function isAborted(ctx: ToolContext): boolean {
  return ctx.aborted ?? ctx.signal.aborted;
}

/** A handler's answer is a promise (or another thenable) rather than the output itself. */
function isThenable<T>(value: T | PromiseLike<T>): value is PromiseLike<T> {
  return typeof (value as { then?: unknown } | null)?.then === "function";
}

/** What a handler's (or its output encoding's) exception becomes. */
function handlerError(toolName: string, ctx: ToolContext, e: unknown): unknown {
  // Once aborted, whatever the handler threw (often an AbortError from fs or a stream) is a
  // consequence of the abort; the core maps the signal's reason to `timeout` / `cancelled`.
  if (isAborted(ctx)) return ctx.signal.reason;
  return toolFailure(toolName, e);
}

/** A tool's own McpError as it is; anything else it threw is `tool_failed`. */
function toolFailure(toolName: string, e: unknown): unknown {
  if (isMcpError(e)) return e;
  const message = e instanceof Error ? e.message : String(e);
  return new McpError("tool_failed", `tool ${toolName} failed: ${message}`, { cause: e });
}

/**
 * The field named by a protobuf-es `FieldError` (the `cause` fromJson attaches). protobuf-es does
 * not export its guard from the package root, so this checks the shape it documents.
 */
function fieldErrorName(cause: unknown): string | undefined {
  if (!(cause instanceof Error) || !("field" in cause) || typeof cause.field !== "function") return undefined;
  const desc: unknown = cause.field();
  if (typeof desc !== "object" || desc === null || !("name" in desc) || typeof desc.name !== "string") return undefined;
  return desc.name;
}

function isJsonObject(value: JsonValue): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
