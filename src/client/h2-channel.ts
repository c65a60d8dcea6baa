/**
 * The HTTP/2 connections a client's session streams share, like a gRPC channel: a session is one
 * stream, and up to `maxStreamsPerConnection` of them — never more than the server's
 * SETTINGS_MAX_CONCURRENT_STREAMS — run on one connection before the next stream opens another.
 * A connection closes when its last stream ends, or with `close()`.
 *
 * A connection that breaks (socket error, reset, FIN) ends every stream on it at once, so every
 * session on it reconnects. One that is only suspected dead — a session heard nothing past twice
 * its heartbeat — or that the server is draining (GOAWAY) is retired: no new stream goes to it,
 * the streams still on it run on, and it closes when the last of them ends.
 */
import type { ClientHttp2Session, ClientHttp2Stream, OutgoingHttpHeaders } from "node:http2";
import { connectH2 } from "./h2-connect.js";

/** Options of `createH2Channel`. */
export interface H2ChannelOptions {
  /** The server's origin, `http://host:port` (h2c with prior knowledge) or `https://…` (TLS, ALPN h2). */
  origin: string;
  /**
   * Streams (sessions) one connection carries at most before another connection is opened; 1 gives
   * every session its own connection. The server's SETTINGS_MAX_CONCURRENT_STREAMS caps it too.
   * @default 100
   */
  maxStreamsPerConnection?: number;
}

/** A stream the channel opened, and how to give its place back. */
export interface ChannelStream {
  readonly stream: ClientHttp2Stream;
  /** The connection's own error, when it failed (the stream may have closed without one). */
  connectionError(): unknown;
  /** The caller thinks the connection is dead (silence): no new stream goes to it. */
  suspect(): void;
  /** The stream is over (after its 'close'): its place is free; the connection closes with its last stream. */
  release(): void;
}

/** Session streams sharing HTTP/2 connections. */
export interface H2Channel {
  /** Opens a stream on a connection with room, opening a connection when none has. */
  open(headers: OutgoingHttpHeaders): ChannelStream;
  /** Connections open now (for tests and metrics). */
  readonly connections: number;
  /** Closes every connection at once; the streams on them end. Later `open`s start afresh. */
  close(): void;
}

interface Entry {
  readonly session: ClientHttp2Session;
  streams: number;
  /** No new streams: retired (GOAWAY, suspected dead) or closed. */
  retired: boolean;
  error: unknown;
}

/** Creates a channel to one origin; no connection is opened before the first `open`. */
export function createH2Channel(options: H2ChannelOptions): H2Channel {
  const max = options.maxStreamsPerConnection ?? 100;
  if (!(max >= 1) || (!Number.isInteger(max) && max !== Infinity)) {
    throw new TypeError(`maxStreamsPerConnection must be an integer >= 1 or Infinity, got ${max}`);
  }
  const origin = options.origin;
  // Connections that take new streams, newest last; retired ones leave this set at once.
  const live = new Set<Entry>();
  const all = new Set<Entry>();

  const retire = (e: Entry) => {
    e.retired = true;
    live.delete(e);
  };

  const roomOf = (e: Entry): boolean => {
    // Until the server's SETTINGS arrive node assumes 100 (peerMaxConcurrentStreams); the server
    // sends its own value in the first packet (src/server/listener.ts: 2^32 − 1 by default).
    const remote = e.session.remoteSettings.maxConcurrentStreams ?? Infinity;
    return e.streams < max && e.streams < remote;
  };

  function connection(): Entry {
    for (const e of live) if (!e.session.destroyed && !e.session.closed && roomOf(e)) return e;
    const session = connectH2(origin);
    const e: Entry = { session, streams: 0, retired: false, error: undefined };
    session.on("error", (err) => {
      e.error ??= err;
      retire(e);
    });
    session.once("goaway", () => retire(e));
    session.once("close", () => {
      retire(e);
      all.delete(e);
    });
    live.add(e);
    all.add(e);
    return e;
  }

  return {
    open(headers) {
      const e = connection();
      // request() throws only on a session already closing, which connection() never returns.
      const stream = e.session.request(headers);
      e.streams++;
      let released = false;
      return {
        stream,
        connectionError: () => e.error,
        suspect: () => retire(e),
        release() {
          if (released) return;
          released = true;
          e.streams--;
          // The last stream gone: close it rather than keep an idle connection (and its server-side
          // state) around; the next session opens a fresh one.
          if (e.streams === 0 && !e.session.destroyed) {
            retire(e);
            e.session.close();
          }
        },
      };
    },
    get connections() {
      return all.size;
    },
    close() {
      for (const e of [...all]) {
        retire(e);
        if (!e.session.destroyed) e.session.destroy();
      }
    },
  };
}
