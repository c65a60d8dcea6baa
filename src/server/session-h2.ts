/**
 * The session stream's fast path on node:http2 (ARCHITECTURE.md "The session's hot path").
 *
 * gRPC requests for `mcp.v1.SessionService/Connect` over HTTP/2 are served here directly, on the
 * raw node:http2 stream (the listener offers it before node's request/response API sees it):
 * frames (gRPC length-prefixed messages: 1 flag byte + uint32 BE length) are cut from the
 * stream's `data` events and handed to `conn.receive()` synchronously, at most FRAMES_PER_TURN
 * per event-loop turn, and each batch the session flushes per tick is encoded into ONE buffer and
 * written with ONE `stream.write()`. Everything else —
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
import { ClientMessageSchema, ServerMessageSchema, type ClientMessage } from "../../gen/mcp/v1/session_pb.js";
import { McpError } from "../errors.js";
import { openConnection, type Connection } from "../session/connection.js";
import type { McpCore } from "../session/core.js";
import type { MessageSink } from "../session/session.js";
import { GRPC_HEADERS, OK_TRAILERS, frameRefusal, isGrpcIdentityPost, respondError } from "./grpc-h2.js";
import { streamFacts, type StreamHandler } from "./listener.js";
import { createFrameReader, encodeFrameBatch, encodeFrames } from "../transport/grpc-frames.js";
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

function serveSession(
  core: McpCore,
  stream: ServerHttp2Stream,
  headers: IncomingHttpHeaders,
  maxMessageBytes: number,
  maxOutboundMessages: number,
  slowConsumerTimeoutMs: number,
): void {
  // Errors of a reset stream surface as 'close'; an unhandled 'error' would crash the process.
  stream.on("error", () => {});
  // A client may reset the stream in the packet that opened it: node emits 'stream' a tick later,
  // on a stream already destroyed, where respond() throws. Nothing was started: nothing to end.
  if (stream.destroyed || stream.closed) return;
  const facts = streamFacts(stream);
  if (facts.overLimit) {
    respondError(stream, new McpError("too_many_connections", "the server is at its connection limit: retry later", { retryAfterMs: 1000 }));
    return;
  }
  stream.respond(GRPC_HEADERS, { waitForTrailers: true });
  stream.once("wantTrailers", () => stream.sendTrailers(OK_TRAILERS));

  let finished = false;
  let queuedMessages = 0;
  let drainWaiters: (() => void)[] = [];
  let paused = false;
  let giveUp: ReturnType<typeof setTimeout> | undefined;
  const highWaterMessages = maxOutboundMessages;

  const releaseDrain = () => {
    if (drainWaiters.length === 0) return;
    if (!finished && (queuedMessages > highWaterMessages / 2 || stream.writableLength > HIGH_WATER_BYTES / 2)) return;
    const ws = drainWaiters;
    drainWaiters = [];
    for (const w of ws) w();
  };

  /** Ends the RPC with grpc-status 0: an in-stream Error already told the client why, if any. */
  const finish = () => {
    if (finished) return;
    finished = true;
    releaseDrain();
    if (stream.destroyed || stream.closed) return;
    stream.end();
    // A client that reads nothing never takes the rest: reset the stream after a grace period.
    giveUp = setTimeout(() => closeStream(NGHTTP2_CANCEL), Math.max(slowConsumerTimeoutMs, 1000));
    giveUp.unref();
    stream.once("finish", () => {
      // Everything went out; a client that keeps its side open gets a second to end it.
      clearTimeout(giveUp);
      giveUp = setTimeout(() => closeStream(NGHTTP2_NO_ERROR), 1000);
      giveUp.unref();
    });
  };
  const closeStream = (code: number) => {
    if (!stream.destroyed && !stream.closed) stream.close(code);
  };

  const sink: MessageSink = {
    // A batch of one (an idle session's message, a watcher's change) skips the batch wrapper.
    encode: (batch) => (batch.length === 1 ? encodeOneServerMessage(batch[0]!) : encodeFrameBatch(ServerMessageSchema, batch)),
    write(batch, encoded) {
      if (finished || batch.length === 0) return true;
      if (stream.destroyed || stream.writableEnded) return true;
      const n = batch.length;
      queuedMessages += n;
      stream.write(encoded?.wire ?? encodeFrames(ServerMessageSchema, batch), () => {
        queuedMessages -= n;
        releaseDrain();
      });
      if (queuedMessages < highWaterMessages && stream.writableLength < HIGH_WATER_BYTES) return true;
      // The session marks itself congested right after this returns; pause reading then.
      process.nextTick(hold);
      return false;
    },
    drain() {
      if (finished || (queuedMessages <= highWaterMessages / 2 && stream.writableLength <= HIGH_WATER_BYTES / 2)) {
        return Promise.resolve();
      }
      return new Promise((resolve) => drainWaiters.push(resolve));
    },
    close: finish,
  };

  const conn: Connection = openConnection(
    core,
    {
      secure: facts.secure,
      authorization: headers.authorization ?? null,
      remoteAddress: facts.remoteAddress,
      protocol: "grpc",
      traceparent: headerValue(headers.traceparent),
      tracestate: headerValue(headers.tracestate),
    },
    sink,
  );

  // Reading (PROTOCOL.md §6, ARCHITECTURE.md "hot path"): at most FRAMES_PER_TURN frames per
  // event-loop turn. What a large chunk holds beyond that waits for the next turn, so the answers
  // to the first frames reach the socket while the rest are decoded — the client works on them
  // meanwhile instead of both sides taking turns on whole batches. While frames wait, or the
  // client's queue is full, the request is paused: HTTP/2 flow control holds the client's writes.
  let turn: ReturnType<typeof setImmediate> | undefined;
  let requestEnded = false;

  function readTurn(): void {
    turn = undefined;
    if (finished) return;
    if (conn.congested) return hold();
    if (frames.read(FRAMES_PER_TURN)) return nextTurn();
    if (requestEnded) return endOfRequest();
    if (!paused) stream.resume();
  }

  function nextTurn(): void {
    stream.pause();
    turn = setImmediate(readTurn);
  }

  /** Stops reading until the client takes its messages (dropped with slow_consumer if it does not). */
  function hold(): void {
    if (paused || finished || !conn.congested) return;
    paused = true;
    stream.pause();
    conn.waitWritable().then(
      () => {
        paused = false;
        if (turn === undefined) readTurn();
      },
      () => {},
    );
  }

  function fail(err: McpError): void {
    conn.end(err);
    finish();
    // Stop reading; HTTP/2 flow control holds the rest of the client's body.
    stream.pause();
  }

  const frames = createFrameReader(
    maxMessageBytes,
    (bytes) => {
      let msg: ClientMessage;
      try {
        msg = fromBinary(ClientMessageSchema, bytes);
      } catch (e) {
        fail(new McpError("invalid_message", `could not decode a ClientMessage: ${e instanceof Error ? e.message : String(e)}`, { cause: e }));
        return false;
      }
      conn.receive(msg);
      return !finished;
    },
    (e) => fail(frameRefusal(e, maxMessageBytes)),
  );

  stream.on("data", (chunk: Buffer) => {
    if (finished) return;
    if (turn !== undefined || paused) {
      frames.push(chunk, 0); // a turn is due: it reads in order
      return;
    }
    if (frames.push(chunk, FRAMES_PER_TURN)) nextTurn();
    else if (conn.congested) hold();
  });

  /**
   * The client half-closed and every frame was read: everything it sent is answered on this
   * stream and its watches run until it cancels (Connection.endRequests), then the RPC ends with
   * OK (the session stays for resume, §4 step 5).
   */
  function endOfRequest(): void {
    if (finished) return;
    if (frames.held > 0) {
      return fail(new McpError("invalid_message", `the request ended inside a frame (${frames.held} bytes of a ${frames.need}-byte frame)`));
    }
    void conn.endRequests().then(finish);
  }

  stream.on("end", () => {
    // Node also ends a stream that nghttp2 closed without the client's END_STREAM, when its
    // connection went: a lost connection ('close' below detaches the session for resume), not a
    // half-close — a frame cut there is not a malformed request that ends the session.
    if (finished || stream.closed) return;
    requestEnded = true;
    // Frames still waiting for their turn are read first.
    if (turn === undefined && !paused) endOfRequest();
  });

  stream.once("close", () => {
    // Client cancel, reset, or the end of a finished RPC: detach the session, keep it for resume.
    clearTimeout(giveUp);
    clearImmediate(turn);
    conn.end();
    finished = true;
    releaseDrain();
  });
}
