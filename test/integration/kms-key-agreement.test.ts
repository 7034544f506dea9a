/**
 * ECDH-ES+A256KW recipient keys on an emulator's KMS: a `KEY_AGREEMENT` `ECC_NIST_P256` key and
 * `DeriveSharedSecret` in direct mode (LocalStack 4.14.0 implements it; ministack 1.5.33 does not,
 * and those tests are skipped with the reason printed), and a wrapped P-256 key in cached mode
 * (symmetric `Encrypt`/`Decrypt` only: both emulators). Each seals with `jose` to the key's public
 * half and opens the message through the real decrypt path.
 */
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import {
  CreateKeyCommand,
  type CreateKeyCommandInput,
  ScheduleKeyDeletionCommand,
} from '@aws-sdk/client-kms';
import { CompactEncrypt, importSPKI } from 'jose';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { CachedKeyService, wrapRecipientKey } from '../../lib/adapters/aws/cached-key-service.js';
import { KmsKeyService } from '../../lib/adapters/aws/kms-key-service.js';
import { decryptSealed, parseSealed } from '../../lib/envelope/jwe.js';
import { DecryptionError } from '../../lib/errors.js';
import { describeEachEmulator } from './support/emulators.js';

const ROUTING = { from: 'GP0001', to: 'RX1', event: 'ITK007C', id: 'd5b1a1f0-0000-4000-8000-000000000001' };
const PLAINTEXT = new TextEncoder().encode('eyJhbGciOiJFUzI1NiJ9.cGF5bG9hZA.c2ln');
const limits = { maxSealedBytes: 64 * 1024 };

async function sealTo(
  spki: Uint8Array,
  kid: string,
  alg: 'ECDH-ES+A256KW' | 'RSA-OAEP-256',
): Promise<string> {
  const pem = createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' }).export({
    format: 'pem',
    type: 'spki',
  }) as string;
  return new CompactEncrypt(PLAINTEXT)
    .setProtectedHeader({ alg, enc: 'A256GCM', kid, cty: 'JOSE', itk: ROUTING })
    .encrypt(await importSPKI(pem, alg));
}

describeEachEmulator('KMS key agreement (ECDH-ES+A256KW)', ({ clients, gap, itUnless }) => {
  const keyIds: Record<string, string> = {};

  beforeAll(async () => {
    const create = async (kid: string, input: CreateKeyCommandInput) => {
      const out = await clients.kms.send(new CreateKeyCommand(input));
      keyIds[kid] = out.KeyMetadata?.KeyId ?? '';
    };
    await create('wrapping', { KeySpec: 'SYMMETRIC_DEFAULT', KeyUsage: 'ENCRYPT_DECRYPT' });
    // KEY_AGREEMENT keys exist only where DeriveSharedSecret does.
    if (!gap('kmsDeriveSharedSecret')) {
      await create('rx-ec', { KeySpec: 'ECC_NIST_P256', KeyUsage: 'KEY_AGREEMENT' });
      await create('rx-rsa', { KeySpec: 'RSA_2048', KeyUsage: 'ENCRYPT_DECRYPT' });
    }
  });

  afterAll(async () => {
    for (const keyId of Object.values(keyIds)) {
      await clients.kms
        .send(new ScheduleKeyDeletionCommand({ KeyId: keyId, PendingWindowInDays: 7 }))
        .catch(() => {});
    }
  });

  itUnless(
    'kmsDeriveSharedSecret',
    'direct mode: DeriveSharedSecret opens a jose ECDH-ES+A256KW message',
    async () => {
      const keys = new KmsKeyService(clients.kms, keyIds);
      const jwe = await sealTo(await keys.publicKeySpki('rx-ec'), 'rx-ec', 'ECDH-ES+A256KW');
      expect(Buffer.from(await decryptSealed(parseSealed(jwe, limits), keys))).toEqual(
        Buffer.from(PLAINTEXT),
      );
    },
  );

  itUnless(
    'kmsDeriveSharedSecret',
    'direct mode: the wrong key type for the alg is the uniform DECRYPT_FAILED',
    async () => {
      const keys = new KmsKeyService(clients.kms, keyIds);
      // An ECDH message naming the RSA key, and an RSA message naming the agreement key.
      const ecdhToRsaKid = await sealTo(await keys.publicKeySpki('rx-ec'), 'rx-rsa', 'ECDH-ES+A256KW');
      const rsaToEcKid = await sealTo(await keys.publicKeySpki('rx-rsa'), 'rx-ec', 'RSA-OAEP-256');
      for (const jwe of [ecdhToRsaKid, rsaToEcKid]) {
        await expect(decryptSealed(parseSealed(jwe, limits), keys)).rejects.toBeInstanceOf(DecryptionError);
      }
    },
  );

  it('cached mode: a KMS-wrapped P-256 key is unwrapped once and ECDH runs locally', async () => {
    const pair = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const wrapped = await wrapRecipientKey(
      clients.kms,
      keyIds.wrapping as string,
      'rx-cached',
      pair.privateKey.export({ format: 'der', type: 'pkcs8' }),
    );
    const keys = new CachedKeyService(clients.kms, {
      wrappedKeys: { 'rx-cached': wrapped.ciphertextBlob },
      kmsKeyIds: {},
      wrappingKeyId: keyIds.wrapping as string,
    });
    for (let i = 0; i < 3; i += 1) {
      const jwe = await sealTo(wrapped.publicKeySpki, 'rx-cached', 'ECDH-ES+A256KW');
      expect(Buffer.from(await decryptSealed(parseSealed(jwe, limits), keys))).toEqual(
        Buffer.from(PLAINTEXT),
      );
    }
  });
});
