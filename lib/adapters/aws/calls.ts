/**
 * Call counters for the AWS adapters: how many requests each adapter made, per service and
 * operation. The benchmark divides them by the messages processed (calls per message by service),
 * and tests use them to prove batching and caching. Process-wide on purpose: one Lambda container
 * or one benchmark run is one process.
 */

/** Services the adapters call. */
export type AwsService = 'kms' | 'sqs' | 'dynamodb' | 's3';

/** Requests made so far, by service and operation name (`Decrypt`, `SendMessageBatch`, …). */
export const awsCalls: Record<AwsService, Record<string, number>> = {
  kms: {},
  sqs: {},
  dynamodb: {},
  s3: {},
};

/** Count one request. Called before the request is sent, so failed calls count too (they cost). */
export function countCall(service: AwsService, operation: string): void {
  const ops = awsCalls[service];
  ops[operation] = (ops[operation] ?? 0) + 1;
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
