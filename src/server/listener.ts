/**
 * One port, every protocol: HTTP/2 with prior knowledge (h2c), HTTP/1.1, and — with a
 * certificate — TLS with ALPN `h2` / `http/1.1`. A raw socket is routed by its first bytes
 * (the HTTP/2 connection preface, RFC 9113 §3.4) or by its ALPN protocol, and counted against
 * `maxConnections`; connections beyond it are still served, but only to answer every request
 * with `too_many_connections` and close.
 */
import { createServer as createHttp1Server, type IncomingMessage, type ServerResponse } from "node:http";
import {
  createServer as createHttp2Server,
  type Http2ServerRequest,
  type Http2ServerResponse,
  type IncomingHttpHeaders,
  type ServerHttp2Session,
  type ServerHttp2Stream,
} from "node:http2";
import { createServer as createNetServer, type AddressInfo, type Socket } from "node:net";
import { createServer as createTlsServer, type TLSSocket } from "node:tls";
import { readFileSync } from "node:fs";
import type { ConnectionFacts } from "./routes.js";

/** Attached to each accepted socket; read back through the request's socket. */
const kFacts = Symbol.for("mcp.connectionFacts");
type FactsCarrier = { [kFacts]?: ConnectionFacts };

export type RequestHandler = (req: IncomingMessage | Http2ServerRequest, res: ServerResponse | Http2ServerResponse) => void;

/**
 * Offered every HTTP/2 stream before the request/response API sees it; returns true when it
 * serves the stream itself (then no req/res objects are made for it), false to pass it on.
 */
export type StreamHandler = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => boolean;

export interface ListenerOptions {
  bindAddress: string;
  port: number;
  maxConnections: number;
  tls?: { cert: string; key: string } | undefined;
  /** HTTP/2 keep-alive: ping idle connections this often, in milliseconds (PROTOCOL.md §4 step 6). */
  pingIntervalMs: number;
  /** Told of each connection refused for being beyond `maxConnections` (metrics, log). */
  onRefusedConnection?: ((remoteAddress: string | undefined) => void) | undefined;
}

export interface Listener {
  readonly port: number;
  readonly address: string;
  readonly connections: number;
  /**
   * Shutdown's first step: no new connections, HTTP/2 GOAWAY on every connection (streams
   * already open run on; a load balancer sends new ones elsewhere), idle HTTP/1.1 ones closed.
   */
  stopAccepting(): void;
  /** Bytes received and sent so far, by connection protocol (`h2`, `http1`): read per scrape, not per write. */
  traffic(): { protocol: string; received: number; sent: number }[];
  close(): Promise<void>;
}

/** The facts of the connection a request arrived on. */
export function connectionFacts(req: IncomingMessage | Http2ServerRequest): ConnectionFacts {
  // For HTTP/2 `req.socket` is a proxy that forwards property reads to the real socket.
  return (req.socket as unknown as FactsCarrier)[kFacts] ?? { secure: false, overLimit: false };
}

/** The facts of the connection an HTTP/2 stream arrived on. */
export function streamFacts(stream: ServerHttp2Stream): ConnectionFacts {
  // `session.socket` is a proxy that forwards property reads to the real socket.
  return (stream.session?.socket as unknown as FactsCarrier | undefined)?.[kFacts] ?? { secure: false, overLimit: false };
}

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

export async function listen(options: ListenerOptions, handler: RequestHandler, streamHandler?: StreamHandler): Promise<Listener> {
  const h1 = createHttp1Server(handler as (req: IncomingMessage, res: ServerResponse) => void);
  h1.keepAliveTimeout = 5_000;
  // node's default SETTINGS_MAX_CONCURRENT_STREAMS (2^32 − 1) is kept: a client multiplexes its
  // sessions as streams of one connection (docs/client.md "Sessions share connections"), and each
  // session is bounded by maxSessionsPerPrincipal, not by a per-connection stream count.
  const h2 = createHttp2Server({}, handler as (req: Http2ServerRequest, res: Http2ServerResponse) => void);
  if (streamHandler !== undefined) {
    // node:http2's request/response API is itself the one 'stream' listener, added with the
    // request handler: streams the fast paths serve go around it.
    const [compat, ...others] = h2.listeners("stream") as ((...args: unknown[]) => void)[];
    if (compat === undefined || others.length > 0) throw new Error("node:http2 changed: expected its compatibility API as the only 'stream' listener");
    h2.removeAllListeners("stream");
    h2.on("stream", (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number, rawHeaders: string[]) => {
      if (!streamHandler(stream, headers)) compat.call(h2, stream, headers, flags, rawHeaders);
    });
  }
  const sockets = new Set<Socket>();
  const h2Sockets = new WeakSet<Socket>();
  let active = 0;
  // Bytes of closed connections by protocol; open ones are read from their sockets when asked.
  const protocolOf = new WeakMap<Socket, "h2" | "http1">();
  const closedTraffic = { h2: { received: 0, sent: 0 }, http1: { received: 0, sent: 0 } };

  const h2Sessions = new Set<ServerHttp2Session>();
  let accepting = true;
  h2.on("session", (session) => {
    h2Sessions.add(session);
    session.once("close", () => h2Sessions.delete(session));
    if (!accepting) session.close(); // raced with stopAccepting: GOAWAY at once
    // HTTP/2 PING keeps NATs open and finds dead peers; a peer that does not answer is dropped.
    const timer = setInterval(() => {
      // ping() throws on a session already destroyed; its 'close' may still be on its way.
      if (session.destroyed || session.closed) return clearInterval(timer);
      const sent = session.ping((err) => {
        if (err !== null && !session.destroyed) session.destroy();
      });
      if (!sent) clearInterval(timer);
    }, options.pingIntervalMs);
    timer.unref();
    session.once("close", () => clearInterval(timer));
  });

  function accept(socket: Socket, secure: boolean): FactsCarrier {
    active++;
    sockets.add(socket);
    socket.once("close", () => {
      active--;
      sockets.delete(socket);
      const t = closedTraffic[protocolOf.get(socket) ?? "http1"];
      t.received += socket.bytesRead;
      t.sent += socket.bytesWritten;
    });
    const facts: ConnectionFacts = { secure, overLimit: active > options.maxConnections, remoteAddress: socket.remoteAddress };
    (socket as FactsCarrier)[kFacts] = facts;
    if (facts.overLimit) {
      options.onRefusedConnection?.(socket.remoteAddress);
      // Give the refusal time to be written, then hang up.
      setTimeout(() => socket.destroy(), 2_000).unref();
    }
    return socket as FactsCarrier;
  }

  function route(socket: Socket): void {
    socket.once("data", (chunk: Buffer) => {
      socket.pause();
      socket.unshift(chunk);
      const isH2 = chunk.length >= PREFACE.length ? chunk.subarray(0, PREFACE.length).equals(PREFACE) : PREFACE.subarray(0, chunk.length).equals(chunk);
      protocolOf.set(socket, isH2 ? "h2" : "http1");
      if (isH2) {
        h2Sockets.add(socket);
        // node:http2 reads the buffered preface itself; resuming here would emit it to no one.
        h2.emit("connection", socket);
      } else {
        h1.emit("connection", socket);
        socket.resume();
      }
    });
  }

  const server = options.tls === undefined
    ? createNetServer((socket) => {
        accept(socket, false);
        route(socket);
      })
    : createTlsServer(
        { cert: readFileSync(options.tls.cert), key: readFileSync(options.tls.key), ALPNProtocols: ["h2", "http/1.1"] },
        (socket: TLSSocket) => {
          accept(socket, true);
          protocolOf.set(socket, socket.alpnProtocol === "h2" ? "h2" : "http1");
          if (socket.alpnProtocol === "h2") {
            h2Sockets.add(socket);
            h2.emit("connection", socket);
          }
          else h1.emit("connection", socket);
        },
      );
  server.on("error", () => {}); // reported through listen()'s promise below

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.bindAddress, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo; // a TCP server always has an AddressInfo

  function stopAccepting(): void {
    if (!accepting) return;
    accepting = false;
    server.close();
    for (const session of h2Sessions) session.close();
    h1.closeIdleConnections();
  }

  return {
    port: addr.port,
    address: addr.address,
    get connections() {
      return active;
    },
    stopAccepting,
    traffic() {
      const out = { h2: { ...closedTraffic.h2 }, http1: { ...closedTraffic.http1 } };
      for (const s of sockets) {
        const t = out[protocolOf.get(s) ?? "http1"];
        t.received += s.bytesRead;
        t.sent += s.bytesWritten;
      }
      return [
        { protocol: "h2", ...out.h2 },
        { protocol: "http1", ...out.http1 },
      ];
    },
    async close() {
      const listening = server.listening;
      stopAccepting();
      await new Promise<void>((resolve) => {
        if (active === 0) resolve();
        else server.once("close", () => resolve());
        if (!listening && active === 0) return;
        // HTTP/2 connections close themselves once their last stream ended (GOAWAY was sent):
        // ending the socket under them would drop the final frames still queued in nghttp2.
        for (const s of sockets) if (!h2Sockets.has(s)) s.end();
        setTimeout(() => {
          for (const s of sockets) s.destroy();
        }, 3_000).unref();
      });
    },
  };
}
