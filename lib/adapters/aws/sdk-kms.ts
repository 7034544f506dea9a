import { KMSClient } from '@aws-sdk/client-kms';
import { countCallsOf } from './calls.js';
import { type AwsClientOptions, sdkClientConfig } from './client-options.js';

/** The KMSClient of the pipeline's adapters (endpoint, region and timeouts per client-options.ts). */
export function createKmsClient(opts: AwsClientOptions = {}): KMSClient {
  const client = new KMSClient(sdkClientConfig('kms', opts));
  countCallsOf('kms', client.middlewareStack);
  return client;
}
