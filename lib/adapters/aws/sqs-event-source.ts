/**
 * A Lambda-style SQS event source for the emulator mode: receive a batch from a real queue, invoke
 * the stage handler with the SQS event Lambda would build, delete what succeeded, and leave the
 * batch item failures for SQS to redeliver (and, after `maxReceiveCount`, dead-letter through the
 * queue's own redrive policy). One ReceiveMessage and one DeleteMessageBatch per batch.
 */
import {
  DeleteMessageBatchCommand,
  GetQueueAttributesCommand,
  type Message,
  ReceiveMessageCommand,
  SendMessageCommand,
  type SQSClient,
} from '@aws-sdk/client-sqs';
import type { SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import type { StageName } from '../../ports/index.js';
import { countCall } from './calls.js';

export interface SqsEventSourceOptions {
  stage: StageName;
  queueUrl: string;
  queueArn: string;
  batchSize: number;
  /** Long-poll wait per receive. 0 keeps a drain loop responsive. */
  waitTimeSeconds?: number;
}

export type BatchInvoker = (event: SQSEvent) => Promise<SQSBatchResponse | undefined>;

export class SqsEventSource {
  readonly stage: StageName;
  readonly #sqs: SQSClient;
  readonly #opts: SqsEventSourceOptions;

  constructor(sqs: SQSClient, opts: SqsEventSourceOptions) {
    this.#sqs = sqs;
    this.#opts = opts;
    this.stage = opts.stage;
  }

  /** Receive one batch and run it. Returns how many records were received. */
  async pollOnce(invoke: BatchInvoker): Promise<number> {
    countCall('sqs', 'ReceiveMessage');
    const received = await this.#sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: this.#opts.queueUrl,
        MaxNumberOfMessages: this.#opts.batchSize,
        WaitTimeSeconds: this.#opts.waitTimeSeconds ?? 0,
        MessageSystemAttributeNames: ['All'],
        MessageAttributeNames: ['All'],
      }),
    );
    const messages = received.Messages ?? [];
    if (messages.length === 0) return 0;

    const event: SQSEvent = { Records: messages.map((m) => this.#toRecord(m)) };
    let failed: Set<string>;
    try {
      const response = await invoke(event);
      failed = new Set((response?.batchItemFailures ?? []).map((f) => f.itemIdentifier));
    } catch {
      // A handler that throws fails the whole batch, as in Lambda.
      failed = new Set(messages.map((m) => m.MessageId!));
    }
    const done = messages.filter((m) => !failed.has(m.MessageId!));
    for (let i = 0; i < done.length; i += 10) {
      countCall('sqs', 'DeleteMessageBatch');
      await this.#sqs.send(
        new DeleteMessageBatchCommand({
          QueueUrl: this.#opts.queueUrl,
          Entries: done.slice(i, i + 10).map((m, j) => ({ Id: String(j), ReceiptHandle: m.ReceiptHandle! })),
        }),
      );
    }
    return messages.length;
  }

  /** Messages visible plus in flight, as SQS approximates them. */
  async depth(): Promise<number> {
    countCall('sqs', 'GetQueueAttributes');
    const out = await this.#sqs.send(
      new GetQueueAttributesCommand({
        QueueUrl: this.#opts.queueUrl,
        AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible'],
      }),
    );
    const a = out.Attributes ?? {};
    return Number(a.ApproximateNumberOfMessages ?? 0) + Number(a.ApproximateNumberOfMessagesNotVisible ?? 0);
  }

  #toRecord(m: Message): SQSRecord {
    const attrs = m.Attributes ?? {};
    return {
      messageId: m.MessageId!,
      receiptHandle: m.ReceiptHandle!,
      body: m.Body ?? '',
      attributes: {
        ApproximateReceiveCount: attrs.ApproximateReceiveCount ?? '1',
        SentTimestamp: attrs.SentTimestamp ?? String(Date.now()),
        SenderId: attrs.SenderId ?? 'EMULATOR',
        ApproximateFirstReceiveTimestamp: attrs.ApproximateFirstReceiveTimestamp ?? String(Date.now()),
      },
      messageAttributes: Object.fromEntries(
        Object.entries(m.MessageAttributes ?? {}).map(([k, v]) => [
          k,
          {
            dataType: v.DataType ?? 'String',
            ...(v.StringValue !== undefined ? { stringValue: v.StringValue } : {}),
            stringListValues: [],
            binaryListValues: [],
          },
        ]),
      ),
      md5OfBody: m.MD5OfBody ?? '',
      eventSource: 'aws:sqs',
      eventSourceARN: this.#opts.queueArn,
      awsRegion: this.#opts.queueArn.split(':')[3] ?? 'us-east-1',
    };
  }
}

/**
 * Direct SQS ingestion as a sender does it: the JWE as the body and the credential as the
 * `Authorization` message attribute. Returns the SQS message id (the trace id of a raw message).
 */
export async function sendDirect(
  sqs: SQSClient,
  queueUrl: string,
  sealed: string,
  authorization?: string,
): Promise<string> {
  countCall('sqs', 'SendMessage');
  const out = await sqs.send(
    new SendMessageCommand({
      QueueUrl: queueUrl,
      MessageBody: sealed,
      ...(authorization
        ? { MessageAttributes: { Authorization: { DataType: 'String', StringValue: authorization } } }
        : {}),
    }),
  );
  return out.MessageId!;
}
