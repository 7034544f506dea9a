/**
 * The CDK command line against an emulator, as the deployed-mode suites run it: the emulator's
 * endpoint and test credentials in the environment, ministack's fixed account and region, a bounded
 * wait per command, and the AWS SDK bundled into every function (`itk3:bundleAwsSdk`: ministack runs
 * functions on a Node without one, cdk/constructs/pipeline-function.ts).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

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
  /** Stack context every command of one stack names: its configuration and its name. */
  const stackContext = (configFile: string, stackName: string) => [
    '-c',
    `itk3:configFile=${configFile}`,
    '-c',
    `itk3:stackName=${stackName}`,
  ];
  return {
    cdk,
    /** `cdk bootstrap`, retried: the other deployed suite may be bootstrapping the same emulator. */
    async bootstrap(): Promise<void> {
      for (let attempt = 1; ; attempt += 1) {
        try {
          cdk('bootstrap', 'aws://000000000000/us-east-1');
          return;
        } catch (error) {
          if (attempt === 3) throw error;
          await new Promise((r) => setTimeout(r, 20_000));
        }
      }
    },
    /** `cdk deploy` of one stack (destroyable), `extraContext` as `key=value`; returns its outputs. */
    deploy<O>(configFile: string, stackName: string, outputsFile: string, extraContext: string[] = []): O {
      cdk(
        'deploy',
        '--require-approval',
        'never',
        ...stackContext(configFile, stackName),
        '-c',
        'itk3:removalPolicy=destroy',
        ...extraContext.flatMap((c) => ['-c', c]),
        '--outputs-file',
        outputsFile,
      );
      return (JSON.parse(readFileSync(outputsFile, 'utf8')) as Record<string, O>)[stackName]!;
    },
    destroy(configFile: string, stackName: string): void {
      cdk('destroy', '--force', ...stackContext(configFile, stackName));
    },
  };
}
