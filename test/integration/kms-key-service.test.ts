import { constants, createPublicKey, publicEncrypt, randomBytes, verify } from 'node:crypto';
import { CreateKeyCommand, ScheduleKeyDeletionCommand } from '@aws-sdk/client-kms';
import { CompactEncrypt, compactVerify, decodeProtectedHeader, importSPKI } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { awsCalls, resetAwsCalls } from '../../lib/adapters/aws/calls.js';
import { KmsKeyService } from '../../lib/adapters/aws/kms-key-service.js';
import { ConfigError } from '../../lib/errors.js';
import { describeEachEmulator } from './support/emulators.js';

const b64url = (bytes: Uint8Array | string) => Buffer.from(bytes).toString('base64url');

function spkiPem(der: Uint8Array): string {
  return createPublicKey({ key: Buffer.from(der), format: 'der', type: 'spki' }).export({
    format: 'pem',
    type: 'spki',
  }) as string;
}

describeEachEmulator('KmsKeyService', ({ clients, itUnless }) => {
  const keyIds: Record<string, string> = {};
  let keys: KmsKeyService;

  beforeAll(async () => {
    const create = async (kid: string, spec: 'RSA_2048' | 'ECC_NIST_P256') => {
      const out = await clients.kms.send(
        new CreateKeyCommand({
          KeySpec: spec,
          KeyUsage: spec === 'RSA_2048' ? 'ENCRYPT_DECRYPT' : 'SIGN_VERIFY',
        }),
      );
      keyIds[kid] = out.KeyMetadata?.KeyId ?? '';
    };
    // RSA_2048 rather than the deployed RSA_4096: same code path, much faster key generation.
    await create('rx-1', 'RSA_2048');
    await create('rx-2', 'RSA_2048');
    await create('resp-1', 'ECC_NIST_P256');
    keys = new KmsKeyService(clients.kms, keyIds);
  });

  afterAll(async () => {
    for (const keyId of Object.values(keyIds)) {
      await clients.kms
        .send(new ScheduleKeyDeletionCommand({ KeyId: keyId, PendingWindowInDays: 7 }))
        .catch(() => {});
    }
  });

  describe('unwrapKey', () => {
    it('unwraps a CEK encrypted offline with RSA-OAEP-256 to the GetPublicKey SPKI', async () => {
      const spki = await keys.publicKeySpki('rx-1');
      const cek = randomBytes(32);
      const encryptedKey = publicEncrypt(
        {
          key: createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' }),
          padding: constants.RSA_PKCS1_OAEP_PADDING,
          oaepHash: 'sha256',
        },
        cek,
      );

      const result = await keys.unwrapKey('rx-1', encryptedKey);

      expect(result).toEqual({ ok: true, cek: expect.any(Uint8Array) });
      expect(result.ok && Buffer.from(result.cek).equals(cek)).toBe(true);
    });

    it('unwraps the encrypted key of a jose RSA-OAEP-256 / A256GCM JWE', async () => {
      const publicKey = await importSPKI(spkiPem(await keys.publicKeySpki('rx-1')), 'RSA-OAEP-256');
      const jwe = await new CompactEncrypt(new TextEncoder().encode('hello'))
        .setProtectedHeader({ alg: 'RSA-OAEP-256', enc: 'A256GCM', kid: 'rx-1' })
        .encrypt(publicKey);
      const encryptedKey = Buffer.from(jwe.split('.')[1] ?? '', 'base64url');

      const result = await keys.unwrapKey('rx-1', encryptedKey);

      expect(decodeProtectedHeader(jwe).kid).toBe('rx-1');
      expect(result.ok && result.cek.length).toBe(32);
    });

    itUnless('kmsInvalidCiphertext', 'reports garbage as ok:false, not as an error', async () => {
      expect(await keys.unwrapKey('rx-1', randomBytes(256))).toEqual({ ok: false });
      expect(await keys.unwrapKey('rx-1', randomBytes(17))).toEqual({ ok: false });
    });

    itUnless('kmsInvalidCiphertext', 'reports a ciphertext for another key as ok:false', async () => {
      const spki = await keys.publicKeySpki('rx-2');
      const encryptedKey = publicEncrypt(
        {
          key: createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' }),
          padding: constants.RSA_PKCS1_OAEP_PADDING,
          oaepHash: 'sha256',
        },
        randomBytes(32),
      );
      expect(await keys.unwrapKey('rx-1', encryptedKey)).toEqual({ ok: false });
    });

    it('reports an unknown kid as ok:false without calling KMS', async () => {
      resetAwsCalls();
      expect(await keys.unwrapKey('nobody', randomBytes(256))).toEqual({ ok: false });
      expect(awsCalls.kms.Decrypt ?? 0).toBe(0);
    });
  });

  describe('signEs256', () => {
    it('returns a 64-byte r‖s signature that jose and node:crypto verify against the public key', async () => {
      const header = b64url(JSON.stringify({ alg: 'ES256', kid: 'resp-1' }));
      const payload = b64url('{"response":"ITK008M"}');
      const signingInput = new TextEncoder().encode(`${header}.${payload}`);

      const signature = await keys.signEs256('resp-1', signingInput);

      expect(signature.length).toBe(64);
      const spki = await keys.publicKeySpki('resp-1');
      const publicKey = await importSPKI(spkiPem(spki), 'ES256');
      const verified = await compactVerify(`${header}.${payload}.${b64url(signature)}`, publicKey);
      expect(new TextDecoder().decode(verified.payload)).toBe('{"response":"ITK008M"}');
      const nodeKey = createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' });
      expect(verify('sha256', signingInput, { key: nodeKey, dsaEncoding: 'ieee-p1363' }, signature)).toBe(
        true,
      );
    });

    it('refuses a kid with no KMS key as a configuration error', async () => {
      await expect(keys.signEs256('nobody', new Uint8Array(1))).rejects.toBeInstanceOf(ConfigError);
    });
  });

  describe('publicKeySpki', () => {
    it('returns an SPKI of the right key type and caches it per kid', async () => {
      resetAwsCalls();
      const fresh = new KmsKeyService(clients.kms, keyIds);

      const rsa = await fresh.publicKeySpki('rx-2');
      await fresh.publicKeySpki('rx-2');
      const ec = await fresh.publicKeySpki('resp-1');

      expect(createPublicKey({ key: Buffer.from(rsa), format: 'der', type: 'spki' }).asymmetricKeyType).toBe(
        'rsa',
      );
      expect(
        createPublicKey({ key: Buffer.from(ec), format: 'der', type: 'spki' }).asymmetricKeyDetails,
      ).toEqual({
        namedCurve: 'prime256v1',
      });
      expect(awsCalls.kms.GetPublicKey).toBe(2);
    });
  });
});
