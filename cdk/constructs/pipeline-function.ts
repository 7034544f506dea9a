import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AssetHashType, DockerImage, Duration, type RemovalPolicy, Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import type { Construct } from 'constructs';
import { METRICS_NAMESPACE, type PowertoolsLogLevel, SERVICE_NAME } from './observability-names.js';

/**
 * The one Lambda runtime of the pipeline. Pinned, so an upgrade is a reviewed one-line change; the
 * code is also run on Node 20 by the tests and the emulator, so it avoids newer-only APIs.
 */
const PIPELINE_RUNTIME = lambda.Runtime.NODEJS_22_X;

/** CDK context key: `true` bundles the AWS SDK v3 into every function (emulator deployments). */
export const BUNDLE_AWS_SDK_CONTEXT = 'itk3:bundleAwsSdk';

/**
 * `NODE_OPTIONS` of every function: source maps on, so stack traces name the TypeScript file and line.
 * The bundle bench starts its module-initialisation runs with it too (Node reads the map as it loads).
 */
export const FUNCTION_NODE_OPTIONS = '--enable-source-maps';

/** Name of the handler bundle inside a function's code asset and under `dist/handlers/<name>/`. */
export const HANDLER_BUNDLE_FILE = 'bundle.mjs';

/**
 * The AWS SDK v3 packages the handlers import, each loaded from the Lambda runtime through its
 * CommonJS stand-in `runtime-sdk/<package>.cjs` ({@link handlerBundleOptions}). A handler that imports
 * another `@aws-sdk/*` package still builds (it stays an ES import), and the bundle test fails until
 * it is listed here.
 */
export const RUNTIME_SDK_PACKAGES = [
  '@aws-sdk/client-dynamodb',
  '@aws-sdk/client-kms',
  '@aws-sdk/client-s3',
  '@aws-sdk/client-secrets-manager',
  '@aws-sdk/client-sqs',
] as const;

/** A file of runtime-sdk/, next to this module (absolute: esbuild resolves aliases from its cwd). */
function runtimeSdkFile(name: string): string {
  return fileURLToPath(new URL(`./runtime-sdk/${name}`, import.meta.url));
}

/**
 * The esbuild options of every function bundle, in one place: the construct's synth-time bundling,
 * the prebuilt bundles the package ships (scripts/build-handlers.ts), the bundle bench and the
 * bundle-content test all build with these. The shape is esbuild's `BuildOptions` (not imported:
 * the construct's consumers need no esbuild); plain options, no plugins, so the construct can build
 * with esbuild's synchronous API inside CDK's synchronous local bundling.
 *
 * - The AWS SDK v3 clients (`@aws-sdk/*`) stay external: the Lambda Node.js runtime provides them
 *   (with the `@smithy/*` packages they use), and they are most of a bundle's size and start-up
 *   time. The few `@smithy/core` helpers the adapters import directly are bundled, so they never
 *   depend on the runtime's SDK version. Emulators run functions on a Node without an SDK, so
 *   their deployments bundle it (`bundleAwsSdk`, context `itk3:bundleAwsSdk=true`).
 * - The external SDK loads through CommonJS `require`, not ES `import`: each client is aliased to a
 *   one-line CommonJS stand-in (runtime-sdk/<package>.cjs) calling `runtimeRequire`, a
 *   `createRequire(import.meta.url)` injected once per bundle (runtime-sdk/runtime-require.mjs).
 *   Node takes an ES import of the SDK's CommonJS entry files markedly slower than a `require` of
 *   them (the clients a stage uses: 100 ms or more on the bench host, docs/PERFORMANCE.md), and on
 *   Lambda only `require` searches NODE_PATH, where the runtime keeps its SDK. The bundle keeps
 *   ES module syntax (`bundle.mjs`); only the SDK crosses into CommonJS.
 */
export function handlerBundleOptions(options: { readonly bundleAwsSdk: boolean }) {
  const sdkFromRuntime = !options.bundleAwsSdk;
  // Literal types field by field (not `as const` on the whole): esbuild's option types want mutable
  // arrays, so every caller can spread these as they are.
  return {
    bundle: true,
    platform: 'node' as const,
    target: 'node22',
    format: 'esm' as const,
    mainFields: ['module', 'main'],
    minify: true,
    // Source maps without the sources: stack traces keep file and line, the asset stays small.
    sourcemap: true,
    sourcesContent: false,
    external: sdkFromRuntime ? ['@aws-sdk/*'] : [],
    alias: sdkFromRuntime
      ? Object.fromEntries(
          RUNTIME_SDK_PACKAGES.map((pkg) => [pkg, runtimeSdkFile(`${pkg.slice('@aws-sdk/'.length)}.cjs`)]),
        )
      : {},
    inject: sdkFromRuntime ? [runtimeSdkFile('runtime-require.mjs')] : [],
    logLevel: 'warning' as const,
  };
}

/**
 * The `index.mjs` of a function's code asset: sets the validated configuration (read by
 * lib/config/source.ts as the global `__ITK3_CONFIG__`) and the bundled variables, then loads the
 * handler bundle. A dynamic import, so both are in place before any bundled module runs.
 */
export function handlerWrapper(configJson: string, bundledEnvironment: Record<string, string>): string {
  return [
    '// Written at synth by the ITK3 construct (cdk/constructs/pipeline-function.ts).',
    `globalThis.__ITK3_CONFIG__ = ${JSON.stringify(configJson)};`,
    ...Object.entries(bundledEnvironment).map(
      ([name, value]) => `process.env[${JSON.stringify(name)}] = ${JSON.stringify(value)};`,
    ),
    `const bundled = await import('./${HANDLER_BUNDLE_FILE}');`,
    'export const handler = bundled.handler;',
    '',
  ].join('\n');
}

/**
 * Where a handler's code comes from: its TypeScript source, bundled at synth (this repository), or
 * the prebuilt bundle the package ships under `handlers/<name>/` (an installed package, which has
 * no sources). `source` wins when the file exists.
 */
export function resolveHandler(source: string, prebuiltRoot: string): string {
  if (existsSync(source)) return source;
  const prebuilt = join(prebuiltRoot, 'handlers', basename(source, extname(source)));
  if (existsSync(join(prebuilt, HANDLER_BUNDLE_FILE))) return prebuilt;
  throw new Error(
    `no handler for ${basename(source)}: neither the source ${source} nor a prebuilt bundle in ${prebuilt} (npm run build:handlers)`,
  );
}

/** Properties of a {@link PipelineFunction}. */
export interface PipelineFunctionProps {
  /**
   * Absolute path of the handler: a TypeScript source exporting `handler`, bundled with esbuild at
   * synth, or a directory holding a prebuilt `bundle.mjs` ({@link resolveHandler}).
   */
  readonly entry: string;
  /** Absolute path of the project root: where esbuild resolves the sources' packages. */
  readonly projectRoot: string;
  /**
   * Bundle the AWS SDK v3 instead of using the one the Lambda runtime provides (emulators).
   * @default false
   */
  readonly bundleAwsSdk?: boolean;
  /**
   * JSON text of the validated configuration document, set as `__ITK3_CONFIG__` before the bundle
   * loads (lib/config/source.ts), so the function runs the exact document checked at synth.
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
 * A Node.js function with the pipeline's shared defaults, in the manner of the Powertools example
 * app: pinned runtime on arm64, minified ESM with source maps ({@link handlerBundleOptions}), an
 * explicit log group with retention, and a role of its own that starts with nothing but that log
 * group. No X-Ray tracing: the handlers carry no tracer (docs/PERFORMANCE.md, "Bundles").
 *
 * The code asset is `index.mjs` ({@link handlerWrapper}: configuration and bundled variables) beside
 * `bundle.mjs`, the handler: bundled at synth with local esbuild from a source entry (offline, no
 * Docker), or copied from a prebuilt bundle directory.
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
export class PipelineFunction extends lambda.Function {
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

    const bundled = props.bundledEnvironment ?? {};
    for (const name of Object.keys(bundled)) {
      // One source per variable: a Lambda variable of the same name would be silently overwritten.
      if (props.environment?.[name] !== undefined) {
        throw new Error(`${id}: ${name} is given both as an environment and as a bundled variable`);
      }
    }
    super(scope, id, {
      code: handlerCode(props, handlerWrapper(props.configJson, bundled)),
      handler: 'index.handler',
      runtime: PIPELINE_RUNTIME,
      architecture: lambda.Architecture.ARM_64,
      memorySize: props.memorySize,
      timeout: props.timeout,
      reservedConcurrentExecutions: props.reservedConcurrentExecutions,
      role,
      logGroup,
      description: props.description,
      environment: {
        NODE_OPTIONS: FUNCTION_NODE_OPTIONS,
        POWERTOOLS_SERVICE_NAME: SERVICE_NAME,
        POWERTOOLS_METRICS_NAMESPACE: METRICS_NAMESPACE,
        POWERTOOLS_LOG_LEVEL: props.logLevel,
        // Events carry bearer tokens and sealed messages: never log them.
        POWERTOOLS_LOGGER_LOG_EVENT: 'false',
        ...props.environment,
      },
    });

    this.executionRole = role;
    logGroup.grantWrite(role);

    const runtimeReason =
      'Runtime pinned on purpose (PIPELINE_RUNTIME): nodejs22.x is supported by Lambda and is the version the project targets; the same code also runs on Node 20 in tests and in the emulator. Moving to nodejs24.x is a one-line, reviewed change made together with a test run on Node 24.';
    Validations.of(this).acknowledge({ id: 'AwsSolutions-L1', reason: runtimeReason });
    Validations.of(this).acknowledge({ id: 'Serverless-LambdaLatestVersion', reason: runtimeReason });
    Validations.of(this).acknowledge({
      id: 'Serverless-LambdaTracing',
      reason:
        'No X-Ray tracing: the handlers carry no tracer (the Powertools tracer and the X-Ray SDK would exceed the 300 KB bundle budget), each message is followed by its trace id in the audit trail and logs (itk3 trace), and queue depth, age and DLQ alarms cover the hops between stages.',
    });
  }
}

/**
 * The function's code asset: the handler bundle (built here from a source entry, or copied from a
 * prebuilt directory) and the {@link handlerWrapper}. Hashed by output, so a configuration change is
 * a code change.
 */
function handlerCode(props: PipelineFunctionProps, wrapper: string): lambda.Code {
  const fromSource = props.entry.endsWith('.ts');
  return lambda.Code.fromAsset(fromSource ? dirname(props.entry) : props.entry, {
    assetHashType: AssetHashType.OUTPUT,
    bundling: {
      // CDK caches staged assets per process by source path and bundling options: this names what
      // differs between two functions' assets (entry, SDK choice, wrapper). Docker never sees it.
      environment: {
        ITK3_ASSET_KEY: createHash('sha256')
          .update(JSON.stringify([props.entry, props.bundleAwsSdk ?? false, wrapper]))
          .digest('hex'),
      },
      // Never used: local bundling always succeeds or throws (no Docker at synth).
      image: DockerImage.fromRegistry('public.ecr.aws/docker/library/node:22'),
      local: {
        tryBundle(outputDir: string): boolean {
          if (fromSource) {
            // Only here, in a checkout with sources: an installed package ships bundles, not esbuild.
            const esbuild = createRequire(import.meta.url)('esbuild') as {
              buildSync(options: object): unknown;
            };
            esbuild.buildSync({
              ...handlerBundleOptions({ bundleAwsSdk: props.bundleAwsSdk ?? false }),
              entryPoints: [props.entry],
              outfile: join(outputDir, HANDLER_BUNDLE_FILE),
              absWorkingDir: props.projectRoot,
            });
          } else {
            if (props.bundleAwsSdk) {
              throw new Error(
                `${props.entry}: prebuilt bundles leave the AWS SDK to the Lambda runtime; bundling it (${BUNDLE_AWS_SDK_CONTEXT}) needs the handler sources`,
              );
            }
            for (const file of [HANDLER_BUNDLE_FILE, `${HANDLER_BUNDLE_FILE}.map`]) {
              copyFileSync(join(props.entry, file), join(outputDir, file));
            }
          }
          writeFileSync(join(outputDir, 'index.mjs'), wrapper);
          return true;
        },
      },
    },
  });
}

/** Default settings of the ingest function (not a queue stage, so not in lib/infra/definitions.ts). */
export const INGEST_DEFAULTS = {
  memorySize: 1024,
  // HTTP APIs wait at most 30 s for an integration; ingest does one SQS send (and maybe one S3 put).
  timeout: Duration.seconds(10),
} as const;
