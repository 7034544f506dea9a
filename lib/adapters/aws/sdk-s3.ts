import { S3Client } from '@aws-sdk/client-s3';

// The commands the adapters send, for lazy-s3.ts: importing this module (not the whole SDK
// namespace) lets a bundle keep only these.
export { DeleteObjectCommand, GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';

import { countCallsOf } from './calls.js';
import { type AwsClientOptions, endpointFor, sdkClientConfig } from './client-options.js';

/**
 * The S3Client of the pipeline's adapters (endpoint, region and timeouts per client-options.ts).
 * Against an emulator endpoint it uses path-style URLs, since virtual-hosted names such as
 * `bucket.127.0.0.1` do not resolve.
 */
export function createS3Client(opts: AwsClientOptions = {}): S3Client {
  const client = new S3Client({
    ...sdkClientConfig('s3', opts),
    forcePathStyle: endpointFor('s3', opts) !== undefined,
  });
  countCallsOf('s3', client.middlewareStack);
  return client;
}
