/** Verify stage: inner signature by the sender's registered key, all bindings, ITK3 rules, duplicates. */
import { awsBatchPorts } from '../lib/adapters/aws/batch-ports.js';
import { configFromEnvironment } from '../lib/config/source.js';
import { composeStageHandler } from '../lib/runtime/stage-handler.js';
import { verify } from '../lib/stages/verify.js';

/** The batch step's ports (SQS, DynamoDB, S3): verify checks signatures with public keys only. */
export function awsPortsForVerify() {
  return { config: configFromEnvironment(), ports: awsBatchPorts() };
}

export const handler = composeStageHandler(verify, awsPortsForVerify);
