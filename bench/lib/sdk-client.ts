/**
 * The official Model Context Protocol SDK's client as bench:compare and bench:bridge use it: one
 * `Client` (the docs' `new Client({ name, version })` + `connect(transport)`), and `callTool` of
 * `echo` as an Opener — "N in flight" is N concurrent `callTool`s on that one client.
 */
import { Client, type Transport } from "@modelcontextprotocol/client";
import type { Opener } from "./drive.js";

/**
 * The protocol revision the client pins (BENCH_SDK_VERSION): `2026-07-28`, the one SDK v2
 * implements (per-request, no session), by default; `legacy` for the client's default 2025
 * `initialize` handshake.
 */
export const SDK_VERSION = process.env["BENCH_SDK_VERSION"] ?? "2026-07-28";

/**
 * A connected client that has had one `echo` answered: over stdio a pinned connect probes on a
 * sibling process and spawns the session's own server only afterwards, so without this call its
 * start-up (seconds through tsx) would fall into the first measured window.
 */
export async function connectSdkClient(transport: Transport): Promise<Client> {
  const client =
    SDK_VERSION === "legacy"
      ? new Client({ name: "bench", version: "1.0.0" })
      : new Client({ name: "bench", version: "1.0.0" }, { versionNegotiation: { mode: { pin: SDK_VERSION } } });
  await client.connect(transport);
  const r = await client.callTool({ name: "echo", arguments: { text: "ready?" } });
  if (echoedText(r) !== "ready?") throw new Error(`unexpected echo result ${JSON.stringify(r)}`);
  return client;
}

/** The text an echo answered: `structuredContent.text` (our /mcp bridge), else the first text block (the SDK's echo). */
export function echoedText(result: { content?: unknown; structuredContent?: unknown }): string | undefined {
  const structured = (result.structuredContent as { text?: unknown } | undefined)?.text;
  if (typeof structured === "string") return structured;
  const first = Array.isArray(result.content) ? (result.content[0] as { type?: unknown; text?: unknown } | undefined) : undefined;
  return first?.type === "text" && typeof first.text === "string" ? first.text : undefined;
}

/** `callTool("echo", { text })` on one client; exits on a failed or wrong answer. */
export function sdkOpener(client: Client, text: string): Opener {
  const failed = (e: unknown) => {
    console.error("SDK callTool failed:", e);
    process.exit(1);
  };
  return (done) => ({
    send: () => {
      client.callTool({ name: "echo", arguments: { text } }).then((r) => (echoedText(r) === text ? done() : failed(new Error(`unexpected echo result ${JSON.stringify(r)}`))), failed);
    },
    close: () => {},
  });
}
