/**
 * Embedded mode: the deployed handler exports driven by the in-process runtime, with the local
 * software keys (RSA-4096 recipient key unwrapped in process, i.e. the work of the cached key mode).
 *
 * Two kinds of run per size class, each on a fresh pipeline (fresh once-store, so the same sealed
 * messages can be replayed; imported keys stay cached as in a warm container):
 * - **backlog**: submit every message, then drain. Gives throughput and, because the handlers run
 *   one invocation at a time, a clean CPU time per stage (handler wrappers read `process.cpuUsage`).
 * - **paced**: submit at a fixed rate (half the backlog throughput) while draining; gives the
 *   submit → delivered latency of a pipeline that is not saturated.
 * Latency uses the real monotonic clock (`performance.now`); the pipeline's own clock is virtual and
 * fixed at token-minting time, so a long run never expires its credentials.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FolderDeliverer } from '../../lib/adapters/local/folder-deliverer.js';
import { MemoryBlobStore } from '../../lib/adapters/local/memory-stores.js';
import type { WorkerPool } from '../../lib/adapters/local/worker-pool.js';
import type { QueueName, StageName } from '../../lib/pipeline/topology.js';
import { STAGES } from '../../lib/pipeline/topology.js';
import type { KeyService } from '../../lib/ports/index.js';
import { type PipelineRecord, serialiseRecord } from '../../lib/record.js';
import { EmbeddedPipeline, VirtualClock } from '../../lib/runtime/embedded.js';
import type { StageHandler } from '../../lib/runtime/stage-handler.js';
import type { DemoWorld } from '../../lib/testkit/world.js';
import { cpuMsSince, quantile, type Summary, summarise } from './stats.js';
import type { PreparedMessage, SizeClass } from './workload.js';

export type Phase = StageName | 'ingest';

/** Calls of the ports during one run; the AWS adapters make one request per call. */
interface PortCalls {
  once: number;
  audit: number;
  unwrap: number;
  sign: number;
  spki: number;
  deliveries: number;
  sendBatch: number;
  sendInbound: number;
}
export const PHASES: readonly Phase[] = ['ingest', ...STAGES];

/** One run's raw figures. */
interface RunFigures {
  wallMs: number;
  throughput: number;
  /** CPU ms per message per phase (backlog runs only). */
  cpuPerMessage: Record<Phase, number>;
  /** Wall ms per message per phase (backlog runs only). */
  wallPerMessage: Record<Phase, number>;
  latenciesMs: number[];
  invocations: Record<StageName, number>;
  blobPuts: number;
  blobGets: number;
  /** Mean body bytes sent to each queue (the inbound queue is `authenticate`). */
  meanBodyBytes: Record<QueueName, number>;
  portCalls: PortCalls;
}

export interface EmbeddedSizeResult {
  size: SizeClass['label'];
  bundleBytes: number;
  sealedBytes: number;
  messagesPerRun: number;
  runs: number;
  throughput: Summary;
  cpuPerMessageMs: Record<Phase, Summary>;
  cpuTotalPerMessageMs: Summary;
  wallPerMessageMs: Record<Phase, Summary>;
  backlogLatencyMs: { p50: number; p99: number };
  paced: { rate: number; messagesPerRun: number; runs: number; p50: number; p99: number; perRunP50: Summary };
  blobPutsPerMessage: number;
  blobGetsPerMessage: number;
  invocationsPerMessage: Record<StageName, number>;
  meanBodyBytes: Record<QueueName, number>;
  /** Port calls per message (first measured run; no retries happen in these runs). */
  portCallsPerMessage: PortCalls;
}

/** A fresh pipeline around the real handlers, with every timing and counting hook in place. */
function instrumentedPipeline(
  world: DemoWorld,
  keys: KeyService,
  clockStart: number,
  timed = true,
  pool?: WorkerPool,
  sideBySide?: boolean,
) {
  // Delivery folders on tmpfs where there is one: the folder deliverer stands in for S3/SQS targets,
  // and synchronous writes to this machine's disk (≈ 0.5 ms a file here, ≈ 0.03 ms on tmpfs) would
  // be measured as deliver-stage CPU that no deployed function spends.
  const baseDir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'itk3-bench-'));
  const cpu = Object.fromEntries(PHASES.map((p) => [p, 0])) as Record<Phase, number>;
  const wall = Object.fromEntries(PHASES.map((p) => [p, 0])) as Record<Phase, number>;
  const delivered = new Map<string, number>();
  const blobs = new MemoryBlobStore();
  const counters = { puts: 0, gets: 0 };
  /** Port calls, each of which is one AWS request in the AWS adapters (cost model). */
  const portCalls: PortCalls = {
    once: 0,
    audit: 0,
    unwrap: 0,
    sign: 0,
    spki: 0,
    deliveries: 0,
    sendBatch: 0,
    sendInbound: 0,
  };
  const bodyBytes = Object.fromEntries(STAGES.map((s) => [s, { n: 0, bytes: 0 }])) as Record<
    QueueName,
    { n: number; bytes: number }
  >;
  const handlers = (defaults: Record<StageName, StageHandler>) =>
    Object.fromEntries(
      STAGES.map((stage) => {
        const real = defaults[stage];
        // Untimed runs use the handlers as deployed: the per-invocation cpuUsage reads are bench cost.
        if (!timed) return [stage, real];
        const wrapped: StageHandler = async (event, context) => {
          const c0 = process.cpuUsage();
          const t0 = performance.now();
          try {
            return await real(event, context);
          } finally {
            cpu[stage] += cpuMsSince(c0);
            wall[stage] += performance.now() - t0;
          }
        };
        return [stage, wrapped];
      }),
    ) as Record<StageName, StageHandler>;
  const folder = new FolderDeliverer(baseDir);
  let pipeline: EmbeddedPipeline | undefined;
  const forwarded: [QueueName, PipelineRecord][] = [];
  const note = (queue: QueueName, body: string) => {
    bodyBytes[queue].n += 1;
    bodyBytes[queue].bytes += Buffer.byteLength(body, 'utf8');
  };
  const countedKeys: KeyService = {
    unwrapKey: (kid, encryptedKey) => {
      portCalls.unwrap += 1;
      return keys.unwrapKey(kid, encryptedKey);
    },
    // Counted with the unwraps: one asymmetric KMS request per message either way (same price).
    deriveSharedSecret: (kid, epk) => {
      portCalls.unwrap += 1;
      return keys.deriveSharedSecret(kid, epk);
    },
    signEs256: (kid, input) => {
      portCalls.sign += 1;
      return keys.signEs256(kid, input);
    },
    publicKeySpki: (kid) => {
      portCalls.spki += 1;
      return keys.publicKeySpki(kid);
    },
  };
  pipeline = new EmbeddedPipeline({
    config: world.config,
    keys: countedKeys,
    baseDir,
    clock: new VirtualClock(clockStart),
    handlers,
    ...(pool ? { pool } : {}),
    ...(sideBySide !== undefined ? { sideBySide } : {}),
    ports: {
      blobs: {
        put: (key, bytes) => {
          counters.puts += 1;
          return blobs.put(key, bytes);
        },
        get: (key) => {
          counters.gets += 1;
          return blobs.get(key);
        },
        delete: (key) => blobs.delete(key),
      },
      // The runtime's own queues, with the body sizes noted (SQS bills per 64 KiB chunk).
      queues: {
        sendBatch: async (queue, bodies) => {
          // The SQS adapter sends at most 10 entries per request.
          portCalls.sendBatch += Math.ceil(bodies.length / 10);
          for (const body of bodies) {
            note(queue, body);
            pipeline?.queues[queue].send(body);
          }
          return { failed: [] };
        },
        // As the runtime's own sender: the queue stores the records' serialisation and hands the
        // records to the next stage; the body sizes are noted after the run, outside its CPU.
        sendRecords: async (queue, records) => {
          portCalls.sendBatch += Math.ceil(records.length / 10);
          for (const record of records) {
            if (timed) forwarded.push([queue, record]);
            pipeline?.queues[queue].sendRecord(record);
          }
          return { failed: [] };
        },
        sendInbound: async (body, attributes) => {
          portCalls.sendInbound += 1;
          note('authenticate', body);
          if (!pipeline) throw new Error('pipeline not built');
          return pipeline.queues.authenticate.send(body, { ...attributes });
        },
      },
      deliverer: {
        deliver: async (target, name, bytes, contentType) => {
          portCalls.deliveries += 1;
          const location = await folder.deliver(target, name, bytes);
          // The Bundle at the recipient target is "delivered"; responses (.jws) are not counted.
          // Named `<sender>_<MessageHeader id>_<tracking id>.xml`: the message id is the middle part.
          if (contentType === 'application/fhir+xml') {
            delivered.set(name.slice(0, -4).split('_')[1] ?? name, performance.now());
          }
          return location;
        },
      },
      once: {
        putIfAbsent: (key, value, ttl) => {
          portCalls.once += 1;
          if (!pipeline) throw new Error('pipeline not built');
          return pipeline.once.putIfAbsent(key, value, ttl);
        },
      },
      audit: {
        append: (entry) => {
          portCalls.audit += 1;
          if (!pipeline) throw new Error('pipeline not built');
          return pipeline.audit.append(entry);
        },
        // One item (one conditional PutItem) however many entries it holds.
        appendOnce: (once, entries) => {
          portCalls.audit += 1;
          if (!pipeline) throw new Error('pipeline not built');
          return pipeline.audit.appendOnce(once, entries);
        },
        byTrace: (traceId) => {
          if (!pipeline) throw new Error('pipeline not built');
          return pipeline.audit.byTrace(traceId);
        },
      },
    },
  });
  return {
    pipeline,
    portCalls,
    cpu,
    wall,
    delivered,
    counters,
    /** Body sizes per queue (timed runs): the forwarded records are serialised here, after the run. */
    get bodyBytes() {
      for (const [queue, record] of forwarded.splice(0)) note(queue, serialiseRecord(record));
      return bodyBytes;
    },
    cleanup: () => rmSync(baseDir, { recursive: true, force: true }),
  };
}

/**
 * Throughput (msg/s) of one backlog run (submit everything, then drain), and the process's CPU ms
 * per message over the whole run (every thread: handlers, runtime, libuv pool, pool workers).
 * With `pool`, the CPU-heavy steps run on its workers (issue 14 item 1).
 */
export async function backlogThroughput(
  world: DemoWorld,
  keys: KeyService,
  messages: readonly PreparedMessage[],
  clockStart: number,
  pool?: WorkerPool,
  opts: { sideBySide?: boolean } = {},
): Promise<{ throughput: number; cpuMsPerMessage: number }> {
  const c0 = process.cpuUsage();
  const { throughput } = await backlogRun(world, keys, messages, clockStart, false, pool, opts.sideBySide);
  return { throughput, cpuMsPerMessage: cpuMsSince(c0) / messages.length };
}

async function backlogRun(
  world: DemoWorld,
  keys: KeyService,
  messages: readonly PreparedMessage[],
  clockStart: number,
  timed = true,
  pool?: WorkerPool,
  sideBySide?: boolean,
): Promise<RunFigures> {
  const h = instrumentedPipeline(world, keys, clockStart, timed, pool, sideBySide);
  try {
    const submitted = new Map<string, number>();
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    for (const m of messages) {
      submitted.set(m.messageId, performance.now());
      const result = await h.pipeline.submit(m.credential, m.sealed);
      if (result.status !== 202) throw new Error(`ingest refused a benchmark message: ${result.status}`);
    }
    h.cpu.ingest = cpuMsSince(c0);
    h.wall.ingest = performance.now() - t0;
    await h.pipeline.drain();
    const wallMs = performance.now() - t0;
    await assertAllDelivered(h.pipeline, h.delivered, messages);
    const n = messages.length;
    const perMessage = (r: Record<Phase, number>) =>
      Object.fromEntries(PHASES.map((p) => [p, r[p] / n])) as Record<Phase, number>;
    return {
      wallMs,
      throughput: (n * 1000) / wallMs,
      cpuPerMessage: perMessage(h.cpu),
      wallPerMessage: perMessage(h.wall),
      latenciesMs: messages.map(
        (m) => (h.delivered.get(m.messageId) ?? 0) - (submitted.get(m.messageId) ?? 0),
      ),
      invocations: { ...h.pipeline.invocations },
      blobPuts: h.counters.puts,
      blobGets: h.counters.gets,
      meanBodyBytes: meanBytes(h.bodyBytes),
      portCalls: { ...h.portCalls },
    };
  } finally {
    h.cleanup();
  }
}

async function pacedRun(
  world: DemoWorld,
  keys: KeyService,
  messages: readonly PreparedMessage[],
  clockStart: number,
  ratePerSecond: number,
): Promise<number[]> {
  const h = instrumentedPipeline(world, keys, clockStart);
  try {
    const submitted = new Map<string, number>();
    const start = performance.now();
    let submitError: unknown;
    const submitter = (async () => {
      for (const [i, m] of messages.entries()) {
        const due = start + (i * 1000) / ratePerSecond;
        const wait = due - performance.now();
        if (wait > 0) await sleep(wait);
        submitted.set(m.messageId, performance.now());
        const result = await h.pipeline.submit(m.credential, m.sealed);
        if (result.status !== 202)
          submitError = new Error(`ingest refused a benchmark message: ${result.status}`);
      }
    })();
    // Keep polling like an event source: drain what is there, idle 1 ms when nothing is.
    const deadline = start + 120_000 + (messages.length * 1000) / ratePerSecond;
    while (h.delivered.size < messages.length && submitError === undefined) {
      if (performance.now() > deadline) break;
      const invoked = await h.pipeline.drain();
      if (invoked === 0) await sleep(1);
    }
    await submitter;
    if (submitError) throw submitError;
    await assertAllDelivered(h.pipeline, h.delivered, messages);
    return messages.map((m) => (h.delivered.get(m.messageId) ?? 0) - (submitted.get(m.messageId) ?? 0));
  } finally {
    h.cleanup();
  }
}

/** Every message must end delivered; otherwise the figures mean nothing. Codes only, no content. */
async function assertAllDelivered(
  pipeline: EmbeddedPipeline,
  delivered: ReadonlyMap<string, number>,
  messages: readonly PreparedMessage[],
): Promise<void> {
  const missing = messages.filter((m) => !delivered.has(m.messageId));
  if (missing.length === 0) return;
  const codes = new Map<string, number>();
  for (const entry of pipeline.audit.all()) {
    if (entry.event === 'rejected' || entry.event === 'transient-failure') {
      const key = `${entry.stage}:${entry.code}`;
      codes.set(key, (codes.get(key) ?? 0) + 1);
    }
  }
  throw new Error(
    `${missing.length} of ${messages.length} benchmark messages were not delivered (${[...codes]
      .map(([k, v]) => `${k}×${v}`)
      .join(', ')})`,
  );
}

function meanBytes(b: Record<QueueName, { n: number; bytes: number }>): Record<QueueName, number> {
  return Object.fromEntries(STAGES.map((s) => [s, b[s].n === 0 ? 0 : b[s].bytes / b[s].n])) as Record<
    QueueName,
    number
  >;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Backlog runs (after one discarded warm-up), then paced runs at half the median backlog
 * throughput, for one size class.
 */
export async function benchEmbeddedSize(
  world: DemoWorld,
  keys: KeyService,
  size: SizeClass,
  backlog: readonly PreparedMessage[],
  paced: readonly PreparedMessage[],
  clockStart: number,
  runs: number,
  log: (line: string) => void,
): Promise<EmbeddedSizeResult> {
  await backlogRun(world, keys, backlog.slice(0, Math.max(2, Math.ceil(backlog.length / 4))), clockStart);
  const results: RunFigures[] = [];
  for (let r = 0; r < runs; r += 1) {
    const figures = await backlogRun(world, keys, backlog, clockStart);
    results.push(figures);
    log(`  embedded ${size.label} backlog run ${r + 1}/${runs}: ${figures.throughput.toFixed(1)} msg/s`);
  }
  const throughput = summarise(results.map((x) => x.throughput));
  const rate = Math.max(0.5, throughput.median / 2);
  const pacedRuns: number[][] = [];
  for (let r = 0; r < runs; r += 1) {
    const lat = await pacedRun(world, keys, paced, clockStart, rate);
    pacedRuns.push(lat);
    log(
      `  embedded ${size.label} paced run ${r + 1}/${runs} at ${rate.toFixed(1)} msg/s: p50 ${quantile(lat, 0.5).toFixed(1)} ms`,
    );
  }
  const pooledPaced = pacedRuns.flat();
  const pooledBacklog = results.flatMap((x) => x.latenciesMs);
  const n = backlog.length;
  const first = results[0] as RunFigures;
  const perPhase = (pick: (x: RunFigures) => Record<Phase, number>) =>
    Object.fromEntries(PHASES.map((p) => [p, summarise(results.map((x) => pick(x)[p]))])) as Record<
      Phase,
      Summary
    >;
  return {
    size: size.label,
    bundleBytes: backlog[0]?.bundleBytes ?? 0,
    sealedBytes: Buffer.byteLength(backlog[0]?.sealed ?? '', 'utf8'),
    messagesPerRun: n,
    runs,
    throughput,
    cpuPerMessageMs: perPhase((x) => x.cpuPerMessage),
    cpuTotalPerMessageMs: summarise(
      results.map((x) => PHASES.reduce((sum, p) => sum + x.cpuPerMessage[p], 0)),
    ),
    wallPerMessageMs: perPhase((x) => x.wallPerMessage),
    backlogLatencyMs: { p50: quantile(pooledBacklog, 0.5), p99: quantile(pooledBacklog, 0.99) },
    paced: {
      rate,
      messagesPerRun: paced.length,
      runs,
      p50: quantile(pooledPaced, 0.5),
      p99: quantile(pooledPaced, 0.99),
      perRunP50: summarise(pacedRuns.map((l) => quantile(l, 0.5))),
    },
    blobPutsPerMessage: first.blobPuts / n,
    blobGetsPerMessage: first.blobGets / n,
    invocationsPerMessage: Object.fromEntries(STAGES.map((s) => [s, first.invocations[s] / n])) as Record<
      StageName,
      number
    >,
    meanBodyBytes: first.meanBodyBytes,
    portCallsPerMessage: Object.fromEntries(
      Object.entries(first.portCalls).map(([k, v]) => [k, v / n]),
    ) as unknown as PortCalls,
  };
}
