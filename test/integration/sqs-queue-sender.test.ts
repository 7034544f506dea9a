import {
  CreateQueueCommand,
  DeleteMessageBatchCommand,
  DeleteQueueCommand,
  GetQueueAttributesCommand,
  type Message,
  ReceiveMessageCommand,
  StartMessageMoveTaskCommand,
} from '@aws-sdk/client-sqs';
import { afterAll, beforeAll, beforeEach, expect, it } from 'vitest';
import { awsCalls, resetAwsCalls } from '../../lib/adapters/aws/calls.js';
import { SqsQueueSender } from '../../lib/adapters/aws/sqs-queue-sender.js';
import { describeEachEmulator, type EmulatorContext } from './support/emulators.js';

/** Receive until `count` messages arrived (bounded), deleting them so the queue ends empty. */
async function drain(
  { clients }: EmulatorContext,
  queueUrl: string,
  count: number,
  opts: { visibilityTimeout?: number } = {},
): Promise<Message[]> {
  const got: Message[] = [];
  for (let round = 0; round < 30 && got.length < count; round += 1) {
    const { Messages = [] } = await clients.sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: queueUrl,
        MaxNumberOfMessages: 10,
        WaitTimeSeconds: 1,
        ...(opts.visibilityTimeout === undefined ? {} : { VisibilityTimeout: opts.visibilityTimeout }),
      }),
    );
    if (Messages.length === 0) continue;
    got.push(...Messages);
    await clients.sqs.send(
      new DeleteMessageBatchCommand({
        QueueUrl: queueUrl,
        Entries: Messages.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle })),
      }),
    );
  }
  return got;
}

describeEachEmulator('SqsQueueSender', (ctx) => {
  const { clients, unique, itUnless } = ctx;
  let queueUrl = '';
  let dlqUrl = '';
  let dlqArn = '';
  let sender: SqsQueueSender;

  beforeAll(async () => {
    dlqUrl = (await clients.sqs.send(new CreateQueueCommand({ QueueName: unique('dlq') }))).QueueUrl ?? '';
    dlqArn =
      (
        await clients.sqs.send(
          new GetQueueAttributesCommand({ QueueUrl: dlqUrl, AttributeNames: ['QueueArn'] }),
        )
      ).Attributes?.QueueArn ?? '';
    queueUrl =
      (
        await clients.sqs.send(
          new CreateQueueCommand({
            QueueName: unique('q'),
            Attributes: {
              RedrivePolicy: JSON.stringify({ deadLetterTargetArn: dlqArn, maxReceiveCount: 2 }),
            },
          }),
        )
      ).QueueUrl ?? '';
    sender = new SqsQueueSender(clients.sqs, { authorise: queueUrl });
  });

  afterAll(async () => {
    for (const url of [queueUrl, dlqUrl]) {
      await clients.sqs.send(new DeleteQueueCommand({ QueueUrl: url })).catch(() => {});
    }
  });

  beforeEach(() => resetAwsCalls());

  it('sends 25 bodies in 3 SendMessageBatch requests, and every one can be received and deleted', async () => {
    const bodies = Array.from({ length: 25 }, (_, i) => JSON.stringify({ n: i }));

    const result = await sender.sendBatch('authorise', bodies);

    expect(result).toEqual({ failed: [] });
    expect(awsCalls.sqs.SendMessageBatch).toBe(3);
    const received = await drain(ctx, queueUrl, 25);
    expect(received.map((m) => m.Body).sort()).toEqual([...bodies].sort());
  });

  it('splits a batch whose bodies add up to more than 1 MiB', async () => {
    const big = (c: string) => c.repeat(400_000);
    const bodies = [big('a'), big('b'), big('c'), 'small-1', 'small-2'];

    const result = await sender.sendBatch('authorise', bodies);

    expect(result).toEqual({ failed: [] });
    expect(awsCalls.sqs.SendMessageBatch).toBe(2);
    const received = await drain(ctx, queueUrl, 5);
    expect(received.map((m) => m.Body?.length).sort()).toEqual([400_000, 400_000, 400_000, 7, 7]);
  });

  it('reports only the index of a body over 1 MiB as failed', async () => {
    const result = await sender.sendBatch('authorise', ['first', 'x'.repeat(1_048_577), 'third']);

    expect(result).toEqual({ failed: [1] });
    expect((await drain(ctx, queueUrl, 2)).map((m) => m.Body).sort()).toEqual(['first', 'third']);
  });

  it('moves a message to the DLQ after maxReceiveCount receives without delete', async () => {
    await sender.sendBatch('authorise', ['poison']);
    for (const attempt of [1, 2]) {
      const { Messages = [] } = await clients.sqs.send(
        new ReceiveMessageCommand({ QueueUrl: queueUrl, VisibilityTimeout: 0, WaitTimeSeconds: 1 }),
      );
      expect(
        Messages.map((m) => m.Body),
        `receive ${attempt}`,
      ).toEqual(['poison']);
    }

    const third = await clients.sqs.send(
      new ReceiveMessageCommand({ QueueUrl: queueUrl, WaitTimeSeconds: 1 }),
    );
    const dead = await drain(ctx, dlqUrl, 1);

    expect(third.Messages ?? []).toEqual([]);
    expect(dead.map((m) => m.Body)).toEqual(['poison']);
  });

  itUnless(
    'startMessageMoveTask',
    'redrives a dead-lettered message back with StartMessageMoveTask',
    async () => {
      await sender.sendBatch('authorise', ['redrive-me']);
      for (let i = 0; i < 2; i += 1) {
        await clients.sqs.send(
          new ReceiveMessageCommand({ QueueUrl: queueUrl, VisibilityTimeout: 0, WaitTimeSeconds: 1 }),
        );
      }
      await clients.sqs.send(new ReceiveMessageCommand({ QueueUrl: queueUrl, WaitTimeSeconds: 1 }));

      await clients.sqs.send(new StartMessageMoveTaskCommand({ SourceArn: dlqArn }));
      const back = await drain(ctx, queueUrl, 1);

      expect(back.map((m) => m.Body)).toEqual(['redrive-me']);
    },
  );
});
