/** The reconnect policy: full-jitter exponential backoff, and option checks at build time. */
import { describe, expect, test } from "vitest";
import { backoffDelayMs, resolveReconnectOptions } from "../../src/client/reconnect.js";

describe("backoffDelayMs", () => {
  // random() = 1 - ε shows the bound; random() = 0 shows the floor (full jitter may retry at once).
  const cases: { attempt: number; random: number; want: number }[] = [
    { attempt: 1, random: 0.999999, want: 99 },
    { attempt: 2, random: 0.999999, want: 199 },
    { attempt: 4, random: 0.999999, want: 799 },
    // the bound stops growing at maxDelayMs
    { attempt: 20, random: 0.999999, want: 4999 },
    { attempt: 3, random: 0, want: 0 },
    { attempt: 3, random: 0.5, want: 200 },
  ];
  for (const c of cases) {
    test(`attempt ${c.attempt}, random ${c.random} → ${c.want} ms`, () => {
      expect(backoffDelayMs(c.attempt, resolveReconnectOptions({ random: () => c.random }))).toBe(c.want);
    });
  }
});

describe("resolveReconnectOptions", () => {
  test("defaults", () => {
    const { random, ...rest } = resolveReconnectOptions();
    expect(rest).toEqual({ maxAttempts: 8, initialDelayMs: 100, maxDelayMs: 5000, multiplier: 2, attemptTimeoutMs: 10_000 });
    expect(random).toBe(Math.random);
  });
  const bad: [string, Parameters<typeof resolveReconnectOptions>[0]][] = [
    ["maxAttempts 0", { maxAttempts: 0 }],
    ["maxAttempts 1.5", { maxAttempts: 1.5 }],
    ["negative initialDelayMs", { initialDelayMs: -1 }],
    ["infinite maxDelayMs", { maxDelayMs: Infinity }],
    ["attemptTimeoutMs 0", { attemptTimeoutMs: 0 }],
    ["multiplier below 1", { multiplier: 0.5 }],
  ];
  for (const [name, o] of bad) {
    test(`${name} → TypeError`, () => {
      expect(() => resolveReconnectOptions(o)).toThrow(TypeError);
    });
  }
  test("maxAttempts Infinity is allowed", () => {
    expect(resolveReconnectOptions({ maxAttempts: Infinity }).maxAttempts).toBe(Infinity);
  });
});
