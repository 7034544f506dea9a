import { randomUUID } from 'node:crypto';
import type { Context } from 'aws-lambda';
import { STAGE_DEFINITIONS } from '../infra/definitions.js';
import type { StageName } from '../pipeline/topology.js';

/** A Lambda context for a local invocation of `stage` (the embedded and emulator runtimes). */
export function lambdaContext(stage: StageName): Context {
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
  };
}
