import { SendMessageBatchCommand, SQSClient } from '@aws-sdk/client-sqs';
import { mockClient } from 'aws-sdk-client-mock';
import { beforeEach, describe, expect, it } from 'vitest';
import { chunkForBatch, SqsQueueSender } from '../../../lib/adapters/aws/sqs-queue-sender.js';
import { ConfigError, TransientError } from '../../../lib/errors.js';
import { networkError, sentCommands, serviceError } from './faults.js';

const sqs = mockClient(SQSClient);
const sender = () =>
  new SqsQueueSender(new SQSClient({ region: 'eu-west-2' }), { decrypt: 'https://sqs/q-decrypt' });

beforeEach(() => {
  sqs.reset();
});

describe('chunkForBatch', () => {
  it('keeps at most 10 entries per request', () => {
    expect(chunkForBatch(Array.from({ length: 21 }, () => 'x')).map((c) => c.length)).toEqual([10, 10, 1]);
  });

  it('keeps the sum of UTF-8 body bytes at or under 1 MiB per request', () => {
    const quarter = 'x'.repeat(262_144);
    // Four quarters fill 1 MiB exactly; a fifth needs a new request.
    expect(chunkForBatch([quarter, quarter, quarter, quarter, quarter])).toEqual([[0, 1, 2, 3], [4]]);
    // Multi-byte characters count by their UTF-8 size, not their string length.
    const euros = '€'.repeat(200_000); // 600 000 bytes
    expect(chunkForBatch([euros, euros])).toEqual([[0], [1]]);
  });

  it('returns nothing for nothing', () => {
    expect(chunkForBatch([])).toEqual([]);
  });
});

describe('SqsQueueSender.sendBatch', () => {
  it('sends chunks with the input index as entry id and reports per-entry failures', async () => {
    sqs.on(SendMessageBatchCommand).callsFake((input: { Entries: { Id: string }[] }) => ({
      Successful: input.Entries.filter((e) => e.Id !== '3' && e.Id !== '11').map((e) => ({ Id: e.Id })),
      Failed: [
        { Id: '3', SenderFault: false, Code: 'InternalError' },
        { Id: '11', SenderFault: true, Code: 'InvalidMessageContents' },
      ].filter((f) => input.Entries.some((e) => e.Id === f.Id)),
    }));

    const result = await sender().sendBatch(
      'decrypt',
      Array.from({ length: 12 }, (_, i) => `body-${i}`),
    );

    expect(result).toEqual({ failed: [3, 11] });
    expect(sentCommands(sqs)).toEqual({ SendMessageBatch: 2 });
    expect(sqs.commandCalls(SendMessageBatchCommand)[0]?.args[0].input.Entries?.[0]).toEqual({
      Id: '0',
      MessageBody: 'body-0',
    });
  });

  it('reports an entry the response does not mention as failed', async () => {
    sqs
      .on(SendMessageBatchCommand)
      .resolves({ Successful: [{ Id: '0', MessageId: 'm', MD5OfMessageBody: '' }] });
    expect(await sender().sendBatch('decrypt', ['a', 'b'])).toEqual({ failed: [1] });
  });

  it('reports the whole chunk as failed when its request fails transiently, and keeps the others', async () => {
    sqs
      .on(SendMessageBatchCommand)
      .rejectsOnce(serviceError('RequestThrottled', 400))
      .callsFake((input: { Entries: { Id: string }[] }) => ({
        Successful: input.Entries.map((e) => ({ Id: e.Id })),
      }));

    const result = await sender().sendBatch(
      'decrypt',
      Array.from({ length: 15 }, (_, i) => `b${i}`),
    );

    // Requests run concurrently: the first one sent (entries 0–9) got the throttle.
    expect(result).toEqual({ failed: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] });
  });

  it('reports everything as failed when the network is down', async () => {
    sqs.on(SendMessageBatchCommand).rejects(networkError('ECONNRESET'));
    expect(await sender().sendBatch('decrypt', ['a', 'b'])).toEqual({ failed: [0, 1] });
  });

  it('throws QUEUE_UNAVAILABLE when a request fails for a reason retrying the entries will not fix', async () => {
    sqs.on(SendMessageBatchCommand).rejects(serviceError('QueueDoesNotExist', 400));

    const thrown = await sender()
      .sendBatch('decrypt', ['a'])
      .catch((e: unknown) => e);

    expect(thrown).toBeInstanceOf(TransientError);
    expect((thrown as TransientError).code).toBe('QUEUE_UNAVAILABLE');
  });

  it('fails a body over 1 MiB without sending it', async () => {
    sqs.on(SendMessageBatchCommand).callsFake((input: { Entries: { Id: string }[] }) => ({
      Successful: input.Entries.map((e) => ({ Id: e.Id })),
    }));

    const result = await sender().sendBatch('decrypt', ['a', 'x'.repeat(1_048_577), 'c']);

    expect(result).toEqual({ failed: [1] });
    expect(
      sqs.commandCalls(SendMessageBatchCommand).map((c) => c.args[0].input.Entries?.map((e) => e.Id)),
    ).toEqual([['0', '2']]);
  });

  it('makes no call for no bodies, and refuses a stage without a queue URL', async () => {
    expect(await sender().sendBatch('decrypt', [])).toEqual({ failed: [] });
    await expect(sender().sendBatch('deliver', ['a'])).rejects.toBeInstanceOf(ConfigError);
    expect(sqs.calls()).toHaveLength(0);
  });
});
