import {
  constants,
  createPublicKey,
  generateKeyPairSync,
  publicEncrypt,
  randomBytes,
  verify,
} from 'node:crypto';
import {
  CreateKeyCommand,
  GenerateDataKeyPairWithoutPlaintextCommand,
  ScheduleKeyDeletionCommand,
} from '@aws-sdk/client-kms';
import { CompactEncrypt, importSPKI } from 'jose';
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  CachedKeyService,
  generateWrappedRecipientKey,
  generateWrappedSigningKey,
  wrapRecipientKey,
} from '../../lib/adapters/aws/cached-key-service.js';
import { awsCalls, resetAwsCalls } from '../../lib/adapters/aws/calls.js';
import { wrappedKeyContext } from '../../lib/adapters/aws/deployment-names.js';
import { TransientError } from '../../lib/errors.js';
import { describeEachEmulator } from './support/emulators.js';

function encryptTo(spki: Uint8Array, cek: Uint8Array): Buffer {
  return publicEncrypt(
    {
      key: createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' }),
      padding: constants.RSA_PKCS1_OAEP_PADDING,
      oaepHash: 'sha256',
    },
    cek,
  );
}

describeEachEmulator('CachedKeyService', ({ clients }) => {
  const created: string[] = [];
  let wrappingKey = '';

  beforeAll(async () => {
    const out = await clients.kms.send(
      new CreateKeyCommand({ Description: 'itk3 cached-mode wrapping key' }),
    );
    wrappingKey = out.KeyMetadata?.Arn ?? '';
    created.push(wrappingKey);
  });

  afterAll(async () => {
    for (const keyId of created) {
      await clients.kms
        .send(new ScheduleKeyDeletionCommand({ KeyId: keyId, PendingWindowInDays: 7 }))
        .catch(() => {});
    }
  });

  it('signs responses with a wrapped P-256 signing key after one Decrypt, and refuses a recipient blob as one', async () => {
    const signing = await generateWrappedSigningKey(clients.kms, wrappingKey, 'gw-response');
    const recipient = await generateWrappedRecipientKey(
      clients.kms,
      wrappingKey,
      'gw-other',
      'ECC_NIST_P256',
    );
    const keys = new CachedKeyService(clients.kms, {
      wrappedKeys: {},
      // The second kid's blob was wrapped for decryption: KMS refuses it under the signing context.
      wrappedSigningKeys: { 'gw-response': signing.ciphertextBlob, 'gw-other': recipient.ciphertextBlob },
      kmsKeyIds: {},
      wrappingKeyId: wrappingKey,
    });
    resetAwsCalls();
    const publicKey = createPublicKey({
      key: Buffer.from(signing.publicKeySpki),
      format: 'der',
      type: 'spki',
    });
    for (let i = 0; i < 5; i += 1) {
      const input = new TextEncoder().encode(`eyJhbGciOiJFUzI1NiJ9.response-${i}`);
      const signature = await keys.signEs256('gw-response', input);
      expect(verify('sha256', input, { key: publicKey, dsaEncoding: 'ieee-p1363' }, signature)).toBe(true);
    }
    expect(awsCalls.kms).toEqual({ Decrypt: 1 });
    const refused = await keys.signEs256('gw-other', new Uint8Array([1])).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(TransientError);
  });

  it('unwraps a GenerateDataKeyPairWithoutPlaintext key once and opens many CEKs locally', async () => {
    // RSA_2048 instead of the deployed RSA_4096: same API and code path, faster generation.
    const key = await generateWrappedRecipientKey(clients.kms, wrappingKey, 'rx-gen', 'RSA_2048');
    const keys = new CachedKeyService(clients.kms, {
      wrappedKeys: { 'rx-gen': key.ciphertextBlob },
      kmsKeyIds: {},
      wrappingKeyId: wrappingKey,
    });
    resetAwsCalls();
    for (let i = 0; i < 5; i += 1) {
      const cek = randomBytes(32);
      const result = await keys.unwrapKey('rx-gen', encryptTo(key.publicKeySpki, cek));
      expect(result.ok && Buffer.from(result.cek).equals(cek)).toBe(true);
    }
    expect(awsCalls.kms).toEqual({ Decrypt: 1 });
    expect(Buffer.from(await keys.publicKeySpki('rx-gen')).equals(Buffer.from(key.publicKeySpki))).toBe(true);
  }, 60_000);

  it('opens the encrypted key of a jose RSA-OAEP-256 JWE sealed to the published public key', async () => {
    const key = await generateWrappedRecipientKey(clients.kms, wrappingKey, 'rx-jwe', 'RSA_2048');
    const keys = new CachedKeyService(clients.kms, {
      wrappedKeys: { 'rx-jwe': key.ciphertextBlob },
      kmsKeyIds: {},
    });
    const pem = createPublicKey({ key: Buffer.from(key.publicKeySpki), format: 'der', type: 'spki' }).export({
      format: 'pem',
      type: 'spki',
    }) as string;
    const jwe = await new CompactEncrypt(new TextEncoder().encode('hello'))
      .setProtectedHeader({ alg: 'RSA-OAEP-256', enc: 'A256GCM', kid: 'rx-jwe' })
      .encrypt(await importSPKI(pem, 'RSA-OAEP-256'));
    const result = await keys.unwrapKey('rx-jwe', Buffer.from(jwe.split('.')[1] ?? '', 'base64url'));
    expect(result.ok && result.cek.length).toBe(32);
  }, 60_000);

  it('unwraps a locally generated PKCS#8 key wrapped with symmetric Encrypt', async () => {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const key = await wrapRecipientKey(
      clients.kms,
      wrappingKey,
      'rx-enc',
      privateKey.export({ format: 'der', type: 'pkcs8' }),
    );
    const keys = new CachedKeyService(clients.kms, {
      wrappedKeys: { 'rx-enc': key.ciphertextBlob },
      kmsKeyIds: {},
    });
    const cek = randomBytes(32);
    const result = await keys.unwrapKey('rx-enc', encryptTo(key.publicKeySpki, cek));
    expect(result.ok && Buffer.from(result.cek).equals(cek)).toBe(true);
  }, 60_000);

  it('reports a CEK for another key as ok:false', async () => {
    const key = await generateWrappedRecipientKey(clients.kms, wrappingKey, 'rx-bad', 'RSA_2048');
    const keys = new CachedKeyService(clients.kms, {
      wrappedKeys: { 'rx-bad': key.ciphertextBlob },
      kmsKeyIds: {},
    });
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({
      format: 'der',
      type: 'spki',
    });
    expect(await keys.unwrapKey('rx-bad', encryptTo(other, randomBytes(32)))).toEqual({ ok: false });
  }, 60_000);

  it('refuses a blob presented under another kid (the encryption context binds it)', async () => {
    const out = await clients.kms.send(
      new GenerateDataKeyPairWithoutPlaintextCommand({
        KeyId: wrappingKey,
        KeyPairSpec: 'RSA_2048',
        EncryptionContext: wrappedKeyContext('rx-a'),
      }),
    );
    const keys = new CachedKeyService(clients.kms, {
      wrappedKeys: { 'rx-b': out.PrivateKeyCiphertextBlob ?? new Uint8Array() },
      kmsKeyIds: {},
    });
    const failure = await keys.unwrapKey('rx-b', randomBytes(256)).catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(TransientError);
  }, 60_000);
});
