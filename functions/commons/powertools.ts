/** Powertools configured from the POWERTOOLS_* environment: one Logger, and Metrics per stage. */
import { Logger } from '@aws-lambda-powertools/logger';
import { Metrics } from '@aws-lambda-powertools/metrics';

const serviceName = process.env.POWERTOOLS_SERVICE_NAME ?? 'itk3-pipeline';

export const logger = new Logger({ serviceName });

/** Metrics carrying the stage as a default dimension (one instance per handler). */
export function stageMetrics(stage: string): Metrics {
  return new Metrics({
    namespace: process.env.POWERTOOLS_METRICS_NAMESPACE ?? 'ITK3Pipeline',
    serviceName,
    defaultDimensions: { stage },
  });
}
