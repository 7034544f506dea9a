/** Summaries of repeated measurements: medians and spreads, never a single run. */
import { readFileSync } from 'node:fs';

export interface Summary {
  /** Number of samples. */
  n: number;
  median: number;
  min: number;
  max: number;
  /** First and third quartiles (linear interpolation). */
  q1: number;
  q3: number;
}

/** The `p`-quantile (0–1) of already sorted values, linear interpolation between ranks. */
function quantileSorted(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = (sorted.length - 1) * p;
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  const a = sorted[lo] as number;
  const b = sorted[hi] as number;
  return a + (b - a) * (rank - lo);
}

export function quantile(values: readonly number[], p: number): number {
  return quantileSorted(
    [...values].sort((x, y) => x - y),
    p,
  );
}

export function summarise(values: readonly number[]): Summary {
  const sorted = [...values].sort((x, y) => x - y);
  return {
    n: sorted.length,
    median: quantileSorted(sorted, 0.5),
    min: sorted[0] ?? Number.NaN,
    max: sorted[sorted.length - 1] ?? Number.NaN,
    q1: quantileSorted(sorted, 0.25),
    q3: quantileSorted(sorted, 0.75),
  };
}

/** `median [min–max]` with a fixed number of decimals. */
export function fmt(s: Summary, digits = 2): string {
  return `${s.median.toFixed(digits)} [${s.min.toFixed(digits)}–${s.max.toFixed(digits)}]`;
}

/** CPU time (user + system, all threads of the process) in ms since `start`. */
export function cpuMsSince(start: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(start);
  return (d.user + d.system) / 1000;
}

/**
 * CPU ms of the calling thread alone (Linux: `/proc/thread-self/stat`, 10 ms ticks; `undefined`
 * elsewhere). With a worker pool, the main thread's share bounds the throughput on many cores.
 */
export function threadCpuMs(): number | undefined {
  try {
    const stat = readFileSync('/proc/thread-self/stat', 'utf8');
    // Fields after the `(comm)`, which may itself hold spaces: utime and stime are 14th and 15th.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS_PER_SECOND;
  } catch {
    return undefined;
  }
}

/** `getconf CLK_TCK` on every Linux the bench runs on. */
const CLOCK_TICKS_PER_SECOND = 100;
