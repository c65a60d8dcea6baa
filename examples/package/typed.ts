import { createMcpServer, defineTypedTool, type McpServerOptions } from "machine-context-protocol/server";
import { createMcpClient, McpError, type McpSession } from "machine-context-protocol/client";
import { EchoInputSchema, EchoOutputSchema } from "machine-context-protocol/gen/mcp/tools/v1/tools_pb.js";

// A typed tool: protobuf input and output, the JSON Schema is derived.
const shout = defineTypedTool({
  name: "shout",
  description: "echo, in capitals",
  input: EchoInputSchema,
  output: EchoOutputSchema,
  handler: (input) => ({ text: input.text.toUpperCase() }),
});
const options: McpServerOptions = { port: 0, jwtSecret: process.env["MCP_JWT_SECRET"] ?? "", tools: [shout] };
const server = createMcpServer(options);
const { url } = await server.listen();

const session: McpSession = await createMcpClient({ baseUrl: url, token: process.env["MCP_TOKEN"] ?? "" }).connect();
try {
  const out = await session.call("shout", { text: "hi" });
  console.log(out["text"]);
} catch (e) {
  if (e instanceof McpError && e.code === "permission_denied") console.error(e.kind, e.message);
} finally {
  await session.close();
  await server.close();
}
