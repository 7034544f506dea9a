/** Ingest: HTTP API `POST /messages` → a record on the authenticate queue, 202 with a tracking id. */
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import middy from '@middy/core';
import type { APIGatewayProxyEventV2, APIGatewayProxyResultV2, Context } from 'aws-lambda';
import { ingest } from '../lib/ingest.js';
import { bindingFor } from '../lib/runtime/binding.js';
import { logger } from './commons/powertools.js';

const lambdaHandler = async (
  event: APIGatewayProxyEventV2,
  context: Context,
): Promise<APIGatewayProxyResultV2> => {
  const { ports, config } = await bindingFor(context);
  const body =
    event.body === undefined
      ? ''
      : event.isBase64Encoded
        ? Buffer.from(event.body, 'base64').toString('utf8')
        : event.body;
  const result = await ingest(
    {
      authorization: event.headers.authorization ?? event.headers.Authorization,
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
export const handler = middy(lambdaHandler).use(
  injectLambdaContext(logger, { resetKeys: true, logEvent: false }),
);
