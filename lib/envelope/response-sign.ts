/**
 * ES256 signing with a key that never leaves the key service (KMS in AWS, the software keystore
 * locally) — SECURITY-CORPUS.md §4 "Signing with KMS". `jose` cannot sign with KMS-held keys
 * (panva/jose#66), so the signing input is built here, signed through the port, and the result is
 * verified (`node:crypto`) against the key service's public key before it is released.
 */
import { createPublicKey, type KeyObject, verify } from 'node:crypto';
import { TransientError } from '../errors.js';
import type { KeyService } from '../ports/index.js';

const ES256_COORDINATE_BYTES = 32;

/**
 * Produce a compact ES256 JWS over `payload` with the key service's key `kid`.
 *
 * The protected header is `header` with `alg: 'ES256'` and `kid` set (they override whatever
 * `header` says, so a caller cannot mislabel the signature). A signature that is not 64 bytes or
 * fails the self-test raises a {@link TransientError}: it means a misconfigured key or a faulty
 * key service, which should dead-letter with an alarm rather than emit an unverifiable response.
 *
 * @example
 * ```ts
 * const jws = await signCompactWithKeyService(ports.keys, config.doc.responseSigning.kid,
 *   { cty: 'fhir+xml' }, responseBytes);
 * ```
 */
export async function signCompactWithKeyService(
  keys: KeyService,
  kid: string,
  header: Record<string, unknown>,
  payload: Uint8Array,
): Promise<string> {
  const encodedHeader = base64url(Buffer.from(JSON.stringify({ ...header, alg: 'ES256', kid }), 'utf8'));
  const signingInput = `${encodedHeader}.${base64url(payload)}`;
  const signature = await keys.signEs256(kid, Buffer.from(signingInput, 'ascii'));
  if (signature.length !== 2 * ES256_COORDINATE_BYTES) {
    throw new TransientError('UNEXPECTED', 'key service returned a signature of the wrong size');
  }
  const jws = `${signingInput}.${base64url(signature)}`;

  const publicKey = await responsePublicKey(keys, kid);
  // The self-test verifies the exact signing input and signature just assembled (node:crypto: no
  // re-parse of our own output, no WebCrypto hop).
  let valid = false;
  try {
    valid = verify(
      'sha256',
      Buffer.from(signingInput, 'ascii'),
      { key: publicKey, dsaEncoding: 'ieee-p1363' },
      signature,
    );
  } catch (cause) {
    throw new TransientError('UNEXPECTED', 'response signature failed its self-test', { cause });
  }
  if (!valid) throw new TransientError('UNEXPECTED', 'response signature failed its self-test');
  return jws;
}

/**
 * Convert an ECDSA P-256 signature from DER (`SEQUENCE { INTEGER r, INTEGER s }`, what KMS `Sign`
 * returns) to the JOSE form: 64 bytes, `r‖s`, each left-padded to 32 bytes (RFC 7518 §3.4).
 *
 * Strict DER: short-form lengths only (a P-256 signature is at most 72 bytes), minimal positive
 * integers, no trailing bytes; zero and over-long values are refused. Throws `TypeError`.
 *
 * @example
 * ```ts
 * const jose = derToJoseEs256(kmsResponse.Signature);
 * ```
 */
export function derToJoseEs256(der: Uint8Array): Uint8Array {
  if (der.length < 8 || der.length > 72 || der[0] !== 0x30 || der[1] !== der.length - 2) {
    throw new TypeError('ES256 signature is not a DER SEQUENCE of the right length');
  }
  const out = new Uint8Array(2 * ES256_COORDINATE_BYTES);
  let offset = 2;
  for (const slot of [0, 1]) {
    const tag = der[offset];
    const length = der[offset + 1];
    if (tag !== 0x02 || length === undefined || length < 1 || length > ES256_COORDINATE_BYTES + 1) {
      throw new TypeError('ES256 signature component is not a DER INTEGER of a possible length');
    }
    const start = offset + 2;
    const end = start + length;
    if (end > der.length) throw new TypeError('ES256 signature component overruns the SEQUENCE');
    let value = der.subarray(start, end);
    const first = value[0] as number;
    if (first & 0x80) throw new TypeError('ES256 signature component is negative');
    if (value.length > 1 && first === 0 && !((value[1] as number) & 0x80)) {
      throw new TypeError('ES256 signature component is not minimally encoded');
    }
    if (value.length > 1 && first === 0) value = value.subarray(1);
    if (value.length > ES256_COORDINATE_BYTES) throw new TypeError('ES256 signature component is too long');
    if (value.every((b) => b === 0)) throw new TypeError('ES256 signature component is zero');
    out.set(value, (slot + 1) * ES256_COORDINATE_BYTES - value.length);
    offset = end;
  }
  if (offset !== der.length) throw new TypeError('ES256 signature has trailing bytes');
  return out;
}

/** Public keys per key service and kid: one `publicKeySpki` call and import per key (PERFORMANCE). */
const publicKeys = new WeakMap<KeyService, Map<string, Promise<KeyObject>>>();

function responsePublicKey(keys: KeyService, kid: string): Promise<KeyObject> {
  let perService = publicKeys.get(keys);
  if (!perService) {
    perService = new Map();
    publicKeys.set(keys, perService);
  }
  const cached = perService.get(kid);
  if (cached) return cached;
  const service = perService;
  const key = keys.publicKeySpki(kid).then((spki) => {
    const publicKey = createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' });
    if (publicKey.asymmetricKeyType !== 'ec' || publicKey.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
      throw new TransientError('UNEXPECTED', 'response-signing key is not a P-256 key');
    }
    return publicKey;
  });
  service.set(kid, key);
  // Do not remember a failure (throttling, a key not yet created): the next call tries again.
  key.catch(() => {
    if (service.get(kid) === key) service.delete(kid);
  });
  return key;
}

function base64url(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64url');
}
