/**
 * The client's HTTP/2 receive windows (src/client/h2-connect.ts): a server may send 4 MiB on a
 * stream (16 MiB on the connection) before the client acknowledges, instead of HTTP/2's 64 KiB.
 */
import { createServer, type Http2Server } from "node:http2";
import type { AddressInfo } from "node:net";
import { afterEach, expect, test } from "vitest";
import { connectH2 } from "../../src/client/h2-connect.js";

let server: Http2Server | undefined;
afterEach(() => new Promise<void>((resolve) => (server === undefined ? resolve() : server.close(() => resolve()))));

test("a server sends 3 MiB on a stream the client does not read: nothing waits for a window update", async () => {
  const sent = Buffer.alloc(3 * 1024 * 1024, 7);
  let flushed: Promise<void> | undefined;
  server = createServer();
  server.on("stream", (stream) => {
    stream.respond({ ":status": 200 });
    // The write's callback runs once nghttp2 took every byte onto the wire: with 64 KiB windows it
    // would wait for the client to read.
    flushed = new Promise((resolve) => stream.write(sent, () => resolve()));
  });
  await new Promise<void>((resolve) => server!.listen(0, "127.0.0.1", resolve));
  const session = connectH2(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  try {
    await new Promise((resolve) => session.once("localSettings", resolve));
    const req = session.request({ ":path": "/" });
    req.pause();
    await new Promise((resolve) => req.once("response", resolve));
    await expect.poll(() => flushed !== undefined, { timeout: 5000 }).toBe(true);
    const timeout = new Promise<string>((resolve) => setTimeout(() => resolve("still waiting for a window"), 3000));
    expect(await Promise.race([flushed!.then(() => "sent"), timeout])).toBe("sent");
    let received = 0;
    req.on("data", (d: Buffer) => (received += d.length));
    req.resume();
    await expect.poll(() => received, { timeout: 5000 }).toBe(sent.length);
  } finally {
    session.destroy();
  }
});
