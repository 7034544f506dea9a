import {
  constants,
  diffieHellman,
  generateKeyPairSync,
  type KeyObject,
  publicEncrypt,
  randomBytes,
  sign,
  verify,
} from 'node:crypto';
import {
  DecryptCommand,
  DeriveSharedSecretCommand,
  EncryptCommand,
  GenerateDataKeyPairWithoutPlaintextCommand,
  GetPublicKeyCommand,
  InvalidCiphertextException,
  KMSClient,
  SignCommand,
} from '@aws-sdk/client-kms';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  CachedKeyService,
  generateWrappedRecipientKey,
  generateWrappedSigningKey,
  wrapRecipientKey,
  wrapSigningKey,
} from '../../../lib/adapters/aws/cached-key-service.js';
import {
  KEY_MODE_ENV,
  wrappedKeyContext,
  wrappedSigningKeyContext,
} from '../../../lib/adapters/aws/deployment-names.js';
import { keyServiceFromEnv } from '../../../lib/adapters/aws/key-service-env.js';
import { KmsKeyService } from '../../../lib/adapters/aws/kms-key-service.js';
import { loadConfig } from '../../../lib/config/load.js';
import { ConfigError, TransientError } from '../../../lib/errors.js';
import { networkError, sentCommands, serviceError } from './faults.js';

const kms = mockClient(KMSClient);
const BLOB = new Uint8Array([9, 9, 9]);
// RSA-2048 keeps the suite fast; the code path is the one RSA-4096 takes.
let rsa: { privateKey: KeyObject; publicKey: KeyObject };
let pkcs8: Buffer;

beforeAll(() => {
  rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  pkcs8 = rsa.privateKey.export({ format: 'der', type: 'pkcs8' });
});

beforeEach(() => {
  kms.reset();
});
afterEach(() => kms.reset());

/** A fresh copy each call: the service zeroes the plaintext it is given. */
const decryptsToKey = () => kms.on(DecryptCommand).callsFake(() => ({ Plaintext: Buffer.from(pkcs8) }));

function service(opts: { now?: () => number; ttlSeconds?: number; wrappingKeyId?: string } = {}) {
  return new CachedKeyService(new KMSClient({ region: 'eu-west-2' }), {
    wrappedKeys: { rx: BLOB },
    kmsKeyIds: { resp: 'key-resp', old: 'key-old' },
    ...opts,
  });
}

function wrapCek(cek: Uint8Array): Buffer {
  return publicEncrypt(
    { key: rsa.publicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' },
    cek,
  );
}

describe('CachedKeyService.unwrapKey', () => {
  it('unwraps CEKs locally after one symmetric Decrypt bound to the kid', async () => {
    decryptsToKey();
    const keys = service({ wrappingKeyId: 'alias/itk3/wrapping' });

    for (let i = 0; i < 20; i += 1) {
      const cek = randomBytes(32);
      const result = await keys.unwrapKey('rx', wrapCek(cek));
      expect(result.ok && Buffer.from(result.cek).equals(cek)).toBe(true);
    }

    expect(kms.commandCalls(DecryptCommand)).toHaveLength(1);
    expect(kms.commandCalls(DecryptCommand)[0]?.args[0].input).toEqual({
      CiphertextBlob: BLOB,
      EncryptionContext: { 'itk3:purpose': 'recipient-decrypt', 'itk3:kid': 'rx' },
      KeyId: 'alias/itk3/wrapping',
    });
    expect(sentCommands(kms)).toEqual({ Decrypt: 1 });
  });

  it('shares one Decrypt between concurrent first uses (a batch of records)', async () => {
    decryptsToKey();
    const keys = service();
    const results = await Promise.all(
      Array.from({ length: 10 }, () => keys.unwrapKey('rx', wrapCek(randomBytes(32)))),
    );
    expect(results.every((r) => r.ok)).toBe(true);
    expect(kms.commandCalls(DecryptCommand)).toHaveLength(1);
  });

  it('asks KMS again once the TTL has passed', async () => {
    decryptsToKey();
    let now = 1_000_000;
    const keys = service({ now: () => now, ttlSeconds: 60 });
    await keys.unwrapKey('rx', wrapCek(randomBytes(32)));
    now += 59_999;
    await keys.unwrapKey('rx', wrapCek(randomBytes(32)));
    expect(kms.commandCalls(DecryptCommand)).toHaveLength(1);
    now += 1;
    await keys.unwrapKey('rx', wrapCek(randomBytes(32)));
    expect(kms.commandCalls(DecryptCommand)).toHaveLength(2);
  });

  it('reports a CEK that does not decrypt as ok:false, and an empty one without any call', async () => {
    decryptsToKey();
    const keys = service();
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey;
    const foreign = publicEncrypt(
      { key: other, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' },
      randomBytes(32),
    );
    expect(await keys.unwrapKey('rx', new Uint8Array(0))).toEqual({ ok: false });
    expect(kms.commandCalls(DecryptCommand)).toHaveLength(0);
    expect(await keys.unwrapKey('rx', foreign)).toEqual({ ok: false });
    expect(await keys.unwrapKey('rx', randomBytes(256))).toEqual({ ok: false });
    expect(await keys.unwrapKey('rx', randomBytes(7))).toEqual({ ok: false });
  });

  it.each([
    ['ThrottlingException', serviceError('ThrottlingException', 400)],
    ['KMSInternalException', serviceError('KMSInternalException', 500)],
    ['a network failure', networkError()],
    // Permanent for KMS, but a property of the configuration, not of the message.
    ['InvalidCiphertextException', new InvalidCiphertextException({ message: 'bad', $metadata: {} })],
    ['DisabledException', serviceError('DisabledException', 400)],
  ])('turns %s while unwrapping the private key into KEY_SERVICE_UNAVAILABLE', async (_name, error) => {
    kms.on(DecryptCommand).rejects(error);
    const failure = await service()
      .unwrapKey('rx', wrapCek(randomBytes(32)))
      .catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(TransientError);
    expect((failure as TransientError).code).toBe('KEY_SERVICE_UNAVAILABLE');
  });

  it('does not remember a failed load: the next record tries KMS again', async () => {
    kms
      .on(DecryptCommand)
      .rejectsOnce(serviceError('ThrottlingException', 400))
      .callsFake(() => ({ Plaintext: Buffer.from(pkcs8) }));
    const keys = service();
    await expect(keys.unwrapKey('rx', wrapCek(randomBytes(32)))).rejects.toBeInstanceOf(TransientError);
    const result = await keys.unwrapKey('rx', wrapCek(randomBytes(32)));
    expect(result.ok).toBe(true);
    expect(kms.commandCalls(DecryptCommand)).toHaveLength(2);
  });

  it('refuses a wrapped key that is neither RSA of at least 2048 bits nor P-256', async () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey;
    kms.on(DecryptCommand).resolves({ Plaintext: ec.export({ format: 'der', type: 'pkcs8' }) });
    await expect(service().unwrapKey('rx', wrapCek(randomBytes(32)))).rejects.toBeInstanceOf(TransientError);
    kms.reset();
    const small = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey;
    kms.on(DecryptCommand).resolves({ Plaintext: small.export({ format: 'der', type: 'pkcs8' }) });
    await expect(service().unwrapKey('rx', wrapCek(randomBytes(32)))).rejects.toBeInstanceOf(TransientError);
    kms.reset();
    kms.on(DecryptCommand).resolves({ Plaintext: new Uint8Array([1, 2, 3]) });
    await expect(service().unwrapKey('rx', wrapCek(randomBytes(32)))).rejects.toBeInstanceOf(TransientError);
  });

  it('zeroes the plaintext private key KMS returned once it is imported', async () => {
    const plaintext = Buffer.from(pkcs8);
    kms.on(DecryptCommand).resolves({ Plaintext: plaintext });
    await service().unwrapKey('rx', wrapCek(randomBytes(32)));
    expect(plaintext.every((b) => b === 0)).toBe(true);
  });

  it('leaves no copy of the private key DER in a Buffer it made from the plaintext', async () => {
    kms.on(DecryptCommand).resolves({ Plaintext: Buffer.from(pkcs8) });
    const wrapped = wrapCek(randomBytes(32));
    const made = vi.spyOn(Buffer, 'from');
    try {
      await service().unwrapKey('rx', wrapped);
      const stillHoldingDer = made.mock.results
        .map((r) => r.value as unknown)
        .filter((b): b is Buffer => Buffer.isBuffer(b) && b.equals(pkcs8));
      expect(stillHoldingDer).toEqual([]);
    } finally {
      made.mockRestore();
    }
  });

  it('keeps a kid without a wrapped key on direct KMS (RSAES_OAEP_SHA_256)', async () => {
    kms.on(DecryptCommand).resolves({ Plaintext: new Uint8Array(32).fill(5) });
    const result = await service().unwrapKey('old', new Uint8Array([1, 2]));
    expect(result).toEqual({ ok: true, cek: new Uint8Array(32).fill(5) });
    expect(kms.commandCalls(DecryptCommand)[0]?.args[0].input).toEqual({
      KeyId: 'key-old',
      CiphertextBlob: new Uint8Array([1, 2]),
      EncryptionAlgorithm: 'RSAES_OAEP_SHA_256',
    });
    expect(await service().unwrapKey('unknown', new Uint8Array([1]))).toEqual({ ok: false });
  });
});

describe('CachedKeyService signing and public keys', () => {
  it('signs on KMS (the response-signing key never leaves it)', async () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    kms.on(SignCommand).callsFake((input: { Message: Uint8Array }) => ({
      Signature: sign('sha256', input.Message, privateKey),
    }));
    const signature = await service().signEs256('resp', new Uint8Array([1, 2, 3]));
    expect(signature).toHaveLength(64);
    expect(kms.commandCalls(SignCommand)[0]?.args[0].input.KeyId).toBe('key-resp');
  });

  it('derives the SPKI of a wrapped key from the unwrapped key; others come from GetPublicKey', async () => {
    decryptsToKey();
    kms.on(GetPublicKeyCommand).resolves({ PublicKey: new Uint8Array([4, 5]) });
    const keys = service();
    const spki = await keys.publicKeySpki('rx');
    expect(Buffer.from(spki).equals(rsa.publicKey.export({ format: 'der', type: 'spki' }))).toBe(true);
    expect(await keys.publicKeySpki('resp')).toEqual(new Uint8Array([4, 5]));
    expect(kms.commandCalls(DecryptCommand)).toHaveLength(1);
  });

  it('clear() forgets the unwrapped keys', async () => {
    decryptsToKey();
    const keys = service();
    await keys.unwrapKey('rx', wrapCek(randomBytes(32)));
    keys.clear();
    await keys.unwrapKey('rx', wrapCek(randomBytes(32)));
    expect(kms.commandCalls(DecryptCommand)).toHaveLength(2);
  });
});

describe('wrapping helpers', () => {
  it('generateWrappedRecipientKey asks KMS for an RSA_4096 pair without plaintext, bound to the kid', async () => {
    kms.on(GenerateDataKeyPairWithoutPlaintextCommand).resolves({
      PrivateKeyCiphertextBlob: BLOB,
      PublicKey: new Uint8Array([1]),
    });
    const out = await generateWrappedRecipientKey(new KMSClient({ region: 'eu-west-2' }), 'cmk', 'rx');
    expect(out).toEqual({ kid: 'rx', ciphertextBlob: BLOB, publicKeySpki: new Uint8Array([1]) });
    expect(kms.commandCalls(GenerateDataKeyPairWithoutPlaintextCommand)[0]?.args[0].input).toEqual({
      KeyId: 'cmk',
      KeyPairSpec: 'RSA_4096',
      EncryptionContext: wrappedKeyContext('rx'),
    });
  });

  it('wrapRecipientKey encrypts a PKCS#8 RSA key under the wrapping key and the same context', async () => {
    kms.on(EncryptCommand).resolves({ CiphertextBlob: BLOB });
    const out = await wrapRecipientKey(new KMSClient({ region: 'eu-west-2' }), 'cmk', 'rx', pkcs8);
    expect(out.ciphertextBlob).toEqual(BLOB);
    expect(Buffer.from(out.publicKeySpki).equals(rsa.publicKey.export({ format: 'der', type: 'spki' }))).toBe(
      true,
    );
    expect(kms.commandCalls(EncryptCommand)[0]?.args[0].input).toMatchObject({
      KeyId: 'cmk',
      EncryptionContext: wrappedKeyContext('rx'),
    });
  });

  it('wrapRecipientKey refuses an RSA key under 2048 bits and a P-384 key before calling KMS', async () => {
    kms.on(EncryptCommand).resolves({ CiphertextBlob: BLOB });
    const client = new KMSClient({ region: 'eu-west-2' });
    const short = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey;
    const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey;
    for (const key of [short, p384]) {
      await expect(
        wrapRecipientKey(client, 'cmk', 'rx', key.export({ format: 'der', type: 'pkcs8' })),
      ).rejects.toThrow('an RSA (≥ 2048 bits) or P-256 private key is expected');
    }
    expect(kms.commandCalls(EncryptCommand)).toHaveLength(0);
  });
});

describe('keyServiceFromEnv', () => {
  const jwk = {
    kty: 'EC',
    crv: 'P-256',
    x: 'f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU',
    y: 'x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0',
    alg: 'ES256',
    use: 'sig',
  };
  const config = loadConfig({
    audience: 'aud',
    gatewayOds: 'GW001',
    responseSigning: { kid: 'resp', kmsKeyId: 'key-resp' },
    unauthenticatedResponseTarget: { type: 'folder', path: 'r' },
    issuers: [{ id: 'i', issuer: 'iss', organisations: ['SND01'], keys: [{ ...jwk, kid: 'i1' }] }],
    senders: [],
    recipients: [{ ods: 'RCP01', keys: [{ kid: 'rx' }], target: { type: 'folder', path: 'd' } }],
    rules: [],
  });
  const client = new KMSClient({ region: 'eu-west-2' });
  const blob = Buffer.from(BLOB).toString('base64');

  it('is direct by default and when asked', () => {
    expect(keyServiceFromEnv(config, client, {})).toBeInstanceOf(KmsKeyService);
    expect(keyServiceFromEnv(config, client, { [KEY_MODE_ENV.mode]: 'direct' })).toBeInstanceOf(
      KmsKeyService,
    );
  });

  it('is cached with wrapped keys, and unwraps with them', async () => {
    decryptsToKey();
    const keys = keyServiceFromEnv(config, client, {
      [KEY_MODE_ENV.mode]: 'cached',
      [KEY_MODE_ENV.wrappedKeys]: JSON.stringify({ rx: blob }),
      [KEY_MODE_ENV.wrappingKeyId]: 'alias/wrap',
      [KEY_MODE_ENV.ttlSeconds]: '120',
    });
    expect(keys).toBeInstanceOf(CachedKeyService);
    expect((keys as CachedKeyService).wrappedKids).toEqual(['rx']);
    const cek = randomBytes(32);
    const result = await keys.unwrapKey('rx', wrapCek(cek));
    expect(result.ok && Buffer.from(result.cek).equals(cek)).toBe(true);
    const input = kms.commandCalls(DecryptCommand)[0]?.args[0].input;
    expect(Buffer.from(input?.CiphertextBlob ?? []).equals(Buffer.from(BLOB))).toBe(true);
    expect(input?.KeyId).toBe('alias/wrap');
  });

  it('takes a wrapped response-signing key from ITK3_WRAPPED_SIGNING_KEYS: signs locally under the signing context', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    kms
      .on(DecryptCommand)
      .callsFake(() => ({ Plaintext: Buffer.from(privateKey.export({ format: 'der', type: 'pkcs8' })) }));
    const keys = keyServiceFromEnv(config, client, {
      [KEY_MODE_ENV.mode]: 'cached',
      [KEY_MODE_ENV.wrappedKeys]: JSON.stringify({ rx: blob }),
      [KEY_MODE_ENV.wrappedSigningKeys]: JSON.stringify({ resp: blob }),
    });
    const input = new Uint8Array([1, 2, 3]);
    const signature = await keys.signEs256('resp', input);
    expect(verify('sha256', input, { key: publicKey, dsaEncoding: 'ieee-p1363' }, signature)).toBe(true);
    expect(kms.commandCalls(SignCommand)).toHaveLength(0);
    expect(kms.commandCalls(DecryptCommand)[0]?.args[0].input.EncryptionContext).toEqual(
      wrappedSigningKeyContext('resp'),
    );
  });

  it('is cached with ITK3_WRAPPED_SIGNING_KEYS alone (the deliver function): no recipient key is wrapped', () => {
    const keys = keyServiceFromEnv(config, client, {
      [KEY_MODE_ENV.mode]: 'cached',
      [KEY_MODE_ENV.wrappedSigningKeys]: JSON.stringify({ resp: blob }),
    });
    expect(keys).toBeInstanceOf(CachedKeyService);
    expect((keys as CachedKeyService).wrappedKids).toEqual([]);
  });

  it.each([
    [
      {
        [KEY_MODE_ENV.mode]: 'cached',
        [KEY_MODE_ENV.wrappedKeys]: JSON.stringify({ rx: blob }),
        [KEY_MODE_ENV.wrappedSigningKeys]: '{"resp":"not base64!"}',
      },
      'ITK3_WRAPPED_SIGNING_KEYS.resp: must be a base64 string',
    ],
    [{ [KEY_MODE_ENV.mode]: 'local' }, 'must be "direct" or "cached"'],
    [{ [KEY_MODE_ENV.mode]: 'cached' }, 'required when'],
    [{ [KEY_MODE_ENV.mode]: 'cached', [KEY_MODE_ENV.wrappedKeys]: '{' }, 'not valid JSON'],
    [{ [KEY_MODE_ENV.mode]: 'cached', [KEY_MODE_ENV.wrappedKeys]: '[]' }, 'must be a JSON object'],
    [{ [KEY_MODE_ENV.mode]: 'cached', [KEY_MODE_ENV.wrappedKeys]: '{}' }, 'names no key'],
    [{ [KEY_MODE_ENV.mode]: 'cached', [KEY_MODE_ENV.wrappedKeys]: '{"rx":"not base64!"}' }, 'base64'],
    [
      {
        [KEY_MODE_ENV.mode]: 'cached',
        [KEY_MODE_ENV.wrappedKeys]: JSON.stringify({ rx: blob }),
        [KEY_MODE_ENV.ttlSeconds]: '0',
      },
      'whole number of seconds',
    ],
  ])('refuses %o', (env, message) => {
    let error: unknown;
    try {
      keyServiceFromEnv(config, client, env);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).issues.join(' ')).toContain(message);
  });
});

describe('CachedKeyService.deriveSharedSecret (ECDH-ES+A256KW, wrapped P-256 key)', () => {
  const p256 = () => generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwkOf = (key: KeyObject) => {
    const { x, y } = key.export({ format: 'jwk' });
    return { kty: 'EC', crv: 'P-256', x: x as string, y: y as string } as const;
  };

  it('unwraps the P-256 key once and derives every Z locally, equal to the sender-side ECDH', async () => {
    const recipient = p256();
    kms.on(DecryptCommand).callsFake(() => ({
      Plaintext: recipient.privateKey.export({ format: 'der', type: 'pkcs8' }),
    }));
    const keys = service();
    for (let i = 0; i < 5; i += 1) {
      const ephemeral = p256();
      const result = await keys.deriveSharedSecret('rx', jwkOf(ephemeral.publicKey));
      const expected = diffieHellman({ privateKey: ephemeral.privateKey, publicKey: recipient.publicKey });
      expect(result.ok && Buffer.from(result.sharedSecret).equals(expected)).toBe(true);
    }
    expect(kms.commandCalls(DecryptCommand)).toHaveLength(1);
    expect(kms.commandCalls(DeriveSharedSecretCommand)).toHaveLength(0);
    // The same wrapped P-256 key never unwraps an RSA-OAEP key.
    expect(await keys.unwrapKey('rx', new Uint8Array(256))).toEqual({ ok: false });
  });

  it('an RSA wrapped key refuses key agreement; a kid without a wrapped key goes to KMS DeriveSharedSecret', async () => {
    decryptsToKey();
    const epk = jwkOf(p256().publicKey);
    expect(await service().deriveSharedSecret('rx', epk)).toEqual({ ok: false });
    kms.on(DeriveSharedSecretCommand).resolves({ SharedSecret: new Uint8Array(32).fill(3) });
    expect(await service().deriveSharedSecret('old', epk)).toEqual({
      ok: true,
      sharedSecret: new Uint8Array(32).fill(3),
    });
    expect(kms.commandCalls(DeriveSharedSecretCommand)[0]?.args[0].input).toMatchObject({
      KeyId: 'key-old',
      KeyAgreementAlgorithm: 'ECDH',
    });
  });

  it('wrapRecipientKey accepts a P-256 key; generateWrappedRecipientKey asks for ECC_NIST_P256', async () => {
    const recipient = p256();
    kms.on(EncryptCommand).resolves({ CiphertextBlob: BLOB });
    const out = await wrapRecipientKey(
      new KMSClient({ region: 'eu-west-2' }),
      'wrap',
      'rx',
      recipient.privateKey.export({ format: 'der', type: 'pkcs8' }),
    );
    expect(Buffer.from(out.publicKeySpki)).toEqual(
      recipient.publicKey.export({ format: 'der', type: 'spki' }),
    );
    kms.on(GenerateDataKeyPairWithoutPlaintextCommand).resolves({
      PrivateKeyCiphertextBlob: BLOB,
      PublicKey: new Uint8Array([1]),
    });
    await generateWrappedRecipientKey(new KMSClient({ region: 'eu-west-2' }), 'wrap', 'rx', 'ECC_NIST_P256');
    expect(kms.commandCalls(GenerateDataKeyPairWithoutPlaintextCommand)[0]?.args[0].input).toMatchObject({
      KeyPairSpec: 'ECC_NIST_P256',
      EncryptionContext: wrappedKeyContext('rx'),
    });
  });
});

describe('CachedKeyService with a wrapped response-signing key (ES256 in the function)', () => {
  const SIGNING_BLOB = new Uint8Array([7, 7, 7]);
  let p256: { privateKey: KeyObject; publicKey: KeyObject };
  beforeAll(() => {
    p256 = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  });

  function signingService() {
    return new CachedKeyService(new KMSClient({ region: 'eu-west-2' }), {
      wrappedKeys: { rx: BLOB },
      wrappedSigningKeys: { resp: SIGNING_BLOB },
      kmsKeyIds: { resp: 'key-resp', other: 'key-other' },
    });
  }

  it('unwraps the P-256 key once under the response-sign context and signs every response locally', async () => {
    const p8 = p256.privateKey.export({ format: 'der', type: 'pkcs8' });
    kms.on(DecryptCommand).callsFake(() => ({ Plaintext: Buffer.from(p8) }));
    const keys = signingService();

    for (let i = 0; i < 10; i += 1) {
      const input = new TextEncoder().encode(`header.payload-${i}`);
      const signature = await keys.signEs256('resp', input);
      expect(signature).toHaveLength(64);
      const valid = verify('sha256', input, { key: p256.publicKey, dsaEncoding: 'ieee-p1363' }, signature);
      expect(valid).toBe(true);
    }

    expect(kms.commandCalls(SignCommand)).toHaveLength(0);
    const decrypts = kms.commandCalls(DecryptCommand);
    expect(decrypts).toHaveLength(1);
    expect(decrypts[0]!.args[0].input.EncryptionContext).toEqual(wrappedSigningKeyContext('resp'));
    expect(wrappedSigningKeyContext('resp')['itk3:purpose']).not.toBe(
      wrappedKeyContext('resp')['itk3:purpose'],
    );
    expect(Buffer.from(await keys.publicKeySpki('resp'))).toEqual(
      p256.publicKey.export({ format: 'der', type: 'spki' }),
    );
    // One KMS call in all: the unwrap (no Sign per response).
    expect(kms.calls()).toHaveLength(1);
    expect(kms.commandCalls(DecryptCommand)).toHaveLength(1);
  });

  it('refuses a wrapped signing key that is not P-256 (an RSA key), as a transient fault', async () => {
    decryptsToKey();
    const thrown = await signingService()
      .signEs256('resp', new Uint8Array([1]))
      .catch((e: unknown) => e);
    expect(thrown).toBeInstanceOf(TransientError);
    expect((thrown as TransientError).message).toMatch(/response-signing key is not a usable P-256/);
  });

  it('keeps a signing kid without a wrapped key on KMS Sign', async () => {
    kms.on(SignCommand).callsFake((input: { Message: Uint8Array }) => ({
      Signature: sign('sha256', input.Message, p256.privateKey),
    }));
    await signingService().signEs256('other', new Uint8Array([1]));
    expect(kms.commandCalls(SignCommand)[0]!.args[0].input.KeyId).toBe('key-other');
    expect(kms.commandCalls(DecryptCommand)).toHaveLength(0);
  });

  it('wrapSigningKey accepts P-256 only; generateWrappedSigningKey asks for ECC_NIST_P256 under the signing context', async () => {
    kms.on(EncryptCommand).resolves({ CiphertextBlob: new Uint8Array([1, 2]) });
    const p8 = p256.privateKey.export({ format: 'der', type: 'pkcs8' });
    const wrapped = await wrapSigningKey(new KMSClient({ region: 'eu-west-2' }), 'wrap', 'resp', p8);
    expect(kms.commandCalls(EncryptCommand)[0]!.args[0].input.EncryptionContext).toEqual(
      wrappedSigningKeyContext('resp'),
    );
    expect(Buffer.from(wrapped.publicKeySpki)).toEqual(
      p256.publicKey.export({ format: 'der', type: 'spki' }),
    );
    await expect(
      wrapSigningKey(new KMSClient({ region: 'eu-west-2' }), 'wrap', 'resp', pkcs8),
    ).rejects.toThrow(/P-256/);

    kms
      .on(GenerateDataKeyPairWithoutPlaintextCommand)
      .resolves({ PrivateKeyCiphertextBlob: new Uint8Array([3]), PublicKey: new Uint8Array([4]) });
    await generateWrappedSigningKey(new KMSClient({ region: 'eu-west-2' }), 'wrap', 'resp');
    expect(kms.commandCalls(GenerateDataKeyPairWithoutPlaintextCommand)[0]!.args[0].input).toMatchObject({
      KeyPairSpec: 'ECC_NIST_P256',
      EncryptionContext: wrappedSigningKeyContext('resp'),
    });
  });
});
