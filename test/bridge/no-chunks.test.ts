/**
 * The chunk policy's edges that a well-behaved server never reaches: a server that streams more
 * than the text limit it was asked for, and `length` values that are not counts.
 */
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { ResponseSchema } from "../../gen/mcp/v1/command_pb.js";
import { ChunkSchema } from "../../gen/mcp/v1/event_pb.js";
import { chunkPolicy, resolveMaxTextBytes } from "../../src/bridge/no-chunks.js";

const chunk = (bytes: number) => create(ChunkSchema, { data: new Uint8Array(bytes) });

describe("chunkPolicy", () => {
  it("caps a text read's length at the limit, leaving shorter lengths and non-counts for the tool", () => {
    const cap = (length: unknown) => chunkPolicy("fs.read", length === undefined ? { path: "f" } : { path: "f", length: length as never }, 100).args["length"];
    expect(cap(undefined)).toBe(100);
    expect(cap(0)).toBe(100);
    expect(cap("0")).toBe(100);
    expect(cap(101)).toBe(100);
    expect(cap("5000000")).toBe(100);
    expect(cap(100)).toBe(100);
    expect(cap(7)).toBe(7);
    expect(cap("abc")).toBe("abc");
    expect(cap(-1)).toBe(-1);
    // A binary read and other tools are sent as asked.
    expect(chunkPolicy("fs.read", { path: "f", binary: true }, 100).args).toEqual({ path: "f", binary: true });
  });

  it("refuses a text read whose server streams more than the limit with TRANSPORT message_too_large", () => {
    const p = chunkPolicy("fs.read", { path: "f" }, 100);
    expect(p.accept(chunk(60))).toBe(true);
    expect(p.accept(chunk(41))).toBe(false);
    const answer = p.answer(create(ResponseSchema, { commandId: "c1", result: { case: "error", value: { code: "cancelled" } } }));
    expect(answer.result.case).toBe("error");
    expect(answer.result.value).toMatchObject({ code: "message_too_large", commandId: "c1" });
  });

  it("refuses any chunk of another call with invalid_argument on field binary, whatever the server answered", () => {
    const p = chunkPolicy("fs.read", { path: "f", binary: true }, 100);
    expect(p.accept(chunk(1))).toBe(false);
    const answer = p.answer(create(ResponseSchema, { commandId: "c2", result: { case: "output", value: { content: "" } } }));
    expect(answer.result.value).toMatchObject({ code: "invalid_argument", field: "binary", commandId: "c2" });
  });

  it("passes a Response without chunks through unchanged", () => {
    const r = create(ResponseSchema, { commandId: "c3", result: { case: "output", value: { content: "hi", truncated: false } } });
    expect(chunkPolicy("fs.read", { path: "f" }, 100).answer(r)).toBe(r);
    expect(chunkPolicy("echo", {}, 100).answer(r)).toBe(r);
  });

  it("checks the limit", () => {
    expect(resolveMaxTextBytes(undefined)).toBe(1024 * 1024);
    for (const bad of [0, -1, 1.5, Number.NaN]) expect(() => resolveMaxTextBytes(bad)).toThrow(TypeError);
  });
});
