/**
 * Prebuilt handler bundles for the package (`npm run build:package`, run by `npm pack`): every
 * `functions/*.ts` bundled with the construct's own esbuild options (`handlerBundleOptions`,
 * cdk/constructs/pipeline-function.ts) into `dist/handlers/<name>/bundle.mjs`. An installed package
 * has no sources; its construct copies these bundles into the code assets, so a consumer's synth
 * needs neither this repository nor esbuild.
 */
import { readdirSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build, type Metafile } from 'esbuild';
import { HANDLER_BUNDLE_FILE, handlerBundleOptions } from '../cdk/constructs/pipeline-function.js';

/** One bundle written by {@link buildHandlerBundles}. */
export interface BuiltHandler {
  name: string;
  file: string;
  bytes: number;
  metafile: Metafile;
}

/** The handler entry points: every `functions/*.ts` (whatever handlers exist today). */
export function handlerEntries(root: string): string[] {
  const dir = join(root, 'functions');
  return readdirSync(dir)
    .filter((file) => file.endsWith('.ts'))
    .sort()
    .map((file) => join(dir, file));
}

/**
 * Bundles every handler into `<outRoot>/<name>/bundle.mjs` with the construct's options.
 * `sdkByEsImport` (bench comparison only, never shipped) drops the SDK's CommonJS stand-ins, so the
 * external SDK is loaded by ES `import` as the bundles did before.
 */
export async function buildHandlerBundles(
  root: string,
  outRoot: string,
  options: { bundleAwsSdk: boolean; sdkByEsImport?: boolean },
): Promise<BuiltHandler[]> {
  const built: BuiltHandler[] = [];
  const shared = handlerBundleOptions({ bundleAwsSdk: options.bundleAwsSdk });
  const bundleOptions = options.sdkByEsImport ? { ...shared, alias: {}, inject: [] } : shared;
  for (const entry of handlerEntries(root)) {
    const name = basename(entry, '.ts');
    const file = join(outRoot, name, HANDLER_BUNDLE_FILE);
    const result = await build({
      ...bundleOptions,
      entryPoints: [entry],
      outfile: file,
      absWorkingDir: root,
      metafile: true,
    });
    built.push({ name, file, bytes: statSync(file).size, metafile: result.metafile });
  }
  return built;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const root = resolve(fileURLToPath(import.meta.url), '../..');
  const built = await buildHandlerBundles(root, join(root, 'dist/handlers'), { bundleAwsSdk: false });
  for (const b of built)
    console.log(`dist/handlers/${b.name}/${HANDLER_BUNDLE_FILE}  ${(b.bytes / 1024).toFixed(0)} KiB`);
}
