import { Redis } from "ioredis";
import { afterAll, describe, expect, test } from "vitest";
import { eventually } from "../helpers/eventually.js";
import { createMemoryRevocationStore, createRedisRevocationStore, type RevocationStore } from "../../src/security/index.js";

const REDIS_URL = "redis://127.0.0.1:6379";
const prefix = `mcp-test:${process.pid}:${Date.now()}:`;
const admin = new Redis(REDIS_URL);

afterAll(async () => {
  const keys = await admin.keys(`${prefix}*`);
  if (keys.length > 0) await admin.del(...keys);
  await admin.quit();
});

// Both stores must behave alike; each row builds a fresh store and a clock to move.
const stores: { name: string; make: (clock: { t: number }) => RevocationStore }[] = [
  { name: "memory", make: (clock) => createMemoryRevocationStore({ now: () => clock.t }) },
  { name: "redis", make: (clock) => createRedisRevocationStore({ url: REDIS_URL, prefix: `${prefix}${Math.random()}:`, now: () => clock.t }) },
];

for (const { name, make } of stores) {
  describe(`${name} revocation store`, () => {
    test("revoked token and session ids are refused; others are not", async () => {
      const clock = { t: Date.now() };
      const store = make(clock);
      try {
        await store.revokeToken("jti-1", clock.t + 60_000);
        await store.revokeSession("sess-1", clock.t + 60_000);
        expect(await store.isTokenRevoked("jti-1")).toBe(true);
        expect(await store.isTokenRevoked("jti-2")).toBe(false);
        expect(await store.isSessionRevoked("sess-1")).toBe(true);
        expect(await store.isSessionRevoked("sess-2")).toBe(false);
        // tokens and sessions are separate namespaces
        expect(await store.isSessionRevoked("jti-1")).toBe(false);
        expect(await store.isTokenRevoked("sess-1")).toBe(false);
      } finally {
        await store.close();
      }
    });

    test("a revocation that already ended is not stored", async () => {
      const clock = { t: Date.now() };
      const store = make(clock);
      try {
        await store.revokeToken("old", clock.t - 1);
        expect(await store.isTokenRevoked("old")).toBe(false);
      } finally {
        await store.close();
      }
    });

    test("empty ids are refused with TypeError", async () => {
      const store = make({ t: Date.now() });
      try {
        await expect(store.revokeToken("", Date.now() + 1000)).rejects.toThrow(TypeError);
        await expect(store.isSessionRevoked("")).rejects.toThrow(TypeError);
        await expect(store.revokeSession("s", Number.NaN)).rejects.toThrow(TypeError);
      } finally {
        await store.close();
      }
    });
  });
}

test("memory store: subscribers hear every revocation, at once", async () => {
  const store = createMemoryRevocationStore();
  const heard: string[] = [];
  const stop = store.subscribe((r) => heard.push(`${r.kind}:${r.id}`));
  await store.revokeToken("jti-9", Date.now() + 60_000);
  await store.revokeSession("sess-9", Date.now() + 60_000);
  stop();
  await store.revokeToken("after-stop", Date.now() + 60_000);
  expect(heard).toEqual(["token:jti-9", "session:sess-9"]);
  await store.close();
});

describe("memory store expiry", () => {
  test("entries end at untilMs, and a shorter revoke does not cut a longer one", async () => {
    const clock = { t: 1_000_000 };
    const store = createMemoryRevocationStore({ now: () => clock.t });
    await store.revokeToken("a", clock.t + 1000);
    await store.revokeToken("a", clock.t + 10); // must not shorten
    clock.t += 999;
    expect(await store.isTokenRevoked("a")).toBe(true);
    clock.t += 1;
    expect(await store.isTokenRevoked("a")).toBe(false);
  });
});

describe("redis store", () => {
  test("keys carry a PX expiry matching untilMs, never shortened", async () => {
    const p = `${prefix}px:`;
    const store = createRedisRevocationStore({ url: REDIS_URL, prefix: p });
    try {
      await store.revokeToken("a", Date.now() + 60_000);
      await store.revokeToken("a", Date.now() + 1_000); // must not shorten
      const ttl = await admin.pttl(`${p}revoked:token:a`);
      expect(ttl).toBeGreaterThan(1_000);
      expect(ttl).toBeLessThanOrEqual(60_000);
      await store.revokeSession("s", Date.now() + 5_000);
      const sttl = await admin.pttl(`${p}revoked:session:s`);
      expect(sttl).toBeGreaterThan(0);
      expect(sttl).toBeLessThanOrEqual(5_000);
    } finally {
      await store.close();
    }
  });

  test("Redis forgets a revocation once it ends", async () => {
    const store = createRedisRevocationStore({ url: REDIS_URL, prefix: `${prefix}short:` });
    try {
      await store.revokeToken("brief", Date.now() + 50);
      await new Promise((r) => setTimeout(r, 150));
      expect(await store.isTokenRevoked("brief")).toBe(false);
    } finally {
      await store.close();
    }
  });

  test("a revocation through one instance is heard by another's subscribers", async () => {
    const p = `${prefix}feed:`;
    const a = createRedisRevocationStore({ url: REDIS_URL, prefix: p });
    const b = createRedisRevocationStore({ url: REDIS_URL, prefix: p });
    const heard: string[] = [];
    b.subscribe((r) => heard.push(`${r.kind}:${r.id}`));
    try {
      await subscribed(p);
      await a.revokeToken("remote-jti", Date.now() + 60_000);
      await eventually(() => heard.length >= 1, "the revocation to be heard", 5_000);
      expect(heard).toEqual(["token:remote-jti"]);
    } finally {
      await a.close();
      await b.close();
    }
  });

  test("a revocation on one instance holds on another", async () => {
    const p = `${prefix}shared:`;
    const a = createRedisRevocationStore({ url: REDIS_URL, prefix: p });
    const b = createRedisRevocationStore({ redis: new Redis(REDIS_URL), prefix: p });
    try {
      await a.revokeToken("x", Date.now() + 60_000);
      await a.revokeSession("s", Date.now() + 60_000);
      expect(await b.isTokenRevoked("x")).toBe(true);
      expect(await b.isSessionRevoked("s")).toBe(true);
    } finally {
      await a.close();
      await b.close();
    }
  });

  test("a client passed in stays open after close()", async () => {
    const client = new Redis(REDIS_URL);
    const store = createRedisRevocationStore({ redis: client, prefix: `${prefix}owned:` });
    await store.isTokenRevoked("x");
    await store.close();
    expect(await client.ping()).toBe("PONG");
    await client.quit();
  });

  test("options: exactly one of url and redis", () => {
    expect(() => createRedisRevocationStore({})).toThrow(TypeError);
  });
});

/** Waits until a Redis store's revocation channel has a subscriber (SUBSCRIBE is asynchronous). */
async function subscribed(channelPrefix: string): Promise<void> {
  const channel = `${channelPrefix}revocations`;
  await eventually(async () => Number(((await admin.pubsub("NUMSUB", channel)) as [string, number])[1]) >= 1, "the store to subscribe", 5_000);
}
