/**
 * The reconnecting TypeScript client through HAProxy (issue 15): the instance holding its session
 * is SIGKILLed or SIGTERMed, and the client resumes on the other instance by itself. Every call
 * settles exactly once, and the watch goes on from its known version on the new instance (every
 * version in order, no gap, no duplicate).
 */
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import type { ContextSync } from "../../gen/mcp/v1/context_pb.js";
import { createMcpClient, type SessionStateChange } from "../../src/client/index.js";
import { eventually } from "../helpers/eventually.js";
import { haveProgram, startScaleout, type Scaleout } from "./scaleout-fixtures.js";

const SECRET = "scaleout-client-secret-0123456789-0123456789";
const ok = haveProgram("haproxy") && haveProgram("redis-server");
const put = (key: string, v: number) => ({ op: { case: "put" as const, value: { key, value: { kind: { case: "numberValue" as const, value: v } } } } });

describe.runIf(ok)("the reconnecting client behind HAProxy when the instance holding its session goes away", () => {
  let x: Scaleout;
  beforeAll(async () => {
    x = await startScaleout({ secret: SECRET, args: ["--resume-ttl-ms", "30000", "--shutdown-grace-ms", "5000"] });
  }, 90_000);
  afterAll(async () => {
    await x?.stop();
  });

  for (const signal of ["SIGKILL", "SIGTERM"] as const) {
    test(`${signal}: the client resumes on the other instance; every call settles once; the watch continues`, async () => {
      const contextId = `client-${signal}`;
      const changes: SessionStateChange[] = [];
      const s = await createMcpClient({ baseUrl: x.lb, token: await x.token() }).connect({
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
      await x.startInstance(holder);
    }, 90_000);
  }
});
