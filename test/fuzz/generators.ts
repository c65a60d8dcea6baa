/**
 * What the fuzz suite throws (test/fuzz/README.md): a seeded PRNG, ClientMessages built from the
 * schema (valid, half-valid, absurd), and byte mutations of them. Everything is a function of the
 * seed, so a failing run replays with MCP_FUZZ_SEED.
 */
import { create, toBinary, type JsonValue, type MessageInitShape } from "@bufbuild/protobuf";
import { BatchMode, CommandSchema } from "../../gen/mcp/v1/command_pb.js";
import { ClientMessageSchema } from "../../gen/mcp/v1/session_pb.js";
import { ProtocolVersion, SecurityLevel } from "../../gen/mcp/v1/types_pb.js";

/** mulberry32: small, fast, good enough to pick cases; not for anything secret. */
export function createRandom(seed: number) {
  let a = seed >>> 0;
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  return {
    next,
    /** 0 ≤ result < n. */
    int,
    chance: (p: number) => next() < p,
    pick: <T>(xs: readonly T[]): T => xs[int(xs.length)]!, // int(length) < length
    bytes(n: number): Uint8Array {
      const out = new Uint8Array(n);
      for (let i = 0; i < n; i++) out[i] = int(256);
      return out;
    },
    string(n: number): string {
      // Mostly printable, some of everything (lone surrogates included).
      let s = "";
      for (let i = 0; i < n; i++) s += String.fromCharCode(int(8) === 0 ? int(0x10000) : 32 + int(95));
      return s;
    },
  };
}
export type Random = ReturnType<typeof createRandom>;

type ClientPayload = NonNullable<MessageInitShape<typeof ClientMessageSchema>["message"]>;

const TOOLS = ["echo", "fs.read", "fs.list", "fs.search", "fs.write", "exec", "nope", ""];

function randomCommand(r: Random, id: string): MessageInitShape<typeof CommandSchema> {
  const c: MessageInitShape<typeof CommandSchema> = {
    id: r.chance(0.05) ? "" : id,
    tool: r.pick(TOOLS),
    timeoutMs: r.pick([0, 0, 1, 50, 1000, 2 ** 31]),
  };
  if (r.chance(0.8)) {
    c.payload = {
      case: "arguments",
      value: r.pick<Record<string, unknown>>([
        { text: r.string(r.int(40)) },
        { path: r.pick([".", "..", "/etc/passwd", r.string(10), "a/../../b"]) },
        { pattern: r.string(8), path: "." },
        { text: 12 },
        { nested: { deep: [1, 2, { x: null }] } },
        {},
      ]) as never, // JSON values; the server validates them against the tool's schema
    };
  } else if (r.chance(0.5)) {
    c.payload = { case: "input", value: { typeUrl: r.pick(["type.googleapis.com/mcp.tools.v1.EchoInput", "x", ""]), value: r.bytes(r.int(20)) } };
  }
  if (r.chance(0.1)) {
    c.contextId = r.pick(["fuzz", "", r.string(5)]);
    c.contextVersion = BigInt(r.int(5));
  }
  return c;
}

/** One ClientMessage payload: any kind, sometimes valid. `token` is a real token (or undefined). */
export function randomPayload(r: Random, token: string | undefined, n: number): ClientPayload {
  const id = `f${n}`;
  switch (r.int(11)) {
    case 0:
    case 1:
      return {
        case: "handshake",
        value: {
          protocolVersions: r.chance(0.9) ? [ProtocolVersion.PROTOCOL_VERSION_1_0] : r.pick([[], [99 as ProtocolVersion]]),
          client: { name: r.string(6), version: "0" },
          securityLevel: r.pick([SecurityLevel.UNSPECIFIED, SecurityLevel.STANDARD, SecurityLevel.HIGH, 17 as SecurityLevel]),
          ...(r.chance(0.8) && token !== undefined ? { token } : r.chance(0.5) ? { token: r.string(30) } : {}),
          ...(r.chance(0.15) ? { resume: { sessionId: r.pick(["", r.string(36), "00000000-0000-0000-0000-000000000000"]), lastSeq: BigInt(r.int(10)) } } : {}),
        },
      };
    case 2:
    case 3:
      return { case: "command", value: randomCommand(r, id) };
    case 4: {
      const size = r.pick([0, 1, 5, 50, 150]);
      return {
        case: "batch",
        value: { mode: r.pick([BatchMode.PARALLEL, BatchMode.SEQUENTIAL, 7 as BatchMode]), commands: Array.from({ length: size }, (_, i) => randomCommand(r, `${id}.${i}`)) },
      };
    }
    case 5:
      return { case: "cancel", value: { commandId: r.chance(0.5) ? `f${r.int(n + 1)}` : r.string(5) } };
    case 6:
      return { case: "ping", value: { id: BigInt(r.int(1000)) } };
    case 7:
      return { case: "sync", value: { contextId: r.pick(["fuzz", "", r.string(4)]), knownVersion: BigInt(r.int(4)), watch: r.chance(0.5) } };
    case 8:
      return {
        case: "update",
        value: {
          id,
          contextId: r.pick(["fuzz", "", r.string(4)]),
          expectedVersion: BigInt(r.int(3)),
          ops: Array.from({ length: r.int(4) }, () =>
            r.chance(0.7)
              ? { op: { case: "put" as const, value: { key: r.pick(["k", "", r.string(6)]), value: { kind: { case: "stringValue" as const, value: r.string(r.int(30)) } } } } }
              : { op: { case: "delete" as const, value: { key: r.pick(["k", r.string(3)]) } } },
          ),
        },
      };
    case 9:
      return { case: "authentication", value: { token: r.chance(0.5) && token !== undefined ? token : r.string(r.int(50)) } };
    default:
      return { case: undefined } as unknown as ClientPayload; // an empty ClientMessage: no field set
  }
}

/** The protobuf bytes of one random ClientMessage. */
export function randomMessageBytes(r: Random, token: string | undefined, n: number): Uint8Array {
  return toBinary(ClientMessageSchema, create(ClientMessageSchema, { message: randomPayload(r, token, n) }));
}

/** A mutated copy of `bytes`: bit flips, cuts, insertions, splices of random bytes. */
export function mutate(r: Random, bytes: Uint8Array): Uint8Array {
  let b: Uint8Array = Uint8Array.from(bytes);
  const rounds = 1 + r.int(4);
  for (let k = 0; k < rounds; k++) {
    switch (r.int(6)) {
      case 0: // flip a bit
        if (b.length > 0) b[r.int(b.length)]! ^= 1 << r.int(8);
        break;
      case 1: // set a byte to something interesting
        if (b.length > 0) b[r.int(b.length)] = r.pick([0x00, 0x7f, 0x80, 0xff, 0x0a, 0x12, 0x1a]);
        break;
      case 2: // cut
        b = b.subarray(0, r.int(b.length + 1));
        break;
      case 3: {
        // insert random bytes
        const at = r.int(b.length + 1);
        b = concat(b.subarray(0, at), r.bytes(1 + r.int(8)), b.subarray(at));
        break;
      }
      case 4: {
        // a varint that claims a huge length
        const at = r.int(b.length + 1);
        b = concat(b.subarray(0, at), Uint8Array.of(0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f), b.subarray(at));
        break;
      }
      default: // duplicate a segment
        if (b.length > 1) {
          const from = r.int(b.length);
          const to = from + r.int(b.length - from);
          b = concat(b, b.subarray(from, to));
        }
    }
  }
  return b;
}

/** A Command whose JSON arguments nest `depth` objects deep (absurd nesting), as ClientMessage bytes. */
export function deepNesting(depth: number): Uint8Array {
  let value: JsonValue = null;
  for (let i = 0; i < depth; i++) value = { a: value };
  const command = create(CommandSchema, { id: "deep", tool: "echo", payload: { case: "arguments", value: { text: "x", a: value } } });
  return toBinary(ClientMessageSchema, create(ClientMessageSchema, { message: { case: "command", value: command } }));
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** A gRPC / Connect-streaming frame: flag byte, uint32 BE length, body. `lengthOverride` lies about the length. */
export function frame(body: Uint8Array, flag = 0, lengthOverride?: number): Uint8Array {
  const out = new Uint8Array(5 + body.length);
  out[0] = flag;
  new DataView(out.buffer).setUint32(1, lengthOverride ?? body.length);
  out.set(body, 5);
  return out;
}
