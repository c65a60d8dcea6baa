/**
 * Hand-written protobuf encoding of the session stream's most frequent message: a ServerMessage
 * carrying a Response whose result is JSON `output` (a `google.protobuf.Struct`). protobuf-es
 * encodes a Struct through its reflection API (a map of `Value` messages built per field), which
 * profiles showed as a large share of a small command's cost. The bytes written here are standard
 * protobuf for the same message (field order by number), so any decoder reads them; everything
 * else — and any value a Struct cannot hold — goes through `toBinary` as before.
 */
import { fromBinary, toBinary, type JsonObject, type JsonValue } from "@bufbuild/protobuf";
import type { Command, Response } from "../../gen/mcp/v1/command_pb.js";
import { ClientMessageSchema, ServerMessageSchema, type ClientMessage, type ServerMessage } from "../../gen/mcp/v1/session_pb.js";

/** Protobuf bytes of `m`; the same message `toBinary(ServerMessageSchema, m)` encodes. */
export function encodeServerMessage(m: ServerMessage): Uint8Array {
  return encodeResponseFast(m) ?? toBinary(ServerMessageSchema, m);
}

// Tags: (field number << 3) | wire type (0 varint, 1 fixed64, 2 length-delimited).
const TAG_SEQ = 0x08; // ServerMessage.seq = 1
const TAG_RESPONSE = 0x32; // ServerMessage.response = 6
const TAG_COMMAND_ID = 0x0a; // Response.command_id = 1
const TAG_OUTPUT = 0x12; // Response.output = 2
const TAG_DURATION = 0x28; // Response.duration_ms = 5
const TAG_FIELDS = 0x0a; // Struct.fields = 1 (map entries), ListValue.values = 1
const TAG_KEY = 0x0a; // map entry key = 1
const TAG_VALUE = 0x12; // map entry value = 2
const TAG_NULL = 0x08; // Value.null_value = 1
const TAG_NUMBER = 0x11; // Value.number_value = 2 (double)
const TAG_STRING = 0x1a; // Value.string_value = 3
const TAG_BOOL = 0x20; // Value.bool_value = 4
const TAG_STRUCT = 0x2a; // Value.struct_value = 5
const TAG_LIST = 0x32; // Value.list_value = 6

/**
 * Sizes are computed first (post-order) into `lens` — one slot per length-delimited part, in the
 * order the write pass meets them — so the write pass is a single walk into one exact buffer.
 */
function encodeResponseFast(m: ServerMessage): Uint8Array | undefined {
  const msg = m.message;
  if (msg.case !== "response") return undefined;
  const r = msg.value;
  if (r.result.case !== "output" || r.$unknown !== undefined || m.$unknown !== undefined) return undefined;
  const seq = m.seq;
  if (seq > 0x1fffffffffffffn) return undefined;
  const seqN = Number(seq);
  const lens: number[] = [];

  // Response body.
  const responseSlot = lens.length;
  lens.push(0);
  let rsize = 0;
  if (r.commandId !== "") {
    const n = utf8Length(r.commandId);
    lens.push(n);
    rsize += 1 + varintSize(n) + n;
  }
  const outputSlot = lens.length;
  lens.push(0);
  const structSize = sizeStruct(r.result.value, lens);
  if (structSize < 0) return undefined;
  lens[outputSlot] = structSize;
  rsize += 1 + varintSize(structSize) + structSize;
  if (r.durationMs !== 0) rsize += 1 + varintSize(r.durationMs);
  lens[responseSlot] = rsize;

  const total = (seqN !== 0 ? 1 + varintSize(seqN) : 0) + 1 + varintSize(rsize) + rsize;
  const w: Writer = { buf: Buffer.allocUnsafe(total), off: 0, lens, k: 0 };
  if (seqN !== 0) {
    w.buf[w.off++] = TAG_SEQ;
    writeVarint(w, seqN);
  }
  w.buf[w.off++] = TAG_RESPONSE;
  writeVarint(w, lens[w.k++]!); // the response slot
  if (r.commandId !== "") {
    w.buf[w.off++] = TAG_COMMAND_ID;
    writeString(w, r.commandId);
  }
  w.buf[w.off++] = TAG_OUTPUT;
  writeStruct(w, r.result.value);
  if (r.durationMs !== 0) {
    w.buf[w.off++] = TAG_DURATION;
    writeVarint(w, r.durationMs);
  }
  return w.buf;
}

/** Size of a Struct's body, or -1 when a value cannot be encoded here (the caller falls back). */
function sizeStruct(o: JsonObject, lens: number[]): number {
  let size = 0;
  for (const key in o) {
    if (!Object.prototype.hasOwnProperty.call(o, key)) continue;
    const entrySlot = lens.length;
    lens.push(0);
    const kn = utf8Length(key);
    lens.push(kn);
    const valueSlot = lens.length;
    lens.push(0);
    const vs = sizeValue(o[key], lens);
    if (vs < 0) return -1;
    lens[valueSlot] = vs;
    const entry = 1 + varintSize(kn) + kn + 1 + varintSize(vs) + vs;
    lens[entrySlot] = entry;
    size += 1 + varintSize(entry) + entry;
  }
  return size;
}

function sizeValue(v: JsonValue | undefined, lens: number[]): number {
  switch (typeof v) {
    case "string": {
      const n = utf8Length(v);
      lens.push(n);
      return 1 + varintSize(n) + n;
    }
    case "number":
      return 9;
    case "boolean":
      return 2;
    case "object": {
      if (v === null) return 2;
      const slot = lens.length;
      lens.push(0);
      let n: number;
      if (Array.isArray(v)) {
        n = 0;
        for (const item of v) {
          const itemSlot = lens.length;
          lens.push(0);
          const s = sizeValue(item, lens);
          if (s < 0) return -1;
          lens[itemSlot] = s;
          n += 1 + varintSize(s) + s;
        }
      } else {
        n = sizeStruct(v, lens);
        if (n < 0) return -1;
      }
      lens[slot] = n;
      return 1 + varintSize(n) + n;
    }
    default:
      return -1; // undefined, bigint, function: let toBinary decide (it throws)
  }
}

interface Writer {
  buf: Buffer;
  off: number;
  lens: number[];
  k: number;
}

function writeStruct(w: Writer, o: JsonObject): void {
  writeVarint(w, structLen(w));
  writeStructBody(w, o);
}

/** The Struct's own length is the slot of the Value/field that holds it; read it. */
function structLen(w: Writer): number {
  return w.lens[w.k++]!;
}

function writeStructBody(w: Writer, o: JsonObject): void {
  for (const key in o) {
    if (!Object.prototype.hasOwnProperty.call(o, key)) continue;
    w.buf[w.off++] = TAG_FIELDS;
    writeVarint(w, w.lens[w.k++]!); // entry
    w.buf[w.off++] = TAG_KEY;
    writeString(w, key);
    w.buf[w.off++] = TAG_VALUE;
    writeVarint(w, w.lens[w.k++]!); // value
    writeValue(w, o[key]!); // sizeValue accepted it
  }
}

function writeValue(w: Writer, v: JsonValue): void {
  switch (typeof v) {
    case "string":
      w.buf[w.off++] = TAG_STRING;
      writeString(w, v);
      return;
    case "number":
      w.buf[w.off++] = TAG_NUMBER;
      w.buf.writeDoubleLE(v, w.off);
      w.off += 8;
      return;
    case "boolean":
      w.buf[w.off++] = TAG_BOOL;
      w.buf[w.off++] = v ? 1 : 0;
      return;
    default:
      if (v === null) {
        w.buf[w.off++] = TAG_NULL;
        w.buf[w.off++] = 0;
        return;
      }
      if (Array.isArray(v)) {
        w.buf[w.off++] = TAG_LIST;
        writeVarint(w, w.lens[w.k++]!);
        for (const item of v) {
          w.buf[w.off++] = TAG_FIELDS;
          writeVarint(w, w.lens[w.k++]!);
          writeValue(w, item);
        }
        return;
      }
      w.buf[w.off++] = TAG_STRUCT;
      writeStruct(w, v);
  }
}

function writeString(w: Writer, s: string): void {
  const n = w.lens[w.k++]!;
  writeVarint(w, n);
  if (n === s.length) {
    // ASCII (byte length equals UTF-16 length only then): a loop beats the native call for short strings.
    const buf = w.buf;
    let off = w.off;
    for (let i = 0; i < n; i++) buf[off++] = s.charCodeAt(i);
  } else {
    w.buf.write(s, w.off, n, "utf8");
  }
  w.off += n;
}

function writeVarint(w: Writer, n: number): void {
  const buf = w.buf;
  while (n > 0x7f) {
    buf[w.off++] = (n % 0x80) | 0x80;
    n = Math.floor(n / 0x80);
  }
  buf[w.off++] = n;
}

function varintSize(n: number): number {
  let size = 1;
  while (n > 0x7f) {
    n = Math.floor(n / 0x80);
    size++;
  }
  return size;
}

/** UTF-8 byte length as Buffer/TextEncoder write it (a lone surrogate becomes U+FFFD, 3 bytes). */
function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

const TAG_CM_COMMAND = 0x2a; // ClientMessage.command = 5
const TAG_CMD_ID = 0x0a; // Command.id = 1
const TAG_CMD_TOOL = 0x12; // Command.tool = 2
const TAG_CMD_ARGUMENTS = 0x1a; // Command.arguments = 3
const TAG_CMD_TIMEOUT = 0x28; // Command.timeout_ms = 5
const TAG_CMD_CONTEXT_ID = 0x32; // Command.context_id = 6
const TAG_CMD_CONTEXT_VERSION = 0x38; // Command.context_version = 7

/** Protobuf bytes of `m`; the same message `toBinary(ClientMessageSchema, m)` encodes. */
export function encodeClientMessage(m: ClientMessage): Uint8Array {
  return encodeCommandFast(m) ?? toBinary(ClientMessageSchema, m);
}

/** A ClientMessage carrying a Command with JSON arguments (or none), the client's hot path. */
function encodeCommandFast(m: ClientMessage): Uint8Array | undefined {
  const msg = m.message;
  if (msg.case !== "command" || m.$unknown !== undefined) return undefined;
  const c = msg.value;
  const payload = c.payload;
  if (payload.case === "input" || c.$unknown !== undefined || c.contextVersion > 0x1fffffffffffffn) return undefined;
  const version = Number(c.contextVersion);
  const lens: number[] = [];
  const commandSlot = lens.length;
  lens.push(0);
  let size = 0;
  for (const s of [c.id, c.tool]) {
    if (s === "") continue;
    const n = utf8Length(s);
    lens.push(n);
    size += 1 + varintSize(n) + n;
  }
  if (payload.case === "arguments") {
    const slot = lens.length;
    lens.push(0);
    const n = sizeStruct(payload.value, lens);
    if (n < 0) return undefined;
    lens[slot] = n;
    size += 1 + varintSize(n) + n;
  }
  if (c.timeoutMs !== 0) size += 1 + varintSize(c.timeoutMs);
  if (c.contextId !== "") {
    const n = utf8Length(c.contextId);
    lens.push(n);
    size += 1 + varintSize(n) + n;
  }
  if (version !== 0) size += 1 + varintSize(version);
  lens[commandSlot] = size;

  const w: Writer = { buf: Buffer.allocUnsafe(1 + varintSize(size) + size), off: 0, lens, k: 0 };
  w.buf[w.off++] = TAG_CM_COMMAND;
  writeVarint(w, lens[w.k++]!);
  if (c.id !== "") {
    w.buf[w.off++] = TAG_CMD_ID;
    writeString(w, c.id);
  }
  if (c.tool !== "") {
    w.buf[w.off++] = TAG_CMD_TOOL;
    writeString(w, c.tool);
  }
  if (payload.case === "arguments") {
    w.buf[w.off++] = TAG_CMD_ARGUMENTS;
    writeStruct(w, payload.value);
  }
  if (c.timeoutMs !== 0) {
    w.buf[w.off++] = TAG_CMD_TIMEOUT;
    writeVarint(w, c.timeoutMs);
  }
  if (c.contextId !== "") {
    w.buf[w.off++] = TAG_CMD_CONTEXT_ID;
    writeString(w, c.contextId);
  }
  if (version !== 0) {
    w.buf[w.off++] = TAG_CMD_CONTEXT_VERSION;
    writeVarint(w, version);
  }
  return w.buf;
}

// ---------------------------------------------------------------- decoding

/**
 * Decodes a ClientMessage; a Command with JSON arguments (the hot path) is read by hand, anything
 * else — or anything unexpected inside it (an unknown field, a wire type, invalid UTF-8, a repeated
 * message field protobuf would merge) — by `fromBinary`, which then decides exactly as before.
 */
export function decodeClientMessage(bytes: Uint8Array): ClientMessage {
  return decodeCommandFast(bytes) ?? fromBinary(ClientMessageSchema, bytes);
}

/** Decodes a ServerMessage; a JSON Response by hand, the rest by `fromBinary` (as above). */
export function decodeServerMessage(bytes: Uint8Array): ServerMessage {
  return decodeResponseFast(bytes) ?? fromBinary(ServerMessageSchema, bytes);
}

/** Thrown inside the hand decoders to give up; never escapes this module. */
const GIVE_UP = Symbol("give up");

interface Reader {
  buf: Uint8Array;
  pos: number;
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });
const doubleBytes = new Uint8Array(8);
const doubleView = new DataView(doubleBytes.buffer);

/** A varint that fits in a double exactly (< 2^53), else give up. */
function readVarint(r: Reader): number {
  const buf = r.buf;
  let result = 0;
  let mul = 1;
  for (let i = 0; i < 8; i++) {
    if (r.pos >= buf.length) throw GIVE_UP;
    const b = buf[r.pos++]!;
    result += (b & 0x7f) * mul;
    if (b < 0x80) return result;
    mul *= 0x80;
  }
  throw GIVE_UP;
}

/** The end offset of a length-delimited part starting at r.pos. */
function readLength(r: Reader): number {
  const len = readVarint(r);
  const end = r.pos + len;
  if (end > r.buf.length) throw GIVE_UP;
  return end;
}

function readString(r: Reader): string {
  const end = readLength(r);
  const buf = r.buf;
  let s = "";
  let i = r.pos;
  // Short ASCII strings (ids, tool names, keys) are cheaper to build here than through a decoder.
  for (; i < end; i++) {
    const c = buf[i]!;
    if (c >= 0x80 || end - r.pos > 64) break;
    s += String.fromCharCode(c);
  }
  if (i < end) {
    try {
      s = strictUtf8.decode(buf.subarray(r.pos, end));
    } catch {
      throw GIVE_UP; // invalid UTF-8: protobuf-es decides
    }
  }
  r.pos = end;
  return s;
}

function readStruct(r: Reader, end: number): JsonObject {
  const o: JsonObject = {};
  while (r.pos < end) {
    if (r.buf[r.pos++] !== TAG_FIELDS) throw GIVE_UP;
    const entryEnd = readLength(r);
    let key = "";
    let value: JsonValue | undefined;
    while (r.pos < entryEnd) {
      const tag = r.buf[r.pos++];
      if (tag === TAG_KEY) key = readString(r);
      else if (tag === TAG_VALUE) value = readValue(r, readLength(r));
      else throw GIVE_UP;
    }
    if (value === undefined || r.pos !== entryEnd) throw GIVE_UP;
    o[key] = value;
  }
  if (r.pos !== end) throw GIVE_UP;
  return o;
}

function readValue(r: Reader, end: number): JsonValue {
  let value: JsonValue | undefined;
  while (r.pos < end) {
    const tag = r.buf[r.pos++];
    switch (tag) {
      case TAG_NULL:
        readVarint(r);
        value = null;
        break;
      case TAG_NUMBER:
        if (r.pos + 8 > end) throw GIVE_UP;
        for (let i = 0; i < 8; i++) doubleBytes[i] = r.buf[r.pos + i]!;
        value = doubleView.getFloat64(0, true);
        r.pos += 8;
        break;
      case TAG_STRING:
        value = readString(r);
        break;
      case TAG_BOOL:
        value = readVarint(r) !== 0;
        break;
      case TAG_STRUCT:
        value = readStruct(r, readLength(r));
        break;
      case TAG_LIST: {
        const listEnd = readLength(r);
        const list: JsonValue[] = [];
        while (r.pos < listEnd) {
          if (r.buf[r.pos++] !== TAG_FIELDS) throw GIVE_UP;
          list.push(readValue(r, readLength(r)));
        }
        if (r.pos !== listEnd) throw GIVE_UP;
        value = list;
        break;
      }
      default:
        throw GIVE_UP;
    }
  }
  if (value === undefined || r.pos !== end) throw GIVE_UP;
  return value;
}

function decodeCommandFast(bytes: Uint8Array): ClientMessage | undefined {
  try {
    const r: Reader = { buf: bytes, pos: 0 };
    if (bytes[r.pos++] !== TAG_CM_COMMAND) return undefined;
    const end = readLength(r);
    if (end !== bytes.length) return undefined; // more fields after the command
    let id = "";
    let tool = "";
    let payload: Command["payload"] = { case: undefined };
    let timeoutMs = 0;
    let contextId = "";
    let contextVersion = 0n;
    while (r.pos < end) {
      switch (bytes[r.pos++]) {
        case TAG_CMD_ID:
          id = readString(r);
          break;
        case TAG_CMD_TOOL:
          tool = readString(r);
          break;
        case TAG_CMD_ARGUMENTS:
          if (payload.case !== undefined) return undefined; // protobuf would merge
          payload = { case: "arguments", value: readStruct(r, readLength(r)) };
          break;
        case TAG_CMD_TIMEOUT:
          timeoutMs = readVarint(r);
          if (timeoutMs > 0xffffffff) return undefined;
          break;
        case TAG_CMD_CONTEXT_ID:
          contextId = readString(r);
          break;
        case TAG_CMD_CONTEXT_VERSION:
          contextVersion = BigInt(readVarint(r));
          break;
        default:
          return undefined;
      }
    }
    // Literals with every field, as fromBinary builds them (plain objects for proto3 messages).
    const command: Command = { $typeName: "mcp.v1.Command", id, tool, payload, timeoutMs, contextId, contextVersion };
    return { $typeName: "mcp.v1.ClientMessage", message: { case: "command", value: command } };
  } catch (e) {
    if (e === GIVE_UP) return undefined;
    throw e;
  }
}

function decodeResponseFast(bytes: Uint8Array): ServerMessage | undefined {
  try {
    const r: Reader = { buf: bytes, pos: 0 };
    let seq = 0n;
    if (bytes[r.pos] === TAG_SEQ) {
      r.pos++;
      seq = BigInt(readVarint(r));
    }
    if (bytes[r.pos++] !== TAG_RESPONSE) return undefined;
    const end = readLength(r);
    if (end !== bytes.length) return undefined;
    let commandId = "";
    let output: JsonObject | undefined;
    let durationMs = 0;
    while (r.pos < end) {
      switch (bytes[r.pos++]) {
        case TAG_COMMAND_ID:
          commandId = readString(r);
          break;
        case TAG_OUTPUT:
          if (output !== undefined) return undefined; // protobuf would merge
          output = readStruct(r, readLength(r));
          break;
        case TAG_DURATION:
          durationMs = readVarint(r);
          if (durationMs > 0xffffffff) return undefined;
          break;
        default:
          return undefined; // an error or typed output: fromBinary
      }
    }
    if (output === undefined) return undefined;
    const response: Response = { $typeName: "mcp.v1.Response", commandId, result: { case: "output", value: output }, durationMs };
    return { $typeName: "mcp.v1.ServerMessage", seq, message: { case: "response", value: response } };
  } catch (e) {
    if (e === GIVE_UP) return undefined;
    throw e;
  }
}
