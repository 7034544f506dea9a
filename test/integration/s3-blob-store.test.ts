import { randomBytes } from 'node:crypto';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { S3BlobStore } from '../../lib/adapters/aws/s3-blob-store.js';
import { TransientError } from '../../lib/errors.js';
import { BLOB_BUCKET } from '../../lib/infra/definitions.js';
import { createBucket, deleteBucket } from './support/buckets.js';
import { describeEachEmulator } from './support/emulators.js';

describeEachEmulator('S3BlobStore', ({ clients, unique }) => {
  const bucket = unique('blobs');
  const blobs = new S3BlobStore(clients.s3, bucket);

  beforeAll(() => createBucket(clients, bucket));
  afterAll(() => deleteBucket(clients, bucket));

  it('stores and returns a 5 MB blob byte for byte (claim check)', async () => {
    const bytes = randomBytes(5 * 1024 * 1024);

    await blobs.put('trace-1/jwe', bytes);
    const back = await blobs.get('trace-1/jwe');

    expect(back.length).toBe(bytes.length);
    expect(Buffer.from(back).equals(bytes)).toBe(true);
  });

  it('keeps claim-check objects under the prefix the expiry rule covers', async () => {
    await blobs.put('trace-2/jws', new Uint8Array([1, 2, 3]));

    const head = await clients.s3.send(
      new HeadObjectCommand({ Bucket: bucket, Key: `${BLOB_BUCKET.claimCheckPrefix}trace-2/jws` }),
    );

    expect(head.ContentLength).toBe(3);
  });

  it('round-trips an empty blob', async () => {
    await blobs.put('empty', new Uint8Array());
    expect((await blobs.get('empty')).length).toBe(0);
  });

  it('reports a missing blob as a transient failure (retry, then DLQ)', async () => {
    const error = await blobs.get('no-such-key').catch((e: unknown) => e);

    expect(error).toBeInstanceOf(TransientError);
    expect((error as TransientError).code).toBe('BLOB_STORE_UNAVAILABLE');
  });

  it('deletes a claim-check blob when its trace ends; deleting a missing one is not an error', async () => {
    await blobs.put('trace-3/jwe', new Uint8Array([1]));
    await blobs.delete('trace-3/jwe');
    await blobs.delete('trace-3/jwe');

    const error = await blobs.get('trace-3/jwe').catch((e: unknown) => e);
    expect((error as TransientError).code).toBe('BLOB_STORE_UNAVAILABLE');
  });
});
