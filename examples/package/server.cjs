const { createMcpServer, mintToken } = require("machine-context-protocol");
const { createMcpClient } = require("machine-context-protocol/client");

async function main() {
  const secret = "a-development-secret-of-32-bytes-or-more";
  const server = createMcpServer({ port: 0, jwtSecret: secret, store: "memory" });
  const { url } = await server.listen();
  const token = await mintToken({ secret, subject: "alice", roles: ["developer"], ttlSec: 600 });
  const session = await createMcpClient({ baseUrl: url, token }).connect();
  console.log(await session.call("echo", { text: "hello" }));
  await session.close();
  await server.close();
}
main();
