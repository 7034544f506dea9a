/**
 * An in-memory standard queue with the SQS behaviour the pipeline relies on: visibility timeout,
 * receive count, redrive to a dead-letter queue after `maxReceiveCount` receives, and batch
 * receive. Time comes from the injected clock so tests can move it.
 */
import { randomUUID } from 'node:crypto';
import type { Clock } from '../ports/index.js';
import { freezeRecord, type PipelineRecord, serialiseRecord } from '../record.js';
import type { StageQueue } from './state.js';

export interface QueuedMessage {
  messageId: string;
  body: string;
  attributes: Record<string, string>;
  sentAt: number;
  receiveCount: number;
  firstReceivedAt?: number;
  visibleAt: number;
  receiptHandle?: string;
  /** Set when redriven to a DLQ: the source queue and the last failure reason known. */
  deadLetter?: { sourceQueue: string; reason: string; at: number };
  /**
   * On the first receive in the process that sent it with `sendRecord`: the record `body`
   * serialises (in memory only, never stored; a later receive parses the body).
   */
  record?: PipelineRecord;
}

/**
 * Give `message` a body built on first read: a handed-over record (lib/record.ts, hand-off)'s stage reads the record, so
 * the body (identical to the stored one) is usually never built.
 */
export function lazyBody(message: { body: string }, build: () => string): void {
  let body: string | undefined;
  Object.defineProperty(message, 'body', {
    enumerable: true,
    configurable: true,
    get: () => {
      body ??= build();
      return body;
    },
  });
}

export interface QueueSettings {
  name: string;
  visibilityTimeoutSeconds: number;
  /** Redrive: after this many receives, the next receive moves the message to `dlq`. */
  maxReceiveCount?: number;
  dlq?: StageQueue;
  /** Told about each message moved to the DLQ (the runtime audits it). */
  onDeadLetter?: (message: QueuedMessage) => void;
}

export class MemoryQueue implements StageQueue {
  readonly name: string;
  readonly settings: QueueSettings;
  readonly #clock: Clock;
  readonly #messages = new Map<string, QueuedMessage>();
  /** Last failure reason per message id, carried into the DLQ. */
  readonly #reasons = new Map<string, string>();
  /** Records sent with `sendRecord` and not yet received: handed over on the first receive. */
  readonly #handOff = new Map<string, PipelineRecord>();

  constructor(settings: QueueSettings, clock: Clock) {
    this.name = settings.name;
    this.settings = settings;
    this.#clock = clock;
  }

  send(
    body: string,
    attributes: Record<string, string> = {},
    messageId: string = randomUUID(),
    sentAt?: number,
  ): string {
    const now = this.#clock.now();
    this.#messages.set(messageId, {
      messageId,
      body,
      attributes,
      sentAt: sentAt ?? now,
      receiveCount: 0,
      visibleAt: now,
    });
    return messageId;
  }

  sendRecord(record: PipelineRecord): string {
    const messageId = this.send(serialiseRecord(record));
    this.#handOff.set(messageId, freezeRecord(record));
    return messageId;
  }

  /** Put back a message exactly as it was (DLQ redrive keeps nothing but the body and attributes). */
  enqueue(message: QueuedMessage): void {
    this.#messages.set(message.messageId, message);
  }

  /**
   * Receive up to `max` visible messages. Messages already received `maxReceiveCount` times
   * are moved to the DLQ instead, as SQS does on the receive that would exceed the count.
   */
  receive(max: number): QueuedMessage[] {
    const now = this.#clock.now();
    const out: QueuedMessage[] = [];
    for (const message of this.#messages.values()) {
      if (out.length >= max) break;
      if (message.visibleAt > now) continue;
      const { maxReceiveCount, dlq, onDeadLetter } = this.settings;
      if (dlq && maxReceiveCount !== undefined && message.receiveCount >= maxReceiveCount) {
        this.#messages.delete(message.messageId);
        const dead: QueuedMessage = {
          ...message,
          receiveCount: 0,
          visibleAt: now,
          receiptHandle: undefined,
          deadLetter: {
            sourceQueue: this.name,
            reason: this.#reasons.get(message.messageId) ?? 'unknown',
            at: now,
          },
        };
        dlq.enqueue(dead);
        onDeadLetter?.(dead);
        this.#reasons.delete(message.messageId);
        this.#handOff.delete(message.messageId);
        continue;
      }
      message.receiveCount += 1;
      message.firstReceivedAt ??= now;
      message.visibleAt = now + this.settings.visibilityTimeoutSeconds * 1000;
      message.receiptHandle = randomUUID();
      const record = this.#handOff.get(message.messageId);
      if (record) {
        this.#handOff.delete(message.messageId);
        out.push({ ...message, record });
      } else out.push(message);
    }
    return out;
  }

  /** Delete by receipt handle; a stale handle (message received again since) is ignored like SQS. */
  delete(messageId: string, receiptHandle: string): boolean {
    const message = this.#messages.get(messageId);
    if (!message || message.receiptHandle !== receiptHandle) return false;
    this.#messages.delete(messageId);
    this.#reasons.delete(messageId);
    this.#handOff.delete(messageId);
    return true;
  }

  /** Remember why the last attempt failed (shown with the message if it dead-letters). */
  noteFailure(messageId: string, reason: string): void {
    this.#reasons.set(messageId, reason);
  }

  /** Remove a message regardless of visibility (operator tooling: DLQ redrive). */
  take(messageId: string): QueuedMessage | undefined {
    const message = this.#messages.get(messageId);
    if (message) this.#messages.delete(messageId);
    this.#handOff.delete(messageId);
    return message;
  }

  peekAll(): QueuedMessage[] {
    return [...this.#messages.values()];
  }

  get depth(): number {
    return this.#messages.size;
  }

  get visibleDepth(): number {
    const now = this.#clock.now();
    let n = 0;
    for (const m of this.#messages.values()) if (m.visibleAt <= now) n += 1;
    return n;
  }

  /** Earliest time a currently invisible message becomes visible, if any. */
  nextVisibleAt(): number | undefined {
    let next: number | undefined;
    for (const m of this.#messages.values()) {
      if (next === undefined || m.visibleAt < next) next = m.visibleAt;
    }
    return next;
  }
}
