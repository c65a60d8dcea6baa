/** The `echo` tool: returns its input; for tests, health checks and benchmarks. */
import { EchoInputSchema, EchoOutputSchema } from "../../../gen/mcp/tools/v1/tools_pb.js";
import type { SecurityLevel } from "../../../gen/mcp/v1/types_pb.js";
import { defineTypedTool } from "../define-tool.js";
import type { RegisteredTool } from "../registered-tool.js";

/** Creates `echo` (typed `mcp.tools.v1.EchoInput` → `EchoOutput`). */
export function createEchoTool(securityLevel: SecurityLevel): RegisteredTool {
  return defineTypedTool({
    name: "echo",
    description: "Returns the given text unchanged.",
    input: EchoInputSchema,
    output: EchoOutputSchema,
    securityLevel,
    annotations: { readOnly: true, idempotent: true },
    // Synchronous: nothing to wait for, so no promise per call (the benchmark's tool).
    handler: (input) => ({ text: input.text }),
  });
}
