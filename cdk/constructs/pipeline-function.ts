import { Duration, type RemovalPolicy, Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { LogLevel, NodejsFunction, OutputFormat } from 'aws-cdk-lib/aws-lambda-nodejs';
import * as logs from 'aws-cdk-lib/aws-logs';
import type { Construct } from 'constructs';
import { METRICS_NAMESPACE, type PowertoolsLogLevel, SERVICE_NAME } from './observability-names.js';

/**
 * The one Lambda runtime of the pipeline. Pinned, so an upgrade is a reviewed one-line change; the
 * code is also run on Node 20 by the tests and the emulator, so it avoids newer-only APIs.
 */
export const PIPELINE_RUNTIME = lambda.Runtime.NODEJS_22_X;

/**
 * ESM bundles have no `require`; a few CommonJS dependencies still call it (the X-Ray SDK behind the
 * Powertools tracer among them). The usual Powertools banner gives them one.
 */
export const CREATE_REQUIRE_BANNER =
  "import { createRequire as __itk3CreateRequire } from 'node:module'; const require = __itk3CreateRequire(import.meta.url);";

/**
 * The bundling options every pipeline function shares (local esbuild): minified ESM with source maps
 * but not their sources, every dependency bundled (the AWS SDK too: ministack runs functions on a
 * host Node without one). test/unit/runtime/handler-bundles.test.ts bundles each handler with these.
 */
export const PIPELINE_BUNDLING = {
  format: OutputFormat.ESM,
  mainFields: ['module', 'main'],
  minify: true,
  sourceMap: true,
  // Source maps without the sources: stack traces keep file and line, the asset stays small.
  sourcesContent: false,
  externalModules: [] as string[],
};

/** Properties of a {@link PipelineFunction}. */
export interface PipelineFunctionProps {
  /** Absolute path of the handler source; it must export `handler`. */
  readonly entry: string;
  /** Absolute path of the project root: the directory holding `package-lock.json`. */
  readonly projectRoot: string;
  /**
   * JSON text of the validated configuration document. esbuild replaces `__ITK3_CONFIG__` with it
   * (lib/config/source.ts), so the function runs the exact document checked at synth.
   */
  readonly configJson: string;
  /** Memory in MB; CPU scales with it (one full vCPU at 1 769 MB). */
  readonly memorySize: number;
  /** Function timeout. */
  readonly timeout: Duration;
  /**
   * Reserved concurrency: a ceiling for this function and a floor carved out of the account pool.
   * @default - none: the function draws on the unreserved account concurrency
   */
  readonly reservedConcurrentExecutions?: number;
  /**
   * Extra environment variables (queue URLs, table names, key map).
   * @default - only the Powertools and source-map settings
   */
  readonly environment?: Record<string, string>;
  /**
   * Variables compiled into the bundle and set in `process.env` before any bundled module runs, for
   * values too large for Lambda's 4 KB of environment variables (the cached mode's wrapped keys).
   * They are part of the code asset, so only non-secret values belong here; changing one is a code
   * change (new asset hash), like a configuration change.
   * @default - none
   */
  readonly bundledEnvironment?: Record<string, string>;
  /** Retention of the function's log group. */
  readonly logRetention: logs.RetentionDays;
  /**
   * Key that encrypts the function's log group.
   * @default - CloudWatch Logs' own encryption
   */
  readonly logEncryptionKey?: kms.IKey;
  /** Powertools log level. */
  readonly logLevel: PowertoolsLogLevel;
  /** What happens to the log group when it leaves the stack. */
  readonly removalPolicy: RemovalPolicy;
  /**
   * Human-readable description shown in the Lambda console.
   * @default - none
   */
  readonly description?: string;
}

/**
 * A `NodejsFunction` with the pipeline's shared defaults, in the manner of the Powertools example
 * app: pinned runtime on arm64, minified ESM with source maps and every dependency bundled (the AWS
 * SDK too: ministack runs functions on a host Node without one), active tracing, an explicit log
 * group with retention, and a role of its own that starts with nothing but that log group.
 *
 * Bundling is local esbuild only, so `cdk synth` works offline and without Docker.
 *
 * @example
 * ```ts
 * const fn = new PipelineFunction(this, 'Decrypt', {
 *   entry: '/repo/functions/decrypt.ts', projectRoot: '/repo', configJson: JSON.stringify(doc),
 *   memorySize: 1024, timeout: Duration.seconds(60), logRetention: RetentionDays.THREE_MONTHS,
 *   logLevel: 'INFO', removalPolicy: RemovalPolicy.RETAIN,
 * });
 * ```
 */
export class PipelineFunction extends NodejsFunction {
  /** The function's execution role (always present: the construct creates it). */
  readonly executionRole: iam.Role;

  constructor(scope: Construct, id: string, props: PipelineFunctionProps) {
    // A role of our own instead of the default one: the default attaches the AWS-managed
    // AWSLambdaBasicExecutionRole, which may write to any log group in the account.
    const role = new iam.Role(scope, `${id}Role`, {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      description: `Execution role of the ITK3 pipeline function ${id}`,
    });
    const logGroup = new logs.LogGroup(scope, `${id}Logs`, {
      retention: props.logRetention,
      encryptionKey: props.logEncryptionKey,
      removalPolicy: props.removalPolicy,
    });

    const bundled = Object.entries(props.bundledEnvironment ?? {});
    for (const [name] of bundled) {
      // One source per variable: a Lambda variable of the same name would be silently overwritten.
      if (props.environment?.[name] !== undefined) {
        throw new Error(`${id}: ${name} is given both as an environment and as a bundled variable`);
      }
    }
    super(scope, id, {
      entry: props.entry,
      handler: 'handler',
      projectRoot: props.projectRoot,
      depsLockFilePath: `${props.projectRoot}/package-lock.json`,
      runtime: PIPELINE_RUNTIME,
      architecture: lambda.Architecture.ARM_64,
      memorySize: props.memorySize,
      timeout: props.timeout,
      reservedConcurrentExecutions: props.reservedConcurrentExecutions,
      tracing: lambda.Tracing.ACTIVE,
      role,
      logGroup,
      description: props.description,
      environment: {
        NODE_OPTIONS: '--enable-source-maps',
        POWERTOOLS_SERVICE_NAME: SERVICE_NAME,
        POWERTOOLS_METRICS_NAMESPACE: METRICS_NAMESPACE,
        POWERTOOLS_LOG_LEVEL: props.logLevel,
        // Events carry bearer tokens and sealed messages: never log them, never trace responses.
        POWERTOOLS_LOGGER_LOG_EVENT: 'false',
        POWERTOOLS_TRACER_CAPTURE_RESPONSE: 'false',
        ...props.environment,
      },
      bundling: {
        ...PIPELINE_BUNDLING,
        // The bundle inlines every dependency, so this runs before any of them reads process.env.
        banner: [
          CREATE_REQUIRE_BANNER,
          ...bundled.map(
            ([name, value]) => `process.env[${JSON.stringify(name)}] = ${JSON.stringify(value)};`,
          ),
        ].join(' '),
        define: { __ITK3_CONFIG__: JSON.stringify(props.configJson) },
        forceDockerBundling: false,
        logLevel: LogLevel.WARNING,
      },
    });

    this.executionRole = role;
    logGroup.grantWrite(role);

    const runtimeReason =
      'Runtime pinned on purpose (PIPELINE_RUNTIME): nodejs22.x is supported by Lambda and is the version the project targets; the same code also runs on Node 20 in tests and in the emulator. Moving to nodejs24.x is a one-line, reviewed change made together with a test run on Node 24.';
    Validations.of(this).acknowledge({ id: 'AwsSolutions-L1', reason: runtimeReason });
    Validations.of(this).acknowledge({ id: 'Serverless-LambdaLatestVersion', reason: runtimeReason });
  }
}

/** Default settings of the ingest function (not a queue stage, so not in lib/infra/definitions.ts). */
export const INGEST_DEFAULTS = {
  memorySize: 1024,
  // HTTP APIs wait at most 30 s for an integration; ingest does one SQS send (and maybe one S3 put).
  timeout: Duration.seconds(10),
} as const;
