/**
 * A server process's counters from /proc (Linux), read from outside so that every peer is
 * measured the same way, also the SDK's stdio server, which its client spawns without IPC.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";

const TICK_US = 1e6 / (Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100);

export interface ProcSample {
  /** user + system CPU time of all its threads so far, µs (clock-tick resolution, 10 ms). */
  cpuUs: number;
  /** Resident set size now, bytes (VmRSS). */
  rss: number;
  /**
   * Bytes passed to read() and write() so far (rchar + wchar of /proc/<pid>/io): for a server
   * that touches no files, its sockets' or pipes' traffic in both directions (libuv reads and
   * writes streams with read/readv and write/writev), plus its own log lines and IPC.
   */
  ioBytes: number;
}

export function procSample(pid: number): ProcSample {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after "(comm) ": state is field 3, utime 14, stime 15.
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const io = readFileSync(`/proc/${pid}/io`, "utf8");
  const num = (re: RegExp, text: string) => Number(re.exec(text)?.[1] ?? NaN);
  return {
    cpuUs: (Number(f[11]) + Number(f[12])) * TICK_US,
    rss: num(/VmRSS:\s+(\d+) kB/, status) * 1024,
    ioBytes: num(/rchar:\s+(\d+)/, io) + num(/wchar:\s+(\d+)/, io),
  };
}
