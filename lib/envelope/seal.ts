/**
 * Building the sealed message (ARCHITECTURE.md §2, item 2): sign the exact Bundle bytes, then
 * encrypt the JWS to the recipient key. Used by senders, the CLI (`seal`) and tests.
 *
 * {@link signBundle} and {@link encryptSigned} are exported separately so tests and the attack
 * suite can build envelopes that disagree with themselves (different `itk` in JWE and JWS,
 * encrypt-only content, extra header parameters).
 */
import { CompactEncrypt, CompactSign } from 'jose';
import type { ItkRouting } from '../record.js';
import {
  type BundleFormat,
  CTY_BY_FORMAT,
  JWE_ALG,
  JWE_CTY,
  JWE_ENC,
  type KeyLike,
  type SigningAlg,
  toJoseKey,
} from './contract.js';

/** The sender organisation's signing key. */
export interface SignerKey {
  /** Private key: CryptoKey, KeyObject or private JWK. */
  key: KeyLike;
  kid: string;
  alg: SigningAlg;
}

/** The recipient's encryption key (RSA, used with RSA-OAEP-256). */
export interface RecipientKey {
  /** Public key: CryptoKey, KeyObject or public JWK. */
  key: KeyLike;
  kid: string;
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
 * Outer JWE: compact, `RSA-OAEP-256` + `A256GCM`, protected header `{alg, enc, kid, cty: 'JOSE', itk}`.
 * No `zip`, ever (A21).
 *
 * @example
 * ```ts
 * const jwe = await encryptSigned({ plaintext: jws, routing, recipient: { key: publicKey, kid } });
 * ```
 */
export async function encryptSigned(opts: EncryptSignedOptions): Promise<string> {
  const plaintext = typeof opts.plaintext === 'string' ? Buffer.from(opts.plaintext, 'utf8') : opts.plaintext;
  const key = await toJoseKey(opts.recipient.key, JWE_ALG);
  return new CompactEncrypt(plaintext)
    .setProtectedHeader({
      alg: JWE_ALG,
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
