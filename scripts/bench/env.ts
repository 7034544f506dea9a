/**
 * Process settings for the benchmark, imported first by run.ts so they are in place before any
 * handler module builds its Powertools logger and metrics: no EMF or log lines on stdout (they
 * would interleave with the table), and no AWS SDK notice about Node 20.
 */
process.env.POWERTOOLS_LOG_LEVEL ??= 'SILENT';
process.env.POWERTOOLS_METRICS_DISABLED ??= 'true';
process.env.POWERTOOLS_SERVICE_NAME ??= 'itk3-pipeline-bench';
process.env.POWERTOOLS_METRICS_NAMESPACE ??= 'ITK3PipelineBench';
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
