import { TransientError } from '../../errors.js';
import { BLOB_BUCKET, ENV } from '../../infra/definitions.js';
import type { BlobStore } from '../../ports/index.js';
import { awsErrorName } from './errors.js';
import { type S3ClientSource, s3Of } from './lazy-s3.js';

/**
 * {@link BlobStore} on S3 (claim check). Keys are stored under `prefix` (default
 * `BLOB_BUCKET.claimCheckPrefix`) so the bucket's expiry rule covers them and they never collide
 * with deliveries in the same bucket. Encryption is the bucket's default (SSE-KMS in the stack), so
 * no per-request SSE headers: one policy, set once, in CDK.
 *
 * @example
 * ```ts
 * const blobs = new S3BlobStore(new S3Client({}), process.env.ITK3_BLOB_BUCKET!);
 * await blobs.put(`${traceId}/jwe`, bytes);
 * ```
 */
export class S3BlobStore implements BlobStore {
  readonly #client: S3ClientSource;
  readonly #bucket: string;
  readonly #prefix: string;

  constructor(
    /** A client, or a factory ({@link lazyS3Client}) so the S3 SDK loads at the first blob only. */
    client: S3ClientSource,
    bucket: string = BLOB_BUCKET.name,
    prefix: string = BLOB_BUCKET.claimCheckPrefix,
  ) {
    this.#client = client;
    this.#bucket = bucket;
    this.#prefix = prefix;
  }

  async put(key: string, bytes: Uint8Array): Promise<void> {
    try {
      const { client, sdk } = await s3Of(this.#client);
      await client.send(
        new sdk.PutObjectCommand({
          Bucket: this.#bucket,
          Key: this.#prefix + key,
          Body: bytes,
          ContentLength: bytes.byteLength,
          ContentType: 'application/octet-stream',
        }),
      );
    } catch (error) {
      throw blobError('PutObject', error);
    }
  }

  async get(key: string): Promise<Uint8Array> {
    try {
      const { client, sdk } = await s3Of(this.#client);
      const out = await client.send(
        new sdk.GetObjectCommand({ Bucket: this.#bucket, Key: this.#prefix + key }),
      );
      if (!out.Body) throw new Error('GetObject returned no body');
      // Streams the response body into one buffer (the SDK's stream mixin).
      return await out.Body.transformToByteArray();
    } catch (error) {
      throw blobError('GetObject', error);
    }
  }

  /**
   * Remove a claim-check object when its trace ends. DeleteObject succeeds for a missing key; in the
   * versioned bucket it leaves a delete marker and the claim-check rule expires the old version.
   */
  async delete(key: string): Promise<void> {
    try {
      const { client, sdk } = await s3Of(this.#client);
      await client.send(new sdk.DeleteObjectCommand({ Bucket: this.#bucket, Key: this.#prefix + key }));
    } catch (error) {
      throw blobError('DeleteObject', error);
    }
  }
}

/**
 * Every blob failure is transient for the pipeline: a throttled or unreachable bucket recovers, and
 * a missing claim-check object (expired, or a record redriven after the expiry) is an operator matter
 * for the DLQ, not a reason to send the sender an ITK3 rejection.
 */
function blobError(operation: string, error: unknown): TransientError {
  return new TransientError(
    'BLOB_STORE_UNAVAILABLE',
    `S3 ${operation} failed (${awsErrorName(error) ?? 'unknown error'})`,
    {
      cause: error,
    },
  );
}

/** The pipeline's bucket: claim checks, and folder-type delivery targets as prefixes of it. */
export function blobBucketFromEnv(env: NodeJS.ProcessEnv = process.env): string {
  return env[ENV.blobBucket]?.trim() || BLOB_BUCKET.name;
}
