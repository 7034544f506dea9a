/**
 * JWE `ECDH-ES+A256KW` on P-256 (RFC 7518 §4.6): real round trips with `jose` as the sender, and
 * every hostile variant ending in the one uniform DECRYPT_FAILED (RFC 7516 §11.5).
 */
import { generateKeyPairSync, type KeyObject, randomBytes } from 'node:crypto';
import { CompactEncrypt, compactDecrypt, type JWK } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  createKeystore,
  generateKey,
  type KeystoreEntry,
  publicJwk,
} from '../../../lib/adapters/local/keystore.js';
import { SoftwareKeyService } from '../../../lib/adapters/local/software-keys.js';
import { decryptSealed, parseSealed } from '../../../lib/envelope/jwe.js';
import { encryptSigned, recipientAlg } from '../../../lib/envelope/seal.js';
import { DecryptionError, EnvelopeError, TransientError } from '../../../lib/errors.js';
import type { EcPublicJwk, KeyService } from '../../../lib/ports/index.js';
import { b64u, expectCode, flipBit, headerOf, ROUTING, replaceSegment } from './helpers.js';

const PLAINTEXT = Buffer.from('eyJhbGciOiJFUzI1NiJ9.cGF5bG9hZA.c2ln', 'ascii');
const limits = { maxSealedBytes: 64 * 1024 };

let ecEntry: KeystoreEntry;
let rsaEntry: KeystoreEntry;
let ecPublic: JWK;
let rsaPublic: JWK;
let keys: SoftwareKeyService;
let sealed: string;

beforeAll(async () => {
  [ecEntry, rsaEntry] = await Promise.all([
    generateKey('recipient-decrypt', 'ECDH-ES+A256KW', 'rx1-ec-1', 'RX1'),
    generateKey('recipient-decrypt', 'RSA-OAEP-256', 'rx1-rsa-1', 'RX1', { modulusLength: 2048 }),
  ]);
  ecPublic = publicJwk(ecEntry);
  rsaPublic = publicJwk(rsaEntry);
  keys = new SoftwareKeyService(createKeystore([ecEntry, rsaEntry]));
  sealed = await encryptSigned({
    plaintext: PLAINTEXT,
    routing: ROUTING,
    recipient: { key: ecPublic, kid: 'rx1-ec-1' },
  });
});

/** Seal with `jose` directly, choosing the header (a sender that is not our `seal`). */
function joseSeal(
  header: Record<string, unknown>,
  key: JWK,
  apu?: Uint8Array,
  apv?: Uint8Array,
): Promise<string> {
  const encrypt = new CompactEncrypt(PLAINTEXT).setProtectedHeader({
    alg: 'ECDH-ES+A256KW',
    enc: 'A256GCM',
    kid: 'rx1-ec-1',
    cty: 'JOSE',
    itk: ROUTING,
    ...header,
  });
  if (apu || apv) encrypt.setKeyManagementParameters({ ...(apu ? { apu } : {}), ...(apv ? { apv } : {}) });
  return encrypt.encrypt(key as Parameters<typeof encrypt.encrypt>[0]);
}

/** A key service that records the `epk`s it is asked to agree with. */
function recordingKeys(): { service: KeyService; seen: EcPublicJwk[] } {
  const seen: EcPublicJwk[] = [];
  const service: KeyService = {
    unwrapKey: (kid, encryptedKey) => keys.unwrapKey(kid, encryptedKey),
    deriveSharedSecret: (kid, epk) => {
      seen.push(epk);
      return keys.deriveSharedSecret(kid, epk);
    },
    signEs256: () => Promise.reject(new Error('unused')),
    publicKeySpki: (kid) => keys.publicKeySpki(kid),
  };
  return { service, seen };
}

const decryptFails = (input: string, service: KeyService = keys) =>
  expectCode(decryptSealed(parseSealed(input, limits), service), DecryptionError, 'DECRYPT_FAILED');

function withEpk(epk: unknown): string {
  const header = headerOf(sealed);
  if (epk === undefined) delete header.epk;
  else header.epk = epk;
  return replaceSegment(sealed, 0, b64u(JSON.stringify(header)));
}

function p384Point(): { x: string; y: string } {
  const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-384' });
  const jwk = publicKey.export({ format: 'jwk' });
  return { x: jwk.x as string, y: jwk.y as string };
}

describe('ECDH-ES+A256KW: round trips', () => {
  it('seal picks ECDH-ES+A256KW from the EC recipient key and the decrypt path opens it', async () => {
    const header = headerOf(sealed);
    expect(header.alg).toBe('ECDH-ES+A256KW');
    expect(header.epk).toMatchObject({ kty: 'EC', crv: 'P-256' });
    const parsed = parseSealed(sealed, limits);
    expect(parsed.alg).toBe('ECDH-ES+A256KW');
    expect(parsed.encryptedKey).toHaveLength(40);
    expect(Buffer.from(await decryptSealed(parsed, keys))).toEqual(PLAINTEXT);
  });

  it('opens what jose seals with apu/apv (Concat KDF party info, RFC 7518 §4.6.2)', async () => {
    const apu = Buffer.from('GP0001');
    const apv = Buffer.from('RX1');
    const jwe = await joseSeal({}, ecPublic, apu, apv);
    expect(headerOf(jwe)).toMatchObject({ apu: b64u(apu), apv: b64u(apv) });
    expect(Buffer.from(await decryptSealed(parseSealed(jwe, limits), keys))).toEqual(PLAINTEXT);
  });

  it('what our seal produces, jose opens with the private key (the wire format is standard)', async () => {
    const { plaintext } = await compactDecrypt(sealed, ecEntry.privateJwk as JWK);
    expect(Buffer.from(plaintext)).toEqual(PLAINTEXT);
  });

  it('keeps RSA-OAEP-256 for RSA recipients', async () => {
    const jwe = await encryptSigned({
      plaintext: PLAINTEXT,
      routing: ROUTING,
      recipient: { key: rsaPublic, kid: 'rx1-rsa-1' },
    });
    expect(headerOf(jwe).alg).toBe('RSA-OAEP-256');
    expect(headerOf(jwe).epk).toBeUndefined();
    expect(Buffer.from(await decryptSealed(parseSealed(jwe, limits), keys))).toEqual(PLAINTEXT);
  });

  it('recipientAlg follows the JWK alg, else the key type; other curves are refused', () => {
    const ecKeyObject: KeyObject = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey;
    expect(recipientAlg({ key: ecPublic, kid: 'k' })).toBe('ECDH-ES+A256KW');
    expect(recipientAlg({ key: { ...rsaPublic, alg: undefined }, kid: 'k' })).toBe('RSA-OAEP-256');
    expect(recipientAlg({ key: ecKeyObject, kid: 'k' })).toBe('ECDH-ES+A256KW');
    expect(() =>
      recipientAlg({ key: generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey, kid: 'k' }),
    ).toThrow(/RSA or EC P-256/);
    expect(() => recipientAlg({ key: { ...ecPublic, alg: 'ECDH-ES' }, kid: 'k' })).toThrow(/not a JWE alg/);
  });
});

describe('ECDH-ES+A256KW: header allow-list', () => {
  const notAllowed = (input: string) =>
    expectCode(() => parseSealed(input, limits), EnvelopeError, 'ENVELOPE_HEADER_NOT_ALLOWED');
  const withHeader = (changes: Record<string, unknown>) =>
    replaceSegment(sealed, 0, b64u(JSON.stringify({ ...headerOf(sealed), ...changes })));

  it('refuses the other ECDH-ES variants and key-agreement members with RSA-OAEP-256', async () => {
    for (const alg of ['ECDH-ES', 'ECDH-ES+A128KW', 'ECDH-ES+A192KW']) await notAllowed(withHeader({ alg }));
    await notAllowed(withHeader({ alg: 'RSA-OAEP-256' })); // epk with RSA
    const rsaSealed = await encryptSigned({
      plaintext: PLAINTEXT,
      routing: ROUTING,
      recipient: { key: rsaPublic, kid: 'rx1-rsa-1' },
    });
    for (const extra of [{ apu: 'QQ' }, { apv: 'QQ' }]) {
      await notAllowed(
        replaceSegment(rsaSealed, 0, b64u(JSON.stringify({ ...headerOf(rsaSealed), ...extra }))),
      );
    }
  });

  it('still refuses every other key-carrying or unknown member alongside epk', async () => {
    for (const extra of [{ jwk: ecPublic }, { p2s: 'AAAA' }, { zip: 'DEF' }, { 'x-other': 1 }]) {
      await notAllowed(withHeader(extra));
    }
  });

  it('refuses apu/apv that are not canonical base64url strings or are too long', async () => {
    for (const bad of [{ apu: 1 }, { apv: 'a+b' }, { apu: 'QR' }, { apu: b64u(randomBytes(257)) }]) {
      await expectCode(() => parseSealed(withHeader(bad), limits), EnvelopeError, 'ENVELOPE_MALFORMED');
    }
  });
});

describe('ECDH-ES+A256KW: every failure is the uniform DECRYPT_FAILED', () => {
  it('epk missing, on another curve, off the curve, or with extra members: no key agreement is attempted', async () => {
    const good = headerOf(sealed).epk as Record<string, string>;
    const offCurve = { ...good, y: b64u(Buffer.alloc(32, 7)) };
    for (const epk of [
      undefined,
      'not an object',
      { ...good, crv: 'P-384', ...p384Point() },
      offCurve,
      { ...good, d: good.x },
      { ...good, kty: 'OKP', crv: 'X25519' },
      { ...good, x: `${good.x}A` },
    ]) {
      const { service, seen } = recordingKeys();
      await decryptFails(withEpk(epk), service);
      expect(seen).toEqual([]);
    }
  });

  it('a valid point of the wrong key reaches the key service and still fails only at the end', async () => {
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const other = publicKey.export({ format: 'jwk' });
    const { service, seen } = recordingKeys();
    await decryptFails(withEpk({ kty: 'EC', crv: 'P-256', x: other.x, y: other.y }), service);
    expect(seen).toHaveLength(1);
  });

  it('tampered or wrong-length encrypted_key', async () => {
    await decryptFails(flipBit(sealed, 1));
    await decryptFails(replaceSegment(sealed, 1, b64u(randomBytes(48))));
  });

  it('an RSA kid with the ECDH alg, and an EC kid with RSA-OAEP-256', async () => {
    // Sealed correctly for each key type, but naming the other kid: the header is intact.
    await decryptFails(
      await encryptSigned({
        plaintext: PLAINTEXT,
        routing: ROUTING,
        recipient: { key: ecPublic, kid: 'rx1-rsa-1' },
      }),
    );
    await decryptFails(
      await encryptSigned({
        plaintext: PLAINTEXT,
        routing: ROUTING,
        recipient: { key: rsaPublic, kid: 'rx1-ec-1' },
      }),
    );
  });

  it('a key service error is the same failure; unavailability is rethrown for a retry', async () => {
    const failing = (error: Error): KeyService => ({
      unwrapKey: () => Promise.reject(error),
      deriveSharedSecret: () => Promise.reject(error),
      signEs256: () => Promise.reject(error),
      publicKeySpki: () => Promise.reject(error),
    });
    await decryptFails(sealed, failing(new Error('boom')));
    const transient = new TransientError('KEY_SERVICE_UNAVAILABLE', 'throttled');
    await expect(decryptSealed(parseSealed(sealed, limits), failing(transient))).rejects.toBe(transient);
  });
});

describe('SoftwareKeyService.deriveSharedSecret', () => {
  it('derives only with ECDH-ES+A256KW recipient keys, returning the 32-byte Z', async () => {
    const epk = headerOf(sealed).epk as EcPublicJwk;
    const result = await keys.deriveSharedSecret('rx1-ec-1', epk);
    expect(result.ok && result.sharedSecret.length).toBe(32);
    expect(await keys.deriveSharedSecret('rx1-rsa-1', epk)).toEqual({ ok: false });
    expect(await keys.deriveSharedSecret('nobody', epk)).toEqual({ ok: false });
    expect(await keys.unwrapKey('rx1-ec-1', parseSealed(sealed, limits).encryptedKey)).toEqual({ ok: false });
  });
});
