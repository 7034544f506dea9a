/**
 * `itk3 keys wrap` without KMS (aws-sdk-client-mock): argument checking with exit 2 before any KMS
 * call, the exact request (spec, encryption context), the printed record (public members only),
 * operator-facing errors with exit 1, and the wrapped-keys file `--out` maintains.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GenerateDataKeyPairWithoutPlaintextCommand, KMSClient } from '@aws-sdk/client-kms';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { wrappedKeyContext, wrappedSigningKeyContext } from '../../../lib/adapters/aws/deployment-names.js';
import { main } from '../../../lib/cli/main.js';
import { makeTempDir, removeTempDirs } from '../../support/world.js';
import { networkError, serviceError } from '../aws-adapters/faults.js';

const kms = mockClient(KMSClient);
const KEY_ARN = 'arn:aws:kms:eu-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab';
const BLOB = randomBytes(1300);
// RSA-2048 keeps the suite fast; the checks are the ones RSA_4096 goes through.
const PAIR = generateKeyPairSync('rsa', { modulusLength: 2048 });
const SPKI = PAIR.publicKey.export({ format: 'der', type: 'spki' });

beforeEach(() => {
  kms.reset();
  // The mock answers whatever client the CLI builds; the environment only has to be complete.
  vi.stubEnv('AWS_REGION', 'eu-west-2');
  vi.stubEnv('AWS_ACCESS_KEY_ID', 'test');
  vi.stubEnv('AWS_SECRET_ACCESS_KEY', 'test');
});
afterEach(() => {
  kms.reset();
  vi.unstubAllEnvs();
});
afterAll(removeTempDirs);

const generates = (spki: Uint8Array = SPKI) =>
  kms.on(GenerateDataKeyPairWithoutPlaintextCommand).resolves({
    KeyId: KEY_ARN,
    KeyPairSpec: 'RSA_2048',
    PrivateKeyCiphertextBlob: BLOB,
    PublicKey: spki,
  });

async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const spy = vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
    err.push(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8'));
    return true;
  });
  try {
    const code = await main(argv, (line) => out.push(line));
    return { code, out: out.join('\n'), err: err.join('') };
  } finally {
    spy.mockRestore();
  }
}

describe('itk3 keys wrap: arguments', () => {
  it.each([
    [[], /--wrapping-key is required.*--kid is required/],
    [['--kid', 'rx-1'], /--wrapping-key is required/],
    [['--wrapping-key', KEY_ARN], /--kid is required/],
    [['--wrapping-key', 'rx-1', '--kid', 'rx-1'], /--wrapping-key "rx-1" is not a KMS key id/],
    [['--wrapping-key', KEY_ARN, '--kid', 'no spaces'], /--kid "no spaces" is not a key id/],
    [['--wrapping-key', KEY_ARN, '--kid', 'rx-1', '--spec', 'ECC_NIST_P384'], /--spec must be one of/],
    [['--wrapping-key', KEY_ARN, '--kid', 'rx-1', '--force'], /--force only applies with --out/],
    [['--wrapping-key', KEY_ARN, '--kid', 'rx-1', '--purpose', 'sign'], /--purpose must be one of/],
    [
      ['--wrapping-key', KEY_ARN, '--kid', 'gw-1', '--purpose', 'response-sign', '--spec', 'RSA_4096'],
      /--purpose response-sign makes an ES256 key: --spec ECC_NIST_P256 only, not RSA_4096/,
    ],
    [['--wrapping-key', KEY_ARN, '--kid', 'rx-1', '--bogus'], /unknown option '--bogus'/],
    [['--wrapping-key', KEY_ARN, '--kid', 'rx-1', 'extra'], /unexpected argument 'extra'/],
  ])('refuses %j with exit 2 and calls no KMS', async (args, message) => {
    generates();
    const result = await cli('keys', 'wrap', ...args);
    expect(result.code).toBe(2);
    expect(result.err).toMatch(/^error: /);
    expect(result.err).toMatch(message);
    expect(result.out).toBe('');
    expect(kms.calls()).toHaveLength(0);
  });

  it('lists every argument problem at once, with the usage line', async () => {
    const { code, err } = await cli(
      'keys',
      'wrap',
      '--wrapping-key',
      'x',
      '--kid',
      '?',
      '--spec',
      'RSA_1024',
    );
    expect(code).toBe(2);
    expect(err).toContain('--wrapping-key "x"');
    expect(err).toContain('--kid "?"');
    expect(err).toContain('--spec must be one of RSA_2048, RSA_3072, RSA_4096, ECC_NIST_P256');
    expect(err).toContain('usage: itk3 keys wrap');
  });

  it.each([
    '1234abcd-12ab-34cd-56ef-1234567890ab',
    'mrk-1234abcd12ab34cd56ef1234567890ab',
    'alias/itk3/Itk3Pipeline/recipient-key-wrapping',
    'arn:aws:kms:eu-west-2:111122223333:alias/itk3-wrapping',
    KEY_ARN,
  ])('accepts the key reference %s', async (ref) => {
    generates();
    const { code } = await cli('keys', 'wrap', '--wrapping-key', ref, '--kid', 'rx-1', '--spec', 'RSA_2048');
    expect(code).toBe(0);
    expect(kms.commandCalls(GenerateDataKeyPairWithoutPlaintextCommand)[0]?.args[0].input.KeyId).toBe(ref);
  });
});

describe('itk3 keys wrap: the request and the record', () => {
  it('asks for RSA_4096 by default, bound to the encryption context CachedKeyService sends', async () => {
    const pair4096 = generateKeyPairSync('rsa', { modulusLength: 4096 });
    generates(pair4096.publicKey.export({ format: 'der', type: 'spki' }));
    const { code } = await cli('keys', 'wrap', '--wrapping-key', KEY_ARN, '--kid', 'a83627-enc-202705');
    expect(code).toBe(0);
    const calls = kms.commandCalls(GenerateDataKeyPairWithoutPlaintextCommand);
    expect(calls).toHaveLength(1);
    expect(calls[0]?.args[0].input).toEqual({
      KeyId: KEY_ARN,
      KeyPairSpec: 'RSA_4096',
      EncryptionContext: wrappedKeyContext('a83627-enc-202705'),
    });
    expect(kms.calls()).toHaveLength(1);
  });

  it('prints kid, the base64 blob, a public-only RSA-OAEP-256 JWK and the wrapping key ARN', async () => {
    generates();
    const { code, out } = await cli(
      'keys',
      'wrap',
      '--wrapping-key',
      'alias/w',
      '--kid',
      'rx-1',
      '--spec',
      'RSA_2048',
    );
    expect(code).toBe(0);
    const record = JSON.parse(out) as Record<string, unknown>;
    const jwk = PAIR.publicKey.export({ format: 'jwk' });
    expect(record).toEqual({
      kid: 'rx-1',
      wrappedPrivateKey: BLOB.toString('base64'),
      publicJwk: { kty: 'RSA', kid: 'rx-1', alg: 'RSA-OAEP-256', use: 'enc', n: jwk.n, e: jwk.e },
      // KMS names the key behind the alias.
      wrappingKeyArn: KEY_ARN,
    });
    const privateJwk = PAIR.privateKey.export({ format: 'jwk' });
    for (const member of ['d', 'p', 'q', 'dp', 'dq', 'qi'] as const) {
      expect(out).not.toContain(String(privateJwk[member]));
    }
  });

  it('ECC_NIST_P256 prints a public-only ECDH-ES+A256KW JWK and refuses a key of another type', async () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    generates(ec.publicKey.export({ format: 'der', type: 'spki' }));
    const { code, out } = await cli(
      'keys',
      'wrap',
      '--wrapping-key',
      KEY_ARN,
      '--kid',
      'rx-ec',
      '--spec',
      'ECC_NIST_P256',
    );
    expect(code).toBe(0);
    const { x, y } = ec.publicKey.export({ format: 'jwk' });
    expect((JSON.parse(out) as { publicJwk: unknown }).publicJwk).toEqual({
      kty: 'EC',
      kid: 'rx-ec',
      alg: 'ECDH-ES+A256KW',
      use: 'enc',
      crv: 'P-256',
      x,
      y,
    });
    expect(kms.commandCalls(GenerateDataKeyPairWithoutPlaintextCommand)[0]?.args[0].input.KeyPairSpec).toBe(
      'ECC_NIST_P256',
    );
    kms.reset();
    generates();
    const wrong = await cli(
      'keys',
      'wrap',
      '--wrapping-key',
      KEY_ARN,
      '--kid',
      'rx-ec',
      '--spec',
      'ECC_NIST_P256',
    );
    expect(wrong.code).toBe(1);
    expect(wrong.err).toContain('not ECC_NIST_P256');
  });

  it('--purpose response-sign asks for P-256 under the signing context and prints an ES256 JWK', async () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    generates(ec.publicKey.export({ format: 'der', type: 'spki' }));
    const file = join(makeTempDir('itk3-wrap-'), 'wrapped.json');
    const { code, out, err } = await cli(
      'keys',
      'wrap',
      '--wrapping-key',
      KEY_ARN,
      '--kid',
      'gw-sign-1',
      '--purpose',
      'response-sign',
      '--out',
      file,
    );
    expect(code).toBe(0);
    expect(err).toContain('(the response-signing key)');
    expect(kms.commandCalls(GenerateDataKeyPairWithoutPlaintextCommand)[0]?.args[0].input).toEqual({
      KeyId: KEY_ARN,
      KeyPairSpec: 'ECC_NIST_P256',
      EncryptionContext: wrappedSigningKeyContext('gw-sign-1'),
    });
    const { x, y } = ec.publicKey.export({ format: 'jwk' });
    const record = {
      kid: 'gw-sign-1',
      wrappedPrivateKey: BLOB.toString('base64'),
      publicJwk: { kty: 'EC', kid: 'gw-sign-1', alg: 'ES256', use: 'sig', crv: 'P-256', x, y },
      wrappingKeyArn: KEY_ARN,
      purpose: 'response-sign',
    };
    expect(JSON.parse(out)).toEqual(record);
    // The same file as the recipient keys, the entry marked by its purpose.
    expect(JSON.parse(readFileSync(file, 'utf8'))).toEqual([record]);
  });

  it('refuses a public key that is not of the requested size', async () => {
    generates();
    const { code, err, out } = await cli('keys', 'wrap', '--wrapping-key', KEY_ARN, '--kid', 'rx-1');
    expect(code).toBe(1);
    expect(err).toContain('not RSA_4096');
    expect(out).toBe('');
  });

  it('says so when KMS answers without a key pair', async () => {
    kms.on(GenerateDataKeyPairWithoutPlaintextCommand).resolves({ KeyId: KEY_ARN, PublicKey: SPKI });
    const { code, err, out } = await cli('keys', 'wrap', '--wrapping-key', KEY_ARN, '--kid', 'rx-1');
    expect(code).toBe(1);
    expect(err).toContain('KMS GenerateDataKeyPairWithoutPlaintext returned no key pair');
    expect(out).toBe('');
  });

  it.each([
    [serviceError('NotFoundException', 400), /wrapping key .* not found/],
    [serviceError('InvalidKeyUsageException', 400), /not a symmetric encryption key/],
    [serviceError('DisabledException', 400), /is disabled/],
    [
      serviceError('AccessDeniedException', 400),
      /not allowed to call kms:GenerateDataKeyPairWithoutPlaintext/,
    ],
    [networkError('ECONNREFUSED'), /cannot reach KMS \(ECONNREFUSED\)/],
  ])('explains %s and exits 1', async (error, message) => {
    kms.on(GenerateDataKeyPairWithoutPlaintextCommand).rejects(error);
    const { code, err, out } = await cli('keys', 'wrap', '--wrapping-key', KEY_ARN, '--kid', 'rx-1');
    expect(code).toBe(1);
    expect(err).toMatch(message);
    expect(out).toBe('');
  });
});

describe('itk3 keys wrap --out', () => {
  it('collects records in a file, refusing to replace a kid unless forced', async () => {
    generates();
    const file = join(makeTempDir('itk3-wrap-'), 'wrapped.json');
    const wrap = (kid: string, ...extra: string[]) =>
      cli(
        'keys',
        'wrap',
        '--wrapping-key',
        KEY_ARN,
        '--kid',
        kid,
        '--spec',
        'RSA_2048',
        '--out',
        file,
        ...extra,
      );

    expect((await wrap('rx-1')).code).toBe(0);
    expect((await wrap('rx-2')).code).toBe(0);
    const kids = () => (JSON.parse(readFileSync(file, 'utf8')) as { kid: string }[]).map((e) => e.kid);
    expect(kids()).toEqual(['rx-1', 'rx-2']);

    const again = await wrap('rx-1');
    expect(again.code).toBe(2);
    expect(again.err).toContain('already holds kid rx-1');
    expect(kms.commandCalls(GenerateDataKeyPairWithoutPlaintextCommand)).toHaveLength(2);

    expect((await wrap('rx-1', '--force')).code).toBe(0);
    expect(kids()).toEqual(['rx-2', 'rx-1']);
    expect(existsSync(`${file}.${process.pid}.tmp`)).toBe(false);
  });

  it('refuses a file that is not a wrapped-keys file before calling KMS', async () => {
    generates();
    const file = join(makeTempDir('itk3-wrap-'), 'other.json');
    writeFileSync(file, JSON.stringify({ keys: [] }));
    const { code, err } = await cli(
      'keys',
      'wrap',
      '--wrapping-key',
      KEY_ARN,
      '--kid',
      'rx-1',
      '--out',
      file,
    );
    expect(code).toBe(2);
    expect(err).toContain('is not a wrapped-keys file');
    expect(kms.calls()).toHaveLength(0);
  });
});
