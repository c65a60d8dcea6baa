/**
 * A database of its own on the shared test Redis (`REDIS_URL`, default 127.0.0.1:6379), emptied
 * first so earlier runs leave nothing behind. In CI a missing Redis fails the file (.ci/run starts
 * one); elsewhere the file's tests are skipped with a loud notice.
 */
import { Redis } from "ioredis";

/** The database's URL and whether it answered; `what` names the test in the skip notice. */
export async function redisDatabase(db: number, what: string): Promise<{ url: string; available: boolean }> {
  const base = process.env["REDIS_URL"] ?? "redis://127.0.0.1:6379";
  const url = `${base.replace(/\/\d+$/, "")}/${db}`;
  const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  let available = false;
  try {
    await r.connect();
    // ioredis reports a failed SELECT (a db past the server's `databases`) only as an error
    // event and stays on db 0: select explicitly, or flushdb would empty db 0.
    await r.select(db);
    await r.flushdb();
    available = true;
  } catch {
    // not reachable: decided below
  } finally {
    r.disconnect();
  }
  if (!available) {
    if (process.env["CI"] !== undefined) throw new Error(`CI needs Redis at ${url}: .ci/run starts one`);
    console.warn(`\n*** SKIPPING ${what}: no Redis answers at ${url} (set REDIS_URL) ***\n`);
  }
  return { url, available };
}
