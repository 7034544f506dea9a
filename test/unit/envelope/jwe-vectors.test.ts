/**
 * Published JWE vectors through our decrypt path (SECURITY-CORPUS.md §4 "Tests", §6).
 *
 * Two layers are run for every vector:
 * - **contract**: `parseSealed` + `decryptSealed`, i.e. what the pipeline really accepts. No
 *   published vector carries our `kid`/`cty`/`itk` headers, so valid vectors are refused here;
 *   each refusal is listed in an errata map with its reason.
 * - **crypto**: `decryptSealed` on the raw segments (header allow-list bypassed), proving the
 *   hand-written RSA-OAEP-256 unwrap + AES-256-GCM path agrees with the vectors.
 * No invalid vector may be accepted by either layer. A valid vector rejected without an errata
 * entry, or an errata entry for a vector that is now accepted, fails the suite loudly.
 */
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createKeystore, type KeystoreEntry } from '../../../lib/adapters/local/keystore.js';
import { SoftwareKeyService } from '../../../lib/adapters/local/software-keys.js';
import { decryptSealed, parseSealed, type SealedParts } from '../../../lib/envelope/jwe.js';
import { encryptSigned } from '../../../lib/envelope/seal.js';
import { DecryptionError, EnvelopeError } from '../../../lib/errors.js';
import type { KeyService } from '../../../lib/ports/index.js';
import { expectCode, loadVectors, OaepTestKeyService, ROUTING, rawSealedParts } from './helpers.js';

const limits = { maxSealedBytes: 1024 * 1024 };

// ---------------------------------------------------------------------------------------------
// RFC 7520 §5.2 — RSA-OAEP (SHA-1) + A256GCM, RSA-4096.

interface Rfc7520Jwe {
  input: { plaintext: string; key: Record<string, unknown> & { kid: string }; alg: string; enc: string };
  generated: { cek: string; iv: string };
  output: { compact: string };
}

const rfc7520 = loadVectors<Rfc7520Jwe>(
  'rfc7520/jwe/5_2.key_encryption_using_rsa-oaep_with_aes-gcm.json',
  'RFC 7520 §5.2 RSA-OAEP + A256GCM',
);

describe.skipIf(!rfc7520)('RFC 7520 §5.2 (RSA-OAEP + A256GCM)', () => {
  const vector = rfc7520 as Rfc7520Jwe;
  const privateKey = () => createPrivateKey({ key: vector.input.key as never, format: 'jwk' });

  it('is refused by the contract parser: alg RSA-OAEP (SHA-1) is not RSA-OAEP-256', async () => {
    await expectCode(
      () => parseSealed(vector.output.compact, limits),
      EnvelopeError,
      'ENVELOPE_HEADER_NOT_ALLOWED',
    );
  });

  it('decrypts to the published plaintext through decryptSealed with a SHA-1 OAEP test key service', async () => {
    const keys = new OaepTestKeyService(privateKey(), 'sha1');
    const parts = rawSealedParts(vector.output.compact, vector.input.key.kid);
    const unwrapped = await keys.unwrapKey(parts.kid, parts.encryptedKey);
    expect(unwrapped.ok && Buffer.from(unwrapped.cek).toString('base64url')).toBe(vector.generated.cek);
    const plaintext = await decryptSealed(parts, keys);
    expect(Buffer.from(plaintext).toString('utf8')).toBe(vector.input.plaintext);
  });

  it('fails uniformly with a SHA-256 OAEP key service (the hash is pinned, never negotiated)', async () => {
    const keys = new OaepTestKeyService(privateKey(), 'sha256');
    const parts = rawSealedParts(vector.output.compact, vector.input.key.kid);
    await expectCode(decryptSealed(parts, keys), DecryptionError, 'DECRYPT_FAILED');
  });

  it('fails uniformly when any byte of the vector is altered', async () => {
    const keys = new OaepTestKeyService(privateKey(), 'sha1');
    const parts = rawSealedParts(vector.output.compact, vector.input.key.kid);
    const flip = (bytes: Uint8Array, at: number) => {
      const copy = Buffer.from(bytes);
      copy[at] = (copy[at] ?? 0) ^ 0x80;
      return copy;
    };
    const variants: SealedParts[] = [
      { ...parts, ciphertext: flip(parts.ciphertext, 0) },
      { ...parts, tag: flip(parts.tag, 15) },
      { ...parts, iv: flip(parts.iv, 0) },
      { ...parts, encryptedKey: flip(parts.encryptedKey, 100) },
      { ...parts, encodedProtectedHeader: `${parts.encodedProtectedHeader.slice(0, -1)}A` },
    ];
    for (const variant of variants)
      await expectCode(decryptSealed(variant, keys), DecryptionError, 'DECRYPT_FAILED');
  });
});

// ---------------------------------------------------------------------------------------------
// Wycheproof json_web_encryption_test.json — every group keyed with an RSA-OAEP-256 key.

interface WycheproofJweTest {
  tcId: number;
  comment: string;
  enc?: string;
  jwe: string | Record<string, unknown>;
  pt?: string;
  result: 'valid' | 'invalid' | 'acceptable';
  flags: string[];
}
interface WycheproofJweFile {
  testGroups: Array<{
    comment: string;
    private: Record<string, unknown> & { alg?: string; kid?: string };
    public?: Record<string, unknown>;
    tests: WycheproofJweTest[];
  }>;
}

const wycheproof = loadVectors<WycheproofJweFile>(
  'wycheproof/testvectors_v1/json_web_encryption_test.json',
  'Wycheproof JWE RSA-OAEP-256 groups',
);

const NO_CONTRACT_HEADERS =
  'no kid/cty "JOSE"/itk header: the contract allow-list refuses it (crypto layer accepts it)';
const NOT_A256GCM = 'enc is not A256GCM: refused by the contract allow-list';

/** Valid vectors the contract layer refuses, with the reason. Every entry is checked. */
const CONTRACT_ERRATA: ReadonlyMap<number, string> = new Map([
  [88, NOT_A256GCM], // A128GCM
  [89, NOT_A256GCM], // A192GCM
  [90, NO_CONTRACT_HEADERS], // A256GCM, but no kid / cty / itk
  [91, NOT_A256GCM], // A128CBC-HS256
  [92, NOT_A256GCM], // A192CBC-HS384
  [93, NOT_A256GCM], // A256CBC-HS512
  [121, NOT_A256GCM], // jwe_rsa_oaep_modified "valid": A128GCM
]);

const CEK_NOT_32 =
  'enc is not A256GCM, so the unwrapped CEK is not 32 bytes: decryptSealed substitutes a random CEK and fails at the tag, by design';

/** Valid vectors the crypto layer (A256GCM only) refuses, with the reason. */
const CRYPTO_ERRATA: ReadonlyMap<number, string> = new Map([
  [88, CEK_NOT_32],
  [89, CEK_NOT_32],
  [91, CEK_NOT_32],
  [92, CEK_NOT_32],
  [93, CEK_NOT_32],
  [121, CEK_NOT_32],
]);

function keyServiceFor(privateJwk: Record<string, unknown> & { kid?: string }): {
  keys: KeyService;
  kid: string;
} {
  const kid = privateJwk.kid ?? 'wycheproof';
  const entry = {
    kid,
    purpose: 'recipient-decrypt',
    owner: 'wycheproof',
    alg: 'RSA-OAEP-256',
    privateJwk,
  } as unknown as KeystoreEntry;
  // The real local key service (the KMS stand-in), loaded with the group's key.
  return { keys: new SoftwareKeyService(createKeystore([entry])), kid };
}

type Outcome = { accepted: true; plaintext: Buffer } | { accepted: false; code: string };

async function outcome(run: () => Promise<Uint8Array>): Promise<Outcome> {
  try {
    return { accepted: true, plaintext: Buffer.from(await run()) };
  } catch (error) {
    return { accepted: false, code: (error as { code?: string }).code ?? String(error) };
  }
}

const oaep256Groups = (wycheproof?.testGroups ?? []).filter((g) => g.private.alg === 'RSA-OAEP-256');

describe.skipIf(!wycheproof)(
  'Wycheproof JWE — RSA-OAEP-256 groups through parseSealed + decryptSealed',
  () => {
    it('covers the RSA-OAEP-256 groups', () => {
      expect(oaep256Groups.map((g) => g.comment).sort()).toEqual([
        'jwe_rsa_oaep_256',
        'jwe_rsa_oaep_256',
        'jwe_rsa_oaep_modified',
      ]);
    });

    for (const group of oaep256Groups) {
      for (const t of group.tests) {
        it(`tcId ${t.tcId} ${t.comment} (${t.result}, enc ${t.enc ?? '?'})`, async () => {
          const { keys, kid } = keyServiceFor(group.private);
          const compact = typeof t.jwe === 'string' ? t.jwe : JSON.stringify(t.jwe);
          const expected = t.pt === undefined ? undefined : Buffer.from(t.pt, 'hex');

          const contract = await outcome(async () => decryptSealed(parseSealed(compact, limits), keys));
          const crypto =
            typeof t.jwe === 'string'
              ? await outcome(() => decryptSealed(rawSealedParts(compact, kid), keys))
              : contract;

          if (t.result === 'invalid') {
            expect(contract.accepted, 'contract layer accepted an invalid vector').toBe(false);
            expect(crypto.accepted, 'crypto layer accepted an invalid vector').toBe(false);
            return;
          }
          // valid (there are no "acceptable" vectors in these groups)
          checkValid('contract', contract, CONTRACT_ERRATA.get(t.tcId), expected);
          checkValid('crypto', crypto, CRYPTO_ERRATA.get(t.tcId), expected);
        });
      }
    }

    it('round-trips our own envelope to the group public key, decrypting through the key service', async () => {
      const group = oaep256Groups[0];
      if (!group) throw new Error('no RSA-OAEP-256 group');
      const { keys, kid } = keyServiceFor(group.private);
      // Encrypt to the SPKI the key service publishes, as a sender would from our JWKS / GetPublicKey.
      const spki = await keys.publicKeySpki(kid);
      const sealed = await encryptSigned({
        plaintext: 'a.b.c',
        routing: ROUTING,
        recipient: { key: createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' }), kid },
      });
      const plaintext = await decryptSealed(parseSealed(sealed, limits), keys);
      expect(Buffer.from(plaintext).toString()).toBe('a.b.c');
    });
  },
);

function checkValid(
  layer: string,
  result: Outcome,
  erratum: string | undefined,
  expected: Buffer | undefined,
): void {
  if (erratum) {
    // Keeps the map honest: an entry for a vector we now accept must be removed.
    expect(result.accepted, `${layer} errata entry is stale: the vector is now accepted`).toBe(false);
    return;
  }
  expect(result, `${layer} layer rejected a valid vector with no errata entry`).toMatchObject({
    accepted: true,
  });
  if (result.accepted && expected) expect(result.plaintext.equals(expected)).toBe(true);
}
