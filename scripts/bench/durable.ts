/**
 * The durable embedded runtime against the in-memory one, in the same run: throughput on small
 * messages (a backlog submitted through the front door by 16 concurrent senders, then drained) with
 * the state in memory and
 * with the SQLite state file (WAL, synchronous=FULL) on this machine's disk, alternating runs; and
 * the accept latency of `itk3 serve` (HTTP POST → 202 after the commit) under concurrent load, while
 * the pipeline drains behind it.
 *
 * Both variants deliver to a folder on the same disk as the state file (the folder deliverer
 * fsyncs each file in both), so the ratio isolates what keeping the state durable costs.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { SqliteState } from '../../lib/adapters/local/sqlite-state.js';
import { startServer } from '../../lib/cli/serve.js';
import type { KeyService } from '../../lib/ports/index.js';
import { EmbeddedPipeline, VirtualClock } from '../../lib/runtime/embedded.js';
import type { DemoWorld } from '../../lib/testkit/world.js';
import { cpuMsSince, quantile, type Summary, summarise } from './stats.js';
import type { PreparedMessage } from './workload.js';

export interface DurableResult {
  messages: number;
  runs: number;
  memoryThroughput: Summary;
  durableThroughput: Summary;
  /** Median of per-pair ratios (durable ÷ memory, each pair run back to back). */
  ratio: Summary;
  /** CPU ms per message of each variant, and memory ÷ durable per pair: steadier than wall time on a shared host. */
  memoryCpuMsPerMessage: Summary;
  durableCpuMsPerMessage: Summary;
  cpuRatio: Summary;
  accept: { requests: number; concurrency: number; p50Ms: number; p99Ms: number; maxMs: number; rps: number };
  /** RSS (MiB) before a burst of large messages, at its peak, and after it drained and a full GC. */
  burst?: {
    messages: number;
    bundleBytes: number;
    rssBeforeMiB: number;
    rssPeakMiB: number;
    rssAfterMiB: number;
  };
}

/** Concurrent senders in the throughput runs (both variants). */
const SUBMITTERS = 16;

export interface DurablePlan {
  runs: number;
  acceptConcurrency: number;
}

async function throughput(
  world: DemoWorld,
  keys: KeyService,
  messages: readonly PreparedMessage[],
  clockStart: number,
  durable: boolean,
): Promise<{ throughput: number; cpuMsPerMessage: number }> {
  const baseDir = mkdtempSync(join(tmpdir(), 'itk3-bench-durable-'));
  const clock = new VirtualClock(clockStart);
  const state = durable ? new SqliteState(join(baseDir, 'state.db'), { clock }) : undefined;
  try {
    const pipeline = new EmbeddedPipeline({
      config: world.config,
      keys,
      baseDir,
      clock,
      ...(state ? { state } : {}),
    });
    const traces: string[] = [];
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    // Submitted as a server receives them: SUBMITTERS senders at a time, each waiting for its 202
    // (with the SQLite state, submissions that arrive together share one commit).
    for (let i = 0; i < messages.length; i += SUBMITTERS) {
      const results = await Promise.all(
        messages.slice(i, i + SUBMITTERS).map((m) => pipeline.submit(m.credential, m.sealed)),
      );
      for (const r of results) {
        if (r.status !== 202) throw new Error(`ingest refused a benchmark message: ${r.status}`);
        traces.push(r.trackingId);
      }
    }
    await pipeline.drain();
    const ms = performance.now() - t0;
    const cpuMs = cpuMsSince(c0);
    for (const t of traces) {
      const o = await pipeline.outcome(t);
      if (o.status !== 'delivered') throw new Error(`benchmark message ended ${o.status} ${o.code ?? ''}`);
    }
    return { throughput: (messages.length * 1000) / ms, cpuMsPerMessage: cpuMs / messages.length };
  } finally {
    state?.close();
    rmSync(baseDir, { recursive: true, force: true });
  }
}

/** POST every message to a real `serve` (durable state) with `concurrency` senders; latency per 202. */
async function acceptLatency(
  world: DemoWorld,
  keys: KeyService,
  messages: readonly PreparedMessage[],
  concurrency: number,
): Promise<DurableResult['accept']> {
  const baseDir = mkdtempSync(join(tmpdir(), 'itk3-bench-serve-'));
  const server = await startServer({ config: world.config, keys, baseDir, port: 0 });
  const latencies: number[] = [];
  try {
    let next = 0;
    const t0 = performance.now();
    const sender = async () => {
      while (next < messages.length) {
        const m = messages[next]!;
        next += 1;
        const start = performance.now();
        const response = await fetch(`http://127.0.0.1:${server.port}/messages`, {
          method: 'POST',
          headers: { authorization: `Bearer ${m.credential}` },
          body: m.sealed,
        });
        await response.arrayBuffer();
        if (response.status !== 202) throw new Error(`serve answered ${response.status}`);
        latencies.push(performance.now() - start);
      }
    };
    await Promise.all(Array.from({ length: concurrency }, sender));
    const rps = (messages.length * 1000) / (performance.now() - t0);
    await server.idle();
    return {
      requests: messages.length,
      concurrency,
      p50Ms: quantile(latencies, 0.5),
      p99Ms: quantile(latencies, 0.99),
      maxMs: Math.max(...latencies),
      rps,
    };
  } finally {
    await server.close();
    rmSync(baseDir, { recursive: true, force: true });
  }
}

/** A full garbage collection, without starting node with --expose-gc. */
function fullGc(): void {
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
}

/**
 * Large messages through the durable pipeline (submitted, then drained): RSS must come back near
 * where it started, because bodies and blobs live in the state file, not in the process.
 */
export async function burstMemory(
  world: DemoWorld,
  keys: KeyService,
  messages: readonly PreparedMessage[],
  clockStart: number,
): Promise<NonNullable<DurableResult['burst']>> {
  const mib = () => process.memoryUsage().rss / 2 ** 20;
  fullGc();
  const before = mib();
  let peak = before;
  const timer = setInterval(() => {
    peak = Math.max(peak, mib());
  }, 20);
  const baseDir = mkdtempSync(join(tmpdir(), 'itk3-bench-burst-'));
  const clock = new VirtualClock(clockStart);
  const state = new SqliteState(join(baseDir, 'state.db'), { clock });
  try {
    const pipeline = new EmbeddedPipeline({ config: world.config, keys, baseDir, clock, state });
    for (const m of messages) {
      const r = await pipeline.submit(m.credential, m.sealed);
      if (r.status !== 202) throw new Error(`ingest refused a benchmark message: ${r.status}`);
    }
    await pipeline.drain();
    if (state.blobs.size !== 0) throw new Error('claim-check blobs left after every trace ended');
  } finally {
    clearInterval(timer);
    state.close();
    rmSync(baseDir, { recursive: true, force: true });
  }
  peak = Math.max(peak, mib());
  fullGc();
  return {
    messages: messages.length,
    bundleBytes: messages[0]?.bundleBytes ?? 0,
    rssBeforeMiB: before,
    rssPeakMiB: peak,
    rssAfterMiB: mib(),
  };
}

export async function benchDurable(
  world: DemoWorld,
  keys: KeyService,
  messages: readonly PreparedMessage[],
  acceptMessages: readonly PreparedMessage[],
  clockStart: number,
  plan: DurablePlan,
  log: (line: string) => void,
): Promise<DurableResult> {
  const memory: number[] = [];
  const durable: number[] = [];
  const ratios: number[] = [];
  const memoryCpu: number[] = [];
  const durableCpu: number[] = [];
  const cpuRatios: number[] = [];
  // Warm-up (module loading, JIT) outside the figures.
  await throughput(world, keys, messages.slice(0, 5), clockStart, false);
  await throughput(world, keys, messages.slice(0, 5), clockStart, true);
  for (let run = 0; run < plan.runs; run += 1) {
    // Alternate which goes first, so drift on a shared host hits both alike.
    const order = run % 2 === 0 ? [false, true] : [true, false];
    const pair: Record<string, { throughput: number; cpuMsPerMessage: number }> = {};
    for (const isDurable of order) {
      pair[String(isDurable)] = await throughput(world, keys, messages, clockStart, isDurable);
    }
    const m = pair.false!;
    const d = pair.true!;
    memory.push(m.throughput);
    durable.push(d.throughput);
    ratios.push(d.throughput / m.throughput);
    memoryCpu.push(m.cpuMsPerMessage);
    durableCpu.push(d.cpuMsPerMessage);
    cpuRatios.push(m.cpuMsPerMessage / d.cpuMsPerMessage);
    log(
      `  durable run ${run + 1}/${plan.runs}: memory ${m.throughput.toFixed(1)} msg/s (${m.cpuMsPerMessage.toFixed(2)} CPU ms/msg), ` +
        `SQLite ${d.throughput.toFixed(1)} msg/s (${d.cpuMsPerMessage.toFixed(2)} CPU ms/msg)`,
    );
  }
  log('  accept latency under load (itk3 serve, durable)…');
  const accept = await acceptLatency(world, keys, acceptMessages, plan.acceptConcurrency);
  return {
    messages: messages.length,
    runs: plan.runs,
    memoryThroughput: summarise(memory),
    durableThroughput: summarise(durable),
    ratio: summarise(ratios),
    memoryCpuMsPerMessage: summarise(memoryCpu),
    durableCpuMsPerMessage: summarise(durableCpu),
    cpuRatio: summarise(cpuRatios),
    accept,
  };
}
