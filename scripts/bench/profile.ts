/**
 * `npm run bench:profile` — where the CPU goes, by function group (self time), for the two
 * workloads of issue 14 item 2 at RSA-2048 (where the pipeline's own work is largest against the
 * floor): small messages through the embedded handlers, and fresh copies of the real 63 KB sample
 * through the `itk3 process` pipeline (the command's own `commandLinePipeline`, in process, so
 * start-up is not in the profile). Uses the V8 sampling profiler through `node:inspector` (what
 * `node --cpu-prof` writes); the raw profiles go to reports/profile/ (git-ignored).
 *
 *   npm run bench:profile [-- --modulus 4096] [-- --messages 300] [-- --workers 2]
 *
 * With `--workers N` (N ≥ 2) the CPU-heavy steps run on a worker pool (issue 14 item 1): the
 * profile is then the main thread's, which is what bounds throughput once the rest is on workers.
 */
import './env.js';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SoftwareKeyService } from '../../lib/adapters/local/software-keys.js';
import { WorkerPool } from '../../lib/adapters/local/worker-pool.js';
import { commandLinePipeline, openRunState } from '../../lib/cli/ops.js';
import { parseBundle } from '../../lib/itk3/index.js';
import { routingFor, sealFor, tokenFor } from '../../lib/testkit/scenario.js';
import { createWorld, type DemoWorld } from '../../lib/testkit/world.js';
import { backlogThroughput } from './embedded.js';
import { keystoreFileFor } from './pool.js';
import { freshSampleCopy, sampleBytes } from './process-samples.js';
import { threadCpuMs } from './stats.js';
import { prepareMessages, SIZE_CLASSES } from './workload.js';

const ROOT = resolve(fileURLToPath(import.meta.url), '../../..');

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string };
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** The group a sampled function belongs to, from its script URL and name. */
export function groupOf(frame: ProfileNode['callFrame']): string {
  const { url, functionName: fn } = frame;
  if (fn === '(garbage collector)') return 'garbage collection';
  if (fn === '(program)' || fn === '(idle)' || fn === '(root)') return 'idle / program';
  // The profiler's own stop message, not the pipeline's work.
  if (fn === 'dispatch' && url === '') return 'idle / program';
  const rules: [RegExp, string][] = [
    [/node_modules\/saxes\//, 'XML: saxes'],
    [/node_modules\/xmlchars\//, 'XML: saxes'],
    [/lib\/itk3\/xml\.ts/, 'XML: reader (xml.ts)'],
    [/lib\/itk3\/xml-fast\.ts/, 'XML: fast pass (xml-fast.ts)'],
    [/lib\/itk3\/json\.ts/, 'JSON reader (json.ts)'],
    [/lib\/itk3\//, 'ITK3 walk/validate/serialise/response'],
    [/node_modules\/jose\//, 'jose'],
    [/node_modules\/zod\//, 'zod (record schema)'],
    [/lib\/envelope\//, 'envelope (own JOSE code)'],
    [/lib\/record\.ts/, 'record (serialise/parse)'],
    [/lib\/stages\//, 'stages'],
    [/lib\/runtime\/|lib\/adapters\/local\//, 'embedded runtime + local adapters'],
    [/node_modules\/@aws-lambda-powertools\//, 'Powertools (batch, logger)'],
    [/node:internal\/crypto|node:crypto/, 'node:crypto (JS side)'],
    [/node:internal\/fs|node:fs/, 'node:fs'],
    [/node:/, 'other node internals'],
    [/node_modules\//, 'other dependencies'],
    [/lib\//, 'other lib'],
  ];
  for (const [re, group] of rules) if (re.test(url)) return group;
  if (url === '') {
    if (
      /^(verify|sign|privateDecrypt|publicEncrypt|update|final|digest|createHash|oneShotDigest)$/.test(fn)
    ) {
      return 'native crypto';
    }
    if (/^(parse|stringify)$/.test(fn)) return 'native JSON';
    return `native: ${fn || '(anonymous)'}`;
  }
  return 'other';
}

/** Self time per group in ms and share of the busy (non-idle) time, largest first. */
export function summariseProfile(profile: CpuProfile): { group: string; ms: number; share: number }[] {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<string, number>();
  for (let i = 0; i < profile.samples.length; i += 1) {
    const node = byId.get(profile.samples[i] as number);
    if (!node) continue;
    const g = groupOf(node.callFrame);
    selfUs.set(g, (selfUs.get(g) ?? 0) + (profile.timeDeltas[i] ?? 0));
  }
  const busy = [...selfUs].filter(([g]) => g !== 'idle / program').reduce((s, [, us]) => s + us, 0);
  return [...selfUs]
    .filter(([g]) => g !== 'idle / program')
    .map(([group, us]) => ({ group, ms: us / 1000, share: us / busy }))
    .sort((a, b) => b.ms - a.ms);
}

/** Fold small groups into "rest" so the table stays readable. */
function print(title: string, rows: ReturnType<typeof summariseProfile>, messages: number): void {
  console.log(`\n${title}`);
  const shown = rows.filter((r) => r.share >= 0.01);
  const rest = rows.filter((r) => r.share < 0.01);
  const line = (g: string, ms: number, share: number) =>
    console.log(
      `  ${g.padEnd(40)} ${(ms / messages).toFixed(3).padStart(8)} ms/msg ${(share * 100).toFixed(1).padStart(6)} %`,
    );
  for (const r of shown) line(r.group, r.ms, r.share);
  if (rest.length > 0) {
    line(
      `rest (${rest.length} groups < 1 %)`,
      rest.reduce((s, r) => s + r.ms, 0),
      rest.reduce((s, r) => s + r.share, 0),
    );
  }
}

async function profiled<T>(session: Session, run: () => Promise<T>): Promise<CpuProfile> {
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 200 });
  await session.post('Profiler.start');
  await run();
  const { profile } = (await session.post('Profiler.stop')) as unknown as { profile: CpuProfile };
  return profile;
}

async function sampleMessages(world: DemoWorld, n: number, now: number) {
  const bytes = sampleBytes();
  if (!bytes) throw new Error('../shared/fixtures/itk3/consultation_report.xml is not there');
  const original = Buffer.from(bytes).toString('utf8');
  const out: { credential: string; sealed: string }[] = [];
  for (let i = 0; i < n; i += 1) {
    const copy = new TextEncoder().encode(freshSampleCopy(original));
    const msg = parseBundle(copy, 'xml');
    const sender = world.senders.GP0001;
    const rule = world.config.doc.rules.find(
      (r) => r.sender.ods === sender.ods && r.event === msg.header.event.code,
    );
    const routing = routingFor(msg, rule?.recipients[0] ?? 'A83627');
    out.push({
      credential: await tokenFor(world, sender, now),
      sealed: await sealFor(world, sender, copy, 'xml', routing),
    });
  }
  return out;
}

/** CPU ms per message since `from`: every thread, and the main thread alone (Linux). */
function cpuPerMessage(from: { all: NodeJS.CpuUsage; main: number | undefined }, n: number): string {
  const all = process.cpuUsage(from.all);
  const main = threadCpuMs();
  const mainPart =
    main !== undefined && from.main !== undefined
      ? `, main thread ${((main - from.main) / n).toFixed(3)}`
      : '';
  return `${((all.user + all.system) / 1000 / n).toFixed(3)} ms/msg all threads${mainPart}`;
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const opt = (name: string, fallback: number) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? Number(argv[i + 1]) : fallback;
  };
  const modulus = opt('modulus', 2048);
  const messages = opt('messages', 300);
  const workers = opt('workers', 0);
  const now = Date.now();
  const world = await createWorld({ now, recipientModulus: modulus });
  const keys = new SoftwareKeyService(world.keystore);
  const keystore = workers > 1 ? keystoreFileFor(world) : undefined;
  const pool = keystore
    ? await WorkerPool.start({ size: workers, keystoreFile: keystore.file, config: world.config })
    : undefined;
  const small = SIZE_CLASSES.find((s) => s.label === 'small');
  if (!small) throw new Error('no small class');
  const batch = await prepareMessages(world, small, messages, { now, infAck: true });
  const samples = await sampleMessages(world, Math.ceil(messages / 3), now);
  await backlogThroughput(world, keys, batch.slice(0, 30), now, pool); // warm-up
  const session = new Session();
  session.connect();
  const outDir = join(ROOT, 'reports/profile');
  mkdirSync(outDir, { recursive: true });

  const cpu0 = { all: process.cpuUsage(), main: threadCpuMs() };
  const embedded = await profiled(session, () => backlogThroughput(world, keys, batch, now, pool));
  const cpuEmbedded = cpuPerMessage(cpu0, messages);
  const work = mkdtempSync(join('/dev/shm', 'itk3-profile-'));
  // `itk3 process` runs on the durable state file since issue 10: profile it as it runs.
  const state = openRunState(work);
  const pipeline = commandLinePipeline(world.config, keys, state, pool ? { pool } : {});
  const cpu1 = { all: process.cpuUsage(), main: threadCpuMs() };
  const processProfile = await profiled(session, async () => {
    for (const m of samples) {
      const r = await pipeline.submit(m.credential, m.sealed);
      if (r.status !== 202) throw new Error('a sample was refused at ingest');
    }
    await pipeline.drain();
  });
  const cpuProcess = cpuPerMessage(cpu1, samples.length);
  state.close();
  rmSync(work, { recursive: true, force: true });
  session.disconnect();
  await pool?.close();
  keystore?.cleanup();
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const tag = pool ? `-pool${workers}` : '';
  writeFileSync(join(outDir, `${stamp}-embedded-${modulus}${tag}.cpuprofile`), JSON.stringify(embedded));
  writeFileSync(join(outDir, `${stamp}-process-${modulus}${tag}.cpuprofile`), JSON.stringify(processProfile));
  const where = pool ? `, ${workers} pool workers (main thread profiled)` : '';
  print(
    `embedded, small messages, RSA-${modulus}, ${messages} messages${where}: self time by group; CPU ${cpuEmbedded}`,
    summariseProfile(embedded),
    messages,
  );
  print(
    `itk3 process pipeline, fresh 63 KB samples, RSA-${modulus}, ${samples.length} messages${where}: self time by group; CPU ${cpuProcess}`,
    summariseProfile(processProfile),
    samples.length,
  );
}

main().catch((error: unknown) => {
  console.error(`profile failed: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
