/**
 * Constants of the wire contract (ARCHITECTURE.md §2) shared by token, seal, JWE and JWS code, and
 * the one helper that turns a caller's key into something `jose` accepts.
 */
import { type CryptoKey, importJWK, type JWK, type KeyObject } from 'jose';

/** Signature algorithms the contract allows for credentials and message signatures. */
const SIGNING_ALGS = ['RS512', 'PS256', 'ES256'] as const;
export type SigningAlg = (typeof SIGNING_ALGS)[number];

/** Key ids are opaque keys into fixed maps: bounded length and alphabet (A3). */
export const KID_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;

/** An ODS code as the configuration defines it. */
export const ODS_PATTERN = /^[A-Z0-9]{3,10}$/;

/** JWE protected header values the contract fixes. `JWE_ALG` is the RSA key-management choice. */
export const JWE_ALG = 'RSA-OAEP-256';
/** Key agreement on P-256 with AES-256 key wrap (RFC 7518 §4.6): the elliptic-curve recipient choice. */
export const JWE_ECDH_ALG = 'ECDH-ES+A256KW';
/** Every JWE `alg` the contract accepts; which one a message uses follows the recipient's key. */
const JWE_ALGS = [JWE_ALG, JWE_ECDH_ALG] as const;
export type JweAlg = (typeof JWE_ALGS)[number];
export const JWE_ENC = 'A256GCM';
export const JWE_CTY = 'JOSE';

/** `cty` of the inner JWS per Bundle format. */
export const CTY_BY_FORMAT = { xml: 'fhir+xml', json: 'fhir+json' } as const;
export type BundleFormat = keyof typeof CTY_BY_FORMAT;

/**
 * Header parameters that carry keys, URLs, extensions or compression. None is honoured anywhere
 * in the pipeline, so their mere presence is refused rather than ignored (A4–A8, A21).
 */
export const FORBIDDEN_JWS_HEADERS = ['b64', 'crit', 'jwk', 'jku', 'x5u', 'x5c', 'zip'] as const;
export const FORBIDDEN_JWE_HEADERS = [
  'zip',
  'crit',
  'jwk',
  'jku',
  'x5u',
  'x5c',
  'epk',
  'p2s',
  'p2c',
] as const;

/** A private or public key as callers hold it: WebCrypto, Node `KeyObject`, or a JWK. */
export type KeyLike = CryptoKey | KeyObject | JWK;

/** True for a JWE key-management algorithm the contract allows. */
export function isJweAlg(value: unknown): value is JweAlg {
  return typeof value === 'string' && (JWE_ALGS as readonly string[]).includes(value);
}

/** True for a signing algorithm the contract allows. */
export function isSigningAlg(value: unknown): value is SigningAlg {
  return typeof value === 'string' && (SIGNING_ALGS as readonly string[]).includes(value);
}

/** True when `key` is a JWK object rather than a `CryptoKey` or `KeyObject`. */
export function isJwk(key: KeyLike): key is JWK {
  return typeof (key as { kty?: unknown }).kty === 'string';
}

/**
 * Give `jose` a typed key. A JWK is imported here with the intended `alg` rather than passed to
 * `jose` as is, because `jose` freezes JWK objects it is given and caches per object identity.
 */
export async function toJoseKey(key: KeyLike, alg: string): Promise<CryptoKey | KeyObject> {
  if (!isJwk(key)) return key;
  const imported = await importJWK(key, alg);
  if (imported instanceof Uint8Array) throw new TypeError('symmetric keys are not accepted');
  return imported;
}

/** Whether a header object has any of `names` as an own member. */
export function hasAnyMember(header: Record<string, unknown>, names: readonly string[]): boolean {
  return names.some((name) => Object.hasOwn(header, name));
}
