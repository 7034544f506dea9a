/**
 * The "cached" key-unwrap mode (docs/PERFORMANCE.md, "Key modes"): the recipient RSA private key is
 * kept **wrapped by a symmetric KMS key** (a KMS ciphertext blob, e.g. the `PrivateKeyCiphertextBlob`
 * of `GenerateDataKeyPairWithoutPlaintext`), unwrapped with **one symmetric KMS `Decrypt` per
 * container and TTL**, and then every JWE content key is unwrapped locally with `node:crypto`
 * RSA-OAEP-SHA-256. This removes the one asymmetric KMS call per message of the direct mode
 * ({@link KmsKeyService}) at the price of a plaintext private key in the function's memory for the
 * TTL. The direct mode stays the default; the trade-off is written down in docs/PERFORMANCE.md.
 *
 * A P-256 recipient key (JWE `ECDH-ES+A256KW`) works the same way: the wrapped PKCS#8 P-256 key
 * is unwrapped once, and each message's ECDH is done locally instead of a KMS `DeriveSharedSecret`.
 *
 * Optionally the **response-signing key** too (docs/KEY-MODES.md, "Cached response-signing key"): a
 * KMS-wrapped PKCS#8 P-256 key, bound to its own encryption context (purpose `response-sign`), is
 * unwrapped the same way and ES256 signatures are made with `node:crypto`, instead of one KMS `Sign`
 * per response. Without it, and for kids without a wrapped key, `signEs256`, `unwrapKey` and
 * `publicKeySpki` go to the wrapped {@link KmsKeyService}.
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
import {
  DecryptCommand,
  EncryptCommand,
  GenerateDataKeyPairWithoutPlaintextCommand,
  type KMSClient,
} from '@aws-sdk/client-kms';
import { TransientError } from '../../errors.js';
import type { EcPublicJwk, KeyService } from '../../ports/index.js';
import {
  DEFAULT_KEY_CACHE_TTL_SECONDS,
  wrappedKeyContext,
  wrappedSigningKeyContext,
} from './deployment-names.js';
import { awsErrorName } from './errors.js';
import { KmsKeyService } from './kms-key-service.js';

/** Shortest RSA modulus accepted from a wrapped blob: anything smaller is a configuration mistake. */
const MIN_MODULUS_BITS = 2048;

type KeyPurpose = 'recipient' | 'signing';

/** Options of {@link CachedKeyService}. */
export interface CachedKeyServiceOptions {
  /** kid → KMS ciphertext blob of the recipient's RSA or P-256 private key (PKCS#8 DER). */
  wrappedKeys: Readonly<Record<string, Uint8Array>>;
  /**
   * kid → KMS ciphertext blob of a P-256 response-signing private key (PKCS#8 DER), wrapped under
   * {@link wrappedSigningKeyContext}: ES256 in the function instead of a KMS `Sign` per response.
   * @default - response signing stays on KMS
   */
  wrappedSigningKeys?: Readonly<Record<string, Uint8Array>>;
  /** kid → KMS key id for what stays on KMS (response signing, kids without a wrapped key). */
  kmsKeyIds: Readonly<Record<string, string>>;
  /**
   * The symmetric KMS key the blobs are wrapped under. When set, `Decrypt` names it, so a blob
   * wrapped under any other key (someone else's) is refused.
   * @default - KMS takes the key from the blob
   */
  wrappingKeyId?: string;
  /** @default DEFAULT_KEY_CACHE_TTL_SECONDS */
  ttlSeconds?: number;
  /** Clock for the TTL, ms since epoch. @default Date.now */
  now?: () => number;
}

interface CacheEntry {
  key: Promise<KeyObject>;
  expiresAt: number;
}

/**
 * {@link KeyService} with recipient private keys unwrapped once per container and TTL.
 *
 * Failure semantics match {@link KmsKeyService}: a CEK that does not decrypt (tampered, another
 * key's, garbage) is `{ ok: false }`, so the decrypt stage fails at the tag like any tampering.
 * Failing to obtain the private key itself is never the message's fault: throttling, 5xx, network,
 * and also a permanent refusal (disabled key, wrong context, a blob that is not an RSA key) throw
 * `TransientError('KEY_SERVICE_UNAVAILABLE')`, so records are retried and dead-lettered with an
 * alarm, and can be redriven once the operator has fixed the key — instead of being rejected.
 * A failed load is not cached: the next record tries KMS again (concurrent records share one call).
 *
 * @example
 * ```ts
 * const keys = new CachedKeyService(new KMSClient({}), {
 *   wrappedKeys: { 'rx-2025': blob },
 *   kmsKeyIds: { 'itk3gw-response-2025': 'alias/itk3/itk3gw-response-2025' },
 * });
 * const result = await keys.unwrapKey('rx-2025', encryptedKey);
 * ```
 */
export class CachedKeyService implements KeyService {
  readonly #client: KMSClient;
  readonly #direct: KmsKeyService;
  readonly #wrapped: ReadonlyMap<string, Uint8Array>;
  readonly #wrappedSigning: ReadonlyMap<string, Uint8Array>;
  readonly #wrappingKeyId: string | undefined;
  readonly #ttlMs: number;
  readonly #now: () => number;
  readonly #cache = new Map<string, CacheEntry>();

  constructor(client: KMSClient, options: CachedKeyServiceOptions) {
    this.#client = client;
    this.#direct = new KmsKeyService(client, options.kmsKeyIds);
    this.#wrapped = new Map(Object.entries(options.wrappedKeys));
    this.#wrappedSigning = new Map(Object.entries(options.wrappedSigningKeys ?? {}));
    this.#wrappingKeyId = options.wrappingKeyId;
    const ttlSeconds = options.ttlSeconds ?? DEFAULT_KEY_CACHE_TTL_SECONDS;
    if (!(ttlSeconds > 0)) throw new RangeError('ttlSeconds must be positive');
    this.#ttlMs = ttlSeconds * 1000;
    this.#now = options.now ?? Date.now;
  }

  /** The kids this service unwraps locally. */
  get wrappedKids(): string[] {
    return [...this.#wrapped.keys()];
  }

  async unwrapKey(
    kid: string,
    encryptedKey: Uint8Array,
  ): Promise<{ ok: true; cek: Uint8Array } | { ok: false }> {
    if (encryptedKey.length === 0) return { ok: false };
    // A kid with no wrapped key (e.g. an older key during rotation) stays on direct KMS.
    if (!this.#wrapped.has(kid)) return this.#direct.unwrapKey(kid, encryptedKey);
    const key = await this.#privateKey(kid);
    if (key.asymmetricKeyType !== 'rsa') return { ok: false };
    try {
      const cek = privateDecrypt(
        { key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' },
        encryptedKey,
      );
      return { ok: true, cek };
    } catch {
      // No reason is given: the caller continues with a random CEK (RFC 7516 §11.5).
      return { ok: false };
    }
  }

  /** ECDH with a wrapped P-256 key, locally; a kid without a wrapped key stays on direct KMS. */
  async deriveSharedSecret(
    kid: string,
    ephemeralPublicKey: EcPublicJwk,
  ): Promise<{ ok: true; sharedSecret: Uint8Array } | { ok: false }> {
    if (!this.#wrapped.has(kid)) return this.#direct.deriveSharedSecret(kid, ephemeralPublicKey);
    const privateKey = await this.#privateKey(kid);
    if (privateKey.asymmetricKeyType !== 'ec') return { ok: false };
    try {
      const publicKey = createPublicKey({ key: { ...ephemeralPublicKey }, format: 'jwk' });
      return { ok: true, sharedSecret: diffieHellman({ privateKey, publicKey }) };
    } catch {
      return { ok: false };
    }
  }

  /**
   * ES256 with a wrapped P-256 signing key, locally (64-byte `r‖s`, as KMS `Sign` gives after
   * conversion); any other kid signs on KMS, one `Sign` per call, the key never leaving KMS.
   */
  async signEs256(kid: string, signingInput: Uint8Array): Promise<Uint8Array> {
    if (!this.#wrappedSigning.has(kid)) return this.#direct.signEs256(kid, signingInput);
    const key = await this.#privateKey(kid, 'signing');
    return sign('sha256', signingInput, { key, dsaEncoding: 'ieee-p1363' });
  }

  /** SPKI of a wrapped key comes from the unwrapped private key; any other kid from KMS. */
  async publicKeySpki(kid: string): Promise<Uint8Array> {
    const purpose: KeyPurpose | undefined = this.#wrappedSigning.has(kid)
      ? 'signing'
      : this.#wrapped.has(kid)
        ? 'recipient'
        : undefined;
    if (!purpose) return this.#direct.publicKeySpki(kid);
    const key = await this.#privateKey(kid, purpose);
    return createPublicKey(key).export({ format: 'der', type: 'spki' });
  }

  /** Forget every unwrapped key now (tests; an operator hook after a revocation). */
  clear(): void {
    this.#cache.clear();
  }

  #privateKey(kid: string, purpose: KeyPurpose = 'recipient'): Promise<KeyObject> {
    const now = this.#now();
    const slot = `${purpose}#${kid}`;
    const cached = this.#cache.get(slot);
    if (cached && now < cached.expiresAt) return cached.key;
    // One load per kid at a time: the records of a batch share it (single flight).
    const key = this.#load(kid, purpose);
    this.#cache.set(slot, { key, expiresAt: now + this.#ttlMs });
    key.catch(() => {
      if (this.#cache.get(slot)?.key === key) this.#cache.delete(slot);
    });
    return key;
  }

  async #load(kid: string, purpose: KeyPurpose): Promise<KeyObject> {
    const signing = purpose === 'signing';
    const blob = (signing ? this.#wrappedSigning : this.#wrapped).get(kid) as Uint8Array;
    let plaintext: Uint8Array | undefined;
    try {
      const out = await this.#client.send(
        new DecryptCommand({
          CiphertextBlob: blob,
          EncryptionContext: signing ? wrappedSigningKeyContext(kid) : wrappedKeyContext(kid),
          ...(this.#wrappingKeyId ? { KeyId: this.#wrappingKeyId } : {}),
        }),
      );
      plaintext = out.Plaintext;
    } catch (error) {
      throw new TransientError(
        'KEY_SERVICE_UNAVAILABLE',
        `KMS Decrypt of the wrapped key failed (${awsErrorName(error) ?? 'unknown error'})`,
        { cause: error },
      );
    }
    if (!plaintext) throw new TransientError('KEY_SERVICE_UNAVAILABLE', 'KMS Decrypt returned no key');
    try {
      // A view of KMS's buffer, not a copy: the copy would keep the DER (often in Node's shared
      // Buffer pool) after the `fill(0)` below.
      const der = Buffer.from(plaintext.buffer, plaintext.byteOffset, plaintext.byteLength);
      const key = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
      if (signing ? !isP256(key) : !isUsableRecipientKey(key)) {
        throw new Error(
          signing
            ? 'not a P-256 private key'
            : 'not an RSA private key of at least 2048 bits nor a P-256 private key',
        );
      }
      return key;
    } catch (cause) {
      // The blob is configuration, not the message: dead-letter and alarm, never reject.
      throw new TransientError(
        'KEY_SERVICE_UNAVAILABLE',
        signing
          ? 'wrapped response-signing key is not a usable P-256 private key'
          : 'wrapped key is not a usable RSA or P-256 private key',
        { cause },
      );
    } finally {
      // The DER copy in the SDK's buffer is no longer needed: OpenSSL holds the key now.
      plaintext.fill(0);
    }
  }
}

/** RSA of at least 2048 bits (RSA-OAEP-256) or P-256 (ECDH-ES+A256KW): nothing else is a recipient key. */
function isUsableRecipientKey(key: KeyObject): boolean {
  if (key.asymmetricKeyType === 'rsa')
    return (key.asymmetricKeyDetails?.modulusLength ?? 0) >= MIN_MODULUS_BITS;
  return isP256(key);
}

function isP256(key: KeyObject): boolean {
  return key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1';
}

/** A recipient key made for the cached mode: what to configure and what to publish. */
export interface WrappedRecipientKey {
  kid: string;
  /** KMS ciphertext blob of the PKCS#8 private key: the value for `ITK3_WRAPPED_KEYS`. */
  ciphertextBlob: Uint8Array;
  /** SPKI DER of the public key senders encrypt to. */
  publicKeySpki: Uint8Array;
  /** ARN of the wrapping key, as KMS reports it for a generated pair (an alias resolved). */
  wrappingKeyArn?: string;
}

/** KMS answered `GenerateDataKeyPairWithoutPlaintext` without a key pair. */
export class MissingKeyPairError extends Error {
  override readonly name = 'MissingKeyPairError';
}

/**
 * Make a new recipient key pair inside KMS and get its private key only in wrapped form:
 * `GenerateDataKeyPairWithoutPlaintext` under the symmetric `wrappingKeyId`, bound to
 * {@link wrappedKeyContext}. Nobody, this process included, sees the plaintext private key until a
 * function unwraps it. Operator tooling and tests use this; the pipeline never calls it.
 */
export async function generateWrappedRecipientKey(
  kms: KMSClient,
  wrappingKeyId: string,
  kid: string,
  keyPairSpec: 'RSA_2048' | 'RSA_3072' | 'RSA_4096' | 'ECC_NIST_P256' = 'RSA_4096',
): Promise<WrappedRecipientKey> {
  return generateWrapped(kms, wrappingKeyId, kid, keyPairSpec, wrappedKeyContext(kid));
}

/**
 * Wrap an existing RSA or P-256 private key (PKCS#8 DER, at most 4 096 bytes: RSA-4096 is ≈ 2 400) with KMS
 * `Encrypt` under `wrappingKeyId` and {@link wrappedKeyContext}: for emulators without
 * `GenerateDataKeyPair`, and for moving an existing key into the cached mode.
 */
export async function wrapRecipientKey(
  kms: KMSClient,
  wrappingKeyId: string,
  kid: string,
  pkcs8Der: Uint8Array,
): Promise<WrappedRecipientKey> {
  return encryptWrapped(kms, wrappingKeyId, kid, pkcs8Der, {
    usable: isUsableRecipientKey,
    expected: 'an RSA (≥ 2048 bits) or P-256 private key',
    context: wrappedKeyContext(kid),
  });
}

/**
 * Make a new P-256 response-signing key pair inside KMS, the private half only wrapped under
 * `wrappingKeyId` and {@link wrappedSigningKeyContext}: the value for `ITK3_WRAPPED_SIGNING_KEYS`,
 * and the public key to publish as the gateway's response-signing key (senders verify responses
 * with it, `itk3 audit verify` checkpoints). Operator tooling and tests use this.
 */
export async function generateWrappedSigningKey(
  kms: KMSClient,
  wrappingKeyId: string,
  kid: string,
): Promise<WrappedRecipientKey> {
  return generateWrapped(kms, wrappingKeyId, kid, 'ECC_NIST_P256', wrappedSigningKeyContext(kid));
}

/** Wrap an existing P-256 response-signing key (PKCS#8 DER) with KMS `Encrypt` under its context. */
export async function wrapSigningKey(
  kms: KMSClient,
  wrappingKeyId: string,
  kid: string,
  pkcs8Der: Uint8Array,
): Promise<WrappedRecipientKey> {
  return encryptWrapped(kms, wrappingKeyId, kid, pkcs8Der, {
    usable: isP256,
    expected: 'a P-256 private key',
    context: wrappedSigningKeyContext(kid),
  });
}

/** A key pair made inside KMS, its private half returned only wrapped under `context`. */
async function generateWrapped(
  kms: KMSClient,
  wrappingKeyId: string,
  kid: string,
  keyPairSpec: 'RSA_2048' | 'RSA_3072' | 'RSA_4096' | 'ECC_NIST_P256',
  context: Record<string, string>,
): Promise<WrappedRecipientKey> {
  const out = await kms.send(
    new GenerateDataKeyPairWithoutPlaintextCommand({
      KeyId: wrappingKeyId,
      KeyPairSpec: keyPairSpec,
      EncryptionContext: context,
    }),
  );
  if (!out.PrivateKeyCiphertextBlob?.length || !out.PublicKey?.length) {
    throw new MissingKeyPairError('KMS GenerateDataKeyPairWithoutPlaintext returned no key pair');
  }
  return {
    kid,
    ciphertextBlob: out.PrivateKeyCiphertextBlob,
    publicKeySpki: out.PublicKey,
    ...(out.KeyId ? { wrappingKeyArn: out.KeyId } : {}),
  };
}

/** An existing PKCS#8 private key, refused unless `usable`, wrapped with KMS `Encrypt` under `context`. */
async function encryptWrapped(
  kms: KMSClient,
  wrappingKeyId: string,
  kid: string,
  pkcs8Der: Uint8Array,
  rule: { usable: (key: KeyObject) => boolean; expected: string; context: Record<string, string> },
): Promise<WrappedRecipientKey> {
  const { context } = rule;
  const key = createPrivateKey({ key: Buffer.from(pkcs8Der), format: 'der', type: 'pkcs8' });
  if (!rule.usable(key)) throw new TypeError(`${rule.expected} is expected`);
  const out = await kms.send(
    new EncryptCommand({ KeyId: wrappingKeyId, Plaintext: pkcs8Der, EncryptionContext: context }),
  );
  if (!out.CiphertextBlob) throw new Error('KMS Encrypt returned no ciphertext');
  return {
    kid,
    ciphertextBlob: out.CiphertextBlob,
    publicKeySpki: createPublicKey(key).export({ format: 'der', type: 'spki' }),
  };
}
