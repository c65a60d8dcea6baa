/** withVerificationCache: repeated tokens skip the signature check, never a security check. */
import { expect, test } from "vitest";
import {
  createMemoryRevocationStore,
  createTokenVerifier,
  mintToken,
  withVerificationCache,
  type TokenVerifier,
} from "../../src/security/index.js";

const SECRET = "verification-cache-secret-0123456789abcdef";

/** A real verifier whose calls are counted (observing, not replacing it). */
function counted(clock: { t: number }): { verifier: TokenVerifier; calls: () => number } {
  const inner = createTokenVerifier({ secret: SECRET, now: () => clock.t });
  let n = 0;
  return {
    verifier: {
      verify: (token) => {
        n++;
        return inner.verify(token);
      },
      close: () => inner.close(),
    },
    calls: () => n,
  };
}

const mint = (clock: { t: number }, extra: { ttlSec?: number; jti?: string; subject?: string } = {}) =>
  mintToken({ secret: SECRET, subject: extra.subject ?? "ann", roles: ["viewer"], ttlSec: extra.ttlSec ?? 600, now: () => clock.t, ...(extra.jti === undefined ? {} : { jti: extra.jti }) });

test("the second use of a token is answered from the cache with the same principal", async () => {
  const clock = { t: Date.now() };
  const { verifier, calls } = counted(clock);
  const cached = withVerificationCache(verifier, { revocations: createMemoryRevocationStore(), now: () => clock.t });
  const token = await mint(clock);
  const first = await cached.verify(token);
  const second = await cached.verify(token);
  expect(calls()).toBe(1);
  expect(second.principal.subject).toBe("ann");
  expect(second).toBe(first);
});

test("a token revoked after it was cached is refused with token_revoked", async () => {
  const clock = { t: Date.now() };
  const revocations = createMemoryRevocationStore({ now: () => clock.t });
  const cached = withVerificationCache(counted(clock).verifier, { revocations, now: () => clock.t });
  const token = await mint(clock, { jti: "j-1" });
  await cached.verify(token);
  await revocations.revokeToken("j-1", clock.t + 60_000);
  await expect(cached.verify(token)).rejects.toMatchObject({ kind: "SECURITY", code: "token_revoked" });
});

test("past maxAgeMs the token is verified again; past exp it is refused by the full check", async () => {
  const clock = { t: Date.now() };
  const { verifier, calls } = counted(clock);
  const cached = withVerificationCache(verifier, { revocations: createMemoryRevocationStore(), maxAgeMs: 1_000, now: () => clock.t });
  const token = await mint(clock, { ttlSec: 60 });
  await cached.verify(token);
  clock.t += 2_000;
  await cached.verify(token);
  expect(calls()).toBe(2);
  clock.t += 120_000; // beyond exp and the 30 s tolerance
  await expect(cached.verify(token)).rejects.toMatchObject({ kind: "SECURITY", code: "token_expired" });
});

test("a refused token is never remembered, and the cache is bounded", async () => {
  const clock = { t: Date.now() };
  const { verifier, calls } = counted(clock);
  const cached = withVerificationCache(verifier, { revocations: createMemoryRevocationStore(), maxEntries: 2, now: () => clock.t });
  await expect(cached.verify("garbage")).rejects.toMatchObject({ code: "unauthenticated" });
  await expect(cached.verify("garbage")).rejects.toMatchObject({ code: "unauthenticated" });
  expect(calls()).toBe(2);
  const [a, b, c] = await Promise.all(["a", "b", "c"].map((subject) => mint(clock, { subject })));
  for (const t of [a!, b!, c!]) await cached.verify(t); // a is forgotten when c arrives
  const before = calls();
  await cached.verify(c!);
  await cached.verify(a!);
  expect(calls() - before).toBe(1);
});
