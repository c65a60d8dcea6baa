/**
 * A private Redis Sentinel deployment for tests: one master, two replicas (`--replicaof`) and three
 * sentinels (`redis-server sentinel.conf --sentinel`, no redis-sentinel package needed), each on a
 * free loopback port with its data in a temp dir. Both data nodes are append-only with fsync on
 * every write (test/e2e/scaleout-fixtures.ts `startRedis`), so only replication can lose an
 * acknowledged update. Every wait is bounded.
 */
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Redis } from "ioredis";
import { freePort, startProc, startRedis, waitForPort, type Proc } from "../e2e/scaleout-fixtures.js";
import { eventually } from "./eventually.js";

export const MASTER_NAME = "mymaster";

/** The deployment and what a test does to it. */
export interface RedisSentinel {
  /** `redis+sentinel://127.0.0.1:s1,127.0.0.1:s2,127.0.0.1:s3/mymaster`; append `/db` for a database. */
  readonly url: string;
  readonly sentinelPorts: readonly number[];
  /** The port of the data node the sentinels report as master (asked of the first one that answers). */
  master(): Promise<number>;
  /** The data node on `port` still running? */
  running(port: number): boolean;
  /**
   * `SENTINEL FAILOVER`: promotes the replica without agreement; resolves with the old and new
   * master's ports once every sentinel reports the new one and it answers ROLE as master.
   */
  failover(): Promise<{ from: number; to: number }>;
  /** SIGKILL to the data node on `port`. */
  kill(port: number): Promise<void>;
  /** Resolves once every sentinel reports a master other than `port` and that one is a master. */
  waitForNewMaster(port: number, ms?: number): Promise<number>;
  /** A one-off command to a data node or sentinel on `port` (connects, sends, disconnects). */
  command(port: number, ...args: (string | number)[]): Promise<unknown>;
  stop(): Promise<void>;
}

/** One command on a fresh connection: no retries, so a dead port rejects at once. */
async function command(port: number, args: (string | number)[]): Promise<unknown> {
  const c = new Redis(port, "127.0.0.1", { lazyConnect: true, connectTimeout: 2_000, commandTimeout: 3_000, maxRetriesPerRequest: 0, retryStrategy: () => null, enableOfflineQueue: false });
  c.on("error", () => {});
  try {
    await c.connect();
    return await c.call(String(args[0]), ...args.slice(1).map(String));
  } finally {
    c.disconnect();
  }
}

/** A `SENTINEL MASTER` / `SENTINEL REPLICAS` entry (a flat name, value array) as an object. */
function fields(flat: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (Array.isArray(flat)) for (let i = 0; i + 1 < flat.length; i += 2) out[String(flat[i])] = String(flat[i + 1]);
  return out;
}

/**
 * Starts the deployment in `dir` and resolves once both replicas are in sync and every sentinel
 * knows both other sentinels and both replicas. Two replicas: after a master is lost one is
 * promoted and the other still acknowledges `wait=1` updates.
 */
export async function startRedisSentinel(dir: string): Promise<RedisSentinel> {
  const nodes = new Map<number, Proc>();
  const sentinels: Proc[] = [];
  const dataPorts = [await freePort(), await freePort(), await freePort()];
  const sentinelPorts = [await freePort(), await freePort(), await freePort()];
  const stop = async () => {
    await Promise.all([...sentinels, ...nodes.values()].map((p) => p.stop()));
  };
  try {
    // No delay before a diskless full sync (default 5 s): a demoted master resyncs at once.
    const common = ["--repl-diskless-sync-delay", "0"];
    for (const [i, port] of dataPorts.entries()) {
      const d = join(dir, `redis-${port}`);
      await mkdir(d, { recursive: true });
      nodes.set(port, await startRedis(d, port, [...common, ...(i === 0 ? [] : ["--replicaof", "127.0.0.1", String(dataPorts[0])])]));
    }
    for (const port of sentinelPorts) {
      const d = join(dir, `sentinel-${port}`);
      await mkdir(d, { recursive: true });
      // Sentinel rewrites its configuration file (what it learnt), so each has its own.
      const conf = join(d, "sentinel.conf");
      await writeFile(
        conf,
        [
          `port ${port}`,
          "bind 127.0.0.1",
          `dir ${d}`,
          `sentinel monitor ${MASTER_NAME} 127.0.0.1 ${dataPorts[0]} 2`,
          // A dead master is noticed after 1 s (default 30 s), so a failover fits in a test.
          `sentinel down-after-milliseconds ${MASTER_NAME} 1000`,
          `sentinel failover-timeout ${MASTER_NAME} 10000`,
          "",
        ].join("\n"),
      );
      sentinels.push(startProc("redis-server", [conf, "--sentinel"], d));
      await waitForPort(port, "redis-server --sentinel");
    }
    await eventually(async () => {
      for (const port of dataPorts.slice(1)) {
        const info = String(await command(port, ["INFO", "replication"]).catch(() => ""));
        if (!/master_link_status:up/.test(info)) return false;
      }
      for (const port of sentinelPorts) {
        const m = fields(await command(port, ["SENTINEL", "MASTER", MASTER_NAME]).catch(() => []));
        if (m["num-slaves"] !== "2" || m["num-other-sentinels"] !== "2" || m["flags"] !== "master") return false;
      }
      return true;
    }, "the replicas to sync and the sentinels to find each other and the replicas", 20_000);
  } catch (e) {
    await stop();
    throw new Error(`the Sentinel deployment did not start: ${String(e)}\n${[...nodes.values(), ...sentinels].map((p) => p.output()).join("\n")}`);
  }

  const reported = async (port: number): Promise<number | undefined> => {
    const addr = await command(port, ["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME]).catch(() => undefined);
    return Array.isArray(addr) ? Number(addr[1]) : undefined;
  };
  const isMaster = async (port: number): Promise<boolean> => {
    const role = await command(port, ["ROLE"]).catch(() => undefined);
    return Array.isArray(role) && role[0] === "master";
  };
  const s: RedisSentinel = {
    url: `redis+sentinel://${sentinelPorts.map((p) => `127.0.0.1:${p}`).join(",")}/${MASTER_NAME}`,
    sentinelPorts,
    async master() {
      for (const port of sentinelPorts) {
        const m = await reported(port);
        if (m !== undefined) return m;
      }
      throw new Error("no sentinel reports a master");
    },
    running(port) {
      const p = nodes.get(port)?.proc;
      return p !== undefined && p.exitCode === null && p.signalCode === null;
    },
    async waitForNewMaster(old, ms = 20_000) {
      let now = old;
      await eventually(async () => {
        const all = await Promise.all(sentinelPorts.map(reported));
        if (all.some((p) => p === undefined || p === old || p !== all[0])) return false;
        now = all[0]!;
        return isMaster(now);
      }, `every sentinel to report a master other than ${old}`, ms);
      return now;
    },
    async failover() {
      const from = await s.master();
      await command(sentinelPorts[0]!, ["SENTINEL", "FAILOVER", MASTER_NAME]);
      return { from, to: await s.waitForNewMaster(from) };
    },
    async kill(port) {
      const p = nodes.get(port);
      if (p === undefined) throw new Error(`no data node on ${port}`);
      p.proc.kill("SIGKILL");
      await p.stop();
    },
    command: (port, ...args) => command(port, args),
    stop,
  };
  return s;
}
