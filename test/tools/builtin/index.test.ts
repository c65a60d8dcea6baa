import { describe, expect, test } from "vitest";
import { SecurityLevel } from "../../../gen/mcp/v1/types_pb.js";
import { createBuiltinTools } from "../../../src/tools/index.js";

describe("createBuiltinTools", () => {
  // Default level, permission and hints of each built-in.
  const defaults: { name: string; level: SecurityLevel; readOnly: boolean; destructive: boolean; streaming: boolean; inputType: string }[] = [
    { name: "echo", level: SecurityLevel.STANDARD, readOnly: true, destructive: false, streaming: false, inputType: "mcp.tools.v1.EchoInput" },
    // fs.read streams chunks in binary mode (command.output events).
    { name: "fs.read", level: SecurityLevel.STANDARD, readOnly: true, destructive: false, streaming: true, inputType: "mcp.tools.v1.FsReadInput" },
    { name: "fs.write", level: SecurityLevel.HIGH, readOnly: false, destructive: true, streaming: false, inputType: "mcp.tools.v1.FsWriteInput" },
    { name: "fs.list", level: SecurityLevel.STANDARD, readOnly: true, destructive: false, streaming: false, inputType: "mcp.tools.v1.FsListInput" },
    { name: "fs.search", level: SecurityLevel.STANDARD, readOnly: true, destructive: false, streaming: false, inputType: "mcp.tools.v1.FsSearchInput" },
    { name: "exec", level: SecurityLevel.HIGH, readOnly: false, destructive: true, streaming: true, inputType: "mcp.tools.v1.ExecInput" },
  ];
  const tools = createBuiltinTools({ exec: { enabled: true } });
  for (const want of defaults) {
    test(`${want.name}: level ${SecurityLevel[want.level]}, permission tool:${want.name}`, () => {
      const tool = tools.find((t) => t.name === want.name);
      expect(tool).toMatchObject({ securityLevel: want.level, permission: `tool:${want.name}` });
      expect(tool?.descriptor).toMatchObject({
        inputType: want.inputType,
        securityLevel: want.level,
        annotations: { readOnly: want.readOnly, destructive: want.destructive, streaming: want.streaming },
      });
      expect(tool?.descriptor.inputSchema).toMatchObject({ type: "object" });
      expect(tool?.descriptor.outputSchema).toMatchObject({ type: "object" });
    });
  }

  test("exec is left out unless enabled", () => {
    expect(createBuiltinTools().map((t) => t.name)).toEqual(["echo", "fs.read", "fs.write", "fs.list", "fs.search"]);
  });

  test("levels can be overridden per tool", () => {
    const [, , write] = createBuiltinTools({ securityLevels: { "fs.write": SecurityLevel.STANDARD } });
    expect(write).toMatchObject({ name: "fs.write", securityLevel: SecurityLevel.STANDARD });
  });

  const badOptions: { name: string; options: Parameters<typeof createBuiltinTools>[0]; message: string }[] = [
    { name: "zero maxReadBytes", options: { maxReadBytes: 0 }, message: '"maxReadBytes" option must be a positive integer' },
    { name: "fractional listPageSize", options: { listPageSize: 1.5 }, message: '"listPageSize" option must be a positive integer' },
    { name: "negative killGraceMs", options: { exec: { killGraceMs: -1 } }, message: '"exec.killGraceMs" option must be a non-negative integer' },
  ];
  for (const { name, options, message } of badOptions) {
    test(`${name} throws TypeError`, () => {
      expect(() => createBuiltinTools(options)).toThrow(new TypeError(message));
    });
  }
});
