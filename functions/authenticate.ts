/** Authenticate stage: verifies the sender credential (federation, replay, receipt-time checks). */
import { awsBatchPorts } from '../lib/adapters/aws/batch-ports.js';
import { keyServiceFromEnv } from '../lib/adapters/aws/key-service-env.js';
import { createKmsClient } from '../lib/adapters/aws/sdk-kms.js';
import { configFromEnvironment } from '../lib/config/source.js';
import { composeStageHandler } from '../lib/runtime/stage-handler.js';
import { authenticate } from '../lib/stages/authenticate.js';

/** The batch step's ports (SQS, DynamoDB, S3) and the key service (KMS: MESH attestations). */
export function awsPortsForAuthenticate() {
  const config = configFromEnvironment();
  const keys = keyServiceFromEnv(config, createKmsClient());
  return { config, ports: { ...awsBatchPorts({ keys }), keys } };
}

export const handler = composeStageHandler(authenticate, awsPortsForAuthenticate);
