/**
 * CDK entry point (`"app": "npx tsx cdk/app.ts"` in cdk.json). A configuration problem is printed as
 * the full list and fails the synth with exit code 1, without a stack trace.
 */
import { ConfigError } from '../lib/errors.js';
import { buildApp } from './build-app.js';

try {
  buildApp().app.synth();
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  console.error(error.message);
  process.exit(1);
}
