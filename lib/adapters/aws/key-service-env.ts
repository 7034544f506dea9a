/**
 * The key service of the AWS runtimes, from the environment: which KMS key each kid is, and the key
 * mode (`direct` or `cached`, docs/KEY-MODES.md). Only the functions that use a private key (authenticate
 * for MESH attestations, decrypt, deliver, the MESH poller) build one.
 */
import type { KMSClient } from '@aws-sdk/client-kms';
import type { LoadedConfig } from '../../config/load.js';
import { ConfigError } from '../../errors.js';
import { ENV } from '../../infra/definitions.js';
import type { KeyService } from '../../ports/index.js';
import { CachedKeyService } from './cached-key-service.js';
import { nonEmpty } from './client-options.js';
import { KEY_MODE_ENV } from './deployment-names.js';
import { KmsKeyService } from './kms-key-service.js';

/**
 * kid → KMS key id: `recipients[].keys[].kmsKeyId` and `responseSigning.kmsKeyId` from the
 * configuration, overridden per kid by the `ITK3_KMS_KEYS` JSON object (which a deployment or the
 * emulator provisioner sets, since key ids are only known after the keys exist).
 *
 * @throws {ConfigError} when `ITK3_KMS_KEYS` is not a JSON object of strings
 */
export function kmsKeyMap(
  config: LoadedConfig,
  env: NodeJS.ProcessEnv = process.env,
): Record<string, string> {
  const map: Record<string, string> = {};
  for (const recipient of config.doc.recipients) {
    for (const key of recipient.keys) if (key.kmsKeyId) map[key.kid] = key.kmsKeyId;
  }
  if (config.doc.responseSigning.kmsKeyId)
    map[config.doc.responseSigning.kid] = config.doc.responseSigning.kmsKeyId;
  const raw = nonEmpty(env[ENV.kmsKeys]);
  if (raw === undefined) return map;
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new ConfigError([`${ENV.kmsKeys}: not valid JSON`]);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new ConfigError([`${ENV.kmsKeys}: must be a JSON object of kid → KMS key id`]);
  }
  const problems: string[] = [];
  for (const [kid, keyId] of Object.entries(parsed)) {
    if (typeof keyId === 'string' && keyId.length > 0) map[kid] = keyId;
    else problems.push(`${ENV.kmsKeys}.${kid}: must be a non-empty string`);
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return map;
}

/**
 * The {@link KeyService} of the AWS runtimes, by `ITK3_KEY_MODE`: `direct` (the default, also when
 * unset) keeps every private-key operation in KMS; `cached` unwraps each recipient key of
 * `ITK3_WRAPPED_KEYS` once per container and TTL and opens content keys locally, and each
 * response-signing key of `ITK3_WRAPPED_SIGNING_KEYS` likewise (one of the two may be absent: the
 * deliver function has only a signing key).
 *
 * @throws {ConfigError} for an unknown mode, or a cached mode without valid wrapped keys or TTL
 *
 * @example
 * ```ts
 * const keys = keyServiceFromEnv(config, new KMSClient({}), {
 *   ITK3_KEY_MODE: 'cached', ITK3_WRAPPED_KEYS: '{"rx-2025":"AQIDAHh…"}',
 * });
 * ```
 */
export function keyServiceFromEnv(
  config: LoadedConfig,
  kms: KMSClient,
  env: NodeJS.ProcessEnv = process.env,
): KeyService {
  const mode = nonEmpty(env[KEY_MODE_ENV.mode]) ?? 'direct';
  const keyIds = kmsKeyMap(config, env);
  if (mode === 'direct') return new KmsKeyService(kms, keyIds);
  if (mode !== 'cached') {
    throw new ConfigError([`${KEY_MODE_ENV.mode}: must be "direct" or "cached", not "${mode}"`]);
  }
  const wrappedSigningKeys =
    nonEmpty(env[KEY_MODE_ENV.wrappedSigningKeys]) === undefined
      ? undefined
      : wrappedKeysFromEnv(env, KEY_MODE_ENV.wrappedSigningKeys);
  // The deliver function of a deployment has a wrapped signing key and no recipient key.
  const wrappedKeys =
    wrappedSigningKeys && nonEmpty(env[KEY_MODE_ENV.wrappedKeys]) === undefined
      ? {}
      : wrappedKeysFromEnv(env);
  const ttlRaw = nonEmpty(env[KEY_MODE_ENV.ttlSeconds]);
  const ttlSeconds = ttlRaw === undefined ? undefined : Number(ttlRaw);
  if (ttlSeconds !== undefined && !(Number.isInteger(ttlSeconds) && ttlSeconds > 0 && ttlSeconds <= 86_400)) {
    throw new ConfigError([`${KEY_MODE_ENV.ttlSeconds}: a whole number of seconds, 1–86400`]);
  }
  const wrappingKeyId = nonEmpty(env[KEY_MODE_ENV.wrappingKeyId]);
  return new CachedKeyService(kms, {
    wrappedKeys,
    ...(wrappedSigningKeys ? { wrappedSigningKeys } : {}),
    kmsKeyIds: keyIds,
    ...(wrappingKeyId ? { wrappingKeyId } : {}),
    ...(ttlSeconds !== undefined ? { ttlSeconds } : {}),
  });
}

/** `ITK3_WRAPPED_KEYS` (or `name`): a non-empty JSON object of kid → base64 ciphertext blob. */
function wrappedKeysFromEnv(
  env: NodeJS.ProcessEnv,
  name: string = KEY_MODE_ENV.wrappedKeys,
): Record<string, Uint8Array> {
  const raw = nonEmpty(env[name]);
  if (raw === undefined) {
    throw new ConfigError([
      `${name}: required when ${KEY_MODE_ENV.mode}=cached (or ${KEY_MODE_ENV.wrappedSigningKeys} alone)`,
    ]);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new ConfigError([`${name}: not valid JSON`]);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new ConfigError([`${name}: must be a JSON object of kid → base64 KMS ciphertext blob`]);
  }
  const out: Record<string, Uint8Array> = {};
  const problems: string[] = [];
  for (const [kid, blob] of Object.entries(parsed)) {
    if (typeof blob === 'string' && /^[A-Za-z0-9+/]+={0,2}$/.test(blob))
      out[kid] = Buffer.from(blob, 'base64');
    else problems.push(`${name}.${kid}: must be a base64 string`);
  }
  if (Object.keys(out).length === 0 && problems.length === 0) problems.push(`${name}: names no key`);
  if (problems.length > 0) throw new ConfigError(problems);
  return out;
}
