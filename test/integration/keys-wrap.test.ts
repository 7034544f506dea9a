/**
 * `itk3 keys wrap` against an emulator's KMS, end to end: the command (through `main`, with the
 * endpoint and credentials in the usual AWS environment variables) makes a wrapped recipient key
 * under a symmetric key; a CachedKeyService built from what it printed — directly, and through the
 * environment the CDK construct gives the decrypt function — opens a content key that was
 * RSA-OAEP-256-encrypted offline to the printed public JWK.
 */

import { constants, createPublicKey, publicEncrypt, randomBytes } from 'node:crypto';
import { CreateKeyCommand, ScheduleKeyDeletionCommand } from '@aws-sdk/client-kms';
import { CompactEncrypt, compactVerify, importJWK } from 'jose';
import { afterAll, afterEach, beforeAll, expect, it, vi } from 'vitest';
import { CachedKeyService } from '../../lib/adapters/aws/cached-key-service.js';
import { awsCalls, resetAwsCalls } from '../../lib/adapters/aws/calls.js';
import { KEY_MODE_ENV } from '../../lib/adapters/aws/deployment-names.js';
import { keyServiceFromEnv } from '../../lib/adapters/aws/key-service-env.js';
import type { WrappedKeyRecord } from '../../lib/adapters/aws/key-wrapping.js';
import { signCheckpoint } from '../../lib/audit/chain.js';
import { main } from '../../lib/cli/main.js';
import { loadConfig } from '../../lib/config/load.js';
import { signCompactWithKeyService } from '../../lib/envelope/response-sign.js';
import { validConfig } from '../cdk/fixtures.js';
import { describeEachEmulator } from './support/emulators.js';

/** RSA-OAEP-256 (OAEP with SHA-256) to a public JWK, as a sender's JOSE library does it. */
function encryptTo(published: WrappedKeyRecord['publicJwk'], cek: Uint8Array): Buffer {
  if (published.kty !== 'RSA') throw new Error('an RSA recipient key is expected');
  const jwk = published;
  return publicEncrypt(
    {
      key: createPublicKey({ key: { kty: jwk.kty, n: jwk.n, e: jwk.e }, format: 'jwk' }),
      padding: constants.RSA_PKCS1_OAEP_PADDING,
      oaepHash: 'sha256',
    },
    cek,
  );
}

describeEachEmulator('itk3 keys wrap', ({ clients, endpoint, itUnless }) => {
  const created: string[] = [];
  let wrappingKey = '';

  beforeAll(async () => {
    const out = await clients.kms.send(
      new CreateKeyCommand({ Description: 'itk3 keys wrap test: wrapping key (symmetric)' }),
    );
    wrappingKey = out.KeyMetadata?.Arn ?? '';
    created.push(wrappingKey);
  });

  afterEach(() => vi.unstubAllEnvs());

  afterAll(async () => {
    for (const keyId of created) {
      await clients.kms
        .send(new ScheduleKeyDeletionCommand({ KeyId: keyId, PendingWindowInDays: 7 }))
        .catch(() => {});
    }
  });

  /** `itk3 keys wrap …` as an operator runs it: the emulator named only by the AWS environment. */
  async function keysWrap(...args: string[]): Promise<{ code: number; out: string; err: string }> {
    vi.stubEnv('AWS_ENDPOINT_URL', endpoint);
    vi.stubEnv('AWS_REGION', 'us-east-1');
    vi.stubEnv('AWS_ACCESS_KEY_ID', 'test');
    vi.stubEnv('AWS_SECRET_ACCESS_KEY', 'test');
    // Empty, not unset: with a profile named, the SDK would skip the key pair above.
    vi.stubEnv('AWS_PROFILE', '');
    const out: string[] = [];
    const err: string[] = [];
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
      err.push(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8'));
      return true;
    });
    try {
      const code = await main(['keys', 'wrap', ...args], (line) => out.push(line));
      return { code, out: out.join('\n'), err: err.join('') };
    } finally {
      spy.mockRestore();
    }
  }

  it('wraps an RSA_4096 key that a CachedKeyService unwraps once and uses for offline-encrypted CEKs', async () => {
    const { code, out, err } = await keysWrap('--wrapping-key', wrappingKey, '--kid', 'rx-wrap-4096');
    expect({ code, err }).toEqual({ code: 0, err: '' });
    const record = JSON.parse(out) as WrappedKeyRecord;
    expect(Object.keys(record).sort()).toEqual(['kid', 'publicJwk', 'wrappedPrivateKey', 'wrappingKeyArn']);
    expect(record.kid).toBe('rx-wrap-4096');
    expect(record.wrappingKeyArn).toBe(wrappingKey);
    expect(Object.keys(record.publicJwk).sort()).toEqual(['alg', 'e', 'kid', 'kty', 'n', 'use']);
    expect(record.publicJwk.kty === 'RSA' && Buffer.from(record.publicJwk.n, 'base64url').length * 8).toBe(
      4096,
    );

    const keys = new CachedKeyService(clients.kms, {
      wrappedKeys: { [record.kid]: Buffer.from(record.wrappedPrivateKey, 'base64') },
      kmsKeyIds: {},
      wrappingKeyId: record.wrappingKeyArn,
    });
    resetAwsCalls();
    for (let i = 0; i < 3; i += 1) {
      const cek = randomBytes(32);
      const result = await keys.unwrapKey(record.kid, encryptTo(record.publicJwk, cek));
      expect(result.ok && Buffer.from(result.cek).equals(cek)).toBe(true);
    }
    expect(awsCalls.kms).toEqual({ Decrypt: 1 });
  }, 120_000);

  it('plugs into the decrypt function environment the CDK construct sets, and opens a jose JWE', async () => {
    const { code, out } = await keysWrap(
      '--wrapping-key',
      wrappingKey,
      '--kid',
      'a83627-enc-1',
      '--spec',
      'RSA_2048',
    );
    expect(code).toBe(0);
    const record = JSON.parse(out) as WrappedKeyRecord;
    const keys = keyServiceFromEnv(loadConfig(await validConfig()), clients.kms, {
      [KEY_MODE_ENV.mode]: 'cached',
      [KEY_MODE_ENV.wrappedKeys]: JSON.stringify({ [record.kid]: record.wrappedPrivateKey }),
      [KEY_MODE_ENV.wrappingKeyId]: record.wrappingKeyArn,
      [KEY_MODE_ENV.ttlSeconds]: '300',
    });
    expect(keys).toBeInstanceOf(CachedKeyService);

    const jwe = await new CompactEncrypt(new TextEncoder().encode('hello'))
      .setProtectedHeader({ alg: 'RSA-OAEP-256', enc: 'A256GCM', kid: record.kid })
      .encrypt(await importJWK(record.publicJwk, 'RSA-OAEP-256'));
    const encryptedKey = Buffer.from(jwe.split('.')[1] ?? '', 'base64url');
    const result = await keys.unwrapKey(record.kid, encryptedKey);
    expect(result.ok && result.cek.length).toBe(32);
  }, 60_000);

  it('--purpose response-sign: the deliver environment signs responses and checkpoints locally, verifiable with the printed JWK', async () => {
    const config = loadConfig(await validConfig());
    const kid = config.doc.responseSigning.kid;
    const { code, out, err } = await keysWrap(
      '--wrapping-key',
      wrappingKey,
      '--kid',
      kid,
      '--purpose',
      'response-sign',
    );
    expect({ code, err }).toEqual({ code: 0, err: '' });
    const record = JSON.parse(out) as WrappedKeyRecord;
    expect(record.purpose).toBe('response-sign');
    expect(record.publicJwk).toMatchObject({ kty: 'EC', crv: 'P-256', kid, alg: 'ES256', use: 'sig' });

    // What the construct gives the deliver function: the signing key alone, no KMS key id.
    const keys = keyServiceFromEnv(config, clients.kms, {
      [KEY_MODE_ENV.mode]: 'cached',
      [KEY_MODE_ENV.wrappedSigningKeys]: JSON.stringify({ [kid]: record.wrappedPrivateKey }),
      [KEY_MODE_ENV.wrappingKeyId]: record.wrappingKeyArn,
      ITK3_KMS_KEYS: '{}',
    });
    resetAwsCalls();
    const publicKey = await importJWK(record.publicJwk, 'ES256');
    for (let i = 0; i < 3; i += 1) {
      const jws = await signCompactWithKeyService(
        keys,
        kid,
        { alg: 'ES256', kid },
        new TextEncoder().encode(`response ${i}`),
      );
      expect(new TextDecoder().decode((await compactVerify(jws, publicKey)).payload)).toBe(`response ${i}`);
    }
    const checkpoint = await signCheckpoint(
      { kid, keys },
      { stream: 's', n: 1, hash: 'h', at: '2026-12-03T00:00:00Z' },
    );
    expect((await compactVerify(checkpoint, publicKey)).protectedHeader.kid).toBe(kid);
    // One unwrap for all of them, and no KMS Sign.
    expect(awsCalls.kms).toEqual({ Decrypt: 1 });

    // The recipient context cannot open the signing blob: the purposes do not mix.
    const asRecipient = new CachedKeyService(clients.kms, {
      wrappedKeys: { [kid]: Buffer.from(record.wrappedPrivateKey, 'base64') },
      kmsKeyIds: {},
    });
    await expect(asRecipient.unwrapKey(kid, new Uint8Array(32))).rejects.toThrow(
      /KMS Decrypt of the wrapped key failed/,
    );
  }, 60_000);

  itUnless(
    'kmsKeySpecChecks',
    'refuses an asymmetric key as the wrapping key, with the reason and exit 1',
    async () => {
      const rsa = await clients.kms.send(
        new CreateKeyCommand({ KeySpec: 'RSA_2048', KeyUsage: 'ENCRYPT_DECRYPT', Description: 'itk3 test' }),
      );
      created.push(rsa.KeyMetadata?.Arn ?? '');
      const { code, out, err } = await keysWrap(
        '--wrapping-key',
        rsa.KeyMetadata?.Arn ?? '',
        '--kid',
        'rx-x',
      );
      expect(code).toBe(1);
      expect(err).toContain('is not a symmetric encryption key');
      expect(out).toBe('');
    },
    60_000,
  );

  it('names a wrapping key that does not exist', async () => {
    const { code, err } = await keysWrap('--wrapping-key', 'alias/itk3-it-no-such-key', '--kid', 'rx-x');
    expect(code).toBe(1);
    expect(err).toContain('wrapping key alias/itk3-it-no-such-key not found');
  });
});
