import { describe, expect, it } from "vitest";
import { IdMap } from "../src/id-map.js";

describe("IdMap", () => {
  it("counts, replaces and deletes entries like a Map", () => {
    const m = new IdMap<{ n: number }>();
    m.set("a", { n: 1 }).set("b", { n: 2 });
    m.set("a", { n: 3 });
    expect(m.size).toBe(2);
    expect(m.get("a")).toEqual({ n: 3 });
    expect(m.has("b")).toBe(true);
    expect(m.delete("b")).toBe(true);
    expect(m.delete("b")).toBe(false);
    expect(m.has("b")).toBe(false);
    expect(m.size).toBe(1);
    m.clear();
    expect(m.size).toBe(0);
    expect(m.get("a")).toBeUndefined();
  });

  it("keeps every entry and the insertion order across its renewals", () => {
    const m = new IdMap<number>();
    // Enough churn for several copies (one every 256+ insertions), with 100 entries kept throughout.
    for (let i = 0; i < 5000; i++) {
      m.set(`c${i}`, i);
      if (i >= 100) expect(m.delete(`c${i - 100}`)).toBe(true);
    }
    expect(m.size).toBe(100);
    expect([...m.keys()]).toEqual(Array.from({ length: 100 }, (_, i) => `c${4900 + i}`));
    expect([...m.values()]).toEqual(Array.from({ length: 100 }, (_, i) => 4900 + i));
    expect(m.get("c4899")).toBeUndefined();
    expect(m.get("c4950")).toBe(4950);
  });
});
