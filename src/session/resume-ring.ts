/**
 * The messages a session keeps for resume (PROTOCOL.md §4 step 5), bounded by count and by bytes
 * (§6, ARCHITECTURE.md "everything a client makes the server keep is bounded").
 *
 * A message is kept at `slot(seq)`: as the object until it was sent, then — when the transport
 * encodes (`MessageSink.encode`) — as its batch's bytes, the message's range in `bounds`. A few
 * thousand message graphs, or a view object per message, kept alive per busy session cost the
 * garbage collector more than the (rare) decoding on resume. Objects still held when the session
 * detaches are encoded then (`compact`), so a detached session holds bytes it can account for.
 *
 * The ring starts small and doubles up to its count bound: a short session (a handshake and a
 * few frames) holds a few hundred bytes, not two 4,096-slot arrays (~64 KB) it never fills. An
 * idle session holds one message (its HandshakeResult): 4 slots, not 16 (bench/scale.ts).
 */
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { ServerMessageSchema, type ServerMessage } from "../../gen/mcp/v1/session_pb.js";

const INITIAL_SLOTS = 4;
/**
 * A message sent alone and shorter than this is copied into the ring's arena (see `encoded`):
 * Node's Buffer pool serves allocations under 4 KiB, and a view kept of a pooled frame would pin
 * its 8 KiB slab.
 */
const ARENA_COPY_MAX = 4096;
/** The first arena's size; each next one doubles, up to ARENA_MAX. */
const ARENA_MIN = 256;
const ARENA_MAX = 16 * 1024;

/**
 * The bounds of `n` slots. A small ring's are a plain array: a Uint32Array's buffer costs ~0.2 KB
 * of bookkeeping besides its bytes (measured, Node 20), more than a few slots' bounds; a large
 * ring's are a Uint32Array, half the bytes of an array of numbers.
 */
function newBounds(n: number): number[] | Uint32Array {
  return n <= 64 ? new Array<number>(2 * n).fill(0) : new Uint32Array(2 * n);
}

/** The resume buffer of one session. A class: one per session, its methods on the prototype. */
export class ResumeRing {
  private slots: (ServerMessage | Uint8Array | undefined)[];
  private bounds: number[] | Uint32Array;
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
  ) {
    const n = Math.min(INITIAL_SLOTS, maxMessages);
    this.slots = new Array<ServerMessage | Uint8Array | undefined>(n);
    this.bounds = newBounds(n);
  }

  /** The oldest seq a resume can still start after (`lastSeq + 1 >= oldest`). */
  get oldest(): number {
    return this.first;
  }

  /** Keeps `msg`, numbered `seq` (one more than the last put). Hot path: no allocation unless the ring grows. */
  put(seq: number, msg: ServerMessage): void {
    this.last = seq;
    if (seq - this.first >= this.slots.length) {
      if (this.slots.length < this.maxMessages) this.grow();
      else this.evictOldest();
    }
    const slot = seq % this.slots.length;
    const old = this.slots[slot];
    if (old instanceof Uint8Array) this.heldBytes -= this.bounds[2 * slot + 1]! - this.bounds[2 * slot]!;
    this.slots[slot] = msg;
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
    const len = this.slots.length;
    for (let i = 0; i < batch.length; i++) {
      const m = batch[i]!; // i < length
      const slot = Number(m.seq) % len;
      if (this.slots[slot] !== m) continue;
      const start = bounds[2 * i]!;
      const end = bounds[2 * i + 1]!;
      if (batch.length === 1 && end - start < ARENA_COPY_MAX) {
        this.copyToArena(slot, bytes, start, end);
      } else {
        this.slots[slot] = bytes;
        this.bounds[2 * slot] = start;
        this.bounds[2 * slot + 1] = end;
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
  private copyToArena(slot: number, bytes: Uint8Array, start: number, end: number): void {
    const n = end - start;
    let arena = this.arena;
    if (arena === undefined || arena.length - this.arenaUsed < n) {
      arena = this.arena = new Uint8Array(Math.max(n, Math.min(ARENA_MAX, Math.max(ARENA_MIN, 2 * (arena?.length ?? 0)))));
      this.arenaUsed = 0;
    }
    const at = this.arenaUsed;
    arena.set(bytes.subarray(start, end), at);
    this.arenaUsed = at + n;
    this.slots[slot] = arena;
    this.bounds[2 * slot] = at;
    this.bounds[2 * slot + 1] = at + n;
  }

  /** Encodes every message still held as an object (the session detached), then applies the byte bound. */
  compact(): void {
    const len = this.slots.length;
    for (let s = this.first; s <= this.last; s++) {
      const slot = s % len;
      this.encodeSlot(slot);
    }
    if (this.heldBytes > this.maxBytes) this.trim();
  }

  /** Encodes the newest message if it is still an object (put while no stream could take it), then applies the byte bound. */
  compactLast(): void {
    this.encodeSlot(this.last % this.slots.length);
    if (this.heldBytes > this.maxBytes) this.trim();
  }

  /** Replaces a message still held as an object by its encoding, counted in `heldBytes`. */
  private encodeSlot(slot: number): void {
    const kept = this.slots[slot];
    if (kept === undefined || kept instanceof Uint8Array) return;
    const bytes = toBinary(ServerMessageSchema, kept);
    this.slots[slot] = bytes;
    this.bounds[2 * slot] = 0;
    this.bounds[2 * slot + 1] = bytes.length;
    this.heldBytes += bytes.length;
  }

  /** Every message after `lastSeq`, in order; undefined when the ring no longer holds them all. */
  after(lastSeq: bigint): ServerMessage[] | undefined {
    if (lastSeq > BigInt(this.last)) return undefined;
    const from = Number(lastSeq) + 1;
    if (from < this.first) return undefined;
    const out: ServerMessage[] = [];
    const len = this.slots.length;
    for (let s = from; s <= this.last; s++) {
      const slot = s % len;
      const kept = this.slots[slot];
      const m = kept instanceof Uint8Array ? fromBinary(ServerMessageSchema, kept.subarray(this.bounds[2 * slot], this.bounds[2 * slot + 1])) : kept;
      if (m === undefined || m.seq !== BigInt(s)) return undefined;
      out.push(m);
    }
    return out;
  }

  /** Continues a ring another instance held: `messages` in seq order, the last of them `lastSeq` or before. */
  restore(lastSeq: number, messages: readonly ServerMessage[]): void {
    while (this.slots.length < Math.min(messages.length, this.maxMessages)) this.grow();
    this.first = lastSeq + 1;
    this.last = lastSeq;
    const keep = messages.slice(-this.slots.length);
    if (keep.length > 0) this.first = Number(keep[0]!.seq);
    for (const m of keep) this.slots[Number(m.seq) % this.slots.length] = m;
  }

  /** Drops the oldest messages until the bytes fit (a resume from before them then finds the session expired). */
  private trim(): void {
    while (this.heldBytes > this.maxBytes && this.first <= this.last) this.evictOldest();
  }

  private evictOldest(): void {
    const slot = this.first % this.slots.length;
    if (this.slots[slot] instanceof Uint8Array) this.heldBytes -= this.bounds[2 * slot + 1]! - this.bounds[2 * slot]!;
    this.slots[slot] = undefined;
    this.first++;
  }

  /** Doubles the slots (up to the count bound), re-placing what is held. */
  private grow(): void {
    const n = Math.min(this.slots.length * 2, this.maxMessages);
    const slots = new Array<ServerMessage | Uint8Array | undefined>(n);
    const bounds = newBounds(n);
    const len = this.slots.length;
    for (let s = this.first; s < this.last; s++) {
      const from = s % len;
      const to = s % n;
      slots[to] = this.slots[from];
      bounds[2 * to] = this.bounds[2 * from]!;
      bounds[2 * to + 1] = this.bounds[2 * from + 1]!;
    }
    this.slots = slots;
    this.bounds = bounds;
  }
}
