/** Configuration: one resolver, flags > MCP_* env > config file > defaults, clear errors. */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { ProtocolVersion, SecurityLevel } from "../gen/mcp/v1/types_pb.js";
import { envName, flagName, loadServerOptions, resolveServerOptions } from "../src/config.js";
import { createMcpServer } from "../src/server/server.js";
import { openSession } from "./helpers/server.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mcp-config-"));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

describe("names", () => {
  const cases = [
    { key: "port", flag: "port", env: "MCP_PORT" },
    { key: "maxConnections", flag: "max-connections", env: "MCP_MAX_CONNECTIONS" },
    { key: "jwtSecret", flag: "jwt-secret", env: "MCP_JWT_SECRET" },
    { key: "jwks", flag: "jwks", env: "MCP_JWKS" },
    { key: "tlsCert", flag: "tls-cert", env: "MCP_TLS_CERT" },
    { key: "jwtIssuer", flag: "jwt-issuer", env: "MCP_JWT_ISSUER" },
  ];
  for (const c of cases) {
    test(`${c.key} → --${c.flag}, ${c.env}`, () => {
      expect(flagName(c.key)).toBe(c.flag);
      expect(envName(c.key)).toBe(c.env);
    });
  }
});

describe("precedence: flags > env > file > defaults", () => {
  test("each source wins over the ones below it", async () => {
    const file = join(dir, "config.json");
    await writeFile(file, JSON.stringify({ port: 1111, maxBatchSize: 7, bindAddress: "127.0.0.2", jwtIssuer: "from-file" }));
    const loaded = await loadServerOptions({
      configFile: file,
      env: { MCP_PORT: "2222", MCP_MAX_BATCH_SIZE: "9" },
      flags: { port: "3333" },
    });
    const r = resolveServerOptions(loaded);
    expect(r.port).toBe(3333); // flag
    expect(r.maxBatchSize).toBe(9); // env over file
    expect(r.bindAddress).toBe("127.0.0.2"); // file over default
    expect(r.jwtIssuer).toBe("from-file");
    expect(r.maxInflightCommands).toBe(256); // default
  });

  test("MCP_CONFIG names the file when no flag does", async () => {
    const file = join(dir, "env-config.json");
    await writeFile(file, JSON.stringify({ securityLevel: "high" }));
    const loaded = await loadServerOptions({ env: { MCP_CONFIG: file } });
    expect(loaded.securityLevel).toBe(SecurityLevel.HIGH);
  });

  test("values are parsed by type: levels, versions, booleans", async () => {
    const loaded = await loadServerOptions({
      env: { MCP_SECURITY_LEVEL: "low", MCP_PROTOCOL_VERSIONS: "1.0", MCP_EXEC_ENABLED: "true" },
    });
    expect(loaded).toMatchObject({
      securityLevel: SecurityLevel.LOW,
      protocolVersions: [ProtocolVersion.PROTOCOL_VERSION_1_0],
      execEnabled: true,
    });
  });

  test("defaults when nothing is given", () => {
    const r = resolveServerOptions({});
    expect(r).toMatchObject({
      bindAddress: "127.0.0.1",
      port: 9000,
      maxConnections: 1024,
      securityLevel: SecurityLevel.STANDARD,
      maxMessageBytes: 4 * 1024 * 1024,
      store: "memory",
      execEnabled: false,
    });
  });
});

describe("errors name the option and the source", () => {
  const bad: { name: string; sources: Parameters<typeof loadServerOptions>[0]; message: RegExp }[] = [
    { name: "non-numeric env", sources: { env: { MCP_PORT: "eighty" } }, message: /MCP_PORT: "port" must be an integer/ },
    { name: "unknown level flag", sources: { env: {}, flags: { securityLevel: "medium" } }, message: /--security-level: "securityLevel" must be one of low, standard, high/ },
    { name: "unknown version", sources: { env: { MCP_PROTOCOL_VERSIONS: "2.0" } }, message: /"protocolVersions" must be a comma-separated list/ },
    { name: "bad boolean", sources: { env: { MCP_EXEC_ENABLED: "yes" } }, message: /"execEnabled" must be true or false/ },
  ];
  for (const c of bad) {
    test(c.name, async () => {
      await expect(loadServerOptions(c.sources)).rejects.toThrow(c.message);
    });
  }

  test("a config file that is missing, not JSON, not an object, or has unknown keys", async () => {
    const notJson = join(dir, "bad.json");
    const array = join(dir, "array.json");
    const unknown = join(dir, "unknown.json");
    await writeFile(notJson, "{ port: ");
    await writeFile(array, "[]");
    await writeFile(unknown, JSON.stringify({ prot: 1 }));
    await expect(loadServerOptions({ env: {}, configFile: join(dir, "nope.json") })).rejects.toThrow(/nope.json: cannot read it \(ENOENT\)/);
    await expect(loadServerOptions({ env: {}, configFile: notJson })).rejects.toThrow(/bad.json: not valid JSON/);
    await expect(loadServerOptions({ env: {}, configFile: array })).rejects.toThrow(/must hold a JSON object/);
    await expect(loadServerOptions({ env: {}, configFile: unknown })).rejects.toThrow(/unknown option\(s\) prot/);
  });

  const ranges = [
    { options: { port: 70000 }, message: /"port" must be an integer from 0 to 65535/ },
    { options: { maxConnections: 0 }, message: /"maxConnections" must be a positive integer/ },
    { options: { defaultTimeoutMs: 10, maxTimeoutMs: 5 }, message: /"defaultTimeoutMs" \(10\) must be <= "maxTimeoutMs" \(5\)/ },
    { options: { tlsCert: "cert.pem" }, message: /"tlsCert" and "tlsKey" go together/ },
  ];
  for (const c of ranges) {
    test(`resolve refuses ${JSON.stringify(c.options)}`, () => {
      expect(() => resolveServerOptions(c.options)).toThrow(c.message);
    });
  }
});

describe("createMcpServer refuses unsafe or impossible setups", () => {
  test("security level low on a non-loopback address", () => {
    expect(() => createMcpServer({ securityLevel: SecurityLevel.LOW, bindAddress: "0.0.0.0" })).toThrow(
      /security level low .* only allowed on a loopback address, but bindAddress is 0.0.0.0/,
    );
  });
  test("no way to verify tokens at level standard", () => {
    expect(() => createMcpServer({})).toThrow(/set jwtSecret \(development\) or jwks/);
  });
  test("both a secret and a JWKS", () => {
    expect(() => createMcpServer({ jwtSecret: "x".repeat(32), jwks: "keys.json" })).toThrow(/either jwtSecret .* or jwks .*, not both/);
  });
  test("low on loopback is allowed and serves unauthenticated sessions at LOW", async () => {
    const server = createMcpServer({ securityLevel: SecurityLevel.LOW, port: 0 });
    const { url } = await server.listen();
    const { s, result: hr } = await openSession(url);
    try {
      expect(hr.securityLevel).toBe(SecurityLevel.LOW);
      expect(hr.principal).toBeUndefined();
      // LOW reaches only tools whose minimum is LOW: echo needs STANDARD, i.e. a token.
      s.send({ case: "command", value: { id: "e", tool: "echo", payload: { case: "arguments", value: { text: "x" } } } });
      const r = await s.next();
      const result = r?.message.case === "response" ? r.message.value.result : undefined;
      expect(result?.case === "error" && result.value.code).toBe("unauthenticated");
    } finally {
      s.close();
      await server.close();
    }
  });
});
