/**
 * The SQS dead-letter adapter against a small in-memory model of the SQS calls it makes (receive
 * with a visibility timeout, send, delete, change visibility), with the reasons in an audit log: the
 * same port contract as the local adapter (test/unit/ops/dead-letters.test.ts). On real SQS queues,
 * including paging past one receive of 10 and releasing what a redrive looked past:
 * test/integration/aws-dead-letters.test.ts (needs an emulator).
 */
import {
  ChangeMessageVisibilityBatchCommand,
  DeleteMessageCommand,
  type Message,
  ReceiveMessageCommand,
  SendMessageCommand,
  SQSClient,
} from '@aws-sdk/client-sqs';
import { mockClient } from 'aws-sdk-client-mock';
import { beforeEach, describe, expect, it } from 'vitest';
import { SqsDeadLetters } from '../../../lib/adapters/aws/dead-letters.js';
import { MemoryAuditLog } from '../../../lib/adapters/local/memory-stores.js';

const DLQ = 'https://sqs/itk3-deliver-dlq';
const SOURCE = 'https://sqs/itk3-deliver';
const VERIFY_DLQ = 'https://sqs/itk3-verify-dlq';

interface Held {
  message: Message;
  visibleAt: number;
}

/** Queues by URL, as SQS keeps them: a received message is hidden for its visibility timeout. */
class SqsModel {
  readonly queues = new Map<string, Held[]>();
  #receipts = 0;
  #ids = 0;

  add(url: string, body: string, sentAt: number, attributes: Message['MessageAttributes'] = {}): string {
    const id = `m-${++this.#ids}`;
    const message: Message = {
      MessageId: id,
      Body: body,
      Attributes: { SentTimestamp: String(sentAt), ApproximateReceiveCount: '5' },
      MessageAttributes: attributes,
    };
    this.#queue(url).push({ message, visibleAt: 0 });
    return id;
  }

  ids(url: string): string[] {
    return this.#queue(url).map((h) => h.message.MessageId!);
  }

  bodies(url: string): string[] {
    return this.#queue(url).map((h) => h.message.Body!);
  }

  /** The message attributes of the message with `body` in `url`. */
  attributesOf(url: string, body: string): Message['MessageAttributes'] {
    return this.#queue(url).find((h) => h.message.Body === body)?.message.MessageAttributes;
  }

  install(): void {
    const sqs = mockClient(SQSClient);
    sqs.on(ReceiveMessageCommand).callsFake((input) => {
      // A short poll samples only some SQS servers and may answer empty while messages remain: the
      // model always does, so an adapter that stops at the first empty short poll misses them.
      if ((input.WaitTimeSeconds ?? 0) < 1) return { Messages: [] };
      const now = Date.now();
      const visible = this.#queue(input.QueueUrl).filter((h) => h.visibleAt <= now);
      const batch = visible.slice(0, input.MaxNumberOfMessages ?? 1);
      for (const h of batch) {
        h.visibleAt = now + (input.VisibilityTimeout ?? 30) * 1000;
        h.message = { ...h.message, ReceiptHandle: `r-${++this.#receipts}` };
      }
      // As SQS: message attributes come back only when asked for by name (or 'All').
      const withAttributes = (input.MessageAttributeNames ?? []).length > 0;
      return {
        Messages: batch.map((h) =>
          withAttributes ? h.message : { ...h.message, MessageAttributes: undefined },
        ),
      };
    });
    sqs.on(SendMessageCommand).callsFake((input) => {
      this.add(input.QueueUrl, input.MessageBody, Date.now(), input.MessageAttributes);
      return {};
    });
    sqs.on(DeleteMessageCommand).callsFake((input) => {
      const queue = this.#queue(input.QueueUrl);
      queue.splice(
        queue.findIndex((h) => h.message.ReceiptHandle === input.ReceiptHandle),
        1,
      );
      return {};
    });
    sqs.on(ChangeMessageVisibilityBatchCommand).callsFake((input) => {
      for (const entry of input.Entries) {
        const held = this.#queue(input.QueueUrl).find((h) => h.message.ReceiptHandle === entry.ReceiptHandle);
        if (held) held.visibleAt = Date.now() + (entry.VisibilityTimeout ?? 0) * 1000;
      }
      return { Successful: input.Entries.map((e: { Id: string }) => ({ Id: e.Id })), Failed: [] };
    });
  }

  #queue(url: string): Held[] {
    const queue = this.queues.get(url) ?? [];
    this.queues.set(url, queue);
    return queue;
  }
}

const record = (traceId: string) => JSON.stringify({ v: 1, traceId, payload: 'x'.repeat(100) });

describe('SqsDeadLetters', () => {
  let model: SqsModel;
  let audit: MemoryAuditLog;
  let port: SqsDeadLetters;

  beforeEach(async () => {
    model = new SqsModel();
    model.install();
    audit = new MemoryAuditLog();
    port = new SqsDeadLetters(
      new SQSClient({ region: 'eu-west-2' }),
      { dlq: { deliver: DLQ, verify: VERIFY_DLQ }, source: { deliver: SOURCE } },
      audit,
      { where: 'the test stack' },
    );
    for (const [traceId, stage, code] of [
      ['t-1', 'verify', 'KEY_SERVICE_UNAVAILABLE'],
      ['t-1', 'deliver', 'DELIVERY_UNAVAILABLE'],
      ['t-2', 'deliver', 'DELIVERY_THROTTLED'],
    ] as const) {
      await audit.append({ traceId, at: new Date().toISOString(), stage, event: 'transient-failure', code });
    }
  });

  it('lists and shows dead letters with the reason at their stage, never a body', async () => {
    const first = model.add(DLQ, record('t-1'), Date.parse('2026-01-01T10:00:00Z'), {
      kind: { DataType: 'String', StringValue: 'record' },
    });
    const second = model.add(DLQ, record('t-2'), Date.parse('2026-01-01T09:00:00Z'));
    const raw = model.add(VERIFY_DLQ, 'raw inbound body', Date.parse('2026-01-01T11:00:00Z'));

    const letters = await port.list();
    expect(letters.map((l) => [l.stage, l.messageId, l.traceId, l.reason])).toEqual([
      ['deliver', second, 't-2', 'DELIVERY_THROTTLED'],
      ['deliver', first, 't-1', 'DELIVERY_UNAVAILABLE'],
      // A raw inbound message's trace id is its message id; no failure recorded for it.
      ['verify', raw, raw, 'unknown'],
    ]);
    expect(letters[0]).toEqual({
      stage: 'deliver',
      messageId: second,
      traceId: 't-2',
      reason: 'DELIVERY_THROTTLED',
      receiveCount: 5,
      sentAt: '2026-01-01T09:00:00.000Z',
      bodyBytes: Buffer.byteLength(record('t-2')),
    });
    expect((await port.list('verify')).map((l) => l.messageId)).toEqual([raw]);
    expect(await port.show(first)).toEqual(letters[1]);
    expect(await port.show('m-none')).toBeUndefined();
    // Listing consumed nothing, and left every message visible to the next look.
    expect(model.ids(DLQ)).toEqual([first, second]);
    expect(await port.list()).toEqual(letters);
    expect(port.where).toBe('the test stack');
  });

  it('redrives one message to its source queue, audited, and leaves the others listable', async () => {
    const ids = Array.from({ length: 12 }, (_, i) => model.add(DLQ, record(`t-${i + 1}`), 1_000 + i));
    const target = ids[10]!;

    const moved = await port.redrive('deliver', target, 'test');
    expect(moved.map((l) => [l.messageId, l.traceId])).toEqual([[target, 't-11']]);
    expect(model.bodies(SOURCE)).toEqual([record('t-11')]);
    expect(model.ids(DLQ)).not.toContain(target);
    // The messages it looked past are visible again at once.
    expect((await port.list('deliver')).map((l) => l.messageId)).toEqual(ids.filter((id) => id !== target));
    expect((await audit.byTrace('t-11')).filter((e) => e.event === 'redriven')).toEqual([
      expect.objectContaining({ stage: 'operator', event: 'redriven', detail: 'back to deliver by test' }),
    ]);
  });

  it('redrives every message of a stage, and nothing where there is no source queue or no match', async () => {
    model.add(DLQ, record('t-1'), 1_000, { kind: { DataType: 'String', StringValue: 'record' } });
    model.add(DLQ, record('t-2'), 2_000);
    model.add(VERIFY_DLQ, record('t-3'), 3_000);

    expect(await port.redrive('verify')).toEqual([]); // no source queue known for verify
    expect(await port.redrive('deliver', 'm-none')).toEqual([]);
    expect(model.ids(DLQ)).toHaveLength(2);

    const moved = await port.redrive('deliver');
    expect(moved.map((l) => l.traceId).sort()).toEqual(['t-1', 't-2']);
    expect(model.ids(DLQ)).toEqual([]);
    expect(model.bodies(SOURCE).sort()).toEqual([record('t-1'), record('t-2')].sort());
    // Back on the source queue with the attributes it was dead-lettered with.
    expect(model.attributesOf(SOURCE, record('t-1'))).toEqual({
      kind: { DataType: 'String', StringValue: 'record' },
    });
    expect((await audit.byTrace('t-2')).at(-1)).toMatchObject({
      event: 'redriven',
      detail: 'back to deliver',
    });
  });
});
