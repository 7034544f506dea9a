import { resolve } from 'node:path';
import { App, type AppProps, RemovalPolicy } from 'aws-cdk-lib';
import { loadConfigFile } from '../lib/config/load.js';
import { addNagChecks } from './nag.js';
import { Itk3PipelineStack } from './pipeline-stack.js';

/** CDK context keys the app reads (`cdk synth -c itk3:configFile=…`). */
export const CONTEXT = {
  /** Path of the configuration document, relative to the working directory. */
  configFile: 'itk3:configFile',
  /** Stack name. */
  stackName: 'itk3:stackName',
  /** `retain` (default) or `destroy` — the latter for demos and emulators only. */
  removalPolicy: 'itk3:removalPolicy',
  /** `true` to name queues, tables and the bucket as in lib/infra/definitions.ts. */
  physicalNames: 'itk3:physicalNames',
} as const;

export const DEFAULT_CONFIG_FILE = 'docs/config.example.json';
export const DEFAULT_STACK_NAME = 'Itk3Pipeline';

/** Options of {@link buildApp}. */
export interface BuildAppOptions {
  /**
   * Props of the `App` (tests pass `context` and `outdir`).
   * @default - from the CDK CLI environment
   */
  readonly appProps?: AppProps;
  /**
   * Register the cdk-nag packs as synth-time validation.
   * @default true
   */
  readonly nag?: boolean;
}

/**
 * The CDK app: reads the configuration document named by the `itk3:configFile` context, validates
 * it (a bad document throws a `ConfigError` listing every problem before anything is built), and
 * builds the pipeline stack with the cdk-nag packs attached.
 *
 * @example
 * ```ts
 * const { app } = buildApp({ appProps: { context: { 'itk3:configFile': 'my-config.json' } } });
 * app.synth();
 * ```
 */
export function buildApp(options: BuildAppOptions = {}): { app: App; stack: Itk3PipelineStack } {
  const app = new App(options.appProps);
  const context = (key: string): string | undefined => {
    const value: unknown = app.node.tryGetContext(key);
    return value === undefined || value === null ? undefined : String(value);
  };

  const configPath = resolve(context(CONTEXT.configFile) ?? DEFAULT_CONFIG_FILE);
  const config = loadConfigFile(configPath);

  const removal = (context(CONTEXT.removalPolicy) ?? 'retain').toLowerCase();
  if (removal !== 'retain' && removal !== 'destroy') {
    throw new Error(`${CONTEXT.removalPolicy} must be "retain" or "destroy", got "${removal}"`);
  }

  const stack = new Itk3PipelineStack(app, context(CONTEXT.stackName) ?? DEFAULT_STACK_NAME, {
    description: 'ITK3 secure pipeline: authenticate, authorise, decrypt, verify, deliver (keys in KMS)',
    env: { account: process.env.CDK_DEFAULT_ACCOUNT, region: process.env.CDK_DEFAULT_REGION },
    config: config.doc,
    removalPolicy: removal === 'destroy' ? RemovalPolicy.DESTROY : RemovalPolicy.RETAIN,
    physicalNames: context(CONTEXT.physicalNames) === 'true',
  });

  if (options.nag ?? true) addNagChecks(app);
  return { app, stack };
}
