/**
 * The CLI's recipient key choice: `keys init --recipient-alg`, `keys add --alg ECDH-ES+A256KW`, and
 * `seal --recipient-jwks` picking the JWE alg from the published key; the sealed message opens
 * through the real decrypt path with the keystore's key.
 */
import '../../support/env.js';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { readKeystore } from '../../../lib/adapters/local/keystore.js';
import { SoftwareKeyService } from '../../../lib/adapters/local/software-keys.js';
import { main } from '../../../lib/cli/main.js';
import { decryptSealed, parseSealed } from '../../../lib/envelope/jwe.js';
import { loadSamples } from '../../../lib/itk3/index.js';
import { makeTempDir, removeTempDirs } from '../../support/world.js';

afterAll(removeTempDirs);

async function cli(...argv: string[]): Promise<{ code: number; out: string[]; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const spy = vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
    err.push(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8'));
    return true;
  });
  try {
    return { code: await main(argv, (line) => out.push(line)), out, err: err.join('') };
  } finally {
    spy.mockRestore();
  }
}

describe('itk3 keys / seal with ECDH-ES+A256KW recipients', () => {
  it('keys init --recipient-alg ECDH-ES+A256KW publishes P-256 encryption keys; seal uses them', async () => {
    const dir = makeTempDir('itk3-ecdh-cli-');
    const gateway = join(dir, 'gw.json');
    const sender = join(dir, 'sender.json');
    const init = await cli(
      'keys',
      'init',
      '--keystore',
      gateway,
      '--recipient',
      'A83627',
      '--recipient-alg',
      'ECDH-ES+A256KW',
    );
    expect(init.code).toBe(0);
    const jwks = JSON.parse(init.out.join('\n')) as { keys: Record<string, unknown>[] };
    expect(jwks.keys.map((k) => [k.kty, k.crv, k.alg, k.use])).toEqual([
      ['EC', 'P-256', 'ECDH-ES+A256KW', 'enc'],
      ['EC', 'P-256', 'ES256', 'sig'],
    ]);
    expect(jwks.keys[0]).not.toHaveProperty('d');
    const jwksFile = join(dir, 'gateway-jwks.json');
    writeFileSync(jwksFile, init.out.join('\n'));

    expect(
      (
        await cli(
          'keys',
          'add',
          '--keystore',
          sender,
          '--purpose',
          'sender-sign',
          '--alg',
          'ES256',
          '--owner',
          'X26',
          '--kid',
          'x26-sign-1',
        )
      ).code,
    ).toBe(0);
    const sample = loadSamples().find((s) => s.name === 'engage_hettie_winters_imms.xml');
    if (!sample) throw new Error('sample missing');
    const bundle = join(dir, 'hettie.xml');
    writeFileSync(bundle, sample.bytes);
    const out = join(dir, 'msg.jwe');
    const seal = await cli(
      'seal',
      bundle,
      '--keystore',
      sender,
      '--signer-kid',
      'x26-sign-1',
      '--to',
      'A83627',
      '--recipient-jwks',
      jwksFile,
      '--out',
      out,
    );
    expect(seal.code).toBe(0);

    const sealed = readFileSync(out, 'utf8').trim();
    const parsed = parseSealed(sealed, { maxSealedBytes: 1 << 20 });
    expect(parsed.header).toMatchObject({
      alg: 'ECDH-ES+A256KW',
      kid: jwks.keys[0]?.kid,
      itk: { to: 'A83627' },
    });
    const jws = Buffer.from(
      await decryptSealed(parsed, new SoftwareKeyService(readKeystore(gateway))),
    ).toString('ascii');
    expect(Buffer.from(jws.split('.')[1] ?? '', 'base64url')).toEqual(Buffer.from(sample.bytes));
  });

  it('keys add makes an ECDH-ES+A256KW recipient key', async () => {
    const keystore = join(makeTempDir(), 'ks.json');
    const add = await cli(
      'keys',
      'add',
      '--keystore',
      keystore,
      '--purpose',
      'recipient-decrypt',
      '--alg',
      'ECDH-ES+A256KW',
      '--owner',
      'RX1',
      '--kid',
      'rx1-ec',
    );
    expect(add.code).toBe(0);
    expect(JSON.parse(add.out.join('\n'))).toMatchObject({
      kty: 'EC',
      crv: 'P-256',
      alg: 'ECDH-ES+A256KW',
      use: 'enc',
      kid: 'rx1-ec',
    });
  });

  it.each([
    [['--recipient-alg', 'RSA1_5'], /--recipient-alg must be RSA-OAEP-256 or ECDH-ES\+A256KW/],
    [
      ['--recipient-alg', 'ECDH-ES+A256KW', '--modulus', '2048'],
      /--modulus does not apply to ECDH-ES\+A256KW/,
    ],
    [['--modulus', '1024'], /--modulus must be 2048, 3072 or 4096/],
  ])('keys init %j exits 2 with a clear message', async (extra, message) => {
    const { code, err } = await cli(
      'keys',
      'init',
      '--keystore',
      join(makeTempDir(), 'ks.json'),
      '--recipient',
      'RX1',
      ...extra,
    );
    expect(code).toBe(2);
    expect(err).toMatch(message);
  });

  it('keys add refuses a modulus outside 2048/3072/4096', async () => {
    const { code, err } = await cli(
      'keys',
      'add',
      '--keystore',
      join(makeTempDir(), 'ks.json'),
      '--purpose',
      'recipient-decrypt',
      '--alg',
      'RSA-OAEP-256',
      '--owner',
      'RX1',
      '--modulus',
      '1024',
    );
    expect(code).toBe(2);
    expect(err).toMatch(/--modulus must be 2048, 3072 or 4096/);
  });
});
