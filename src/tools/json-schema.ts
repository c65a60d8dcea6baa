/**
 * JSON Schema (draft 2020-12) derived from a protobuf message, so a typed tool's
 * `ToolDescriptor.input_schema` / `output_schema` always match its proto types and JSON
 * `arguments` can be validated with the same schema (PROTOCOL.md §3 `ToolDescriptor`).
 *
 * The schema describes the canonical protobuf JSON mapping as `fromJson` reads it: lowerCamelCase
 * property names, 64-bit integers as integer or decimal string, enums by name, bytes as base64,
 * and the well-known types by their JSON forms.
 */
import { ScalarType, type DescEnum, type DescField, type DescMessage, type JsonObject } from "@bufbuild/protobuf";

/** The draft every derived schema declares. */
export const JSON_SCHEMA_DRAFT = "https://json-schema.org/draft/2020-12/schema";

/** Options of `deriveJsonSchema`. */
export interface DeriveJsonSchemaOptions {
  /**
   * Also accept each field under its proto name (e.g. `create_parents` besides `createParents`),
   * as `fromJson` does. Meant for validation; published schemas show only the JSON names so
   * models see one spelling.
   * @default false
   */
  protoNames?: boolean;
}

/**
 * Derives a JSON Schema object for `desc`. Nested messages are inlined; a message that contains
 * itself (directly or not) is emitted once under `$defs` and referenced. Comments from the
 * `.proto` source become `description`s when the descriptor carries source info (descriptors
 * embedded by protoc-gen-es do not; ones loaded from `buf build` output do).
 *
 * @example
 * deriveJsonSchema(FsReadInputSchema)
 * // { $schema: "…/2020-12/schema", title: "mcp.tools.v1.FsReadInput", type: "object",
 * //   properties: { path: { type: "string" }, offset: { type: ["integer", "string"], … }, … },
 * //   additionalProperties: false }
 */
export function deriveJsonSchema(desc: DescMessage, options: DeriveJsonSchemaOptions = {}): JsonObject {
  const deriver = new SchemaDeriver(options.protoNames ?? false);
  const body = deriver.message(desc, [desc]);
  const schema: JsonObject = { $schema: JSON_SCHEMA_DRAFT, title: desc.typeName, ...body };
  const defs = deriver.defs();
  if (defs !== undefined) schema["$defs"] = defs;
  return schema;
}

// A class because derivation carries state (the `$defs` collected for recursive messages).
class SchemaDeriver {
  private readonly recursive = new Map<string, DescMessage>();

  constructor(private readonly protoNames: boolean) {}

  /** The `$defs` of the recursive messages met, each derived once. */
  defs(): JsonObject | undefined {
    if (this.recursive.size === 0) return undefined;
    const defs: JsonObject = {};
    // Deriving a def may discover further recursive types, hence the worklist.
    const done = new Set<string>();
    for (let pending = [...this.recursive.values()]; pending.length > 0; pending = [...this.recursive.values()].filter((d) => !done.has(d.typeName))) {
      for (const d of pending) {
        done.add(d.typeName);
        defs[d.typeName] = this.message(d, [d]);
      }
    }
    return defs;
  }

  /** `stack`: the messages being derived on the way here, to spot recursion. */
  message(desc: DescMessage, stack: readonly DescMessage[]): JsonObject {
    const wkt = wellKnownSchema(desc);
    if (wkt !== undefined) return wkt;
    const properties: JsonObject = {};
    for (const field of desc.fields) {
      const schema = this.field(field, stack);
      const description = commentOf(field);
      if (description !== undefined) schema["description"] = description;
      properties[field.jsonName] = schema;
      if (this.protoNames && field.name !== field.jsonName) properties[field.name] = schema;
    }
    const out: JsonObject = { type: "object", properties, additionalProperties: false };
    const description = commentOf(desc);
    if (description !== undefined) out["description"] = description;
    return out;
  }

  private field(field: DescField, stack: readonly DescMessage[]): JsonObject {
    switch (field.fieldKind) {
      case "scalar":
        return scalarSchema(field.scalar);
      case "enum":
        return enumSchema(field.enum);
      case "message":
        return this.messageRef(field.message, stack);
      case "list": {
        const items =
          field.listKind === "scalar"
            ? scalarSchema(field.scalar)
            : field.listKind === "enum"
              ? enumSchema(field.enum)
              : this.messageRef(field.message, stack);
        return { type: "array", items };
      }
      case "map": {
        const values =
          field.mapKind === "scalar"
            ? scalarSchema(field.scalar)
            : field.mapKind === "enum"
              ? enumSchema(field.enum)
              : this.messageRef(field.message, stack);
        const out: JsonObject = { type: "object", additionalProperties: values };
        const keys = mapKeyPattern(field.mapKey);
        if (keys !== undefined) out["propertyNames"] = { pattern: keys };
        return out;
      }
    }
  }

  private messageRef(desc: DescMessage, stack: readonly DescMessage[]): JsonObject {
    if (stack.includes(desc)) {
      this.recursive.set(desc.typeName, desc);
      return { $ref: `#/$defs/${desc.typeName}` };
    }
    return this.message(desc, [...stack, desc]);
  }
}

const INT64_PATTERN = "^-?[0-9]+$";
const UINT64_PATTERN = "^[0-9]+$";

function scalarSchema(type: ScalarType): JsonObject {
  switch (type) {
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      return { type: "number" };
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
      return { type: "integer", minimum: -2147483648, maximum: 2147483647 };
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return { type: "integer", minimum: 0, maximum: 4294967295 };
    // protobuf JSON writes 64-bit integers as strings (they exceed a double's 53 bits) and reads both.
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return { type: ["integer", "string"], pattern: INT64_PATTERN };
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return { type: ["integer", "string"], minimum: 0, pattern: UINT64_PATTERN };
    case ScalarType.BOOL:
      return { type: "boolean" };
    case ScalarType.STRING:
      return { type: "string" };
    case ScalarType.BYTES:
      return { type: "string", contentEncoding: "base64" };
  }
}

function enumSchema(desc: DescEnum): JsonObject {
  if (desc.typeName === "google.protobuf.NullValue") return { type: "null" };
  const out: JsonObject = { type: "string", enum: desc.values.map((v) => v.name) };
  const description = commentOf(desc);
  if (description !== undefined) out["description"] = description;
  return out;
}

function mapKeyPattern(key: ScalarType): string | undefined {
  switch (key) {
    case ScalarType.STRING:
      return undefined;
    case ScalarType.BOOL:
      return "^(true|false)$";
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return UINT64_PATTERN;
    default:
      return INT64_PATTERN;
  }
}

const WRAPPERS: Readonly<Record<string, ScalarType>> = {
  "google.protobuf.DoubleValue": ScalarType.DOUBLE,
  "google.protobuf.FloatValue": ScalarType.FLOAT,
  "google.protobuf.Int64Value": ScalarType.INT64,
  "google.protobuf.UInt64Value": ScalarType.UINT64,
  "google.protobuf.Int32Value": ScalarType.INT32,
  "google.protobuf.UInt32Value": ScalarType.UINT32,
  "google.protobuf.BoolValue": ScalarType.BOOL,
  "google.protobuf.StringValue": ScalarType.STRING,
  "google.protobuf.BytesValue": ScalarType.BYTES,
};

/** The JSON forms of the well-known types (protobuf JSON mapping), or undefined for others. */
function wellKnownSchema(desc: DescMessage): JsonObject | undefined {
  const wrapped = WRAPPERS[desc.typeName];
  if (wrapped !== undefined) return scalarSchema(wrapped);
  switch (desc.typeName) {
    case "google.protobuf.Struct":
      return { type: "object" };
    case "google.protobuf.Value":
      return { description: "Any JSON value." };
    case "google.protobuf.ListValue":
      return { type: "array" };
    case "google.protobuf.Timestamp":
      return { type: "string", format: "date-time" };
    case "google.protobuf.Duration":
      return { type: "string", pattern: "^-?[0-9]+(\\.[0-9]{1,9})?s$", description: 'Seconds with an "s" suffix, e.g. "1.5s".' };
    case "google.protobuf.FieldMask":
      return { type: "string", description: "Comma-separated lowerCamelCase field paths." };
    case "google.protobuf.Empty":
      return { type: "object", additionalProperties: false };
    case "google.protobuf.Any":
      return { type: "object", properties: { "@type": { type: "string" } }, required: ["@type"] };
    default:
      return undefined;
  }
}

/**
 * The leading (else trailing) comment of a message, field or enum, read from the file's
 * source info: `path` follows descriptor.proto's `SourceCodeInfo.Location.path` numbering.
 */
function commentOf(desc: DescMessage | DescField | DescEnum): string | undefined {
  const info = desc.kind === "field" ? desc.parent.file.proto.sourceCodeInfo : desc.file.proto.sourceCodeInfo;
  if (info === undefined) return undefined;
  const path = sourcePath(desc);
  if (path === undefined) return undefined;
  const location = info.location.find((l) => l.path.length === path.length && l.path.every((p, i) => p === path[i]));
  const text = (location?.leadingComments ?? "").trim() || (location?.trailingComments ?? "").trim();
  return text === "" ? undefined : text.replace(/\n /g, "\n");
}

// Field numbers in google/protobuf/descriptor.proto.
const FILE_MESSAGE_TYPE = 4;
const FILE_ENUM_TYPE = 5;
const MESSAGE_FIELD = 2;
const MESSAGE_NESTED_TYPE = 3;
const MESSAGE_ENUM_TYPE = 4;

function sourcePath(desc: DescMessage | DescField | DescEnum): number[] | undefined {
  if (desc.kind === "field") {
    const parent = sourcePath(desc.parent);
    const index = desc.parent.proto.field.indexOf(desc.proto);
    return parent === undefined || index < 0 ? undefined : [...parent, MESSAGE_FIELD, index];
  }
  const parent = desc.parent;
  if (parent === undefined) {
    const index =
      desc.kind === "message" ? desc.file.proto.messageType.indexOf(desc.proto) : desc.file.proto.enumType.indexOf(desc.proto);
    return index < 0 ? undefined : [desc.kind === "message" ? FILE_MESSAGE_TYPE : FILE_ENUM_TYPE, index];
  }
  const parentPath = sourcePath(parent);
  const index = desc.kind === "message" ? parent.proto.nestedType.indexOf(desc.proto) : parent.proto.enumType.indexOf(desc.proto);
  if (parentPath === undefined || index < 0) return undefined;
  return [...parentPath, desc.kind === "message" ? MESSAGE_NESTED_TYPE : MESSAGE_ENUM_TYPE, index];
}
