/**
 * JWS signature verification with `node:crypto` (PERFORMANCE.md: `jose` `compactVerify` costs
 * 2–3.7× a direct verify, and its base64url decoding ≈ 10 ms per MiB). Only ever called after the
 * project's own guards (`parseCompact`: size, segment count, canonical base64url) and header
 * allow-lists (no `b64`, `crit`, key-carrying members; `alg` from the allow-list and equal to the
 * registered key's), so the signing input is exactly the received ASCII `header.payload`.
 */
import { constants, createPublicKey, type JsonWebKey, type KeyObject, verify } from 'node:crypto';
import type { PublicJwk } from '../config/schema.js';
import type { SigningAlg } from './contract.js';
import { sameKey } from './key-cache.js';

/** RSA keys below this are refused for signatures, as `jose` refuses them. */
const MIN_RSA_BITS = 2048;
/** An ES256 signature is `r‖s`, 32 bytes each (RFC 7518 §3.4). */
const ES256_SIGNATURE_BYTES = 64;

/** Why a key cannot verify a signature of `alg`: too short, or of the wrong type. */
export class SignatureKeyError extends TypeError {}

/**
 * True when `signature` is `alg`'s signature of `signingInput` under `key`. A key that does not fit
 * `alg` (type, curve, RSA size) throws {@link SignatureKeyError}; any malformed signature is false.
 */
export function verifyJwsSignature(
  alg: SigningAlg,
  key: KeyObject,
  signingInput: Uint8Array,
  signature: Uint8Array,
): boolean {
  checkKeyFits(alg, key);
  try {
    switch (alg) {
      case 'RS512':
        return verify('sha512', signingInput, { key, padding: constants.RSA_PKCS1_PADDING }, signature);
      case 'PS256':
        return verify(
          'sha256',
          signingInput,
          { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST },
          signature,
        );
      case 'ES256':
        if (signature.byteLength !== ES256_SIGNATURE_BYTES) return false;
        return verify('sha256', signingInput, { key, dsaEncoding: 'ieee-p1363' }, signature);
    }
  } catch {
    // OpenSSL rejects some malformed signatures (wrong length) by throwing rather than false.
    return false;
  }
}

function checkKeyFits(alg: SigningAlg, key: KeyObject): void {
  const details = key.asymmetricKeyDetails;
  if (alg === 'ES256') {
    if (key.asymmetricKeyType !== 'ec' || details?.namedCurve !== 'prime256v1') {
      throw new SignatureKeyError('ES256 needs a P-256 key');
    }
    return;
  }
  if (key.asymmetricKeyType !== 'rsa') throw new SignatureKeyError(`${alg} needs an RSA key`);
  if ((details?.modulusLength ?? 0) < MIN_RSA_BITS) {
    throw new SignatureKeyError(`${alg} needs an RSA key of at least ${MIN_RSA_BITS} bits`);
  }
}

/**
 * Imported public keys as `KeyObject`s per caller-chosen id (issuer + kid, sender ODS + kid),
 * imported once per process and re-imported when the configuration changes the key material.
 */
export class PublicKeyObjects {
  readonly #entries = new Map<string, { jwk: PublicJwk; key: KeyObject }>();

  get(id: string, jwk: PublicJwk): KeyObject {
    const cached = this.#entries.get(id);
    if (cached && sameKey(cached.jwk, jwk)) return cached.key;
    // Only the key members: `alg`, `kid` and `use` are ours to judge, not the importer's.
    const members =
      jwk.kty === 'RSA'
        ? { kty: 'RSA', n: jwk.n, e: jwk.e }
        : { kty: 'EC', crv: jwk.crv, x: jwk.x, y: jwk.y };
    const key = createPublicKey({ key: members as JsonWebKey, format: 'jwk' });
    this.#entries.set(id, { jwk, key });
    return key;
  }

  /** Number of cached keys (for tests and metrics). */
  get size(): number {
    return this.#entries.size;
  }
}

/** `header.payload` of a compact JWS (already guarded) as bytes: what its signature signs. */
export function signingInput(compact: string): Buffer {
  return Buffer.from(compact.slice(0, compact.lastIndexOf('.')), 'latin1');
}
