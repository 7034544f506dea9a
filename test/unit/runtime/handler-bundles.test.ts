/**
 * One stage, one bundle: each handler in functions/ is bundled with the esbuild options the CDK
 * construct uses (cdk/constructs/pipeline-function.ts), and its metafile must hold only its own
 * stage's domain code and the SDK clients it calls. A handler that reaches another stage's module,
 * the whole-pipeline stage map, the testkit, or a client it never uses fails here. Bundle sizes go
 * to reports/bundles.json (and the test output).
 *
 * The same handlers are also bundled as deployed to AWS (the SDK left to the Lambda runtime) and
 * run: the SDK must load only through CommonJS `require` (the faster path, and the only one that
 * searches NODE_PATH, where the runtime keeps its SDK), and each wrapper must initialise to a handler.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { build, type Metafile } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  HANDLER_BUNDLE_FILE,
  handlerBundleOptions,
  handlerWrapper,
  RUNTIME_SDK_PACKAGES,
} from '../../../cdk/constructs/pipeline-function.js';

const ROOT = path.resolve(import.meta.dirname, '../../..');

/** The SDK clients the pipeline uses, by the package directory esbuild names in the metafile. */
const SDK_CLIENTS = ['kms', 'sqs', 'dynamodb', 's3', 'secrets-manager'] as const;
type SdkClient = (typeof SDK_CLIENTS)[number];

/** Stage modules: each belongs to exactly one handler. */
const STAGE_MODULES: Record<string, string[]> = {
  authenticate: ['lib/stages/authenticate.ts'],
  authorise: ['lib/stages/authorise.ts'],
  decrypt: ['lib/stages/decrypt.ts'],
  verify: ['lib/stages/verify.ts'],
  deliver: ['lib/stages/deliver.ts'],
};

/** Domain code only some stages run: the ITK3 parser, the policy engine, each envelope step. */
const ITK3_PARSER = ['lib/itk3/parse.ts', 'lib/itk3/xml.ts', 'lib/itk3/xml-fast.ts', 'node_modules/saxes/'];
const POLICY = ['lib/policy/index.ts'];
const MESH_POLICY = ['lib/policy/mesh.ts'];
const CREDENTIALS = ['lib/envelope/token.ts'];
const JWE = ['lib/envelope/jwe.ts'];
const JWS = ['lib/envelope/jws.ts'];
/** The ITK3 response builder (signing helpers are shared: the KMS adapter converts ES256 signatures). */
const RESPONSE_BUILDER = ['lib/itk3/response.ts'];

/** Never in a handler: the whole pipeline's stage map, the runtimes, the CLI, test fixtures. */
const NEVER = [
  'lib/pipeline/stages.ts',
  'lib/runtime/embedded.ts',
  'lib/runtime/emulator.ts',
  'lib/cli/',
  'lib/testkit/',
  'lib/adapters/local/',
  'lib/adapters/aws/clients.ts',
];

interface Expectation {
  entry: string;
  /** Stage modules it may hold (its own). */
  stages: string[];
  clients: SdkClient[];
  /** Domain modules it must not hold, beyond other stages' modules and {@link NEVER}. */
  forbidden: string[];
}

const HANDLERS: Record<string, Expectation> = {
  authenticate: {
    entry: 'functions/authenticate.ts',
    stages: ['authenticate'],
    clients: ['kms', 'sqs', 'dynamodb', 's3'],
    // The policy comes in with lib/policy/mesh.ts: a MESH sender's mailbox must be registered.
    forbidden: [...ITK3_PARSER, ...JWE, ...JWS, ...RESPONSE_BUILDER],
  },
  authorise: {
    entry: 'functions/authorise.ts',
    stages: ['authorise'],
    clients: ['sqs', 'dynamodb', 's3'],
    forbidden: [...CREDENTIALS, ...JWS, ...RESPONSE_BUILDER],
  },
  decrypt: {
    entry: 'functions/decrypt.ts',
    stages: ['decrypt'],
    clients: ['kms', 'sqs', 'dynamodb', 's3'],
    forbidden: [...ITK3_PARSER, ...POLICY, ...MESH_POLICY, ...CREDENTIALS, ...JWS, ...RESPONSE_BUILDER],
  },
  verify: {
    entry: 'functions/verify.ts',
    stages: ['verify'],
    clients: ['sqs', 'dynamodb', 's3'],
    forbidden: [...MESH_POLICY, ...CREDENTIALS, ...JWE, ...RESPONSE_BUILDER],
  },
  deliver: {
    entry: 'functions/deliver.ts',
    stages: ['deliver'],
    clients: ['kms', 'sqs', 'dynamodb', 's3', 'secrets-manager'],
    forbidden: [...POLICY, ...CREDENTIALS, ...JWE, ...JWS],
  },
  ingest: {
    entry: 'functions/ingest.ts',
    stages: [],
    clients: ['sqs', 's3'],
    forbidden: [...ITK3_PARSER, ...POLICY, ...JWE, ...JWS, ...RESPONSE_BUILDER, 'lib/stages/batch.ts'],
  },
  'mesh-poll': {
    entry: 'functions/mesh-poll.ts',
    stages: [],
    clients: ['kms', 'sqs', 'dynamodb', 's3', 'secrets-manager'],
    // The poller checks the sending mailbox is registered (lib/policy/mesh.ts, over the policy).
    forbidden: [...ITK3_PARSER, ...CREDENTIALS, ...JWE, ...JWS, ...RESPONSE_BUILDER, 'lib/stages/batch.ts'],
  },
};

/**
 * The construct's bundling (handlerBundleOptions), with the AWS SDK bundled as for an emulator
 * deploy: so the SDK clients a handler pulls in are inputs of its bundle and can be checked.
 */
function constructOptions(entry: string, bundleAwsSdk = true) {
  return {
    ...handlerBundleOptions({ bundleAwsSdk }),
    entryPoints: [path.join(ROOT, entry)],
    absWorkingDir: ROOT,
    metafile: true,
    write: false,
    outfile: path.join(ROOT, 'out', path.basename(entry).replace(/\.ts$/, '.mjs')),
    logLevel: 'silent' as const,
  };
}

interface Bundle {
  inputs: string[];
  bytes: number;
}

const bundles: Record<string, Bundle> = {};

beforeAll(async () => {
  for (const [name, expected] of Object.entries(HANDLERS)) {
    const result = await build(constructOptions(expected.entry));
    const metafile = result.metafile as Metafile;
    const code = result.outputFiles!.find((f) => f.path.endsWith('.mjs'))!;
    bundles[name] = { inputs: Object.keys(metafile.inputs), bytes: code.contents.byteLength };
  }
  const sizes = Object.fromEntries(
    Object.entries(bundles).map(([name, b]) => [name, { bytes: b.bytes, kib: Math.round(b.bytes / 1024) }]),
  );
  mkdirSync(path.join(ROOT, 'reports'), { recursive: true });
  writeFileSync(path.join(ROOT, 'reports/bundles.json'), `${JSON.stringify(sizes, null, 2)}\n`);
  console.log(
    `handler bundles (minified ESM, as the construct builds them):\n${Object.entries(sizes)
      .map(([name, s]) => `  ${name.padEnd(13)} ${String(s.kib).padStart(5)} KiB`)
      .join('\n')}`,
  );
}, 180_000);

/** The metafile inputs under any of `prefixes` (a path, or a folder ending in `/`). */
function holding(bundle: Bundle, prefixes: readonly string[]): string[] {
  return bundle.inputs.filter((input) =>
    prefixes.some((p) => (p.endsWith('/') ? input.includes(p) : input === p)),
  );
}

function clientsIn(bundle: Bundle): SdkClient[] {
  return SDK_CLIENTS.filter((c) =>
    bundle.inputs.some((i) => i.includes(`node_modules/@aws-sdk/client-${c}/`)),
  );
}

describe('handler bundles', () => {
  for (const [name, expected] of Object.entries(HANDLERS)) {
    it(`${name}: its own stage's code and nothing of another stage's`, () => {
      const bundle = bundles[name]!;
      const own = expected.stages.flatMap((s) => STAGE_MODULES[s]!);
      const others = Object.values(STAGE_MODULES)
        .flat()
        .filter((m) => !own.includes(m));
      for (const m of own) expect(bundle.inputs, `${name} holds ${m}`).toContain(m);
      expect(holding(bundle, others), `${name} holds another stage's modules`).toEqual([]);
      expect(holding(bundle, expected.forbidden), `${name} holds domain code it never runs`).toEqual([]);
      expect(holding(bundle, NEVER), `${name} holds whole-pipeline or test code`).toEqual([]);
    });

    it(`${name}: exactly the SDK clients it calls`, () => {
      expect(clientsIn(bundles[name]!)).toEqual(SDK_CLIENTS.filter((c) => expected.clients.includes(c)));
    });
  }

  it('a stage handler is smaller than the whole pipeline', () => {
    // Sanity for the comparison above: the parser and policy are real weight, not a rounding error.
    expect(bundles.decrypt!.bytes).toBeLessThan(bundles.verify!.bytes);
  });
});

describe('handler bundles as deployed to AWS (SDK from the runtime)', () => {
  /** Outside the project: no node_modules above it, so the SDK resolves only through NODE_PATH. */
  const lambdaRoot = mkdtempSync(path.join(tmpdir(), 'itk3-handler-bundles-'));
  const awsBundles: Record<string, { code: string; inputs: string[] }> = {};

  beforeAll(async () => {
    const configJson = JSON.stringify(
      JSON.parse(readFileSync(path.join(ROOT, 'docs/config.example.json'), 'utf8')),
    );
    for (const [name, expected] of Object.entries(HANDLERS)) {
      const result = await build(constructOptions(expected.entry, false));
      const code = result.outputFiles!.find((f) => f.path.endsWith('.mjs'))!.text;
      awsBundles[name] = { code, inputs: Object.keys((result.metafile as Metafile).inputs) };
      const dir = path.join(lambdaRoot, name);
      mkdirSync(dir);
      writeFileSync(path.join(dir, HANDLER_BUNDLE_FILE), code);
      writeFileSync(path.join(dir, 'index.mjs'), handlerWrapper(configJson, {}));
    }
  }, 180_000);
  afterAll(() => rmSync(lambdaRoot, { recursive: true, force: true }));

  for (const [name, expected] of Object.entries(HANDLERS)) {
    it(`${name}: the SDK clients it calls, each through require, none inlined or ES-imported`, () => {
      const { code, inputs } = awsBundles[name]!;
      expect(inputs.filter((i) => i.includes('node_modules/@aws-sdk/'))).toEqual([]);
      const required = [...code.matchAll(/\("(@aws-sdk\/[a-z0-9-]+)"\)/g)].map((m) => m[1]);
      expect([...new Set(required)].sort()).toEqual(expected.clients.map(clientPackage).sort());
      expect(code).not.toMatch(/from\s*"@aws-sdk\//);
      expect(code).not.toMatch(/import\s*\(\s*"@aws-sdk\//);
      expect(code).not.toContain('Dynamic require of');
    });
  }

  it('every SDK client the handlers call has a CommonJS stand-in', () => {
    const used = new Set(Object.values(HANDLERS).flatMap((h) => h.clients.map(clientPackage)));
    expect([...RUNTIME_SDK_PACKAGES].sort()).toEqual([...used].sort());
  });

  it('each wrapper initialises to a handler, with the SDK found only on NODE_PATH (as on Lambda), S3 not yet loaded', async () => {
    const run = promisify(execFile);
    const node = (script: string, arg: string) =>
      run(process.execPath, ['--input-type=module', '-e', script, arg], {
        cwd: lambdaRoot,
        env: {
          PATH: process.env.PATH ?? '',
          NODE_PATH: path.join(ROOT, 'node_modules'),
          AWS_REGION: 'eu-west-2',
          POWERTOOLS_METRICS_DISABLED: 'true',
          POWERTOOLS_LOG_LEVEL: 'SILENT',
        },
      });
    // The control: from here an ES import of the SDK does not resolve (ES resolution ignores NODE_PATH).
    const control = path.join(lambdaRoot, 'control.mjs');
    writeFileSync(
      control,
      "try { await import('@aws-sdk/client-sqs'); process.stdout.write('imported'); } catch (e) { process.stdout.write(e.code); }\n",
    );
    expect((await node('await import(process.argv[1]);', control)).stdout).toBe('ERR_MODULE_NOT_FOUND');
    // After initialisation: the handler, and the SDK clients in Node's CommonJS module cache.
    const probe = `
      const m = await import(process.argv[1]);
      const { createRequire } = await import('node:module');
      const loaded = Object.keys(createRequire(process.cwd() + '/').cache)
        .map((file) => /\\/@aws-sdk\\/(client-[a-z0-9-]+)\\/dist-cjs\\/index\\.js$/.exec(file)?.[1])
        .filter(Boolean);
      process.stdout.write(JSON.stringify({ handler: typeof m.handler, loaded: loaded.sort() }));`;
    for (const [name, expected] of Object.entries(HANDLERS)) {
      const { stdout } = await node(probe, path.join(lambdaRoot, name, 'index.mjs'));
      // S3 serves claim checks and deliveries only: its client loads at the first one, not at init.
      const atInit = expected.clients.filter((c) => c !== 's3').map((c) => `client-${c}`);
      expect(JSON.parse(stdout), name).toEqual({ handler: 'function', loaded: atInit.sort() });
    }
  }, 60_000);
});

function clientPackage(client: SdkClient): string {
  return `@aws-sdk/client-${client}`;
}
