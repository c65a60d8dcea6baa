/**
 * The client's HTTP/2 connections, with receive windows sized for bulk data.
 *
 * HTTP/2's default windows are 64 KiB per stream and per connection: the server may have that
 * much unacknowledged on the wire, so a large result moves one window per round trip however
 * fast both ends are. A 256 MiB `fs.read` in chunks went 171 → 286 MB/s with these windows, raw
 * node:http2 piping the file 417 → 544 MB/s (bench/README.md, "December 4"). What a window lets
 * the server send ahead is what this process may buffer unread: the stream window per session
 * that holds its reading (`McpSession.holdReading`), the connection window across all of them.
 */
import { connect, type ClientHttp2Session } from "node:http2";

/** Bytes the server may send on one stream before this client acknowledges them. */
export const STREAM_WINDOW_BYTES = 4 * 1024 * 1024;

/** Bytes the server may send on one connection, all streams together, before acknowledgement. */
export const CONNECTION_WINDOW_BYTES = 16 * 1024 * 1024;

/** Opens an HTTP/2 connection to `origin` with the windows above. */
export function connectH2(origin: string): ClientHttp2Session {
  const session = connect(origin, { settings: { initialWindowSize: STREAM_WINDOW_BYTES } });
  // The connection window is not a setting: it grows by a WINDOW_UPDATE once connected.
  session.once("connect", () => session.setLocalWindowSize(CONNECTION_WINDOW_BYTES));
  return session;
}
