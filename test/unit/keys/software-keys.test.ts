import { constants, createPublicKey, verify as nodeVerify, publicEncrypt, randomBytes } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  createKeystore,
  generateKey,
  type Keystore,
  publicJwk,
} from '../../../lib/adapters/local/keystore.js';
import { type KeyServiceOperation, SoftwareKeyService } from '../../../lib/adapters/local/software-keys.js';
import { TransientError } from '../../../lib/errors.js';
import { loadVectors } from '../envelope/helpers.js';

let keystore: Keystore;
let keys: SoftwareKeyService;

beforeAll(async () => {
  keystore = createKeystore(
    await Promise.all([
      generateKey('recipient-decrypt', 'RSA-OAEP-256', 'rx1-enc-1', 'RX1', { modulusLength: 2048 }),
      generateKey('response-sign', 'ES256', 'gw-resp-1', 'GW001'),
      generateKey('sender-sign', 'ES256', 'x26-sig-1', 'X26'),
    ]),
  );
  keys = new SoftwareKeyService(keystore);
});

async function recipientPublicKey() {
  return createPublicKey({
    key: Buffer.from(await keys.publicKeySpki('rx1-enc-1')),
    format: 'der',
    type: 'spki',
  });
}

function oaepWrap(
  key: ReturnType<typeof createPublicKey>,
  cek: Uint8Array,
  oaepHash: 'sha256' | 'sha1' = 'sha256',
) {
  return publicEncrypt({ key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash }, cek);
}

describe('SoftwareKeyService.unwrapKey (RSAES_OAEP_SHA_256)', () => {
  it('unwraps a CEK wrapped to the published key', async () => {
    const cek = randomBytes(32);
    const result = await keys.unwrapKey('rx1-enc-1', oaepWrap(await recipientPublicKey(), cek));
    expect(result.ok && Buffer.from(result.cek).equals(cek)).toBe(true);
  });

  it('reports failures as { ok: false } with no reason', async () => {
    const pub = await recipientPublicKey();
    const wrapped = oaepWrap(pub, randomBytes(32));
    const tampered = Buffer.from(wrapped);
    tampered[10] = (tampered[10] ?? 0) ^ 1;
    expect(await keys.unwrapKey('rx1-enc-1', tampered)).toEqual({ ok: false });
    expect(await keys.unwrapKey('rx1-enc-1', new Uint8Array(0))).toEqual({ ok: false });
    expect(await keys.unwrapKey('rx1-enc-1', randomBytes(256))).toEqual({ ok: false });
    // SHA-1 OAEP is another scheme: the hash is fixed by the key, never negotiated.
    expect(await keys.unwrapKey('rx1-enc-1', oaepWrap(pub, randomBytes(32), 'sha1'))).toEqual({ ok: false });
  });

  it('reports an unknown kid, or a key of another purpose, as { ok: false }', async () => {
    const wrapped = oaepWrap(await recipientPublicKey(), randomBytes(32));
    expect(await keys.unwrapKey('rx1-enc-9', wrapped)).toEqual({ ok: false });
    expect(await keys.unwrapKey('gw-resp-1', wrapped)).toEqual({ ok: false });
  });
});

describe('SoftwareKeyService.signEs256', () => {
  it('returns a 64-byte r‖s signature that verifies with the published key', async () => {
    const input = Buffer.from('eyJhbGciOiJFUzI1NiJ9.cGF5bG9hZA', 'ascii');
    const signature = await keys.signEs256('gw-resp-1', input);
    expect(signature).toHaveLength(64);
    const spki = await keys.publicKeySpki('gw-resp-1');
    const key = createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' });
    expect(nodeVerify('sha256', input, { key, dsaEncoding: 'ieee-p1363' }, signature)).toBe(true);
  });

  it('signs only with response-signing keys', async () => {
    await expect(keys.signEs256('x26-sig-1', Buffer.from('x'))).rejects.toThrow();
    await expect(keys.signEs256('rx1-enc-1', Buffer.from('x'))).rejects.toThrow();
    await expect(keys.signEs256('nope', Buffer.from('x'))).rejects.toThrow();
  });
});

describe('SoftwareKeyService.publicKeySpki', () => {
  it('returns SPKI DER that matches the keystore public JWK', async () => {
    for (const entry of keystore.keys) {
      const fromSpki = createPublicKey({
        key: Buffer.from(await keys.publicKeySpki(entry.kid)),
        format: 'der',
        type: 'spki',
      });
      const fromJwk = createPublicKey({ key: publicJwk(entry) as never, format: 'jwk' });
      expect(fromSpki.equals(fromJwk)).toBe(true);
    }
    await expect(keys.publicKeySpki('nope')).rejects.toThrow();
  });
});

describe('SoftwareKeyService fault injection', () => {
  it('calls the hook before every operation and lets it throw (KMS throttling stand-in)', async () => {
    const seen: Array<[KeyServiceOperation, string]> = [];
    const throttled = new TransientError('KEY_SERVICE_UNAVAILABLE', 'throttled');
    let fail = false;
    const faulty = new SoftwareKeyService(keystore, {
      beforeCall: (op, kid) => {
        seen.push([op, kid]);
        if (fail) throw throttled;
      },
    });
    await faulty.publicKeySpki('gw-resp-1');
    await faulty.signEs256('gw-resp-1', Buffer.from('x'));
    await faulty.unwrapKey('rx1-enc-1', Buffer.from('x'));
    expect(seen).toEqual([
      ['publicKeySpki', 'gw-resp-1'],
      ['signEs256', 'gw-resp-1'],
      ['unwrapKey', 'rx1-enc-1'],
    ]);
    fail = true;
    await expect(faulty.unwrapKey('rx1-enc-1', Buffer.from('x'))).rejects.toBe(throttled);
    await expect(faulty.signEs256('gw-resp-1', Buffer.from('x'))).rejects.toBe(throttled);
  });
});

// ---------------------------------------------------------------------------------------------
// Wycheproof RSA-OAEP (SHA-256, MGF1-SHA-256) through the local KMS stand-in.

interface OaepVectors {
  testGroups: Array<{
    privateKeyJwk: Record<string, unknown>;
    tests: Array<{ tcId: number; msg: string; ct: string; label: string; result: string; comment: string }>;
  }>;
}

for (const size of [2048, 4096]) {
  const file = `wycheproof/testvectors_v1/rsa_oaep_${size}_sha256_mgf1sha256_test.json`;
  const vectors = loadVectors<OaepVectors>(file, `Wycheproof RSA-OAEP-${size} SHA-256 unwrap`);
  describe.skipIf(!vectors)(`Wycheproof rsa_oaep_${size}_sha256_mgf1sha256 through unwrapKey`, () => {
    it('unwraps every valid vector without a label and accepts no invalid one', async () => {
      let valid = 0;
      let invalid = 0;
      let labelled = 0;
      for (const group of vectors?.testGroups ?? []) {
        const service = new SoftwareKeyService(
          createKeystore([
            {
              kid: `wycheproof-${size}`,
              purpose: 'recipient-decrypt',
              owner: 'wycheproof',
              alg: 'RSA-OAEP-256',
              privateJwk: group.privateKeyJwk as never,
            },
          ]),
        );
        for (const t of group.tests) {
          const result = await service.unwrapKey(`wycheproof-${size}`, Buffer.from(t.ct, 'hex'));
          if (t.label !== '') {
            // JWE (RFC 7518 §4.3) uses OAEP with an empty label: labelled vectors do not apply.
            // They must still not decrypt to their message under the empty label.
            labelled++;
            expect(
              result.ok && Buffer.from(result.cek).equals(Buffer.from(t.msg, 'hex')),
              `tcId ${t.tcId}`,
            ).toBe(false);
            continue;
          }
          if (t.result === 'valid') {
            valid++;
            expect(result.ok && Buffer.from(result.cek).toString('hex'), `valid tcId ${t.tcId}`).toBe(t.msg);
          } else if (t.result === 'invalid') {
            invalid++;
            expect(result, `invalid tcId ${t.tcId} (${t.comment})`).toEqual({ ok: false });
          }
        }
      }
      expect(valid).toBeGreaterThan(0);
      expect(invalid).toBeGreaterThan(0);
      expect(valid + invalid + labelled).toBeGreaterThan(30);
    });
  });
}
