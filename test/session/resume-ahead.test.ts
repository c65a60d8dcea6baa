/**
 * A crash can lose the last batch of a session's Redis mirror after its client received it
 * (src/session/session-store.ts). The client's `last_seq` is then past the mirror's: the resume on
 * another instance goes on after it — the next message gets a seq the client has not seen —
 * instead of expiring the session. Once attached, a seq past the last one sent is the client's
 * mistake and stays `session_expired`. Needs the shared Redis (its own database, 11, emptied
 * first); skipped loudly outside CI without one.
 */
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { eventually } from "../helpers/eventually.js";
import { handshake, openRawStream, openSession, startServer, type TestServer } from "../helpers/server.js";
import { redisDatabase } from "../helpers/redis-db.js";
import { ErrorKind } from "../../gen/mcp/v1/error_pb.js";

const { url: DB_URL, available: haveRedis } = await redisDatabase(11, "the resume-ahead-of-the-mirror test");

describe.runIf(haveRedis)("a resume whose last_seq is past the mirror", () => {
  let a: TestServer;
  let b: TestServer;
  let redis: Redis;
  beforeAll(async () => {
    [a, b] = await Promise.all([startServer({ store: DB_URL }), startServer({ store: DB_URL })]);
    redis = new Redis(DB_URL);
  });
  afterAll(async () => {
    redis.disconnect();
    await Promise.all([a.close(), b.close()]);
  });

  test("continues after the client's seq on the first resume of a restored session; later, a seq past the last sent is session_expired", async () => {
    const tok = await a.token();
    const { s, sessionId, seq } = await openSession(a.url, tok);
    s.close();
    await eventually(async () => (await redis.exists(`mcp:session:{${sessionId}}`)) === 1, "instance A to park the session");

    // As if the client had received three messages the mirror never got.
    const ahead = seq + 3n;
    const r = openRawStream(b.url);
    r.send(handshake(tok, { resume: { sessionId, lastSeq: ahead } }));
    const hr = await r.next();
    expect(hr?.message.case === "handshakeResult" && hr.message.value.resumed).toBe(true);
    expect(hr?.seq).toBe(ahead + 1n);
    r.send({ case: "ping", value: { id: 7n } });
    const pong = await r.next();
    expect(pong?.message.case).toBe("pong");
    expect(pong?.seq).toBe(ahead + 2n);
    r.close();

    // The session is B's now, attached once since: no seq past its last one is acceptable.
    await eventually(async () => {
      const again = openRawStream(b.url);
      again.send(handshake(tok, { resume: { sessionId, lastSeq: ahead + 10n } }));
      const refused = await again.rest();
      const e = refused.length === 1 && refused[0]!.message.case === "error" ? refused[0]!.message.value : undefined;
      return e?.code === "session_expired" && e.kind === ErrorKind.PROTOCOL;
    }, "session_expired for a seq past the last sent");
  });
});
