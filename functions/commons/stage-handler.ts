/**
 * The shared shape of the five stage handlers: middy with the Powertools logger and metrics
 * middlewares (in that order, as middy documents), the runtime binding, and the batch processor
 * from lib/. No pipeline logic lives here.
 */

import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import type { Metrics } from '@aws-lambda-powertools/metrics';
import { MetricUnit } from '@aws-lambda-powertools/metrics';
import { logMetrics } from '@aws-lambda-powertools/metrics/middleware';
import middy from '@middy/core';
import type { Context, SQSBatchResponse, SQSEvent } from 'aws-lambda';
import { METRIC } from '../../lib/infra/definitions.js';
import type { StageName } from '../../lib/pipeline/topology.js';
import { bindingFor } from '../../lib/runtime/binding.js';
import { processStageBatch, type StageObserver } from '../../lib/stages/batch.js';
import { logger, stageMetrics } from './powertools.js';

const METRIC_BY_RESULT = METRIC;

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
        single.addMetric(METRIC_BY_RESULT.rejected, MetricUnit.Count, 1);
      }
      metrics.addMetric(METRIC_BY_RESULT[result], MetricUnit.Count, 1);
    },
  };
}

export function createStageHandler(stage: StageName) {
  const metrics = stageMetrics(stage);
  const observer = observerFor(metrics);
  const lambdaHandler = async (event: SQSEvent, context: Context): Promise<SQSBatchResponse> => {
    const { ports, config } = await bindingFor(context);
    return processStageBatch(stage, event, { ports, config }, observer, context);
  };
  return (
    middy(lambdaHandler)
      // logEvent pinned off: an SQS event holds credentials and sealed messages, whatever
      // POWERTOOLS_LOGGER_LOG_EVENT says.
      .use(injectLambdaContext(logger, { resetKeys: true, logEvent: false }))
      .use(logMetrics(metrics))
  );
}
