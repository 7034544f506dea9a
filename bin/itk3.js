#!/usr/bin/env node
// The itk3 command. Runs the TypeScript sources through tsx, so a fresh clone needs no build step.
// Stage handlers log through Powertools: quiet by default on the command line, metrics off (no CloudWatch here).
process.env.POWERTOOLS_LOG_LEVEL ??= process.env.ITK3_LOG_LEVEL ?? 'SILENT';
process.env.POWERTOOLS_METRICS_DISABLED ??= 'true';
process.env.POWERTOOLS_SERVICE_NAME ??= 'itk3-pipeline';
// Node 20 is supported here (Lambda runs 22/24); the AWS SDK's notice about it is noise on the command line.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const { register } = await import('tsx/esm/api');
register();
const { main } = await import('../lib/cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
