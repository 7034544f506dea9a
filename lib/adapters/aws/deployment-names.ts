/**
 * What the CDK construct and the AWS adapters must agree on: environment variable names, key
 * prefixes, the wrapped keys' encryption context. Nothing here imports the AWS SDK, so the construct
 * reads these at synth without loading a client (the package's consumers synthesise without the SDK).
 */
import { posix } from 'node:path';

/**
 * Key-mode variables of the decrypt function (docs/KEY-MODES.md), read by `keyServiceFromEnv`
 * (clients.ts) and set by the construct.
 */
export const KEY_MODE_ENV = {
  /** `direct` (default): one KMS `Decrypt` (RSA) per message. `cached`: `CachedKeyService`. */
  mode: 'ITK3_KEY_MODE',
  /** Cached mode: JSON object kid → base64 KMS ciphertext blob of the recipient private key. */
  wrappedKeys: 'ITK3_WRAPPED_KEYS',
  /** Cached mode, optional: the symmetric KMS key the blobs must be wrapped under. */
  wrappingKeyId: 'ITK3_WRAPPING_KEY_ID',
  /** Cached mode, optional: seconds an unwrapped key is used (default 300). */
  ttlSeconds: 'ITK3_KEY_CACHE_TTL_SECONDS',
  /**
   * Cached mode, optional: JSON object kid → base64 KMS ciphertext blob of a P-256
   * response-signing key (ES256 in the function, no KMS `Sign` per response; docs/KEY-MODES.md).
   */
  wrappedSigningKeys: 'ITK3_WRAPPED_SIGNING_KEYS',
} as const;

/** How long an unwrapped private key is used before KMS is asked again (revocation lag). */
export const DEFAULT_KEY_CACHE_TTL_SECONDS = 300;

/**
 * Encryption context every wrapped recipient key is bound to. KMS refuses `Decrypt` with any other
 * context, so a blob cannot be replayed under another kid; CloudTrail records the context, so the
 * audit trail names the kid; and a key policy can allow `kms:Decrypt` only with
 * `kms:EncryptionContext:itk3:purpose = recipient-decrypt`.
 */
export function wrappedKeyContext(kid: string): Record<string, string> {
  return { 'itk3:purpose': 'recipient-decrypt', 'itk3:kid': kid };
}

/**
 * Encryption context of a wrapped response-signing key: another purpose, so a recipient blob can
 * never be loaded as a signing key nor a signing blob as a recipient key, and a key policy can grant
 * `kms:Decrypt` for signing keys to the deliver role alone.
 */
export function wrappedSigningKeyContext(kid: string): Record<string, string> {
  return { 'itk3:purpose': 'response-sign', 'itk3:kid': kid };
}

/** Public JWK of a recipient key, as senders need it to seal messages (docs/WIRE-FORMAT.md). */
export type RecipientPublicJwk =
  | { kty: 'RSA'; kid: string; alg: 'RSA-OAEP-256'; use: 'enc'; n: string; e: string }
  | { kty: 'EC'; kid: string; alg: 'ECDH-ES+A256KW'; use: 'enc'; crv: 'P-256'; x: string; y: string };

/**
 * Public JWK of a wrapped response-signing key (`itk3 keys wrap --purpose response-sign`): senders
 * verify ITK3 responses with it, `itk3 audit verify` the audit checkpoints.
 */
export type ResponseSigningPublicJwk = {
  kty: 'EC';
  kid: string;
  alg: 'ES256';
  use: 'sig';
  crv: 'P-256';
  x: string;
  y: string;
};

/** What a wrapped key is for: the `itk3:purpose` of its encryption context. */
export type WrappedKeyPurpose = 'recipient-decrypt' | 'response-sign';

/** Environment the MESH poller function reads (set by cdk/constructs/mesh-poller.ts). */
export const MESH_POLL_ENV = {
  /** MESH base URL, `https://host[:port]`. */
  url: 'ITK3_MESH_URL',
  /** JSON object: mailbox id → Secrets Manager secret ARN (or name) of its credentials. */
  mailboxes: 'ITK3_MESH_MAILBOXES',
  /** Optional CA bundle (PEM) trusted for MESH when a mailbox secret has none (bundled, not a secret). */
  caBundle: 'ITK3_MESH_CA_BUNDLE',
  /** Optional JSON of poll limits (`maxMessages`, `maxMessageBytes`, `maxBytesPerPass`). */
  pollOptions: 'ITK3_MESH_POLL_OPTIONS',
} as const;

/** Partition-key prefix of the per-mailbox poll leases in the once-table. */
export const MESH_LEASE_PREFIX = 'lease#mesh#';

/** Prefix, in the pipeline's blob bucket, of deliveries whose configured target is a folder. */
const FOLDER_DELIVERY_PREFIX = 'deliveries/';

/** `deliveries/<path>/<name>`, with `path` made relative and free of `..` (a key, not a file). */
export function folderKey(path: string, name: string): string {
  const normal = posix
    .normalize(`/${path.replaceAll('\\', '/')}`)
    .replace(/^\/+/, '')
    .replace(/\/+$/, '');
  return `${FOLDER_DELIVERY_PREFIX}${normal ? `${normal}/` : ''}${name}`;
}
