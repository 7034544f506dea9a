/**
 * Imported public keys, cached so a key is imported once per process (PERFORMANCE.md: no repeated
 * key import on the hot path) and never reused after the configuration changes it.
 */
import { type CryptoKey, importJWK } from 'jose';
import type { PublicJwk } from '../config/schema.js';

interface Entry {
  jwk: PublicJwk;
  key: Promise<CryptoKey>;
}

/**
 * A map from a caller-chosen id (issuer id + kid, sender ODS + kid) to the imported key. The
 * promise is cached, so concurrent first uses share one import. A reloaded configuration with
 * different key material under the same id is detected by comparing the key members.
 */
export class PublicKeyCache {
  readonly #entries = new Map<string, Entry>();

  /** The imported key for `jwk`, imported with `jwk.alg` on first use. */
  get(id: string, jwk: PublicJwk): Promise<CryptoKey> {
    const cached = this.#entries.get(id);
    if (cached && sameKey(cached.jwk, jwk)) return cached.key;
    // A copy: jose may freeze what it is given, and config objects belong to the config loader.
    const key = importJWK({ ...jwk }, jwk.alg).then((k) => {
      if (k instanceof Uint8Array) throw new TypeError('a public key was expected');
      return k;
    });
    this.#entries.set(id, { jwk, key });
    // A key that fails to import is a configuration problem: forget it so a fixed config retries.
    key.catch(() => {
      if (this.#entries.get(id)?.key === key) this.#entries.delete(id);
    });
    return key;
  }

  /** Number of cached keys (for tests and metrics). */
  get size(): number {
    return this.#entries.size;
  }
}

/** Same key material and algorithm. */
export function sameKey(a: PublicJwk, b: PublicJwk): boolean {
  return (
    a === b ||
    (a.kty === b.kty &&
      a.alg === b.alg &&
      a.n === b.n &&
      a.e === b.e &&
      a.crv === b.crv &&
      a.x === b.x &&
      a.y === b.y)
  );
}
