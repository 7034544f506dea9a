/**
 * Public-key identity: whether two JWKs are the same key material and algorithm, so a key cache
 * (lib/envelope/signature.ts) never reuses a key after the configuration changes it.
 */
import type { PublicJwk } from '../config/schema.js';

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
