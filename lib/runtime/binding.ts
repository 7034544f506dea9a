/**
 * Composition: which ports and configuration a handler invocation uses.
 *
 * The embedded runtime passes its in-process ports on the Lambda context object under a symbol,
 * so it can invoke the very handler exports that Lambda runs. Without it, the handler is in AWS
 * (or emulator mode): the configuration comes from the bundle or environment and the AWS adapters
 * are loaded once per container.
 */
import { randomUUID } from 'node:crypto';
import type { Context } from 'aws-lambda';
import type { LoadedConfig } from '../config/load.js';
import { configFromEnvironment } from '../config/source.js';
import { STAGE_DEFINITIONS } from '../infra/definitions.js';
import type { StageName } from '../pipeline/topology.js';
import type { Ports } from '../ports/index.js';

export const EMBEDDED_BINDING = Symbol.for('itk3.embedded-binding');

export interface RuntimeBinding {
  ports: Ports;
  config: LoadedConfig;
}

export type EmbeddedContext = Context & { [EMBEDDED_BINDING]?: RuntimeBinding };

let awsBinding: Promise<RuntimeBinding> | undefined;

export function bindingFor(context: Context): Promise<RuntimeBinding> {
  const embedded = (context as EmbeddedContext)[EMBEDDED_BINDING];
  if (embedded) return Promise.resolve(embedded);
  awsBinding ??= (async () => {
    const config = configFromEnvironment();
    const { awsPortsFromEnv } = await import('../adapters/aws/clients.js');
    return { config, ports: awsPortsFromEnv(config) };
  })();
  // A failed cold start must not poison the container forever.
  awsBinding.catch(() => {
    awsBinding = undefined;
  });
  return awsBinding;
}

/** A Lambda context for a local invocation of `stage`, carrying the binding the handler should use. */
export function lambdaContext(stage: StageName, binding: RuntimeBinding): EmbeddedContext {
  const deadline = Date.now() + STAGE_DEFINITIONS[stage].timeoutSeconds * 1000;
  return {
    callbackWaitsForEmptyEventLoop: false,
    functionName: `itk3-${stage}`,
    functionVersion: '$LATEST',
    invokedFunctionArn: `arn:aws:lambda:local:000000000000:function:itk3-${stage}`,
    memoryLimitInMB: String(STAGE_DEFINITIONS[stage].memoryMb),
    awsRequestId: randomUUID(),
    logGroupName: `/aws/lambda/itk3-${stage}`,
    logStreamName: 'embedded',
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
    done: () => undefined,
    fail: () => undefined,
    succeed: () => undefined,
    [EMBEDDED_BINDING]: binding,
  };
}
