import { decodeProtectedHeader } from "jose";
import { describe, expect, test } from "vitest";
import { SecurityLevel } from "../../gen/mcp/v1/types_pb.js";
import { createTokenVerifier, mintToken, type MintTokenOptions } from "../../src/security/index.js";

const SECRET = "mint-secret-mint-secret-mint-secret-0123456789";
const NOW = Date.UTC(2030, 0, 1);

describe("mintToken round trip through verify", () => {
  const verifier = createTokenVerifier({ secret: SECRET, now: () => NOW });
  const cases: { name: string; extra: Partial<MintTokenOptions>; level: SecurityLevel }[] = [
    { name: "defaults", extra: {}, level: SecurityLevel.STANDARD },
    { name: "level high", extra: { level: "high" }, level: SecurityLevel.HIGH },
    { name: "level standard", extra: { level: "standard" }, level: SecurityLevel.STANDARD },
    { name: "explicit jti", extra: { jti: "my-id" }, level: SecurityLevel.STANDARD },
  ];
  for (const c of cases) {
    test(c.name, async () => {
      const token = await mintToken({ secret: SECRET, subject: "bob", roles: ["viewer", "ops"], ttlSec: 3600, now: () => NOW, ...c.extra });
      expect(decodeProtectedHeader(token)).toEqual({ alg: "HS256", typ: "JWT" });
      const v = await verifier.verify(token);
      expect(v.principal.subject).toBe("bob");
      expect(v.principal.roles).toEqual(["viewer", "ops"]);
      expect(v.maxLevel).toBe(c.level);
      expect(v.expiresAt).toBe(NOW + 3600_000);
      expect(v.claims).toMatchObject({ iss: "mcp", aud: "mcp", iat: NOW / 1000 });
      if (c.extra.jti !== undefined) expect(v.jti).toBe(c.extra.jti);
      else expect(v.jti).toMatch(/^[0-9a-f-]{36}$/);
    });
  }

  test("every token gets its own jti", async () => {
    const opts = { secret: SECRET, subject: "bob", roles: [], ttlSec: 60, now: () => NOW };
    const [a, b] = await Promise.all([mintToken(opts), mintToken(opts)]);
    const [va, vb] = await Promise.all([verifier.verify(a), verifier.verify(b)]);
    expect(va.jti).not.toBe(vb.jti);
  });

  test("issuer and audience must match the verifier's", async () => {
    const token = await mintToken({ secret: SECRET, subject: "bob", roles: [], ttlSec: 60, issuer: "corp", audience: "ide", now: () => NOW });
    await expect(verifier.verify(token)).rejects.toMatchObject({ kind: "SECURITY", code: "unauthenticated" });
    const corp = createTokenVerifier({ secret: SECRET, issuer: "corp", audience: "ide", now: () => NOW });
    await expect(corp.verify(token)).resolves.toMatchObject({ principal: { subject: "bob" } });
  });

  test("a token past its ttl is token_expired", async () => {
    const token = await mintToken({ secret: SECRET, subject: "bob", roles: [], ttlSec: 60, now: () => NOW });
    const later = createTokenVerifier({ secret: SECRET, now: () => NOW + 60_000 + 31_000 });
    await expect(later.verify(token)).rejects.toMatchObject({ kind: "SECURITY", code: "token_expired" });
  });

  const invalid: { name: string; options: MintTokenOptions }[] = [
    { name: "short secret", options: { secret: "short", subject: "bob", roles: [], ttlSec: 60 } },
    { name: "empty subject", options: { secret: SECRET, subject: "", roles: [], ttlSec: 60 } },
    { name: "zero ttl", options: { secret: SECRET, subject: "bob", roles: [], ttlSec: 0 } },
  ];
  for (const c of invalid) {
    test(`${c.name} -> TypeError`, async () => {
      await expect(mintToken(c.options)).rejects.toThrow(TypeError);
    });
  }
});
