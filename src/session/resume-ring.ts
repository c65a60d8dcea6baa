/**
 * The messages a session keeps for resume (PROTOCOL.md §4 step 5), bounded by count and by bytes
 * (§6, ARCHITECTURE.md "everything a client makes the server keep is bounded").
 *
 * A message is kept in its seq's slot: as the object until it was sent, then — when the
 * transport encodes (`MessageSink.encode`) — as its batch's bytes, the message's range in
 * `bounds`. A few thousand message graphs, or a view object per message, kept alive per busy
 * session cost the garbage collector more than the (rare) decoding on resume. Objects still held
 * when the session detaches are encoded then (`compact`), so a detached session holds bytes it
 * can account for.
 *
 * The slots start small: a short session (a handshake and a few frames) holds a few hundred
 * bytes, not two 4,096-slot arrays (~64 KB) it never fills, and an idle session holds one message
 * (its HandshakeResult) in 4 slots (bench/scale.ts). See `ResumeRing` for how they grow.
 */
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { ServerMessageSchema, type ServerMessage } from "../../gen/mcp/v1/session_pb.js";
import { FRAME_HEADER_BYTES } from "../transport/grpc-frames.js";
import { largeChunkFrame } from "../transport/server-message-bytes.js";

const INITIAL_SLOTS = 4;
/** Slots per segment once the first ones have doubled up to it. */
const SEGMENT_SLOTS = 64;
/**
 * A message sent alone and shorter than this is copied into the ring's arena (see `encoded`):
 * Node's Buffer pool serves allocations under 4 KiB, and a view kept of a pooled frame would pin
 * its 8 KiB slab.
 */
const ARENA_COPY_MAX = 4096;
/** The first arena's size; each next one doubles, up to ARENA_MAX. */
const ARENA_MIN = 256;
const ARENA_MAX = 16 * 1024;

type Slot = ServerMessage | Uint8Array | undefined;

/**
 * Consecutive seqs from `start`: slot i holds seq `start + i`, as the message object or as a range
 * `bounds[2i] .. bounds[2i+1]` of the bytes in the slot. The bounds are a plain array: a
 * Uint32Array's buffer costs ~0.2 KB of bookkeeping besides its bytes (measured, Node 20), and 64
 * segments of 64 slots (4,096 messages) take 64 KB of bounds beside up to 1 MiB of bytes.
 */
interface Segment {
  readonly start: number;
  readonly slots: Slot[];
  readonly bounds: number[];
}

function segment(start: number, n: number): Segment {
  return { start, slots: new Array<Slot>(n), bounds: new Array<number>(2 * n).fill(0) };
}

/**
 * The resume buffer of one session. A class: one per session, its methods on the prototype.
 *
 * Held in segments of consecutive seqs, oldest first: 4 slots, then 8, 16, 32, and 64 each from
 * there on. A new message past the last segment adds one; the oldest segment goes once its last
 * message is dropped. Nothing is ever copied to grow: a ring that doubled and re-placed its slots
 * made every watcher of a context (their sessions grow in step) allocate and copy at the same
 * update — 10–25 ms for 1,000 sessions at each doubling (bench/README.md, December 3).
 */
export class ResumeRing {
  private segments: Segment[] = [];
  /** The seq of the oldest message still held; `last + 1` when none is. */
  private first = 1;
  /** The seq of the newest message put. */
  private last = 0;
  /** Bytes of the encoded messages held (objects not yet encoded count 0 until `compact`). */
  heldBytes = 0;
  /** Where messages sent alone are copied, and how much of it is used. */
  private arena: Uint8Array | undefined = undefined;
  private arenaUsed = 0;

  constructor(
    /** Messages held at most. */
    private readonly maxMessages: number,
    /** Encoded bytes held at most; the oldest messages go first. */
    private readonly maxBytes: number,
  ) {}

  /** The oldest seq a resume can still start after (`lastSeq + 1 >= oldest`). */
  get oldest(): number {
    return this.first;
  }

  /** The segment holding `seq` (one of the held range, or the next to put); searched from the newest. */
  private segmentOf(seq: number): Segment | undefined {
    const segs = this.segments;
    for (let i = segs.length - 1; i >= 0; i--) {
      const g = segs[i]!; // i < length
      if (seq >= g.start) return seq < g.start + g.slots.length ? g : undefined;
    }
    return undefined;
  }

  /** Keeps `msg`, numbered `seq` (one more than the last put). Hot path: no allocation unless a segment is added. */
  put(seq: number, msg: ServerMessage): void {
    let g = this.segments[this.segments.length - 1];
    if (g === undefined || seq >= g.start + g.slots.length) {
      if (this.first > this.last) this.first = seq; // nothing held: the ring starts over here
      const n = g === undefined ? INITIAL_SLOTS : Math.min(SEGMENT_SLOTS, 2 * g.slots.length);
      g = segment(seq, Math.min(n, this.maxMessages));
      this.segments.push(g);
      this.dropSpent();
    }
    this.last = seq;
    const i = seq - g.start;
    const old = g.slots[i];
    if (old instanceof Uint8Array) this.heldBytes -= g.bounds[2 * i + 1]! - g.bounds[2 * i]!;
    g.slots[i] = msg;
    while (this.last - this.first + 1 > this.maxMessages) this.evictOldest();
    // A chunk (bytes output, src/session/chunks.ts) counts against the byte bound from the start:
    // held as an object it would count 0 until sent, and a transport that does not encode
    // (connect-node) would let a long stream's chunks pile up here by count alone.
    if (msg.message.case === "event" && msg.message.value.chunk !== undefined) this.compactLast();
  }

  /**
   * The transport encoded `batch`: message i is `bytes[bounds[2i] .. bounds[2i+1])`. Messages
   * still held as objects are replaced by their bytes, which count against the byte bound.
   */
  encoded(batch: readonly ServerMessage[], bytes: Uint8Array, bounds: readonly number[]): void {
    for (let i = 0; i < batch.length; i++) {
      const m = batch[i]!; // i < length
      const seq = Number(m.seq);
      const g = this.segmentOf(seq);
      const k = g === undefined ? 0 : seq - g.start;
      if (g === undefined || g.slots[k] !== m) continue;
      const start = bounds[2 * i]!;
      const end = bounds[2 * i + 1]!;
      if (batch.length === 1 && end - start < ARENA_COPY_MAX) {
        this.copyToArena(g, k, bytes, start, end);
      } else {
        g.slots[k] = bytes;
        g.bounds[2 * k] = start;
        g.bounds[2 * k + 1] = end;
      }
      this.heldBytes += end - start;
    }
    if (this.heldBytes > this.maxBytes) this.trim();
  }

  /**
   * Keeps a message sent alone as a range of the arena. A watcher's session sends one message at
   * a time: kept as its own buffer (or a view of a pooled frame) each held message cost ~150 B of
   * heap objects that every scavenge copied until they reached the old generation — the scavenge
   * pauses of 1,000 watchers (bench/scale.ts). A full arena is replaced by a new one; the old one
   * lives as long as a message in it is held.
   */
  private copyToArena(g: Segment, k: number, bytes: Uint8Array, start: number, end: number): void {
    const n = end - start;
    let arena = this.arena;
    if (arena === undefined || arena.length - this.arenaUsed < n) {
      arena = this.arena = new Uint8Array(Math.max(n, Math.min(ARENA_MAX, Math.max(ARENA_MIN, 2 * (arena?.length ?? 0)))));
      this.arenaUsed = 0;
    }
    const at = this.arenaUsed;
    arena.set(bytes.subarray(start, end), at);
    this.arenaUsed = at + n;
    g.slots[k] = arena;
    g.bounds[2 * k] = at;
    g.bounds[2 * k + 1] = at + n;
  }

  /** Encodes every message still held as an object (the session detached), then applies the byte bound. */
  compact(): void {
    for (const g of this.segments) {
      for (let k = 0; k < g.slots.length; k++) if (g.start + k >= this.first && g.start + k <= this.last) this.encodeSlot(g, k);
    }
    if (this.heldBytes > this.maxBytes) this.trim();
  }

  /** Encodes the newest message if it is still an object (put while no stream could take it), then applies the byte bound. */
  compactLast(): void {
    const g = this.segmentOf(this.last);
    if (g !== undefined) this.encodeSlot(g, this.last - g.start);
    if (this.heldBytes > this.maxBytes) this.trim();
  }

  /** Replaces a message still held as an object by its encoding, counted in `heldBytes`. */
  private encodeSlot(g: Segment, k: number): void {
    const kept = g.slots[k];
    if (kept === undefined || kept instanceof Uint8Array) return;
    // A large chunk's bytes are a view of the frame the transport then writes as is.
    const bytes = largeChunkFrame(kept)?.subarray(FRAME_HEADER_BYTES) ?? toBinary(ServerMessageSchema, kept);
    g.slots[k] = bytes;
    g.bounds[2 * k] = 0;
    g.bounds[2 * k + 1] = bytes.length;
    this.heldBytes += bytes.length;
  }

  /** Every message after `lastSeq`, in order; undefined when the ring no longer holds them all. */
  after(lastSeq: bigint): ServerMessage[] | undefined {
    if (lastSeq > BigInt(this.last)) return undefined;
    const from = Number(lastSeq) + 1;
    if (from < this.first) return undefined;
    const out: ServerMessage[] = [];
    const segs = this.segments;
    let gi = 0;
    for (let s = from; s <= this.last; s++) {
      while (gi < segs.length && s >= segs[gi]!.start + segs[gi]!.slots.length) gi++;
      const g = segs[gi];
      if (g === undefined || s < g.start) return undefined;
      const k = s - g.start;
      const kept = g.slots[k];
      const m = kept instanceof Uint8Array ? fromBinary(ServerMessageSchema, kept.subarray(g.bounds[2 * k], g.bounds[2 * k + 1])) : kept;
      if (m === undefined || m.seq !== BigInt(s)) return undefined;
      out.push(m);
    }
    return out;
  }

  /** Continues a ring another instance held: `messages` in seq order, the last of them `lastSeq` or before. */
  restore(lastSeq: number, messages: readonly ServerMessage[]): void {
    const keep = messages.slice(-this.maxMessages);
    this.segments = [];
    this.heldBytes = 0;
    this.first = keep.length > 0 ? Number(keep[0]!.seq) : lastSeq + 1;
    this.last = lastSeq;
    if (this.first <= lastSeq) {
      const g = segment(this.first, lastSeq - this.first + 1);
      this.segments.push(g);
      for (const m of keep) g.slots[Number(m.seq) - g.start] = m;
    }
  }

  /** Drops the oldest messages until the bytes fit (a resume from before them then finds the session expired). */
  private trim(): void {
    while (this.heldBytes > this.maxBytes && this.first <= this.last) this.evictOldest();
  }

  private evictOldest(): void {
    this.dropSpent();
    const g = this.segments[0];
    if (g === undefined || this.first > this.last) return;
    const k = this.first - g.start;
    if (g.slots[k] instanceof Uint8Array) this.heldBytes -= g.bounds[2 * k + 1]! - g.bounds[2 * k]!;
    g.slots[k] = undefined;
    this.first++;
    this.dropSpent();
  }

  /** Drops the oldest segments that hold nothing any more; the newest stays for the next put. */
  private dropSpent(): void {
    const segs = this.segments;
    while (segs.length > 1 && this.first >= segs[0]!.start + segs[0]!.slots.length) segs.shift();
  }
}
