import { generateKeyPairSync, sign as nodeSign, verify } from 'node:crypto';
import {
  DecryptCommand,
  DeriveSharedSecretCommand,
  GetPublicKeyCommand,
  IncorrectKeyException,
  InvalidCiphertextException,
  KMSClient,
  SignCommand,
} from '@aws-sdk/client-kms';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { KmsKeyService } from '../../../lib/adapters/aws/kms-key-service.js';
import { ConfigError, TransientError } from '../../../lib/errors.js';
import { networkError, sentCommands, serviceError } from './faults.js';

const kms = mockClient(KMSClient);
const keys = () =>
  new KmsKeyService(new KMSClient({ region: 'eu-west-2' }), { rx: 'key-rx', resp: 'key-resp' });

beforeEach(() => {
  kms.reset();
});
afterEach(() => kms.reset());

describe('KmsKeyService.unwrapKey', () => {
  it('calls Decrypt with RSAES_OAEP_SHA_256 and the mapped key id', async () => {
    kms.on(DecryptCommand).resolves({ Plaintext: new Uint8Array(32).fill(7) });

    const result = await keys().unwrapKey('rx', new Uint8Array([1, 2, 3]));

    expect(result).toEqual({ ok: true, cek: new Uint8Array(32).fill(7) });
    expect(kms.commandCalls(DecryptCommand)[0]?.args[0].input).toEqual({
      KeyId: 'key-rx',
      CiphertextBlob: new Uint8Array([1, 2, 3]),
      EncryptionAlgorithm: 'RSAES_OAEP_SHA_256',
    });
    expect(sentCommands(kms)).toEqual({ Decrypt: 1 });
  });

  it.each([
    ['InvalidCiphertextException', new InvalidCiphertextException({ message: 'bad', $metadata: {} })],
    ['IncorrectKeyException', new IncorrectKeyException({ message: 'wrong', $metadata: {} })],
    ['KMSInvalidStateException', serviceError('KMSInvalidStateException', 400)],
    ['DisabledException', serviceError('DisabledException', 400)],
    ['NotFoundException', serviceError('NotFoundException', 400)],
    ['ValidationException', serviceError('ValidationException', 400)],
  ])('reports %s as ok:false (continue with a random CEK)', async (_name, error) => {
    kms.on(DecryptCommand).rejects(error);
    expect(await keys().unwrapKey('rx', new Uint8Array([1]))).toEqual({ ok: false });
  });

  it.each([
    ['ThrottlingException', serviceError('ThrottlingException', 400)],
    ['LimitExceededException', serviceError('LimitExceededException', 400)],
    ['KMSInternalException', serviceError('KMSInternalException', 500)],
    ['DependencyTimeoutException', serviceError('DependencyTimeoutException', 503)],
    ['KeyUnavailableException', serviceError('KeyUnavailableException', 500)],
    ['a bare 503', serviceError('ServiceUnavailable', 503)],
    ['AccessDeniedException (operator fault: DLQ, not reject)', serviceError('AccessDeniedException', 400)],
    ['a refused connection', networkError('ECONNREFUSED')],
    ['a timeout', Object.assign(new Error('timeout'), { name: 'TimeoutError' })],
  ])('throws TransientError KEY_SERVICE_UNAVAILABLE on %s, never substitutes', async (_name, error) => {
    kms.on(DecryptCommand).rejects(error);

    const thrown = await keys()
      .unwrapKey('rx', new Uint8Array([1]))
      .catch((e: unknown) => e);

    expect(thrown).toBeInstanceOf(TransientError);
    expect((thrown as TransientError).code).toBe('KEY_SERVICE_UNAVAILABLE');
    expect((thrown as TransientError).cause).toBe(error);
  });

  it('answers ok:false for an unknown kid or an empty key without calling KMS', async () => {
    expect(await keys().unwrapKey('unknown', new Uint8Array([1]))).toEqual({ ok: false });
    expect(await keys().unwrapKey('rx', new Uint8Array())).toEqual({ ok: false });
    expect(kms.calls()).toHaveLength(0);
  });
});

describe('KmsKeyService.signEs256', () => {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });

  it('signs RAW with ECDSA_SHA_256 and converts the DER signature to r‖s', async () => {
    const input = new TextEncoder().encode('header.payload');
    kms.on(SignCommand).resolves({ Signature: nodeSign('sha256', input, privateKey) });

    const signature = await keys().signEs256('resp', input);

    expect(signature).toHaveLength(64);
    expect(verify('sha256', input, { key: publicKey, dsaEncoding: 'ieee-p1363' }, signature)).toBe(true);
    expect(kms.commandCalls(SignCommand)[0]?.args[0].input).toMatchObject({
      KeyId: 'key-resp',
      MessageType: 'RAW',
      SigningAlgorithm: 'ECDSA_SHA_256',
    });
  });

  it('throws TransientError on throttling and on a key KMS refuses to use', async () => {
    kms.on(SignCommand).rejectsOnce(serviceError('ThrottlingException', 400));
    kms.on(SignCommand).rejectsOnce(serviceError('KMSInvalidStateException', 400));
    for (let i = 0; i < 2; i += 1) {
      await expect(keys().signEs256('resp', new Uint8Array(1))).rejects.toBeInstanceOf(TransientError);
    }
  });

  it('throws TransientError when KMS returns something that is not an ES256 DER signature', async () => {
    kms.on(SignCommand).resolves({ Signature: new Uint8Array([1, 2, 3]) });
    await expect(keys().signEs256('resp', new Uint8Array(1))).rejects.toBeInstanceOf(TransientError);
  });

  it('throws ConfigError for a kid without a KMS key', async () => {
    await expect(keys().signEs256('nobody', new Uint8Array(1))).rejects.toBeInstanceOf(ConfigError);
  });
});

describe('KmsKeyService.publicKeySpki', () => {
  it('calls GetPublicKey once per kid, also for concurrent callers', async () => {
    kms.on(GetPublicKeyCommand).resolves({ PublicKey: new Uint8Array([0x30, 1]) });
    const service = keys();

    await Promise.all([service.publicKeySpki('rx'), service.publicKeySpki('rx')]);
    await service.publicKeySpki('rx');

    expect(kms.commandCalls(GetPublicKeyCommand)).toHaveLength(1);
    expect(sentCommands(kms)).toEqual({ GetPublicKey: 1 });
  });

  it('does not cache a failure', async () => {
    kms
      .on(GetPublicKeyCommand)
      .rejectsOnce(serviceError('ThrottlingException', 400))
      .resolves({
        PublicKey: new Uint8Array([0x30]),
      });
    const service = keys();

    await expect(service.publicKeySpki('rx')).rejects.toBeInstanceOf(TransientError);
    expect(await service.publicKeySpki('rx')).toEqual(new Uint8Array([0x30]));
  });
});

describe('KmsKeyService.deriveSharedSecret (ECDH-ES+A256KW)', () => {
  const ephemeral = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey;
  const { x, y } = ephemeral.export({ format: 'jwk' });
  const epk = { kty: 'EC', crv: 'P-256', x: x as string, y: y as string } as const;

  it('calls DeriveSharedSecret with ECDH, the mapped key id and the epk as SPKI DER', async () => {
    kms.on(DeriveSharedSecretCommand).resolves({ SharedSecret: new Uint8Array(32).fill(4) });
    const result = await keys().deriveSharedSecret('rx', epk);
    expect(result).toEqual({ ok: true, sharedSecret: new Uint8Array(32).fill(4) });
    const input = kms.commandCalls(DeriveSharedSecretCommand)[0]?.args[0].input;
    expect(input).toMatchObject({ KeyId: 'key-rx', KeyAgreementAlgorithm: 'ECDH' });
    expect(Buffer.from(input?.PublicKey as Uint8Array)).toEqual(
      ephemeral.export({ format: 'der', type: 'spki' }),
    );
    expect(sentCommands(kms)).toEqual({ DeriveSharedSecret: 1 });
  });

  it.each([
    ['InvalidKeyUsageException (an RSA kid)', serviceError('InvalidKeyUsageException', 400)],
    ['KMSInvalidStateException', serviceError('KMSInvalidStateException', 400)],
    ['ValidationException', serviceError('ValidationException', 400)],
  ])('reports %s as ok:false', async (_name, error) => {
    kms.on(DeriveSharedSecretCommand).rejects(error);
    expect(await keys().deriveSharedSecret('rx', epk)).toEqual({ ok: false });
  });

  it('throws TransientError on throttling and network failures', async () => {
    kms.on(DeriveSharedSecretCommand).rejects(serviceError('ThrottlingException', 400));
    await expect(keys().deriveSharedSecret('rx', epk)).rejects.toBeInstanceOf(TransientError);
    kms.reset();
    kms.on(DeriveSharedSecretCommand).rejects(networkError('ECONNRESET'));
    await expect(keys().deriveSharedSecret('rx', epk)).rejects.toBeInstanceOf(TransientError);
  });

  it('an unknown kid or an unusable public key never reaches KMS', async () => {
    expect(await keys().deriveSharedSecret('nobody', epk)).toEqual({ ok: false });
    expect(
      await keys().deriveSharedSecret('rx', { ...epk, y: Buffer.alloc(32, 7).toString('base64url') }),
    ).toEqual({
      ok: false,
    });
    expect(kms.commandCalls(DeriveSharedSecretCommand)).toHaveLength(0);
  });
});
