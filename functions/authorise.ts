/** Authorise stage: deny-by-default policy and delegation grants, before any decryption. */
import { awsBatchPorts } from '../lib/adapters/aws/batch-ports.js';
import { configFromEnvironment } from '../lib/config/source.js';
import { composeStageHandler } from '../lib/runtime/stage-handler.js';
import { authorise } from '../lib/stages/authorise.js';

/** The batch step's ports (SQS, DynamoDB, S3): authorise uses no key. */
export function awsPortsForAuthorise() {
  return { config: configFromEnvironment(), ports: awsBatchPorts() };
}

export const handler = composeStageHandler(authorise, awsPortsForAuthorise);
