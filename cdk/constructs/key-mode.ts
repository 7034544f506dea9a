import { type Duration, Token } from 'aws-cdk-lib';
import type * as kms from 'aws-cdk-lib/aws-kms';
import type {
  RecipientPublicJwk,
  ResponseSigningPublicJwk,
} from '../../lib/adapters/aws/deployment-names.js';
import {
  DEFAULT_KEY_CACHE_TTL_SECONDS,
  wrappedKeyContext,
  wrappedSigningKeyContext,
} from '../../lib/adapters/aws/deployment-names.js';
import type { PipelineConfig } from '../../lib/config/schema.js';
import { ConfigError } from '../../lib/errors.js';

/** The default: every content-key unwrap is one KMS `Decrypt` with the recipient's RSA KMS key.
 * @public part of the construct's props (the package's `./cdk` export)
 */
export interface DirectKeyMode {
  readonly mode: 'direct';
}

/**
 * The cached mode (docs/KEY-MODES.md; trade-off in docs/PERFORMANCE.md, "Security trade-off of the
 * cached mode"): each recipient private key is a blob wrapped under a symmetric KMS key, unwrapped
 * once per container and TTL, and content keys are opened in the function.
 *
 * A wrapped kid has **no RSA KMS key**: the key pair was made by `itk3 keys wrap`
 * (`GenerateDataKeyPairWithoutPlaintext`), so its public key comes from that command's output, not
 * from KMS, and the decrypt role gets no `kms:Decrypt` on any RSA key for it.
 */
export interface CachedKeyMode {
  readonly mode: 'cached';
  /**
   * kid → base64 wrapped private key (`wrappedPrivateKey` of `itk3 keys wrap`). Every recipient kid
   * of the configuration needs one, unless it is listed in {@link directKids}. The blobs are not
   * secret; they are compiled into the decrypt function's bundle, because one RSA-4096 blob alone
   * (≥ 3.2 KB of base64) leaves no room in Lambda's 4 KB of environment variables.
   */
  readonly wrappedKeys: Readonly<Record<string, string>>;
  /**
   * The symmetric KMS key the blobs are wrapped under. Its key policy is then yours: it must let
   * the decrypt role `kms:Decrypt` (the role's own policy gets the grant, with the encryption-context
   * condition).
   * @default - a key this stack creates: symmetric, yearly rotation, alias
   *   `alias/itk3/<stack name>/recipient-key-wrapping`, the pipeline's removal policy (RETAIN by default);
   *   its key policy lets only the decrypt role `kms:Decrypt`, and the account generate wrapped key pairs
   */
  readonly wrappingKey?: kms.IKey;
  /**
   * ARN (or key id) of an existing wrapping key, for callers without a construct scope to import
   * one (the CDK app's `itk3:wrappingKeyArn` context). Aliases are refused: an IAM grant cannot be
   * scoped to the key behind one. Give this or {@link wrappingKey}, not both.
   * @default - see {@link wrappingKey}
   */
  readonly wrappingKeyArn?: string;
  /**
   * How long a decrypt container uses an unwrapped key before asking KMS again: the revocation lag.
   * Whole seconds, 1 s to 24 h.
   * @default Duration.seconds(300)
   */
  readonly cacheTtl?: Duration;
  /**
   * Recipient kids that stay on their RSA KMS key (one KMS `Decrypt` per message) in cached mode:
   * the old kids while senders move to new wrapped kids, or new KMS-backed kids on the way back to
   * direct mode. Listed explicitly so that a forgotten wrapped key fails the synth instead of
   * silently staying on KMS.
   * @default - none: every recipient kid must be wrapped
   */
  readonly directKids?: readonly string[];
  /**
   * Public JWKs of the wrapped kids (`publicJwk` of `itk3 keys wrap`), published in the stack's
   * `RecipientPublicJwks` output so senders can fetch them like the KMS keys' ARNs.
   * @default - none: the operator publishes the public JWKs from the `keys wrap` output
   */
  readonly publicJwks?: readonly RecipientPublicJwk[];
  /**
   * The response-signing key wrapped under the same wrapping key (`itk3 keys wrap --purpose
   * response-sign`), for `responseSigning.kid`: the deliver function unwraps it once per container
   * and TTL and signs responses and audit checkpoints with it locally — no KMS `Sign` per response.
   * The stack then has **no** KMS response-signing key (a kid is one key pair), and its public JWK
   * is the `ResponseSigningPublicJwk` output. A trade-off: docs/KEY-MODES.md, "Cached
   * response-signing key".
   * @default - responses are signed by the KMS response-signing key, one `Sign` each
   */
  readonly wrappedSigningKey?: WrappedSigningKey;
}

/** A wrapped response-signing key: an entry of `itk3 keys wrap --purpose response-sign`. */
export interface WrappedSigningKey {
  /** Must be the configuration's `responseSigning.kid`: the deliver stage signs with that kid. */
  readonly kid: string;
  /** Base64 KMS ciphertext blob of the PKCS#8 P-256 private key (`wrappedPrivateKey`). */
  readonly wrappedPrivateKey: string;
  /** Its public ES256 JWK (`publicJwk`), published in the `ResponseSigningPublicJwk` output. */
  readonly publicJwk: ResponseSigningPublicJwk;
}

/** How the decrypt stage gets recipient private keys. */
export type KeyModeProps = DirectKeyMode | CachedKeyMode;

/** {@link KeyModeProps} after validation, with defaults applied. */
export interface ResolvedKeyMode {
  readonly mode: 'direct' | 'cached';
  /** kid → base64 blob; empty in direct mode. */
  readonly wrappedKeys: Readonly<Record<string, string>>;
  /** The kids in {@link wrappedKeys}. */
  readonly wrappedKids: ReadonlySet<string>;
  /** Unwrapped-key lifetime in seconds (cached mode). */
  readonly ttlSeconds: number;
  readonly wrappingKey?: kms.IKey;
  readonly wrappingKeyArn?: string;
  readonly publicJwks: readonly RecipientPublicJwk[];
  /** Cached mode: the wrapped response-signing key, validated. */
  readonly wrappedSigningKey?: WrappedSigningKey;
}

const TTL_MAX_SECONDS = 86_400;

/** The `itk3:purpose` of every wrapped recipient key's encryption context (`wrappedKeyContext`). */
export const WRAPPED_KEY_PURPOSE = wrappedKeyContext('any')['itk3:purpose'];
/** The `itk3:purpose` of a wrapped response-signing key's encryption context. */
export const WRAPPED_SIGNING_KEY_PURPOSE = wrappedSigningKeyContext('any')['itk3:purpose'];

/**
 * A wrapped RSA-2048 private key is at least its PKCS#8 DER (≈ 1 190 bytes); anything much shorter
 * is something else pasted by mistake (a public key, a kid, a key id).
 */
const MIN_WRAPPED_BYTES = 1024;
/** The same for a P-256 recipient key (`keySpec` `ECC_NIST_P256`): its PKCS#8 DER is ≈ 138 bytes. */
const MIN_WRAPPED_P256_BYTES = 128;

/** JWK members that carry private key material: never in a published key. */
const PRIVATE_JWK_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'] as const;

/**
 * Validate the key mode against the configuration and apply defaults. Every problem is collected
 * and thrown as one `ConfigError`, so `cdk synth` lists them all: each recipient kid without a
 * wrapped key, blobs that are not base64, wrapped kids the configuration does not have, and so on.
 *
 * @throws {ConfigError}
 */
export function resolveKeyMode(keyMode: KeyModeProps | undefined, config: PipelineConfig): ResolvedKeyMode {
  if (keyMode === undefined || keyMode.mode === 'direct') {
    return {
      mode: 'direct',
      wrappedKeys: {},
      wrappedKids: new Set(),
      ttlSeconds: DEFAULT_KEY_CACHE_TTL_SECONDS,
      publicJwks: [],
    };
  }
  // Callers in plain JavaScript or from parsed context can pass anything.
  const mode: unknown = (keyMode as { mode?: unknown }).mode;
  if (mode !== 'cached') {
    throw new ConfigError([`keyMode.mode: must be "direct" or "cached", not "${String(mode)}"`]);
  }
  const problems: string[] = [];
  const wrappedKeys = { ...keyMode.wrappedKeys };
  const directKids = new Set(keyMode.directKids ?? []);

  // Where each configured recipient kid is, for coverage and for messages that name the recipient.
  const configured = new Map<string, { ods: string; where: string; kmsKeyId?: string; p256: boolean }>();
  for (const [r, recipient] of config.recipients.entries()) {
    for (const [k, key] of recipient.keys.entries()) {
      configured.set(key.kid, {
        ods: recipient.ods,
        where: `recipients.${r}.keys.${k}`,
        kmsKeyId: key.kmsKeyId,
        p256: key.keySpec === 'ECC_NIST_P256',
      });
    }
  }

  for (const [kid, { ods, where, kmsKeyId }] of configured) {
    const wrapped = Object.hasOwn(wrappedKeys, kid);
    if (!wrapped && !directKids.has(kid)) {
      problems.push(
        `keyMode.wrappedKeys: no wrapped key for kid "${kid}" (recipient ${ods}): run itk3 keys wrap --kid ${kid}, or list it in directKids to keep it on its KMS key`,
      );
    }
    if (wrapped && kmsKeyId) {
      // One kid is one key pair: the existing KMS key and the wrapped pair are two different keys.
      problems.push(
        `${where}: kid "${kid}" names an existing KMS key (kmsKeyId) and also has a wrapped key; a kid is one key pair — keep it in directKids or wrap a new kid`,
      );
    }
  }
  for (const [kid, blob] of Object.entries(wrappedKeys)) {
    if (!configured.has(kid)) {
      problems.push(`keyMode.wrappedKeys.${kid}: not a recipient kid of the configuration`);
    }
    const blobProblem = base64Problem(
      blob,
      configured.get(kid)?.p256 ? MIN_WRAPPED_P256_BYTES : MIN_WRAPPED_BYTES,
    );
    if (blobProblem) problems.push(`keyMode.wrappedKeys.${kid}: ${blobProblem}`);
    if (directKids.has(kid)) problems.push(`keyMode.directKids: "${kid}" is also wrapped; choose one`);
  }
  for (const kid of directKids) {
    if (!configured.has(kid))
      problems.push(`keyMode.directKids: "${kid}" is not a recipient kid of the configuration`);
  }

  let ttlSeconds = DEFAULT_KEY_CACHE_TTL_SECONDS;
  if (keyMode.cacheTtl !== undefined) {
    const ttl = keyMode.cacheTtl;
    const ms = Token.isUnresolved(ttl) ? Number.NaN : ttl.toMilliseconds({ integral: false });
    // The function reads whole seconds (ITK3_KEY_CACHE_TTL_SECONDS), so the value must be one at synth.
    if (!(Number.isInteger(ms / 1000) && ms >= 1000 && ms <= TTL_MAX_SECONDS * 1000)) {
      problems.push(
        `keyMode.cacheTtl: whole seconds from 1 to ${TTL_MAX_SECONDS}, not ${ttl.toHumanString()}`,
      );
    } else {
      ttlSeconds = ms / 1000;
    }
  }

  if (keyMode.wrappingKey && keyMode.wrappingKeyArn) {
    problems.push('keyMode: give wrappingKey or wrappingKeyArn, not both');
  }
  // An IAlias is an IKey too, but a grant on the alias ARN does not reach the key behind it.
  const aliasName = (keyMode.wrappingKey as Partial<kms.IAlias> | undefined)?.aliasName;
  const keyArn = keyMode.wrappingKey?.keyArn;
  if (typeof aliasName === 'string' || (keyArn && !Token.isUnresolved(keyArn) && /:alias\//.test(keyArn))) {
    problems.push(
      `keyMode.wrappingKey: "${aliasName ?? keyArn}" is an alias; give the key itself so grants name the key`,
    );
  }

  const publicJwks = keyMode.publicJwks ?? [];
  const published = new Set<string>();
  for (const [i, jwk] of publicJwks.entries()) {
    const kid = jwk.kid;
    for (const problem of publicJwkProblems(jwk)) problems.push(`keyMode.publicJwks.${i}: ${problem}`);
    if (typeof kid === 'string' && !Object.hasOwn(wrappedKeys, kid)) {
      problems.push(`keyMode.publicJwks.${i}: kid "${kid}" has no wrapped key`);
    }
    if (typeof kid === 'string' && published.has(kid)) {
      problems.push(`keyMode.publicJwks.${i}: kid "${kid}" appears twice`);
    }
    published.add(kid);
  }

  const signingKey = keyMode.wrappedSigningKey;
  if (signingKey !== undefined) problems.push(...wrappedSigningKeyProblems(signingKey, config));

  if (problems.length > 0) throw new ConfigError(problems);
  return {
    mode: 'cached',
    wrappedKeys,
    wrappedKids: new Set(Object.keys(wrappedKeys)),
    ttlSeconds,
    ...(keyMode.wrappingKey ? { wrappingKey: keyMode.wrappingKey } : {}),
    ...(keyMode.wrappingKeyArn ? { wrappingKeyArn: keyMode.wrappingKeyArn } : {}),
    publicJwks,
    ...(signingKey ? { wrappedSigningKey: signingKey } : {}),
  };
}

/** Problems of the wrapped response-signing key against the configuration. */
function wrappedSigningKeyProblems(key: WrappedSigningKey, config: PipelineConfig): string[] {
  const at = 'keyMode.wrappedSigningKey';
  const problems: string[] = [];
  const { kid, wrappedPrivateKey, publicJwk } = key as Partial<WrappedSigningKey>;
  const signingKid = config.responseSigning.kid;
  if (kid !== signingKid) {
    problems.push(
      `${at}.kid: "${String(kid)}" is not responseSigning.kid "${signingKid}" (the kid the deliver stage signs with); run itk3 keys wrap --purpose response-sign --kid ${signingKid}`,
    );
  }
  if (config.responseSigning.kmsKeyId) {
    problems.push(
      `responseSigning.kmsKeyId: names an existing KMS key, and keyMode.wrappedSigningKey is a second key pair for kid "${signingKid}"; a kid is one key pair — drop one of them`,
    );
  }
  const blobProblem = base64Problem(wrappedPrivateKey, MIN_WRAPPED_P256_BYTES);
  if (blobProblem) problems.push(`${at}.wrappedPrivateKey: ${blobProblem}`);
  if (typeof publicJwk !== 'object' || publicJwk === null) {
    problems.push(`${at}.publicJwk: required (publicJwk of itk3 keys wrap --purpose response-sign)`);
    return problems;
  }
  const members = publicJwk as unknown as Record<string, unknown>;
  const leaked = PRIVATE_JWK_MEMBERS.filter((m) => members[m] !== undefined);
  if (leaked.length > 0)
    problems.push(
      `${at}.publicJwk: holds private key members (${leaked.join(', ')}); publish the public JWK only`,
    );
  if (members.kty !== 'EC' || members.crv !== 'P-256')
    problems.push(`${at}.publicJwk: must be an EC P-256 key`);
  if (typeof members.x !== 'string' || typeof members.y !== 'string')
    problems.push(`${at}.publicJwk: x and y are required`);
  if (members.alg !== 'ES256') problems.push(`${at}.publicJwk: alg must be "ES256"`);
  if (members.use !== 'sig') problems.push(`${at}.publicJwk: use must be "sig"`);
  if (members.kid !== kid) problems.push(`${at}.publicJwk: kid must be "${String(kid)}"`);
  return problems;
}

/**
 * IAM conditions that bind `kms:Decrypt` on the wrapping key to the wrapped kids: the request's
 * encryption context must be exactly the one `CachedKeyService` sends ({@link wrappedKeyContext}),
 * with a kid of this deployment. Built from that function, so the policy follows the code.
 */
export function wrappedKeyConditions(
  kids: Iterable<string>,
  context: (kid: string) => Record<string, string> = wrappedKeyContext,
): Record<string, Record<string, unknown>> {
  const values = new Map<string, Set<string>>();
  for (const kid of kids) {
    for (const [key, value] of Object.entries(context(kid))) {
      if (!values.has(key)) values.set(key, new Set());
      values.get(key)?.add(value);
    }
  }
  const equals: Record<string, string | string[]> = {};
  for (const [key, set] of [...values].sort(([a], [b]) => a.localeCompare(b))) {
    const list = [...set].sort();
    equals[`kms:EncryptionContext:${key}`] = list.length === 1 ? (list[0] as string) : list;
  }
  return {
    StringEquals: equals,
    // No extra context keys either: a request carrying more than the kid's context is not ours.
    'ForAllValues:StringEquals': { 'kms:EncryptionContextKeys': [...values.keys()].sort() },
  };
}

/** Why `blob` is not a wrapped key in canonical base64, or undefined if it may be one. */
function base64Problem(blob: unknown, minBytes: number): string | undefined {
  if (typeof blob !== 'string') return 'must be a base64 string';
  // Canonical standard base64 only: the runtime (ITK3_WRAPPED_KEYS) accepts nothing else.
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(blob) || blob.length % 4 !== 0) return 'not valid base64';
  const bytes = Buffer.from(blob, 'base64');
  if (bytes.toString('base64') !== blob) return 'not valid base64';
  if (bytes.length < minBytes) {
    return `decodes to ${bytes.length} bytes: too short for a wrapped ${minBytes === MIN_WRAPPED_BYTES ? 'RSA' : 'P-256'} private key (use wrappedPrivateKey of itk3 keys wrap)`;
  }
  return undefined;
}

/**
 * Problems of a JWK to publish for a wrapped kid: RSA (`RSA-OAEP-256`) or P-256 (`ECDH-ES+A256KW`),
 * public members only, the recipient alg/use.
 */
function publicJwkProblems(jwk: RecipientPublicJwk): string[] {
  const problems: string[] = [];
  const members = jwk as unknown as Record<string, unknown>;
  const leaked = PRIVATE_JWK_MEMBERS.filter((m) => members[m] !== undefined);
  if (leaked.length > 0)
    problems.push(`holds private key members (${leaked.join(', ')}); publish the public JWK only`);
  if (members.kty === 'EC') {
    if (members.crv !== 'P-256') problems.push('crv must be "P-256"');
    if (typeof members.x !== 'string' || typeof members.y !== 'string') problems.push('x and y are required');
    if (members.alg !== undefined && members.alg !== 'ECDH-ES+A256KW')
      problems.push('alg must be "ECDH-ES+A256KW"');
  } else {
    if (members.kty !== 'RSA') problems.push('kty must be "RSA" or "EC"');
    if (typeof members.n !== 'string' || typeof members.e !== 'string') problems.push('n and e are required');
    if (members.alg !== undefined && members.alg !== 'RSA-OAEP-256')
      problems.push('alg must be "RSA-OAEP-256"');
  }
  if (typeof members.kid !== 'string') problems.push('kid is required');
  if (members.use !== undefined && members.use !== 'enc') problems.push('use must be "enc"');
  return problems;
}
