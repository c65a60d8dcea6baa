/**
 * Outside programs for the scale-out tests: a private `redis-server` (or a three-master Redis
 * Cluster) on free ports in a temp dir, and HAProxy running docs/deploy/haproxy.cfg or nginx
 * running docs/deploy/nginx.conf. Each is started by the test, stopped after it, and every wait
 * is bounded.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { createServer, connect } from "node:net";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { AdminService } from "../../gen/mcp/v1/admin_pb.js";
import { createMcpClient } from "../../src/client/index.js";
import { mintToken } from "../../src/security/index.js";
import { selfSignedCert, transportFor } from "../security/e2e-helpers.js";
import { REPO, startCli, tempDir, type CliServer } from "./helpers.js";

/** Whether `program` is on PATH. Outside CI a missing one skips the test with a loud notice; in CI it fails. */
export function haveProgram(program: string): boolean {
  const found = spawnSync("sh", ["-c", `command -v ${program}`]).status === 0;
  if (!found) {
    if (process.env["CI"] === "true") throw new Error(`${program} is required in CI (see .ci/run's system packages)`);
    process.stderr.write(`\n*** SKIPPING: ${program} is not installed (apt-get install ${program === "redis-server" ? "redis-server" : program}) ***\n\n`);
  }
  return found;
}

/** A TCP port free right now (bound to 0, then released), for programs that need a fixed port. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const addr = s.address();
      const port = typeof addr === "object" && addr !== null ? addr.port : 0;
      s.close(() => resolve(port));
    });
  });
}

/** Resolves once something accepts TCP connections on `port`; rejects after `ms`. */
export async function waitForPort(port: number, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const c = connect(port, "127.0.0.1");
      c.once("connect", () => {
        c.destroy();
        resolve(true);
      });
      c.once("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${what} did not listen on ${port} within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A child process and how to stop it. */
export interface Proc {
  readonly proc: ChildProcess;
  readonly output: () => string;
  /** SIGTERM, then SIGKILL after `ms`; resolves with the exit code. */
  stop(ms?: number): Promise<number | null>;
}

export function startProc(command: string, args: readonly string[], cwd: string): Proc {
  const proc = spawn(command, args, { cwd, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  proc.stdout?.setEncoding("utf8").on("data", (c: string) => (out += c));
  proc.stderr?.setEncoding("utf8").on("data", (c: string) => (out += c));
  let code: number | null | undefined;
  const exited = new Promise<number | null>((resolve) => proc.once("exit", (c) => resolve((code = c))));
  return {
    proc,
    output: () => out,
    async stop(ms = 5_000) {
      if (code !== undefined) return code;
      proc.kill("SIGTERM");
      const timer = setTimeout(() => proc.kill("SIGKILL"), ms);
      const c = await exited;
      clearTimeout(timer);
      return c;
    },
  };
}

/**
 * A private `redis-server` on `port` with its data in `dir`: append-only with fsync on every
 * write, so a restart keeps every acknowledged update.
 */
export async function startRedis(dir: string, port: number, extra: readonly string[] = []): Promise<Proc> {
  const p = startProc("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--appendonly", "yes", "--appendfsync", "always", ...extra], dir);
  await waitForPort(port, "redis-server");
  return p;
}

/**
 * A local three-master Redis Cluster (no replicas) in `dir`: three `redis-server
 * --cluster-enabled yes` and `redis-cli --cluster create`. Resolves once every slot is served.
 */
export async function startRedisCluster(dir: string): Promise<{ ports: number[]; url: string; stop(): Promise<void> }> {
  const ports = [await freePort(), await freePort(), await freePort()];
  const nodes: Proc[] = [];
  try {
    for (const port of ports) {
      const d = join(dir, String(port));
      spawnSync("mkdir", ["-p", d]);
      nodes.push(await startRedis(d, port, ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000"]));
    }
    const create = spawnSync(
      "redis-cli",
      ["--cluster", "create", ...ports.map((p) => `127.0.0.1:${p}`), "--cluster-replicas", "0", "--cluster-yes"],
      { encoding: "utf8", timeout: 20_000 },
    );
    if (create.status !== 0) throw new Error(`redis-cli --cluster create failed: ${create.stdout}${create.stderr}`);
    const deadline = Date.now() + 15_000;
    for (;;) {
      const info = spawnSync("redis-cli", ["-p", String(ports[0]), "cluster", "info"], { encoding: "utf8", timeout: 5_000 });
      if (/cluster_state:ok/.test(info.stdout) && /cluster_slots_ok:16384/.test(info.stdout)) break;
      if (Date.now() > deadline) throw new Error(`the cluster did not become ok: ${info.stdout}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  } catch (e) {
    await Promise.all(nodes.map((n) => n.stop()));
    throw e;
  }
  return {
    ports,
    url: `redis+cluster://${ports.map((p) => `127.0.0.1:${p}`).join(",")}`,
    async stop() {
      await Promise.all(nodes.map((n) => n.stop()));
    },
  };
}

/** How the balancer reaches the instances: h2c, or TLS verified against `caFile` (so a session may be HIGH). */
export interface BackendTls {
  caFile: string;
}

/** The HAProxy configuration of docs/deploy/haproxy.cfg for a frontend port and backend ports. */
export function haproxyConfig(frontendPort: number, backendPorts: readonly number[], tls?: BackendTls): string {
  const template = readFileSync(join(REPO, "docs/deploy/haproxy.cfg"), "utf8");
  // With TLS, ALPN picks h2 (docs/deploy.md "HAProxy": terminate TLS on the instances to grant HIGH).
  const to = tls === undefined ? "proto h2" : `ssl verify required ca-file ${tls.caFile} alpn h2`;
  const servers = backendPorts.map((p, i) => `    server s${i + 1} 127.0.0.1:${p} ${to} check inter 500 fall 1 rise 1`).join("\n");
  return template.replace("@FRONTEND@", `127.0.0.1:${frontendPort}`).replace("@SERVERS@", servers);
}

/** Runs HAProxy in the foreground with `haproxyConfig(...)` written into `dir`. */
export async function startHaproxy(dir: string, frontendPort: number, backendPorts: readonly number[], tls?: BackendTls): Promise<Proc> {
  const cfg = join(dir, "haproxy.cfg");
  writeFileSync(cfg, haproxyConfig(frontendPort, backendPorts, tls));
  const check = spawnSync("haproxy", ["-c", "-f", cfg], { encoding: "utf8" });
  if (check.status !== 0) throw new Error(`haproxy rejected the configuration: ${check.stdout}${check.stderr}`);
  const p = startProc("haproxy", ["-db", "-f", cfg], dir);
  await waitForPort(frontendPort, "haproxy");
  return p;
}

/** How nginx is started: `edit` changes its configuration (a test of one setting); `tls` as for HAProxy. */
export interface NginxOptions {
  edit?: (conf: string) => string;
  tls?: BackendTls;
}

/** The nginx configuration of docs/deploy/nginx.conf for a listen port and backend ports. */
export function nginxConfig(listenPort: number, backendPorts: readonly number[], options: NginxOptions = {}): string {
  const template = readFileSync(join(REPO, "docs/deploy/nginx.conf"), "utf8");
  // max_fails=0 as docs/deploy.md "nginx" says: a refused connection is retried on the other
  // instance, and no instance is ever marked down (a long session stream would keep it down).
  const servers = backendPorts.map((p) => `    server 127.0.0.1:${p} max_fails=0;`).join("\n");
  let conf = template.replace("@LISTEN@", `127.0.0.1:${listenPort}`).replaceAll("@SERVERS@", servers);
  const tls = options.tls;
  if (tls !== undefined) {
    // TLS to the instances, verified (docs/deploy.md "nginx": so a session may be HIGH).
    const verify = (m: string) => `${m}_ssl_verify on;\n        ${m}_ssl_trusted_certificate ${tls.caFile};\n        ${m}_ssl_name localhost;`;
    conf = conf
      .replace("grpc_pass grpc://mcp_servers;", `grpc_pass grpcs://mcp_servers;\n        ${verify("grpc")}`)
      .replace("proxy_pass http://mcp_http;", `proxy_pass https://mcp_http;\n        ${verify("proxy")}`);
  }
  return (options.edit ?? ((c) => c))(conf);
}

/**
 * Runs nginx in the foreground (`-p dir -g 'daemon off;'`) with `nginxConfig(...)` included
 * from a main configuration whose pid file, logs and temp paths are all in `dir`.
 */
export async function startNginx(dir: string, listenPort: number, backendPorts: readonly number[], options: NginxOptions = {}): Promise<Proc> {
  writeFileSync(join(dir, "mcp.conf"), nginxConfig(listenPort, backendPorts, options));
  const main = join(dir, "nginx.conf");
  writeFileSync(
    main,
    [
      "pid nginx.pid;",
      "error_log stderr notice;",
      "worker_processes 1;",
      "events { worker_connections 1024; }",
      "http {",
      "    access_log off;",
      ...["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((t) => `    ${t}_temp_path ${join(dir, `${t}_temp`)};`),
      `    include ${join(dir, "mcp.conf")};`,
      "}",
      "",
    ].join("\n"),
  );
  // `-e`: nginx opens its compiled-in error log before reading the configuration.
  const base = ["-p", dir, "-e", "stderr", "-c", main];
  const check = spawnSync("nginx", [...base, "-t"], { encoding: "utf8" });
  if (check.status !== 0) throw new Error(`nginx rejected the configuration: ${check.stdout}${check.stderr}`);
  const p = startProc("nginx", [...base, "-g", "daemon off;"], dir);
  await waitForPort(listenPort, "nginx");
  return p;
}

/** Which load balancer `startScaleout` puts in front of the instances. */
export type Balancer = "haproxy" | "nginx";

/** Two (or more) `mcp serve` on one private Redis behind HAProxy or nginx, for the scale-out tests. */
export interface Scaleout {
  readonly dir: string;
  /** The balancer's URL (h2c). */
  readonly lb: string;
  readonly instances: CliServer[];
  /** The PEM of the instances' self-signed certificate (with `tls`). */
  readonly ca: string | undefined;
  readonly redisPort: number;
  readonly redis: Proc;
  /**
   * (Re)starts instance `i` on its port; once the balancer runs, resolves only when it routes new
   * sessions to `i` again (HAProxy re-admits a server at its next health check, up to 500 ms
   * later: a test that went on at once could find no server up after stopping the other one).
   */
  startInstance(i: number): Promise<void>;
  /** Stops Redis (SIGTERM) and starts it again on its port and data; resolves with the old exit code. */
  restartRedis(onDown?: () => Promise<void>): Promise<number | null>;
  /** Which instance holds a session (ghosts running its commands do not count); -1 if none. */
  holderOf(sessionId: string): Promise<number>;
  token(subject?: string, roles?: string[]): Promise<string>;
  stop(): Promise<void>;
}

/**
 * Starts Redis, `count` instances and the balancer (`balancer`, default HAProxy); `store`
 * replaces the private Redis as the instances' `--store` (e.g. a Sentinel deployment). With `tls`,
 * the instances speak TLS and the balancer verifies them (sessions may be HIGH, e.g.
 * for `exec`; tokens then carry `mcp_level: high`).
 */
export async function startScaleout(options: { secret: string; tls?: boolean; args?: readonly string[]; count?: number; balancer?: Balancer; store?: string }): Promise<Scaleout> {
  const balancer = options.balancer ?? "haproxy";
  const d = await tempDir("mcp-scaleout-");
  const cert = options.tls === true ? await selfSignedCert(d.path) : undefined;
  const redisPort = await freePort();
  let redis = await startRedis(d.path, redisPort);
  const ports: number[] = [];
  for (let i = 0; i < (options.count ?? 2); i++) ports.push(await freePort());
  const instances: CliServer[] = [];
  const token = (subject = "dana", roles = ["developer"]) =>
    mintToken({ secret: options.secret, subject, roles, ttlSec: 600, issuer: "mcp", audience: "mcp", ...(cert === undefined ? {} : { level: "high" as const }) });
  const ca = cert === undefined ? undefined : readFileSync(cert.cert, "utf8");
  async function startInstance(i: number): Promise<void> {
    const tls = cert === undefined ? [] : ["--tls-cert", cert.cert, "--tls-key", cert.key];
    instances[i] = await startCli(
      ["--port", String(ports[i]), "--store", options.store ?? `redis://127.0.0.1:${redisPort}`, "--jwt-secret", options.secret, ...tls, ...(options.args ?? [])],
      { cwd: d.path, timeoutMs: 30_000 },
    );
  }
  await Promise.all(ports.map((_, i) => startInstance(i)));
  const lbPort = await freePort();
  const lbProc =
    balancer === "nginx"
      ? await startNginx(d.path, lbPort, ports, cert === undefined ? {} : { tls: { caFile: cert.cert } })
      : await startHaproxy(d.path, lbPort, ports, cert === undefined ? undefined : { caFile: cert.cert });
  /** Opens sessions through the balancer until one lands on instance `i`. */
  async function routedTo(i: number): Promise<void> {
    const client = createMcpClient({ baseUrl: `http://127.0.0.1:${lbPort}`, token: await token() });
    try {
      const deadline = Date.now() + 10_000;
      for (;;) {
        const session = await client.connect({ heartbeatIntervalMs: 0 }).catch(() => undefined);
        const at = session === undefined ? -1 : await s.holderOf(session.sessionId);
        await session?.close();
        if (at === i) return;
        if (Date.now() > deadline) throw new Error(`the balancer did not route to instance ${i} within 10 s of its restart`);
        await new Promise((r) => setTimeout(r, 100));
      }
    } finally {
      client.close();
    }
  }
  const s: Scaleout = {
    dir: d.path,
    lb: `http://127.0.0.1:${lbPort}`,
    instances,
    ca,
    redisPort,
    get redis() {
      return redis;
    },
    async startInstance(i) {
      await startInstance(i);
      await routedTo(i);
    },
    async restartRedis(onDown) {
      const code = await redis.stop();
      await onDown?.();
      redis = await startRedis(d.path, redisPort);
      return code;
    },
    async holderOf(sessionId) {
      const admin = await token("root", ["admin"]);
      for (let i = 0; i < instances.length; i++) {
        const c = createClient(AdminService, transportFor("grpc-h2", instances[i]!.url, ca));
        const r = await c.listSessions({}, { headers: { authorization: `Bearer ${admin}` } }).catch(() => undefined);
        if (r?.sessions.some((x) => x.sessionId === sessionId)) return i;
      }
      return -1;
    },
    token,
    async stop() {
      await lbProc.stop();
      await Promise.all(instances.map((i) => i.close()));
      await redis.stop();
      await d.remove();
    },
  };
  return s;
}
