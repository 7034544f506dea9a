import { DecryptCommand, GetPublicKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { GetQueueUrlCommand, SQSClient } from '@aws-sdk/client-sqs';
import type { MiddlewareStack } from '@smithy/types';
import { describe, expect, it } from 'vitest';
import { awsCallSnapshot, awsCalls, countCallsOf, resetAwsCalls } from '../../../lib/adapters/aws/calls.js';
import { endpointFor } from '../../../lib/adapters/aws/client-options.js';
import { awsPortsFromEnv, createAwsClients } from '../../../lib/adapters/aws/clients.js';
import { isTransientAwsError } from '../../../lib/adapters/aws/errors.js';
import { kmsKeyMap } from '../../../lib/adapters/aws/key-service-env.js';
import { aliasSafe, type ProvisionResult, provisionedEnv } from '../../../lib/adapters/aws/provision.js';
import { type LoadedConfig, loadConfig } from '../../../lib/config/load.js';
import { ConfigError } from '../../../lib/errors.js';
import { networkError, serviceError } from './faults.js';

const jwk = { kty: 'EC', crv: 'P-256', x: 'AQ', y: 'AQ', kid: 'k', alg: 'ES256' } as const;
const config: LoadedConfig = loadConfig({
  audience: 'aud',
  gatewayOds: 'GW001',
  responseSigning: { kid: 'resp', kmsKeyId: 'alias/resp' },
  unauthenticatedResponseTarget: { type: 'folder', path: 'r' },
  issuers: [{ id: 'i', issuer: 'iss', organisations: ['SND01'], keys: [{ ...jwk, kid: 'i1' }] }],
  senders: [],
  recipients: [
    {
      ods: 'RCP01',
      keys: [{ kid: 'a', kmsKeyId: 'arn:aws:kms:eu-west-2:1:key/a' }, { kid: 'b' }],
      target: { type: 'folder', path: 'x' },
    },
  ],
  rules: [],
});

describe('endpointFor', () => {
  it('prefers the option, then AWS_ENDPOINT_URL_<SERVICE>, then AWS_ENDPOINT_URL', () => {
    const env = {
      AWS_ENDPOINT_URL: 'http://127.0.0.1:4567',
      AWS_ENDPOINT_URL_DYNAMODB: 'http://127.0.0.1:4566',
    };
    expect(endpointFor('dynamodb', { env })).toBe('http://127.0.0.1:4566');
    expect(endpointFor('kms', { env })).toBe('http://127.0.0.1:4567');
    expect(endpointFor('kms', { env, endpoint: 'http://127.0.0.1:1' })).toBe('http://127.0.0.1:1');
    expect(endpointFor('kms', { env: {} })).toBeUndefined();
    // The MESH functions' Secrets Manager client follows the same rule (mesh-poll-job.ts).
    expect(endpointFor('secretsmanager', { env })).toBe('http://127.0.0.1:4567');
    expect(
      endpointFor('secretsmanager', {
        env: { ...env, AWS_ENDPOINT_URL_SECRETS_MANAGER: 'http://127.0.0.1:4806' },
      }),
    ).toBe('http://127.0.0.1:4806');
  });
});

describe('createAwsClients', () => {
  it('uses path-style S3 and us-east-1 against an emulator endpoint', async () => {
    const clients = createAwsClients({ env: { AWS_ENDPOINT_URL: 'http://127.0.0.1:4566' } });
    expect(await clients.s3.config.region()).toBe('us-east-1');
    expect(clients.s3.config.forcePathStyle).toBe(true);
    const endpoint = await clients.sqs.config.endpoint?.();
    expect(endpoint?.hostname).toBe('127.0.0.1');
  });

  it('keeps virtual-hosted S3 and the environment region without an endpoint', async () => {
    const clients = createAwsClients({ env: { AWS_REGION: 'eu-west-2' } });
    expect(await clients.kms.config.region()).toBe('eu-west-2');
    expect(clients.s3.config.forcePathStyle).toBe(false);
  });
});

describe('kmsKeyMap', () => {
  it('takes kmsKeyId from the configuration and lets ITK3_KMS_KEYS override or add per kid', () => {
    expect(kmsKeyMap(config, {})).toEqual({ a: 'arn:aws:kms:eu-west-2:1:key/a', resp: 'alias/resp' });
    expect(kmsKeyMap(config, { ITK3_KMS_KEYS: '{"b":"key-b","resp":"key-resp"}' })).toEqual({
      a: 'arn:aws:kms:eu-west-2:1:key/a',
      b: 'key-b',
      resp: 'key-resp',
    });
  });

  it.each(['not json', '["a"]', '{"a":1}', '{"a":""}'])('rejects ITK3_KMS_KEYS=%s', (value) => {
    expect(() => kmsKeyMap(config, { ITK3_KMS_KEYS: value })).toThrow(ConfigError);
  });
});

describe('awsPortsFromEnv', () => {
  it('assembles every port from the provisioned environment', () => {
    const result = {
      queueUrls: {
        authenticate: 'http://127.0.0.1:4566/0/a',
        authorise: 'http://127.0.0.1:4566/0/b',
        decrypt: 'http://127.0.0.1:4566/0/c',
        verify: 'http://127.0.0.1:4566/0/d',
        deliver: 'http://127.0.0.1:4566/0/e',
      },
      onceTable: 'o',
      auditTable: 'au',
      blobBucket: 'bb',
      kmsKeys: { b: 'key-b' },
    } as unknown as ProvisionResult;
    const env: Record<string, string> = {
      ...provisionedEnv(result),
      AWS_ENDPOINT_URL: 'http://127.0.0.1:4566',
    };

    const ports = awsPortsFromEnv(config, { env });

    expect(env.ITK3_QUEUE_URL_DECRYPT).toBe('http://127.0.0.1:4566/0/c');
    expect(env.ITK3_KMS_KEYS).toBe('{"b":"key-b"}');
    expect(Object.keys(ports).sort()).toEqual([
      'audit',
      'blobs',
      'clock',
      'deliverer',
      'keys',
      'once',
      'queues',
    ]);
  });
});

describe('isTransientAwsError', () => {
  it.each([
    [serviceError('ThrottlingException', 400), true],
    [serviceError('ProvisionedThroughputExceededException', 400), true],
    [serviceError('SomethingNew', 502), true],
    [serviceError('TooManyRequests', 429), true],
    [serviceError('AccessDeniedException', 400), true],
    [networkError('ETIMEDOUT'), true],
    // The project's own set beside the SDK's: KMS dependency failures, an aborted call, ECONNABORTED.
    [serviceError('KMSInternalException', 400), true],
    [serviceError('KeyUnavailableException', 400), true],
    [Object.assign(new Error('aborted'), { name: 'AbortError' }), true],
    [networkError('ECONNABORTED'), true],
    [serviceError('SomethingNew', 501), true],
    [serviceError('InvalidCiphertextException', 400), false],
    [serviceError('NotFoundException', 404), false],
    [serviceError('ConditionalCheckFailedException', 400), false],
    [serviceError('ValidationException', 400), false],
    ['a string', false],
  ])('%o → %s', (error, transient) => {
    expect(isTransientAwsError(error)).toBe(transient);
  });
});

describe('call counters', () => {
  /** Answers every request at the last step before the wire, so the test needs no endpoint. */
  const answered = <Input extends object, Output extends object>(stack: MiddlewareStack<Input, Output>) =>
    stack.add(() => async () => ({ output: { $metadata: {} } as Output, response: {} }), {
      step: 'finalizeRequest',
      name: 'answerLocally',
    });

  it('count every command a client sends, once per send, through the one middleware', async () => {
    resetAwsCalls();
    const kms = new KMSClient({
      region: 'eu-west-2',
      credentials: { accessKeyId: 'a', secretAccessKey: 'b' },
    });
    countCallsOf('kms', kms.middlewareStack);
    answered(kms.middlewareStack);
    await kms.send(new DecryptCommand({ CiphertextBlob: new Uint8Array([1]) }));
    await kms.send(new DecryptCommand({ CiphertextBlob: new Uint8Array([2]) }));
    await kms.send(new GetPublicKeyCommand({ KeyId: 'k' }));

    expect(awsCallSnapshot()).toEqual({
      kms: { Decrypt: 2, GetPublicKey: 1, total: 3 },
      sqs: { total: 0 },
      dynamodb: { total: 0 },
      s3: { total: 0 },
    });
  });

  it('count a call that fails too: it was sent and it costs', async () => {
    resetAwsCalls();
    const sqs = new SQSClient({
      region: 'eu-west-2',
      credentials: { accessKeyId: 'a', secretAccessKey: 'b' },
    });
    countCallsOf('sqs', sqs.middlewareStack);
    sqs.middlewareStack.add(
      () => async () => {
        throw serviceError('InvalidParameterValue', 400);
      },
      { step: 'finalizeRequest', name: 'refuse' },
    );
    await expect(sqs.send(new GetQueueUrlCommand({ QueueName: 'q' }))).rejects.toThrow(
      'InvalidParameterValue',
    );
    expect(awsCalls.sqs).toEqual({ GetQueueUrl: 1 });
  });

  it('are registered on every client createAwsClients builds', () => {
    const clients = createAwsClients({ region: 'eu-west-2' });
    for (const client of [clients.kms, clients.sqs, clients.dynamodb, clients.s3]) {
      expect(client.middlewareStack.identify().some((m) => m.startsWith('itk3CountCalls'))).toBe(true);
    }
  });
});

describe('aliasSafe', () => {
  it('spells characters KMS aliases refuse as _xHH', () => {
    expect(aliasSafe('rx.2025')).toBe('rx_x2E2025');
    expect(aliasSafe('A-z_0')).toBe('A-z_0');
  });
});
