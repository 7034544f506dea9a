/**
 * A Lambda-style SQS event source for the emulator mode: receive a batch from a real queue, invoke
 * the stage handler with the SQS event Lambda would build, delete what succeeded, and leave the
 * batch item failures for SQS to redeliver (and, after `maxReceiveCount`, dead-letter through the
 * queue's own redrive policy). One ReceiveMessage and one DeleteMessageBatch per batch.
 *
 * A lost connection to the emulator (refused, reset, unreachable) is not the end of the drain: each
 * SQS call is retried with exponential back-off within a bounded budget (30 s by default), with one
 * line on stderr when the connection is lost, when it comes back, and — clearly — when it gives up.
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
import type { StageName } from '../../pipeline/topology.js';

export interface SqsEventSourceOptions {
  stage: StageName;
  queueUrl: string;
  queueArn: string;
  batchSize: number;
  /** Long-poll wait per receive. 0 keeps a drain loop responsive. */
  waitTimeSeconds?: number;
  /** Retry of a lost connection. @default DEFAULT_RECONNECT */
  reconnect?: Partial<ReconnectPolicy>;
  /** Where connection-loss lines go. @default one line on stderr */
  warn?: (line: string) => void;
}

/** How long and how often a lost connection to the emulator is retried. */
export interface ReconnectPolicy {
  /** Give up once this long has passed since the first failure, in ms. */
  budgetMs: number;
  /** First wait, in ms; it doubles after every failed attempt. */
  initialDelayMs: number;
  /** Longest single wait, in ms. */
  maxDelayMs: number;
}

const DEFAULT_RECONNECT: Readonly<ReconnectPolicy> = {
  budgetMs: 30_000,
  initialDelayMs: 250,
  maxDelayMs: 5_000,
};

/** The emulator stayed unreachable for the whole reconnect budget. */
export class EmulatorUnreachableError extends Error {
  override readonly name = 'EmulatorUnreachableError';
}

/** Socket-level failures that mean the connection was lost, not that the request was refused. */
const CONNECTION_LOST = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
]);

/** The socket error code of a lost connection (on the error or its cause), if it is one. */
export function connectionLossCode(error: unknown): string | undefined {
  for (let e: unknown = error, depth = 0; e && typeof e === 'object' && depth < 3; depth += 1) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && CONNECTION_LOST.has(code)) return code;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

export type BatchInvoker = (event: SQSEvent) => Promise<SQSBatchResponse | undefined>;

export class SqsEventSource {
  readonly stage: StageName;
  readonly #sqs: SQSClient;
  readonly #opts: SqsEventSourceOptions;
  readonly #reconnect: ReconnectPolicy;
  readonly #warn: (line: string) => void;

  constructor(sqs: SQSClient, opts: SqsEventSourceOptions) {
    this.#sqs = sqs;
    this.#opts = opts;
    this.stage = opts.stage;
    this.#reconnect = { ...DEFAULT_RECONNECT, ...opts.reconnect };
    this.#warn = opts.warn ?? ((line) => process.stderr.write(`${line}\n`));
  }

  /**
   * Send one SQS command, retrying a lost connection with exponential back-off until the budget is
   * spent; then throw {@link EmulatorUnreachableError}. Any other error is thrown at once.
   */
  async #send<T>(operation: string, send: () => Promise<T>): Promise<T> {
    const { budgetMs, initialDelayMs, maxDelayMs } = this.#reconnect;
    let firstFailureAt: number | undefined;
    let delay = initialDelayMs;
    for (let attempt = 1; ; attempt += 1) {
      try {
        const result = await send();
        if (firstFailureAt !== undefined) {
          this.#warn(`itk3: emulator connection restored (${this.stage} ${operation}, attempt ${attempt})`);
        }
        return result;
      } catch (error) {
        const code = connectionLossCode(error);
        if (!code) throw error;
        const now = Date.now();
        firstFailureAt ??= now;
        const waited = now - firstFailureAt;
        if (waited + delay > budgetMs) {
          const message =
            `emulator unreachable (${code}) for ${(waited / 1000).toFixed(1)} s after ${attempt} attempts ` +
            `at ${this.stage} ${operation}; giving up the drain (budget ${budgetMs / 1000} s)`;
          this.#warn(`itk3: ${message}`);
          throw new EmulatorUnreachableError(message, { cause: error });
        }
        if (attempt === 1) {
          this.#warn(
            `itk3: emulator connection lost (${code}) at ${this.stage} ${operation}; retrying for up to ${budgetMs / 1000} s`,
          );
        }
        await new Promise((resolve) => setTimeout(resolve, delay));
        delay = Math.min(delay * 2, maxDelayMs);
      }
    }
  }

  /** Receive one batch and run it. Returns how many records were received. */
  async pollOnce(invoke: BatchInvoker): Promise<number> {
    const received = await this.#send('ReceiveMessage', () =>
      this.#sqs.send(
        new ReceiveMessageCommand({
          QueueUrl: this.#opts.queueUrl,
          MaxNumberOfMessages: this.#opts.batchSize,
          WaitTimeSeconds: this.#opts.waitTimeSeconds ?? 0,
          MessageSystemAttributeNames: ['All'],
          MessageAttributeNames: ['All'],
        }),
      ),
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
      const entries = done
        .slice(i, i + 10)
        .map((m, j) => ({ Id: String(j), ReceiptHandle: m.ReceiptHandle! }));
      await this.#send('DeleteMessageBatch', () =>
        this.#sqs.send(new DeleteMessageBatchCommand({ QueueUrl: this.#opts.queueUrl, Entries: entries })),
      );
    }
    return messages.length;
  }

  /** Messages visible plus in flight, as SQS approximates them. */
  async depth(): Promise<number> {
    const out = await this.#send('GetQueueAttributes', () =>
      this.#sqs.send(
        new GetQueueAttributesCommand({
          QueueUrl: this.#opts.queueUrl,
          AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible'],
        }),
      ),
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
