/**
 * The reconnecting TypeScript client through a balancer when the instance holding its session
 * goes away (issue 15), shared by the HAProxy and nginx tests: 20 calls answered, the holder killed
 * with `signal`, 20 calls made during the outage and three versions written meanwhile. Every call
 * settles exactly once, the watch goes on from its known version on the other instance (every
 * version in order, no gap, no duplicate), and the session is the other instance's.
 */
import { expect } from "vitest";
import type { ContextSync } from "../../gen/mcp/v1/context_pb.js";
import { createMcpClient, type SessionStateChange } from "../../src/client/index.js";
import { eventually } from "../helpers/eventually.js";
import type { Scaleout } from "./scaleout-fixtures.js";

const put = (key: string, v: number) => ({ op: { case: "put" as const, value: { key, value: { kind: { case: "numberValue" as const, value: v } } } } });

export async function resumesAfterHolderGoes(x: Scaleout, signal: "SIGKILL" | "SIGTERM", contextId: string): Promise<void> {
  const changes: SessionStateChange[] = [];
  const client = createMcpClient({ baseUrl: x.lb, token: await x.token() });
  const s = await client.connect({
    reconnect: { initialDelayMs: 20, maxDelayMs: 200, maxAttempts: 40 },
    onStateChange: (c) => changes.push(c),
  });
  const writer = createMcpClient({ baseUrl: x.lb, token: await x.token("erin") });
  await writer.contexts.updateContext({ contextId, ops: [put("v", 1)] });
  const syncs: ContextSync[] = [];
  void (async () => {
    for await (const c of s.contextSyncs()) syncs.push(c);
  })();
  await s.sync(contextId, 0n, true);
  const holder = await x.holderOf(s.sessionId);
  expect(holder).toBeGreaterThanOrEqual(0);
  const settled = new Map<string, number>();
  const calls: Promise<void>[] = [];
  const callOne = (id: string) =>
    calls.push(
      s.call("echo", { text: id }, { id }).then((out) => {
        expect(out).toEqual({ text: id });
        settled.set(id, (settled.get(id) ?? 0) + 1);
      }),
    );
  for (let i = 0; i < 20; i++) callOne(`before-${i}`);
  await Promise.all(calls);
  // Killed at once: the Redis mirror may not hold the last answers yet (a resume goes on after them).
  const exited = new Promise((r) => x.instances[holder]!.proc.once("exit", r));
  x.instances[holder]!.proc.kill(signal);
  // Calls made while the session is cut off or moving: queued, then sent on the new instance.
  for (let i = 0; i < 20; i++) callOne(`during-${i}`);
  await exited;
  // Versions written while the client was away arrive as a delta on the new instance.
  for (let v = 2; v <= 4; v++) await writer.contexts.updateContext({ contextId, ops: [put("v", v)] });
  await Promise.all(calls);
  expect([...settled.values()].every((n) => n === 1)).toBe(true);
  expect(settled.size).toBe(40);
  await eventually(() => syncs.at(-1)?.toVersion === 4n, "version 4 on the watch", 15_000);
  let at = syncs[0]!.toVersion;
  for (const c of syncs.slice(1)) {
    expect(c.full || c.fromVersion === at, `delta ${c.fromVersion}→${c.toVersion} after ${at}`).toBe(true);
    at = c.toVersion;
  }
  expect(changes.some((c) => c.state === "open" && c.resumed)).toBe(true);
  expect(await x.holderOf(s.sessionId)).toBe(1 - holder);
  s.close();
  client.close();
  writer.close();
  await x.startInstance(holder);
}
