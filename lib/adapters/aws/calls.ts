/**
 * Call counters for the AWS adapters: how many requests each client sent, per service and
 * operation, counted by one SDK middleware ({@link countCallsOf}) registered where the clients are
 * created (clients.ts), so no adapter counts by hand. The benchmark divides them by the messages
 * processed (calls per message by service), and tests use them to prove batching and caching.
 * Process-wide on purpose: one Lambda container or one benchmark run is one process.
 */
import type { MiddlewareStack } from '@smithy/types';

/** Services the adapters call. */
export type AwsService = 'kms' | 'sqs' | 'dynamodb' | 's3';

/** Requests made so far, by service and operation name (`Decrypt`, `SendMessageBatch`, …). */
export const awsCalls: Record<AwsService, Record<string, number>> = {
  kms: {},
  sqs: {},
  dynamodb: {},
  s3: {},
};

/** Count one request. */
function countCall(service: AwsService, operation: string): void {
  const ops = awsCalls[service];
  ops[operation] = (ops[operation] ?? 0) + 1;
}

/**
 * Count every command a client sends, under `service` and the command's name (`DecryptCommand` →
 * `Decrypt`), by adding one middleware to its stack. An `initialize` step: once per `send`, before
 * the request is built, so a failed call counts too (it costs) and the SDK's own retries do not add
 * to it.
 *
 * @example
 * ```ts
 * const kms = new KMSClient({});
 * countCallsOf('kms', kms.middlewareStack);
 * ```
 */
export function countCallsOf<Input extends object, Output extends object>(
  service: AwsService,
  stack: MiddlewareStack<Input, Output>,
): void {
  stack.add(
    (next, context) => (args) => {
      countCall(service, (context.commandName ?? 'Unknown').replace(/Command$/, ''));
      return next(args);
    },
    { step: 'initialize', name: 'itk3CountCalls', override: true },
  );
}

/** Zero every counter (between benchmark phases or tests). */
export function resetAwsCalls(): void {
  for (const service of Object.keys(awsCalls) as AwsService[]) awsCalls[service] = {};
}

/**
 * A copy of the counters with per-service totals, e.g.
 * `{ kms: { Decrypt: 10, total: 10 }, sqs: { SendMessageBatch: 2, total: 2 }, … }`.
 */
export function awsCallSnapshot(): Record<AwsService, Record<string, number>> {
  const out = {} as Record<AwsService, Record<string, number>>;
  for (const service of Object.keys(awsCalls) as AwsService[]) {
    const ops = { ...awsCalls[service] };
    ops.total = Object.values(awsCalls[service]).reduce((a, b) => a + b, 0);
    out[service] = ops;
  }
  return out;
}
