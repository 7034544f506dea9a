/**
 * The embedded runtime: the whole pipeline in one process, with no AWS.
 *
 * Five in-memory queues (each with a DLQ) stand in for SQS, and an event-source loop per stage
 * invokes the very handler exports Lambda runs (functions/*.ts) with SQS events, honouring Lambda's
 * SQS semantics: batch size, partial batch failure, visibility timeout, receive count, redrive to
 * the DLQ. Ports are handed to the handlers on the Lambda context (lib/runtime/binding.ts).
 *
 * Time can be virtual: when nothing is visible, a virtual clock jumps to the next visibility
 * timeout instead of sleeping, so retries and dead-lettering run instantly in tests and the demo.
 */
import type { Context, SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import { FolderDeliverer } from '../adapters/local/folder-deliverer.js';
import { MemoryAuditLog, MemoryBlobStore, MemoryOnceStore } from '../adapters/local/memory-stores.js';
import type { LoadedConfig } from '../config/load.js';
import { STAGE_DEFINITIONS } from '../infra/definitions.js';
import { type IngestResult, ingest } from '../ingest.js';
import type {
  AuditEntry,
  Clock,
  KeyService,
  Ports,
  QueueName,
  QueueSender,
  StageName,
} from '../ports/index.js';
import { STAGES } from '../ports/index.js';
import { lambdaContext } from './binding.js';
import { MemoryQueue, type QueuedMessage } from './memory-queue.js';

export type StageHandler = (event: SQSEvent, context: Context) => Promise<SQSBatchResponse | undefined>;

/** A clock that only moves when told to. */
export class VirtualClock implements Clock {
  #now: number;
  constructor(start: number = Date.now()) {
    this.#now = start;
  }
  now(): number {
    return this.#now;
  }
  advanceTo(t: number): void {
    if (t > this.#now) this.#now = t;
  }
  advanceBy(ms: number): void {
    this.#now += ms;
  }
}

export interface StageSettings {
  batchSize: number;
  maxReceiveCount: number;
  visibilityTimeoutSeconds: number;
}

export interface EmbeddedOptions {
  config: LoadedConfig;
  keys: KeyService;
  /** Folder-type delivery targets resolve against this directory. */
  baseDir: string;
  /** Defaults to a virtual clock starting now. */
  clock?: Clock & { advanceTo?(t: number): void };
  /** Mirror the audit trail to this JSON-lines file. */
  auditFile?: string;
  /** Persist the once-store (jti, message and document ids) to this JSON-lines file. */
  onceFile?: string;
  /** Per-stage overrides of the shared definitions (lib/infra/definitions.ts). */
  stages?: Partial<Record<StageName, Partial<StageSettings>>>;
  /** Replace individual ports (fault-injection tests wrap the local adapters). */
  ports?: Partial<Ports>;
  /** Handlers to invoke; defaults to the deployed handler exports. */
  handlers?: Record<StageName, StageHandler>;
}

export type MessageStatus = 'delivered' | 'rejected' | 'dead-lettered' | 'in-flight';

export interface MessageOutcome {
  traceId: string;
  status: MessageStatus;
  stage?: string;
  itk3Code?: string;
  code?: string;
  messageId?: string;
  detail?: string;
}

export class EmbeddedPipeline {
  readonly config: LoadedConfig;
  readonly clock: Clock & { advanceTo?(t: number): void };
  readonly queues: Record<StageName, MemoryQueue>;
  readonly dlqs: Record<StageName, MemoryQueue>;
  readonly settings: Record<StageName, StageSettings>;
  readonly audit: MemoryAuditLog;
  readonly once: MemoryOnceStore;
  readonly blobs: MemoryBlobStore;
  readonly ports: Ports;
  readonly invocations: Record<StageName, number>;
  readonly #handlers: Promise<Record<StageName, StageHandler>>;
  readonly #pendingAudits: Promise<void>[] = [];

  constructor(opts: EmbeddedOptions) {
    this.config = opts.config;
    this.clock = opts.clock ?? new VirtualClock();
    this.audit = new MemoryAuditLog(opts.auditFile ? { file: opts.auditFile } : {});
    this.once = new MemoryOnceStore(this.clock, opts.onceFile ? { file: opts.onceFile } : {});
    this.blobs = new MemoryBlobStore();

    const settings = {} as Record<StageName, StageSettings>;
    const queues = {} as Record<StageName, MemoryQueue>;
    const dlqs = {} as Record<StageName, MemoryQueue>;
    for (const stage of STAGES) {
      const def = STAGE_DEFINITIONS[stage];
      const s: StageSettings = {
        batchSize: def.batchSize,
        maxReceiveCount: def.maxReceiveCount,
        visibilityTimeoutSeconds: def.timeoutSeconds * 6,
        ...opts.stages?.[stage],
      };
      settings[stage] = s;
      dlqs[stage] = new MemoryQueue({ name: def.dlq, visibilityTimeoutSeconds: 30 }, this.clock);
      queues[stage] = new MemoryQueue(
        {
          name: def.queue,
          visibilityTimeoutSeconds: s.visibilityTimeoutSeconds,
          maxReceiveCount: s.maxReceiveCount,
          dlq: dlqs[stage],
          onDeadLetter: (m) => this.#auditDeadLetter(stage, m),
        },
        this.clock,
      );
    }
    this.settings = settings;
    this.queues = queues;
    this.dlqs = dlqs;
    this.invocations = Object.fromEntries(STAGES.map((s) => [s, 0])) as Record<StageName, number>;

    const sender: QueueSender = {
      sendBatch: async (queue: QueueName, bodies: readonly string[]) => {
        for (const body of bodies) this.queues[queue].send(body);
        return { failed: [] };
      },
      sendInbound: async (body: string, attributes: Readonly<Record<string, string>>) =>
        this.queues.authenticate.send(body, { ...attributes }),
    };
    this.ports = {
      keys: opts.keys,
      queues: sender,
      once: this.once,
      blobs: this.blobs,
      deliverer: new FolderDeliverer(opts.baseDir),
      audit: this.audit,
      clock: this.clock,
      ...opts.ports,
    };
    this.#handlers = opts.handlers ? Promise.resolve(opts.handlers) : loadDeployedHandlers();
  }

  /** Submit through the same front door as the HTTP API. */
  submit(credential: string, sealed: string): Promise<IngestResult> {
    return ingest(
      { authorization: `Bearer ${credential}`, body: sealed, receivedAt: this.clock.now(), source: 'cli' },
      this.ports,
      this.config,
    );
  }

  /** Direct SQS ingestion: the JWE as the body, the credential as the `Authorization` attribute. */
  submitRaw(sealed: string, authorization?: string): string {
    return this.queues.authenticate.send(sealed, authorization ? { Authorization: authorization } : {});
  }

  /**
   * Run event-source polling until every queue is empty (or `maxRounds` polls). Returns the
   * number of handler invocations made.
   */
  async drain(opts: { maxRounds?: number; onProgress?: (done: number) => void } = {}): Promise<number> {
    const handlers = await this.#handlers;
    const maxRounds = opts.maxRounds ?? 1_000_000;
    let invoked = 0;
    for (let round = 0; round < maxRounds; round += 1) {
      let progressed = false;
      // Later stages first, so a long run keeps few records in flight.
      for (const stage of [...STAGES].reverse()) {
        const batch = this.queues[stage].receive(this.settings[stage].batchSize);
        if (batch.length === 0) continue;
        progressed = true;
        invoked += 1;
        await this.#invoke(stage, batch, handlers[stage]);
        opts.onProgress?.(invoked);
      }
      if (progressed) continue;
      const next = this.#nextVisibleAt();
      if (next === undefined) break;
      await this.#waitUntil(next);
    }
    await Promise.all(this.#pendingAudits);
    return invoked;
  }

  /** Where a trace stands, from its audit trail and the DLQs. */
  async outcome(traceId: string): Promise<MessageOutcome> {
    const entries = await this.audit.byTrace(traceId);
    return outcomeFromAudit(traceId, entries);
  }

  /**
   * Work waiting in the five stage queues (visible or in flight; DLQs not counted): messages and
   * their body bytes. `itk3 serve` refuses new submissions with 503 while it is over a bound.
   */
  backlog(): { messages: number; bytes: number } {
    let messages = 0;
    let bytes = 0;
    for (const stage of STAGES) {
      for (const m of this.queues[stage].peekAll()) {
        messages += 1;
        bytes += Buffer.byteLength(m.body, 'utf8');
      }
    }
    return { messages, bytes };
  }

  /** Records currently in any DLQ. */
  deadLetters(): { stage: StageName; message: QueuedMessage }[] {
    return STAGES.flatMap((stage) => this.dlqs[stage].peekAll().map((message) => ({ stage, message })));
  }

  /** Move one DLQ message (or all of a stage's) back to its source queue. */
  async redrive(stage: StageName, messageId?: string): Promise<number> {
    const ids = messageId ? [messageId] : this.dlqs[stage].peekAll().map((m) => m.messageId);
    let moved = 0;
    for (const id of ids) {
      const m = this.dlqs[stage].take(id);
      if (!m) continue;
      // Keep the original send time: the authenticate stage judges credentials at receipt time, and a
      // redrive is not a new receipt.
      this.queues[stage].send(m.body, m.attributes, m.messageId, m.sentAt);
      moved += 1;
      await this.audit.append({
        traceId: traceIdOf(m),
        at: new Date(this.clock.now()).toISOString(),
        stage: 'operator',
        event: 'redriven',
        detail: `back to ${stage}`,
      });
    }
    return moved;
  }

  async #invoke(stage: StageName, batch: QueuedMessage[], handler: StageHandler): Promise<void> {
    this.invocations[stage] += 1;
    const event: SQSEvent = { Records: batch.map((m) => toSqsRecord(stage, m, this.clock.now())) };
    const context = lambdaContext(stage, { ports: this.ports, config: this.config });
    let failed: Set<string>;
    let handlerError: string | undefined;
    try {
      const response = await handler(event, context);
      failed = new Set((response?.batchItemFailures ?? []).map((f) => f.itemIdentifier));
    } catch (error) {
      // A handler that throws fails the whole batch, as in Lambda.
      failed = new Set(batch.map((m) => m.messageId));
      handlerError = `handler error: ${(error as Error).name}`;
    }
    for (const m of batch) {
      if (failed.has(m.messageId)) {
        this.queues[stage].noteFailure(m.messageId, handlerError ?? (await this.#lastFailure(m, stage)));
      } else {
        this.queues[stage].delete(m.messageId, m.receiptHandle!);
      }
    }
  }

  async #lastFailure(m: QueuedMessage, stage: StageName): Promise<string> {
    const entries = await this.audit.byTrace(traceIdOf(m));
    const last = entries.filter((e) => e.event === 'transient-failure' && e.stage === stage).at(-1);
    return last?.code ?? 'unknown';
  }

  #auditDeadLetter(stage: StageName, m: QueuedMessage): void {
    this.#pendingAudits.push(
      this.audit.append({
        traceId: traceIdOf(m),
        at: new Date(this.clock.now()).toISOString(),
        stage,
        event: 'dead-lettered',
        code: m.deadLetter?.reason ?? 'unknown',
        detail: `after ${this.settings[stage].maxReceiveCount} receives`,
      }),
    );
  }

  #nextVisibleAt(): number | undefined {
    let next: number | undefined;
    for (const stage of STAGES) {
      const t = this.queues[stage].nextVisibleAt();
      if (t !== undefined && (next === undefined || t < next)) next = t;
    }
    return next;
  }

  async #waitUntil(t: number): Promise<void> {
    if (this.clock.advanceTo) {
      this.clock.advanceTo(t);
      return;
    }
    const ms = Math.max(0, t - this.clock.now());
    await new Promise((resolve) => setTimeout(resolve, Math.min(ms, 1000)));
  }
}

/** Summarise a trace's audit entries into one outcome. */
export function outcomeFromAudit(traceId: string, entries: readonly AuditEntry[]): MessageOutcome {
  const messageId = entries.find((e) => e.messageId)?.messageId;
  const base = { traceId, ...(messageId ? { messageId } : {}) };
  const dead = entries.filter((e) => e.event === 'dead-lettered').at(-1);
  const lastRedrive = entries.findLastIndex((e) => e.event === 'redriven');
  const deadIndex = dead ? entries.lastIndexOf(dead) : -1;
  const rejected = entries.find((e) => e.event === 'rejected');
  if (rejected) {
    return {
      ...base,
      status: 'rejected',
      stage: rejected.stage,
      code: rejected.code!,
      itk3Code: rejected.itk3Code!,
    };
  }
  const delivered = entries.find((e) => e.event === 'delivered');
  if (delivered) {
    const ack = entries.find((e) => e.event === 'response-sent' && e.itk3Code === '20013');
    return { ...base, status: 'delivered', stage: 'deliver', ...(ack ? { itk3Code: '20013' } : {}) };
  }
  if (dead && deadIndex > lastRedrive) {
    return { ...base, status: 'dead-lettered', stage: dead.stage, code: dead.code! };
  }
  return { ...base, status: 'in-flight' };
}

function traceIdOf(m: QueuedMessage): string {
  if (m.body.startsWith('{')) {
    try {
      const parsed = JSON.parse(m.body) as { traceId?: unknown };
      if (typeof parsed.traceId === 'string') return parsed.traceId;
    } catch {
      // not a record: fall through to the transport id
    }
  }
  return m.messageId;
}

/** The SQS record Lambda would build for `m` on `stage`'s queue. */
export function toSqsRecord(stage: StageName, m: QueuedMessage, now: number): SQSRecord {
  return {
    messageId: m.messageId,
    receiptHandle: m.receiptHandle!,
    body: m.body,
    attributes: {
      ApproximateReceiveCount: String(m.receiveCount),
      SentTimestamp: String(m.sentAt),
      SenderId: 'EMBEDDED',
      ApproximateFirstReceiveTimestamp: String(m.firstReceivedAt ?? now),
    },
    messageAttributes: Object.fromEntries(
      Object.entries(m.attributes).map(([k, v]) => [
        k,
        { stringValue: v, dataType: 'String', stringListValues: [], binaryListValues: [] },
      ]),
    ),
    md5OfBody: '',
    eventSource: 'aws:sqs',
    eventSourceARN: `arn:aws:sqs:local:000000000000:${STAGE_DEFINITIONS[stage].queue}`,
    awsRegion: 'local',
  };
}

async function loadDeployedHandlers(): Promise<Record<StageName, StageHandler>> {
  const { deployedHandlers } = await import('./handlers.js');
  return deployedHandlers;
}
