/**
 * Dead-letter operations on a deployed (or emulated) pipeline's SQS DLQs: list, find, redrive.
 *
 * Listing receives with a zero visibility timeout, so messages stay where they are; a redrive
 * moves each message itself (SendMessage to the source queue with its body and attributes, then
 * DeleteMessage from the DLQ) because not every SQS implementation has StartMessageMoveTask.
 * Bodies are returned to the caller for the move only; the CLI never prints them.
 */
import {
  DeleteMessageCommand,
  type Message,
  type MessageAttributeValue,
  ReceiveMessageCommand,
  SendMessageCommand,
  type SQSClient,
} from '@aws-sdk/client-sqs';
import { STAGES, type StageName } from '../../ports/index.js';

export interface AwsDeadLetter {
  stage: StageName;
  messageId: string;
  traceId: string;
  receiveCount: number;
  sentAt: number;
}

export interface DeadLetterQueues {
  /** stage → DLQ URL */
  dlq: Partial<Record<StageName, string>>;
  /** stage → source queue URL (for redrive) */
  source: Partial<Record<StageName, string>>;
}

/** At most this many receives per DLQ when listing: bounded, like every loop here. */
const MAX_RECEIVES = 50;

export class AwsDeadLetters {
  readonly #sqs: SQSClient;
  readonly #queues: DeadLetterQueues;

  constructor(sqs: SQSClient, queues: DeadLetterQueues) {
    this.#sqs = sqs;
    this.#queues = queues;
  }

  /** Every message in the DLQs (or one stage's), without bodies. */
  async list(stage?: StageName): Promise<AwsDeadLetter[]> {
    const out: AwsDeadLetter[] = [];
    for (const s of stage ? [stage] : STAGES) {
      for (const m of await this.#peek(s)) out.push(summary(s, m));
    }
    return out.sort((a, b) => a.sentAt - b.sentAt);
  }

  /**
   * Move messages back to their source queue: one message id, or every message of a stage, or
   * all. Returns the moved messages' summaries.
   */
  async redrive(target: { stage?: StageName; messageId?: string }): Promise<AwsDeadLetter[]> {
    const moved: AwsDeadLetter[] = [];
    for (const s of target.stage ? [target.stage] : STAGES) {
      const dlqUrl = this.#queues.dlq[s];
      const sourceUrl = this.#queues.source[s];
      if (!dlqUrl || !sourceUrl) continue;
      for (let i = 0; i < MAX_RECEIVES; i += 1) {
        const { Messages = [] } = await this.#sqs.send(
          new ReceiveMessageCommand({
            QueueUrl: dlqUrl,
            MaxNumberOfMessages: 10,
            VisibilityTimeout: 30,
            MessageSystemAttributeNames: ['All'],
            MessageAttributeNames: ['All'],
          }),
        );
        if (Messages.length === 0) break;
        for (const m of Messages) {
          if (target.messageId && m.MessageId !== target.messageId) continue;
          await this.#sqs.send(
            new SendMessageCommand({
              QueueUrl: sourceUrl,
              MessageBody: m.Body ?? '',
              ...(m.MessageAttributes ? { MessageAttributes: stringAttributes(m.MessageAttributes) } : {}),
            }),
          );
          await this.#sqs.send(
            new DeleteMessageCommand({ QueueUrl: dlqUrl, ReceiptHandle: m.ReceiptHandle! }),
          );
          moved.push(summary(s, m));
        }
        if (target.messageId && moved.length > 0) return moved;
      }
    }
    return moved;
  }

  async #peek(stage: StageName): Promise<Message[]> {
    const url = this.#queues.dlq[stage];
    if (!url) return [];
    const seen = new Map<string, Message>();
    for (let i = 0; i < MAX_RECEIVES; i += 1) {
      const { Messages = [] } = await this.#sqs.send(
        new ReceiveMessageCommand({
          QueueUrl: url,
          MaxNumberOfMessages: 10,
          VisibilityTimeout: 0,
          MessageSystemAttributeNames: ['All'],
        }),
      );
      const before = seen.size;
      for (const m of Messages) if (m.MessageId) seen.set(m.MessageId, m);
      if (Messages.length === 0 || seen.size === before) break;
    }
    return [...seen.values()];
  }
}

function summary(stage: StageName, m: Message): AwsDeadLetter {
  return {
    stage,
    messageId: m.MessageId ?? '',
    traceId: traceIdOf(m),
    receiveCount: Number(m.Attributes?.ApproximateReceiveCount ?? 0),
    sentAt: Number(m.Attributes?.SentTimestamp ?? 0),
  };
}

/** Internal records carry their trace id; a raw inbound message's trace id is its message id. */
function traceIdOf(m: Message): string {
  const body = m.Body ?? '';
  if (body.startsWith('{')) {
    try {
      const t = (JSON.parse(body) as { traceId?: unknown }).traceId;
      if (typeof t === 'string') return t;
    } catch {
      // not a record
    }
  }
  return m.MessageId ?? '';
}

function stringAttributes(
  attrs: Record<string, MessageAttributeValue>,
): Record<string, MessageAttributeValue> {
  return Object.fromEntries(
    Object.entries(attrs)
      .filter(([, v]) => v.StringValue !== undefined)
      .map(([k, v]) => [k, { DataType: v.DataType ?? 'String', StringValue: v.StringValue }]),
  );
}
