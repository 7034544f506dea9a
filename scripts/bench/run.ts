/**
 * `npm run bench` — the pipeline's benchmark (not a test): crypto floor, embedded throughput and
 * latency per size class, emulator mode against a bare relay, AWS calls and cost per message, bundle
 * sizes and module initialisation. Prints tables and writes reports/bench/<timestamp>.json and
 * reports/bench/latest.json. Targets are those of issue 6; docs/PERFORMANCE.md records a run.
 *
 *   npm run bench                              full run (≈ 5–8 min on 2 cores)
 *   npm run bench -- --quick                   CI-sized run (≈ 1–2 min)
 *   npm run bench -- --emulator http://127.0.0.1:4566   (or ITK3_MINISTACK_ENDPOINT)
 *   npm run bench -- --skip bundles,emulator   leave parts out
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
import { DEFAULT_KEY_CACHE_TTL_SECONDS } from '../../lib/adapters/aws/cached-key-service.js';
import { SoftwareKeyService } from '../../lib/adapters/local/software-keys.js';
import { createWorld } from '../../lib/demo/world.js';
import { STAGE_DEFINITIONS } from '../../lib/infra/definitions.js';
import { STAGES } from '../../lib/ports/index.js';
import { type BundleFigures, type BundleVariant, benchBundles } from './bundles.js';
import { ASSUMED_LATENCY_MS, type CostEstimate, estimateCost, PRICES } from './cost.js';
import { type FloorResult, measureCryptoFloor } from './crypto-floor.js';
import { benchEmbeddedSize, type EmbeddedSizeResult, PHASES } from './embedded.js';
import { benchEmulator, type EmulatorResult } from './emulator.js';
import { benchRecipientKeys, type RecipientKeyRow } from './recipient-keys.js';
import { fmt } from './stats.js';
import { immunisationBundle, prepareMessages, SIZE_CLASSES } from './workload.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

interface Args {
  quick: boolean;
  emulator: string | undefined;
  skip: Set<string>;
  /** Size classes to run (default: all). */
  sizes: Set<string> | undefined;
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
    else if (a === '--skip') for (const s of (argv[++i] ?? '').split(',')) args.skip.add(s.trim());
    else if (a === '--sizes') args.sizes = new Set((argv[++i] ?? '').split(',').map((x) => x.trim()));
    else if (a === '--help' || a === '-h') {
      console.log(
        'usage: npm run bench -- [--quick] [--emulator URL] [--skip floor,embedded,recipient-keys,emulator,bundles] [--sizes small,1MB,5MB]',
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
    recipientKeys: { floor: { repeats: 5, loopMs: 200 }, backlog: 300, paced: 150, runs: 5 },
    bundles: {
      initRepeats: 7,
      variants: ['as-deployed', 'zod-namespace', 'zod-namespace+sdk-external'] as BundleVariant[],
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
    recipientKeys: { floor: { repeats: 3, loopMs: 60 }, backlog: 60, paced: 30, runs: 3 },
    bundles: { initRepeats: 3, variants: ['as-deployed'] as BundleVariant[] },
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

  // ---- Cost -------------------------------------------------------------------------------------
  const costs: CostEstimate[] = [];
  const unwrap4096 =
    floor?.common.find((i) => i.name.startsWith('CEK unwrap RSA-OAEP-256 4096'))?.cpuMs.median ?? 0;
  for (const e of embedded) {
    costs.push(estimateCost(e, 'direct', true, unwrap4096));
    costs.push(estimateCost(e, 'cached', true, unwrap4096));
    costs.push(estimateCost(e, 'cached', false, unwrap4096));
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

  if (bundles) {
    print('\n5. Function bundles (esbuild as the CDK construct bundles them) and module initialisation');
    const variants = [...new Set(bundles.map((b) => b.variant))];
    print(
      table(
        ['function', ...variants.flatMap((v) => [`${v} KiB`, 'init ms'])],
        ['authenticate', 'authorise', 'decrypt', 'verify', 'deliver', 'ingest'].map((fn) => [
          fn,
          ...variants.flatMap((v) => {
            const b = bundles?.find((x) => x.fn === fn && x.variant === v);
            return b ? [(b.bytes / 1024).toFixed(0), fmt(b.initMs, 0)] : ['-', '-'];
          }),
        ]),
      ),
    );
    const top = bundles.find((b) => b.fn === 'decrypt' && b.variant === 'as-deployed')?.top ?? [];
    print(`   largest parts of the decrypt bundle (KiB): ${top.map((t) => `${t.name} ${t.kib}`).join(', ')}`);
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
  if (bundles) {
    const deployed = bundles.filter((b) => b.variant === 'as-deployed');
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
  print('\n6. Targets (issue 6)');
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
    recipientKeys,
    emulator: emulator ?? { skipped: emulatorSkipped },
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

main().catch((error: unknown) => {
  // Messages of our own errors name codes and counts only, never tokens or message bytes.
  console.error(`bench failed: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
