/**
 * Imported first by the log suite: Powertools reads its level when the stage handlers are first
 * imported, and the shared test setup would otherwise silence it. DEBUG is the most verbose level
 * an operator can choose; metrics stay on so their EMF lines are scanned too.
 */
process.env.POWERTOOLS_LOG_LEVEL = 'DEBUG';
process.env.POWERTOOLS_METRICS_DISABLED = 'false';
process.env.POWERTOOLS_METRICS_NAMESPACE = 'ITK3PipelineLogScan';
process.env.POWERTOOLS_SERVICE_NAME = 'itk3-pipeline-log-scan';

export {};
