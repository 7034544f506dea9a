/**
 * The S3 client and commands, loaded on first use. A stage function touches S3 only for claim checks
 * (messages above the queue's size) and folder or bucket deliveries, so its module initialisation
 * leaves the S3 SDK out: on a deployed function that is the runtime's `@aws-sdk/client-s3`, the
 * second-largest client it would otherwise load at every cold start (docs/PERFORMANCE.md, "Bundles
 * and module initialisation"). Only types are imported statically here.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import type { AwsClientOptions } from './client-options.js';

/** An S3 client, or a factory that builds one on first call (see {@link lazyS3Client}). */
export type S3ClientSource = S3Client | (() => Promise<S3Client>);

/**
 * A factory of one S3 client (client-options.ts settings, calls counted), built the first time it is
 * called; `import('./sdk-s3.js')` is what keeps the SDK out of module initialisation.
 */
export function lazyS3Client(opts: AwsClientOptions = {}): () => Promise<S3Client> {
  return loadOnce(() => import('./sdk-s3.js').then((sdk) => sdk.createS3Client(opts)));
}

/**
 * `load`, run at the first call and its promise shared by every caller until it settles: callers
 * that arrive together get one result. A rejection is not kept: blob failures are transient to the
 * pipeline (retried from the queue), so the next call loads again rather than failing for the rest
 * of the container's life.
 */
export function loadOnce<T>(load: () => Promise<T>): () => Promise<T> {
  let loaded: Promise<T> | undefined;
  return () => {
    loaded ??= load().catch((error: unknown) => {
      loaded = undefined;
      throw error;
    });
    return loaded;
  };
}

/** The client of `source`, and the commands the adapters send (sdk-s3.ts). */
export async function s3Of(source: S3ClientSource) {
  const { DeleteObjectCommand, GetObjectCommand, PutObjectCommand } = await import('./sdk-s3.js');
  const client = typeof source === 'function' ? await source() : source;
  return { client, sdk: { DeleteObjectCommand, GetObjectCommand, PutObjectCommand } };
}
