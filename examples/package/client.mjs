// Client only: no server code and no native module are loaded.
import { createMcpClient, isMcpError } from "machine-context-protocol/client";

const client = createMcpClient({ baseUrl: process.env.MCP_URL ?? "http://127.0.0.1:9000", token: process.env.MCP_TOKEN });
const session = await client.connect();
try {
  console.log(await session.call("echo", { text: "hello" }));
} catch (e) {
  if (isMcpError(e)) console.error(`${e.kind} ${e.code}: ${e.message}`);
  else throw e;
} finally {
  await session.close();
}
