/**
 * Operator side of the cached key mode (docs/KEY-MODES.md): make a recipient key pair inside KMS
 * whose private half only ever leaves KMS wrapped under a symmetric KMS key. The result is what a
 * deployment configures (the wrapped blob) and what senders get (the public JWK).
 *
 * The key pair is made by cached-key-service.ts ({@link generateWrappedRecipientKey}), next to
 * `CachedKeyService` that opens it, so the encryption context written and the one asked for at
 * unwrap time cannot drift apart; this module adds the operator's record and explanations.
 */
import { createPublicKey } from 'node:crypto';
import type { KMSClient } from '@aws-sdk/client-kms';
import {
  generateWrappedRecipientKey,
  generateWrappedSigningKey,
  MissingKeyPairError,
  type WrappedRecipientKey,
} from './cached-key-service.js';
import { createAwsClients } from './clients.js';
import type { RecipientPublicJwk, ResponseSigningPublicJwk, WrappedKeyPurpose } from './deployment-names.js';
import { awsErrorName } from './errors.js';

/** Key-pair specs a recipient key may have: RSA (`RSA-OAEP-256`) or P-256 (`ECDH-ES+A256KW`). */
const RECIPIENT_KEY_PAIR_SPECS = ['RSA_2048', 'RSA_3072', 'RSA_4096', 'ECC_NIST_P256'] as const;
export type RecipientKeyPairSpec = (typeof RECIPIENT_KEY_PAIR_SPECS)[number];

/** The spec deployed recipient keys use (the direct mode's KMS keys are `RSA_4096` too). */
const DEFAULT_RECIPIENT_KEY_PAIR_SPEC: RecipientKeyPairSpec = 'RSA_4096';

/**
 * One wrapped recipient key: what `itk3 keys wrap` prints and what the CDK app reads from
 * `itk3:wrappedKeysFile`. Nothing in it is secret.
 */
export interface WrappedKeyRecord {
  /** The JOSE kid senders put in the JWE header. */
  kid: string;
  /** Base64 KMS ciphertext blob of the PKCS#8 private key: the value for `ITK3_WRAPPED_KEYS`. */
  wrappedPrivateKey: string;
  /** The public key to publish to senders (an ES256 JWK for a response-signing key). */
  publicJwk: RecipientPublicJwk | ResponseSigningPublicJwk;
  /** ARN of the symmetric key the blob is wrapped under (KMS reports it, even when given an alias). */
  wrappingKeyArn: string;
  /**
   * `response-sign` for a response-signing key (`ITK3_WRAPPED_SIGNING_KEYS` of the deliver
   * function); absent for a recipient key, so files written before signing keys read unchanged.
   */
  purpose?: 'response-sign';
}

/** A wrapping attempt failed for a reason the operator can act on; the message says which. */
class KeyWrappingError extends Error {
  override readonly name = 'KeyWrappingError';
}

/** Options of {@link generateWrappedKeyRecord}. */
export interface GenerateWrappedKeyOptions {
  /** Symmetric encryption KMS key: key id, key ARN, alias name or alias ARN. */
  wrappingKeyId: string;
  /** The kid the key pair is for; it is part of the encryption context. */
  kid: string;
  /** @default DEFAULT_RECIPIENT_KEY_PAIR_SPEC (`ECC_NIST_P256`, the only one, for `response-sign`) */
  keyPairSpec?: RecipientKeyPairSpec;
  /**
   * `response-sign` makes a P-256 response-signing key bound to {@link wrappedSigningKeyContext}.
   * @default 'recipient-decrypt'
   */
  purpose?: WrappedKeyPurpose;
}

/**
 * `GenerateDataKeyPairWithoutPlaintext` under `wrappingKeyId`, bound to the kid's encryption
 * context: KMS makes the RSA pair and returns the private key only wrapped, so no plaintext private
 * key exists outside KMS until a decrypt function unwraps it (with `kms:Decrypt` on the wrapping key
 * and the same context). The public key is checked to be RSA of the requested size before it is
 * returned as a JWK.
 *
 * @throws {KeyWrappingError} with an operator-facing reason (unknown key, not symmetric, disabled,
 *   access denied, no credentials, endpoint unreachable)
 *
 * @example
 * ```ts
 * const record = await generateWrappedKeyRecord(kmsClientFromEnv(), {
 *   wrappingKeyId: 'alias/itk3/Itk3Pipeline/recipient-key-wrapping', kid: 'a83627-enc-202705',
 * });
 * ```
 */
export async function generateWrappedKeyRecord(
  kms: KMSClient,
  options: GenerateWrappedKeyOptions,
): Promise<WrappedKeyRecord> {
  const { wrappingKeyId, kid } = options;
  const signing = options.purpose === 'response-sign';
  const keyPairSpec = options.keyPairSpec ?? (signing ? 'ECC_NIST_P256' : DEFAULT_RECIPIENT_KEY_PAIR_SPEC);
  if (signing && keyPairSpec !== 'ECC_NIST_P256') {
    throw new KeyWrappingError(`a response-signing key is ECC_NIST_P256 (ES256), not ${keyPairSpec}`);
  }
  // The same call, context and checks as the tests' and the bench's keys (cached-key-service.ts).
  let generated: WrappedRecipientKey;
  try {
    generated = signing
      ? await generateWrappedSigningKey(kms, wrappingKeyId, kid)
      : await generateWrappedRecipientKey(kms, wrappingKeyId, kid, keyPairSpec);
  } catch (error) {
    const reason =
      error instanceof MissingKeyPairError
        ? error.message
        : explain(error, wrappingKeyId, signing ? 'response-sign' : 'recipient-decrypt');
    throw new KeyWrappingError(reason, { cause: error });
  }
  const publicJwk = recipientJwk(generated.publicKeySpki, kid, keyPairSpec);
  return {
    kid,
    wrappedPrivateKey: Buffer.from(generated.ciphertextBlob).toString('base64'),
    // Same curve point; a signing key is published for ES256 verification, not for encryption.
    publicJwk: signing && publicJwk.kty === 'EC' ? { ...publicJwk, alg: 'ES256', use: 'sig' } : publicJwk,
    // KMS names the key it used; an alias given on the command line resolves to the key here.
    wrappingKeyArn: generated.wrappingKeyArn ?? wrappingKeyId,
    ...(signing ? { purpose: 'response-sign' as const } : {}),
  };
}

/**
 * A KMS client from the usual AWS environment (`AWS_REGION`, `AWS_PROFILE`, `AWS_ENDPOINT_URL`,
 * `AWS_ENDPOINT_URL_KMS`), built like every other client of the project.
 */
export function kmsClientFromEnv(env: NodeJS.ProcessEnv = process.env): KMSClient {
  return createAwsClients({ env }).kms;
}

/** The SPKI KMS returned as a recipient JWK, refusing anything but a key of the requested spec. */
function recipientJwk(spki: Uint8Array, kid: string, spec: RecipientKeyPairSpec): RecipientPublicJwk {
  const key = createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' });
  if (spec === 'ECC_NIST_P256') {
    if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
      throw new KeyWrappingError(`KMS returned a public key that is not ${spec}`);
    }
    const { x, y } = key.export({ format: 'jwk' });
    if (typeof x !== 'string' || typeof y !== 'string') {
      throw new KeyWrappingError('KMS returned a public key without coordinates');
    }
    return { kty: 'EC', kid, alg: 'ECDH-ES+A256KW', use: 'enc', crv: 'P-256', x, y };
  }
  const bits = Number(spec.slice('RSA_'.length));
  if (key.asymmetricKeyType !== 'rsa' || key.asymmetricKeyDetails?.modulusLength !== bits) {
    throw new KeyWrappingError(`KMS returned a public key that is not ${spec}`);
  }
  const jwk = key.export({ format: 'jwk' });
  if (typeof jwk.n !== 'string' || typeof jwk.e !== 'string') {
    throw new KeyWrappingError('KMS returned a public key without modulus or exponent');
  }
  // Only the public members, in the order senders' JWKS entries have them.
  return { kty: 'RSA', kid, alg: 'RSA-OAEP-256', use: 'enc', n: jwk.n, e: jwk.e };
}

/** What went wrong, in terms of what to fix. Never includes anything but names and the key id. */
function explain(error: unknown, keyId: string, purpose: WrappedKeyPurpose): string {
  const name = awsErrorName(error) ?? 'unknown error';
  const code = (error as { code?: unknown } | null)?.code;
  switch (name) {
    case 'NotFoundException':
      return `wrapping key ${keyId} not found (check the key id and AWS_REGION / AWS_PROFILE)`;
    case 'InvalidKeyUsageException':
    case 'UnsupportedOperationException':
      return `${keyId} is not a symmetric encryption key: the wrapping key must be SYMMETRIC_DEFAULT with key usage ENCRYPT_DECRYPT`;
    case 'DisabledException':
      return `wrapping key ${keyId} is disabled`;
    case 'KMSInvalidStateException':
      return `wrapping key ${keyId} cannot be used in its current state (pending deletion or import?)`;
    case 'AccessDeniedException':
      return `not allowed to call kms:GenerateDataKeyPairWithoutPlaintext on ${keyId} with encryption context itk3:purpose=${purpose} (docs/KEY-MODES.md, "Who may do what")`;
    case 'CredentialsProviderError':
      return 'no AWS credentials found (set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)';
    case 'UnrecognizedClientException':
    case 'InvalidSignatureException':
    case 'ExpiredTokenException':
      return `AWS rejected the credentials (${name})`;
    default:
      if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) {
        return `cannot reach KMS (${code}): check AWS_REGION or AWS_ENDPOINT_URL`;
      }
      return `KMS GenerateDataKeyPairWithoutPlaintext failed (${name})`;
  }
}
