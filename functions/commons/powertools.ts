/** One Logger and one Metrics per function, configured from the POWERTOOLS_* environment. */
import { Logger } from '@aws-lambda-powertools/logger';
import { Metrics } from '@aws-lambda-powertools/metrics';

export const logger = new Logger({ serviceName: process.env.POWERTOOLS_SERVICE_NAME ?? 'itk3-pipeline' });

export const metrics = new Metrics({
  namespace: process.env.POWERTOOLS_METRICS_NAMESPACE ?? 'ITK3Pipeline',
  serviceName: process.env.POWERTOOLS_SERVICE_NAME ?? 'itk3-pipeline',
});
