/** Decrypt stage: KMS unwraps the content key; AES-GCM with jose's invariants; one uniform error. */
import { awsBatchPorts } from '../lib/adapters/aws/batch-ports.js';
import { keyServiceFromEnv } from '../lib/adapters/aws/key-service-env.js';
import { createKmsClient } from '../lib/adapters/aws/sdk-kms.js';
import { configFromEnvironment } from '../lib/config/source.js';
import { composeStageHandler } from '../lib/runtime/stage-handler.js';
import { decrypt } from '../lib/stages/decrypt.js';

/** The batch step's ports (SQS, DynamoDB, S3) and the key service (KMS, direct or cached mode). */
export function awsPortsForDecrypt() {
  const config = configFromEnvironment();
  const keys = keyServiceFromEnv(config, createKmsClient());
  return { config, ports: { ...awsBatchPorts({ keys }), keys } };
}

export const handler = composeStageHandler(decrypt, awsPortsForDecrypt);
