/** Redis URL schemes of the shared stores (src/context/redis-client.ts, docs/deploy.md). */
import { describe, expect, test } from "vitest";
import { checkKeyPrefix, isRedisUrl, parseRedisUrl, taggedKey } from "../../src/context/redis-client.js";

describe("parseRedisUrl", () => {
  const cases: { url: string; want: object }[] = [
    // one server: ioredis parses the URL itself; we only classify it
    { url: "redis://127.0.0.1:6379/2", want: { kind: "single", tls: false, db: 2, hosts: [{ host: "127.0.0.1", port: 6379 }] } },
    { url: "rediss://u:p%40ss@h:6380", want: { kind: "single", tls: true, username: "u", password: "p@ss" } },
    // a cluster: every seed node, no database
    { url: "redis+cluster://a:7000,b:7001,c", want: { kind: "cluster", hosts: [{ host: "a", port: 7000 }, { host: "b", port: 7001 }, { host: "c", port: 6379 }] } },
    { url: "rediss+cluster://:secret@a:7000", want: { kind: "cluster", tls: true, password: "secret" } },
    // sentinel: sentinels (default port 26379), the master's name, an optional database
    { url: "redis+sentinel://s1,s2:26380/mymaster/3", want: { kind: "sentinel", masterName: "mymaster", db: 3, hosts: [{ host: "s1", port: 26379 }, { host: "s2", port: 26380 }] } },
    // an update is acknowledged once N replicas have it (WAIT), within waitTimeoutMs (default 1 s)
    { url: "redis+sentinel://s1/m/0?wait=1", want: { kind: "sentinel", masterName: "m", db: 0, wait: { replicas: 1, timeoutMs: 1000 } } },
    { url: "redis+sentinel://s1/m?wait=2&waitTimeoutMs=250", want: { masterName: "m", wait: { replicas: 2, timeoutMs: 250 } } },
  ];
  for (const { url, want } of cases) {
    test(url, () => {
      expect(isRedisUrl(url)).toBe(true);
      expect(parseRedisUrl(url)).toMatchObject(want);
    });
  }

  const bad: { url: string; message: RegExp }[] = [
    { url: "memcached://x", message: /not a Redis URL/ },
    { url: "redis+sentinel://s1:26379", message: /names the master/ },
    { url: "redis+cluster://a:7000/1", message: /no databases/ },
    { url: "redis+cluster://a:99999", message: /bad host:port/ },
    { url: "redis+sentinel://s1/m/x", message: /non-negative integer/ },
    { url: "redis+sentinel://s1/m?wait=0", message: /positive integer/ },
    { url: "redis+sentinel://s1/m?wait=1&waitTimeoutMs=soon", message: /waitTimeoutMs/ },
    { url: "redis+sentinel://s1/m?replicas=1", message: /unknown option "replicas"/ },
    { url: "redis+cluster://a:7000?wait=1", message: /for redis\+sentinel/ },
  ];
  for (const { url, message } of bad) {
    test(`${url} is refused with a TypeError`, () => {
      expect(() => parseRedisUrl(url)).toThrow(TypeError);
      expect(() => parseRedisUrl(url)).toThrow(message);
    });
  }
});

describe("hash-tagged keys", () => {
  test("every key of one id carries the same {tag}, even when the id holds a brace", () => {
    expect(taggedKey("mcp:", "ctx", "doc", ":m")).toBe("mcp:ctx:{doc}:m");
    const tag = (k: string) => k.slice(k.indexOf("{") + 1, k.indexOf("}", k.indexOf("{")));
    expect(tag(taggedKey("p:", "ctx", "a}b", ":m"))).toBe(tag(taggedKey("p:", "ctx", "a}b", ":l")));
  });
  test("a prefix with a brace is refused", () => {
    expect(() => checkKeyPrefix("mcp{x}:")).toThrow(TypeError);
  });
});
