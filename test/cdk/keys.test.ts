/**
 * Key identity follows the JOSE kid: reordering the configuration never replaces a key, a new kid
 * always makes a new one (that is how rotation works), and no two kids share a logical id.
 */
import { RemovalPolicy, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as iam from 'aws-cdk-lib/aws-iam';
import { beforeAll, describe, expect, it } from 'vitest';
import { PipelineKeys } from '../../cdk/constructs/keys.js';
import { loadConfig } from '../../lib/config/load.js';
import type { PipelineConfigInput } from '../../lib/config/schema.js';
import { testApp, validConfig } from './fixtures.js';

let base: PipelineConfigInput;

/** Logical id of each created key, by kid. */
function keyIds(config: PipelineConfigInput): Record<string, string> {
  const stack = new Stack(testApp(), 'Keys');
  const keys = new PipelineKeys(stack, 'Keys', {
    config: loadConfig(config).doc,
    removalPolicy: RemovalPolicy.RETAIN,
  });
  Template.fromStack(stack);
  const owned = [...keys.recipientKeys, keys.signingKey!].filter((k) => k.owned);
  return Object.fromEntries(owned.map((k) => [k.kid, stack.getLogicalId(k.key.node.defaultChild as never)]));
}

beforeAll(async () => {
  base = await validConfig();
});

describe('PipelineKeys identity', () => {
  it('keeps every key when recipients are reordered', () => {
    const reordered = { ...base, recipients: [...base.recipients].reverse() };
    expect(keyIds(reordered)).toEqual(keyIds(base));
  });

  it('creates a new recipient key for a new kid and keeps the old one while both are listed', () => {
    const rotated: PipelineConfigInput = {
      ...base,
      recipients: base.recipients.map((r) =>
        r.ods === 'B12345' ? { ...r, keys: [...r.keys, { kid: 'b12345-enc-2' }] } : r,
      ),
    };
    const before = keyIds(base);
    const after = keyIds(rotated);
    expect(after['b12345-enc-1']).toBe(before['b12345-enc-1']);
    expect(after['b12345-enc-2']).toBeDefined();
    expect(Object.values(before)).not.toContain(after['b12345-enc-2']);
  });

  it('creates a new signing key when the response-signing kid changes', () => {
    const before = keyIds(base);
    const after = keyIds({ ...base, responseSigning: { kid: 'gw-response-2' } });
    expect(after['gw-response-2']).toBeDefined();
    expect(after['gw-response-2']).not.toBe(before['gw-response-1']);
  });

  it('gives kids that differ only in punctuation different keys', () => {
    const config: PipelineConfigInput = {
      ...base,
      recipients: [{ ...base.recipients[1]!, keys: [{ kid: 'k.1' }, { kid: 'k_1' }, { kid: 'k-1' }] }],
      rules: [],
    };
    const ids = keyIds(config);
    expect(new Set([ids['k.1'], ids.k_1, ids['k-1']]).size).toBe(3);
  });
});

describe('PipelineKeys recipient key specs', () => {
  it('makes each recipient key of its keySpec and grants the decrypt role only what that key does', () => {
    const config: PipelineConfigInput = {
      ...base,
      recipients: [
        {
          ...base.recipients[1]!,
          keys: [
            { kid: 'rx-rsa2048', keySpec: 'RSA_2048' },
            { kid: 'rx-rsa3072', keySpec: 'RSA_3072' },
            { kid: 'rx-default' },
            { kid: 'rx-ec', keySpec: 'ECC_NIST_P256' },
          ],
        },
      ],
      rules: [],
    };
    const stack = new Stack(testApp(), 'Keys');
    const keys = new PipelineKeys(stack, 'Keys', {
      config: loadConfig(config).doc,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    const role = new iam.Role(stack, 'DecryptRole', {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
    });
    keys.grantUnwrap(role);
    const template = Template.fromStack(stack);
    const logicalId = (kid: string) => {
      const key = keys.recipientKeys.find((k) => k.kid === kid)?.key;
      return stack.getLogicalId(key?.node.defaultChild as never);
    };
    const resources = template.findResources('AWS::KMS::Key');
    const specOf = (kid: string) => {
      const { KeySpec, KeyUsage } = resources[logicalId(kid)]?.Properties ?? {};
      return [KeySpec, KeyUsage];
    };
    expect(specOf('rx-rsa2048')).toEqual(['RSA_2048', 'ENCRYPT_DECRYPT']);
    expect(specOf('rx-rsa3072')).toEqual(['RSA_3072', 'ENCRYPT_DECRYPT']);
    expect(specOf('rx-default')).toEqual(['RSA_4096', 'ENCRYPT_DECRYPT']);
    expect(specOf('rx-ec')).toEqual(['ECC_NIST_P256', 'KEY_AGREEMENT']);

    // The role's policy: DeriveSharedSecret on the agreement key only, Decrypt on the RSA keys only.
    const statements = Object.values(template.findResources('AWS::IAM::Policy')).flatMap(
      (p) => p.Properties.PolicyDocument.Statement as { Action: string | string[]; Resource: unknown }[],
    );
    const resourcesFor = (action: string) =>
      statements
        .filter((s) => [s.Action].flat().includes(action))
        .flatMap((s) => [s.Resource].flat())
        .map((r) => JSON.stringify(r));
    const arnOf = (kid: string) => JSON.stringify({ 'Fn::GetAtt': [logicalId(kid), 'Arn'] });
    expect(resourcesFor('kms:DeriveSharedSecret')).toEqual([arnOf('rx-ec')]);
    expect(resourcesFor('kms:Decrypt').sort()).toEqual(
      ['rx-rsa2048', 'rx-rsa3072', 'rx-default'].map(arnOf).sort(),
    );
    // And the agreement key's own policy names the role for DeriveSharedSecret.
    const ecPolicy = JSON.stringify(resources[logicalId('rx-ec')]?.Properties.KeyPolicy);
    expect(ecPolicy).toContain('kms:DeriveSharedSecret');
    expect(ecPolicy).not.toContain('"kms:Decrypt"');
  });

  it('refuses a keySpec outside the allow-list', () => {
    const config = {
      ...base,
      recipients: [{ ...base.recipients[1]!, keys: [{ kid: 'rx-x', keySpec: 'ECC_NIST_P384' }] }],
      rules: [],
    } as unknown as PipelineConfigInput;
    expect(() => loadConfig(config)).toThrow(/keySpec/);
  });
});
