/**
 * The client's session stream over node:http2 with gRPC framing, without per-message promise
 * plumbing (ARCHITECTURE.md "The session's hot path"): every message sent in one tick goes out in
 * one `write()`, and frames are decoded in the stream's `data` handler and dispatched at once.
 * Unary calls have their own transport (h2-grpc-transport.ts).
 */
import { constants, type ClientHttp2Stream, type IncomingHttpHeaders } from "node:http2";
import { Code, ConnectError } from "@connectrpc/connect";
import { ClientMessageSchema, type ClientMessage } from "../../gen/mcp/v1/session_pb.js";
import { createFrameReader, encodeFrames } from "../transport/grpc-frames.js";
import { VERSION } from "../version.js";
import { createH2Channel, type H2Channel } from "./h2-channel.js";
import { frameRefusalError, httpStatusError, trailerError } from "./grpc-trailers.js";
import { createServerMessageDecoder } from "./server-message-decoder.js";
import type { OpenSessionStream, SessionStream } from "./session-stream.js";

/** Options of `h2SessionStream`. */
export interface H2SessionStreamOptions {
  /** The server, `http://…` (h2c with prior knowledge) or `https://…` (TLS, ALPN h2). */
  baseUrl: string;
  /** Extra request headers, e.g. `authorization`. */
  headers?: Record<string, string>;
  /**
   * Largest ServerMessage accepted, in bytes.
   * @default 4 MiB + 1 KiB (the server's default max_message_bytes and some room)
   */
  readMaxBytes?: number;
  /**
   * The connections the streams share (h2-channel.ts); it must be for the same origin.
   * @default a channel of its own with the default maxStreamsPerConnection
   */
  channel?: H2Channel;
}

const PATH = "/mcp.v1.SessionService/Connect";
/**
 * Sends this many queued messages at once instead of waiting for the end of the tick, so the
 * server starts on the first ones while this side still produces the rest (measured: +5–10% at
 * 64 in flight; bench/README.md).
 */
const FLUSH_AT = 16;

/** Opens each session stream as one stream of a shared HTTP/2 connection (`options.channel`). */
export function h2SessionStream(options: H2SessionStreamOptions): OpenSessionStream {
  const url = new URL(options.baseUrl);
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new TypeError(`baseUrl must be an http:// or https:// URL, got ${url.protocol}`);
  }
  const path = url.pathname.replace(/\/+$/, "") + PATH;
  const origin = url.origin;
  const readMaxBytes = options.readMaxBytes ?? 4 * 1024 * 1024 + 1024;
  const extra = options.headers ?? {};
  const channel = options.channel ?? createH2Channel({ origin });
  // Shared by every stream opened here: a change watched by many sessions is decoded once.
  const decode = createServerMessageDecoder();

  return (handlers) => {
    let ended = false; // our outbound side
    let over = false; // handlers.end was called
    let closedByUs = false;
    let failure: unknown;
    let out: ClientMessage[] = [];
    let flushScheduled = false;
    let holds = 0;

    const opened = channel.open({
      ":method": "POST",
      ":path": path,
      "content-type": "application/grpc+proto",
      te: "trailers",
      "user-agent": `mcp-client-ts/${VERSION}`,
      ...extra,
    });
    const stream: ClientHttp2Stream = opened.stream;
    stream.on("error", (e) => {
      failure ??= new ConnectError(e.message, Code.Unavailable, undefined, undefined, e);
    });

    const finish = () => {
      if (over) return;
      over = true;
      ended = true;
      out = [];
      opened.release();
      handlers.end(closedByUs ? undefined : failure);
    };

    stream.on("response", (headers: IncomingHttpHeaders) => {
      const status = headers[":status"] as unknown as number | undefined; // node:http2 gives :status as a number
      if (status !== 200) {
        failure ??= httpStatusError(status, origin + path);
        // Not a gRPC answer (a proxy's 413, 502, …): end now. close() alone waits for our pending
        // writes to drain, which a peer that stopped reading never lets happen (h2-grpc-transport.ts).
        stream.close(constants.NGHTTP2_CANCEL);
        stream.destroy();
        return;
      }
      // A "trailers-only" response carries the RPC's status in its headers.
      if (headers["grpc-status"] !== undefined) failure ??= trailerError(headers);
    });
    stream.on("trailers", (trailers: IncomingHttpHeaders) => {
      failure ??= trailerError(trailers);
    });

    const frames = createFrameReader(
      readMaxBytes,
      (bytes) => {
        let m;
        try {
          m = decode(bytes);
        } catch (e) {
          failure ??= new ConnectError(`could not decode a ServerMessage: ${e instanceof Error ? e.message : String(e)}`, Code.Internal, undefined, undefined, e);
          stream.close(constants.NGHTTP2_CANCEL);
          return false;
        }
        handlers.message(m);
        return !over;
      },
      (e) => {
        failure ??= frameRefusalError(e, readMaxBytes);
        stream.close(constants.NGHTTP2_CANCEL);
      },
    );
    stream.on("data", (chunk: Buffer) => {
      if (!over) frames.push(chunk);
    });

    // The server ended the RPC (trailers): nothing we send can matter now. Ending our side too
    // lets node close the stream at once instead of when the server resets the half-open stream.
    stream.once("end", () => {
      if (!stream.writableEnded) stream.end();
    });
    stream.once("close", () => {
      const connectionError = opened.connectionError();
      if (failure === undefined && connectionError instanceof Error) {
        failure = new ConnectError(connectionError.message, Code.Unavailable, undefined, undefined, connectionError);
      }
      if (failure === undefined && stream.rstCode !== undefined && stream.rstCode !== constants.NGHTTP2_NO_ERROR) {
        failure = new ConnectError(`the stream was reset (HTTP/2 error code ${stream.rstCode})`, Code.Canceled);
      }
      finish();
    });

    function flush(): void {
      flushScheduled = false;
      if (ended || out.length === 0) return;
      const batch = out;
      out = [];
      stream.write(encodeFrames(ClientMessageSchema, batch));
    }

    const self: SessionStream = {
      send(m) {
        if (ended) return;
        out.push(m);
        if (out.length >= FLUSH_AT) return flush();
        if (!flushScheduled) {
          flushScheduled = true;
          // After the current chain of promise continuations: every send of this tick in one write.
          process.nextTick(flush);
        }
      },
      get ended() {
        return ended;
      },
      close(broken = false) {
        if (over) return;
        // Given up on for silence: the next stream (this session's reconnect) goes elsewhere.
        if (broken) opened.suspect();
        flush();
        ended = true;
        closedByUs = true;
        if (!stream.destroyed) stream.close(constants.NGHTTP2_CANCEL);
      },
      hold() {
        // pause() stops 'data' events; unread bytes are then not acknowledged (no WINDOW_UPDATE),
        // so the server's writes on this stream stop once its window is used up — this stream
        // only: other sessions are other streams of the connection (docs/streams.md).
        if (holds++ === 0) stream.pause();
        let released = false;
        return () => {
          if (released) return;
          released = true;
          if (--holds === 0 && !over) stream.resume();
        };
      },
    };
    return self;
  };
}
