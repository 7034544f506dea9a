/**
 * The construct as another team gets it: `npm pack` this repository, install the tarball into a
 * fresh CDK app in a temporary folder (with aws-cdk-lib and constructs only), synthesise a stack with
 * `new Itk3SecurePipeline(...)` in plain JavaScript run by `node`, and check the template and its
 * code assets. No source of this repository is on that app's path: it imports the package's
 * compiled `dist/`, and its functions are the prebuilt bundles the package ships.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HANDLER_BUNDLE_FILE, handlerWrapper } from '../../cdk/constructs/pipeline-function.js';
import { STAGES } from '../../lib/pipeline/topology.js';
import { PROJECT_ROOT } from './fixtures.js';

type Json = Record<string, unknown>;
type Resource = { Type: string; Properties: Json };

const installedVersion = (name: string): string =>
  (JSON.parse(readFileSync(join(PROJECT_ROOT, 'node_modules', name, 'package.json'), 'utf8')) as Json)
    .version as string;

/** The consumer's app: what a team writes after `npm install itk3-secure-pipeline`. */
const CONSUMER_APP = `
import { readFileSync } from 'node:fs';
import { App, Stack } from 'aws-cdk-lib';
import { Itk3SecurePipeline } from 'itk3-secure-pipeline/cdk';
import { mintToken, sealMessage, signBundle } from 'itk3-secure-pipeline/sender';

const app = new App({ outdir: 'cdk.out' });
const stack = new Stack(app, 'ConsumerPipeline', { env: { account: '123456789012', region: 'eu-west-2' } });
const pipeline = new Itk3SecurePipeline(stack, 'Pipeline', {
  config: JSON.parse(readFileSync('config.json', 'utf8')),
  stages: { decrypt: { maxConcurrency: 10 } },
});
app.synth();
console.log(JSON.stringify({
  construct: import.meta.resolve('itk3-secure-pipeline/cdk'),
  sender: [typeof mintToken, typeof sealMessage, typeof signBundle],
  config: JSON.stringify(pipeline.config.doc),
}));
`;

let dir: string;
let consumer: string;
let report: { construct: string; sender: string[]; config: string };
let resources: Record<string, Resource>;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'itk3-pack-'));
  // `npm pack` runs `prepack`: tsc to dist/ and the prebuilt handler bundles.
  const tarball = execFileSync('npm', ['pack', '--silent', '--pack-destination', dir], {
    cwd: PROJECT_ROOT,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  })
    .trim()
    .split('\n')
    .at(-1)!;
  consumer = join(dir, 'consumer');
  execFileSync('mkdir', [consumer]);
  writeFileSync(
    join(consumer, 'package.json'),
    JSON.stringify({
      name: 'consumer',
      private: true,
      type: 'module',
      dependencies: {
        'itk3-secure-pipeline': `file:${join(dir, tarball)}`,
        'aws-cdk-lib': installedVersion('aws-cdk-lib'),
        constructs: installedVersion('constructs'),
      },
    }),
  );
  writeFileSync(join(consumer, 'config.json'), readFileSync(join(PROJECT_ROOT, 'docs/config.example.json')));
  writeFileSync(join(consumer, 'app.mjs'), CONSUMER_APP);
  execFileSync('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'], {
    cwd: consumer,
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 150_000,
  });
  // A clean environment: no NODE_PATH, no tsx loader, nothing pointing back at this repository.
  const run = spawnSync(process.execPath, ['app.mjs'], {
    cwd: consumer,
    encoding: 'utf8',
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? dir },
    timeout: 90_000,
  });
  expect(run.status, run.stderr).toBe(0);
  report = JSON.parse(run.stdout.trim().split('\n').at(-1)!) as typeof report;
  const template = JSON.parse(
    readFileSync(join(consumer, 'cdk.out/ConsumerPipeline.template.json'), 'utf8'),
  ) as { Resources: Record<string, Resource> };
  resources = template.Resources;
}, 240_000);

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const ofType = (type: string) => Object.entries(resources).filter(([, r]) => r.Type === type);
const installed = () => join(consumer, 'node_modules/itk3-secure-pipeline');

describe('npm pack, install and synth in a fresh consumer app', () => {
  it('installs compiled JavaScript and prebuilt bundles, no TypeScript sources, and needs no esbuild or tsx', () => {
    expect(report.construct).toBe(`file://${installed()}/dist/cdk/constructs/itk3-secure-pipeline.js`);
    expect(report.sender).toEqual(['function', 'function', 'function']);
    const top = readdirSync(installed());
    expect(top).toContain('dist');
    for (const source of ['cdk', 'lib', 'functions', 'scripts', 'test', 'bin'])
      expect(top).not.toContain(source);
    expect(existsSync(join(installed(), 'dist/handlers/decrypt', HANDLER_BUNDLE_FILE))).toBe(true);
    for (const tool of ['esbuild', 'tsx', 'typescript', '@aws-sdk/client-kms']) {
      expect(existsSync(join(consumer, 'node_modules', tool)), tool).toBe(false);
    }
  });

  it('synthesises five stage functions and ingest, each queue with its dead-letter queue, and the KMS keys', () => {
    const fns = ofType('AWS::Lambda::Function');
    const stageFns = fns.filter(([, f]) =>
      String(f.Properties.Description).startsWith('ITK3 pipeline stage:'),
    );
    expect(stageFns.map(([, f]) => String(f.Properties.Description).split(': ')[1]).sort()).toEqual(
      [...STAGES].sort(),
    );
    expect(fns).toHaveLength(STAGES.length + 1);
    for (const [, fn] of fns) {
      expect(fn.Properties.Runtime).toBe('nodejs22.x');
      expect(fn.Properties.Handler).toBe('index.handler');
    }

    const queues = ofType('AWS::SQS::Queue');
    expect(queues).toHaveLength(2 * STAGES.length);
    const sources = queues.filter(([, q]) => q.Properties.RedrivePolicy !== undefined);
    expect(sources).toHaveLength(STAGES.length);
    const queueIds = new Set(queues.map(([id]) => id));
    for (const [, q] of sources) {
      const dlq = (q.Properties.RedrivePolicy as { deadLetterTargetArn: { 'Fn::GetAtt': string[] } })
        .deadLetterTargetArn['Fn::GetAtt'][0]!;
      expect(queueIds.has(dlq)).toBe(true);
      expect(q.Properties.KmsMasterKeyId).toBeDefined();
    }

    const keys = ofType('AWS::KMS::Key').map(([, k]) => k.Properties.KeySpec ?? 'SYMMETRIC_DEFAULT');
    // Data and inbound keys, the response-signing key, and the example's recipient keys.
    expect(keys.filter((k) => k === 'SYMMETRIC_DEFAULT')).toHaveLength(2);
    expect(keys).toContain('ECC_NIST_P256');
    expect(keys).toContain('RSA_4096');
  });

  it('deploys the prebuilt bundles byte for byte, beside the configuration the construct validated', () => {
    const fns = ofType('AWS::Lambda::Function');
    const wrapper = handlerWrapper(report.config, {});
    for (const [, fn] of fns) {
      const description = String(fn.Properties.Description);
      const name = description.startsWith('ITK3 pipeline stage: ') ? description.split(': ')[1]! : 'ingest';
      const hash = (fn.Properties.Code as { S3Key: string }).S3Key.replace(/\.zip$/, '');
      const asset = join(consumer, 'cdk.out', `asset.${hash}`);
      expect(
        readFileSync(join(asset, HANDLER_BUNDLE_FILE)).equals(
          readFileSync(join(installed(), 'dist/handlers', name, HANDLER_BUNDLE_FILE)),
        ),
        name,
      ).toBe(true);
      expect(readFileSync(join(asset, 'index.mjs'), 'utf8')).toBe(wrapper);
    }
  });
});
