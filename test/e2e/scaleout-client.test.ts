/**
 * The reconnecting TypeScript client through HAProxy (issue 15): the instance holding its session
 * is SIGKILLed or SIGTERMed, and the client resumes on the other instance by itself. Every call
 * settles exactly once, and the watch goes on from its known version on the new instance (every
 * version in order, no gap, no duplicate).
 */
import { afterAll, beforeAll, describe, test } from "vitest";
import { haveProgram, startScaleout, type Scaleout } from "./scaleout-fixtures.js";
import { resumesAfterHolderGoes } from "./scaleout-resume.js";

const SECRET = "scaleout-client-secret-0123456789-0123456789";
const ok = haveProgram("haproxy") && haveProgram("redis-server");

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
      await resumesAfterHolderGoes(x, signal, `client-${signal}`);
    }, 90_000);
  }
});
