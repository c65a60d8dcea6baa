/**
 * The hand-written encoders of the session stream's hot messages (src/session/fast-wire.ts) must
 * write exactly what protobuf-es's `toBinary` writes, for every shape of JSON a Struct can hold.
 */
import { describe, expect, test } from "vitest";
import { create, fromBinary, toBinary, type JsonObject } from "@bufbuild/protobuf";
import { CommandSchema, ResponseSchema } from "../../gen/mcp/v1/command_pb.js";
import { ClientMessageSchema, ServerMessageSchema } from "../../gen/mcp/v1/session_pb.js";
import { decodeClientMessage, decodeServerMessage, encodeClientMessage, encodeServerMessage } from "../../src/session/fast-wire.js";

const outputs: JsonObject[] = [
  {},
  { text: "hello" },
  {
    text: "héllo 😀 ключ",
    n: 1.5,
    zero: 0,
    neg: -3,
    big: 2 ** 60,
    yes: true,
    no: false,
    nothing: null,
    list: [1, "a", null, [true], { q: "w" }, []],
    nest: { a: { b: { c: "d".repeat(300) } } },
    "1": "integer-like key",
  },
];

describe("fast-wire", () => {
  test("a ServerMessage with a JSON Response encodes byte for byte as toBinary", () => {
    for (const output of outputs)
      for (const seq of [0n, 1n, 300n, 2n ** 40n])
        for (const durationMs of [0, 5, 100_000])
          for (const commandId of ["", "c-1", "é".repeat(100)]) {
            const m = create(ServerMessageSchema, {
              seq,
              message: { case: "response", value: create(ResponseSchema, { commandId, durationMs, result: { case: "output", value: output } }) },
            });
            expect(Buffer.from(encodeServerMessage(m))).toEqual(Buffer.from(toBinary(ServerMessageSchema, m)));
          }
  });

  test("other ServerMessages go through toBinary", () => {
    const m = create(ServerMessageSchema, { seq: 7n, message: { case: "pong", value: { id: 3n } } });
    expect(Buffer.from(encodeServerMessage(m))).toEqual(Buffer.from(toBinary(ServerMessageSchema, m)));
  });

  test("a ClientMessage with a Command encodes byte for byte as toBinary", () => {
    const payloads = [{ case: undefined }, ...outputs.map((value) => ({ case: "arguments" as const, value }))];
    for (const payload of payloads)
      for (const id of ["", "c-1"])
        for (const tool of ["", "echo"])
          for (const timeoutMs of [0, 200, 70_000])
            for (const contextId of ["", "ctx"])
              for (const contextVersion of [0n, 3n, 2n ** 45n]) {
                const m = create(ClientMessageSchema, {
                  message: { case: "command", value: create(CommandSchema, { id, tool, timeoutMs, contextId, contextVersion, payload }) },
                });
                expect(Buffer.from(encodeClientMessage(m))).toEqual(Buffer.from(toBinary(ClientMessageSchema, m)));
              }
  });
});

describe("fast-wire decoding", () => {
  const servers = [
    ...outputs.map((output) =>
      create(ServerMessageSchema, {
        seq: 42n,
        message: { case: "response", value: create(ResponseSchema, { commandId: "c-é", durationMs: 3, result: { case: "output", value: output } }) },
      }),
    ),
    create(ServerMessageSchema, { seq: 0n, message: { case: "response", value: create(ResponseSchema, { result: { case: "output", value: {} } }) } }),
    create(ServerMessageSchema, { seq: 9n, message: { case: "response", value: create(ResponseSchema, { commandId: "x", result: { case: "error", value: { code: "timeout" } } }) } }),
    create(ServerMessageSchema, { seq: 7n, message: { case: "pong", value: { id: 3n } } }),
  ];
  const clients = [
    ...outputs.map((value) =>
      create(ClientMessageSchema, {
        message: { case: "command", value: create(CommandSchema, { id: "c-1", tool: "echo", timeoutMs: 70_000, contextId: "ctx", contextVersion: 2n ** 45n, payload: { case: "arguments", value } }) },
      }),
    ),
    create(ClientMessageSchema, { message: { case: "command", value: create(CommandSchema, { id: "c-2", tool: "echo" }) } }),
    create(ClientMessageSchema, { message: { case: "ping", value: { id: 5n } } }),
  ];

  test("decodes exactly what fromBinary decodes", () => {
    for (const m of servers) {
      const bytes = toBinary(ServerMessageSchema, m);
      expect(decodeServerMessage(bytes)).toStrictEqual(fromBinary(ServerMessageSchema, bytes));
    }
    for (const m of clients) {
      const bytes = toBinary(ClientMessageSchema, m);
      expect(decodeClientMessage(bytes)).toStrictEqual(fromBinary(ClientMessageSchema, bytes));
    }
  });

  test("unknown fields, invalid UTF-8 and truncation are left to fromBinary", () => {
    const bytes = toBinary(ClientMessageSchema, clients[0]!);
    const withUnknown = Buffer.concat([Buffer.from(bytes), Buffer.from([0xf8, 0x01, 0x01])]); // field 31, varint
    expect(decodeClientMessage(withUnknown)).toStrictEqual(fromBinary(ClientMessageSchema, withUnknown));
    const badUtf8 = toBinary(ClientMessageSchema, create(ClientMessageSchema, { message: { case: "command", value: create(CommandSchema, { id: "ab", tool: "echo" }) } }));
    const i = Buffer.from(badUtf8).indexOf("ab");
    badUtf8[i] = 0xff;
    // protobuf-es refuses invalid UTF-8 in proto3 strings; so must the fast path.
    expect(() => fromBinary(ClientMessageSchema, badUtf8)).toThrow();
    expect(() => decodeClientMessage(badUtf8)).toThrow();
    expect(() => decodeClientMessage(bytes.subarray(0, bytes.length - 3))).toThrow();
  });
});
