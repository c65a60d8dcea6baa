/**
 * Scale-out behind nginx (issue 15): two real `mcp serve` processes on one private Redis behind a
 * real nginx (round-robin, grpc_pass h2c to the backends, no stickiness — the config is
 * docs/deploy/nginx.conf). The reconnecting TS client's session stream passes through nginx and
 * resumes on the other instance after its holder is SIGKILLed, then after its holder is
 * SIGTERMed (drained) — in that order on one nginx: the second failover finds the instance
 * restarted after the first, which nginx's default `max_fails` would still hold out (502 "no live
 * upstreams", docs/deploy.md "nginx"); gRPC health through nginx, also while an instance drains;
 * unary Execute passes with both protocols and a message above nginx's default body limit, and
 * fails with `TRANSPORT message_too_large` above a small one (nginx's 413); with both backends
 * down the client gets `TRANSPORT connection_lost`, retryable. With TLS from nginx to the
 * instances (grpcs, HIGH sessions), a Cancel reaches the instance running an `exec` after the
 * session moved.
 */
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { existsSync, readFileSync } from "node:fs";
import { connect } from "node:http2";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { Health, HealthCheckResponse_ServingStatus as ServingStatus } from "../../gen/grpc/health/v1/health_pb.js";
import { ServerReflection } from "../../gen/grpc/reflection/v1/reflection_pb.js";
import { ErrorKind } from "../../gen/mcp/v1/error_pb.js";
import { SecurityLevel } from "../../gen/mcp/v1/types_pb.js";
import { createMcpClient } from "../../src/client/index.js";
import { args, errorOf, openReader, sessionIdOf, type SessionReader } from "../helpers/command-tools.js";
import { eventually } from "../helpers/eventually.js";
import { mcpFailure } from "../helpers/mcp-failure.js";
import { handshake } from "../helpers/server.js";
import { tempDir } from "./helpers.js";
import { freePort, haveProgram, startNginx, startScaleout, type Scaleout } from "./scaleout-fixtures.js";
import { resumesAfterHolderGoes } from "./scaleout-resume.js";

/** GET `path` over HTTP/2 with prior knowledge (nginx's cleartext `listen … http2` speaks nothing else). */
async function h2get(base: string, path: string): Promise<{ status: number; text: string }> {
  const session = connect(base);
  try {
    return await new Promise((resolve, reject) => {
      const req = session.request({ ":path": path });
      let status = 0;
      let text = "";
      req.setEncoding("utf8");
      req.on("response", (h) => (status = Number(h[":status"])));
      req.on("data", (c: string) => (text += c));
      req.on("end", () => resolve({ status, text }));
      req.on("error", reject);
      req.end();
    });
  } finally {
    session.close();
  }
}

const SECRET = "scaleout-nginx-secret-0123456789-0123456789";
const ok = haveProgram("nginx") && haveProgram("redis-server");

describe.runIf(ok)("two mcp serve instances on one Redis behind nginx", () => {
  let x: Scaleout;
  beforeAll(async () => {
    x = await startScaleout({ secret: SECRET, balancer: "nginx", args: ["--resume-ttl-ms", "30000", "--shutdown-grace-ms", "5000"] });
    // Both backends in rotation: round-robin puts consecutive sessions on different instances.
    const client = createMcpClient({ baseUrl: x.lb, token: await x.token() });
    await eventually(
      async () => {
        const seen = new Set<number>();
        for (let k = 0; k < 4; k++) {
          const s = await client.connect();
          seen.add(await x.holderOf(s.sessionId));
          s.close();
        }
        return seen.size === 2;
      },
      "nginx to route sessions to both instances",
      15_000,
    );
    client.close();
  }, 90_000);
  afterAll(async () => {
    await x?.stop();
  });

  for (const signal of ["SIGKILL", "SIGTERM"] as const) {
    test(`${signal} of the instance holding a session: the client resumes through nginx on the other; every call settles once; the watch continues`, async () => {
      await resumesAfterHolderGoes(x, signal, `nginx-${signal}`);
    }, 90_000);
  }

  for (const protocol of ["connect", "grpc"] as const) {
    test(`unary Execute through nginx (${protocol}), also with a 2 MiB message (above nginx's default 1 MiB body limit)`, async () => {
      const client = createMcpClient({ baseUrl: x.lb, token: await x.token(), protocol });
      expect(await client.call("echo", { text: "hi" })).toEqual({ text: "hi" });
      const big = "x".repeat(2 * 1024 * 1024);
      expect(await client.call("echo", { text: big })).toEqual({ text: big });
      client.close();
    }, 30_000);
  }

  test("gRPC health through nginx: SERVING; a Watch on the instance SIGTERMed says NOT_SERVING, Checks meanwhile are answered by the other; /readyz beside gRPC", async () => {
    const health = createClient(Health, createGrpcTransport({ baseUrl: x.lb }));
    for (const service of ["", "mcp.v1.SessionService"]) expect((await health.check({ service })).status, service).toBe(ServingStatus.SERVING);
    // /readyz goes through `location /` (proxy_pass, HTTP/1.1 to the instances), interleaved with
    // gRPC (grpc_pass, HTTP/2): with one upstream for both, nginx handed a cached HTTP/2
    // connection to /readyz, which hung (docs/deploy/nginx.conf "mcp_http").
    for (let k = 0; k < 4; k++) {
      expect(await h2get(x.lb, "/readyz")).toEqual({ status: 200, text: "ready\n" });
      expect((await health.check({ service: "" })).status).toBe(ServingStatus.SERVING);
    }
    // Round-robin: two consecutive Watches go to different instances, one of them to instance 0.
    const watches = [0, 1].map(() => {
      const ac = new AbortController();
      const seen: ServingStatus[] = [];
      const done = (async () => {
        for await (const r of health.watch({ service: "" }, { signal: ac.signal })) seen.push(r.status);
      })().catch(() => {}); // ends with an error when its instance goes, or when aborted
      return { ac, seen, done };
    });
    await eventually(() => watches.every((w) => w.seen.length === 1), "both Watches to say SERVING");
    expect(watches.map((w) => w.seen)).toEqual([[ServingStatus.SERVING], [ServingStatus.SERVING]]);
    const exited = new Promise((r) => x.instances[0]!.proc.once("exit", r));
    x.instances[0]!.proc.kill("SIGTERM");
    await eventually(() => watches.some((w) => w.seen.includes(ServingStatus.NOT_SERVING)), "a Watch to say NOT_SERVING", 10_000);
    // The draining instance refuses new connections: nginx sends each Check to the other one.
    for (let k = 0; k < 4; k++) expect((await health.check({ service: "" })).status).toBe(ServingStatus.SERVING);
    await exited;
    for (const w of watches) w.ac.abort();
    await Promise.all(watches.map((w) => w.done));
    expect(watches.map((w) => w.seen).sort((a, b) => b.length - a.length)).toEqual([[ServingStatus.SERVING, ServingStatus.NOT_SERVING], [ServingStatus.SERVING]]);
    await x.startInstance(0);
  }, 60_000);

  test("gRPC reflection through nginx (a bidi stream on grpc_pass) lists the services", async () => {
    const reflection = createClient(ServerReflection, createGrpcTransport({ baseUrl: x.lb }));
    async function* listServices() {
      yield { host: "", messageRequest: { case: "listServices" as const, value: "" } };
    }
    const names: string[] = [];
    for await (const r of reflection.serverReflectionInfo(listServices())) {
      if (r.messageResponse.case === "listServicesResponse") names.push(...r.messageResponse.value.service.map((x) => x.name));
    }
    expect(names).toEqual(expect.arrayContaining(["mcp.v1.SessionService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"]));
  }, 30_000);

  test("a unary Execute above client_max_body_size (1k here): nginx's HTTP 413 → TRANSPORT message_too_large at once, not retryable", async () => {
    const d = await tempDir("mcp-nginx-413-");
    const port = await freePort();
    const backends = x.instances.map((i) => Number(new URL(i.url).port));
    const nginx = await startNginx(d.path, port, backends, { edit: (c) => c.replace("client_max_body_size 0;", "client_max_body_size 1k;") });
    try {
      for (const protocol of ["grpc", "connect"] as const) {
        const client = createMcpClient({ baseUrl: `http://127.0.0.1:${port}`, token: await x.token(), protocol });
        expect(await client.call("echo", { text: "small" }), protocol).toEqual({ text: "small" });
        const err = await mcpFailure(client.call("echo", { text: "x".repeat(2 * 1024 * 1024) }));
        expect([err.kind, err.code, err.retryable], `${protocol}: ${err.message}`).toEqual(["TRANSPORT", "message_too_large", false]);
        client.close();
      }
    } finally {
      await nginx.stop();
      await d.remove();
    }
  }, 30_000);

  test("both backends down: unary Execute and connect() through nginx fail with TRANSPORT connection_lost, retryable", async () => {
    await Promise.all(x.instances.map((i) => i.close()));
    for (const protocol of ["connect", "grpc"] as const) {
      const client = createMcpClient({ baseUrl: x.lb, token: await x.token(), protocol });
      const err = await mcpFailure(client.call("echo", { text: "x" }));
      expect([err.kind, err.code, err.retryable], `${protocol}: ${err.message}`).toEqual(["TRANSPORT", "connection_lost", true]);
      const refused = await mcpFailure(client.connect({ reconnect: { maxAttempts: 1 } }));
      expect([refused.kind, refused.code, refused.retryable], refused.message).toEqual(["TRANSPORT", "connection_lost", true]);
      client.close();
    }
  }, 30_000);
});

describe.runIf(ok)("Cancel through nginx with TLS to the instances (grpcs, so the session is HIGH and may run exec)", () => {
  let x: Scaleout;
  beforeAll(async () => {
    x = await startScaleout({ secret: SECRET, balancer: "nginx", tls: true, args: ["--exec-enabled", "--resume-ttl-ms", "30000"] });
  }, 90_000);
  afterAll(async () => {
    await x?.stop();
  });
  const hello = (tok: string, extra: Parameters<typeof handshake>[1] = {}) => handshake(tok, { securityLevel: SecurityLevel.HIGH, ...extra });

  test("a Cancel sent after the session moved to the other instance stops the program on the one running it; one cancelled Response", async () => {
    const tok = await x.token();
    const marker = join(x.dir, "nginx-cancel.marker");
    const script = `trap 'echo term > ${marker}; exit 3' TERM; echo started; sleep 60 & wait`;
    const r = await openReader(x.lb, hello(tok));
    const sessionId = sessionIdOf(r);
    const runner = await x.holderOf(sessionId);
    expect(runner).toBeGreaterThanOrEqual(0);
    r.send({ case: "command", value: { id: "long", tool: "exec", payload: args({ argv: ["sh", "-c", script] }), timeoutMs: 120_000 } });
    await r.waitFor((m) => m.message.case === "event" && m.message.value.type === "command.output", "the program to start", 15_000);
    let lastSeq = r.messages.at(-1)!.seq;
    r.close();
    // Round-robin sends the next stream to the other instance; one that lands on the runner
    // again is an ordinary resume there: break it and try again (bounded).
    let again: SessionReader | undefined;
    for (let attempt = 0; attempt < 6 && again === undefined; attempt++) {
      const s = await openReader(x.lb, hello(tok, { resume: { sessionId, lastSeq } }));
      const hr = await s.waitFor((m) => m.message.case === "handshakeResult" || m.message.case === "error", "the resumed HandshakeResult", 15_000);
      expect(hr.message.case === "handshakeResult" && hr.message.value).toMatchObject({ sessionId, resumed: true });
      await eventually(async () => (await x.holderOf(sessionId)) >= 0, "the session to be held again");
      if ((await x.holderOf(sessionId)) !== runner) again = s;
      else {
        lastSeq = s.messages.at(-1)!.seq;
        s.close();
      }
    }
    if (again === undefined) throw new Error("nginx never sent the resume to the other instance");
    again.send({ case: "cancel", value: { commandId: "long" } });
    const cancelled = await again.response("long", 15_000);
    expect([errorOf(cancelled)?.kind, errorOf(cancelled)?.code]).toEqual([ErrorKind.COMMAND, "cancelled"]);
    // The program on the runner got its SIGTERM: the tool's AbortSignal fired there.
    await eventually(() => existsSync(marker) && readFileSync(marker, "utf8").trim() === "term", "the program's SIGTERM trap to write its marker");
    await again.roundTrip(10_000);
    expect(again.responsesOf("long").map((m) => errorOf(m)?.code ?? "output")).toEqual(["cancelled"]);
    again.close();
  }, 90_000);
});
