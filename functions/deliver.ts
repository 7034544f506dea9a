/** Deliver stage: message to the recipient target, signed ITK3 responses to the sender, audit. */
import { awsBatchPorts, createBatchClients } from '../lib/adapters/aws/batch-ports.js';
import { keyServiceFromEnv } from '../lib/adapters/aws/key-service-env.js';
import { awsDelivererFromEnv } from '../lib/adapters/aws/mesh-delivery.js';
import { createKmsClient } from '../lib/adapters/aws/sdk-kms.js';
import { configFromEnvironment } from '../lib/config/source.js';
import { composeStageHandler } from '../lib/runtime/stage-handler.js';
import { deliver } from '../lib/stages/deliver.js';

/**
 * The batch step's ports (SQS, DynamoDB, S3), the key service (KMS: response and audit-checkpoint
 * signatures) and the deliverer (S3, SQS, and MESH with Secrets Manager credentials).
 */
export function awsPortsForDeliver() {
  const config = configFromEnvironment();
  const keys = keyServiceFromEnv(config, createKmsClient());
  const clients = createBatchClients();
  const batch = awsBatchPorts({ clients, keys });
  return { config, ports: { ...batch, keys, deliverer: awsDelivererFromEnv(config, batch.once, clients) } };
}

export const handler = composeStageHandler(deliver, awsPortsForDeliver);
