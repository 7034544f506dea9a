/**
 * Building the sealed message (ARCHITECTURE.md §2, item 2): sign the exact Bundle bytes, then
 * encrypt the JWS to the recipient key. Used by senders, the CLI (`seal`) and tests.
 *
 * {@link signBundle} and {@link encryptSigned} are exported separately so tests and the attack
 * suite can build envelopes that disagree with themselves (different `itk` in JWE and JWS,
 * encrypt-only content, extra header parameters).
 */
import { KeyObject } from 'node:crypto';
import { CompactEncrypt, CompactSign, type CryptoKey } from 'jose';
import {
  type BundleFormat,
  CTY_BY_FORMAT,
  isJwk,
  JWE_ALG,
  JWE_CTY,
  JWE_ECDH_ALG,
  JWE_ENC,
  type JweAlg,
  type KeyLike,
  type SigningAlg,
  toJoseKey,
} from './contract.js';
import type { ItkRouting } from './routing.js';

/** The sender organisation's signing key. */
export interface SignerKey {
  /** Private key: CryptoKey, KeyObject or private JWK. */
  key: KeyLike;
  kid: string;
  alg: SigningAlg;
}

/** The recipient's encryption key: RSA (RSA-OAEP-256) or P-256 (ECDH-ES+A256KW). */
export interface RecipientKey {
  /** Public key: CryptoKey, KeyObject or public JWK. */
  key: KeyLike;
  kid: string;
  /**
   * Key-management algorithm. @default - from the key: a JWK's `alg` when it is one the contract
   * allows, else `ECDH-ES+A256KW` for an EC key and `RSA-OAEP-256` for an RSA key
   */
  alg?: JweAlg;
}

/** Options for {@link signBundle}. */
export interface SignBundleOptions {
  /** The Bundle, byte for byte as it will be delivered. */
  bundle: Uint8Array;
  format: BundleFormat;
  routing: ItkRouting;
  signer: SignerKey;
  /** Extra or overriding protected header parameters (tests only). */
  header?: Record<string, unknown>;
}

/** Options for {@link encryptSigned}. */
export interface EncryptSignedOptions {
  /** The inner compact JWS (or, in tests, any plaintext). */
  plaintext: string | Uint8Array;
  routing: ItkRouting;
  recipient: RecipientKey;
  /** Extra or overriding protected header parameters (tests only). */
  header?: Record<string, unknown>;
}

/** Options for {@link sealMessage}. */
export interface SealMessageOptions {
  bundle: Uint8Array;
  format: BundleFormat;
  routing: ItkRouting;
  signer: SignerKey;
  recipient: RecipientKey;
}

/**
 * Inner JWS: compact, over the exact Bundle bytes, protected header `{alg, kid, cty, itk}`.
 *
 * @example
 * ```ts
 * const jws = await signBundle({ bundle, format: 'xml', routing, signer: { key, kid, alg: 'ES256' } });
 * ```
 */
export async function signBundle(opts: SignBundleOptions): Promise<string> {
  const { signer } = opts;
  const key = await toJoseKey(signer.key, signer.alg);
  return new CompactSign(opts.bundle)
    .setProtectedHeader({
      alg: signer.alg,
      kid: signer.kid,
      cty: CTY_BY_FORMAT[opts.format],
      itk: opts.routing,
      ...opts.header,
    })
    .sign(key);
}

/**
 * The JWE `alg` a recipient key calls for, as its published JWKS entry says (docs/WIRE-FORMAT.md):
 * the JWK's `alg`, else its key type. An EC key on a curve other than P-256 is refused.
 */
export function recipientAlg(recipient: RecipientKey): JweAlg {
  if (recipient.alg) return recipient.alg;
  const { key } = recipient;
  let kty: string | undefined;
  let crv: string | undefined;
  if (isJwk(key)) {
    if (key.alg === JWE_ALG) return JWE_ALG;
    if (key.alg === JWE_ECDH_ALG) return JWE_ECDH_ALG;
    if (key.alg !== undefined)
      throw new TypeError(`recipient key alg ${key.alg} is not a JWE alg the contract allows`);
    ({ kty, crv } = key);
  } else if (key instanceof KeyObject) {
    kty =
      key.asymmetricKeyType === 'ec' ? 'EC' : key.asymmetricKeyType === 'rsa' ? 'RSA' : key.asymmetricKeyType;
    crv =
      key.asymmetricKeyDetails?.namedCurve === 'prime256v1' ? 'P-256' : key.asymmetricKeyDetails?.namedCurve;
  } else {
    const algorithm = (key as CryptoKey).algorithm as { name: string; namedCurve?: string };
    kty = algorithm.name === 'ECDH' || algorithm.name === 'ECDSA' ? 'EC' : 'RSA';
    crv = algorithm.namedCurve;
  }
  if (kty === 'RSA') return JWE_ALG;
  if (kty === 'EC' && crv === 'P-256') return JWE_ECDH_ALG;
  throw new TypeError('recipient key must be RSA or EC P-256');
}

/**
 * Outer JWE: compact, `RSA-OAEP-256` or `ECDH-ES+A256KW` (by the recipient key, {@link recipientAlg})
 * + `A256GCM`, protected header `{alg, enc, kid, cty: 'JOSE', itk}` (and `epk` for ECDH-ES, which
 * `jose` generates per message). No `zip`, ever (A21).
 *
 * @example
 * ```ts
 * const jwe = await encryptSigned({ plaintext: jws, routing, recipient: { key: publicKey, kid } });
 * ```
 */
export async function encryptSigned(opts: EncryptSignedOptions): Promise<string> {
  const plaintext = typeof opts.plaintext === 'string' ? Buffer.from(opts.plaintext, 'utf8') : opts.plaintext;
  const alg = recipientAlg(opts.recipient);
  const key = await toJoseKey(opts.recipient.key, alg);
  return new CompactEncrypt(plaintext)
    .setProtectedHeader({
      alg,
      enc: JWE_ENC,
      kid: opts.recipient.kid,
      cty: JWE_CTY,
      itk: opts.routing,
      ...opts.header,
    })
    .encrypt(key);
}

/**
 * Sign, then encrypt: the sealed message of the wire contract.
 *
 * @example
 * ```ts
 * const sealed = await sealMessage({
 *   bundle: readFileSync('bundle.xml'), format: 'xml',
 *   routing: { from: 'GP0001', to: 'RX1', event: 'ITK007C', id: messageHeaderId },
 *   signer: { key: senderPrivate, kid: 'gp0001-sig-1', alg: 'PS256' },
 *   recipient: { key: recipientPublic, kid: 'rx1-enc-1' },
 * });
 * ```
 */
export async function sealMessage(opts: SealMessageOptions): Promise<string> {
  const signed = await signBundle(opts);
  return encryptSigned({ plaintext: signed, routing: opts.routing, recipient: opts.recipient });
}
