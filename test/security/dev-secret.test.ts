import { chmod, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { createTokenVerifier, loadOrCreateDevSecret, mintToken } from "../../src/security/index.js";

describe("loadOrCreateDevSecret", () => {
  let root: string;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), "mcp-state-"));
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  test("creates a private 32-byte secret, then reuses it", async () => {
    const dir = join(root, "state", "nested");
    const first = await loadOrCreateDevSecret(dir);
    expect(first.created).toBe(true);
    expect(first.path).toBe(join(dir, "dev-secret"));
    expect(Buffer.from(first.secret, "base64url")).toHaveLength(32);
    expect((await stat(first.path)).mode & 0o777).toBe(0o600);
    expect((await stat(dir)).mode & 0o777).toBe(0o700);

    const second = await loadOrCreateDevSecret(dir);
    expect(second).toEqual({ secret: first.secret, created: false, path: first.path });
  });

  test("the secret works for mint and verify", async () => {
    const { secret } = await loadOrCreateDevSecret(root);
    const token = await mintToken({ secret, subject: "dev", roles: ["developer"], ttlSec: 60 });
    await expect(createTokenVerifier({ secret }).verify(token)).resolves.toMatchObject({ principal: { subject: "dev" } });
  });

  test("servers starting at once agree on one secret", async () => {
    const results = await Promise.all(Array.from({ length: 8 }, () => loadOrCreateDevSecret(root)));
    expect(new Set(results.map((r) => r.secret)).size).toBe(1);
    expect(results.filter((r) => r.created)).toHaveLength(1);
  });

  const refused: { name: string; mode: number; content: string; message: string }[] = [
    // other local users are in the threat model: a secret they could read may be known to them
    { name: "world-readable", mode: 0o644, content: "A".repeat(43), message: "readable or writable by other users" },
    { name: "group-writable", mode: 0o620, content: "A".repeat(43), message: "readable or writable by other users" },
    { name: "too short", mode: 0o600, content: "abc", message: "at least 32 bytes" },
  ];
  for (const c of refused) {
    test(`an existing ${c.name} secret file is refused`, async () => {
      const path = join(root, "dev-secret");
      await writeFile(path, c.content);
      await chmod(path, c.mode);
      await expect(loadOrCreateDevSecret(root)).rejects.toThrow(c.message);
    });
  }
});
