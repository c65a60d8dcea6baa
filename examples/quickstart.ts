import { createMcpClient, createMcpServer, mintToken, ProtocolVersion, SecurityLevel, type TransportConfig } from "../src/index.js";

// A server from its transport configuration (every field has a default; see `mcp serve --help`).
const transport: TransportConfig = {
  bindAddress: "127.0.0.1",
  port: 0, // any free port
  maxConnections: 100,
  protocolVersions: [ProtocolVersion.PROTOCOL_VERSION_1_0],
  securityLevel: SecurityLevel.STANDARD,
  maxMessageBytes: 4 * 1024 * 1024,
};
const secret = "dev-secret-at-least-32-bytes-long!!";
const server = createMcpServer({ ...transport, jwtSecret: secret });
const { url } = await server.listen();

// A session stream: handshake with a token, then messages in both directions.
const token = await mintToken({ secret, subject: "alice", roles: ["developer"], ttlSec: 3600 });
const session = await createMcpClient({ baseUrl: url, token }).connect();
session.send({ case: "update", value: { id: "u1", contextId: "demo", ops: [{ op: { case: "put", value: { key: "greeting", value: { kind: { case: "stringValue", value: "hello" } } } } }] } });
session.send({ case: "command", value: { id: "c1", tool: "echo", payload: { case: "arguments", value: { text: "hello" } } } });

// The receive loop: dispatch on the message type. Answers come in any order (matched by id);
// once both are in, a Ping, and its Pong ends the loop.
let answered = 0;
const answer = () => {
  if (++answered === 2) session.send({ case: "ping", value: { id: 1n } });
};
loop: for await (const msg of session.messages()) {
  const m = msg.message;
  switch (m.case) {
    case "updateResult":
      console.log(`#${msg.seq} context ${m.value.contextId} is at version ${m.value.version}`);
      answer();
      break;
    case "response":
      console.log(`#${msg.seq} response to ${m.value.commandId}:`, m.value.result.case === "output" ? m.value.result.value : m.value.result);
      answer();
      break;
    case "event":
      console.log(`#${msg.seq} event ${m.value.type}`);
      break;
    case "error":
      console.log(`#${msg.seq} error ${m.value.code}: ${m.value.message}`);
      break;
    case "pong":
      console.log(`#${msg.seq} pong ${m.value.id}`);
      break loop;
  }
}
await session.close();
await server.close();
