import { GetObjectCommand } from '@aws-sdk/client-s3';
import {
  CreateQueueCommand,
  DeleteMessageCommand,
  DeleteQueueCommand,
  type Message,
  ReceiveMessageCommand,
} from '@aws-sdk/client-sqs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { AwsDeliverer } from '../../lib/adapters/aws/aws-deliverer.js';
import { TransientError } from '../../lib/errors.js';
import { createBucket, deleteBucket } from './support/buckets.js';
import { describeEachEmulator, type EmulatorContext } from './support/emulators.js';

async function objectText({ clients }: EmulatorContext, bucket: string, key: string): Promise<string> {
  const out = await clients.s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return (await out.Body?.transformToString()) ?? '';
}

/** Receive (and delete) until `expected` messages arrived, then once more to catch a duplicate. */
async function receiveAll(
  { clients }: EmulatorContext,
  queueUrl: string,
  expected: number,
): Promise<Message[]> {
  const got: Message[] = [];
  for (let round = 0; round < 6; round += 1) {
    const done = got.length >= expected;
    const { Messages = [] } = await clients.sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: queueUrl,
        MaxNumberOfMessages: 10,
        WaitTimeSeconds: done ? 0 : 1,
        MessageAttributeNames: ['All'],
      }),
    );
    got.push(...Messages);
    // Delete as we go: in a FIFO group the next message waits until the previous one is gone.
    for (const m of Messages) {
      await clients.sqs.send(
        new DeleteMessageCommand({ QueueUrl: queueUrl, ReceiptHandle: m.ReceiptHandle }),
      );
    }
    if (done) break;
  }
  return got;
}

describeEachEmulator('AwsDeliverer', (ctx) => {
  const { clients, unique } = ctx;
  const blobBucket = unique('pipeline');
  const recipientBucket = unique('recipient');
  const queues: string[] = [];
  const deliverer = new AwsDeliverer({ s3: clients.s3, sqs: clients.sqs, blobBucket });
  const xml = new TextEncoder().encode('<Bundle xmlns="http://hl7.org/fhir"/>');

  beforeAll(async () => {
    await createBucket(clients, blobBucket);
    await createBucket(clients, recipientBucket);
  });

  afterAll(async () => {
    await deleteBucket(clients, blobBucket);
    await deleteBucket(clients, recipientBucket);
    for (const queueUrl of queues)
      await clients.sqs.send(new DeleteQueueCommand({ QueueUrl: queueUrl })).catch(() => {});
  });

  const createQueue = async (name: string, fifo = false) => {
    const { QueueUrl = '' } = await clients.sqs.send(
      new CreateQueueCommand({ QueueName: name, ...(fifo ? { Attributes: { FifoQueue: 'true' } } : {}) }),
    );
    queues.push(QueueUrl);
    return QueueUrl;
  };

  it('delivers a folder target to deliveries/<path>/<name> in the pipeline bucket', async () => {
    const location = await deliverer.deliver(
      { type: 'folder', path: './out/RCP01/' },
      'm1.xml',
      xml,
      'application/fhir+xml',
    );

    expect(location).toBe(`s3://${blobBucket}/deliveries/out/RCP01/m1.xml`);
    expect(await objectText(ctx, blobBucket, 'deliveries/out/RCP01/m1.xml')).toBe(
      '<Bundle xmlns="http://hl7.org/fhir"/>',
    );
  });

  it('keeps a folder path with .. inside deliveries/', async () => {
    const location = await deliverer.deliver(
      { type: 'folder', path: '../../etc' },
      'm2.xml',
      xml,
      'text/xml',
    );
    expect(location).toBe(`s3://${blobBucket}/deliveries/etc/m2.xml`);
  });

  it('delivers an s3 target under its prefix, once per name; other bytes under the name are a conflict', async () => {
    const target = { type: 's3' as const, bucket: recipientBucket, prefix: 'inbox' };

    const first = await deliverer.deliver(target, 'm3.xml', xml, 'application/fhir+xml');
    // The same bytes again (a redelivery): the 412 is compared by content hash and is this delivery.
    const second = await deliverer.deliver(target, 'm3.xml', xml, 'application/fhir+xml');
    // Other bytes under the name: never claimed as delivered (issue 9, class 3).
    const conflict = await deliverer
      .deliver(target, 'm3.xml', new TextEncoder().encode('changed'), 'text/plain')
      .catch((e: unknown) => e);

    expect(first).toBe(`s3://${recipientBucket}/inbox/m3.xml`);
    expect(second).toBe(first);
    expect(conflict).toBeInstanceOf(TransientError);
    expect((conflict as TransientError).code).toBe('DELIVERY_CONFLICT');
    expect(await objectText(ctx, recipientBucket, 'inbox/m3.xml')).toBe(
      '<Bundle xmlns="http://hl7.org/fhir"/>',
    );
  });

  it('sends UTF-8 bytes to an sqs target as the body, with name and content type attributes', async () => {
    const queueUrl = await createQueue(unique('text'));

    await deliverer.deliver({ type: 'sqs', queueUrl }, 'm4.xml', xml, 'application/fhir+xml');
    const [message, extra] = await receiveAll(ctx, queueUrl, 1);

    expect(extra).toBeUndefined();
    expect(message?.Body).toBe('<Bundle xmlns="http://hl7.org/fhir"/>');
    expect(message?.MessageAttributes?.name?.StringValue).toBe('m4.xml');
    expect(message?.MessageAttributes?.contentType?.StringValue).toBe('application/fhir+xml');
    expect(message?.MessageAttributes?.contentEncoding).toBeUndefined();
  });

  it('sends bytes that are not UTF-8 base64-encoded with contentEncoding=base64', async () => {
    const queueUrl = await createQueue(unique('binary'));
    const bytes = Uint8Array.from([0xff, 0x00, 0xfe, 0x41]);

    await deliverer.deliver({ type: 'sqs', queueUrl }, 'm5.bin', bytes, 'application/octet-stream');
    const [message, extra] = await receiveAll(ctx, queueUrl, 1);

    expect(extra).toBeUndefined();
    expect(message?.MessageAttributes?.contentEncoding?.StringValue).toBe('base64');
    expect(Buffer.from(message?.Body ?? '', 'base64').equals(Buffer.from(bytes))).toBe(true);
  });

  it('delivers a name once to a FIFO queue, however often it is delivered', async () => {
    const queueUrl = await createQueue(`${unique('fifo')}.fifo`, true);

    await deliverer.deliver({ type: 'sqs', queueUrl }, 'm6.xml', xml, 'application/fhir+xml');
    await deliverer.deliver({ type: 'sqs', queueUrl }, 'm6.xml', xml, 'application/fhir+xml');
    await deliverer.deliver({ type: 'sqs', queueUrl }, 'm7.xml', xml, 'application/fhir+xml');
    const messages = await receiveAll(ctx, queueUrl, 2);

    expect(messages.map((m) => m.MessageAttributes?.name?.StringValue)).toEqual(['m6.xml', 'm7.xml']);
  });
});
