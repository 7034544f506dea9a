/**
 * `npm run bench` — the pipeline's benchmark (not a test): crypto floor, embedded throughput and
 * latency per size class, emulator mode against a bare relay, AWS calls and cost per message, bundle
 * sizes and module initialisation. Prints tables and writes reports/bench/<timestamp>.json and
 * reports/bench/latest.json. Targets are those of issue 6; docs/PERFORMANCE.md records a run.
 *
 *   npm run bench                              full run (≈ 5–8 min on 2 cores)
 *   npm run bench -- --quick                   CI-sized run (≈ 1–2 min)
 *   npm run bench -- --emulator http://127.0.0.1:4566   (or ITK3_MINISTACK_ENDPOINT)
 *   npm run bench -- --skip bundles,emulator   leave parts out (floor, embedded, recipient-keys, close, pool,
 *                                              durable, emulator, bundles; any other name is refused)
 *   npm run bench -- --sizes small             only some size classes
 *
 * Every figure is a median over repeated runs with its spread; compare ratios, not absolute times:
 * the host is shared and noisy (±15 %, PERFORMANCE.md).
 */
import './env.js';
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FUNCTION_NODE_OPTIONS } from '../../cdk/constructs/pipeline-function.js';
import { DEFAULT_KEY_CACHE_TTL_SECONDS } from '../../lib/adapters/aws/deployment-names.js';
import { SoftwareKeyService } from '../../lib/adapters/local/software-keys.js';
import { STAGE_DEFINITIONS } from '../../lib/infra/definitions.js';
import { STAGES } from '../../lib/pipeline/topology.js';
import { createWorld } from '../../lib/testkit/world.js';
import {
  BUNDLE_TABLE_HEADER,
  type BundleFigures,
  type BundleVariant,
  benchBundles,
  bundleTable,
} from './bundles.js';
import {
  ASSUMED_LATENCY_MS,
  type CostEstimate,
  type CountedCalls,
  dynamoWriteCalls,
  dynamoWriteUnits,
  estimateCost,
  type KeyMode,
  PRICES,
  totalCalls,
} from './cost.js';
import {
  type FloorByModulus,
  type FloorResult,
  floorByModulus,
  measureCryptoFloor,
  measureSampleFloor,
  type SampleFloor,
} from './crypto-floor.js';
import { benchDurable, burstMemory, type DurableResult } from './durable.js';
import { backlogThroughput, benchEmbeddedSize, type EmbeddedSizeResult, PHASES } from './embedded.js';
import { benchEmulator, type EmulatorResult } from './emulator.js';
import { benchPoolEmbedded, benchPoolProcess, type PoolRow } from './pool.js';
import {
  benchProcessSamples,
  PROCESS_SAMPLE,
  type ProcessResult,
  type ProcessSample,
  processResult,
  sampleBytes,
} from './process-samples.js';
import { benchRecipientKeys, type RecipientKeyRow } from './recipient-keys.js';
import { fmt, type Summary, summarise } from './stats.js';
import { immunisationBundle, prepareMessages, SIZE_CLASSES } from './workload.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

interface Args {
  quick: boolean;
  emulator: string | undefined;
  skip: Set<string>;
  /** Size classes to run (default: all). */
  sizes: Set<string> | undefined;
}

/** The parts `--skip` leaves out; any other name is refused (a typo would run the part it meant to skip). */
const PARTS = [
  'floor',
  'embedded',
  'recipient-keys',
  'close',
  'pool',
  'durable',
  'emulator',
  'bundles',
] as const;

/** A comma-separated list of names, each one of `known`; exits 2 naming any other. */
function namesFrom(option: string, value: string | undefined, known: readonly string[]): Set<string> {
  const names = (value ?? '').split(',').map((x) => x.trim());
  const unknown = names.filter((n) => !known.includes(n));
  if (unknown.length > 0) {
    console.error(
      `error: ${option} takes ${known.join(', ')}; not ${unknown.map((n) => `"${n}"`).join(', ')}`,
    );
    process.exit(2);
  }
  return new Set(names);
}

function parseArgs(argv: readonly string[]): Args {
  const args: Args = {
    quick: false,
    emulator: process.env.ITK3_MINISTACK_ENDPOINT || undefined,
    skip: new Set(),
    sizes: undefined,
  };
  for (let i = 0; i < argv.length; i += 1) {
    const a = argv[i];
    if (a === '--quick') args.quick = true;
    else if (a === '--emulator') args.emulator = argv[++i];
    else if (a?.startsWith('--emulator=')) args.emulator = a.slice('--emulator='.length);
    else if (a === '--skip') for (const s of namesFrom('--skip', argv[++i], PARTS)) args.skip.add(s);
    else if (a === '--sizes')
      args.sizes = namesFrom(
        '--sizes',
        argv[++i],
        SIZE_CLASSES.map((c) => c.label),
      );
    else if (a === '--help' || a === '-h') {
      console.log(
        `usage: npm run bench -- [--quick] [--emulator URL] [--skip ${PARTS.join(',')}] [--sizes ${SIZE_CLASSES.map((c) => c.label).join(',')}]`,
      );
      process.exit(0);
    } else {
      console.error(`error: unknown argument ${a}`);
      process.exit(2);
    }
  }
  if (args.emulator && !/^http:\/\/(127\.\d+\.\d+\.\d+|localhost|\[::1\]):\d+\/?$/.test(args.emulator)) {
    // Loopback only: the benchmark sends bounded load, and only to this machine.
    console.error('error: --emulator must be a loopback URL such as http://127.0.0.1:4566');
    process.exit(2);
  }
  return args;
}

const PLANS = {
  full: {
    floor: { repeats: 5, loopMs: 200 },
    embedded: {
      small: { backlog: 300, paced: 150 },
      '1MB': { backlog: 30, paced: 15 },
      '5MB': { backlog: 8, paced: 6 },
      runs: 5,
    },
    emulator: { messages: 200, repeats: 3 },
    durable: { messages: 200, runs: 7, acceptRequests: 400, acceptConcurrency: 16, burstMessages: 12 },
    close: { backlog: 200, runs: 7, processMessages: 150, processRepeats: 5 },
    recipientKeys: { floor: { repeats: 5, loopMs: 200 }, backlog: 300, paced: 150, runs: 5 },
    pool: { messages: 200, rounds: 7, warmMessages: 600, processMessages: 150, processRepeats: 5 },
    bundles: {
      initRepeats: 7,
      variants: ['aws', 'aws-esm', 'emulator'] as BundleVariant[],
    },
  },
  quick: {
    floor: { repeats: 3, loopMs: 60 },
    embedded: {
      small: { backlog: 60, paced: 30 },
      '1MB': { backlog: 6, paced: 4 },
      '5MB': { backlog: 3, paced: 2 },
      runs: 3,
    },
    emulator: { messages: 40, repeats: 2 },
    durable: { messages: 60, runs: 3, acceptRequests: 120, acceptConcurrency: 16, burstMessages: 4 },
    close: { backlog: 60, runs: 5, processMessages: 60, processRepeats: 3 },
    recipientKeys: { floor: { repeats: 3, loopMs: 60 }, backlog: 60, paced: 30, runs: 3 },
    pool: { messages: 60, rounds: 5, warmMessages: 300, processMessages: 60, processRepeats: 3 },
    bundles: { initRepeats: 3, variants: ['aws'] as BundleVariant[] },
  },
} as const;

interface Target {
  name: string;
  target: string;
  measured: string;
  met: boolean | undefined;
  note?: string;
}

function table(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd();
  return [line(headers), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

function gitCommit(): string {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const plan = args.quick ? PLANS.quick : PLANS.full;
  const started = new Date();
  const t0 = performance.now();
  const log = (line: string) => console.error(line);
  const out: string[] = [];
  const print = (text = '') => {
    out.push(text);
    console.log(text);
  };

  log(`itk3 bench (${args.quick ? 'quick' : 'full'}): generating the world (RSA-4096 recipient keys)…`);
  const now = Date.now();
  const world = await createWorld({ now });
  const keys = new SoftwareKeyService(world.keystore);

  // Bundles first: module-init timing wants a quiet machine.
  let bundles: BundleFigures[] | undefined;
  if (!args.skip.has('bundles')) {
    log('bundles…');
    bundles = await benchBundles(ROOT, JSON.stringify(world.configDoc), plan.bundles, log);
  }

  let floor: FloorResult | undefined;
  if (!args.skip.has('floor')) {
    log('crypto floor…');
    floor = await measureCryptoFloor(
      world,
      SIZE_CLASSES.map((s) => ({ label: s.label, bundle: immunisationBundle(s, crypto.randomUUID(), true) })),
      plan.floor,
    );
  }

  const embedded: EmbeddedSizeResult[] = [];
  if (!args.skip.has('embedded')) {
    for (const size of SIZE_CLASSES.filter((x) => !args.sizes || args.sizes.has(x.label))) {
      const counts = plan.embedded[size.label];
      log(`embedded ${size.label}: sealing ${counts.backlog + counts.paced} messages (not timed)…`);
      const backlog = await prepareMessages(world, size, counts.backlog, { now, infAck: true });
      const paced = await prepareMessages(world, size, counts.paced, { now, infAck: true });
      embedded.push(await benchEmbeddedSize(world, keys, size, backlog, paced, now, plan.embedded.runs, log));
    }
  }

  let durable: DurableResult | undefined;
  if (!args.skip.has('durable')) {
    const small = SIZE_CLASSES.find((x) => x.label === 'small')!;
    const d = plan.durable;
    log(`durable embedded runtime: sealing ${d.messages + d.acceptRequests} small messages (not timed)…`);
    const backlog = await prepareMessages(world, small, d.messages, { now, infAck: true });
    // Accept latency runs on the real clock: fresh credentials, minted just before.
    const acceptMessages = await prepareMessages(world, small, d.acceptRequests, {
      now: Date.now(),
      infAck: true,
    });
    durable = await benchDurable(
      world,
      keys,
      backlog,
      acceptMessages,
      now,
      { runs: d.runs, acceptConcurrency: d.acceptConcurrency },
      log,
    );
    const large = SIZE_CLASSES.find((x) => x.label === '5MB')!;
    log(`  memory after a burst: sealing ${d.burstMessages} × 5 MB (not timed)…`);
    const burst = await prepareMessages(world, large, d.burstMessages, { now, infAck: true });
    durable.burst = await burstMemory(world, keys, burst, now);
  }

  // Every recipient key choice side by side (needs the floor's shared part).
  let recipientKeys: RecipientKeyRow[] | undefined;
  if (floor && !args.skip.has('recipient-keys')) {
    recipientKeys = await benchRecipientKeys(floor, plan.recipientKeys, now, log);
  }

  let emulator: EmulatorResult | undefined;
  let emulatorSkipped: string | undefined;
  if (args.skip.has('emulator')) emulatorSkipped = 'left out with --skip emulator';
  else if (!args.emulator)
    emulatorSkipped =
      'no emulator endpoint (start one with `bash scripts/emulator.sh start ministack` and pass --emulator http://127.0.0.1:4566 or set ITK3_MINISTACK_ENDPOINT)';
  else {
    log(`emulator at ${args.emulator}…`);
    emulator = await benchEmulator(world, args.emulator, plan.emulator, log);
  }

  // Issue 14 item 2, close to the floor at every key size: embedded backlog runs with an RSA-4096 and
  // an RSA-2048 recipient key, alternating run by run (the host is shared: both sizes see the same
  // noise), then `itk3 process` on the real 63 KB sample at both sizes, alternating likewise.
  let close: CloseToFloor | undefined;
  if (!args.skip.has('close') && floor) {
    close = await closeToFloor(world, floor, plan, now, log);
  }

  // Issue 14 item 1, both cores: the worker pool against no pool, side by side, at both key sizes.
  let pool: PoolResult | undefined;
  if (!args.skip.has('pool')) pool = await poolRows(world, plan, now, log);

  // ---- Tables ----------------------------------------------------------------------------------
  print(
    `ITK3 pipeline benchmark — ${started.toISOString()} — ${args.quick ? 'quick' : 'full'} run, commit ${gitCommit()}`,
  );
  print(
    `machine: ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}, OpenSSL ${process.versions.openssl}`,
  );
  print('figures: median [min–max] over repeated runs; compare ratios, not absolute times');

  if (floor) {
    print('\n1. Crypto floor (CPU ms per call, one core)');
    const rows = floor.common.map((i) => [i.name, '-', fmt(i.cpuMs, 3)]);
    for (const s of floor.sizes) {
      for (const i of s.items) rows.push([i.name, s.size, fmt(i.cpuMs, 3)]);
    }
    print(table(['primitive', 'size', 'CPU ms'], rows));
    print(
      table(
        ['size', 'bundle bytes', 'floor ms/msg', 'floor msg/s/core'],
        floor.sizes.map((s) => [
          s.size,
          String(s.bundleBytes),
          s.floorMs.toFixed(3),
          s.floorThroughput.toFixed(1),
        ]),
      ),
    );
    print(
      'floor = credential verify PS256 + CEK unwrap RSA-4096 + inner JWS verify RS512 + AES-256-GCM + base64url decode',
    );
  }

  if (embedded.length > 0) {
    print('\n2. Embedded pipeline (deployed handlers, local RSA-4096 key = cached-mode work)');
    print(
      table(
        [
          'size',
          'sealed bytes',
          'msg/s (backlog)',
          'floor ratio',
          'paced at',
          'p50 ms',
          'p99 ms',
          'backlog p50/p99 ms',
          'blob put/get',
        ],
        embedded.map((e) => {
          const f = floor?.sizes.find((s) => s.size === e.size);
          return [
            e.size,
            String(e.sealedBytes),
            fmt(e.throughput, 1),
            f ? (e.throughput.median / f.floorThroughput).toFixed(2) : '-',
            `${e.paced.rate.toFixed(1)}/s`,
            e.paced.p50.toFixed(1),
            e.paced.p99.toFixed(1),
            `${e.backlogLatencyMs.p50.toFixed(0)}/${e.backlogLatencyMs.p99.toFixed(0)}`,
            `${e.blobPutsPerMessage.toFixed(1)}/${e.blobGetsPerMessage.toFixed(1)}`,
          ];
        }),
      ),
    );
    print('\n   CPU ms per message per stage (backlog runs) and floor ÷ pipeline CPU');
    print(
      table(
        ['size', ...PHASES, 'total', 'floor', 'floor/pipeline'],
        embedded.map((e) => {
          const f = floor?.sizes.find((s) => s.size === e.size);
          return [
            e.size,
            ...PHASES.map((p) => e.cpuPerMessageMs[p].median.toFixed(2)),
            fmt(e.cpuTotalPerMessageMs, 2),
            f ? f.floorMs.toFixed(2) : '-',
            f ? (f.floorMs / e.cpuTotalPerMessageMs.median).toFixed(2) : '-',
          ];
        }),
      ),
    );
  }

  if (emulator) {
    print(`\n3. Emulator mode (${emulator.endpoint}): pipeline vs bare relay through the same five queues`);
    print(
      table(
        ['variant', 'msg/s', 'ratio to relay', 'SQS work req/msg/hop', 'billed', 'empty receives/msg'],
        emulator.variants.map((v) => [
          v.variant,
          fmt(v.throughput, 1),
          v.variant === 'relay' ? '1.00' : (emulator?.ratioToRelay[v.variant] ?? 0).toFixed(2),
          v.sqsPerMessagePerHop.toFixed(3),
          v.sqsBilledPerMessagePerHop.toFixed(3),
          v.emptyReceivesPerMessage.toFixed(2),
        ]),
      ),
    );
    print('\n   AWS API calls per message (adapter counters; stages, then ingest)');
    const rows: string[][] = [];
    for (const v of emulator.variants) {
      if (!v.calls) continue;
      for (const service of ['sqs', 'kms', 'dynamodb', 's3']) {
        const ops = v.calls.stages[service] ?? {};
        const ing = v.calls.ingest[service] ?? {};
        const detail = Object.entries(ops)
          .filter(([op]) => op !== 'total')
          .map(([op, n]) => `${op} ${n.toFixed(3)}`)
          .join(', ');
        rows.push([
          v.variant,
          service,
          (ops.total ?? 0).toFixed(3),
          detail || '-',
          (ing.total ?? 0).toFixed(2),
        ]);
      }
    }
    print(table(['variant', 'service', 'stages', 'by operation', 'ingest'], rows));
  } else {
    print(`\n3. Emulator part skipped: ${emulatorSkipped}`);
  }

  if (close) {
    print('\n2b. Close to the floor at every key size (issue 14 item 2; runs alternate between key sizes)');
    print(
      table(
        [
          'workload',
          'key',
          'floor ms/msg',
          'floor msg/s',
          'measured msg/s (wall)',
          'wall ratio',
          'CPU ms/msg',
          'CPU ratio',
          'target',
          'met (CPU)',
        ],
        close.rows.map((r) => [
          r.workload,
          `RSA-${r.modulus}`,
          r.floorMs.toFixed(3),
          (1000 / r.floorMs).toFixed(1),
          fmt(r.throughput, 1),
          r.ratio.toFixed(2),
          fmt(r.cpuMs, 3),
          r.cpuRatio.toFixed(2),
          `≥ ${r.target}`,
          r.cpuRatio >= r.target ? 'yes' : 'NO',
        ]),
      ),
    );
    if (close.processSkipped)
      print(`   ${PROCESS_SAMPLE} through itk3 process skipped: ${close.processSkipped}`);
  }

  if (pool) {
    print(
      `\n2c. Both cores: worker pool ÷ no pool (issue 14 item 1; ${pool.rows[0]?.workers ?? '-'} workers, ${cpus().length} cores; rounds rotate the variants)`,
    );
    print(
      table(
        [
          'workload',
          'key',
          'no pool msg/s',
          'pool msg/s',
          'pool ÷ no pool (wall)',
          'one stage at a time',
          'CPU ms/msg no pool / pool (main thread)',
          'CPU bound (one at a time)',
          'cores used no pool / pool',
          'first pass CPU ms/msg no pool / pool',
          'load 1 min',
          'target',
          'met',
        ],
        pool.rows.map((r) => [
          r.workload,
          `RSA-${r.modulus}`,
          fmt(r.without, 1),
          fmt(r.with, 1),
          fmt(r.ratio, 2),
          r.oneAtATimeRatio ? fmt(r.oneAtATimeRatio, 2) : '-',
          `${r.cpuWithout.median.toFixed(2)} / ${r.cpuWith.median.toFixed(2)}${r.mainThreadCpuWith ? ` (${r.mainThreadCpuWith.median.toFixed(2)})` : ''}`,
          r.cpuBound !== undefined
            ? `${r.cpuBound.toFixed(2)} (${r.cpuBoundOneAtATime?.toFixed(2) ?? '-'})`
            : '-',
          `${((r.without.median * r.cpuWithout.median) / 1000).toFixed(2)} / ${((r.with.median * r.cpuWith.median) / 1000).toFixed(2)}`,
          r.firstPassCpu ? `${r.firstPassCpu.without.toFixed(2)} / ${r.firstPassCpu.with.toFixed(2)}` : '-',
          `${r.load[0].toFixed(1)}→${r.load[1].toFixed(1)}`,
          r.target !== undefined ? `≥ ${r.target}` : '-',
          r.target === undefined ? '-' : r.ratio.median >= r.target ? 'yes' : 'NO',
        ]),
      ),
    );
    print(
      '   wall = median of per-round ratios [min–max]; CPU bound = CPU/msg no pool ÷ max(main-thread CPU/msg, all-thread CPU/msg ÷ cores): the ratio the same CPU figures allow on an idle machine with stages side by side (one at a time: ÷ (main + rest ÷ cores)); cores used = CPU/msg × msg/s (what this process got of the machine: below 1 without the pool, the host is too busy for a second core to be free); first pass = the first of the warm-up passes (fresh workers compiling the hot code in their own isolates), left out of the rounds',
    );
    for (const s of pool.skipped) print(`   skipped: ${s}`);
  }

  // ---- Cost -------------------------------------------------------------------------------------
  const costs: CostEstimate[] = [];
  const unwrap4096 =
    floor?.common.find((i) => i.name.startsWith('CEK unwrap RSA-OAEP-256 4096'))?.cpuMs.median ?? 0;
  // DynamoDB writes and KMS Sign from the emulator's counted calls where there are some (small
  // messages, the variant of the same mode and ack), else from the embedded port calls.
  const countedFor = (size: string, mode: KeyMode, ack: boolean): CountedCalls | undefined => {
    if (size !== 'small') return undefined;
    const variant = mode === 'cached-sign' ? 'cached-sign' : `${mode}${ack ? '' : '-noack'}`;
    return emulator?.variants.find((v) => v.variant === variant)?.calls?.stages;
  };
  for (const e of embedded) {
    for (const [mode, ack] of [
      ['direct', true],
      ['cached', true],
      ['cached', false],
      ['cached-sign', true],
    ] as const) {
      costs.push(estimateCost(e, mode, ack, unwrap4096, countedFor(e.size, mode, ack)));
    }
  }
  if (costs.length > 0) {
    print('\n4. Cost per million messages, USD (us-east-1 list prices; lines in the JSON report)');
    print(
      table(
        [
          'size',
          'mode',
          'ack',
          'SQS',
          'KMS',
          'DynamoDB',
          'S3 claim',
          'Lambda',
          'HTTP API',
          'target write',
          'total',
          'pipeline only',
        ],
        costs.map((c) => {
          const l = (item: string) => (c.lines.find((x) => x.item === item)?.perMillionUsd ?? 0).toFixed(2);
          const kms =
            (c.lines.find((x) => x.item === 'KMS unwrap')?.perMillionUsd ?? 0) +
            (c.lines.find((x) => x.item === 'KMS response signing')?.perMillionUsd ?? 0);
          const lambda =
            (c.lines.find((x) => x.item === 'Lambda duration')?.perMillionUsd ?? 0) +
            (c.lines.find((x) => x.item === 'Lambda requests')?.perMillionUsd ?? 0);
          return [
            c.size,
            c.mode,
            c.infAck ? 'yes' : 'no',
            l('SQS requests'),
            kms.toFixed(2),
            l('DynamoDB writes'),
            l('S3 claim check'),
            lambda.toFixed(2),
            l('HTTP API (ingest)'),
            l('recipient target write (S3 PUT)'),
            c.totalPerMillionUsd.toFixed(2),
            c.pipelineOnlyPerMillionUsd.toFixed(2),
          ];
        }),
      ),
    );
    print(
      `   assumed AWS latencies for billed duration (ms): ${JSON.stringify(ASSUMED_LATENCY_MS)}; memory ${STAGE_DEFINITIONS.decrypt.memoryMb} MB; arm64`,
    );
  }
  if (emulator) {
    print(
      '\n4b. AWS calls per message by service, small messages (issue 14 item 4; stages + ingest, counted)',
    );
    print(
      table(
        ['variant', 'SQS', 'KMS', 'DynamoDB writes', 'DynamoDB WRU', 'S3', 'total', 'pipeline only $/M'],
        emulator.variants
          .filter((v) => v.calls)
          .map((v) => {
            const all = (service: string) =>
              (v.calls!.stages[service]?.total ?? 0) + (v.calls!.ingest[service]?.total ?? 0);
            const mode: KeyMode =
              v.variant === 'cached-sign'
                ? 'cached-sign'
                : v.variant.startsWith('direct')
                  ? 'direct'
                  : 'cached';
            const cost = costs.find(
              (c) => c.size === 'small' && c.mode === mode && c.infAck === !v.variant.endsWith('-noack'),
            );
            return [
              v.variant,
              all('sqs').toFixed(2),
              all('kms').toFixed(3),
              dynamoWriteCalls(v.calls!.stages).toFixed(2),
              dynamoWriteUnits(v.calls!.stages).toFixed(2),
              all('s3').toFixed(2),
              totalCalls(v.calls!.stages, v.calls!.ingest).toFixed(2),
              cost ? `$${cost.pipelineOnlyPerMillionUsd.toFixed(2)}` : '-',
            ];
          }),
      ),
    );
  }

  if (bundles) {
    print(
      "\n5. Function bundles (the construct's esbuild options) and module initialisation: AWS SDK from the runtime by require (aws, shipped) or by ES import (aws-esm, the bundles before), or bundled (emulator)",
    );
    print(table(BUNDLE_TABLE_HEADER, bundleTable(bundles)));
    print(
      `   init: wall median [q1–q3] and CPU median (all threads) of ${plan.bundles.initRepeats} fresh node processes per variant, taking turns, NODE_OPTIONS=${FUNCTION_NODE_OPTIONS}`,
    );
    const top = bundles.find((b) => b.fn === 'decrypt' && b.variant === 'aws')?.top ?? [];
    print(`   largest parts of the decrypt bundle (KiB): ${top.map((t) => `${t.name} ${t.kib}`).join(', ')}`);
  }

  if (durable) {
    print(
      '\nDurable embedded runtime (SQLite state file, WAL, synchronous=FULL) vs in-memory, small messages',
    );
    print(
      table(
        ['state', 'msg/s', 'messages × runs'],
        [
          [
            'in memory (unit tests, lost on exit)',
            fmt(durable.memoryThroughput, 1),
            `${durable.messages} × ${durable.runs}`,
          ],
          [
            'SQLite state file (serve, process, demo)',
            fmt(durable.durableThroughput, 1),
            `${durable.messages} × ${durable.runs}`,
          ],
        ],
      ),
    );
    const a = durable.accept;
    print(
      `   CPU ms per message: in memory ${fmt(durable.memoryCpuMsPerMessage, 2)}, SQLite ${fmt(durable.durableCpuMsPerMessage, 2)}; ` +
        `in-memory CPU ÷ durable CPU ${fmt(durable.cpuRatio, 2)} (steadier than wall time on a shared host)`,
    );
    print(
      `   durable ÷ in-memory (pairs run back to back): ${fmt(durable.ratio, 2)}; ` +
        `itk3 serve accept latency (POST → 202 after commit), ${a.requests} requests × ${a.concurrency} concurrent senders, pipeline draining: ` +
        `p50 ${a.p50Ms.toFixed(1)} ms, p99 ${a.p99Ms.toFixed(1)} ms, max ${a.maxMs.toFixed(1)} ms, ${a.rps.toFixed(0)} accepts/s`,
    );
    const b = durable.burst;
    if (b) {
      print(
        `   RSS around a burst of ${b.messages} × ${(b.bundleBytes / 1e6).toFixed(1)} MB messages (durable): ` +
          `before ${b.rssBeforeMiB.toFixed(0)} MiB, peak ${b.rssPeakMiB.toFixed(0)} MiB, after drain + GC ${b.rssAfterMiB.toFixed(0)} MiB`,
      );
    }
  }
  if (recipientKeys) {
    print('\n2b. Recipient key choice (small messages; local key = cached-mode work; same run)');
    print(
      table(
        [
          'recipient key',
          'JWE alg',
          'key step CPU ms',
          'floor ms/msg',
          'floor msg/s',
          'embedded msg/s',
          'embedded ÷ floor',
          'encrypted key chars',
        ],
        recipientKeys.map((r) => [
          r.label,
          r.label.startsWith('ECDH') ? 'ECDH-ES+A256KW' : 'RSA-OAEP-256',
          fmt(r.keyStepMs, 3),
          r.floorMs.toFixed(3),
          r.floorThroughput.toFixed(1),
          fmt(r.embedded, 1),
          r.ratio.toFixed(2),
          String(r.encryptedKeyChars),
        ]),
      ),
    );
    print(
      '   floor = the small floor of section 1 with its RSA-4096 unwrap replaced by this key step (ECDH-ES: epk import + ECDH + Concat KDF + AES-KW unwrap)',
    );
  }

  // ---- Targets ----------------------------------------------------------------------------------
  const targets: Target[] = [];
  if (durable) {
    targets.push({
      name: 'durable embedded ÷ in-memory throughput (small)',
      target: '≥ 0.8',
      measured: `${durable.ratio.median.toFixed(2)} wall (CPU: ${durable.cpuRatio.median.toFixed(2)})`,
      met: durable.ratio.median >= 0.8,
    });
    targets.push({
      name: 'serve accept latency p99 under load (durable)',
      target: '-',
      measured: `${durable.accept.p99Ms.toFixed(1)} ms`,
      met: undefined,
      note: `${durable.accept.concurrency} concurrent senders`,
    });
  }
  const smallE = embedded.find((e) => e.size === 'small');
  const smallF = floor?.sizes.find((s) => s.size === 'small');
  if (smallE && smallF) {
    const r = smallE.throughput.median / smallF.floorThroughput;
    targets.push({
      name: 'embedded throughput ÷ crypto floor (small)',
      target: '≥ 0.5',
      measured: r.toFixed(2),
      met: r >= 0.5,
    });
  }
  if (emulator) {
    for (const v of ['direct', 'cached'] as const) {
      const r = emulator.ratioToRelay[v] ?? 0;
      targets.push({
        name: `emulator ${v} ÷ bare relay`,
        target: '≥ 0.8',
        measured: r.toFixed(2),
        met: r >= 0.8,
      });
    }
    const kms = (variant: string) =>
      emulator?.variants.find((v) => v.variant === variant)?.calls?.stages.kms?.total ?? 0;
    // Cached mode: each run is a cold container, so its one key load is spread over only the run's
    // messages. Steady state is one load per kid per TTL: at this variant's throughput, a container
    // handles throughput × TTL messages per load.
    const steady = (variant: string) => {
      const v = emulator?.variants.find((x) => x.variant === variant);
      const loads = v?.calls?.stages.kms?.Decrypt ?? 0;
      const perLoad = (v?.throughput.median ?? 0) * DEFAULT_KEY_CACHE_TTL_SECONDS;
      return kms(variant) - loads + (perLoad > 0 ? 1 / perLoad : 0);
    };
    const cachedRow = (variant: string, ack: boolean): Target => ({
      name: `KMS calls/msg, cached, ${ack ? 'ack' : 'no ack'} requested (steady state)`,
      target: '≤ 0.01',
      measured: `${steady(variant).toFixed(5)} (cold run of ${plan.emulator.messages}: ${kms(variant).toFixed(4)})`,
      met: steady(variant) <= 0.01,
      note: ack
        ? 'one KMS Sign per response stays (response signing is on KMS by design)'
        : `one Decrypt per container and ${DEFAULT_KEY_CACHE_TTL_SECONDS} s TTL`,
    });
    targets.push({
      name: 'KMS calls/msg, direct, no ack requested',
      target: '≤ 1',
      measured: kms('direct-noack').toFixed(3),
      met: kms('direct-noack') <= 1,
    });
    targets.push({
      name: 'KMS calls/msg, direct, ack requested',
      target: '≤ 1',
      measured: kms('direct').toFixed(3),
      met: kms('direct') <= 1,
      note: 'includes one KMS Sign per signed ITK008M response',
    });
    targets.push(cachedRow('cached-noack', false));
    targets.push(cachedRow('cached', true));
    const hop = emulator.variants.find((v) => v.variant === 'direct')?.sqsPerMessagePerHop ?? 0;
    targets.push({
      name: 'SQS requests/msg/hop at batch 10',
      target: '≤ 0.35',
      measured: hop.toFixed(3),
      met: hop <= 0.35,
    });
  }
  for (const ack of [false, true]) {
    const c = costs.find((x) => x.size === 'small' && x.mode === 'cached' && x.infAck === ack);
    if (c) {
      targets.push({
        name: `cost per million, cached, small, ${ack ? 'ack' : 'no ack'} (all lines)`,
        target: '≤ $5',
        measured: `$${c.totalPerMillionUsd.toFixed(2)} (pipeline only $${c.pipelineOnlyPerMillionUsd.toFixed(2)})`,
        met: c.totalPerMillionUsd <= 5,
      });
    }
  }
  // Issue 14 item 4: fewer AWS calls, cached response signing.
  const signVariant = emulator?.variants.find((v) => v.variant === 'cached-sign');
  for (const v of emulator?.variants ?? []) {
    if (!v.calls) continue;
    const writes = dynamoWriteCalls(v.calls.stages);
    targets.push({
      name: `DynamoDB writes per delivered message, ${v.variant}`,
      target: '≤ 4',
      measured: `${writes.toFixed(2)} (${dynamoWriteUnits(v.calls.stages).toFixed(2)} WRU)`,
      met: writes <= 4,
      ...(writes > 4
        ? { note: 'the once-store keeps the first response signature (response#) per ack' }
        : {}),
    });
  }
  if (signVariant?.calls) {
    const calls = totalCalls(signVariant.calls.stages, signVariant.calls.ingest);
    targets.push({
      name: 'AWS calls per message, cached + cached signing key, ack',
      target: '≤ 9',
      measured: calls.toFixed(2),
      met: calls <= 9,
    });
  }
  const signCost = costs.find((c) => c.size === 'small' && c.mode === 'cached-sign' && c.infAck);
  if (signCost) {
    targets.push({
      name: `cost per million, pipeline only, cached + cached signing key, ack${signVariant ? '' : ' (port calls)'}`,
      target: '≤ $5',
      measured: `$${signCost.pipelineOnlyPerMillionUsd.toFixed(2)} (all lines $${signCost.totalPerMillionUsd.toFixed(2)})`,
      met: signCost.pipelineOnlyPerMillionUsd <= 5,
    });
  }
  if (bundles) {
    const deployed = bundles.filter((b) => b.variant === 'aws');
    const maxBytes = Math.max(...deployed.map((b) => b.bytes));
    const maxInit = Math.max(...deployed.map((b) => b.initMs.median));
    targets.push({
      name: 'largest function bundle',
      target: '≤ 300 KB',
      measured: `${(maxBytes / 1000).toFixed(0)} KB`,
      met: maxBytes <= 300_000,
    });
    targets.push({
      name: 'slowest module init',
      target: '≤ 150 ms',
      measured: `${maxInit.toFixed(0)} ms`,
      met: maxInit <= 150,
    });
  }
  for (const r of close?.rows ?? []) {
    targets.push({
      name: `${r.workload} ÷ floor, RSA-${r.modulus}, one core (issue 14)`,
      target: `≥ ${r.target}`,
      measured: `${r.cpuRatio.toFixed(2)} CPU (wall ${r.ratio.toFixed(2)})`,
      met: r.cpuRatio >= r.target,
    });
  }
  for (const r of pool?.rows ?? []) {
    if (r.target === undefined) continue;
    targets.push({
      name: `pool ÷ no pool, ${r.workload}, RSA-${r.modulus}, ${r.workers} workers (issue 14)`,
      target: `≥ ${r.target}`,
      measured: `${r.ratio.median.toFixed(2)} wall (CPU bound ${r.cpuBound?.toFixed(2) ?? '-'}; load ${r.load[0].toFixed(1)})`,
      met: r.ratio.median >= r.target,
    });
  }
  print('\n6. Targets (issues 6, 10 and 14)');
  print(
    table(
      ['target', 'wanted', 'measured', 'met'],
      targets.map((t) => [t.name, t.target, t.measured, t.met === undefined ? '-' : t.met ? 'yes' : 'NO']),
    ),
  );
  const elapsed = (performance.now() - t0) / 1000;
  print(`\nbench took ${elapsed.toFixed(0)} s`);

  const report = {
    version: 1,
    startedAt: started.toISOString(),
    elapsedSeconds: elapsed,
    commit: gitCommit(),
    quick: args.quick,
    machine: {
      cpus: cpus().length,
      model: cpus()[0]?.model,
      memoryGiB: totalmem() / 2 ** 30,
      node: process.version,
      openssl: process.versions.openssl,
    },
    plan,
    workload:
      'ITK009D X26 → A83627: PS256 credential, RS512 inner JWS, RSA-OAEP-256 (4096) + A256GCM, InfAckRequested true unless "noack"',
    stages: STAGES.map((s) => ({
      stage: s,
      batchSize: STAGE_DEFINITIONS[s].batchSize,
      memoryMb: STAGE_DEFINITIONS[s].memoryMb,
    })),
    floor,
    embedded,
    closeToFloor: close,
    pool,
    recipientKeys,
    emulator: emulator ?? { skipped: emulatorSkipped },
    durable,
    costs,
    prices: PRICES,
    assumedLatencyMs: ASSUMED_LATENCY_MS,
    bundles,
    targets,
    table: out.join('\n'),
  };
  const dir = join(ROOT, 'reports/bench');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${started.toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(join(dir, 'latest.json'), `${JSON.stringify(report, null, 2)}\n`);
  log(`report: ${file} (and reports/bench/latest.json)`);
}

interface PoolResult {
  rows: PoolRow[];
  skipped: string[];
}

/** Embedded small messages at RSA-4096 and RSA-2048, then `itk3 process` on the 63 KB sample. */
async function poolRows(
  world4096: Awaited<ReturnType<typeof createWorld>>,
  plan: (typeof PLANS)['quick' | 'full'],
  now: number,
  log: (line: string) => void,
): Promise<PoolResult> {
  const result: PoolResult = { rows: [], skipped: [] };
  log('worker pool: generating an RSA-2048 world…');
  const worlds = [
    { modulus: 4096, world: world4096 },
    { modulus: 2048, world: await createWorld({ now, recipientModulus: 2048 }) },
  ];
  const small = SIZE_CLASSES.find((c) => c.label === 'small');
  if (!small) throw new Error('no small size class');
  for (const w of worlds) {
    log(`worker pool: sealing ${plan.pool.messages} small messages for RSA-${w.modulus} (not timed)…`);
    const messages = await prepareMessages(w.world, small, plan.pool.messages, { now, infAck: true });
    const row = await benchPoolEmbedded(w.world, w.modulus, messages, now, plan.pool, log);
    if ('skipped' in row) result.skipped.push(`embedded RSA-${w.modulus}: ${row.skipped}`);
    else result.rows.push(row);
  }
  if (!sampleBytes()) {
    result.skipped.push(`itk3 process: ../shared/fixtures/itk3/${PROCESS_SAMPLE} is not there`);
    return result;
  }
  for (const w of worlds) {
    log(
      `worker pool: sealing ${3 * plan.pool.processMessages} copies of ${PROCESS_SAMPLE} for RSA-${w.modulus}…`,
    );
    const runner = await benchProcessSamples(ROOT, w.world, w.modulus, plan.pool.processMessages, Date.now());
    try {
      const row = benchPoolProcess(runner, plan.pool.processRepeats, log);
      if ('skipped' in row) result.skipped.push(`itk3 process RSA-${w.modulus}: ${row.skipped}`);
      else result.rows.push(row);
    } finally {
      runner.cleanup();
    }
  }
  return result;
}

interface CloseRow {
  workload: 'embedded small' | 'itk3 process 63 KB';
  modulus: 4096 | 2048;
  floorMs: number;
  throughput: Summary;
  /** Measured throughput ÷ floor throughput (wall clock: the host's load is in it). */
  ratio: number;
  /** CPU ms per message, over the repeats. */
  cpuMs: Summary;
  /** Floor CPU ÷ pipeline CPU per message: the one-core throughput ratio, steady under load. */
  cpuRatio: number;
  target: number;
}

interface CloseToFloor {
  rows: CloseRow[];
  sampleFloor?: SampleFloor;
  process?: ProcessResult[];
  processSkipped?: string;
}

/** Issue 14 item 2 targets, as ratios of measured throughput to the floor's. */
const CLOSE_TARGETS = {
  'embedded small': { 4096: 0.85, 2048: 0.6 },
  'itk3 process 63 KB': { 4096: 0.6, 2048: 0.35 },
} as const;

async function closeToFloor(
  world4096: Awaited<ReturnType<typeof createWorld>>,
  floor: FloorResult,
  plan: (typeof PLANS)['quick' | 'full'],
  now: number,
  log: (line: string) => void,
): Promise<CloseToFloor> {
  log('close to the floor: generating an RSA-2048 world…');
  const world2048 = await createWorld({ now, recipientModulus: 2048 });
  const worlds = [
    { modulus: 4096 as const, world: world4096 },
    { modulus: 2048 as const, world: world2048 },
  ];
  const small = SIZE_CLASSES.find((c) => c.label === 'small');
  const smallFloor = floor.sizes.find((f) => f.size === 'small');
  if (!small || !smallFloor) throw new Error('the small size class has no floor');
  const floors: FloorByModulus = floorByModulus(floor, smallFloor);
  const prepared = [];
  for (const w of worlds) {
    log(`close to the floor: sealing ${plan.close.backlog} small messages for RSA-${w.modulus} (not timed)…`);
    prepared.push({
      ...w,
      keys: new SoftwareKeyService(w.world.keystore),
      messages: await prepareMessages(w.world, small, plan.close.backlog, { now, infAck: true }),
      samples: [] as number[],
      cpu: [] as number[],
    });
  }
  for (const p of prepared) await backlogThroughput(p.world, p.keys, p.messages.slice(0, 20), now); // warm-up
  for (let r = 0; r < plan.close.runs; r += 1) {
    for (const p of r % 2 === 0 ? prepared : [...prepared].reverse()) {
      const run = await backlogThroughput(p.world, p.keys, p.messages, now);
      p.samples.push(run.throughput);
      p.cpu.push(run.cpuMsPerMessage);
    }
    log(
      `  close run ${r + 1}/${plan.close.runs}: ${prepared.map((p) => `RSA-${p.modulus} ${p.samples.at(-1)?.toFixed(1)} msg/s`).join(', ')}`,
    );
  }
  const rows: CloseRow[] = prepared.map((p) => {
    const throughput = summarise(p.samples);
    const cpuMs = summarise(p.cpu);
    const floorMs = p.modulus === 4096 ? floors.rsa4096 : floors.rsa2048;
    return {
      workload: 'embedded small',
      modulus: p.modulus,
      floorMs,
      throughput,
      ratio: (throughput.median * floorMs) / 1000,
      cpuMs,
      cpuRatio: floorMs / cpuMs.median,
      target: CLOSE_TARGETS['embedded small'][p.modulus],
    };
  });

  const bytes = sampleBytes();
  if (!bytes) return { rows, processSkipped: `../shared/fixtures/itk3/${PROCESS_SAMPLE} is not there` };
  const sampleFloor = await measureSampleFloor(world4096, bytes, floor, plan.floor);
  const n = plan.close.processMessages;
  const runners = [];
  for (const w of worlds) {
    log(`close to the floor: sealing ${3 * n} fresh copies of ${PROCESS_SAMPLE} for RSA-${w.modulus}…`);
    // A fresh token clock: the child processes judge credentials against the real time. One core:
    // `--workers 0` (the pool is measured on its own, section 2c).
    runners.push(await benchProcessSamples(ROOT, w.world, w.modulus, n, Date.now()));
  }
  const perMessage = runners.map(() => [] as ProcessSample[]);
  try {
    for (let r = 0; r < plan.close.processRepeats; r += 1) {
      const order = r % 2 === 0 ? [0, 1] : [1, 0];
      for (const i of order) perMessage[i]?.push((runners[i] as (typeof runners)[number]).run(0));
      log(
        `  itk3 process repeat ${r + 1}/${plan.close.processRepeats}: ${runners.map((x, i) => `RSA-${x.modulus} ${perMessage[i]?.at(-1)?.wallMs.toFixed(2)} ms/msg (CPU ${perMessage[i]?.at(-1)?.cpuMs.toFixed(2)})`).join(', ')}`,
      );
    }
  } finally {
    for (const x of runners) x.cleanup();
  }
  const process = runners.map((x, i) => processResult(x.modulus, n, perMessage[i] ?? []));
  for (const p of process) {
    const modulus = p.modulus as 4096 | 2048;
    const floorMs = modulus === 4096 ? sampleFloor.floor.rsa4096 : sampleFloor.floor.rsa2048;
    // msg/s from ms per message: median, and the spread from the slowest and fastest repeats.
    const ms = p.msPerMessage;
    const throughput: Summary = {
      ...ms,
      median: 1000 / ms.median,
      min: 1000 / ms.max,
      max: 1000 / ms.min,
      q1: 1000 / ms.q3,
      q3: 1000 / ms.q1,
    };
    rows.push({
      workload: 'itk3 process 63 KB',
      modulus,
      floorMs,
      throughput,
      ratio: floorMs / p.msPerMessage.median,
      cpuMs: p.cpuMsPerMessage,
      cpuRatio: floorMs / p.cpuMsPerMessage.median,
      target: CLOSE_TARGETS['itk3 process 63 KB'][modulus],
    });
  }
  return { rows, sampleFloor, process };
}

main().catch((error: unknown) => {
  // Messages of our own errors name codes and counts only, never tokens or message bytes.
  console.error(`bench failed: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
