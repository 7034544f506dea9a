/**
 * MESH poll: EventBridge Scheduler invokes this once per mailbox and schedule with
 * `{ "mailbox": "<id>" }`. One bounded poller pass under the mailbox's DynamoDB lease, inbox →
 * inbound queue (lib/adapters/aws/mesh-poll-job.ts), each message attested with the gateway key
 * (lib/mesh/attestation.ts); it stops well before the function timeout.
 */
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { MetricUnit } from '@aws-lambda-powertools/metrics';
import { logMetrics } from '@aws-lambda-powertools/metrics/middleware';
import middy from '@middy/core';
import type { Context } from 'aws-lambda';
import { awsBatchPorts, createBatchClients } from '../lib/adapters/aws/batch-ports.js';
import { DynamoLease } from '../lib/adapters/aws/dynamo-lease.js';
import { keyServiceFromEnv } from '../lib/adapters/aws/key-service-env.js';
import {
  type MeshPollJobResult,
  type MeshPollSetup,
  meshPollSetupFromEnv,
  runMeshPollJob,
} from '../lib/adapters/aws/mesh-poll-job.js';
import { createKmsClient } from '../lib/adapters/aws/sdk-kms.js';
import { configFromEnvironment } from '../lib/config/source.js';
import { ENV, ONCE_TABLE } from '../lib/infra/definitions.js';
import { meshAttester } from '../lib/mesh/connect.js';
import { MeshConfigError } from '../lib/mesh/errors.js';
import { meshMailboxKnown } from '../lib/policy/mesh.js';
import { type BoundContext, portsMiddleware } from '../lib/runtime/ports-middleware.js';
import { logger, stageMetrics } from '../lib/runtime/powertools.js';

/** The Scheduler's input: which mailbox to poll. */
export interface MeshPollEvent {
  mailbox?: unknown;
}

const metrics = stageMetrics('mesh-poll');

/**
 * The poller's ports (SQS inbound queue, DynamoDB once-store and audit, S3 claim checks), the key
 * service (KMS: the attestation signature) and, per container, its setup: the mailbox lease and the
 * secrets cache, so credentials are read once per TTL, not per pass.
 */
export function awsPortsForMeshPoll() {
  const config = configFromEnvironment();
  const keys = keyServiceFromEnv(config, createKmsClient());
  const clients = createBatchClients();
  return {
    config,
    ports: { ...awsBatchPorts({ clients, keys }), keys },
    setup: meshPollSetupFromEnv(
      new DynamoLease(clients.dynamodb, process.env[ENV.onceTable] || ONCE_TABLE.name),
    ),
  };
}

type MeshPollContext = BoundContext<'queues' | 'once' | 'blobs' | 'audit' | 'clock' | 'keys'> & {
  setup: MeshPollSetup;
};

/** The schedule's input is checked before anything is built for it. */
const mailboxInput = {
  before: (request: { event: MeshPollEvent }) => {
    const { mailbox } = request.event ?? {};
    if (typeof mailbox !== 'string' || mailbox.trim() === '') {
      throw new MeshConfigError('the schedule input must be {"mailbox": "<MESH mailbox id>"}');
    }
  },
};

const lambdaHandler = async (event: MeshPollEvent, context: Context): Promise<MeshPollJobResult> => {
  const { ports, config, setup } = context as MeshPollContext;
  const result = await runMeshPollJob(
    event.mailbox as string,
    {
      ...setup,
      // The pipeline's own claim-check size: bodies above it go to S3, the queue gets a reference.
      pollOptions: { claimCheckBytes: config.doc.limits.claimCheckBytes, ...setup.pollOptions },
    },
    // Every message it enqueues carries the gateway's attestation (KMS Sign with the attestation
    // key): the authenticate stage accepts a MESH message only with it.
    // Unregistered sending mailboxes cost nothing (no Sign, no S3, no enqueue).
    {
      ...ports,
      attest: meshAttester(config, ports.keys),
      knownSender: (from) => meshMailboxKnown(config, from),
    },
    { owner: context.awsRequestId, remainingMs: context.getRemainingTimeInMillis() },
  );
  if (result.outcome === 'locked') {
    // Another pass still holds the mailbox (a slow one, or one that crashed: its lease lapses).
    logger.info('mailbox busy: pass skipped', {
      mailbox: result.mailbox,
      holder: result.holder,
      leaseExpiresAt: result.expiresAtSeconds,
    });
    metrics.addMetric('MeshPassesSkipped', MetricUnit.Count, 1);
    return result;
  }
  const { summary } = result;
  // Ids and counts only: never a body, a header or a credential.
  logger.info('mesh pass finished', {
    mailbox: summary.mailbox,
    enqueued: summary.enqueued,
    reacknowledged: summary.reacknowledged.length,
    reports: summary.reports.length,
    refused: summary.refused.map((r) => r.meshMessageId),
    bytes: summary.bytes,
    stopped: summary.stopped?.reason,
    stoppedDetail: summary.stopped?.detail,
    outOfTime: result.outOfTime,
    leaseReleased: result.leaseReleased,
  });
  metrics.addMetric('MeshMessagesEnqueued', MetricUnit.Count, summary.enqueued.length);
  metrics.addMetric('MeshReportsReceived', MetricUnit.Count, summary.reports.length);
  metrics.addMetric('MeshMessagesRefused', MetricUnit.Count, summary.refused.length);
  if (summary.stopped?.reason === 'transient-failure' && !result.outOfTime) {
    metrics.addMetric('MeshTransientFailures', MetricUnit.Count, 1);
  }
  return result;
};

// logEvent pinned off, as for every handler: the event is harmless here, the rule is not worth an exception.
export const handler = middy(lambdaHandler)
  .use(injectLambdaContext(logger, { resetKeys: true, logEvent: false }))
  .use(logMetrics(metrics))
  .use(mailboxInput)
  .use(portsMiddleware(awsPortsForMeshPoll));
