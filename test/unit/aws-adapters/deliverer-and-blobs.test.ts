import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import { mockClient } from 'aws-sdk-client-mock';
import { beforeEach, describe, expect, it } from 'vitest';
import { AwsDeliverer, sqsSafeText } from '../../../lib/adapters/aws/aws-deliverer.js';
import { folderKey } from '../../../lib/adapters/aws/deployment-names.js';
import { lazyS3Client, loadOnce } from '../../../lib/adapters/aws/lazy-s3.js';
import { S3BlobStore } from '../../../lib/adapters/aws/s3-blob-store.js';
import { TransientError } from '../../../lib/errors.js';
import { serviceError } from './faults.js';

const s3 = mockClient(S3Client);
const sqs = mockClient(SQSClient);
// A lazy S3 client, as a deployed function's batch clients give it (lib/adapters/aws/lazy-s3.ts).
const deliverer = () =>
  new AwsDeliverer({
    s3: lazyS3Client({ region: 'eu-west-2' }),
    sqs: new SQSClient({ region: 'eu-west-2' }),
    blobBucket: 'itk3-blobs',
  });

beforeEach(() => {
  s3.reset();
  sqs.reset();
});

describe('folderKey', () => {
  it.each([
    ['out/RCP01', 'deliveries/out/RCP01/m.xml'],
    ['./out/RCP01/', 'deliveries/out/RCP01/m.xml'],
    ['/var/itk3/out', 'deliveries/var/itk3/out/m.xml'],
    ['../../etc', 'deliveries/etc/m.xml'],
    ['a/../../b', 'deliveries/b/m.xml'],
    ['win\\dir', 'deliveries/win/dir/m.xml'],
    ['', 'deliveries/m.xml'],
  ])('maps folder %j to %s', (path, key) => {
    expect(folderKey(path, 'm.xml')).toBe(key);
  });
});

describe('sqsSafeText', () => {
  it('keeps UTF-8 text, tabs and newlines', () => {
    expect(sqsSafeText(new TextEncoder().encode('<a>é\t\r\n€😀</a>'))).toBe('<a>é\t\r\n€😀</a>');
  });

  it.each([
    ['invalid UTF-8', Uint8Array.from([0xc3, 0x28])],
    ['a NUL', new TextEncoder().encode('a\u0000b')],
    ['a control character', new TextEncoder().encode('a\u0001b')],
    ['U+FFFE', new TextEncoder().encode('a\ufffeb')],
  ])('refuses %s', (_name, bytes) => {
    expect(sqsSafeText(bytes)).toBeUndefined();
  });
});

describe('AwsDeliverer', () => {
  it('writes conditionally (If-None-Match) with the content type', async () => {
    s3.on(PutObjectCommand).resolves({});

    const location = await deliverer().deliver(
      { type: 's3', bucket: 'rx', prefix: 'in/' },
      'm.xml',
      new Uint8Array([60]),
      'application/fhir+xml',
    );

    expect(location).toBe('s3://rx/in/m.xml');
    expect(s3.commandCalls(PutObjectCommand)[0]?.args[0].input).toMatchObject({
      Bucket: 'rx',
      Key: 'in/m.xml',
      IfNoneMatch: '*',
      ContentType: 'application/fhir+xml',
    });
  });

  /** An S3 GetObject body holding `text` (the SDK stream mixin's one method the adapter uses). */
  const objectBody = (text: string) =>
    ({ transformToByteArray: async () => new TextEncoder().encode(text) }) as never;

  it('a 412 over an object with the same bytes is this delivery again: same location, no second write', async () => {
    s3.on(PutObjectCommand).rejects(serviceError('PreconditionFailed', 412));
    s3.on(GetObjectCommand).resolves({ Body: objectBody('<Bundle/>') });
    const location = await deliverer().deliver(
      { type: 'folder', path: 'x' },
      'm.xml',
      new TextEncoder().encode('<Bundle/>'),
      'text/xml',
    );
    expect(location).toBe('s3://itk3-blobs/deliveries/x/m.xml');
    expect(s3.commandCalls(GetObjectCommand)[0]?.args[0].input).toEqual({
      Bucket: 'itk3-blobs',
      Key: 'deliveries/x/m.xml',
    });
  });

  it('a 412 over an object with different bytes is DELIVERY_CONFLICT, never a delivery', async () => {
    s3.on(PutObjectCommand).rejects(serviceError('PreconditionFailed', 412));
    s3.on(GetObjectCommand).resolves({ Body: objectBody('<Bundle>someone else</Bundle>') });
    const thrown = await deliverer()
      .deliver(
        { type: 's3', bucket: 'rx', prefix: 'in' },
        'm.xml',
        new TextEncoder().encode('<Bundle/>'),
        'x',
      )
      .catch((e: unknown) => e);
    expect(thrown).toBeInstanceOf(TransientError);
    expect((thrown as TransientError).code).toBe('DELIVERY_CONFLICT');
  });

  it('a 409 (a concurrent write of the name) is retried, not claimed as delivered', async () => {
    s3.on(PutObjectCommand).rejects(serviceError('ConditionalRequestConflict', 409));
    const thrown = await deliverer()
      .deliver({ type: 's3', bucket: 'rx', prefix: '' }, 'm.xml', new Uint8Array([1]), 'x')
      .catch((e: unknown) => e);
    expect((thrown as TransientError).code).toBe('DELIVERY_UNAVAILABLE');
  });

  it('throws DELIVERY_UNAVAILABLE on S3 throttling or a missing bucket', async () => {
    s3.on(PutObjectCommand)
      .rejectsOnce(serviceError('SlowDown', 503))
      .rejectsOnce(serviceError('NoSuchBucket', 404));
    for (let i = 0; i < 2; i += 1) {
      const thrown = await deliverer()
        .deliver({ type: 's3', bucket: 'rx', prefix: '' }, 'm', new Uint8Array(), 'x')
        .catch((e: unknown) => e);
      expect((thrown as TransientError).code).toBe('DELIVERY_UNAVAILABLE');
    }
  });

  it('gives FIFO queues a deduplication id derived from the name and the content', async () => {
    sqs.on(SendMessageCommand).resolves({ MessageId: 'mid' });
    const target = { type: 'sqs' as const, queueUrl: 'https://sqs.eu-west-2.amazonaws.com/1/rx.fifo' };

    await deliverer().deliver(target, 'm.xml', new TextEncoder().encode('x'), 'text/xml');
    await deliverer().deliver(target, 'm.xml', new TextEncoder().encode('x'), 'text/xml');
    // Different bytes under the same name must not be swallowed by SQS deduplication.
    await deliverer().deliver(target, 'm.xml', new TextEncoder().encode('y'), 'text/xml');

    const [a, b, c] = sqs.commandCalls(SendMessageCommand).map((call) => call.args[0].input);
    expect(a?.MessageDeduplicationId).toMatch(/^[0-9a-f]{64}$/);
    expect(a?.MessageDeduplicationId).toBe(b?.MessageDeduplicationId);
    expect(c?.MessageDeduplicationId).not.toBe(a?.MessageDeduplicationId);
    expect(a?.MessageGroupId).toBe('itk3');
    expect(c?.MessageAttributes?.sha256?.StringValue).toMatch(/^[0-9a-f]{64}$/);
    expect(c?.MessageAttributes?.name?.StringValue).toBe('m.xml');
  });

  it('refuses a name that could escape its folder or prefix', async () => {
    await expect(
      deliverer().deliver({ type: 'folder', path: 'x' }, '../m.xml', new Uint8Array(), 'text/xml'),
    ).rejects.toThrow('unsafe delivery name');
  });
});

describe('S3BlobStore', () => {
  it('stores under the claim-check prefix and throws BLOB_STORE_UNAVAILABLE on failure', async () => {
    s3.on(PutObjectCommand).resolves({});
    s3.on(GetObjectCommand).rejects(serviceError('SlowDown', 503));
    const blobs = new S3BlobStore(new S3Client({ region: 'eu-west-2' }), 'b');

    await blobs.put('t/1', new Uint8Array([1]));
    const thrown = await blobs.get('t/1').catch((e: unknown) => e);

    expect(s3.commandCalls(PutObjectCommand)[0]?.args[0].input).toMatchObject({
      Bucket: 'b',
      Key: 'claim-check/t/1',
    });
    expect(thrown).toBeInstanceOf(TransientError);
    expect((thrown as TransientError).code).toBe('BLOB_STORE_UNAVAILABLE');
  });

  it('deletes a claim-check object under the prefix', async () => {
    s3.on(DeleteObjectCommand).resolves({});
    await new S3BlobStore(new S3Client({ region: 'eu-west-2' }), 'b').delete('t/1');
    expect(s3.commandCalls(DeleteObjectCommand)[0]?.args[0].input).toEqual({
      Bucket: 'b',
      Key: 'claim-check/t/1',
    });
  });

  it('with a lazy client: builds it at the first blob (emulator settings applied), once, then reuses it', async () => {
    s3.on(PutObjectCommand).resolves({});
    s3.on(DeleteObjectCommand).resolves({});
    const factory = lazyS3Client({ endpoint: 'http://127.0.0.1:4566' });
    const built: S3Client[] = [];
    const counting = async () => {
      const client = await factory();
      built.push(client);
      return client;
    };
    const blobs = new S3BlobStore(counting, 'b');
    await blobs.put('t/1', new Uint8Array([1]));
    await blobs.delete('t/1');

    expect(built).toHaveLength(2);
    expect(built[0]).toBeInstanceOf(S3Client);
    expect(built[1]).toBe(built[0]);
    expect(built[0]!.config.forcePathStyle).toBe(true);
    expect(s3.commandCalls(PutObjectCommand)[0]?.args[0].input).toMatchObject({ Key: 'claim-check/t/1' });
    expect(s3.commandCalls(DeleteObjectCommand)).toHaveLength(1);
  });

  it('a lazy client asked for by concurrent first blobs is built once', async () => {
    const factory = lazyS3Client({ region: 'eu-west-2' });
    const [a, b, c] = await Promise.all([factory(), factory(), factory()]);
    expect(a).toBeInstanceOf(S3Client);
    expect(b).toBe(a);
    expect(c).toBe(a);
  });

  it('a client that failed to load is loaded again at the next blob, not failed for good', async () => {
    s3.on(PutObjectCommand).resolves({});
    let attempts = 0;
    const flaky = loadOnce(async () => {
      attempts += 1;
      if (attempts === 1) throw new Error('runtime SDK not readable');
      return new S3Client({ region: 'eu-west-2' });
    });
    const blobs = new S3BlobStore(flaky, 'b');
    const [first, together] = await Promise.allSettled([
      blobs.put('t/1', new Uint8Array([1])),
      blobs.put('t/2', new Uint8Array([2])),
    ]);
    // Callers that arrive together share the one failed load, and each gets the transient code.
    expect(attempts).toBe(1);
    for (const settled of [first, together]) {
      expect(settled.status).toBe('rejected');
      expect(((settled as PromiseRejectedResult).reason as TransientError).code).toBe(
        'BLOB_STORE_UNAVAILABLE',
      );
    }
    await blobs.put('t/1', new Uint8Array([1]));
    expect(attempts).toBe(2);
    expect(s3.commandCalls(PutObjectCommand)).toHaveLength(1);
  });

  it('a failed delete is BLOB_STORE_UNAVAILABLE', async () => {
    s3.on(DeleteObjectCommand).rejects(serviceError('SlowDown', 503));
    const thrown = await new S3BlobStore(new S3Client({ region: 'eu-west-2' }), 'b')
      .delete('t/1')
      .catch((e: unknown) => e);
    expect((thrown as TransientError).code).toBe('BLOB_STORE_UNAVAILABLE');
  });
});
