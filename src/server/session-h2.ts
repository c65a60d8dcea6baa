/**
 * The session stream's fast path on node:http2 (ARCHITECTURE.md "The session's hot path").
 *
 * gRPC requests for `mcp.v1.SessionService/Connect` over HTTP/2 are served here directly, on the
 * raw node:http2 stream (the listener offers it before node's request/response API sees it):
 * frames (gRPC length-prefixed messages: 1 flag byte + uint32 BE length) are cut from the
 * stream's `data` events, decoded together (the small frames of one read with one `fromBinary`)
 * and handed to `conn.receive()` synchronously, at most FRAMES_PER_TURN per event-loop turn, and
 * each batch the session flushes per tick is encoded into ONE buffer and written with ONE
 * `stream.write()`. Everything else —
 * the Connect protocol, gRPC-Web, HTTP/1.1, every other RPC — still goes through connect-node.
 * The core is the same one: only the transport plumbing differs.
 *
 * Backpressure (PROTOCOL.md §6): the sink reports congestion when the bytes or messages not yet
 * handed to the socket pass a high-water mark; while the connection is congested the request side
 * is paused (so HTTP/2 flow control stops the client from sending), and a client that stays
 * congested is dropped with `slow_consumer` by the connection.
 */
import type { IncomingHttpHeaders, ServerHttp2Stream } from "node:http2";
import { fromBinary } from "@bufbuild/protobuf";
import { ClientMessageSchema, ServerMessageSchema, type ClientMessage, type ServerMessage } from "../../gen/mcp/v1/session_pb.js";
import { McpError } from "../errors.js";
import { openConnection, type Connection } from "../session/connection.js";
import type { McpCore } from "../session/core.js";
import type { EncodedBatch, MessageSink } from "../session/session.js";
import { GRPC_HEADERS, OK_TRAILERS, frameRefusal, isGrpcIdentityPost, respondError } from "./grpc-h2.js";
import { streamFacts, type StreamHandler } from "./listener.js";
import { createFrameReader, decodeFrameRun, encodeFrameBatch, encodeFrames, isFrameRun, type FrameReader } from "../transport/grpc-frames.js";
import { encodeOneServerMessage } from "../transport/server-message-bytes.js";
import { headerValue } from "../observability/tracing.js";

/** The HTTP/2 path of the session stream (PROTOCOL.md §2). */
export const SESSION_CONNECT_PATH = "/mcp.v1.SessionService/Connect";

const NGHTTP2_NO_ERROR = 0x0;
const NGHTTP2_CANCEL = 0x8;

/**
 * Frames read per event-loop turn. Measured with 64 echo calls in flight (bench/, 2 cores): 8 →
 * 124k calls/s, 16 → 141k, 32 → 130k, unlimited → 106k.
 */
const FRAMES_PER_TURN = 16;

/** Bytes written but not yet taken by the socket before the sink reports congestion. */
const HIGH_WATER_BYTES = 1024 * 1024;

/**
 * Returns a stream handler that serves the session stream when the request is gRPC over HTTP/2
 * with identity encoding, and returns false (untouched) for anything else.
 */
export function createSessionH2Handler(core: McpCore): StreamHandler {
  const opts = core.deps.options;
  return (stream, headers) => {
    if (!isGrpcIdentityPost(headers, SESSION_CONNECT_PATH)) return false;
    serveSession(core, stream, headers, opts.maxMessageBytes, opts.maxOutboundMessages, opts.slowConsumerTimeoutMs);
    return true;
  };
}

/** Node's ServerHttp2Stream may emit 'error' after a reset: handled (as 'close') so it cannot crash the process. */
function ignoreError(): void {}

function sendOkTrailers(this: ServerHttp2Stream): void {
  this.sendTrailers(OK_TRAILERS);
}

function serveSession(
  core: McpCore,
  stream: ServerHttp2Stream,
  headers: IncomingHttpHeaders,
  maxMessageBytes: number,
  maxOutboundMessages: number,
  slowConsumerTimeoutMs: number,
): void {
  // Errors of a reset stream surface as 'close'; an unhandled 'error' would crash the process.
  stream.on("error", ignoreError);
  // A client may reset the stream in the packet that opened it: node emits 'stream' a tick later,
  // on a stream already destroyed, where respond() throws. Nothing was started: nothing to end.
  if (stream.destroyed || stream.closed) return;
  const facts = streamFacts(stream);
  if (facts.overLimit) {
    respondError(stream, new McpError("too_many_connections", "the server is at its connection limit: retry later", { retryAfterMs: 1000 }));
    return;
  }
  stream.respond(GRPC_HEADERS, { waitForTrailers: true });
  stream.once("wantTrailers", sendOkTrailers);
  new SessionStream(core, stream, headers, facts, maxMessageBytes, maxOutboundMessages, slowConsumerTimeoutMs);
}

/**
 * One served session stream: the sink the session writes to, and the reading of the client's
 * frames. A class, not closures in `serveSession`: an idle session costs one object and its
 * fields, its methods on one prototype (bench/scale.ts, idle sessions).
 */
class SessionStream implements MessageSink {
  private finished = false;
  private queuedMessages = 0;
  private drainWaiters: (() => void)[] | undefined = undefined;
  private paused = false;
  private giveUp: ReturnType<typeof setTimeout> | undefined = undefined;
  // Reading (PROTOCOL.md §6, ARCHITECTURE.md "hot path"): at most FRAMES_PER_TURN frames per
  // event-loop turn. What a large chunk holds beyond that waits for the next turn, so the answers
  // to the first frames reach the socket while the rest are decoded — the client works on them
  // meanwhile instead of both sides taking turns on whole batches. While frames wait, or the
  // client's queue is full, the request is paused: HTTP/2 flow control holds the client's writes.
  private turn: ReturnType<typeof setImmediate> | undefined = undefined;
  private requestEnded = false;
  private readonly conn: Connection;
  private readonly frames: FrameReader;
  /** The frames of the read in progress, decoded together once the reader returns (`decodeCut`). */
  private readonly cut: Uint8Array[] = [];

  constructor(
    core: McpCore,
    private readonly stream: ServerHttp2Stream,
    headers: IncomingHttpHeaders,
    facts: ReturnType<typeof streamFacts>,
    private readonly maxMessageBytes: number,
    private readonly highWaterMessages: number,
    private readonly slowConsumerTimeoutMs: number,
  ) {
    this.conn = openConnection(
      core,
      {
        secure: facts.secure,
        authorization: headers.authorization ?? null,
        remoteAddress: facts.remoteAddress,
        protocol: "grpc",
        traceparent: headerValue(headers.traceparent),
        tracestate: headerValue(headers.tracestate),
      },
      this,
    );
    this.frames = createFrameReader(
      maxMessageBytes,
      (bytes) => this.cut.push(bytes) > 0,
      (e) => {
        // The frames before the refused one count, in order.
        this.decodeCut();
        if (!this.finished) this.fail(frameRefusal(e, this.maxMessageBytes));
      },
    );
    stream.on("data", (chunk: Buffer) => this.data(chunk));
    stream.on("end", () => this.requestEnd());
    stream.once("close", () => this.closed());
  }

  // MessageSink
  /** A batch of one (an idle session's message, a watcher's change) skips the batch wrapper. */
  encode(batch: readonly ServerMessage[]): EncodedBatch {
    return batch.length === 1 ? encodeOneServerMessage(batch[0]!) : encodeFrameBatch(ServerMessageSchema, batch);
  }

  write(batch: readonly ServerMessage[], encoded?: EncodedBatch): boolean {
    if (this.finished || batch.length === 0) return true;
    const stream = this.stream;
    if (stream.destroyed || stream.writableEnded) return true;
    const n = batch.length;
    this.queuedMessages += n;
    stream.write(encoded?.wire ?? encodeFrames(ServerMessageSchema, batch), () => {
      this.queuedMessages -= n;
      this.releaseDrain();
    });
    if (this.queuedMessages < this.highWaterMessages && stream.writableLength < HIGH_WATER_BYTES) return true;
    // The session marks itself congested right after this returns; pause reading then.
    process.nextTick(holdStream, this);
    return false;
  }

  drain(): Promise<void> {
    if (this.finished || (this.queuedMessages <= this.highWaterMessages / 2 && this.stream.writableLength <= HIGH_WATER_BYTES / 2)) {
      return Promise.resolve();
    }
    return new Promise((resolve) => (this.drainWaiters ??= []).push(resolve));
  }

  /** Ends the RPC with grpc-status 0: an in-stream Error already told the client why, if any. */
  close(): void {
    if (this.finished) return;
    this.finished = true;
    this.releaseDrain();
    const stream = this.stream;
    if (stream.destroyed || stream.closed) return;
    stream.end();
    // A client that reads nothing never takes the rest: reset the stream after a grace period.
    this.giveUp = setTimeout(closeStream, Math.max(this.slowConsumerTimeoutMs, 1000), stream, NGHTTP2_CANCEL);
    this.giveUp.unref();
    stream.once("finish", () => {
      // Everything went out; a client that keeps its side open gets a second to end it.
      clearTimeout(this.giveUp);
      this.giveUp = setTimeout(closeStream, 1000, stream, NGHTTP2_NO_ERROR);
      this.giveUp.unref();
    });
  }

  private releaseDrain(): void {
    const ws = this.drainWaiters;
    if (ws === undefined || ws.length === 0) return;
    if (!this.finished && (this.queuedMessages > this.highWaterMessages / 2 || this.stream.writableLength > HIGH_WATER_BYTES / 2)) return;
    this.drainWaiters = undefined;
    for (const w of ws) w();
  }

  readTurn(): void {
    this.turn = undefined;
    if (this.finished) return;
    if (this.conn.congested) return this.hold();
    const more = this.frames.read(FRAMES_PER_TURN);
    this.decodeCut();
    if (this.finished) return;
    if (more) return this.nextTurn();
    if (this.requestEnded) return this.endOfRequest();
    if (!this.paused) this.stream.resume();
  }

  private nextTurn(): void {
    this.stream.pause();
    this.turn = setImmediate(readTurn, this);
  }

  /** Stops reading until the client takes its messages (dropped with slow_consumer if it does not). */
  hold(): void {
    if (this.paused || this.finished || !this.conn.congested) return;
    this.paused = true;
    this.stream.pause();
    this.conn.waitWritable().then(
      () => {
        this.paused = false;
        if (this.turn === undefined) this.readTurn();
      },
      () => {},
    );
  }

  private fail(err: McpError): void {
    this.conn.end(err);
    this.close();
    // Stop reading; HTTP/2 flow control holds the rest of the client's body.
    this.stream.pause();
  }

  /**
   * Decodes and hands on the frames the reader cut in this read, in order, stopping where the
   * stream ends. A run of small frames is decoded with one `fromBinary` (`decodeFrameRun`); if
   * that fails, one by one, so the messages before the bad frame still count and the error is the
   * bad frame's.
   */
  private decodeCut(): void {
    const cut = this.cut;
    if (cut.length === 0) return;
    let messages: ClientMessage[] | undefined;
    if (isFrameRun(cut)) {
      try {
        messages = decodeFrameRun(ClientMessageSchema, cut);
      } catch {
        messages = undefined;
      }
    }
    if (messages !== undefined) {
      for (const m of messages) {
        this.conn.receive(m);
        if (this.finished) break;
      }
      messages.length = 0;
    } else {
      for (const bytes of cut) if (!this.frame(bytes)) break;
    }
    cut.length = 0;
  }

  private frame(bytes: Uint8Array): boolean {
    let msg: ClientMessage;
    try {
      msg = fromBinary(ClientMessageSchema, bytes);
    } catch (e) {
      this.fail(new McpError("invalid_message", `could not decode a ClientMessage: ${e instanceof Error ? e.message : String(e)}`, { cause: e }));
      return false;
    }
    this.conn.receive(msg);
    return !this.finished;
  }

  private data(chunk: Buffer): void {
    if (this.finished) return;
    if (this.turn !== undefined || this.paused) {
      this.frames.push(chunk, 0); // a turn is due: it reads in order
      return;
    }
    const more = this.frames.push(chunk, FRAMES_PER_TURN);
    this.decodeCut();
    if (this.finished) return;
    if (more) this.nextTurn();
    else if (this.conn.congested) this.hold();
  }

  /**
   * The client half-closed and every frame was read: everything it sent is answered on this
   * stream and its watches run until it cancels (Connection.endRequests), then the RPC ends with
   * OK (the session stays for resume, §4 step 5).
   */
  private endOfRequest(): void {
    if (this.finished) return;
    const frames = this.frames;
    if (frames.held > 0) {
      return this.fail(new McpError("invalid_message", `the request ended inside a frame (${frames.held} bytes of a ${frames.need}-byte frame)`));
    }
    void this.conn.endRequests().then(() => this.close());
  }

  private requestEnd(): void {
    // Node also ends a stream that nghttp2 closed without the client's END_STREAM, when its
    // connection went: a lost connection ('close' below detaches the session for resume), not a
    // half-close — a frame cut there is not a malformed request that ends the session.
    if (this.finished || this.stream.closed) return;
    this.requestEnded = true;
    // Frames still waiting for their turn are read first.
    if (this.turn === undefined && !this.paused) this.endOfRequest();
  }

  private closed(): void {
    // Client cancel, reset, or the end of a finished RPC: detach the session, keep it for resume.
    clearTimeout(this.giveUp);
    clearImmediate(this.turn);
    this.conn.end();
    this.finished = true;
    this.releaseDrain();
  }
}

// Timer and tick callbacks as module functions, given their object: no closures per stream.
function closeStream(stream: ServerHttp2Stream, code: number): void {
  if (!stream.destroyed && !stream.closed) stream.close(code);
}

function readTurn(s: SessionStream): void {
  s.readTurn();
}

function holdStream(s: SessionStream): void {
  s.hold();
}
