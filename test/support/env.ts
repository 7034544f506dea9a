/**
 * Quiet Powertools for tests, as `bin/itk3.js` does for the CLI: the stage handlers log and emit
 * metrics through Powertools, which would otherwise print a line per record. Import this module
 * for its side effect before anything that loads `functions/*` (the handlers read the environment
 * when first imported).
 */
process.env.POWERTOOLS_LOG_LEVEL ??= 'SILENT';
process.env.POWERTOOLS_METRICS_DISABLED ??= 'true';
process.env.POWERTOOLS_SERVICE_NAME ??= 'itk3-pipeline-test';
process.env.POWERTOOLS_METRICS_NAMESPACE ??= 'ITK3PipelineTest';

export {};
