/**
 * Names shared by the functions' Powertools settings and the dashboard, so a metric the handlers
 * emit (functions/commons/stage-handler.ts) is the metric the dashboard draws.
 */

/** CloudWatch namespace of the pipeline's own metrics (`POWERTOOLS_METRICS_NAMESPACE`). */
export const METRICS_NAMESPACE = 'ITK3Pipeline';

/**
 * `POWERTOOLS_SERVICE_NAME` of every function. One service for the whole pipeline: the handlers add
 * a `stage` dimension, so per-stage series differ by `stage`, not by service.
 */
export const SERVICE_NAME = 'itk3-pipeline';

/** Metric names the stage handlers emit (dimensions `service`, `stage`; rejections also `itk3Code`). */
export const METRIC = {
  forwarded: 'MessagesForwarded',
  rejected: 'MessagesRejected',
  delivered: 'MessagesDelivered',
  responded: 'ResponsesSent',
  transient: 'TransientFailures',
} as const;

/** Powertools log levels accepted by `POWERTOOLS_LOG_LEVEL`. */
export type PowertoolsLogLevel = 'DEBUG' | 'INFO' | 'WARN' | 'ERROR' | 'SILENT';
