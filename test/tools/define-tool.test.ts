import { create, toJson, type JsonObject } from "@bufbuild/protobuf";
import { anyPack, StructSchema, TimestampSchema } from "@bufbuild/protobuf/wkt";
import { describe, expect, test } from "vitest";
import {
  EchoInputSchema,
  EchoOutputSchema,
  ExecInputSchema,
  FsReadInputSchema,
  FsReadOutputSchema,
  FsWriteInputSchema,
  FsWriteOutputSchema,
} from "../../gen/mcp/tools/v1/tools_pb.js";
import { CommandSchema, ToolAnnotationsSchema } from "../../gen/mcp/v1/command_pb.js";
import { SecurityLevel } from "../../gen/mcp/v1/types_pb.js";
import { McpError } from "../../src/errors.js";
import { defineJsonTool, defineTypedTool, type ToolContext, type TypedToolDefinition } from "../../src/tools/index.js";
import { emptyCommand, jsonCommand, makeContext, runJson, runTyped, typedCommand } from "./helpers.js";

// A typed tool that shows what it received, so the three input forms can be compared.
const writeProbe = defineTypedTool({
  name: "probe.write",
  description: "Reports its input.",
  input: FsWriteInputSchema,
  output: FsReadOutputSchema,
  handler: async (input) => ({
    content: `${input.path}|${input.content}|${String(input.createParents)}`,
    size: BigInt(input.content.length),
  }),
});

/** A typed tool with echo's input and output types and the given handler. */
function echoShaped(name: string, handler: TypedToolDefinition<typeof EchoInputSchema, typeof EchoOutputSchema>["handler"]) {
  return defineTypedTool({ name, description: "", input: EchoInputSchema, output: EchoOutputSchema, handler });
}

describe("defineTypedTool", () => {
  test("defaults: STANDARD level, tool:<name> permission, typed descriptor with schemas", () => {
    expect(writeProbe.securityLevel).toBe(SecurityLevel.STANDARD);
    expect(writeProbe.permission).toBe("tool:probe.write");
    const d = writeProbe.descriptor;
    expect(d).toMatchObject({
      name: "probe.write",
      description: "Reports its input.",
      inputType: "mcp.tools.v1.FsWriteInput",
      outputType: "mcp.tools.v1.FsReadOutput",
      securityLevel: SecurityLevel.STANDARD,
      permission: "tool:probe.write",
    });
    expect(d.inputSchema).toMatchObject({ type: "object", properties: { createParents: { type: "boolean" } } });
    // Published schemas show one spelling per field; proto names are accepted but not advertised.
    expect(Object.keys((d.inputSchema?.["properties"] ?? {}) as JsonObject)).toEqual(["path", "content", "createParents", "chunked", "totalSize"]);
    expect(d.outputSchema).toMatchObject({ title: "mcp.tools.v1.FsReadOutput" });
    expect(d.annotations).toEqual(create(ToolAnnotationsSchema, {}));
  });

  test("explicit level, permission and annotations are kept", () => {
    const tool = defineTypedTool({
      name: "x",
      description: "",
      input: EchoInputSchema,
      output: EchoOutputSchema,
      securityLevel: SecurityLevel.HIGH,
      permission: "custom:x",
      annotations: { destructive: true },
      handler: async () => ({}),
    });
    expect(tool).toMatchObject({ securityLevel: SecurityLevel.HIGH, permission: "custom:x" });
    expect(tool.descriptor.annotations?.destructive).toBe(true);
  });

  test("Any input, JSON lowerCamelCase and JSON proto names give the same output", async () => {
    const typed = await runTyped(writeProbe, FsWriteInputSchema, { path: "a.txt", content: "hé", createParents: true }, FsReadOutputSchema);
    const camel = await runJson(writeProbe, { path: "a.txt", content: "hé", createParents: true });
    const proto = await runJson(writeProbe, { path: "a.txt", content: "hé", create_parents: true });
    const typedJson = toJson(FsReadOutputSchema, typed, { alwaysEmitImplicit: true });
    expect(typedJson).toEqual({ content: "a.txt|hé|true", size: "2", nextOffset: "0", truncated: false });
    expect(camel).toEqual(typedJson);
    expect(proto).toEqual(typedJson);
  });

  test("no payload runs with the empty input and answers JSON", async () => {
    const result = await writeProbe.run(emptyCommand("probe.write"), makeContext().ctx);
    expect(result).toEqual({ case: "output", value: { content: "||false", size: "0", nextOffset: "0", truncated: false } });
  });

  // Each bad input names the offending field as the client sent it.
  const invalidJson: { name: string; args: JsonObject; field: string }[] = [
    { name: "unknown field", args: { path: "a", colour: "red" }, field: "colour" },
    { name: "wrong type for a string", args: { path: 42 }, field: "path" },
    { name: "wrong type for a bool (proto name)", args: { create_parents: "yes" }, field: "create_parents" },
    { name: "uint64 given a non-numeric string", args: { path: "a", offset: "ten" }, field: "offset" },
    { name: "uint64 given a negative number", args: { path: "a", offset: -1 }, field: "offset" },
    { name: "same field under both names", args: { createParents: true, create_parents: true }, field: "create_parents" },
  ];
  for (const { name, args, field } of invalidJson) {
    test(`invalid JSON arguments: ${name} -> invalid_argument naming ${field}`, async () => {
      const tool = "offset" in args ? defineReadProbe() : writeProbe;
      await expect(tool.run(jsonCommand(tool.name, args), makeContext().ctx)).rejects.toMatchObject({
        code: "invalid_argument",
        kind: "COMMAND",
        details: { field },
      });
    });
  }

  test("nested paths are named: map values and list items", async () => {
    const execProbe = defineTypedTool({
      name: "probe.exec",
      description: "",
      input: ExecInputSchema,
      output: EchoOutputSchema,
      handler: async () => ({}),
    });
    await expect(execProbe.run(jsonCommand("probe.exec", { env: { FOO: 1 } }), makeContext().ctx)).rejects.toMatchObject({
      code: "invalid_argument",
      details: { field: "env.FOO" },
    });
    await expect(execProbe.run(jsonCommand("probe.exec", { argv: ["ok", 2] }), makeContext().ctx)).rejects.toMatchObject({
      code: "invalid_argument",
      details: { field: "argv[1]" },
    });
  });

  test("an Any of another type is invalid_argument naming input", async () => {
    const command = typedCommand("probe.write", EchoInputSchema, { text: "x" });
    await expect(writeProbe.run(command, makeContext().ctx)).rejects.toMatchObject({
      code: "invalid_argument",
      kind: "COMMAND",
      details: { field: "input" },
      message: 'tool probe.write expects input of type mcp.tools.v1.FsWriteInput, got "type.googleapis.com/mcp.tools.v1.EchoInput"',
    });
  });

  test("an Any whose bytes do not decode is invalid_argument naming input", async () => {
    const command = create(CommandSchema, {
      id: "c",
      tool: "probe.write",
      payload: { case: "input", value: { typeUrl: "type.googleapis.com/mcp.tools.v1.FsWriteInput", value: new Uint8Array([0xff, 0xff, 0xff]) } },
    });
    await expect(writeProbe.run(command, makeContext().ctx)).rejects.toMatchObject({ code: "invalid_argument", details: { field: "input" } });
  });

  test("a handler that throws a plain error becomes tool_failed with the cause kept", async () => {
    const boom = new RangeError("disk on fire");
    const tool = echoShaped("boom", async () => {
      throw boom;
    });
    const failure = tool.run(jsonCommand("boom", {}), makeContext().ctx);
    await expect(failure).rejects.toMatchObject({ code: "tool_failed", kind: "COMMAND", message: "tool boom failed: disk on fire", cause: boom });
  });

  test("an output that does not encode is tool_failed", async () => {
    // ProtoJSON cannot write a symbol as a string.
    const tool = echoShaped("badout", async () => ({ text: Symbol("not text") as unknown as string }));
    await expect(tool.run(jsonCommand("badout", {}), makeContext().ctx)).rejects.toMatchObject({
      code: "tool_failed",
      kind: "COMMAND",
      message: expect.stringMatching(/^tool badout failed: .*EchoOutput\.text/),
    });
  });

  test("a synchronous handler's answer comes back without a promise, as JSON or typed output", async () => {
    const tool = echoShaped("now", (input) => ({ text: input.text.toUpperCase() }));
    const json = tool.run(jsonCommand("now", { text: "hi" }), makeContext().ctx);
    expect(json).not.toBeInstanceOf(Promise);
    expect(json).toEqual({ case: "output", value: { text: "HI" } });
    expect(await runTyped(tool, EchoInputSchema, { text: "hi" }, EchoOutputSchema)).toMatchObject({ text: "HI" });
  });

  test("a handler's thenable that is not a native promise is awaited", async () => {
    const tool = echoShaped(
      "thenable",
      (input): PromiseLike<{ text: string }> => ({ then: (ok, fail) => Promise.resolve({ text: `${input.text}!` }).then(ok, fail) }),
    );
    expect(await runJson(tool, { text: "hi" })).toEqual({ text: "hi!" });
  });

  const syncFailures: { name: string; handler: () => { text: string }; want: object }[] = [
    {
      name: "throws a plain error",
      handler: () => {
        throw new RangeError("disk on fire");
      },
      want: { code: "tool_failed", kind: "COMMAND", message: "tool sync failed: disk on fire" },
    },
    {
      name: "returns an output that does not encode",
      handler: () => ({ text: Symbol("not text") as unknown as string }),
      want: { code: "tool_failed", kind: "COMMAND", message: expect.stringMatching(/^tool sync failed: .*EchoOutput\.text/) },
    },
  ];
  for (const { name, handler, want } of syncFailures) {
    test(`a synchronous handler that ${name} rejects (never throws) with tool_failed`, async () => {
      const tool = echoShaped("sync", handler);
      let running: unknown;
      expect(() => (running = tool.run(jsonCommand("sync", {}), makeContext().ctx))).not.toThrow();
      await expect(running).rejects.toMatchObject(want);
    });
  }

  test("a handler's McpError passes through unchanged", async () => {
    const own = new McpError("permission_denied", "nope");
    const tool = echoShaped("deny", async () => {
      throw own;
    });
    await expect(tool.run(jsonCommand("deny", {}), makeContext().ctx)).rejects.toBe(own);
  });

  test("after an abort, the signal's reason is what rejects", async () => {
    const controller = new AbortController();
    const reason = new McpError("cancelled", "cancelled by client");
    const tool = echoShaped(
      "slow",
      (_input, ctx: ToolContext) =>
        new Promise((_resolve, reject) => {
          ctx.signal.addEventListener("abort", () => reject(new Error("AbortError from somewhere below")), { once: true });
        }),
    );
    const running = tool.run(jsonCommand("slow", {}), makeContext(controller.signal).ctx);
    controller.abort(reason);
    await expect(running).rejects.toBe(reason);
    // Already aborted: the handler is not started at all.
    await expect(tool.run(jsonCommand("slow", {}), makeContext(controller.signal).ctx)).rejects.toBe(reason);
  });

  const badDefinitions: { name: string; tool: () => unknown; message: string }[] = [
    {
      name: "empty name",
      tool: () => defineTypedTool({ name: "", description: "", input: EchoInputSchema, output: EchoOutputSchema, handler: async () => ({}) }),
      message: 'tool name "" must be dot-separated words of letters, digits, "_" and "-"',
    },
    {
      name: "unspecified security level",
      tool: () =>
        defineTypedTool({
          name: "t",
          description: "",
          input: EchoInputSchema,
          output: EchoOutputSchema,
          securityLevel: SecurityLevel.UNSPECIFIED,
          handler: async () => ({}),
        }),
      message: "tool t: securityLevel must be LOW, STANDARD or HIGH",
    },
  ];
  for (const { name, tool, message } of badDefinitions) {
    test(`definition with ${name} throws TypeError`, () => {
      expect(tool).toThrow(new TypeError(message));
    });
  }
});

function defineReadProbe() {
  return defineTypedTool({
    name: "probe.read",
    description: "",
    input: FsReadInputSchema,
    output: FsWriteOutputSchema,
    handler: async (input) => ({ bytesWritten: input.offset }),
  });
}

describe("defineJsonTool", () => {
  const greet = defineJsonTool({
    name: "greet",
    description: "Greets someone.",
    inputSchema: {
      type: "object",
      properties: {
        name: { type: "string", minLength: 1 },
        times: { type: "integer", minimum: 1 },
        tags: { type: "array", items: { type: "string" } },
        address: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
      },
      required: ["name"],
      additionalProperties: false,
    },
    outputSchema: { type: "object", properties: { greeting: { type: "string" } }, required: ["greeting"] },
    annotations: { readOnly: true },
    handler: async (input) => ({ greeting: `hello ${String(input["name"])}` }),
  });

  test("descriptor carries the schemas as given, no proto types, defaults applied", () => {
    expect(greet).toMatchObject({ securityLevel: SecurityLevel.STANDARD, permission: "tool:greet" });
    expect(greet.descriptor).toMatchObject({ inputType: "", outputType: "", inputSchema: { required: ["name"] }, outputSchema: { required: ["greeting"] } });
    expect(greet.descriptor.annotations?.readOnly).toBe(true);
  });

  test("valid arguments run the handler and answer JSON output", async () => {
    expect(await runJson(greet, { name: "Ada", times: 2 })).toEqual({ greeting: "hello Ada" });
  });

  test("a synchronous handler answers the same; its throw is tool_failed", async () => {
    const upper = defineJsonTool({ name: "upper", description: "", inputSchema: { type: "object" }, handler: (input) => ({ keys: Object.keys(input).join(",") }) });
    expect(await runJson(upper, { a: 1, b: 2 })).toEqual({ keys: "a,b" });
    const broken = defineJsonTool({
      name: "broken",
      description: "",
      inputSchema: { type: "object" },
      handler: () => {
        throw new Error("no");
      },
    });
    await expect(broken.run(jsonCommand("broken", {}), makeContext().ctx)).rejects.toMatchObject({ code: "tool_failed", message: "tool broken failed: no" });
  });

  // ajv errors become invalid_argument naming the field through instancePath.
  const invalid: { name: string; args: JsonObject; field: string }[] = [
    { name: "missing required", args: {}, field: "name" },
    { name: "wrong type", args: { name: 7 }, field: "name" },
    { name: "constraint", args: { name: "Ada", times: 0 }, field: "times" },
    { name: "unknown property", args: { name: "Ada", age: 3 }, field: "age" },
    { name: "array item", args: { name: "Ada", tags: ["a", 1] }, field: "tags[1]" },
    { name: "nested required", args: { name: "Ada", address: {} }, field: "address.city" },
  ];
  for (const { name, args, field } of invalid) {
    test(`${name} -> invalid_argument naming ${field}`, async () => {
      await expect(greet.run(jsonCommand("greet", args), makeContext().ctx)).rejects.toMatchObject({
        code: "invalid_argument",
        kind: "COMMAND",
        details: { field },
      });
    });
  }

  test("no payload validates {} (so required fields are reported)", async () => {
    await expect(greet.run(emptyCommand("greet"), makeContext().ctx)).rejects.toMatchObject({ code: "invalid_argument", details: { field: "name" } });
  });

  test("a typed input is refused naming input", async () => {
    const command = create(CommandSchema, { id: "c", tool: "greet", payload: { case: "input", value: anyPack(StructSchema, create(StructSchema)) } });
    await expect(greet.run(command, makeContext().ctx)).rejects.toMatchObject({ code: "invalid_argument", details: { field: "input" } });
  });

  test("output that breaks outputSchema is tool_failed", async () => {
    const liar = defineJsonTool({
      name: "liar",
      description: "",
      inputSchema: { type: "object" },
      outputSchema: { type: "object", required: ["greeting"] },
      handler: async () => ({ other: true }),
    });
    await expect(liar.run(jsonCommand("liar", {}), makeContext().ctx)).rejects.toMatchObject({
      code: "tool_failed",
      message: "tool liar failed: output does not match outputSchema at greeting: must have required property 'greeting'",
    });
  });

  test("a handler that throws becomes tool_failed", async () => {
    const tool = defineJsonTool({
      name: "fails",
      description: "",
      inputSchema: { type: "object" },
      handler: async () => {
        throw new Error("backend unreachable");
      },
    });
    await expect(tool.run(jsonCommand("fails", {}), makeContext().ctx)).rejects.toMatchObject({ code: "tool_failed", message: "tool fails failed: backend unreachable" });
  });

  test("an invalid inputSchema throws TypeError at definition time", () => {
    expect(() =>
      defineJsonTool({ name: "bad", description: "", inputSchema: { type: "objekt" }, handler: async () => ({}) }),
    ).toThrow(TypeError);
  });

  test("format keywords are accepted (annotation only)", async () => {
    const tool = defineJsonTool({
      name: "when",
      description: "",
      inputSchema: { type: "object", properties: { at: { type: "string", format: "date-time" } } },
      handler: async (input) => input,
    });
    const at = toJson(TimestampSchema, create(TimestampSchema, { seconds: 0n }));
    expect(await runJson(tool, { at })).toEqual({ at: "1970-01-01T00:00:00Z" });
  });
});
