/** S3 buckets for the integration tests. */
import {
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectCommand,
  ListObjectsV2Command,
} from '@aws-sdk/client-s3';
import type { AwsClients } from '../../../lib/adapters/aws/clients.js';

export async function createBucket(clients: AwsClients, name: string): Promise<void> {
  await clients.s3.send(new CreateBucketCommand({ Bucket: name }));
}

/** Empty and delete a bucket (best effort: a test's leftovers must not fail the run). */
export async function deleteBucket(clients: AwsClients, name: string): Promise<void> {
  try {
    const { Contents = [] } = await clients.s3.send(new ListObjectsV2Command({ Bucket: name }));
    for (const object of Contents) {
      await clients.s3.send(new DeleteObjectCommand({ Bucket: name, Key: object.Key }));
    }
    await clients.s3.send(new DeleteBucketCommand({ Bucket: name }));
  } catch {
    // leftovers on an emulator are harmless
  }
}
