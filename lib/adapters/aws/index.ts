/**
 * AWS adapters of the ports (lib/ports): the only place in lib/ that imports `@aws-sdk/*`.
 * Each adapter takes its SDK client and resource names as constructor arguments; each handler in
 * functions/ builds the ones its stage uses, and `clients.ts` builds all of them (emulator mode).
 */
export { AwsDeliverer, FOLDER_DELIVERY_PREFIX, folderKey, sqsSafeText } from './aws-deliverer.js';
export { type AwsService, awsCallSnapshot, awsCalls, countCall, resetAwsCalls } from './calls.js';
export { type AwsClientOptions, endpointFor } from './client-options.js';
export { type AwsClients, awsPortsFromEnv, createAwsClients, sharedAwsClients } from './clients.js';
export { DynamoAuditLog } from './dynamo-audit-log.js';
export { DynamoOnceStore } from './dynamo-once-store.js';
export { isTransientAwsError } from './errors.js';
export { kmsKeyMap } from './key-service-env.js';
export { KmsKeyService } from './kms-key-service.js';
export {
  aliasSafe,
  type ProvisionOptions,
  type ProvisionResult,
  provisionEmulator,
  provisionedEnv,
} from './provision.js';
export { S3BlobStore } from './s3-blob-store.js';
export {
  chunkForBatch,
  SQS_BATCH_MAX_BYTES,
  SQS_BATCH_MAX_ENTRIES,
  SqsQueueSender,
} from './sqs-queue-sender.js';
