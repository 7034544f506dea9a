/** The chain's building blocks: what a hash binds, and what passes as a checkpoint. */
import { beforeAll, describe, expect, it } from 'vitest';
import { createKeystore, generateKey } from '../../../lib/adapters/local/keystore.js';
import { SoftwareKeyService } from '../../../lib/adapters/local/software-keys.js';
import {
  type CheckpointKeys,
  genesisHash,
  linkHash,
  openCheckpoint,
  signCheckpoint,
} from '../../../lib/audit/chain.js';
import type { AuditEntry } from '../../../lib/ports/index.js';

const entry: AuditEntry = {
  traceId: 't1',
  at: '2026-01-01T00:00:00.000Z',
  stage: 'verify',
  event: 'rejected',
};
let keys: SoftwareKeyService;
let trusted: CheckpointKeys;

beforeAll(async () => {
  keys = new SoftwareKeyService(createKeystore([await generateKey('response-sign', 'ES256', 'gw-1', 'GW')]));
  trusted = new Map([['gw-1', await keys.publicKeySpki('gw-1')]]);
});

describe('link hashes', () => {
  it('bind the stream, the position, the previous hash and every field, added ones included', () => {
    const base = linkHash('s1', 1, genesisHash('s1'), entry);
    expect(linkHash('s2', 1, genesisHash('s1'), entry)).not.toBe(base);
    expect(linkHash('s1', 2, genesisHash('s1'), entry)).not.toBe(base);
    expect(linkHash('s1', 1, genesisHash('s2'), entry)).not.toBe(base);
    expect(linkHash('s1', 1, genesisHash('s1'), { ...entry, detail: 'x' })).not.toBe(base);
    // Field order does not matter; only content does.
    const reordered = { event: entry.event, stage: entry.stage, at: entry.at, traceId: entry.traceId };
    expect(linkHash('s1', 1, genesisHash('s1'), reordered)).toBe(base);
  });
});

describe('checkpoints', () => {
  const claims = { stream: 's1', n: 3, hash: 'a'.repeat(64), at: '2026-01-01T00:00:00.000Z' };

  it('open with a trusted key and return their claims', async () => {
    const jws = await signCheckpoint({ kid: 'gw-1', keys }, claims);
    expect(openCheckpoint(jws, trusted)).toEqual({ ok: true, claims, kid: 'gw-1' });
  });

  it('refuse a JWS of the same key that is not typed as a checkpoint (a signed ITK3 response)', async () => {
    const header = Buffer.from(JSON.stringify({ alg: 'ES256', kid: 'gw-1', typ: 'JOSE' })).toString(
      'base64url',
    );
    const payload = Buffer.from(JSON.stringify(claims)).toString('base64url');
    const signature = await keys.signEs256('gw-1', new TextEncoder().encode(`${header}.${payload}`));
    const jws = `${header}.${payload}.${Buffer.from(signature).toString('base64url')}`;
    expect(openCheckpoint(jws, trusted)).toEqual({ ok: false, reason: 'not an ES256 audit checkpoint' });
  });

  it('refuse an untrusted kid and a changed payload', async () => {
    const jws = await signCheckpoint({ kid: 'gw-1', keys }, claims);
    expect(openCheckpoint(jws, new Map())).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/not a trusted/),
    });
    const [h, , s] = jws.split('.');
    const other = Buffer.from(JSON.stringify({ ...claims, n: 4 })).toString('base64url');
    expect(openCheckpoint(`${h}.${other}.${s}`, trusted)).toEqual({
      ok: false,
      reason: 'signature does not verify',
    });
  });
});
