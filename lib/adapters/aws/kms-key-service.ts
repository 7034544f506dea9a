import { createPublicKey } from 'node:crypto';
import {
  DecryptCommand,
  DeriveSharedSecretCommand,
  GetPublicKeyCommand,
  type KMSClient,
  SignCommand,
} from '@aws-sdk/client-kms';
import { derToJoseEs256 } from '../../envelope/response-sign.js';
import { ConfigError, TransientError } from '../../errors.js';
import { ENV } from '../../infra/definitions.js';
import type { EcPublicJwk, KeyService } from '../../ports/index.js';
import { awsErrorName, isTransientAwsError } from './errors.js';

/**
 * {@link KeyService} backed by AWS KMS: the private keys never leave KMS.
 *
 * - `unwrapKey` → `Decrypt` with `RSAES_OAEP_SHA_256` (the JWE `RSA-OAEP-256` key wrap). A bad
 *   ciphertext, a wrong, disabled or unknown key are `{ ok: false }` so the decrypt stage continues
 *   with a random CEK and fails at the tag like any tampering (RFC 7516 §11.5, SECURITY-CORPUS.md
 *   §4). Throttling, KMS internal errors, timeouts and network failures throw
 *   `TransientError('KEY_SERVICE_UNAVAILABLE')`: retried, never substituted.
 * - `deriveSharedSecret` → `DeriveSharedSecret` (`ECDH`) with an `ECC_NIST_P256` `KEY_AGREEMENT`
 *   key (the JWE `ECDH-ES+A256KW` agreement; the KDF and AES unwrap stay in the decrypt stage), the
 *   sender's ephemeral key passed as SPKI DER. Same failure split as `unwrapKey`.
 * - `signEs256` → `Sign` (`RAW`, `ECDSA_SHA_256`), the DER signature converted to JOSE `r‖s`.
 * - `publicKeySpki` → `GetPublicKey`, cached per kid for the life of the container.
 *
 * @example
 * ```ts
 * const keys = new KmsKeyService(new KMSClient({}), { 'recipient-2025': 'alias/itk3/recipient-2025' });
 * const result = await keys.unwrapKey('recipient-2025', encryptedKey);
 * ```
 */
export class KmsKeyService implements KeyService {
  readonly #client: KMSClient;
  readonly #keyIds: ReadonlyMap<string, string>;
  readonly #spki = new Map<string, Promise<Uint8Array>>();

  /**
   * @param client the KMS client (endpoint, region and credentials are the caller's choice)
   * @param keyIds JWE/JWS `kid` → KMS key id, ARN or alias
   */
  constructor(client: KMSClient, keyIds: Readonly<Record<string, string>>) {
    this.#client = client;
    this.#keyIds = new Map(Object.entries(keyIds));
  }

  async unwrapKey(
    kid: string,
    encryptedKey: Uint8Array,
  ): Promise<{ ok: true; cek: Uint8Array } | { ok: false }> {
    const keyId = this.#keyIds.get(kid);
    // Unknown kid is a property of the message (the envelope check should already have caught it).
    if (keyId === undefined || encryptedKey.length === 0) return { ok: false };
    try {
      const out = await this.#client.send(
        new DecryptCommand({
          KeyId: keyId,
          CiphertextBlob: encryptedKey,
          EncryptionAlgorithm: 'RSAES_OAEP_SHA_256',
        }),
      );
      return out.Plaintext ? { ok: true, cek: out.Plaintext } : { ok: false };
    } catch (error) {
      if (isTransientAwsError(error)) {
        throw new TransientError('KEY_SERVICE_UNAVAILABLE', `KMS Decrypt failed (${errorLabel(error)})`, {
          cause: error,
        });
      }
      // InvalidCiphertextException, IncorrectKeyException, KMSInvalidStateException, NotFound,
      // DisabledException, validation errors: the message cannot be opened with this key.
      return { ok: false };
    }
  }

  async deriveSharedSecret(
    kid: string,
    ephemeralPublicKey: EcPublicJwk,
  ): Promise<{ ok: true; sharedSecret: Uint8Array } | { ok: false }> {
    const keyId = this.#keyIds.get(kid);
    if (keyId === undefined) return { ok: false };
    let publicKeySpki: Buffer;
    try {
      publicKeySpki = createPublicKey({ key: { ...ephemeralPublicKey }, format: 'jwk' }).export({
        format: 'der',
        type: 'spki',
      });
    } catch {
      return { ok: false };
    }
    try {
      const out = await this.#client.send(
        new DeriveSharedSecretCommand({
          KeyId: keyId,
          KeyAgreementAlgorithm: 'ECDH',
          PublicKey: publicKeySpki,
        }),
      );
      return out.SharedSecret ? { ok: true, sharedSecret: out.SharedSecret } : { ok: false };
    } catch (error) {
      if (isTransientAwsError(error)) {
        throw new TransientError(
          'KEY_SERVICE_UNAVAILABLE',
          `KMS DeriveSharedSecret failed (${errorLabel(error)})`,
          { cause: error },
        );
      }
      // InvalidKeyUsageException (an RSA kid), a refused public key, a disabled or unknown key:
      // the message cannot be opened with this key, like a bad unwrap.
      return { ok: false };
    }
  }

  async signEs256(kid: string, signingInput: Uint8Array): Promise<Uint8Array> {
    const keyId = this.#requireKeyId(kid);
    let der: Uint8Array | undefined;
    try {
      const out = await this.#client.send(
        new SignCommand({
          KeyId: keyId,
          Message: signingInput,
          MessageType: 'RAW',
          SigningAlgorithm: 'ECDSA_SHA_256',
        }),
      );
      der = out.Signature;
    } catch (error) {
      // Even a permanent failure here (disabled key, wrong key spec) is an operator problem, not the
      // message's: dead-letter with an alarm and redrive after the fix, never emit an unsigned response.
      throw new TransientError('KEY_SERVICE_UNAVAILABLE', `KMS Sign failed (${errorLabel(error)})`, {
        cause: error,
      });
    }
    if (!der) throw new TransientError('KEY_SERVICE_UNAVAILABLE', 'KMS Sign returned no signature');
    try {
      return derToJoseEs256(der);
    } catch (cause) {
      throw new TransientError('KEY_SERVICE_UNAVAILABLE', 'KMS Sign returned no ES256 signature', { cause });
    }
  }

  async publicKeySpki(kid: string): Promise<Uint8Array> {
    const cached = this.#spki.get(kid);
    if (cached) return cached;
    const keyId = this.#requireKeyId(kid);
    const pending = this.#fetchSpki(keyId);
    this.#spki.set(kid, pending);
    // A failed fetch must not stay cached: the next caller tries again.
    pending.catch(() => this.#spki.delete(kid));
    return pending;
  }

  async #fetchSpki(keyId: string): Promise<Uint8Array> {
    try {
      const out = await this.#client.send(new GetPublicKeyCommand({ KeyId: keyId }));
      if (!out.PublicKey) throw new Error('GetPublicKey returned no key');
      return out.PublicKey;
    } catch (error) {
      throw new TransientError('KEY_SERVICE_UNAVAILABLE', `KMS GetPublicKey failed (${errorLabel(error)})`, {
        cause: error,
      });
    }
  }

  #requireKeyId(kid: string): string {
    const keyId = this.#keyIds.get(kid);
    if (keyId === undefined) {
      throw new ConfigError([
        `key id "${kid}" has no KMS key (set it in ${ENV.kmsKeys} or the configuration)`,
      ]);
    }
    return keyId;
  }
}

function errorLabel(error: unknown): string {
  return awsErrorName(error) ?? 'unknown error';
}
