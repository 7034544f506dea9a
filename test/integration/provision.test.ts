import { DescribeTimeToLiveCommand } from '@aws-sdk/client-dynamodb';
import { DescribeKeyCommand } from '@aws-sdk/client-kms';
import { GetBucketLifecycleConfigurationCommand } from '@aws-sdk/client-s3';
import { GetQueueAttributesCommand } from '@aws-sdk/client-sqs';
import { beforeAll, expect, it } from 'vitest';
import { type AwsClients, awsPortsFromEnv } from '../../lib/adapters/aws/clients.js';
import { type ProvisionResult, provisionEmulator, provisionedEnv } from '../../lib/adapters/aws/provision.js';
import {
  BLOB_BUCKET,
  ENV,
  STAGE_DEFINITIONS,
  visibilityTimeoutSeconds,
} from '../../lib/infra/definitions.js';
import { STAGES } from '../../lib/pipeline/topology.js';
import { testConfig } from './support/config.js';
import { describeEachEmulator, emulatorClients } from './support/emulators.js';

describeEachEmulator('provisionEmulator', ({ clients: own, emulator, unique, gap, itUnless }) => {
  const config = testConfig();
  // LocalStack has no DynamoDB offline: tables go to ministack when it runs too (the CI layout),
  // otherwise they are left out and their assertions skipped.
  const ministack = process.env.ITK3_MINISTACK_ENDPOINT;
  const tablesOn = !gap('dynamodb') || Boolean(ministack);
  const clients: AwsClients =
    gap('dynamodb') && ministack ? { ...own, dynamodb: emulatorClients(ministack).dynamodb } : own;
  const prefix = `${unique('p')
    .replace(/^itk3-it-/, '')
    .slice(0, 12)}-`;
  let first: ProvisionResult;
  let second: ProvisionResult;

  beforeAll(async () => {
    first = await provisionEmulator(clients, config, { prefix, tables: tablesOn });
    second = await provisionEmulator(clients, config, { prefix, tables: tablesOn });
  }, 120_000);

  it('creates everything the first time and nothing the second time, with the same result', () => {
    expect(first.created).toEqual(
      expect.arrayContaining([
        `${prefix}itk3-authenticate`,
        `${prefix}itk3-deliver-dlq`,
        `${prefix}itk3-blobs`,
        `alias/${prefix}itk3/rcp01-2025`,
        `alias/${prefix}itk3/rcp01_x2E2026`,
        `alias/${prefix}itk3/gw-response-1`,
        ...(tablesOn ? [`${prefix}itk3-once`, `${prefix}itk3-audit`, `ttl:${prefix}itk3-once`] : []),
      ]),
    );
    expect(second.created).toEqual([]);
    expect({ ...second, created: [] }).toEqual({ ...first, created: [] });
  });

  it('gives every stage queue a DLQ redrive with maxReceiveCount and a visibility of 6× the timeout', async () => {
    for (const stage of STAGES) {
      const { Attributes = {} } = await clients.sqs.send(
        new GetQueueAttributesCommand({ QueueUrl: first.queueUrls[stage], AttributeNames: ['All'] }),
      );
      const def = STAGE_DEFINITIONS[stage];
      expect(Number(Attributes.VisibilityTimeout), stage).toBe(visibilityTimeoutSeconds(def));
      expect(JSON.parse(Attributes.RedrivePolicy ?? '{}'), stage).toEqual({
        deadLetterTargetArn: first.dlqArns[stage],
        maxReceiveCount: def.maxReceiveCount,
      });
      expect(new URL(first.queueUrls[stage]).hostname).toBe('127.0.0.1');
    }
  });

  it('creates RSA_4096 decryption keys per recipient kid and a P-256 response-signing key', async () => {
    const describe = async (kid: string) =>
      (await clients.kms.send(new DescribeKeyCommand({ KeyId: first.kmsKeys[kid] }))).KeyMetadata;

    for (const kid of ['rcp01-2025', 'rcp01.2026', 'rcp02-2025']) {
      expect(await describe(kid)).toMatchObject({
        KeySpec: 'RSA_4096',
        KeyUsage: 'ENCRYPT_DECRYPT',
        KeyState: 'Enabled',
      });
    }
    expect(await describe('gw-response-1')).toMatchObject({
      KeySpec: 'ECC_NIST_P256',
      KeyUsage: 'SIGN_VERIFY',
    });
  });

  it('sets the claim-check expiry rule on the blob bucket', async () => {
    const { Rules = [] } = await clients.s3.send(
      new GetBucketLifecycleConfigurationCommand({ Bucket: first.blobBucket }),
    );
    expect(Rules.map((r) => r.Expiration?.Days)).toEqual([BLOB_BUCKET.expireDays]);
  });

  const enablesTtl = async () => {
    for (const table of [first.onceTable, first.auditTable]) {
      const { TimeToLiveDescription } = await clients.dynamodb.send(
        new DescribeTimeToLiveCommand({ TableName: table }),
      );
      expect(TimeToLiveDescription?.AttributeName, table).toBe('expiresAt');
      expect(TimeToLiveDescription?.TimeToLiveStatus, table).toMatch(/ENABL/);
    }
  };
  // With LocalStack the tables live on ministack when it runs beside it; otherwise it is the gap.
  if (tablesOn) it('enables TTL on both tables', enablesTtl);
  else itUnless('dynamodb', 'enables TTL on both tables', enablesTtl);

  it(`yields the environment awsPortsFromEnv needs (${emulator.name})`, async () => {
    const env = provisionedEnv(first);

    expect(Object.keys(env).sort()).toEqual(
      [...STAGES.map(ENV.queueUrl), ENV.onceTable, ENV.auditTable, ENV.blobBucket, ENV.kmsKeys].sort(),
    );
    const ports = awsPortsFromEnv(config, { env, clients });
    expect((await ports.keys.publicKeySpki('gw-response-1')).length).toBe(91); // P-256 SPKI DER
    expect(await ports.queues.sendBatch('authenticate', ['{}'])).toEqual({ failed: [] });
    await ports.blobs.put('provisioned', new Uint8Array([1]));
    if (tablesOn) {
      expect(await ports.once.putIfAbsent('k', 'v', 60)).toEqual({ created: true });
    }
  });
});
