/**
 * Key identity follows the JOSE kid: reordering the configuration never replaces a key, a new kid
 * always makes a new one (that is how rotation works), and no two kids share a logical id.
 */
import { RemovalPolicy, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
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
  const owned = [...keys.recipientKeys, keys.signingKey].filter((k) => k.owned);
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
