import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { countCallsOf } from './calls.js';
import { type AwsClientOptions, sdkClientConfig } from './client-options.js';

/** The DynamoDBClient of the pipeline's adapters (endpoint, region and timeouts per client-options.ts). */
export function createDynamodbClient(opts: AwsClientOptions = {}): DynamoDBClient {
  const client = new DynamoDBClient(sdkClientConfig('dynamodb', opts));
  countCallsOf('dynamodb', client.middlewareStack);
  return client;
}
