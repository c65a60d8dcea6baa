import { describe, expect, test } from "vitest";
import { EchoInputSchema, EchoOutputSchema } from "../../../gen/mcp/tools/v1/tools_pb.js";
import { SecurityLevel } from "../../../gen/mcp/v1/types_pb.js";
import { createEchoTool } from "../../../src/tools/builtin/echo.js";
import { runJson, runTyped } from "../helpers.js";

describe("echo", () => {
  const echo = createEchoTool(SecurityLevel.STANDARD);
  const texts = ["", "hello", "ünïcødé ✓ 🚀", "line\nbreaks\r\n"];
  for (const text of texts) {
    test(`returns ${JSON.stringify(text)} typed and as JSON`, async () => {
      expect((await runTyped(echo, EchoInputSchema, { text }, EchoOutputSchema)).text).toBe(text);
      expect(await runJson(echo, { text })).toEqual({ text });
    });
  }
});
