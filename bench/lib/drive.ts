/**
 * The load driver of bench/run.ts and bench/compare.ts: keeps N calls in flight through an
 * `Opener` for a warm-up and a measured window, and reports calls/s and (one in flight) latency.
 */
import type { Child } from "./child.js";

/** Warm-up before each measured window (BENCH_WARMUP_MS). */
export const WARMUP_MS = Number(process.env["BENCH_WARMUP_MS"] ?? 1000);

/** A way to issue one call; `done` must be called once per call when its answer arrived. */
export type Opener = (done: () => void) => { send(): void; close(): void };

export interface DriveResult {
  perSec: number;
  /** Answers received in all, warm-up included (for CPU per call). */
  calls: number;
  p50us: number;
  p99us: number;
}

/**
 * Keeps `inFlight` calls going for warm-up + measure; counts answers in the measure window. With
 * inFlight 1 it records every round trip (sequential latency).
 */
export function drive(open: Opener, inFlight: number, measureMs: number, warmupMs = WARMUP_MS): Promise<DriveResult> {
  return new Promise((resolve) => {
    let measuring = false;
    let stopped = false;
    let count = 0;
    let calls = 0;
    const lat: number[] = [];
    const sentAt: number[] = [];
    let startedAt = 0;
    const t = open(() => {
      calls++;
      if (measuring) count++;
      // The clock only for latency (one in flight): at 64 in flight it would be the driver's own cost.
      if (inFlight === 1) {
        const sent = sentAt.shift();
        if (measuring && sent !== undefined) lat.push(performance.now() - sent);
      }
      if (!stopped) {
        if (inFlight === 1) sentAt.push(performance.now());
        t.send();
      }
    });
    for (let i = 0; i < inFlight; i++) {
      if (inFlight === 1) sentAt.push(performance.now());
      t.send();
    }
    setTimeout(() => {
      measuring = true;
      startedAt = performance.now();
      setTimeout(() => {
        measuring = false;
        stopped = true;
        const elapsed = performance.now() - startedAt;
        // Let the calls still out come back before closing.
        setTimeout(() => {
          t.close();
          lat.sort((a, b) => a - b);
          const q = (p: number) => (lat.length === 0 ? 0 : lat[Math.min(lat.length - 1, Math.floor(p * lat.length))]! * 1000);
          resolve({ perSec: (count * 1000) / elapsed, calls, p50us: q(0.5), p99us: q(0.99) });
        }, 300);
      }, measureMs);
    }, warmupMs);
  });
}

export type CpuDriveResult = DriveResult & { serverUs: number; clientUs: number };

/** A drive plus the CPU time per call (user + system, all threads) of the server process and of this one, the client. */
export async function withCpu(child: Child, run: () => Promise<DriveResult>): Promise<CpuDriveResult> {
  const serverCpu = async () => {
    const { cpu } = await child.ask<{ cpu: NodeJS.CpuUsage }>("cpu");
    return cpu.user + cpu.system;
  };
  const s0 = await serverCpu();
  const c0 = process.cpuUsage();
  const r = await run();
  const c = process.cpuUsage(c0);
  const s1 = await serverCpu();
  return { ...r, serverUs: (s1 - s0) / r.calls, clientUs: (c.user + c.system) / r.calls };
}

/** The run with the median calls/s (its other figures with it); the middle one of an odd count. */
export function medianRun<T extends { perSec: number }>(runs: T[]): T {
  const sorted = [...runs].sort((a, b) => a.perSec - b.perSec);
  return sorted[Math.floor((sorted.length - 1) / 2)]!; // runs is not empty
}
