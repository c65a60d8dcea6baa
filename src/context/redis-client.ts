/**
 * One way to reach Redis for every shared store (contexts, sessions, revocations): a single
 * server, a Redis Cluster, or a master found through Sentinel, chosen by the URL scheme
 * (docs/deploy.md "Redis"):
 *
 * - `redis://[user:password@]host:port[/db]`, `rediss://…` (TLS): one server;
 * - `redis+cluster://[user:password@]host1:port1,host2:port2[,…]`, `rediss+cluster://…`: a
 *   cluster, any reachable nodes as seeds (keys are hash-tagged per context and per session, so
 *   every script touches one slot);
 * - `redis+sentinel://[user:password@]host1:port1[,…]/mastername[/db][?wait=N[&waitTimeoutMs=T]]`,
 *   `rediss+sentinel://…`: the master `mastername` as the sentinels report it, followed across
 *   failovers. With `wait=N` a context update is acknowledged only once N replicas have it
 *   (Redis WAIT, bounded by T ms, default 1000): replication is asynchronous, so otherwise a
 *   failover loses what the old master had not passed on yet.
 */
import { Cluster, Redis, type RedisOptions } from "../optional/ioredis.js";

/** How long a command may go unanswered, in ms: the stores' scripts take milliseconds, so only a lost connection gets near it. */
const COMMAND_TIMEOUT_MS = 2_000;

/** A client of any of the three shapes; both have the commands the stores use. */
export type RedisClient = Redis | Cluster;

const SCHEME = /^(rediss?)(\+cluster|\+sentinel)?:\/\//;

/** Whether `url` names a Redis deployment this module can connect to. */
export function isRedisUrl(url: string): boolean {
  return SCHEME.test(url);
}

interface ParsedRedisUrl {
  kind: "single" | "cluster" | "sentinel";
  tls: boolean;
  hosts: { host: string; port: number }[];
  username?: string;
  password?: string;
  db?: number;
  masterName?: string;
  /** `?wait=N&waitTimeoutMs=T` (sentinel only): replicas an update must reach before it is acknowledged. */
  wait?: { replicas: number; timeoutMs: number };
}

/** Parses a `redis+cluster://` or `redis+sentinel://` URL; throws TypeError naming what is wrong. */
export function parseRedisUrl(url: string): ParsedRedisUrl {
  const m = SCHEME.exec(url);
  if (m === null) throw new TypeError(`not a Redis URL: expected redis://, rediss://, redis+cluster:// or redis+sentinel://, got ${url.replace(/\/\/[^@/]*@/, "//…@")}`);
  const kind = m[2] === "+cluster" ? "cluster" : m[2] === "+sentinel" ? "sentinel" : "single";
  let rest = url.slice(m[0].length);
  const out: ParsedRedisUrl = { kind, tls: m[1] === "rediss", hosts: [] };
  const at = rest.lastIndexOf("@", rest.indexOf("/") === -1 ? rest.length : rest.indexOf("/"));
  if (at !== -1) {
    const cred = rest.slice(0, at);
    rest = rest.slice(at + 1);
    const colon = cred.indexOf(":");
    const user = decodeURIComponent(colon === -1 ? "" : cred.slice(0, colon));
    const pass = decodeURIComponent(colon === -1 ? cred : cred.slice(colon + 1));
    if (user !== "") out.username = user;
    if (pass !== "") out.password = pass;
  }
  const end = rest.search(/[/?]/);
  const hostList = end === -1 ? rest : rest.slice(0, end);
  const tail = end === -1 ? "" : rest.slice(rest[end] === "/" ? end + 1 : end);
  const q = tail.indexOf("?");
  const path = (q === -1 ? tail : tail.slice(0, q)).split("/").filter((p) => p !== "");
  for (const h of hostList.split(",")) {
    const i = h.lastIndexOf(":");
    const host = (i === -1 ? h : h.slice(0, i)).replace(/^\[|\]$/g, "");
    const port = i === -1 ? (kind === "sentinel" ? 26379 : 6379) : Number(h.slice(i + 1));
    if (host === "" || !Number.isInteger(port) || port < 1 || port > 65535) throw new TypeError(`bad host:port "${h}" in Redis URL`);
    out.hosts.push({ host, port });
  }
  if (kind === "sentinel") {
    if (path[0] === undefined) throw new TypeError("a redis+sentinel:// URL names the master: redis+sentinel://host:26379/mastername[/db]");
    out.masterName = decodeURIComponent(path[0]);
    if (path[1] !== undefined) out.db = Number(path[1]);
  } else if (kind === "single" && path[0] !== undefined) out.db = Number(path[0]);
  if (kind === "cluster" && path.length > 0) throw new TypeError("a Redis Cluster has no databases: drop the /db from the redis+cluster:// URL");
  if (out.db !== undefined && (!Number.isInteger(out.db) || out.db < 0)) throw new TypeError("the database in a Redis URL must be a non-negative integer");
  if (kind !== "single" && q !== -1) {
    const query = new URLSearchParams(tail.slice(q + 1));
    for (const k of query.keys()) {
      if (k !== "wait" && k !== "waitTimeoutMs") throw new TypeError(`unknown option "${k}" in a Redis URL: redis+sentinel:// takes wait and waitTimeoutMs`);
    }
    if (kind === "cluster") throw new TypeError("wait= is for redis+sentinel:// URLs: a Redis Cluster here has no replicas to wait for");
    const replicas = Number(query.get("wait") ?? "0");
    const timeoutMs = Number(query.get("waitTimeoutMs") ?? "1000");
    if (!Number.isInteger(replicas) || replicas < 1) throw new TypeError("wait= in a Redis URL must be a positive integer (replicas an update must reach)");
    if (!Number.isInteger(timeoutMs) || timeoutMs < 1) throw new TypeError("waitTimeoutMs= in a Redis URL must be a positive integer (milliseconds)");
    out.wait = { replicas, timeoutMs };
  }
  return out;
}

/**
 * Opens a client for `url`. `connectionName` shows in CLIENT LIST so operators can tell the
 * stores' connections apart. Connection trouble is left to the caller's "error" listener.
 * `autoPipelining`: commands issued in one event-loop turn go out in one write (ioredis's
 * `enableAutoPipelining`) — fewer syscalls on both sides when many commands are in flight. Not on
 * a cluster: ioredis groups a turn's commands by the slot of their first argument, which for
 * EVALSHA is the script's hash, not a key. `notPipelined`: commands written at once all the same
 * (ioredis's `autoPipeliningIgnoredCommands`), for a caller that batches them itself.
 */
export function createRedisClient(
  url: string,
  options: { connectionName?: string; maxRetriesPerRequest?: number; autoPipelining?: boolean; notPipelined?: string[] } = {},
): RedisClient {
  const p = parseRedisUrl(url);
  const common: RedisOptions = {
    // A command sent before a disconnect may have run (a script whose reply was lost): sent again
    // on the new connection — after a failover, to another server — it would apply an update
    // twice. Not resent, ioredis 5 drops it without settling its promise, so every command has a
    // deadline (beyond a replica WAIT's): it fails as "Command timed out" instead of hanging.
    autoResendUnfulfilledCommands: false,
    commandTimeout: COMMAND_TIMEOUT_MS + (p.wait?.timeoutMs ?? 0),
    ...(options.autoPipelining === true && p.kind !== "cluster" ? { enableAutoPipelining: true, autoPipeliningIgnoredCommands: options.notPipelined ?? [] } : {}),
    ...(options.connectionName === undefined ? {} : { connectionName: options.connectionName }),
    ...(options.maxRetriesPerRequest === undefined ? {} : { maxRetriesPerRequest: options.maxRetriesPerRequest }),
    ...(p.username === undefined ? {} : { username: p.username }),
    ...(p.password === undefined ? {} : { password: p.password }),
    ...(p.tls ? { tls: {} } : {}),
  };
  switch (p.kind) {
    case "single":
      // ioredis parses single-server URLs itself (with its query options).
      return new Redis(url, common);
    case "cluster":
      return new Cluster(p.hosts, { redisOptions: common });
    case "sentinel": {
      const client = new Redis({
        ...common,
        sentinels: p.hosts,
        name: p.masterName ?? "",
        ...(p.db === undefined ? {} : { db: p.db }),
        ...(p.password === undefined ? {} : { sentinelPassword: p.password }),
        ...(p.tls ? { enableTLSForSentinelMode: true } : {}),
      });
      followFailovers(client, p);
      return client;
    }
  }
}

/**
 * Moves `client` to the new master as soon as a sentinel announces `+switch-master`. Without it
 * the connection stays on the old master after SENTINEL FAILOVER, which goes on accepting writes
 * until Sentinel demotes it (up to ~10 s later), and every update written there is lost. Not
 * ioredis's `failoverDetector`: it disconnects even while the client is reconnecting, and a
 * reconnect cut short that way leaves the client ended for good (ioredis 5.9). Here only a ready
 * client is disconnected (to reconnect at once); one still reconnecting asks the sentinels anyway.
 */
function followFailovers(client: Redis, p: ParsedRedisUrl): void {
  let movedTo = "";
  const watchers = p.hosts.map((h) => {
    const w = new Redis({
      host: h.host,
      port: h.port,
      ...(p.password === undefined ? {} : { password: p.password }),
      ...(p.tls ? { tls: {} } : {}),
      connectionName: "mcp-failover-watch",
      retryStrategy: (n) => Math.min(n * 100, 2_000),
    });
    w.on("error", () => {}); // a sentinel down: the others still announce
    w.subscribe("+switch-master").catch(() => {});
    w.on("message", (_channel: string, message: string) => {
      // "<master-name> <old-ip> <old-port> <new-ip> <new-port>", once from each sentinel.
      const [name, , , ip, port] = message.split(" ");
      if (name !== p.masterName || `${ip}:${port}` === movedTo) return;
      movedTo = `${ip}:${port}`;
      if (client.status === "ready") client.disconnect(true);
    });
    return w;
  });
  const stop = (): void => {
    for (const w of watchers) w.disconnect();
  };
  client.once("end", stop);
  // A client disconnected while it waits to reconnect never emits "end".
  const disconnect = client.disconnect.bind(client);
  client.disconnect = (reconnect = false) => {
    if (!reconnect) stop();
    disconnect(reconnect);
  };
}

/**
 * The key of `name` under `prefix`, hash-tagged by `id`: every key of one context (or one
 * session) lands in one cluster slot, so one Lua script or MULTI may touch them all.
 */
export function taggedKey(prefix: string, name: string, id: string, suffix = ""): string {
  return `${prefix}${name}:{${id}}${suffix}`;
}

/** Refuses a prefix that would break hash tags (a `{` in it would become the tag). */
export function checkKeyPrefix(prefix: string): string {
  if (prefix.includes("{") || prefix.includes("}")) throw new TypeError(`Redis key prefix must not contain { or }: got "${prefix}"`);
  return prefix;
}
