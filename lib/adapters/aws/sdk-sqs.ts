import { SQSClient } from '@aws-sdk/client-sqs';
import { countCallsOf } from './calls.js';
import { type AwsClientOptions, sdkClientConfig } from './client-options.js';

/** The SQSClient of the pipeline's adapters (endpoint, region and timeouts per client-options.ts). */
export function createSqsClient(opts: AwsClientOptions = {}): SQSClient {
  const client = new SQSClient(sdkClientConfig('sqs', opts));
  countCallsOf('sqs', client.middlewareStack);
  return client;
}
