import { describe, expect, test } from "vitest";
import { EchoInputSchema, EchoOutputSchema } from "../../gen/mcp/tools/v1/tools_pb.js";
import { createToolRegistry, defineTypedTool, type RegisteredTool } from "../../src/tools/index.js";

function echoNamed(name: string): RegisteredTool {
  return defineTypedTool({
    name,
    description: "test",
    input: EchoInputSchema,
    output: EchoOutputSchema,
    handler: async (input) => ({ text: input.text }),
  });
}

describe("createToolRegistry", () => {
  test("get and list return what was registered, in registration order", () => {
    const registry = createToolRegistry();
    const b = echoNamed("b.tool");
    const a = echoNamed("a.tool");
    registry.register(b);
    registry.register(a);
    expect(registry.get("a.tool")).toBe(a);
    expect(registry.get("missing")).toBeUndefined();
    expect(registry.list().map((t) => t.name)).toEqual(["b.tool", "a.tool"]);
  });

  test("a duplicate name throws TypeError and keeps the first tool", () => {
    const registry = createToolRegistry();
    const first = echoNamed("echo");
    registry.register(first);
    expect(() => registry.register(echoNamed("echo"))).toThrow(new TypeError('tool "echo" is already registered'));
    expect(registry.get("echo")).toBe(first);
    expect(registry.list()).toHaveLength(1);
  });

  test("list() snapshots do not change under later registrations", () => {
    const registry = createToolRegistry();
    registry.register(echoNamed("one"));
    const before = registry.list();
    registry.register(echoNamed("two"));
    expect(before.map((t) => t.name)).toEqual(["one"]);
    expect(Object.isFrozen(registry.list())).toBe(true);
  });

  test("a withheld name is not a tool but says why; registering it later wins", () => {
    const registry = createToolRegistry();
    registry.withhold("exec", "switched off");
    expect(registry.get("exec")).toBeUndefined();
    expect(registry.withheldReason("exec")).toBe("switched off");
    expect(registry.withheldReason("other")).toBeUndefined();
    const own = echoNamed("exec");
    registry.register(own);
    expect(registry.get("exec")).toBe(own);
    expect(registry.withheldReason("exec")).toBeUndefined();
    // Withholding a registered tool changes nothing.
    registry.withhold("exec", "again");
    expect(registry.withheldReason("exec")).toBeUndefined();
  });
});
