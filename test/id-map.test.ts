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

  it("takes any string as an id, Object.prototype's names included", () => {
    const m = new IdMap<{ id: string }>();
    for (const id of ["__proto__", "constructor", "toString", "hasOwnProperty", "", "7"]) m.set(id, { id });
    expect(m.size).toBe(6);
    expect(m.get("__proto__")).toEqual({ id: "__proto__" });
    expect(m.get("valueOf")).toBeUndefined();
    expect(new Set(m.keys())).toEqual(new Set(["__proto__", "constructor", "toString", "hasOwnProperty", "", "7"]));
    expect(m.values().map((v) => v.id).sort()).toEqual(["", "7", "__proto__", "constructor", "hasOwnProperty", "toString"]);
  });

  it("iterates over a snapshot: deleting while looping visits every entry once", () => {
    const m = new IdMap<{ n: number }>();
    for (let i = 0; i < 5; i++) m.set(`c${i}`, { n: i });
    const seen: number[] = [];
    for (const [id, v] of m) {
      seen.push(v.n);
      m.delete(id);
    }
    expect(seen).toEqual([0, 1, 2, 3, 4]);
    expect(m.size).toBe(0);
  });
});
