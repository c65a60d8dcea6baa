/**
 * Context leases (issue 15, `ContextPut.lease = CONTEXT_LEASE_SESSION`): a key bound to a session
 * disappears — in one new version that every watcher sees — when that session ends for good:
 * closed by its client (SessionClose), revoked, or not resumed within its resume window. Memory and SQLite on one instance; Redis
 * with the writer on one instance and the watcher on another.
 */
import { create } from "@bufbuild/protobuf";
import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";
import { ContextLease, ContextUpdateSchema } from "../../gen/mcp/v1/context_pb.js";
import type { ServerMessage } from "../../gen/mcp/v1/session_pb.js";
import { createMcpClient, fromConnectError } from "../../src/client/index.js";
import { openReader, sessionIdOf, type SessionReader } from "../helpers/command-tools.js";
import { handshake, startServer, type TestServer } from "../helpers/server.js";
import { tempDir } from "./helpers.js";
import { freePort, haveProgram, startRedis, type Proc } from "./scaleout-fixtures.js";

const str = (value: string) => ({ kind: { case: "stringValue" as const, value } });
const RESUME_TTL_MS = 400;

/** A writer session holding `editing` under a lease and `notes` without one; a watcher on `watchOn`. */
async function leaseScenario(writeOn: TestServer, watchOn: TestServer, contextId: string) {
  const writer = await openReader(writeOn.url, handshake(await writeOn.token("agent")));
  const writerId = sessionIdOf(writer);
  writer.send({
    case: "update",
    value: {
      id: "u1",
      contextId,
      ops: [
        { op: { case: "put", value: { key: "editing", value: str("src/x.ts"), lease: ContextLease.SESSION } } },
        { op: { case: "put", value: { key: "notes", value: str("stay") } } },
      ],
    },
  });
  const ack = await writer.waitFor((m) => m.message.case === "updateResult" || m.message.case === "error", "the update's result");
  expect(ack.message.case).toBe("updateResult");
  const watcher = await openReader(watchOn.url, handshake(await watchOn.token("observer")));
  watcher.send({ case: "sync", value: { contextId, knownVersion: 0n, watch: true } });
  const first = await watcher.waitFor((m) => m.message.case === "contextSync", "the first ContextSync");
  expect(first.message.case === "contextSync" && first.message.value.entries.map((e) => e.key).sort()).toEqual(["editing", "notes"]);
  return { writer, writerId, watcher };
}

/** The one delta that removes the lease key, and that nothing else changed. */
async function expectLeaseGone(watcher: SessionReader, contextId: string, watchOn: TestServer): Promise<void> {
  const isDelta = (m: ServerMessage) => m.message.case === "contextSync" && m.message.value.deletedKeys.length > 0;
  const gone = await watcher.waitFor(isDelta, "the delta deleting the leased key", 10_000);
  if (gone.message.case !== "contextSync") throw new Error("unreachable");
  expect(gone.message.value).toMatchObject({ contextId, fromVersion: 1n, toVersion: 2n, full: false, deletedKeys: ["editing"], entries: [] });
  const snap = await createMcpClient({ baseUrl: watchOn.url, token: await watchOn.token("observer") }).contexts.getContext({ contextId });
  expect([snap.toVersion, snap.entries.map((e) => e.key)]).toEqual([2n, ["notes"]]);
}

const servers: TestServer[] = [];
const readers: SessionReader[] = [];
afterEach(async () => {
  for (const r of readers.splice(0)) r.close();
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

describe("context leases on one instance", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  beforeAll(async () => {
    dir = await tempDir("mcp-leases-");
  });
  afterAll(async () => dir?.remove());

  for (const store of ["memory", "sqlite"] as const) {
    const spec = () => (store === "memory" ? "memory" : `sqlite:${dir.path}/${Math.random().toString(36).slice(2)}.db`);

    test(`${store}: the leased key disappears in one version when the session is not resumed within its window`, async () => {
      const s = await startServer({ store: spec(), resumeTtlMs: RESUME_TTL_MS });
      servers.push(s);
      const { writer, watcher } = await leaseScenario(s, s, "doc");
      readers.push(watcher);
      writer.close(); // detached; nobody resumes it
      await expectLeaseGone(watcher, "doc", s);
    });

    test(`${store}: the leased key disappears in one version when its client closes the session (SessionClose)`, async () => {
      // A resume window far past the wait: only the close can end the session in time.
      const s = await startServer({ store: spec(), resumeTtlMs: 600_000 });
      servers.push(s);
      const { writer, watcher } = await leaseScenario(s, s, "doc");
      readers.push(watcher);
      writer.send({ case: "close", value: {} });
      await writer.ended;
      await expectLeaseGone(watcher, "doc", s);
    });

    test(`${store}: the leased key disappears in one version when the session is revoked`, async () => {
      const s = await startServer({ store: spec() });
      servers.push(s);
      const { writer, writerId, watcher } = await leaseScenario(s, s, "doc");
      readers.push(writer, watcher);
      await createMcpClient({ baseUrl: s.url, token: await s.token("root", ["admin"]) }).admin.revokeSession({ sessionId: writerId });
      await expectLeaseGone(watcher, "doc", s);
    });
  }

  test("a resumed session keeps its lease; a put without a lease unbinds the key", async () => {
    const s = await startServer({ store: "memory", resumeTtlMs: RESUME_TTL_MS });
    servers.push(s);
    const tok = await s.token("agent");
    const { writer, writerId, watcher } = await leaseScenario(s, s, "doc");
    readers.push(watcher);
    const seq = writer.messages.at(-1)!.seq;
    writer.close();
    const again = await openReader(s.url, handshake(tok, { resume: { sessionId: writerId, lastSeq: seq } }));
    readers.push(again);
    await again.waitFor((m) => m.message.case === "handshakeResult", "the resume");
    // Rebound without a lease: it outlives the session now.
    again.send({ case: "update", value: { id: "u2", contextId: "doc", ops: [{ op: { case: "put", value: { key: "editing", value: str("kept") } } }] } });
    await again.waitFor((m) => m.message.case === "updateResult", "the second update");
    await createMcpClient({ baseUrl: s.url, token: await s.token("root", ["admin"]) }).admin.revokeSession({ sessionId: writerId });
    await again.ended;
    const snap = await createMcpClient({ baseUrl: s.url, token: tok }).contexts.getContext({ contextId: "doc" });
    expect([snap.toVersion, snap.entries.map((e) => e.key).sort()]).toEqual([2n, ["editing", "notes"]]);
  });

  test("a lease on a unary UpdateContext (no session) is refused: COMMAND invalid_argument", async () => {
    const s = await startServer({ store: "memory" });
    servers.push(s);
    const c = createMcpClient({ baseUrl: s.url, token: await s.token() });
    const failure: unknown = await c.contexts
      .updateContext(create(ContextUpdateSchema, { contextId: "doc", ops: [{ op: { case: "put", value: { key: "k", value: str("v"), lease: ContextLease.SESSION } } }] }))
      .then(() => undefined, (e: unknown) => e);
    const err = fromConnectError(failure);
    expect([err?.kind, err?.code, err?.details]).toMatchObject(["COMMAND", "invalid_argument", { field: "ops[0].put.lease" }]);
  });
});

describe.runIf(haveProgram("redis-server"))("context leases across two instances on Redis", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let redis: Proc;
  let url: string;
  beforeAll(async () => {
    dir = await tempDir("mcp-leases-redis-");
    const port = await freePort();
    redis = await startRedis(dir.path, port);
    url = `redis://127.0.0.1:${port}`;
  }, 30_000);
  afterAll(async () => {
    await redis?.stop();
    await dir?.remove();
  });

  test("resume window passes on A: the watcher on B sees the leased key go in one version", async () => {
    const a = await startServer({ store: url, resumeTtlMs: RESUME_TTL_MS });
    const b = await startServer({ store: url, resumeTtlMs: RESUME_TTL_MS });
    servers.push(a, b);
    const { writer, watcher } = await leaseScenario(a, b, "shared-ttl");
    readers.push(watcher);
    writer.close();
    await expectLeaseGone(watcher, "shared-ttl", b);
  });

  test("closed by its client on A (SessionClose): the watcher on B sees the leased key go in one version, a resume on B is session_expired", async () => {
    const a = await startServer({ store: url, resumeTtlMs: 600_000 });
    const b = await startServer({ store: url, resumeTtlMs: 600_000 });
    servers.push(a, b);
    const tok = await a.token("agent");
    const { writer, writerId, watcher } = await leaseScenario(a, b, "shared-close");
    readers.push(watcher);
    const seq = writer.messages.at(-1)!.seq;
    writer.send({ case: "close", value: {} });
    await writer.ended;
    await expectLeaseGone(watcher, "shared-close", b);
    const onB = await openReader(b.url, handshake(tok, { resume: { sessionId: writerId, lastSeq: seq } }));
    readers.push(onB);
    expect(onB.first?.message.case === "error" && onB.first.message.value).toMatchObject({ code: "session_expired" });
  });

  test("revoked through B while it lives on A: the watcher on B sees the leased key go in one version", async () => {
    const a = await startServer({ store: url });
    const b = await startServer({ store: url });
    servers.push(a, b);
    const { writer, writerId, watcher } = await leaseScenario(a, b, "shared-revoke");
    readers.push(writer, watcher);
    await createMcpClient({ baseUrl: b.url, token: await b.token("root", ["admin"]) }).admin.revokeSession({ sessionId: writerId });
    await expectLeaseGone(watcher, "shared-revoke", b);
  });

  test("its instance is gone and nobody resumes it: another instance reaps it after the window, the key goes", async () => {
    const a = await startServer({ store: url, resumeTtlMs: RESUME_TTL_MS });
    const b = await startServer({ store: url, resumeTtlMs: RESUME_TTL_MS });
    servers.push(b);
    const { writer, watcher } = await leaseScenario(a, b, "shared-orphan");
    readers.push(writer, watcher);
    // A shuts down: its sessions stay parked in Redis for a resume that never comes.
    await a.close();
    await expectLeaseGone(watcher, "shared-orphan", b);
  });

  test("a session that moved from A to B keeps its lease; it ends on B and the key goes", async () => {
    const a = await startServer({ store: url, resumeTtlMs: 30_000 });
    const b = await startServer({ store: url, resumeTtlMs: RESUME_TTL_MS });
    servers.push(a, b);
    const tok = await a.token("agent");
    const { writer, writerId, watcher } = await leaseScenario(a, b, "shared-moved");
    readers.push(watcher);
    const seq = writer.messages.at(-1)!.seq;
    writer.close();
    const onB = await openReader(b.url, handshake(tok, { resume: { sessionId: writerId, lastSeq: seq } }));
    const hr = await onB.waitFor((m) => m.message.case === "handshakeResult", "the resume on B", 10_000);
    expect(hr.message.case === "handshakeResult" && hr.message.value.resumed).toBe(true);
    // Handing off to B deleted nothing; B's window then passes.
    onB.close();
    await expectLeaseGone(watcher, "shared-moved", b);
  });
});
