/**
 * The AWS adapters every stage handler needs for its batch step (lib/stages/batch.ts): the SQS
 * queue sender, the DynamoDB once-store and audit trail, the S3 blob store and the system clock.
 * A stage adds the ports of its own (the key service, the deliverer) in its handler file.
 */
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { SQSClient } from '@aws-sdk/client-sqs';
import { AUDIT_TABLE, ENV, ONCE_TABLE } from '../../infra/definitions.js';
import { type QueueName, STAGES } from '../../pipeline/topology.js';
import { type KeyService, type Ports, systemClock } from '../../ports/index.js';
import type { BatchPortName } from '../../stages/stage.js';
import { type AwsClientOptions, nonEmpty } from './client-options.js';
import { DynamoAuditLog } from './dynamo-audit-log.js';
import { DynamoOnceStore } from './dynamo-once-store.js';
import { lazyS3Client, type S3ClientSource } from './lazy-s3.js';
import { blobBucketFromEnv, S3BlobStore } from './s3-blob-store.js';
import { createDynamodbClient } from './sdk-dynamodb.js';
import { createSqsClient } from './sdk-sqs.js';
import { SqsQueueSender } from './sqs-queue-sender.js';

/** The clients the batch ports use. */
export interface BatchClients {
  sqs: SQSClient;
  dynamodb: DynamoDBClient;
  /** S3 serves claim checks (large messages) only: built, and its SDK loaded, at the first one. */
  s3: S3ClientSource;
}

export function createBatchClients(opts: AwsClientOptions = {}): BatchClients {
  return { sqs: createSqsClient(opts), dynamodb: createDynamodbClient(opts), s3: lazyS3Client(opts) };
}

/**
 * The batch step's ports, from the environment variables named in `ENV` (lib/infra/definitions.ts):
 * queue URLs `ITK3_QUEUE_URL_<STAGE>` (only those this process sends to are needed), tables
 * `ITK3_ONCE_TABLE` / `ITK3_AUDIT_TABLE` and bucket `ITK3_BLOB_BUCKET` (default: the names in the
 * definitions, which the emulator provisioner uses). Given a key service, a function allowed to sign
 * with `ITK3_AUDIT_CHECKPOINT_KID` checkpoints its audit stream (docs/AUDIT.md).
 */
export function awsBatchPorts(
  opts: { env?: NodeJS.ProcessEnv; clients?: BatchClients; keys?: KeyService } = {},
): Pick<Ports, BatchPortName> {
  const env = opts.env ?? process.env;
  const clients = opts.clients ?? createBatchClients({ env });
  const queueUrls: Partial<Record<QueueName, string>> = {};
  for (const stage of STAGES) {
    const url = nonEmpty(env[ENV.queueUrl(stage)]);
    if (url) queueUrls[stage] = url;
  }
  const checkpointKid = nonEmpty(env[ENV.auditCheckpointKid]);
  return {
    queues: new SqsQueueSender(clients.sqs, queueUrls),
    once: new DynamoOnceStore(clients.dynamodb, nonEmpty(env[ENV.onceTable]) ?? ONCE_TABLE.name),
    blobs: new S3BlobStore(clients.s3, blobBucketFromEnv(env)),
    audit: new DynamoAuditLog(
      clients.dynamodb,
      nonEmpty(env[ENV.auditTable]) ?? AUDIT_TABLE.name,
      systemClock,
      checkpointKid && opts.keys ? { signer: { kid: checkpointKid, keys: opts.keys } } : {},
    ),
    clock: systemClock,
  };
}
