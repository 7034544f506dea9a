/**
 * The dead-letter port (lib/ops/dead-letters.ts) over a pipeline's SQS DLQs: a deployed stack's,
 * or one provisioned on an emulator (the same adapter; only the client's endpoint differs).
 *
 * Listing receives each message and makes it visible again, so messages stay where they are; the
 * reason of each comes from the audit trail (SQS moves a message to its DLQ without saying why). A redrive
 * moves each message itself (SendMessage to the source queue with its body and attributes, then
 * DeleteMessage from the DLQ) because not every SQS implementation has StartMessageMoveTask, and
 * audits it as the operator's. Bodies never leave this file.
 */
import {
  ChangeMessageVisibilityBatchCommand,
  DeleteMessageCommand,
  type Message,
  type MessageAttributeValue,
  ReceiveMessageCommand,
  SendMessageCommand,
  type SQSClient,
} from '@aws-sdk/client-sqs';
import { type DeadLetter, type DeadLetters, traceIdOfBody } from '../../ops/dead-letters.js';
import { STAGES, type StageName } from '../../pipeline/topology.js';
import { type AuditLog, type Clock, systemClock } from '../../ports/index.js';

export interface DeadLetterQueues {
  /** stage → DLQ URL */
  dlq: Partial<Record<StageName, string>>;
  /** stage → source queue URL (for redrive) */
  source: Partial<Record<StageName, string>>;
}

/** At most this many receives per DLQ when listing: bounded, like every loop here. */
const MAX_RECEIVES = 50;
/** How long a receive hides a dead letter while it is listed or moved (released at the end). */
const HOLD_SECONDS = 30;
/**
 * Long polling on every receive: a short-poll receive samples only some SQS servers and may come back
 * empty while messages remain, and these loops stop at the first empty answer. A long poll asks
 * them all, so empty means empty (at the cost of one second on an empty queue).
 */
const WAIT_SECONDS = 1;

export interface SqsDeadLettersOptions {
  /** Where the DLQs are, for messages. @default 'the SQS dead-letter queues' */
  where?: string;
  /** @default systemClock */
  clock?: Clock;
}

export class SqsDeadLetters implements DeadLetters {
  readonly where: string;
  readonly #sqs: SQSClient;
  readonly #queues: DeadLetterQueues;
  readonly #audit: AuditLog;
  readonly #clock: Clock;

  /** `audit` is the pipeline's audit log: where the reasons are, and where a redrive is recorded. */
  constructor(sqs: SQSClient, queues: DeadLetterQueues, audit: AuditLog, opts: SqsDeadLettersOptions = {}) {
    this.#sqs = sqs;
    this.#queues = queues;
    this.#audit = audit;
    this.#clock = opts.clock ?? systemClock;
    this.where = opts.where ?? 'the SQS dead-letter queues';
  }

  async list(stage?: StageName): Promise<DeadLetter[]> {
    const out: DeadLetter[] = [];
    for (const s of stage ? [stage] : STAGES) {
      for (const m of await this.#peek(s)) out.push(await this.#deadLetter(s, m));
    }
    return out.sort((a, b) => a.sentAt.localeCompare(b.sentAt));
  }

  async show(messageId: string): Promise<DeadLetter | undefined> {
    for (const s of STAGES) {
      const m = (await this.#peek(s)).find((x) => x.MessageId === messageId);
      if (m) return this.#deadLetter(s, m);
    }
    return undefined;
  }

  async redrive(stage: StageName, messageId?: string, by?: string): Promise<DeadLetter[]> {
    const dlqUrl = this.#queues.dlq[stage];
    const sourceUrl = this.#queues.source[stage];
    if (!dlqUrl || !sourceUrl) return [];
    // Looking for one message hides the others it receives (so the search moves on through the
    // queue); they are made visible again at the end, so a list right after still shows them.
    const passedOver: string[] = [];
    try {
      return await this.#move(stage, dlqUrl, sourceUrl, messageId, by, passedOver);
    } finally {
      await this.#release(dlqUrl, passedOver);
    }
  }

  async #move(
    stage: StageName,
    dlqUrl: string,
    sourceUrl: string,
    messageId: string | undefined,
    by: string | undefined,
    passedOver: string[],
  ): Promise<DeadLetter[]> {
    const moved: DeadLetter[] = [];
    for (let i = 0; i < MAX_RECEIVES; i += 1) {
      const messages = await this.#receiveHeld(dlqUrl);
      if (messages.length === 0) break;
      for (const m of messages) {
        if (messageId !== undefined && m.MessageId !== messageId) {
          passedOver.push(m.ReceiptHandle!);
          continue;
        }
        const letter = await this.#deadLetter(stage, m);
        await this.#sqs.send(
          new SendMessageCommand({
            QueueUrl: sourceUrl,
            MessageBody: m.Body ?? '',
            ...(m.MessageAttributes ? { MessageAttributes: stringAttributes(m.MessageAttributes) } : {}),
          }),
        );
        await this.#sqs.send(new DeleteMessageCommand({ QueueUrl: dlqUrl, ReceiptHandle: m.ReceiptHandle! }));
        await this.#audit.append({
          traceId: letter.traceId,
          at: new Date(this.#clock.now()).toISOString(),
          stage: 'operator',
          event: 'redriven',
          detail: by ? `back to ${stage} by ${by}` : `back to ${stage}`,
        });
        moved.push(letter);
      }
      if (messageId !== undefined && moved.length > 0) return moved;
    }
    return moved;
  }

  async #deadLetter(stage: StageName, m: Message): Promise<DeadLetter> {
    const messageId = m.MessageId ?? '';
    const body = m.Body ?? '';
    const traceId = traceIdOfBody(body, messageId);
    const failures = (await this.#audit.byTrace(traceId)).filter((e) => e.event === 'transient-failure');
    const reason = (failures.filter((e) => e.stage === stage).at(-1) ?? failures.at(-1))?.code ?? 'unknown';
    return {
      stage,
      messageId,
      traceId,
      reason,
      receiveCount: Number(m.Attributes?.ApproximateReceiveCount ?? 0),
      sentAt: new Date(Number(m.Attributes?.SentTimestamp ?? 0)).toISOString(),
      bodyBytes: Buffer.byteLength(body, 'utf8'),
    };
  }

  /**
   * Every message in a stage's DLQ. Each receive hides what it returns for a moment, so the next
   * one reaches further into the queue instead of sampling the same messages again; all of them
   * are made visible again before returning, so nothing is consumed.
   */
  async #peek(stage: StageName): Promise<Message[]> {
    const url = this.#queues.dlq[stage];
    if (!url) return [];
    const seen = new Map<string, Message>();
    try {
      for (let i = 0; i < MAX_RECEIVES; i += 1) {
        const messages = await this.#receiveHeld(url);
        if (messages.length === 0) break;
        for (const m of messages) if (m.MessageId) seen.set(m.MessageId, m);
      }
      return [...seen.values()];
    } finally {
      await this.#release(
        url,
        [...seen.values()].map((m) => m.ReceiptHandle!),
      );
    }
  }

  /**
   * One batch of a DLQ, hidden for {@link HOLD_SECONDS} so the next receive reaches further in (the
   * listing and the redrive walk the queue alike), with every attribute a redrive sends back on.
   */
  async #receiveHeld(url: string): Promise<Message[]> {
    const { Messages = [] } = await this.#sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: url,
        MaxNumberOfMessages: 10,
        VisibilityTimeout: HOLD_SECONDS,
        WaitTimeSeconds: WAIT_SECONDS,
        MessageSystemAttributeNames: ['All'],
        MessageAttributeNames: ['All'],
      }),
    );
    return Messages;
  }

  /** Make received messages visible again at once (ten per request). */
  async #release(url: string, receiptHandles: readonly string[]): Promise<void> {
    for (let i = 0; i < receiptHandles.length; i += 10) {
      await this.#sqs.send(
        new ChangeMessageVisibilityBatchCommand({
          QueueUrl: url,
          Entries: receiptHandles.slice(i, i + 10).map((receiptHandle, j) => ({
            Id: String(j),
            ReceiptHandle: receiptHandle,
            VisibilityTimeout: 0,
          })),
        }),
      );
    }
  }
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
