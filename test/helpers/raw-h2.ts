/**
 * The session stream spoken with nothing but node:http2 and the schema (as an outsider would):
 * gRPC frames of ClientMessages out, ServerMessages in. For tests that open thousands of
 * sessions on one connection, or send what no well-behaved client sends.
 */
import { connect, constants, type ClientHttp2Session, type ClientHttp2Stream } from "node:http2";
import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { ClientMessageSchema, ServerMessageSchema, type ServerMessage } from "../../gen/mcp/v1/session_pb.js";
import { createFrameReader, frameBytes } from "../../src/transport/grpc-frames.js";

export const CONNECT_PATH = "/mcp.v1.SessionService/Connect";

/** One gRPC frame of a ClientMessage. */
export function clientFrame(message: NonNullable<MessageInitShape<typeof ClientMessageSchema>["message"]>): Buffer {
  return frameBytes(toBinary(ClientMessageSchema, create(ClientMessageSchema, { message })));
}

/** Opens an h2c connection; errors are kept, never thrown (a test decides what they mean). */
export function connectH2(url: string): ClientHttp2Session {
  const session = connect(url);
  session.on("error", () => {});
  return session;
}

/** A session stream on `h2`: frames are decoded as they come; `until` waits for a matching message. */
export interface RawH2Stream {
  readonly stream: ClientHttp2Stream;
  readonly messages: ServerMessage[];
  /** Resolves with the first message matching `pred` (already received or later); undefined if the stream ends first or `ms` pass. */
  until(pred: (m: ServerMessage) => boolean, ms?: number): Promise<ServerMessage | undefined>;
  /** Resolves when the stream closed, with its grpc-status trailer (undefined when reset or absent); undefined after `ms`. */
  closed(ms?: number): Promise<{ grpcStatus: string | undefined; rstCode: number } | undefined>;
  /** Resets the stream (RST_STREAM CANCEL). */
  reset(): void;
}

export function openH2Stream(h2: ClientHttp2Session, headers: Record<string, string> = {}): RawH2Stream {
  const stream = h2.request({
    ":method": "POST",
    ":path": CONNECT_PATH,
    "content-type": "application/grpc+proto",
    te: "trailers",
    ...headers,
  });
  stream.on("error", () => {});
  const messages: ServerMessage[] = [];
  const watchers = new Set<() => void>();
  let ended = false;
  let grpcStatus: string | undefined;
  const frames = createFrameReader(
    64 * 1024 * 1024,
    (bytes) => {
      try {
        messages.push(fromBinary(ServerMessageSchema, bytes));
      } catch {
        // not a ServerMessage: the test sees it missing
      }
      for (const w of [...watchers]) w();
      return true;
    },
    () => {},
  );
  stream.on("data", (chunk: Buffer) => frames.push(chunk));
  stream.on("trailers", (t) => {
    const s = t["grpc-status"];
    grpcStatus = Array.isArray(s) ? s[0] : s;
  });
  stream.on("response", (h) => {
    // A trailers-only response carries grpc-status in the headers.
    const s = h["grpc-status"];
    if (s !== undefined) grpcStatus = Array.isArray(s) ? s[0] : s;
  });
  stream.once("close", () => {
    ended = true;
    for (const w of [...watchers]) w();
  });
  return {
    stream,
    messages,
    until(pred, ms = 10_000) {
      return new Promise((resolve) => {
        const check = () => {
          const m = messages.find(pred);
          if (m === undefined && !ended) return;
          watchers.delete(check);
          clearTimeout(timer);
          resolve(m);
        };
        const timer = setTimeout(() => {
          watchers.delete(check);
          resolve(undefined);
        }, ms);
        watchers.add(check);
        check();
      });
    },
    closed(ms = 10_000) {
      return new Promise((resolve) => {
        const done = () => {
          watchers.delete(check);
          clearTimeout(timer);
          resolve({ grpcStatus, rstCode: stream.rstCode ?? 0 });
        };
        const check = () => {
          if (ended) done();
        };
        const timer = setTimeout(() => {
          watchers.delete(check);
          resolve(undefined);
        }, ms);
        watchers.add(check);
        check();
      });
    },
    reset() {
      if (!stream.destroyed) stream.close(constants.NGHTTP2_CANCEL);
    },
  };
}
