import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { create, createFileRegistry, fromBinary, fromJson, toJson, type DescMessage, type JsonObject } from "@bufbuild/protobuf";
import { DescriptorProtoSchema, FileDescriptorSetSchema, timestampFromDate, ValueSchema } from "@bufbuild/protobuf/wkt";
import { describe, expect, test } from "vitest";
import {
  EchoInputSchema,
  ExecInputSchema,
  FsListInputSchema,
  FsListOutputSchema,
  FsReadInputSchema,
  FsSearchInputSchema,
  FsWriteInputSchema,
} from "../../gen/mcp/tools/v1/tools_pb.js";
import { ContextEntrySchema, ContextUpdateSchema } from "../../gen/mcp/v1/context_pb.js";
import { ErrorSchema, ErrorKind } from "../../gen/mcp/v1/error_pb.js";
import { EventSchema } from "../../gen/mcp/v1/event_pb.js";
import { HandshakeResultSchema } from "../../gen/mcp/v1/session_pb.js";
import { SecurityLevel } from "../../gen/mcp/v1/types_pb.js";
import { defineTypedTool, deriveJsonSchema, JSON_SCHEMA_DRAFT } from "../../src/tools/index.js";
import { makeWorkspace, runJson } from "./helpers.js";

const UINT64 = { type: ["integer", "string"], minimum: 0, pattern: "^[0-9]+$" };
const UINT32 = { type: "integer", minimum: 0, maximum: 4294967295 };

// Spot checks of each built-in input: property names are lowerCamelCase, 64-bit integers take
// integer or string, repeated fields are arrays, maps are objects.
const builtinInputs: { desc: DescMessage; properties: JsonObject }[] = [
  { desc: EchoInputSchema, properties: { text: { type: "string" } } },
  { desc: FsReadInputSchema, properties: { path: { type: "string" }, offset: UINT64, length: UINT64 } },
  { desc: FsWriteInputSchema, properties: { path: { type: "string" }, content: { type: "string" }, createParents: { type: "boolean" } } },
  {
    desc: FsListInputSchema,
    properties: { path: { type: "string" }, recursive: { type: "boolean" }, pageSize: UINT32, pageToken: { type: "string" } },
  },
  {
    desc: FsSearchInputSchema,
    properties: {
      pattern: { type: "string" },
      include: { type: "array", items: { type: "string" } },
      exclude: { type: "array", items: { type: "string" } },
      maxResults: UINT32,
      caseInsensitive: { type: "boolean" },
    },
  },
  {
    desc: ExecInputSchema,
    properties: {
      argv: { type: "array", items: { type: "string" } },
      cwd: { type: "string" },
      env: { type: "object", additionalProperties: { type: "string" } },
      stdin: { type: "string" },
    },
  },
];

describe("deriveJsonSchema", () => {
  for (const { desc, properties } of builtinInputs) {
    test(`${desc.typeName}`, () => {
      const schema = deriveJsonSchema(desc);
      expect(schema).toMatchObject({ $schema: JSON_SCHEMA_DRAFT, title: desc.typeName, type: "object", additionalProperties: false, properties });
      expect(Object.keys(schema["properties"] as JsonObject)).toEqual(desc.fields.map((f) => f.jsonName));
    });
  }

  test("nested messages are inlined", () => {
    expect(deriveJsonSchema(FsListOutputSchema)["properties"]).toMatchObject({
      entries: {
        type: "array",
        items: { type: "object", additionalProperties: false, properties: { path: { type: "string" }, type: { type: "string" }, size: UINT64 } },
      },
    });
  });

  // Well-known types and enums take their protobuf JSON forms.
  const forms: { desc: DescMessage; property: string; want: JsonObject }[] = [
    { desc: ContextEntrySchema, property: "value", want: { description: "Any JSON value." } },
    { desc: ContextEntrySchema, property: "updatedAt", want: { type: "string", format: "date-time" } },
    { desc: EventSchema, property: "data", want: { type: "object" } },
    { desc: HandshakeResultSchema, property: "securityLevel", want: { type: "string", enum: ["SECURITY_LEVEL_UNSPECIFIED", "SECURITY_LEVEL_LOW", "SECURITY_LEVEL_STANDARD", "SECURITY_LEVEL_HIGH"] } },
    { desc: ErrorSchema, property: "supportedVersions", want: { type: "array", items: { type: "string", enum: ["PROTOCOL_VERSION_UNSPECIFIED", "PROTOCOL_VERSION_1_0"] } } },
    { desc: ErrorSchema, property: "currentVersion", want: UINT64 },
    { desc: ContextUpdateSchema, property: "ops", want: { type: "array", items: { type: "object", properties: { put: { type: "object" }, delete: { type: "object" } } } } },
  ];
  for (const { desc, property, want } of forms) {
    test(`${desc.typeName}.${property}`, () => {
      expect((deriveJsonSchema(desc)["properties"] as JsonObject)[property]).toMatchObject(want);
    });
  }

  test("a recursive message is emitted once under $defs and referenced", () => {
    const schema = deriveJsonSchema(DescriptorProtoSchema);
    expect(schema["properties"]).toMatchObject({ nestedType: { type: "array", items: { $ref: "#/$defs/google.protobuf.DescriptorProto" } } });
    expect(schema["$defs"]).toMatchObject({ "google.protobuf.DescriptorProto": { type: "object", properties: { name: { type: "string" } } } });
  });

  test("protoNames adds the proto spelling of multi-word fields only", () => {
    const keys = Object.keys(deriveJsonSchema(FsWriteInputSchema, { protoNames: true })["properties"] as JsonObject);
    expect(keys).toEqual(["path", "content", "createParents", "create_parents", "chunked", "totalSize", "total_size"]);
  });

  test("protobuf JSON of real messages validates against the derived schema", async () => {
    // A typed tool validates JSON arguments with the derived schema: toJson output must pass.
    const tools = [
      { desc: ContextEntrySchema, value: toJson(ContextEntrySchema, create(ContextEntrySchema, { key: "k", value: fromJson(ValueSchema, { a: [1, "x", null] }), version: 12345678901234n, updatedAt: timestampFromDate(new Date(0)) })) },
      { desc: HandshakeResultSchema, value: toJson(HandshakeResultSchema, create(HandshakeResultSchema, { sessionId: "s", securityLevel: SecurityLevel.HIGH, limits: { maxMessageBytes: 1 } })) },
      { desc: ErrorSchema, value: toJson(ErrorSchema, create(ErrorSchema, { kind: ErrorKind.COMMAND, currentVersion: 2n, supportedVersions: [1] })) },
      { desc: DescriptorProtoSchema, value: toJson(DescriptorProtoSchema, create(DescriptorProtoSchema, { name: "A", nestedType: [{ name: "B", nestedType: [{ name: "C" }] }] })) },
    ];
    for (const { desc, value } of tools) {
      const tool = defineTypedTool({ name: "probe", description: "", input: desc, output: EchoInputSchema, handler: async () => ({ text: "ok" }) });
      expect(await runJson(tool, value as JsonObject)).toEqual({ text: "ok" });
    }
  });

  test("comments from the .proto become descriptions when the descriptor has source info", async () => {
    // `buf build` keeps source info (comments), unlike the descriptors embedded in gen/.
    const { root, cleanup } = await makeWorkspace();
    try {
      const image = path.join(root, "image.binpb");
      const buf = path.resolve("node_modules/.bin/buf");
      await promisify(execFile)(buf, ["build", "proto", "-o", image]);
      const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, await readFile(image)));
      const desc = registry.getMessage("mcp.tools.v1.FsReadInput");
      expect(desc).toBeDefined();
      if (desc === undefined) return;
      expect(deriveJsonSchema(desc)).toMatchObject({
        description: "Input of `fs.read`.",
        properties: {
          path: { type: "string", description: "Path relative to the workspace root." },
          offset: { description: "Byte offset to start at." },
          length: { description: expect.stringMatching(/^Bytes to read at most \(0 = to the end of the file;/) },
        },
      });
      const nested = registry.getMessage("mcp.tools.v1.FsListOutput");
      expect(nested === undefined ? undefined : deriveJsonSchema(nested)).toMatchObject({
        properties: { entries: { items: { description: "One directory entry.", properties: { path: { description: "Path relative to the root, with `/` separators." } } } } },
      });
    } finally {
      await cleanup();
    }
  });
});
