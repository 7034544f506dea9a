/**
 * A bad configuration document fails the synth with every problem listed — in the construct, in
 * the app, and through `cdk synth` itself — before anything is bundled.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Stack } from 'aws-cdk-lib';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildApp, CONTEXT } from '../../cdk/build-app.js';
import { queueArnFromUrl } from '../../cdk/constructs/itk3-secure-pipeline.js';
import { Itk3PipelineStack } from '../../cdk/pipeline-stack.js';
import type { PipelineConfigInput } from '../../lib/config/schema.js';
import { ConfigError } from '../../lib/errors.js';
import { cdkJsonContext, PROJECT_ROOT, testApp, validConfig } from './fixtures.js';

let valid: PipelineConfigInput;
let dir: string;

/** Two schema problems: both are reported. */
function badSchema(): PipelineConfigInput {
  return { ...valid, gatewayOds: 'not an ods code', audience: '' };
}

/** A schema-valid document with two cross-reference problems: both are reported. */
function badReferences(): PipelineConfigInput {
  return {
    ...valid,
    responseSigning: { kid: 'a83627-enc-1' },
    rules: [{ id: 'r1', sender: { ods: 'UNKNOWN1' }, event: 'ITK007C', recipients: ['A83627'] }],
  };
}
const REFERENCE_PROBLEMS = [
  'responseSigning.kid: must differ from every recipient key id',
  'rules.0.sender.ods: "UNKNOWN1" is not a configured sender',
];

function issuesOf(fn: () => unknown): readonly string[] {
  try {
    fn();
  } catch (error) {
    if (error instanceof ConfigError) return error.issues;
    throw error;
  }
  throw new Error('expected a ConfigError');
}

beforeAll(async () => {
  valid = await validConfig();
  dir = mkdtempSync(join(tmpdir(), 'itk3-cdk-config-'));
});

describe('configuration validated at synth', () => {
  it('rejects an invalid document in the construct, listing every problem', () => {
    const schema = issuesOf(() => new Itk3PipelineStack(testApp(), 'S', { config: badSchema() }));
    expect(schema).toHaveLength(2);
    expect(schema).toEqual(
      expect.arrayContaining([expect.stringMatching(/^gatewayOds: /), expect.stringMatching(/^audience: /)]),
    );
    const references = issuesOf(() => new Itk3PipelineStack(testApp(), 'S', { config: badReferences() }));
    expect([...references].sort()).toEqual([...REFERENCE_PROBLEMS].sort());
  });

  it('refuses key aliases, which no IAM grant can scope, and non-SQS queue URLs', () => {
    const config: PipelineConfigInput = {
      ...valid,
      responseSigning: { kid: 'gw-response-1', kmsKeyId: 'alias/itk3-signing' },
      recipients: [
        {
          ods: 'A83627',
          keys: [{ kid: 'a83627-enc-1', kmsKeyId: 'arn:aws:kms:eu-west-2:123456789012:alias/rx' }],
          target: { type: 'folder', path: 'delivered/A83627' },
        },
        ...valid.recipients.slice(1),
      ],
    };
    const problems = issuesOf(() => new Itk3PipelineStack(testApp(), 'S', { config }));
    expect(problems).toHaveLength(2);
    expect(problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^recipients\.0\.keys\.0\.kmsKeyId: .* is an alias/),
        expect.stringMatching(/^responseSigning\.kmsKeyId: .* is an alias/),
      ]),
    );
  });

  it('rejects a delivery queue URL it cannot turn into an ARN', () => {
    const config: PipelineConfigInput = {
      ...valid,
      unauthenticatedResponseTarget: { type: 'sqs', queueUrl: 'https://example.com/not-a-queue' },
    };
    const problems = issuesOf(() => new Itk3PipelineStack(testApp(), 'S', { config }));
    expect(problems).toEqual([expect.stringMatching(/^unauthenticatedResponseTarget\.queueUrl: /)]);
  });

  it('fails the app when the itk3:configFile document is invalid', () => {
    const file = join(dir, 'bad.json');
    writeFileSync(file, JSON.stringify(badReferences()));
    const problems = issuesOf(() =>
      buildApp({ appProps: { context: { ...cdkJsonContext(), [CONTEXT.configFile]: file }, outdir: dir } }),
    );
    expect([...problems].sort()).toEqual([...REFERENCE_PROBLEMS].sort());
  });

  it('fails the app when the configuration file is missing or not JSON', () => {
    const missing = issuesOf(() =>
      buildApp({ appProps: { context: { [CONTEXT.configFile]: join(dir, 'absent.json') }, outdir: dir } }),
    );
    expect(missing).toEqual([expect.stringContaining('cannot read configuration file')]);
    const file = join(dir, 'broken.json');
    writeFileSync(file, '{ not json');
    const broken = issuesOf(() =>
      buildApp({ appProps: { context: { [CONTEXT.configFile]: file }, outdir: dir } }),
    );
    expect(broken).toEqual([expect.stringContaining('is not valid JSON')]);
  });

  it('makes `cdk synth` exit non-zero and print the whole problem list', () => {
    const file = join(dir, 'bad-for-cli.json');
    writeFileSync(file, JSON.stringify(badReferences()));
    const result = spawnSync(
      'npx',
      [
        'cdk',
        'synth',
        '--quiet',
        '--no-notices',
        '-c',
        `${CONTEXT.configFile}=${file}`,
        '-o',
        join(dir, 'out'),
      ],
      { cwd: PROJECT_ROOT, encoding: 'utf8', timeout: 120_000 },
    );
    expect(result.status).not.toBe(0);
    for (const problem of REFERENCE_PROBLEMS) expect(result.stderr).toContain(problem);
    expect(result.stderr).not.toContain('Bundling asset');
  });
});

describe('queueArnFromUrl', () => {
  const stack = new Stack(undefined, 'Arns', { env: { account: '123456789012', region: 'eu-west-2' } });
  const arn = (url: string) => {
    const value = queueArnFromUrl(url);
    return value === undefined ? undefined : stack.resolve(value);
  };

  it('reads region, account and name from regional and legacy URLs', () => {
    expect(JSON.stringify(arn('https://sqs.eu-west-2.amazonaws.com/123456789012/rx'))).toContain(
      ':sqs:eu-west-2:123456789012:rx',
    );
    expect(JSON.stringify(arn('https://eu-west-2.queue.amazonaws.com/123456789012/rx.fifo'))).toContain(
      ':sqs:eu-west-2:123456789012:rx.fifo',
    );
  });

  it('takes the stack Region for emulator URLs', () => {
    expect(JSON.stringify(arn('http://127.0.0.1:4566/000000000000/rx'))).toContain(':000000000000:rx');
  });

  it('rejects anything that is not a queue URL', () => {
    expect(arn('not a url')).toBeUndefined();
    expect(arn('https://example.com/not-a-queue')).toBeUndefined();
  });
});
