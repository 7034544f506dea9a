/**
 * Function bundles, built with the construct's own esbuild options (`handlerBundleOptions`,
 * cdk/constructs/pipeline-function.ts, through scripts/build-handlers.ts) for every
 * `functions/*.ts` that exists, in three variants side by side:
 *
 * - `aws`: what `cdk deploy` ships to AWS and what the package's prebuilt bundles are: the AWS SDK
 *   v3 left to the Lambda runtime and loaded through CommonJS `require`;
 * - `aws-esm`: the same, with the SDK loaded by ES `import` (the bundles before the require
 *   stand-ins; a comparison, never shipped);
 * - `emulator`: the SDK bundled (`itk3:bundleAwsSdk=true`, for emulators without an SDK).
 *
 * Each bundle gets the construct's `index.mjs` wrapper (configuration set, then the bundle imported)
 * and module initialisation is timed as the import of that wrapper in a fresh `node` process started
 * with the functions' NODE_OPTIONS (source maps on) and the SDK present in node_modules, as the
 * Lambda runtime provides it. The variants take turns, one process each per round, so a busy host
 * slows them alike. Bundles go under reports/bench/bundles/ (inside the project, so the SDK resolves).
 *
 *   npx tsx scripts/bench/bundles.ts [--repeats N]   prints the table; `npm run bench` includes it
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Metafile } from 'esbuild';
import { FUNCTION_NODE_OPTIONS, handlerWrapper } from '../../cdk/constructs/pipeline-function.js';
import { type BuiltHandler, buildHandlerBundles } from '../build-handlers.js';
import { type Summary, summarise } from './stats.js';

/** `aws`: SDK from the Lambda runtime by `require` (shipped); `aws-esm`: by ES import; `emulator`: bundled. */
export type BundleVariant = 'aws' | 'aws-esm' | 'emulator';

const VARIANT_BUILD: Record<BundleVariant, { bundleAwsSdk: boolean; sdkByEsImport?: boolean }> = {
  aws: { bundleAwsSdk: false },
  'aws-esm': { bundleAwsSdk: false, sdkByEsImport: true },
  emulator: { bundleAwsSdk: true },
};

/** The issue-14 budget of one function deployed to AWS. */
const BUNDLE_BUDGET = { bytes: 300_000, initMs: 150 } as const;

export interface BundleFigures {
  /** Handler name: `functions/<fn>.ts`. */
  fn: string;
  variant: BundleVariant;
  bytes: number;
  /** Module initialisation (import of the asset's index.mjs in a fresh process), ms. */
  initMs: Summary;
  /**
   * CPU time of the same imports (`process.cpuUsage`, every thread of the process: with the GC and
   * compiler threads, above the wall time on an idle host), ms: steadier than wall time on a busy one.
   */
  initCpuMs: Summary;
  /** Largest contributors to the output, KiB, by package (or lib/ folder). */
  top: { name: string; kib: number }[];
}

export interface BundlePlan {
  initRepeats: number;
  variants: readonly BundleVariant[];
}

function topContributors(meta: Metafile, root: string): { name: string; kib: number }[] {
  const by = new Map<string, number>();
  for (const out of Object.values(meta.outputs)) {
    for (const [path, v] of Object.entries(out.inputs)) {
      const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(path)?.[1];
      const name = pkg ?? relative(root, join(root, path)).split('/').slice(0, 2).join('/');
      by.set(name, (by.get(name) ?? 0) + v.bytesInOutput);
    }
  }
  return [...by]
    .sort((a, b) => b[1] - a[1])
    .slice(0, 6)
    .map(([name, bytes]) => ({ name, kib: Math.round((bytes / 1024) * 10) / 10 }));
}

/** One module initialisation: the import of `wrapper` in a fresh node process, wall and CPU ms. */
function initOnce(wrapper: string): { wallMs: number; cpuMs: number } {
  const script = [
    'const c0 = process.cpuUsage(); const t0 = performance.now();',
    'await import(process.argv[1]);',
    'const t = performance.now() - t0; const c = process.cpuUsage(c0);',
    'process.stdout.write(JSON.stringify({ wallMs: t, cpuMs: (c.user + c.system) / 1000 }));',
  ].join(' ');
  const out = execFileSync(
    process.execPath,
    ['--input-type=module', '-e', script, pathToFileURL(wrapper).href],
    {
      env: {
        PATH: process.env.PATH ?? '',
        NODE_OPTIONS: FUNCTION_NODE_OPTIONS,
        AWS_REGION: 'eu-west-2',
        POWERTOOLS_METRICS_DISABLED: 'true',
        POWERTOOLS_LOG_LEVEL: 'SILENT',
        AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
      },
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  return JSON.parse(out) as { wallMs: number; cpuMs: number };
}

export async function benchBundles(
  root: string,
  configJson: string,
  plan: BundlePlan,
  log: (line: string) => void,
): Promise<BundleFigures[]> {
  const built = new Map<BundleVariant, BuiltHandler[]>();
  for (const variant of plan.variants) {
    const outRoot = join(root, 'reports/bench/bundles', variant);
    rmSync(outRoot, { recursive: true, force: true });
    const handlers = await buildHandlerBundles(root, outRoot, VARIANT_BUILD[variant]);
    for (const b of handlers) {
      const wrapper = join(dirname(b.file), 'index.mjs');
      mkdirSync(dirname(wrapper), { recursive: true });
      writeFileSync(wrapper, handlerWrapper(configJson, {}));
    }
    built.set(variant, handlers);
  }
  const results: BundleFigures[] = [];
  const names = (built.get(plan.variants[0]!) ?? []).map((b) => b.name);
  for (const name of names) {
    const samples = new Map<BundleVariant, { wallMs: number; cpuMs: number }[]>(
      plan.variants.map((v) => [v, []]),
    );
    for (let i = 0; i < plan.initRepeats; i += 1) {
      for (const variant of plan.variants) {
        const b = built.get(variant)!.find((h) => h.name === name)!;
        samples.get(variant)!.push(initOnce(join(dirname(b.file), 'index.mjs')));
      }
    }
    const line: string[] = [];
    for (const variant of plan.variants) {
      const b = built.get(variant)!.find((h) => h.name === name)!;
      const runs = samples.get(variant)!;
      const initMs = summarise(runs.map((r) => r.wallMs));
      const initCpuMs = summarise(runs.map((r) => r.cpuMs));
      results.push({
        fn: name,
        variant,
        bytes: b.bytes,
        initMs,
        initCpuMs,
        top: topContributors(b.metafile, root),
      });
      line.push(
        `${variant} ${(b.bytes / 1024).toFixed(0)} KiB ${initMs.median.toFixed(0)} ms (CPU ${initCpuMs.median.toFixed(0)})`,
      );
    }
    log(`  bundle ${name}: ${line.join(', ')}`);
  }
  return results;
}

/**
 * The side-by-side table: one row per handler, every variant (wall median [q1–q3], then the CPU
 * median), and the AWS budget verdict on the shipped `aws` variant's wall time.
 */
export function bundleTable(figures: readonly BundleFigures[]): string[][] {
  const fns = [...new Set(figures.map((f) => f.fn))];
  return fns.map((fn) => {
    const of = (variant: BundleVariant) => figures.find((f) => f.fn === fn && f.variant === variant);
    const kb = (f: BundleFigures | undefined) => (f ? (f.bytes / 1000).toFixed(0) : '-');
    const init = (f: BundleFigures | undefined) =>
      f
        ? `${f.initMs.median.toFixed(0)} [${f.initMs.q1.toFixed(0)}–${f.initMs.q3.toFixed(0)}] CPU ${f.initCpuMs.median.toFixed(0)}`
        : '-';
    const aws = of('aws');
    const met = aws
      ? aws.bytes <= BUNDLE_BUDGET.bytes && aws.initMs.median <= BUNDLE_BUDGET.initMs
        ? 'met'
        : 'not met'
      : '-';
    return [fn, kb(aws), init(aws), init(of('aws-esm')), kb(of('emulator')), init(of('emulator')), met];
  });
}

export const BUNDLE_TABLE_HEADER = [
  'function',
  'aws KB',
  'aws init ms (require)',
  'aws-esm init ms (import)',
  'emulator KB',
  'emulator init ms',
  `aws ≤ ${BUNDLE_BUDGET.bytes / 1000} KB, ≤ ${BUNDLE_BUDGET.initMs} ms`,
];

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const root = resolve(fileURLToPath(import.meta.url), '../../..');
  const repeatsArg = process.argv.indexOf('--repeats');
  const initRepeats = repeatsArg > 0 ? Number(process.argv[repeatsArg + 1]) : 7;
  const configJson = readFileSync(join(root, 'docs/config.example.json'), 'utf8');
  const figures = await benchBundles(
    root,
    JSON.stringify(JSON.parse(configJson)),
    { initRepeats, variants: ['aws', 'aws-esm', 'emulator'] },
    (line) => console.error(line),
  );
  const rows = [BUNDLE_TABLE_HEADER, ...bundleTable(figures)];
  const widths = BUNDLE_TABLE_HEADER.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  for (const row of rows) console.log(row.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  '));
  console.log(
    `init: wall median [q1–q3] and CPU median (all threads) of ${initRepeats} fresh node processes per variant, taking turns, ${process.version}, NODE_OPTIONS=${FUNCTION_NODE_OPTIONS}, SDK in node_modules`,
  );
  for (const variant of ['aws', 'emulator'] as const) {
    const decrypt = figures.find((f) => f.fn === 'decrypt' && f.variant === variant);
    if (decrypt) {
      console.log(
        `largest parts of decrypt (${variant}, KiB): ${decrypt.top.map((t) => `${t.name} ${t.kib}`).join(', ')}`,
      );
    }
  }
}
