/**
 * Factories for the CDK tests: configuration documents built in memory with real public keys, and
 * an App carrying the same feature flags as cdk.json.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { App } from 'aws-cdk-lib';
import { exportJWK, generateKeyPair } from 'jose';
import type { PipelineConfigInput, PublicJwk } from '../../lib/config/schema.js';

export const PROJECT_ROOT = resolve(import.meta.dirname, '../..');

/** An existing KMS key the configuration references instead of letting the stack create one. */
export const IMPORTED_RECIPIENT_KEY_ARN =
  'arn:aws:kms:eu-west-2:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab';
const S3_TARGET = { type: 's3', bucket: 'rx-inbox', prefix: 'itk3/' } as const;
const SQS_TARGET = {
  type: 'sqs',
  queueUrl: 'https://sqs.eu-west-2.amazonaws.com/123456789012/rx-queue',
} as const;

async function publicJwk(alg: 'ES256' | 'PS256', kid: string): Promise<PublicJwk> {
  const { publicKey } = await generateKeyPair(alg, { extractable: true });
  const jwk = await exportJWK(publicKey);
  return { ...jwk, kid, alg, use: 'sig' } as PublicJwk;
}

/**
 * A valid configuration with two recipients: one mid-rotation with two kids (one of them an
 * existing KMS key), one with a single kid; targets of every type.
 */
export async function validConfig(): Promise<PipelineConfigInput> {
  return {
    audience: 'https://itk3.test.example/messages',
    gatewayOds: 'ITK3GW',
    responseSigning: { kid: 'gw-response-1' },
    unauthenticatedResponseTarget: { type: 'folder', path: 'responses/_unauthenticated' },
    issuers: [
      {
        id: 'test-idp',
        issuer: 'https://idp.test.example',
        organisations: ['GP0001'],
        keys: [await publicJwk('ES256', 'idp-es256-1')],
      },
    ],
    senders: [
      {
        ods: 'GP0001',
        clients: [{ issuer: 'test-idp', sub: 'gp0001-ehr' }],
        signingKeys: [await publicJwk('PS256', 'gp0001-sign-1')],
        responseTarget: SQS_TARGET,
      },
    ],
    recipients: [
      {
        ods: 'A83627',
        keys: [{ kid: 'a83627-enc-1' }, { kid: 'a83627-enc-2', kmsKeyId: IMPORTED_RECIPIENT_KEY_ARN }],
        target: S3_TARGET,
      },
      {
        ods: 'B12345',
        keys: [{ kid: 'b12345-enc-1' }],
        target: { type: 'folder', path: 'delivered/B12345' },
      },
    ],
    rules: [
      {
        id: 'gp-to-a83627',
        sender: { ods: 'GP0001' },
        event: 'ITK007C',
        recipients: ['A83627', 'B12345'],
      },
    ],
  };
}

/** Feature flags and other context from cdk.json, minus the app's own `itk3:` keys. */
export function cdkJsonContext(): Record<string, unknown> {
  const cdkJson = JSON.parse(readFileSync(resolve(PROJECT_ROOT, 'cdk.json'), 'utf8')) as {
    context: Record<string, unknown>;
  };
  return Object.fromEntries(Object.entries(cdkJson.context).filter(([key]) => !key.startsWith('itk3:')));
}

/** An App configured like `cdk synth` would configure it. */
export function testApp(outdir?: string): App {
  return new App({ context: cdkJsonContext(), ...(outdir ? { outdir } : {}) });
}
