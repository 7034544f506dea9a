/**
 * Both cores on the embedded runtime (issue 14 item 1): whole-pipeline throughput with the worker
 * pool ÷ without it, side by side in one run.
 *
 * - **Embedded, small messages**, RSA-4096 and RSA-2048 recipient keys: backlog runs (submit all,
 *   drain) of the deployed handlers, rotating without the pool, with it (the default: stages
 *   invoked side by side) and with it but one stage invocation at a time (`sideBySide: false`: what
 *   more batches in flight buy), round by round so the host's load hits every variant alike. The
 *   ratio is the median of the per-round ratios.
 * - **`itk3 process` on the real 63 KB sample**: `--workers 0` against the default (a pool of
 *   `os.availableParallelism()` workers), per message with start-up cancelled out (n and 2n).
 *
 * Beside the wall-clock ratio, a **CPU bound**: what the same run's CPU figures allow on an
 * otherwise idle machine with this many cores, `CPU/msg without ÷ max(main thread CPU/msg with,
 * all threads' CPU/msg with ÷ cores)` (the main thread cannot be split; the rest spreads over the
 * cores). On a host shared with other jobs the wall ratio measures the share of the cores this
 * process got as much as the code, so both are printed, and the load average with them.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeKeystore } from '../../lib/adapters/local/keystore.js';
import { SoftwareKeyService } from '../../lib/adapters/local/software-keys.js';
import { WorkerPool, workerCount } from '../../lib/adapters/local/worker-pool.js';
import type { DemoWorld } from '../../lib/testkit/world.js';
import { backlogThroughput } from './embedded.js';
import type { ProcessSample } from './process-samples.js';
import { type Summary, summarise, threadCpuMs } from './stats.js';
import type { PreparedMessage } from './workload.js';

export interface PoolPlan {
  messages: number;
  rounds: number;
  /**
   * Messages each variant runs before the timed rounds (whole passes over the set). Fresh workers
   * compile the hot code again in their own isolates: a cost per worker that a short run would
   * charge to the pool's throughput (docs/PERFORMANCE.md, issue 14 item 1).
   */
  warmMessages: number;
}

export interface PoolRow {
  workload: 'embedded small' | 'itk3 process 63 KB';
  modulus: number;
  workers: number;
  /** msg/s without and with the pool (the default: stages side by side). */
  without: Summary;
  with: Summary;
  /** With the pool, one stage invocation at a time (embedded only). */
  oneAtATime?: Summary;
  /** Median of the per-round ratios with ÷ without, and their spread. */
  ratio: Summary;
  oneAtATimeRatio?: Summary;
  /** CPU ms per message (every thread) without and with; main-thread CPU ms per message with. */
  cpuWithout: Summary;
  cpuWith: Summary;
  mainThreadCpuWith?: Summary;
  /** The CPU bound on an idle machine with `cores` cores, stages side by side (module comment). */
  cpuBound?: number;
  /**
   * The same, one stage invocation at a time: the main thread waits while the workers run a batch,
   * so CPU/msg no pool ÷ (main-thread CPU/msg + the rest ÷ cores).
   */
  cpuBoundOneAtATime?: number;
  /**
   * CPU ms per message of the first warm-up pass without and with the pool (fresh workers): against
   * {@link cpuWithout} / {@link cpuWith}, the one-off cost of warming up each worker.
   */
  firstPassCpu?: { without: number; with: number };
  /** 1-minute load average before and after the rows were measured. */
  load: [number, number];
  target?: number;
}

/** Issue 14 item 1 targets, on 2 cores. */
const POOL_TARGETS: Record<number, number> = { 4096: 1.7, 2048: 1.5 };

/** A keystore file for the pool's workers to read (mode 0600, on tmpfs where there is one). */
export function keystoreFileFor(world: DemoWorld): { file: string; cleanup: () => void } {
  const dir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'itk3-bench-pool-'));
  const file = join(dir, 'keystore.json');
  writeKeystore(file, world.keystore);
  return { file, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Embedded small messages with and without the pool, for one world (one recipient key size). */
export async function benchPoolEmbedded(
  world: DemoWorld,
  modulus: number,
  messages: readonly PreparedMessage[],
  now: number,
  plan: PoolPlan,
  log: (line: string) => void,
): Promise<PoolRow | { skipped: string }> {
  const workers = workerCount();
  if (workers === 0)
    return { skipped: `one usable core (os.availableParallelism() = ${availableParallelism()})` };
  const keys = new SoftwareKeyService(world.keystore);
  const keystore = keystoreFileFor(world);
  const pool = await WorkerPool.start({ size: workers, keystoreFile: keystore.file, config: world.config });
  const load0 = loadavg()[0] ?? 0;
  try {
    const run = async (variant: 'without' | 'with' | 'one-at-a-time') => {
      const t0 = threadCpuMs();
      const result = await backlogThroughput(
        world,
        keys,
        messages,
        now,
        variant === 'without' ? undefined : pool,
        variant === 'one-at-a-time' ? { sideBySide: false } : {},
      );
      const t1 = threadCpuMs();
      return {
        ...result,
        mainMs: t0 === undefined || t1 === undefined ? undefined : (t1 - t0) / messages.length,
      };
    };
    // The same number of warm-up messages for both variants, the first pass's CPU kept as the
    // one-off cost of fresh workers.
    const passes = Math.max(1, Math.ceil(plan.warmMessages / messages.length));
    let firstPassCpu: PoolRow['firstPassCpu'];
    for (let p = 0; p < passes; p += 1) {
      const a = await backlogThroughput(world, keys, messages, now);
      const b = await backlogThroughput(world, keys, messages, now, pool);
      firstPassCpu ??= { without: a.cpuMsPerMessage, with: b.cpuMsPerMessage };
    }
    const figures = { without: [] as number[], with: [] as number[], side: [] as number[] };
    const cpu = { without: [] as number[], with: [] as number[], main: [] as number[] };
    const ratios = { with: [] as number[], side: [] as number[] };
    for (let r = 0; r < plan.rounds; r += 1) {
      // Rotate the order so no variant always runs first after a pause.
      const order = (['without', 'with', 'one-at-a-time'] as const).map((_, i, all) => all[(i + r) % 3]!);
      const got: Partial<Record<(typeof order)[number], Awaited<ReturnType<typeof run>>>> = {};
      for (const variant of order) got[variant] = await run(variant);
      const a = got.without!;
      const b = got.with!;
      const c = got['one-at-a-time']!;
      figures.without.push(a.throughput);
      figures.with.push(b.throughput);
      figures.side.push(c.throughput);
      cpu.without.push(a.cpuMsPerMessage);
      cpu.with.push(b.cpuMsPerMessage);
      if (b.mainMs !== undefined) cpu.main.push(b.mainMs);
      ratios.with.push(b.throughput / a.throughput);
      ratios.side.push(c.throughput / a.throughput);
      log(
        `  pool RSA-${modulus} round ${r + 1}/${plan.rounds}: without ${a.throughput.toFixed(1)}, with ${b.throughput.toFixed(1)}, one stage at a time ${c.throughput.toFixed(1)} msg/s`,
      );
    }
    const cpuWithout = summarise(cpu.without);
    const cpuWith = summarise(cpu.with);
    const mainThreadCpuWith = cpu.main.length > 0 ? summarise(cpu.main) : undefined;
    return {
      workload: 'embedded small',
      modulus,
      workers,
      without: summarise(figures.without),
      with: summarise(figures.with),
      oneAtATime: summarise(figures.side),
      ratio: summarise(ratios.with),
      oneAtATimeRatio: summarise(ratios.side),
      cpuWithout,
      cpuWith,
      ...(firstPassCpu ? { firstPassCpu } : {}),
      ...(mainThreadCpuWith ? { mainThreadCpuWith } : {}),
      ...(mainThreadCpuWith
        ? {
            cpuBound:
              cpuWithout.median /
              Math.max(mainThreadCpuWith.median, cpuWith.median / Math.min(workers, availableParallelism())),
          }
        : {}),
      ...(mainThreadCpuWith
        ? {
            cpuBoundOneAtATime:
              cpuWithout.median /
              (mainThreadCpuWith.median +
                (cpuWith.median - mainThreadCpuWith.median) / Math.min(workers, availableParallelism())),
          }
        : {}),
      load: [load0, loadavg()[0] ?? 0],
      target: POOL_TARGETS[modulus],
    };
  } finally {
    await pool.close();
    keystore.cleanup();
  }
}

/** `itk3 process` on the 63 KB sample: `--workers 0` against the default, alternating. */
export function benchPoolProcess(
  runner: { modulus: number; run: (workers?: number) => ProcessSample },
  repeats: number,
  log: (line: string) => void,
): PoolRow | { skipped: string } {
  const workers = workerCount();
  if (workers === 0)
    return { skipped: `one usable core (os.availableParallelism() = ${availableParallelism()})` };
  const load0 = loadavg()[0] ?? 0;
  const without: ProcessSample[] = [];
  const withPool: ProcessSample[] = [];
  const ratios: number[] = [];
  for (let r = 0; r < repeats; r += 1) {
    const pair =
      r % 2 === 0 ? [runner.run(0), runner.run(undefined)] : [runner.run(undefined), runner.run(0)].reverse();
    const [a, b] = pair as [ProcessSample, ProcessSample];
    without.push(a);
    withPool.push(b);
    ratios.push(a.wallMs / b.wallMs);
    log(
      `  pool itk3 process RSA-${runner.modulus} repeat ${r + 1}/${repeats}: --workers 0 ${a.wallMs.toFixed(2)} ms/msg, default ${b.wallMs.toFixed(2)} ms/msg`,
    );
  }
  const perSecond = (samples: ProcessSample[]) => summarise(samples.map((s) => 1000 / s.wallMs));
  return {
    workload: 'itk3 process 63 KB',
    modulus: runner.modulus,
    workers,
    without: perSecond(without),
    with: perSecond(withPool),
    ratio: summarise(ratios),
    cpuWithout: summarise(without.map((s) => s.cpuMs)),
    cpuWith: summarise(withPool.map((s) => s.cpuMs)),
    load: [load0, loadavg()[0] ?? 0],
  };
}
