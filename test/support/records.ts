/**
 * Record and port factories for calling the stage functions directly: an ingress record as the
 * front door writes it, and a {@link StageContext} over the real local adapters (software keys,
 * in-memory once-store, blob store and audit log, folder delivery) with a queue sender that
 * records what it was asked to send.
 */
import { randomUUID } from 'node:crypto';
import type { SQSEvent, SQSRecord } from 'aws-lambda';
import { FolderDeliverer } from '../../lib/adapters/local/folder-deliverer.js';
import { MemoryAuditLog, MemoryBlobStore, MemoryOnceStore } from '../../lib/adapters/local/memory-stores.js';
import type { LoadedConfig } from '../../lib/config/load.js';
import type { QueueName } from '../../lib/pipeline/topology.js';
import type { KeyService, Ports, QueueSender } from '../../lib/ports/index.js';
import { type PipelineRecord, RECORD_VERSION } from '../../lib/record.js';
import { VirtualClock } from '../../lib/runtime/embedded.js';
import type { QueuedMessage } from '../../lib/runtime/memory-queue.js';
import type { RuntimeState, StageQueue } from '../../lib/runtime/state.js';
import type { StageContext } from '../../lib/stages/stage.js';
import type { DemoWorld } from '../../lib/testkit/world.js';
import { keyService } from './world.js';

/** A queue sender that keeps every body it is given. */
class RecordingQueueSender implements QueueSender {
  readonly sent: {
    queue: QueueName;
    body: string;
    attributes?: Record<string, string>;
    messageId?: string;
  }[] = [];

  async sendBatch(queue: QueueName, bodies: readonly string[]): Promise<{ failed: number[] }> {
    for (const body of bodies) this.sent.push({ queue, body });
    return { failed: [] };
  }

  /** Direct ingestion onto the inbound queue: the transport assigns the message id. */
  async sendInbound(body: string, attributes: Readonly<Record<string, string>>): Promise<string> {
    const messageId = randomUUID();
    this.sent.push({ queue: 'authenticate', body, attributes: { ...attributes }, messageId });
    return messageId;
  }
}

export interface TestStageContext extends StageContext {
  clock: VirtualClock;
  queues: RecordingQueueSender;
  once: MemoryOnceStore;
  blobs: MemoryBlobStore;
  audit: MemoryAuditLog;
}

/** A stage context over the world's configuration (or `config`) and fresh local adapters. */
export function stageContext(
  world: DemoWorld,
  opts: { baseDir: string; config?: LoadedConfig; keys?: KeyService; now?: number },
): TestStageContext {
  const clock = new VirtualClock(opts.now ?? Date.now());
  const queues = new RecordingQueueSender();
  const once = new MemoryOnceStore(clock);
  const blobs = new MemoryBlobStore();
  const audit = new MemoryAuditLog();
  const ports: Ports = {
    keys: opts.keys ?? keyService(world),
    queues,
    once,
    blobs,
    deliverer: new FolderDeliverer(opts.baseDir),
    audit,
    clock,
  };
  return { ports, config: opts.config ?? world.config, clock, queues, once, blobs, audit };
}

/** The record the front door writes for a credential and a sealed message. */
export function ingressRecord(
  opts: { credential?: string; sealed?: string; receivedAt?: number; traceId?: string } = {},
): PipelineRecord {
  return {
    v: RECORD_VERSION,
    traceId: opts.traceId ?? randomUUID(),
    receivedAt: opts.receivedAt ?? Date.now(),
    source: 'cli',
    ...(opts.credential !== undefined ? { credential: opts.credential } : {}),
    ...(opts.sealed !== undefined ? { sealed: { inline: opts.sealed } } : {}),
  };
}

/** One SQS record as the Lambda event source delivers it. */
export function sqsRecord(
  body: string,
  opts: {
    messageId?: string;
    receiveCount?: number;
    sentAt?: number;
    attributes?: Record<string, string>;
  } = {},
): SQSRecord {
  const sentAt = opts.sentAt ?? Date.now();
  return {
    messageId: opts.messageId ?? randomUUID(),
    receiptHandle: randomUUID(),
    body,
    attributes: {
      ApproximateReceiveCount: String(opts.receiveCount ?? 1),
      SentTimestamp: String(sentAt),
      SenderId: 'TEST',
      ApproximateFirstReceiveTimestamp: String(sentAt),
    },
    messageAttributes: Object.fromEntries(
      Object.entries(opts.attributes ?? {}).map(([k, v]) => [
        k,
        { stringValue: v, dataType: 'String', stringListValues: [], binaryListValues: [] },
      ]),
    ),
    md5OfBody: '',
    eventSource: 'aws:sqs',
    eventSourceARN: 'arn:aws:sqs:local:000000000000:itk3-test',
    awsRegion: 'local',
  };
}

/** An SQS event of `records`. */
export function sqsEvent(records: readonly SQSRecord[]): SQSEvent {
  return { Records: [...records] };
}

/**
 * Queue `q` on `state` (10 s visibility) that moves a message to `q-dlq` on the receive after its
 * second, telling `onDeadLetter` of each move: the queue pair the runtime-state tests drive.
 */
export function queueWithDlq(
  state: RuntimeState,
  onDeadLetter: (message: QueuedMessage) => void,
): { q: StageQueue; dlq: StageQueue } {
  const dlq = state.queue({ name: 'q-dlq', visibilityTimeoutSeconds: 30 });
  const q = state.queue({ name: 'q', visibilityTimeoutSeconds: 10, maxReceiveCount: 2, dlq, onDeadLetter });
  return { q, dlq };
}
