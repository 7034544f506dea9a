/**
 * The handler composer: one stage value (lib/stages/<stage>.ts) and a ports provider make a Lambda
 * handler — middy with the Powertools logger and metrics middlewares (in that order, as middy
 * documents), a ports middleware, and the batch step. A deployed function passes its AWS ports
 * (functions/<stage>.ts); the embedded and emulator runtimes pass their own, and run the very same
 * chain.
 */
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import type { Metrics } from '@aws-lambda-powertools/metrics';
import { MetricUnit } from '@aws-lambda-powertools/metrics';
import { logMetrics } from '@aws-lambda-powertools/metrics/middleware';
import middy from '@middy/core';
import type { Context, SQSBatchResponse, SQSEvent } from 'aws-lambda';
import { METRIC } from '../infra/definitions.js';
import { processStageBatch, type StageObserver } from '../stages/batch.js';
import type { BatchPortName, PortName, Stage } from '../stages/stage.js';
import {
  type BindingProvider,
  type BoundContext,
  portsMiddleware,
  type RuntimeBinding,
} from './ports-middleware.js';
import { logger, stageMetrics } from './powertools.js';

/** A Lambda SQS handler, as Lambda (or a runtime standing in for it) invokes it. */
export type StageHandler = (event: SQSEvent, context: Context) => Promise<SQSBatchResponse | undefined>;

/**
 * The Lambda handler of `stage`. `provide` supplies the stage's own ports and the batch step's.
 *
 * @example
 * ```ts
 * export const handler = composeStageHandler(decrypt, awsPortsForDecrypt);
 * ```
 */
export function composeStageHandler<P extends PortName>(
  stage: Stage<P>,
  provide: BindingProvider<P | BatchPortName>,
) {
  const metrics = stageMetrics(stage.name);
  const observer = observerFor(metrics);
  const lambdaHandler = async (event: SQSEvent, context: Context): Promise<SQSBatchResponse> => {
    const { ports, config } = context as BoundContext<P | BatchPortName>;
    return processStageBatch(stage, event, { ports, config }, observer, context);
  };
  return (
    middy(lambdaHandler)
      // logEvent pinned off: an SQS event holds credentials and sealed messages, whatever
      // POWERTOOLS_LOGGER_LOG_EVENT says.
      .use(injectLambdaContext(logger, { resetKeys: true, logEvent: false }))
      .use(logMetrics(metrics))
      .use(portsMiddleware<RuntimeBinding<P | BatchPortName>, SQSEvent, SQSBatchResponse>(provide))
  );
}

function observerFor(metrics: Metrics): StageObserver {
  return {
    record({ stage, traceId, result, code, itk3Code, receiveCount }) {
      // Codes and ids only: never tokens, message bytes or patient data.
      const fields = { stage, traceId, result, code, itk3Code, receiveCount };
      if (result === 'transient') logger.warn('record will be retried', fields);
      else if (result === 'rejected') logger.info('record rejected', fields);
      else logger.debug('record processed', fields);
      if (result === 'rejected' && itk3Code) {
        const single = metrics.singleMetric();
        single.addDimension('itk3Code', itk3Code);
        single.addMetric(METRIC.rejected, MetricUnit.Count, 1);
      }
      metrics.addMetric(METRIC[result], MetricUnit.Count, 1);
    },
  };
}
