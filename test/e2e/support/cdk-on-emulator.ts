/**
 * The CDK command line against an emulator, as the deployed-mode suites run it: the emulator's
 * endpoint and test credentials in the environment, ministack's fixed account and region, a bounded
 * wait per command, and the AWS SDK bundled into every function (`itk3:bundleAwsSdk`: ministack runs
 * functions on a Node without one, cdk/constructs/pipeline-function.ts).
 */
import { execFileSync } from 'node:child_process';

export function cdkOnEmulator(endpoint: string | undefined, root: string) {
  const env = {
    ...process.env,
    AWS_ENDPOINT_URL: endpoint,
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: 'test',
    AWS_SECRET_ACCESS_KEY: 'test',
    CDK_DEFAULT_ACCOUNT: '000000000000',
    CDK_DEFAULT_REGION: 'us-east-1',
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
  };
  const cdk = (...args: string[]): string =>
    execFileSync('npx', ['cdk', ...args, '-c', 'itk3:bundleAwsSdk=true'], {
      cwd: root,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 600_000,
    }).toString();
  return { env, cdk };
}
