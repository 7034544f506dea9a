import { createPrivateKey } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { type CryptoKey, importJWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createKeystore,
  findKey,
  generateKey,
  type Keystore,
  type KeystoreEntry,
  publicJwk,
  publicJwks,
  readKeystore,
  writeKeystore,
} from '../../../lib/adapters/local/keystore.js';
import { PublicJwkSchema } from '../../../lib/config/schema.js';
import { ConfigError } from '../../../lib/errors.js';

let dir: string;
let entries: KeystoreEntry[];
let keystore: Keystore;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'itk3-keystore-'));
  entries = await Promise.all([
    generateKey('recipient-decrypt', 'RSA-OAEP-256', 'rx1-enc-1', 'RX1', { modulusLength: 2048 }),
    generateKey('response-sign', 'ES256', 'gw-resp-1', 'GW001'),
    generateKey('issuer-sign', 'RS512', 'iss-1', 'nhs-jwt'),
    generateKey('sender-sign', 'PS256', 'gp-sig-1', 'GP0001'),
    generateKey('sender-sign', 'ES256', 'x26-sig-1', 'X26'),
  ]);
  keystore = createKeystore(entries);
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi'];

describe('generateKey', () => {
  it('generates keys of the requested type and size', () => {
    const [rec, resp, iss] = entries;
    expect(rec).toMatchObject({
      kid: 'rx1-enc-1',
      purpose: 'recipient-decrypt',
      alg: 'RSA-OAEP-256',
      owner: 'RX1',
    });
    const recKey = createPrivateKey({ key: rec?.privateJwk as never, format: 'jwk' });
    expect(recKey.asymmetricKeyDetails?.modulusLength).toBe(2048);
    const respKey = createPrivateKey({ key: resp?.privateJwk as never, format: 'jwk' });
    expect(respKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(
      createPrivateKey({ key: iss?.privateJwk as never, format: 'jwk' }).asymmetricKeyDetails?.modulusLength,
    ).toBe(2048);
  });

  it('makes recipient keys RSA-4096 by default', async () => {
    const entry = await generateKey('recipient-decrypt', 'RSA-OAEP-256', 'rx-4096', 'RX1');
    const key = createPrivateKey({ key: entry.privateJwk as never, format: 'jwk' });
    expect(key.asymmetricKeyDetails?.modulusLength).toBe(4096);
  });

  it('refuses a purpose/alg mismatch and RSA under 2048 bits', async () => {
    await expect(generateKey('recipient-decrypt', 'ES256', 'k', 'RX1')).rejects.toThrow(TypeError);
    await expect(generateKey('response-sign', 'PS256', 'k', 'GW001')).rejects.toThrow(TypeError);
    await expect(generateKey('sender-sign', 'RSA-OAEP-256', 'k', 'GP0001')).rejects.toThrow(TypeError);
    await expect(generateKey('sender-sign', 'PS256', 'k', 'GP0001', { modulusLength: 1024 })).rejects.toThrow(
      TypeError,
    );
  });
});

describe('writeKeystore / readKeystore', () => {
  it('round-trips a keystore and writes it with mode 0600', () => {
    const file = path.join(dir, 'nested', 'keystore.json');
    writeKeystore(file, keystore);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readKeystore(file)).toEqual(keystore);
  });

  it('tightens the mode of an existing, wider file', () => {
    const file = path.join(dir, 'wide.json');
    writeFileSync(file, '{}', { mode: 0o644 });
    chmodSync(file, 0o644);
    writeKeystore(file, keystore);
    expect(statSync(file).mode & 0o777).toBe(0o600);
  });

  it('reports an unreadable file as a ConfigError', () => {
    expect(() => readKeystore(path.join(dir, 'missing.json'))).toThrow(ConfigError);
    try {
      readKeystore(path.join(dir, 'missing.json'));
    } catch (error) {
      expect((error as ConfigError).issues[0]).toMatch(/cannot read keystore file .*ENOENT/);
    }
  });

  it('reports invalid JSON without quoting the file (it holds private keys)', () => {
    const file = path.join(dir, 'broken.json');
    const secret = entries[0]?.privateJwk.d ?? '';
    writeFileSync(file, `{"version":1,"keys":[{"d":"${secret}"`);
    const error = captureConfigError(() => readKeystore(file));
    expect(error.message).toMatch(/not valid JSON/);
    expect(error.message).not.toContain(secret.slice(0, 20));
  });

  it('lists every schema problem: purpose/alg mismatch, key type, missing d, duplicate kid', () => {
    const file = path.join(dir, 'invalid.json');
    const [rec, resp] = entries;
    const bad = {
      version: 1,
      keys: [
        { ...rec, purpose: 'response-sign' },
        { ...resp, alg: 'PS256', purpose: 'sender-sign' },
        { ...resp, kid: 'no-d', privateJwk: { ...resp?.privateJwk, d: undefined } },
        { ...resp, kid: rec?.kid },
      ],
    };
    writeFileSync(file, JSON.stringify(bad));
    const error = captureConfigError(() => readKeystore(file));
    const text = error.issues.join('\n');
    expect(text).toMatch(/keys\.0.*not allowed for purpose response-sign/);
    expect(text).toMatch(/keys\.1.*needs a EC key|keys\.1.*needs a RSA key/);
    expect(text).toMatch(/keys\.2\.privateJwk\.d/);
    expect(text).toMatch(/keys\.3\.kid.*listed twice/);
    expect(text).not.toContain(rec?.privateJwk.d?.slice(0, 20) ?? 'x');
  });

  it('rejects an unknown version and extra members', () => {
    expect(() => createKeystore([{ ...entries[1], extra: true } as unknown as KeystoreEntry])).toThrow(
      ConfigError,
    );
    const file = path.join(dir, 'v2.json');
    writeFileSync(file, JSON.stringify({ version: 2, keys: [] }));
    expect(() => readKeystore(file)).toThrow(ConfigError);
  });

  it('writes nothing when the keystore is invalid', () => {
    const file = path.join(dir, 'never.json');
    const dup = { version: 1 as const, keys: [entries[1] as KeystoreEntry, entries[1] as KeystoreEntry] };
    expect(() => writeKeystore(file, dup)).toThrow(ConfigError);
    expect(() => readFileSync(file)).toThrow();
  });
});

describe('publicJwk / publicJwks', () => {
  it('publishes public members only, with kid, alg and use', async () => {
    for (const entry of entries) {
      const jwk = publicJwk(entry);
      for (const member of PRIVATE_MEMBERS) expect(jwk).not.toHaveProperty(member);
      expect(jwk).toMatchObject({
        kid: entry.kid,
        alg: entry.alg,
        use: entry.purpose === 'recipient-decrypt' ? 'enc' : 'sig',
      });
      const key = await importJWK(jwk, entry.alg);
      expect((key as CryptoKey).type).toBe('public');
    }
  });

  it('produces signing keys the configuration schema accepts as partner keys', () => {
    for (const entry of entries.filter((e) => e.purpose === 'sender-sign' || e.purpose === 'issuer-sign')) {
      expect(PublicJwkSchema.safeParse(publicJwk(entry)).success).toBe(true);
    }
  });

  it('filters a JWKS by purpose', () => {
    expect(publicJwks(keystore).keys).toHaveLength(entries.length);
    expect(publicJwks(keystore, ['response-sign']).keys.map((k) => k.kid)).toEqual(['gw-resp-1']);
    expect(
      publicJwks(keystore, ['recipient-decrypt', 'response-sign'])
        .keys.map((k) => k.kid)
        .sort(),
    ).toEqual(['gw-resp-1', 'rx1-enc-1']);
    expect(JSON.stringify(publicJwks(keystore))).not.toMatch(/"d":/);
  });

  it('finds entries by kid', () => {
    expect(findKey(keystore, 'gw-resp-1')?.purpose).toBe('response-sign');
    expect(findKey(keystore, 'nope')).toBeUndefined();
  });
});

function captureConfigError(action: () => unknown): ConfigError {
  try {
    action();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error('expected a ConfigError');
}
