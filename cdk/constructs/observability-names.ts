/**
 * Names shared by the functions' Powertools settings and the dashboard, so a metric the handlers
 * emit (lib/runtime/stage-handler.ts) is the metric the dashboard draws. The names themselves
 * live in lib/infra/definitions.ts, which the handlers read too.
 */
export { METRIC, METRICS_NAMESPACE, SERVICE_NAME } from '../../lib/infra/definitions.js';

/** Powertools log levels accepted by `POWERTOOLS_LOG_LEVEL`. */
export type PowertoolsLogLevel = 'DEBUG' | 'INFO' | 'WARN' | 'ERROR' | 'SILENT';
