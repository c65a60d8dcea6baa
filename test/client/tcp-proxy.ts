/**
 * A TCP proxy on 127.0.0.1 port 0 between a client and a real server, for fault tests: it cuts
 * every connection (TCP reset or FIN), goes silent (stops forwarding without closing), or
 * refuses new connections. Bytes pass untouched: what the client sees is a real broken network.
 */
import { connect, createServer, type Socket } from "node:net";

/** What the proxy does with a connection. */
export interface TcpProxy {
  /** `http://127.0.0.1:PORT`, for `createMcpClient({ baseUrl })`. */
  readonly url: string;
  /** Connections accepted so far. */
  readonly accepted: number;
  /** Connections open now. */
  readonly open: number;
  /** Points new connections at another port (a restarted server); open ones are left alone. */
  retarget(port: number): void;
  /** Cuts every open connection on both sides: `reset` (TCP RST) or `close` (FIN). Returns how many. */
  cut(how?: "reset" | "close"): number;
  /** While on, forwards nothing either way and closes nothing: a silent peer. */
  silence(on: boolean): void;
  /** While on, resets every new connection at once: a server that is down. */
  refuse(on: boolean): void;
  close(): Promise<void>;
}

/** Starts a proxy to `127.0.0.1:targetPort`. */
export async function startTcpProxy(targetPort: number): Promise<TcpProxy> {
  let target = targetPort;
  let accepted = 0;
  let silent = false;
  let refusing = false;
  const pairs = new Set<[Socket, Socket]>();

  const server = createServer((client) => {
    accepted++;
    if (refusing) {
      client.resetAndDestroy();
      return;
    }
    const upstream = connect(target, "127.0.0.1");
    const pair: [Socket, Socket] = [client, upstream];
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    // Errors are the point of this proxy: each one ends the pair, nothing else.
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
    if (!silent) forward(pair, true);
  });

  function forward([a, b]: [Socket, Socket], on: boolean): void {
    if (on) {
      a.pipe(b);
      b.pipe(a);
    } else {
      a.unpipe(b);
      b.unpipe(a);
      a.pause();
      b.pause();
    }
  }
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("the proxy has no TCP address");

  return {
    url: `http://127.0.0.1:${address.port}`,
    get accepted() {
      return accepted;
    },
    get open() {
      return pairs.size;
    },
    retarget(port) {
      target = port;
    },
    cut(how = "reset") {
      const n = pairs.size;
      for (const pair of [...pairs]) {
        pairs.delete(pair);
        for (const s of pair) {
          if (how === "reset" && !s.destroyed) s.resetAndDestroy();
          else s.destroy();
        }
      }
      return n;
    },
    silence(on) {
      if (silent === on) return;
      silent = on;
      for (const pair of pairs) forward(pair, !on);
    },
    refuse(on) {
      refusing = on;
    },
    close() {
      for (const pair of pairs) for (const s of pair) s.destroy();
      pairs.clear();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
