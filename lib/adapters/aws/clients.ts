/**
 * Every AWS client and port at once, for the callers that run the whole pipeline against AWS or an
 * emulator (emulator mode, the provisioner, operator commands, tests). A deployed stage handler
 * builds only its own ports instead (functions/<stage>.ts).
 */
import type { KMSClient } from '@aws-sdk/client-kms';
import type { S3Client } from '@aws-sdk/client-s3';
import type { LoadedConfig } from '../../config/load.js';
import type { Ports } from '../../ports/index.js';
import { awsBatchPorts, type BatchClients, createBatchClients } from './batch-ports.js';
import type { AwsClientOptions } from './client-options.js';
import { keyServiceFromEnv } from './key-service-env.js';
import { awsDelivererFromEnv } from './mesh-delivery.js';
import { createKmsClient } from './sdk-kms.js';
import { createS3Client } from './sdk-s3.js';

/** The four SDK clients the adapters use, all built up front (S3 too: the provisioner calls it). */
export interface AwsClients extends BatchClients {
  kms: KMSClient;
  s3: S3Client;
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
  return { kms: createKmsClient(opts), ...createBatchClients(opts), s3: createS3Client(opts) };
}

let shared: AwsClients | undefined;

/**
 * Clients built once per process from `process.env` (a Lambda container reuses them across
 * invocations, so the cold start pays for them once).
 */
function sharedAwsClients(): AwsClients {
  shared ??= createAwsClients();
  return shared;
}

/**
 * The full {@link Ports} for the AWS runtimes, from the environment: the batch ports
 * (batch-ports.ts), the key service (key-service-env.ts) and the deliverer (mesh-delivery.ts).
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
  const keys = keyServiceFromEnv(config, clients.kms, env);
  const batch = awsBatchPorts({ env, clients, keys });
  return { ...batch, keys, deliverer: awsDelivererFromEnv(config, batch.once, clients, env) };
}
