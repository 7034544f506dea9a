import { SQSClient } from '@aws-sdk/client-sqs';
import { type AwsClientOptions, sdkClientConfig } from './client-options.js';

/** The SQSClient of the pipeline's adapters (endpoint, region and timeouts per client-options.ts). */
export function createSqsClient(opts: AwsClientOptions = {}): SQSClient {
  return new SQSClient(sdkClientConfig('sqs', opts));
}
