import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  sign as nodeSign,
  verify as nodeVerify,
} from 'node:crypto';
import { compactVerify, importJWK } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import { createKeystore, generateKey } from '../../../lib/adapters/local/keystore.js';
import { type KeyServiceOperation, SoftwareKeyService } from '../../../lib/adapters/local/software-keys.js';
import { derToJoseEs256, signCompactWithKeyService } from '../../../lib/envelope/response-sign.js';
import { TransientError } from '../../../lib/errors.js';
import type { KeyService } from '../../../lib/ports/index.js';
import { headerOf, loadVectors } from './helpers.js';

let keys: SoftwareKeyService;
const kid = 'gw-resp-1';
const payload = Buffer.from('<Bundle><!-- ITK008M --></Bundle>', 'utf8');

beforeAll(async () => {
  const entry = await generateKey('response-sign', 'ES256', kid, 'GW001');
  keys = new SoftwareKeyService(createKeystore([entry]));
});

describe('signCompactWithKeyService', () => {
  it('signs through the key service and produces a JWS jose verifies with the published key', async () => {
    const jws = await signCompactWithKeyService(keys, kid, { cty: 'fhir+xml', itk: { id: 'r1' } }, payload);
    expect(headerOf(jws)).toEqual({ cty: 'fhir+xml', itk: { id: 'r1' }, alg: 'ES256', kid });
    const spki = await keys.publicKeySpki(kid);
    const { payload: verified } = await compactVerify(
      jws,
      createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' }),
      {
        algorithms: ['ES256'],
      },
    );
    expect(Buffer.from(verified).equals(payload)).toBe(true);
  });

  it('overrides alg and kid in the caller header, so a signature is never mislabelled', async () => {
    const jws = await signCompactWithKeyService(
      keys,
      kid,
      { alg: 'none', kid: 'other', cty: 'fhir+json' },
      payload,
    );
    expect(headerOf(jws)).toMatchObject({ alg: 'ES256', kid, cty: 'fhir+json' });
  });

  it('fetches and imports the public key once per key service and kid', async () => {
    const entry = await generateKey('response-sign', 'ES256', kid, 'GW001');
    const seen: KeyServiceOperation[] = [];
    const counted = new SoftwareKeyService(createKeystore([entry]), {
      beforeCall: (op) => void seen.push(op),
    });
    await signCompactWithKeyService(counted, kid, {}, payload);
    await signCompactWithKeyService(counted, kid, {}, payload);
    await signCompactWithKeyService(counted, kid, {}, payload);
    expect(seen.filter((c) => c === 'publicKeySpki')).toHaveLength(1);
    expect(seen.filter((c) => c === 'signEs256')).toHaveLength(3);
  });

  it('refuses to release a signature that fails the self-test (key service signs with another key)', async () => {
    const other = await generateKey('response-sign', 'ES256', kid, 'GW001');
    const otherKeys = new SoftwareKeyService(createKeystore([other]));
    const mismatched: KeyService = {
      unwrapKey: (k, e) => keys.unwrapKey(k, e),
      deriveSharedSecret: (k, epk) => keys.deriveSharedSecret(k, epk),
      signEs256: (k, input) => otherKeys.signEs256(k, input),
      publicKeySpki: (k) => keys.publicKeySpki(k),
    };
    await expect(signCompactWithKeyService(mismatched, kid, {}, payload)).rejects.toBeInstanceOf(
      TransientError,
    );
  });

  it('refuses a DER signature where the port promises r‖s', async () => {
    const entry = await generateKey('response-sign', 'ES256', kid, 'GW001');
    const inner = new SoftwareKeyService(createKeystore([entry]));
    const privateKey = createPrivateKey({ key: entry.privateJwk, format: 'jwk' });
    const derService: KeyService = {
      unwrapKey: (k, e) => inner.unwrapKey(k, e),
      deriveSharedSecret: (k, epk) => inner.deriveSharedSecret(k, epk),
      signEs256: async (_k, input) => nodeSign('sha256', input, privateKey),
      publicKeySpki: (k) => inner.publicKeySpki(k),
    };
    await expect(signCompactWithKeyService(derService, kid, {}, payload)).rejects.toMatchObject({
      code: 'UNEXPECTED',
    });
  });

  it('propagates a TransientError from the key service and does not cache a failed key fetch', async () => {
    const entry = await generateKey('response-sign', 'ES256', kid, 'GW001');
    let failNext = true;
    const flaky = new SoftwareKeyService(createKeystore([entry]), {
      beforeCall: (op) => {
        if (op === 'publicKeySpki' && failNext) {
          failNext = false;
          throw new TransientError('KEY_SERVICE_UNAVAILABLE', 'throttled');
        }
      },
    });
    await expect(signCompactWithKeyService(flaky, kid, {}, payload)).rejects.toMatchObject({
      code: 'KEY_SERVICE_UNAVAILABLE',
    });
    await expect(signCompactWithKeyService(flaky, kid, {}, payload)).resolves.toMatch(
      /^[\w-]+\.[\w-]+\.[\w-]+$/,
    );
  });

  it('refuses a response-signing key that is not P-256', async () => {
    const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' });
    const entry = await generateKey('response-sign', 'ES256', kid, 'GW001');
    const inner = new SoftwareKeyService(createKeystore([entry]));
    const wrongCurve: KeyService = {
      unwrapKey: (k, e) => inner.unwrapKey(k, e),
      deriveSharedSecret: (k, epk) => inner.deriveSharedSecret(k, epk),
      signEs256: (k, input) => inner.signEs256(k, input),
      publicKeySpki: async () => p384.publicKey.export({ format: 'der', type: 'spki' }),
    };
    await expect(signCompactWithKeyService(wrongCurve, kid, {}, payload)).rejects.toBeInstanceOf(
      TransientError,
    );
  });
});

describe('derToJoseEs256', () => {
  it('converts local DER signatures that then verify as JOSE r‖s (jose and node)', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const joseKey = await importJWK({ ...publicKey.export({ format: 'jwk' }) }, 'ES256');
    const derLengths = new Set<number>();
    for (let i = 0; i < 1000; i++) {
      const header = Buffer.from(JSON.stringify({ alg: 'ES256', n: i })).toString('base64url');
      const input = `${header}.${Buffer.from(`message ${i}`).toString('base64url')}`;
      const der = nodeSign('sha256', Buffer.from(input), privateKey);
      const raw = derToJoseEs256(der);
      expect(raw).toHaveLength(64);
      derLengths.add(der.length);
      expect(
        nodeVerify('sha256', Buffer.from(input), { key: publicKey, dsaEncoding: 'ieee-p1363' }, raw),
      ).toBe(true);
      if (i < 20) {
        await expect(
          compactVerify(`${input}.${Buffer.from(raw).toString('base64url')}`, joseKey, {
            algorithms: ['ES256'],
          }),
        ).resolves.toBeTruthy();
      }
    }
    // Components with and without the DER sign byte both occurred (72 = both have one).
    // Components shorter than 32 bytes are rare (≈1/512 each) and covered by the crafted case below.
    expect(derLengths.size).toBeGreaterThan(1);
  });

  it('left-pads short components and strips the DER sign byte', () => {
    const r = Buffer.alloc(32, 0);
    r[31] = 1; // r = 1: one byte in DER
    const s = Buffer.alloc(32, 0xff); // high bit set: 33 bytes with a leading 0x00 in DER
    const out = derToJoseEs256(derOf(r, s));
    expect(Buffer.from(out).equals(Buffer.concat([r, s]))).toBe(true);
  });

  it('rejects malformed DER', () => {
    const r = Buffer.alloc(32, 0x11);
    const s = Buffer.alloc(32, 0x22);
    const good = derOf(r, s);
    const bad: Array<[string, Uint8Array]> = [
      ['empty', new Uint8Array(0)],
      ['raw r‖s', Buffer.concat([r, s])],
      ['wrong outer tag', Buffer.from([0x31, ...good.subarray(1)])],
      ['outer length mismatch', Buffer.from([0x30, (good[1] ?? 0) + 1, ...good.subarray(2)])],
      [
        'trailing byte',
        Buffer.concat([Buffer.from([0x30, (good[1] ?? 0) + 1]), good.subarray(2), Buffer.from([0])]),
      ],
      ['long-form length', Buffer.from([0x30, 0x81, good[1] ?? 0, ...good.subarray(2)])],
      ['integer tag', Buffer.from([0x30, good[1] ?? 0, 0x03, ...good.subarray(3)])],
      ['negative r', derRaw(Buffer.from([0x80, ...Buffer.alloc(31, 1)]), s)],
      ['non-minimal r', derRaw(Buffer.from([0x00, 0x01, ...Buffer.alloc(30, 1)]), s)],
      ['zero r', derRaw(Buffer.from([0x00]), s)],
      ['zero s', derRaw(r, Buffer.from([0x00]))],
      ['r of 33 bytes without sign byte', derRaw(Buffer.from([0x01, ...Buffer.alloc(32, 1)]), s)],
      ['r of 34 bytes', derRaw(Buffer.from([0x00, 0x80, ...Buffer.alloc(32, 1)]), s)],
      ['missing s', Buffer.from([0x30, 0x22, 0x02, 0x20, ...r])],
    ];
    for (const [name, der] of bad) {
      expect(() => derToJoseEs256(der), name).toThrow(TypeError);
    }
  });
});

interface EcdsaVectors {
  testGroups: Array<{
    publicKeyDer: string;
    tests: Array<{ tcId: number; msg: string; sig: string; result: 'valid' | 'invalid' | 'acceptable' }>;
  }>;
}

const p1363 = loadVectors<EcdsaVectors>(
  'wycheproof/testvectors_v1/ecdsa_secp256r1_sha256_p1363_test.json',
  'Wycheproof ECDSA P-256 P1363 through DER conversion',
);

describe.skipIf(!p1363)('derToJoseEs256 — Wycheproof ecdsa_secp256r1_sha256_p1363', () => {
  it('round-trips every 64-byte vector through DER: valid ones verify, no invalid one is accepted', () => {
    let applicable = 0;
    let validVerified = 0;
    let invalidRejected = 0;
    for (const group of p1363?.testGroups ?? []) {
      const key = createPublicKey({
        key: Buffer.from(group.publicKeyDer, 'hex'),
        format: 'der',
        type: 'spki',
      });
      for (const t of group.tests) {
        const sig = Buffer.from(t.sig, 'hex');
        // Only 64-byte r‖s values have a DER form that a KMS could return; other lengths are
        // encoding errors of the P1363 format itself, not of the conversion.
        if (sig.length !== 64) continue;
        applicable++;
        const msg = Buffer.from(t.msg, 'hex');
        let converted: Uint8Array | undefined;
        try {
          converted = derToJoseEs256(derOf(sig.subarray(0, 32), sig.subarray(32)));
        } catch {
          converted = undefined;
        }
        const ok =
          converted !== undefined && nodeVerify('sha256', msg, { key, dsaEncoding: 'ieee-p1363' }, converted);
        if (t.result === 'valid') {
          expect(converted && Buffer.from(converted).equals(sig), `tcId ${t.tcId} converts back`).toBe(true);
          expect(ok, `valid tcId ${t.tcId}`).toBe(true);
          validVerified++;
        } else if (t.result === 'invalid') {
          expect(ok, `invalid tcId ${t.tcId} must not verify`).toBe(false);
          invalidRejected++;
        }
      }
    }
    expect(applicable).toBeGreaterThan(200);
    expect(validVerified).toBeGreaterThan(100);
    expect(invalidRejected).toBeGreaterThan(10);
  });
});

/** DER-encode a signature from two 32-byte big-endian components, minimally. */
function derOf(r: Uint8Array, s: Uint8Array): Buffer {
  return derRaw(minimalInteger(r), minimalInteger(s));
}

function minimalInteger(value: Uint8Array): Buffer {
  let i = 0;
  while (i < value.length - 1 && value[i] === 0) i++;
  const trimmed = Buffer.from(value.subarray(i));
  return (trimmed[0] ?? 0) & 0x80 ? Buffer.concat([Buffer.from([0]), trimmed]) : trimmed;
}

/** DER SEQUENCE of two INTEGERs with the given content bytes, as is. */
function derRaw(r: Uint8Array, s: Uint8Array): Buffer {
  const body = Buffer.concat([Buffer.from([0x02, r.length]), r, Buffer.from([0x02, s.length]), s]);
  return Buffer.concat([Buffer.from([0x30, body.length]), body]);
}
