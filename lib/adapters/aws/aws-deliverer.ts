import { createHash } from 'node:crypto';
import { type MessageAttributeValue, SendMessageCommand, type SQSClient } from '@aws-sdk/client-sqs';
import { TransientError } from '../../errors.js';
import type { Deliverer, DeliveryTarget } from '../../ports/index.js';
import { folderKey } from './deployment-names.js';
import { awsErrorName } from './errors.js';
import { type S3ClientSource, s3Of } from './lazy-s3.js';

const SAFE_NAME = /^[A-Za-z0-9._-]{1,200}$/;

/**
 * {@link Deliverer} for the AWS runtimes.
 *
 * - `folder` → object `deliveries/<path>/<name>` in the pipeline's blob bucket, so the same
 *   configuration document works embedded (a real folder) and deployed (a bucket "folder").
 * - `s3` → object `<prefix>/<name>` in the named bucket.
 * - `sqs` → `SendMessage` with the bytes as the body; bytes that are not valid UTF-8, or that hold
 *   characters SQS refuses, are sent base64-encoded with the attribute `contentEncoding=base64`.
 *
 * Idempotent by name and content: S3 writes are conditional (`If-None-Match: *`), so a redelivery
 * finds the object and reports the same location without a second write (no second version, no
 * second event notification) — but only after the existing object's SHA-256 was found equal to the
 * bytes being delivered. A different object under the name is a `DELIVERY_CONFLICT` (retried, then
 * dead-lettered with that reason), never a delivery (issue 9, class 3). FIFO queues get a
 * deduplication id derived from the name and the content hash, so SQS never swallows different
 * bytes under a name it has seen; standard queues cannot deduplicate, so every message carries its
 * `name` and `sha256` attributes for the consumer to do so.
 *
 * @example
 * ```ts
 * const deliverer = new AwsDeliverer({ s3, sqs, blobBucket: 'itk3-blobs' });
 * await deliverer.deliver({ type: 's3', bucket: 'rx-inbox', prefix: 'itk3/' }, 'msg-1.xml', bytes, 'application/fhir+xml');
 * ```
 */
export class AwsDeliverer implements Deliverer {
  /** A client, or a factory ({@link lazyS3Client}): the S3 SDK loads at the first S3 delivery only. */
  readonly #s3: S3ClientSource;
  readonly #sqs: SQSClient;
  readonly #blobBucket: string;

  constructor(opts: { s3: S3ClientSource; sqs: SQSClient; blobBucket: string }) {
    this.#s3 = opts.s3;
    this.#sqs = opts.sqs;
    this.#blobBucket = opts.blobBucket;
  }

  async deliver(
    target: DeliveryTarget,
    name: string,
    bytes: Uint8Array,
    contentType: string,
  ): Promise<string> {
    if (!SAFE_NAME.test(name)) throw new Error('unsafe delivery name');
    switch (target.type) {
      case 'folder':
        return this.#putObject(this.#blobBucket, folderKey(target.path, name), bytes, contentType);
      case 's3':
        return this.#putObject(target.bucket, joinPrefix(target.prefix, name), bytes, contentType);
      case 'sqs':
        return this.#sendMessage(target.queueUrl, name, bytes, contentType);
      case 'mesh':
        // MESH sending wraps this deliverer (lib/mesh/deliverer.ts) where a MESH connection exists.
        throw new TransientError('DELIVERY_UNAVAILABLE', 'a mesh target needs a MESH connection');
    }
  }

  async #putObject(bucket: string, key: string, bytes: Uint8Array, contentType: string): Promise<string> {
    const location = `s3://${bucket}/${key}`;
    try {
      const { client, sdk } = await s3Of(this.#s3);
      await client.send(
        new sdk.PutObjectCommand({
          Bucket: bucket,
          Key: key,
          Body: bytes,
          ContentLength: bytes.byteLength,
          ContentType: contentType,
          IfNoneMatch: '*',
        }),
      );
    } catch (error) {
      // 412: an object already holds the name. It is this delivery only if its bytes are ours (a
      // redelivery of the same trace); anything else is a conflict, never claimed as delivered.
      // 409: a concurrent write of the name is in flight: retry, and the retry compares.
      const status = (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
      const name = awsErrorName(error);
      if (status === 412 || name === 'PreconditionFailed') {
        if ((await this.#existingSha256(bucket, key)) === sha256Of(bytes)) return location;
        throw new TransientError(
          'DELIVERY_CONFLICT',
          'a different object already holds the delivery name; not delivered',
        );
      }
      throw deliveryError('S3 PutObject', error);
    }
    return location;
  }

  /** SHA-256 of the object under `key`, read back in full (a 412 is rare; delivered objects are small). */
  async #existingSha256(bucket: string, key: string): Promise<string> {
    try {
      const { client, sdk } = await s3Of(this.#s3);
      const out = await client.send(new sdk.GetObjectCommand({ Bucket: bucket, Key: key }));
      if (!out.Body) throw new Error('GetObject returned no body');
      return sha256Of(await out.Body.transformToByteArray());
    } catch (error) {
      throw deliveryError('S3 GetObject', error);
    }
  }

  async #sendMessage(
    queueUrl: string,
    name: string,
    bytes: Uint8Array,
    contentType: string,
  ): Promise<string> {
    const text = sqsSafeText(bytes);
    const attributes: Record<string, MessageAttributeValue> = {
      name: { DataType: 'String', StringValue: name },
      contentType: { DataType: 'String', StringValue: contentType },
      sha256: { DataType: 'String', StringValue: sha256Of(bytes) },
    };
    if (text === undefined) attributes.contentEncoding = { DataType: 'String', StringValue: 'base64' };
    const fifo = queueUrl.endsWith('.fifo');
    try {
      const out = await this.#sqs.send(
        new SendMessageCommand({
          QueueUrl: queueUrl,
          MessageBody: text ?? Buffer.from(bytes).toString('base64'),
          MessageAttributes: attributes,
          ...(fifo
            ? {
                // SQS deduplicates a FIFO id for five minutes: covers the pipeline's own retries.
                // Name and content together: different bytes under a name are never swallowed.
                MessageDeduplicationId: sha256Of(`${name}\n${sha256Of(bytes)}`),
                MessageGroupId: 'itk3',
              }
            : {}),
        }),
      );
      return `${queueUrl}#${out.MessageId ?? name}`;
    } catch (error) {
      throw deliveryError('SQS SendMessage', error);
    }
  }
}

function joinPrefix(prefix: string, name: string): string {
  if (!prefix) return name;
  return prefix.endsWith('/') ? `${prefix}${name}` : `${prefix}/${name}`;
}

/**
 * The bytes as text if SQS can carry them as they are: valid UTF-8 and only the characters the SQS
 * message body allows (#x9, #xA, #xD, #x20–#xD7FF, #xE000–#xFFFD, #x10000–#x10FFFF).
 */
export function sqsSafeText(bytes: Uint8Array): string | undefined {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    return undefined;
  }
  // biome-ignore lint/suspicious/noControlCharactersInRegex: these are exactly the characters SQS refuses
  return /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]/.test(text) ? undefined : text;
}

function sha256Of(data: Uint8Array | string): string {
  return createHash('sha256').update(data).digest('hex');
}

function deliveryError(operation: string, error: unknown): TransientError {
  return new TransientError(
    'DELIVERY_UNAVAILABLE',
    `${operation} failed (${awsErrorName(error) ?? 'unknown error'})`,
    {
      cause: error,
    },
  );
}
