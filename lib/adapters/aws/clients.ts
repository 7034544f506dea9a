import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { KMSClient } from '@aws-sdk/client-kms';
import { S3Client } from '@aws-sdk/client-s3';
import { SQSClient } from '@aws-sdk/client-sqs';
import type { LoadedConfig } from '../../config/load.js';
import { ConfigError } from '../../errors.js';
import { AUDIT_TABLE, BLOB_BUCKET, ENV, ONCE_TABLE } from '../../infra/definitions.js';
import { type KeyService, type Ports, type QueueName, STAGES, systemClock } from '../../ports/index.js';
import { AwsDeliverer } from './aws-deliverer.js';
import { CachedKeyService } from './cached-key-service.js';
import { countCallsOf } from './calls.js';
import { KEY_MODE_ENV } from './deployment-names.js';
import { DynamoAuditLog } from './dynamo-audit-log.js';
import { DynamoOnceStore } from './dynamo-once-store.js';
import { KmsKeyService } from './kms-key-service.js';
import { awsMeshDeliverer } from './mesh-delivery.js';
import { awsMeshConnectionFromEnv } from './mesh-poll-job.js';
import { S3BlobStore } from './s3-blob-store.js';
import { SqsQueueSender } from './sqs-queue-sender.js';

/** The four SDK clients the adapters use. */
export interface AwsClients {
  kms: KMSClient;
  sqs: SQSClient;
  dynamodb: DynamoDBClient;
  s3: S3Client;
}

/** Where the clients point. Everything defaults to the environment. */
export interface AwsClientOptions {
  /** One endpoint for every service (an emulator). Default: `AWS_ENDPOINT_URL_<SERVICE>`, then `AWS_ENDPOINT_URL`. */
  endpoint?: string;
  /** Default: `AWS_REGION`, `AWS_DEFAULT_REGION`, and `us-east-1` when an endpoint is set. */
  region?: string;
  /** Environment to read (tests pass their own). Default: `process.env`. */
  env?: NodeJS.ProcessEnv;
  /**
   * Static credentials, for emulators (`test`/`test`: a non-numeric key, since ministack takes a
   * 12-digit access key as an account id). Default: the SDK's provider chain.
   */
  credentials?: { accessKeyId: string; secretAccessKey: string };
}

/** The SDK's service ids as used in `AWS_ENDPOINT_URL_<ID>` (upper case, spaces as `_`). */
const ENDPOINT_ENV: Record<keyof AwsClients, string> = {
  kms: 'AWS_ENDPOINT_URL_KMS',
  sqs: 'AWS_ENDPOINT_URL_SQS',
  dynamodb: 'AWS_ENDPOINT_URL_DYNAMODB',
  s3: 'AWS_ENDPOINT_URL_S3',
};

/**
 * Endpoint for one service: explicit option, then the service-specific variable (routes one service
 * to a sidecar, e.g. DynamoDB on ministack beside LocalStack), then `AWS_ENDPOINT_URL`. Resolved
 * here rather than left to the SDK so the rule is the same on every SDK version and visible in tests.
 */
export function endpointFor(service: keyof AwsClients, opts: AwsClientOptions = {}): string | undefined {
  const env = opts.env ?? process.env;
  return opts.endpoint ?? nonEmpty(env[ENDPOINT_ENV[service]]) ?? nonEmpty(env.AWS_ENDPOINT_URL);
}

/**
 * Build the four clients, each counting its calls ({@link countCallsOf}). With an endpoint (an emulator): region defaults to `us-east-1` and S3 uses
 * path-style URLs, since virtual-hosted names such as `bucket.127.0.0.1` do not resolve.
 * Without one: plain SDK defaults (region and credentials from the Lambda environment).
 *
 * @example
 * ```ts
 * const clients = createAwsClients({ endpoint: 'http://127.0.0.1:4566' });
 * ```
 */
export function createAwsClients(opts: AwsClientOptions = {}): AwsClients {
  const env = opts.env ?? process.env;
  const anyEndpoint = (Object.keys(ENDPOINT_ENV) as (keyof AwsClients)[]).some((s) => endpointFor(s, opts));
  const region =
    opts.region ??
    nonEmpty(env.AWS_REGION) ??
    nonEmpty(env.AWS_DEFAULT_REGION) ??
    (anyEndpoint ? 'us-east-1' : undefined);
  const common = (service: keyof AwsClients) => {
    const endpoint = endpointFor(service, opts);
    return {
      ...(region ? { region } : {}),
      ...(endpoint ? { endpoint } : {}),
      ...(opts.credentials ? { credentials: opts.credentials } : {}),
      // Bounded waits: a dead endpoint must fail the record (and be retried), not hang the batch.
      requestHandler: { connectionTimeout: 3_000, requestTimeout: 30_000 },
    };
  };
  const clients: AwsClients = {
    kms: new KMSClient(common('kms')),
    sqs: new SQSClient(common('sqs')),
    dynamodb: new DynamoDBClient(common('dynamodb')),
    s3: new S3Client({ ...common('s3'), forcePathStyle: endpointFor('s3', opts) !== undefined }),
  };
  countCallsOf('kms', clients.kms.middlewareStack);
  countCallsOf('sqs', clients.sqs.middlewareStack);
  countCallsOf('dynamodb', clients.dynamodb.middlewareStack);
  countCallsOf('s3', clients.s3.middlewareStack);
  return clients;
}

let shared: AwsClients | undefined;

/**
 * Clients built once per process from `process.env` (a Lambda container reuses them across
 * invocations, so the cold start pays for them once).
 */
export function sharedAwsClients(): AwsClients {
  shared ??= createAwsClients();
  return shared;
}

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
 * The full {@link Ports} for the AWS runtimes (deployed Lambdas and the emulator mode), from the
 * environment variables named in `ENV` (lib/infra/definitions.ts):
 * queue URLs `ITK3_QUEUE_URL_<STAGE>` (only those this process sends to are needed), tables
 * `ITK3_ONCE_TABLE` / `ITK3_AUDIT_TABLE` and bucket `ITK3_BLOB_BUCKET` (default: the names in the
 * definitions, which the emulator provisioner uses), KMS keys per {@link kmsKeyMap}.
 *
 * @example
 * ```ts
 * const ports = awsPortsFromEnv(loadConfig(JSON.parse(process.env.ITK3_CONFIG_JSON!)));
 * ```
 */
export function awsPortsFromEnv(
  config: LoadedConfig,
  opts: { env?: NodeJS.ProcessEnv; clients?: AwsClients } = {},
): Ports {
  const env = opts.env ?? process.env;
  const clients = opts.clients ?? (opts.env ? createAwsClients({ env }) : sharedAwsClients());
  const queueUrls: Partial<Record<QueueName, string>> = {};
  for (const stage of STAGES) {
    const url = nonEmpty(env[ENV.queueUrl(stage)]);
    if (url) queueUrls[stage] = url;
  }
  const blobBucket = nonEmpty(env[ENV.blobBucket]) ?? BLOB_BUCKET.name;
  const keys = keyServiceFromEnv(config, clients.kms, env);
  // Only a function allowed to sign with the key checkpoints its audit stream (docs/AUDIT.md).
  const checkpointKid = nonEmpty(env[ENV.auditCheckpointKid]);
  const once = new DynamoOnceStore(clients.dynamodb, nonEmpty(env[ENV.onceTable]) ?? ONCE_TABLE.name);
  return {
    keys,
    queues: new SqsQueueSender(clients.sqs, queueUrls),
    once,
    blobs: new S3BlobStore(clients.s3, blobBucket),
    // `mesh` targets go through MESH where the function has the gateway mailboxes' secrets (deliver).
    deliverer: awsMeshDeliverer(
      config,
      new AwsDeliverer({ s3: clients.s3, sqs: clients.sqs, blobBucket }),
      once,
      awsMeshConnectionFromEnv(env),
    ),
    audit: new DynamoAuditLog(
      clients.dynamodb,
      nonEmpty(env[ENV.auditTable]) ?? AUDIT_TABLE.name,
      systemClock,
      checkpointKid ? { signer: { kid: checkpointKid, keys } } : {},
    ),
    clock: systemClock,
  };
}

/**
 * The {@link KeyService} of the AWS runtimes, by `ITK3_KEY_MODE`: `direct` (the default, also when
 * unset) keeps every private-key operation in KMS; `cached` unwraps each recipient key of
 * `ITK3_WRAPPED_KEYS` once per container and TTL and opens content keys locally.
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
  const wrappedKeys = wrappedKeysFromEnv(env);
  const ttlRaw = nonEmpty(env[KEY_MODE_ENV.ttlSeconds]);
  const ttlSeconds = ttlRaw === undefined ? undefined : Number(ttlRaw);
  if (ttlSeconds !== undefined && !(Number.isInteger(ttlSeconds) && ttlSeconds > 0 && ttlSeconds <= 86_400)) {
    throw new ConfigError([`${KEY_MODE_ENV.ttlSeconds}: a whole number of seconds, 1–86400`]);
  }
  const wrappingKeyId = nonEmpty(env[KEY_MODE_ENV.wrappingKeyId]);
  return new CachedKeyService(kms, {
    wrappedKeys,
    kmsKeyIds: keyIds,
    ...(wrappingKeyId ? { wrappingKeyId } : {}),
    ...(ttlSeconds !== undefined ? { ttlSeconds } : {}),
  });
}

/** `ITK3_WRAPPED_KEYS`: a non-empty JSON object of kid → base64 ciphertext blob. */
function wrappedKeysFromEnv(env: NodeJS.ProcessEnv): Record<string, Uint8Array> {
  const name = KEY_MODE_ENV.wrappedKeys;
  const raw = nonEmpty(env[name]);
  if (raw === undefined) throw new ConfigError([`${name}: required when ${KEY_MODE_ENV.mode}=cached`]);
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

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === '' ? undefined : value.trim();
}
