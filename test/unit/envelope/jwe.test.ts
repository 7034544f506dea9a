import { publicEncrypt, constants as rsa } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { createKeystore } from '../../../lib/adapters/local/keystore.js';
import { SoftwareKeyService } from '../../../lib/adapters/local/software-keys.js';
import { decryptSealed, parseSealed } from '../../../lib/envelope/jwe.js';
import { encryptSigned } from '../../../lib/envelope/seal.js';
import { DecryptionError, EnvelopeError, TransientError } from '../../../lib/errors.js';
import type { KeyService } from '../../../lib/ports/index.js';
import {
  b64u,
  expectCode,
  flipBit,
  headerOf,
  makeWorld,
  ROUTING,
  replaceSegment,
  type TestWorld,
} from './helpers.js';

let world: TestWorld;
let keys: SoftwareKeyService;
let sealed: string;
const PLAINTEXT = Buffer.from('eyJhbGciOiJQUzI1NiJ9.cGF5bG9hZA.c2ln', 'ascii');
const limits = { maxSealedBytes: 64 * 1024 };

beforeAll(async () => {
  world = await makeWorld();
  keys = new SoftwareKeyService(createKeystore([world.recipient.entry, world.response.entry]));
  sealed = await encryptSigned({
    plaintext: PLAINTEXT,
    routing: ROUTING,
    recipient: { key: world.recipient.publicKey, kid: world.recipient.kid },
  });
});

/** The sealed message with its protected header replaced (tag no longer matches; parse comes first). */
function withHeader(header: Record<string, unknown>): string {
  return replaceSegment(sealed, 0, b64u(JSON.stringify(header)));
}
const goodHeader = () => headerOf(sealed);

const malformed = (input: string) =>
  expectCode(() => parseSealed(input, limits), EnvelopeError, 'ENVELOPE_MALFORMED');
const notAllowed = (input: string) =>
  expectCode(() => parseSealed(input, limits), EnvelopeError, 'ENVELOPE_HEADER_NOT_ALLOWED');
const decryptFails = (input: string, service: KeyService = keys) =>
  expectCode(decryptSealed(parseSealed(input, limits), service), DecryptionError, 'DECRYPT_FAILED');

describe('parseSealed — header allow-list', () => {
  it('parses a contract envelope', () => {
    const parsed = parseSealed(sealed, limits);
    expect(parsed.header).toEqual({
      alg: 'RSA-OAEP-256',
      enc: 'A256GCM',
      kid: 'rx1-enc-1',
      cty: 'JOSE',
      itk: ROUTING,
    });
    expect(parsed.iv).toHaveLength(12);
    expect(parsed.tag).toHaveLength(16);
    expect(parsed.encryptedKey).toHaveLength(256);
    expect(parsed.encodedProtectedHeader).toBe(sealed.split('.')[0]);
  });

  it('rejects zip (A21), crit (A7), key-carrying and PBES2/ECDH parameters', async () => {
    for (const extra of [
      { zip: 'DEF' },
      { crit: ['urn:x'] },
      { crit: [] },
      { jwk: { kty: 'RSA', n: 'AQAB', e: 'AQAB' } },
      { jku: 'https://attacker.example/jwks' },
      { x5u: 'https://attacker.example/cert' },
      { x5c: ['MIIB'] },
      { epk: { kty: 'EC', crv: 'P-256', x: 'AA', y: 'AA' } },
      { p2s: 'AAAA', p2c: 2_147_483_647 },
      { p2c: 10 },
      { 'x-unknown': 1 },
    ]) {
      await notAllowed(withHeader({ ...goodHeader(), ...extra }));
    }
  });

  it('rejects enc A128GCM or A256CBC-HS512, alg RSA-OAEP, RSA1_5, dir, ECDH-ES (A24)', async () => {
    await notAllowed(withHeader({ ...goodHeader(), enc: 'A128GCM' }));
    await notAllowed(withHeader({ ...goodHeader(), enc: 'A256CBC-HS512' }));
    await notAllowed(withHeader({ ...goodHeader(), alg: 'RSA-OAEP' }));
    await notAllowed(withHeader({ ...goodHeader(), alg: 'RSA1_5' }));
    await notAllowed(withHeader({ ...goodHeader(), alg: 'dir' }));
    await notAllowed(withHeader({ ...goodHeader(), alg: 'ECDH-ES' }));
    await notAllowed(withHeader({ ...goodHeader(), alg: 'rsa-oaep-256' }));
    await malformed(withHeader({ ...goodHeader(), alg: undefined }));
    await malformed(withHeader({ ...goodHeader(), enc: ['A256GCM'] }));
  });

  it('accepts cty JOSE with the application/ prefix, as written or as registered (RFC 7515 §4.1.10, §9.2.1)', () => {
    for (const cty of ['application/JOSE', 'application/jose']) {
      expect(parseSealed(withHeader({ ...goodHeader(), cty }), limits).header.cty).toBe(cty);
    }
  });

  it('requires cty JOSE, a valid kid and a valid itk routing header', async () => {
    await notAllowed(withHeader({ ...goodHeader(), cty: 'Application/jose' }));
    await notAllowed(withHeader({ ...goodHeader(), cty: 'application/jose; charset=utf-8' }));
    await notAllowed(withHeader({ ...goodHeader(), cty: 'jose' }));
    await notAllowed(withHeader({ ...goodHeader(), cty: undefined }));
    await malformed(withHeader({ ...goodHeader(), kid: undefined }));
    await malformed(withHeader({ ...goodHeader(), kid: '../../keys/rx1' }));
    await malformed(withHeader({ ...goodHeader(), itk: undefined }));
    await malformed(withHeader({ ...goodHeader(), itk: { ...ROUTING, extra: 'x' } }));
    await malformed(withHeader({ ...goodHeader(), itk: { ...ROUTING, from: '' } }));
    await malformed(withHeader({ ...goodHeader(), itk: 'GP0001>RX1' }));
  });

  it('rejects duplicate header members (A9)', async () => {
    const h = JSON.stringify(goodHeader());
    await malformed(replaceSegment(sealed, 0, b64u(`${h.slice(0, -1)},"enc":"A128GCM"}`)));
  });
});

describe('parseSealed — structure and size', () => {
  it('rejects an IV that is not 96 bits and a tag that is not 128 bits (A23)', async () => {
    await malformed(replaceSegment(sealed, 2, b64u(new Uint8Array(16))));
    await malformed(replaceSegment(sealed, 2, b64u(new Uint8Array(8))));
    await malformed(replaceSegment(sealed, 2, ''));
    const tag = Buffer.from(sealed.split('.')[4] ?? '', 'base64url');
    for (const length of [12, 8, 4, 1, 0])
      await malformed(replaceSegment(sealed, 4, b64u(tag.subarray(0, length))));
    await malformed(replaceSegment(sealed, 4, b64u(Buffer.concat([tag, Buffer.from([0])]))));
  });

  it('rejects an empty or impossibly long encrypted key', async () => {
    await malformed(replaceSegment(sealed, 1, ''));
    await malformed(replaceSegment(sealed, 1, b64u(new Uint8Array(1025))));
  });

  it('rejects wrong segment counts, JSON serialisation and non-canonical base64url (rules 1, 10; A10)', async () => {
    const parts = sealed.split('.');
    await malformed(parts.slice(0, 4).join('.'));
    await malformed(`${sealed}.`);
    await malformed(JSON.stringify({ protected: parts[0], encrypted_key: parts[1] }));
    await malformed(replaceSegment(sealed, 3, `${parts[3]}=`));
    await malformed(replaceSegment(sealed, 3, `${parts[3]?.slice(0, 4)} ${parts[3]?.slice(4)}`));
    await malformed(replaceSegment(sealed, 1, `${parts[1]?.slice(0, 4)}+/${parts[1]?.slice(6)}`));
  });

  it('rejects an oversize envelope with MESSAGE_TOO_LARGE before parsing', async () => {
    await expectCode(
      () => parseSealed(sealed, { maxSealedBytes: sealed.length - 1 }),
      EnvelopeError,
      'MESSAGE_TOO_LARGE',
    );
    await expectCode(() => parseSealed('{'.repeat(100_000), limits), EnvelopeError, 'MESSAGE_TOO_LARGE');
  });

  it('rejects a deeply nested header without recursion (A13)', async () => {
    const deep = `{"alg":"RSA-OAEP-256","x":${'['.repeat(1000)}${']'.repeat(1000)}}`;
    await malformed(replaceSegment(sealed, 0, b64u(deep)));
  });
});

describe('decryptSealed — one uniform error (A22, A23)', () => {
  it('decrypts the exact plaintext', async () => {
    const plaintext = await decryptSealed(parseSealed(sealed, limits), keys);
    expect(Buffer.from(plaintext).equals(PLAINTEXT)).toBe(true);
  });

  it('fails uniformly on tampered ciphertext, tag, IV, encrypted key and header', async () => {
    await decryptFails(flipBit(sealed, 3));
    await decryptFails(flipBit(sealed, 4));
    await decryptFails(flipBit(sealed, 4, 15));
    await decryptFails(flipBit(sealed, 2));
    await decryptFails(flipBit(sealed, 1));
    await decryptFails(flipBit(sealed, 1, 0));
    // A header that still passes the allow-list but differs: the AAD no longer matches.
    await decryptFails(withHeader({ ...goodHeader(), itk: { ...ROUTING, id: 'another-id' } }));
    // Same header, members reordered: different encoded bytes, different AAD.
    const { itk, ...rest } = goodHeader();
    await decryptFails(withHeader({ itk, ...rest }));
  });

  it('fails uniformly for a kid the key service does not hold, or that is not a recipient key', async () => {
    const parsed = parseSealed(sealed, limits);
    await expectCode(decryptSealed({ ...parsed, kid: 'rx1-enc-9' }, keys), DecryptionError, 'DECRYPT_FAILED');
    await expectCode(
      decryptSealed({ ...parsed, kid: world.response.kid }, keys),
      DecryptionError,
      'DECRYPT_FAILED',
    );
  });

  it('fails uniformly when the unwrapped CEK is not 32 bytes', async () => {
    const shortCek = Buffer.alloc(16, 7);
    const encryptedKey = publicEncrypt(
      { key: world.recipient.publicKey, padding: rsa.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' },
      shortCek,
    );
    await decryptFails(replaceSegment(sealed, 1, b64u(encryptedKey)));
  });

  it('gives the same error, message and no cause whatever failed', async () => {
    const unknownKid = { ...parseSealed(sealed, limits), kid: 'rx1-enc-9' };
    const errors = await Promise.all(
      [parseSealed(flipBit(sealed, 3), limits), parseSealed(flipBit(sealed, 1), limits), unknownKid].map(
        (parts) =>
          decryptSealed(parts, keys).then(
            () => undefined,
            (e: unknown) => e as DecryptionError,
          ),
      ),
    );
    for (const e of errors) {
      expect(e).toBeInstanceOf(DecryptionError);
      expect(e?.message).toBe('the sealed message could not be decrypted');
      expect(e?.cause).toBeUndefined();
    }
  });

  it('rethrows a TransientError from the key service unchanged (retried, never substituted)', async () => {
    const throttled = new TransientError('KEY_SERVICE_UNAVAILABLE', 'throttled');
    const flaky = new SoftwareKeyService(createKeystore([world.recipient.entry]), {
      beforeCall: () => {
        throw throttled;
      },
    });
    await expect(decryptSealed(parseSealed(sealed, limits), flaky)).rejects.toBe(throttled);
  });

  it('treats any other key-service exception as a failed unwrap', async () => {
    const broken = new SoftwareKeyService(createKeystore([world.recipient.entry]), {
      beforeCall: () => {
        throw new Error('AccessDeniedException');
      },
    });
    await decryptFails(sealed, broken);
  });

  it('re-checks IV and tag lengths when parts are built without parseSealed', async () => {
    const parsed = parseSealed(sealed, limits);
    await expectCode(
      decryptSealed({ ...parsed, tag: parsed.tag.subarray(0, 12) }, keys),
      DecryptionError,
      'DECRYPT_FAILED',
    );
    await expectCode(
      decryptSealed({ ...parsed, iv: new Uint8Array(16) }, keys),
      DecryptionError,
      'DECRYPT_FAILED',
    );
  });

  it('zeroes the CEK the key service returned once used', async () => {
    let returned: Uint8Array | undefined;
    const spying: KeyService = {
      deriveSharedSecret: (kid, epk) => keys.deriveSharedSecret(kid, epk),
      unwrapKey: async (kid, encryptedKey) => {
        const result = await keys.unwrapKey(kid, encryptedKey);
        if (result.ok) returned = result.cek;
        return result;
      },
      signEs256: (kid, input) => keys.signEs256(kid, input),
      publicKeySpki: (kid) => keys.publicKeySpki(kid),
    };
    await decryptSealed(parseSealed(sealed, limits), spying);
    expect(returned).toHaveLength(32);
    expect(returned?.every((b) => b === 0)).toBe(true);
  });
});
