/**
 * The byte transport under a client session: something that carries ClientMessages out and
 * ServerMessages in. `McpSession` (client.ts) holds all the dispatch logic and works over any of
 * them: node:http2 with gRPC framing (session-h2.ts, the default) or a connect-es transport.
 */
import type { Client } from "@connectrpc/connect";
import type { ClientMessage, ServerMessage, SessionService } from "../../gen/mcp/v1/session_pb.js";
import { createPushable } from "../pushable.js";

/** What a session stream reports to the session above it. */
export interface SessionStreamHandlers {
  /** One ServerMessage, in arrival order. */
  message(m: ServerMessage): void;
  /**
   * Called exactly once when the stream is over: `undefined` when it ended cleanly or was closed
   * by us, else the transport's reason (a ConnectError, a node error) for the caller to map.
   */
  end(reason: unknown): void;
}

/** An open session stream. */
export interface SessionStream {
  /** Queues a message for sending (sent with the others of this tick). */
  send(m: ClientMessage): void;
  /** True once the outbound side ended. */
  readonly ended: boolean;
  /**
   * Half-closes the outbound side and aborts the stream. `broken`: the session gave up on it
   * (the server went silent), so a transport sharing its connection sends no new stream there.
   */
  close(broken?: boolean): void;
  /**
   * Stops reading the stream until every hold is released (HTTP/2 flow control then holds the
   * server back on this stream only); absent where the transport cannot pause.
   */
  hold?(): () => void;
}

/** Opens a session stream. */
export type OpenSessionStream = (handlers: SessionStreamHandlers) => SessionStream;

/** A session stream over a connect-es transport (any protocol it speaks; one promise per message). */
export function connectSessionStream(client: Client<typeof SessionService>): OpenSessionStream {
  return (handlers) => {
    const outbound = createPushable<ClientMessage>();
    const abort = new AbortController();
    (async () => {
      for await (const m of client.connect(outbound, { signal: abort.signal })) handlers.message(m);
    })().then(
      () => {
        outbound.end();
        handlers.end(undefined);
      },
      (e: unknown) => {
        outbound.end();
        handlers.end(abort.signal.aborted ? undefined : e);
      },
    );
    return {
      send: (m) => outbound.push(m),
      get ended() {
        return outbound.ended;
      },
      close() {
        outbound.end();
        abort.abort();
      },
    };
  };
}
