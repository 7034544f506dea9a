import {
  SendMessageBatchCommand,
  type SendMessageBatchRequestEntry,
  SendMessageCommand,
  type SQSClient,
} from '@aws-sdk/client-sqs';
import { ConfigError, TransientError } from '../../errors.js';
import { ENV } from '../../infra/definitions.js';
import type { QueueName } from '../../pipeline/topology.js';
import type { QueueSender } from '../../ports/index.js';
import { awsErrorName, isTransientAwsError } from './errors.js';

/** `SendMessageBatch` limits (PERFORMANCE.md §4): 10 entries, and the sum of bodies ≤ 1 MiB. */
const SQS_BATCH_MAX_ENTRIES = 10;
const SQS_BATCH_MAX_BYTES = 1_048_576;

/**
 * Split bodies into `SendMessageBatch` requests: at most {@link SQS_BATCH_MAX_ENTRIES} entries and
 * {@link SQS_BATCH_MAX_BYTES} of UTF-8 body per request, in input order. A single body over the
 * byte limit gets a request of its own (SQS then rejects it, and it is reported as failed).
 *
 * @returns lists of input indexes, one list per request
 * @example
 * ```ts
 * chunkForBatch(['a', 'b']); // [[0, 1]]
 * ```
 */
export function chunkForBatch(
  bodies: readonly string[],
  maxEntries = SQS_BATCH_MAX_ENTRIES,
  maxBytes = SQS_BATCH_MAX_BYTES,
): number[][] {
  const chunks: number[][] = [];
  let current: number[] = [];
  let bytes = 0;
  for (const [index, body] of bodies.entries()) {
    const size = Buffer.byteLength(body, 'utf8');
    if (current.length > 0 && (current.length >= maxEntries || bytes + size > maxBytes)) {
      chunks.push(current);
      current = [];
      bytes = 0;
    }
    current.push(index);
    bytes += size;
  }
  if (current.length > 0) chunks.push(current);
  return chunks;
}

/**
 * {@link QueueSender} over SQS `SendMessageBatch`.
 *
 * Entries are batched within the API limits and the requests sent concurrently. The result lists
 * the input indexes that were not accepted: per-entry failures from the response, every entry of a
 * request that failed transiently (throttling, 5xx, network), any entry the response forgot to
 * mention, and any body over 1 MiB by itself (never sent). A request that fails for a non-transient reason (a missing queue, a malformed request)
 * throws `TransientError('QUEUE_UNAVAILABLE')`: it is a deployment problem, not one record's, so the
 * whole source batch goes back to its queue and dead-letters if the problem persists.
 *
 * @example
 * ```ts
 * const sender = new SqsQueueSender(new SQSClient({}), { authorise: process.env.ITK3_QUEUE_URL_AUTHORISE! });
 * const { failed } = await sender.sendBatch('authorise', [JSON.stringify(record)]);
 * ```
 */
export class SqsQueueSender implements QueueSender {
  readonly #client: SQSClient;
  readonly #queueUrls: Readonly<Partial<Record<QueueName, string>>>;

  /**
   * @param client the SQS client
   * @param queueUrls stage → queue URL. Only the queues this process sends to are needed; sending to
   *   a queue without a URL is a configuration error.
   */
  constructor(client: SQSClient, queueUrls: Readonly<Partial<Record<QueueName, string>>>) {
    this.#client = client;
    this.#queueUrls = { ...queueUrls };
  }

  async sendBatch(queue: QueueName, bodies: readonly string[]): Promise<{ failed: number[] }> {
    const queueUrl = this.#queueUrls[queue];
    if (!queueUrl) throw new ConfigError([`${ENV.queueUrl(queue)}: no queue URL for stage ${queue}`]);
    if (bodies.length === 0) return { failed: [] };

    const failed: number[] = [];
    // A body over the limit on its own can never be sent: fail just that entry (the caller's claim
    // check should have caught it), instead of letting SQS reject the whole request.
    const oversize = new Set<number>();
    for (const [index, body] of bodies.entries()) {
      if (Buffer.byteLength(body, 'utf8') > SQS_BATCH_MAX_BYTES) oversize.add(index);
    }
    failed.push(...oversize);
    const sendable = [...bodies.keys()].filter((index) => !oversize.has(index));
    const chunks = chunkForBatch(sendable.map((index) => bodies[index] ?? '')).map((chunk) =>
      chunk.map((i) => sendable[i] as number),
    );
    const results = await Promise.allSettled(chunks.map((chunk) => this.#sendChunk(queueUrl, bodies, chunk)));
    for (const [i, result] of results.entries()) {
      if (result.status === 'fulfilled') {
        failed.push(...result.value);
        continue;
      }
      if (!isTransientAwsError(result.reason)) {
        throw new TransientError(
          'QUEUE_UNAVAILABLE',
          `SQS SendMessageBatch failed (${label(result.reason)})`,
          {
            cause: result.reason,
          },
        );
      }
      failed.push(...(chunks[i] ?? []));
    }
    return { failed: failed.sort((a, b) => a - b) };
  }

  async sendInbound(body: string, attributes: Readonly<Record<string, string>>): Promise<string> {
    const queueUrl = this.#queueUrls.authenticate;
    if (!queueUrl)
      throw new ConfigError([`${ENV.queueUrl('authenticate')}: no queue URL for the inbound queue`]);
    try {
      const out = await this.#client.send(
        new SendMessageCommand({
          QueueUrl: queueUrl,
          MessageBody: body,
          MessageAttributes: Object.fromEntries(
            Object.entries(attributes).map(([k, v]) => [k, { DataType: 'String', StringValue: v }]),
          ),
        }),
      );
      if (!out.MessageId) throw new Error('SendMessage returned no MessageId');
      return out.MessageId;
    } catch (cause) {
      throw new TransientError('QUEUE_UNAVAILABLE', `SQS SendMessage failed (${label(cause)})`, { cause });
    }
  }

  /** Send one request; resolve to the indexes SQS did not accept. */
  async #sendChunk(queueUrl: string, bodies: readonly string[], chunk: readonly number[]): Promise<number[]> {
    // The entry id is the input index: unique within the request, and maps failures back directly.
    const entries: SendMessageBatchRequestEntry[] = chunk.map((index) => ({
      Id: String(index),
      MessageBody: bodies[index],
    }));
    const out = await this.#client.send(
      new SendMessageBatchCommand({ QueueUrl: queueUrl, Entries: entries }),
    );
    const accepted = new Set((out.Successful ?? []).map((entry) => entry.Id));
    return chunk.filter((index) => !accepted.has(String(index)));
  }
}

function label(error: unknown): string {
  return awsErrorName(error) ?? 'unknown error';
}
