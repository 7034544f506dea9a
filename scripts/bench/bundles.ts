/**
 * Function bundles, built with esbuild exactly as the CDK construct builds them
 * (cdk/constructs/pipeline-function.ts through aws-lambda-nodejs: `--bundle --platform=node
 * --target=node22 --format=esm --minify --sourcemap --sources-content=false
 * --main-fields=module,main`, nothing external, the createRequire banner, `__ITK3_CONFIG__` defined
 * as the configuration JSON), then imported in fresh `node` processes to time module
 * initialisation. Bundles go under reports/bench/bundles/ (inside the project, so an "SDK external"
 * variant can still resolve `@aws-sdk/*` the way the Lambda runtime would provide it).
 *
 * Two "what if" variants are built beside the real one, so recommendations come with numbers:
 * `zod-namespace` (every `import { z } from 'zod'` read as `import * as z from 'zod'`, which lets
 * esbuild drop the parts of zod not used) and `zod-namespace+sdk-external` (also `@aws-sdk/*`
 * left to the runtime, the CDK default the construct overrides).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { pathToFileURL } from 'node:url';
import { build, type Metafile, type Plugin } from 'esbuild';
import { type Summary, summarise } from './stats.js';

export const FUNCTIONS = ['authenticate', 'authorise', 'decrypt', 'verify', 'deliver', 'ingest'] as const;
export type FunctionName = (typeof FUNCTIONS)[number];
export type BundleVariant = 'as-deployed' | 'zod-namespace' | 'zod-namespace+sdk-external';

export interface BundleFigures {
  fn: FunctionName;
  variant: BundleVariant;
  bytes: number;
  /** Module initialisation (dynamic import in a fresh process), ms. */
  initMs: Summary;
  /** Largest contributors to the output, KiB, by package (or lib/ folder). */
  top: { name: string; kib: number }[];
}

export interface BundlePlan {
  initRepeats: number;
  variants: readonly BundleVariant[];
}

/** The banner the construct sets, read from its source so the two cannot drift apart. */
function cdkBanner(root: string): string {
  const source = readFileSync(join(root, 'cdk/constructs/pipeline-function.ts'), 'utf8');
  const match = /CREATE_REQUIRE_BANNER\s*=\s*\n?\s*"([^"]+)"/.exec(source);
  if (!match?.[1])
    throw new Error('cannot find CREATE_REQUIRE_BANNER in cdk/constructs/pipeline-function.ts');
  return match[1];
}

/** Rewrites the named zod import into a namespace import (same API, tree-shakable). */
const zodNamespace: Plugin = {
  name: 'zod-namespace',
  setup(b) {
    b.onLoad({ filter: /[\\/](lib|functions)[\\/].*\.ts$/ }, (args) => {
      const text = readFileSync(args.path, 'utf8');
      if (!text.includes("import { z } from 'zod'")) return undefined;
      return { contents: text.replace("import { z } from 'zod'", "import * as z from 'zod'"), loader: 'ts' };
    });
  },
};

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

function initTime(file: string, repeats: number): Summary {
  const script =
    'const t0 = performance.now(); await import(process.argv[1]); process.stdout.write(String(performance.now() - t0));';
  const samples: number[] = [];
  for (let i = 0; i < repeats; i += 1) {
    const out = execFileSync(
      process.execPath,
      ['--input-type=module', '-e', script, pathToFileURL(file).href],
      {
        env: {
          PATH: process.env.PATH ?? '',
          AWS_REGION: 'eu-west-2',
          POWERTOOLS_METRICS_DISABLED: 'true',
          POWERTOOLS_LOG_LEVEL: 'SILENT',
          AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
        },
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    samples.push(Number(out));
  }
  return summarise(samples);
}

export async function benchBundles(
  root: string,
  configJson: string,
  plan: BundlePlan,
  log: (line: string) => void,
): Promise<BundleFigures[]> {
  const banner = cdkBanner(root);
  const results: BundleFigures[] = [];
  for (const variant of plan.variants) {
    for (const fn of FUNCTIONS) {
      const outdir = join(root, 'reports/bench/bundles', variant, fn);
      mkdirSync(outdir, { recursive: true });
      const outfile = join(outdir, 'index.mjs');
      const built = await build({
        entryPoints: [join(root, 'functions', `${fn}.ts`)],
        bundle: true,
        platform: 'node',
        target: 'node22',
        format: 'esm',
        outfile,
        minify: true,
        sourcemap: true,
        sourcesContent: false,
        mainFields: ['module', 'main'],
        banner: { js: banner },
        define: { __ITK3_CONFIG__: JSON.stringify(configJson) },
        external: variant === 'zod-namespace+sdk-external' ? ['@aws-sdk/*'] : [],
        plugins: variant === 'as-deployed' ? [] : [zodNamespace],
        metafile: true,
        logLevel: 'error',
        absWorkingDir: root,
      });
      const bytes = statSync(outfile).size;
      const initMs = initTime(outfile, plan.initRepeats);
      results.push({ fn, variant, bytes, initMs, top: topContributors(built.metafile, root) });
      log(`  bundle ${variant} ${fn}: ${(bytes / 1024).toFixed(0)} KiB, init ${initMs.median.toFixed(0)} ms`);
    }
  }
  return results;
}
