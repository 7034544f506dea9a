// Injected into every function bundle that leaves the AWS SDK to the Lambda runtime
// (handlerBundleOptions, cdk/constructs/pipeline-function.ts). A CommonJS `require` anchored at the
// bundle, so the SDK loads through Node's CommonJS loader, which also searches NODE_PATH (the Lambda
// runtime's /var/runtime/node_modules); ES module resolution does not.
import { createRequire } from 'node:module';

export const runtimeRequire = createRequire(import.meta.url);
