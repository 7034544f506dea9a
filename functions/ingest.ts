/** Ingest: HTTP API `POST /messages` → a record on the authenticate queue, 202 with a tracking id. */
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import middy from '@middy/core';
import type { APIGatewayProxyEventV2, APIGatewayProxyResultV2, Context } from 'aws-lambda';
import { lazyS3Client } from '../lib/adapters/aws/lazy-s3.js';
import { blobBucketFromEnv, S3BlobStore } from '../lib/adapters/aws/s3-blob-store.js';
import { createSqsClient } from '../lib/adapters/aws/sdk-sqs.js';
import { SqsQueueSender } from '../lib/adapters/aws/sqs-queue-sender.js';
import { configFromEnvironment } from '../lib/config/source.js';
import { ENV } from '../lib/infra/definitions.js';
import { ingest } from '../lib/ingest.js';
import { type BoundContext, portsMiddleware } from '../lib/runtime/ports-middleware.js';
import { logger } from '../lib/runtime/powertools.js';

/** Ingest's ports: the inbound queue (SQS) and the blob store for a large envelope's claim check (S3). */
export function awsPortsForIngest() {
  const inbound = process.env[ENV.queueUrl('authenticate')];
  return {
    config: configFromEnvironment(),
    ports: {
      queues: new SqsQueueSender(createSqsClient(), inbound ? { authenticate: inbound } : {}),
      blobs: new S3BlobStore(lazyS3Client(), blobBucketFromEnv()),
    },
  };
}

const lambdaHandler = async (
  event: APIGatewayProxyEventV2,
  context: Context,
): Promise<APIGatewayProxyResultV2> => {
  const { ports, config } = context as BoundContext<'queues' | 'blobs'>;
  const body =
    event.body === undefined
      ? ''
      : event.isBase64Encoded
        ? Buffer.from(event.body, 'base64').toString('utf8')
        : event.body;
  const result = await ingest(
    {
      authorization: event.headers.authorization ?? event.headers.Authorization,
      contentEncoding: event.headers['content-encoding'] ?? event.headers['Content-Encoding'],
      body,
      receivedAt: event.requestContext.timeEpoch,
      source: 'http',
    },
    ports,
    config,
  );
  if (result.status === 202) {
    logger.info('message accepted', { traceId: result.trackingId });
    return json(202, { trackingId: result.trackingId });
  }
  logger.info('message refused at ingest', {
    status: result.status,
    code: result.error,
    ...(result.reason ? { reason: result.reason } : {}),
  });
  return json(result.status, { error: result.error, message: result.message });
};

function json(statusCode: number, body: unknown): APIGatewayProxyResultV2 {
  return { statusCode, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) };
}

// logEvent pinned off: an event holds credentials and sealed messages, whatever POWERTOOLS_LOGGER_LOG_EVENT says.
export const handler = middy(lambdaHandler)
  .use(injectLambdaContext(logger, { resetKeys: true, logEvent: false }))
  .use(portsMiddleware(awsPortsForIngest));
