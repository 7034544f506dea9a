/**
 * The {@link KeyService} port over a local keystore: what KMS does in AWS, done with `node:crypto`.
 * Used by the embedded runtime and by every test that needs a recipient or response-signing key.
 *
 * It honours the port's contract exactly, so code tested against it behaves the same on KMS:
 * a failed unwrap is `{ ok: false }` (never an exception with a reason), signatures come back in
 * the 64-byte JOSE form, and each key can do only what its purpose allows.
 */
import {
  constants,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  type KeyObject,
  privateDecrypt,
  sign,
} from 'node:crypto';
import type { EcPublicJwk, KeyService } from '../../ports/index.js';
import type { Keystore, KeystoreEntry } from './keystore.js';

/** Operations of the port, as named to the fault-injection hook. */
export type KeyServiceOperation = 'unwrapKey' | 'deriveSharedSecret' | 'signEs256' | 'publicKeySpki';

/** Options for {@link SoftwareKeyService}. */
export interface SoftwareKeyServiceOptions {
  /**
   * Called before every operation; throw from it to inject a fault (for example a
   * `TransientError('KEY_SERVICE_UNAVAILABLE', …)` to stand in for KMS throttling).
   */
  beforeCall?: (operation: KeyServiceOperation, kid: string) => void | Promise<void>;
}

/**
 * Software keys behind the key-service port.
 *
 * @example
 * ```ts
 * const keys = new SoftwareKeyService(readKeystore('.itk3/keystore.json'));
 * const result = await keys.unwrapKey('rx1-enc-1', encryptedKey);
 * ```
 */
export class SoftwareKeyService implements KeyService {
  readonly #entries: ReadonlyMap<string, KeystoreEntry>;
  readonly #privateKeys = new Map<string, KeyObject>();
  readonly #beforeCall: SoftwareKeyServiceOptions['beforeCall'];

  constructor(keystore: Keystore, options: SoftwareKeyServiceOptions = {}) {
    this.#entries = new Map(keystore.keys.map((entry) => [entry.kid, entry]));
    this.#beforeCall = options.beforeCall;
  }

  /** RSAES-OAEP with SHA-256 and MGF1-SHA-256, like KMS `RSAES_OAEP_SHA_256`. */
  async unwrapKey(
    kid: string,
    encryptedKey: Uint8Array,
  ): Promise<{ ok: true; cek: Uint8Array } | { ok: false }> {
    await this.#beforeCall?.('unwrapKey', kid);
    const entry = this.#entries.get(kid);
    if (entry?.purpose !== 'recipient-decrypt' || entry.alg !== 'RSA-OAEP-256') return { ok: false };
    try {
      const cek = privateDecrypt(
        { key: this.#privateKey(entry), padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' },
        encryptedKey,
      );
      return { ok: true, cek };
    } catch {
      // No reason is given: the caller continues with a random CEK (RFC 7516 §11.5).
      return { ok: false };
    }
  }

  /** ECDH on P-256 with an `ECDH-ES+A256KW` recipient key, like KMS `DeriveSharedSecret`. */
  async deriveSharedSecret(
    kid: string,
    ephemeralPublicKey: EcPublicJwk,
  ): Promise<{ ok: true; sharedSecret: Uint8Array } | { ok: false }> {
    await this.#beforeCall?.('deriveSharedSecret', kid);
    const entry = this.#entries.get(kid);
    if (entry?.purpose !== 'recipient-decrypt' || entry.alg !== 'ECDH-ES+A256KW') return { ok: false };
    try {
      const publicKey = createPublicKey({ key: { ...ephemeralPublicKey }, format: 'jwk' });
      return { ok: true, sharedSecret: diffieHellman({ privateKey: this.#privateKey(entry), publicKey }) };
    } catch {
      return { ok: false };
    }
  }

  /** ECDSA P-256 / SHA-256 over the signing input, returned as 64-byte `r‖s`. */
  async signEs256(kid: string, signingInput: Uint8Array): Promise<Uint8Array> {
    await this.#beforeCall?.('signEs256', kid);
    const entry = this.#entries.get(kid);
    if (entry?.purpose !== 'response-sign' || entry.alg !== 'ES256') {
      throw new Error('no response-signing key with this kid');
    }
    return sign('sha256', signingInput, { key: this.#privateKey(entry), dsaEncoding: 'ieee-p1363' });
  }

  /** SPKI DER of any key in the keystore, like KMS `GetPublicKey`. */
  async publicKeySpki(kid: string): Promise<Uint8Array> {
    await this.#beforeCall?.('publicKeySpki', kid);
    const entry = this.#entries.get(kid);
    if (!entry) throw new Error('no key with this kid');
    return createPublicKey(this.#privateKey(entry)).export({ format: 'der', type: 'spki' });
  }

  /** Each private key is imported once and kept as a KeyObject. */
  #privateKey(entry: KeystoreEntry): KeyObject {
    let key = this.#privateKeys.get(entry.kid);
    if (!key) {
      key = createPrivateKey({ key: { ...entry.privateJwk }, format: 'jwk' });
      this.#privateKeys.set(entry.kid, key);
    }
    return key;
  }
}
