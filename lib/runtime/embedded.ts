/**
 * The embedded runtime: the whole pipeline in one process, with no AWS.
 *
 * Five in-memory queues (each with a DLQ) stand in for SQS, and an event-source loop per stage
 * invokes the very handler chain Lambda runs — each stage value composed with the batch step and
 * the middy middlewares (lib/runtime/stage-handler.ts), its local ports passed to the composer —
 * with SQS events, honouring Lambda's SQS semantics: batch size, partial batch failure, visibility
 * timeout, receive count, redrive to the DLQ.
 *
 * Time can be virtual: when nothing is visible, a virtual clock jumps to the next visibility
 * timeout instead of sleeping, so retries and dead-lettering run instantly in tests and the demo.
 */
import type { SQSEvent, SQSRecord } from 'aws-lambda';
import { FolderDeliverer } from '../adapters/local/folder-deliverer.js';
import type { WorkerPool } from '../adapters/local/worker-pool.js';
import type { LoadedConfig } from '../config/load.js';
import { STAGE_DEFINITIONS, type StageSettings, stageSettings } from '../infra/definitions.js';
import { type IngestResult, ingest } from '../ingest.js';
import { PIPELINE_STAGES } from '../pipeline/stages.js';
import type { QueueName, StageName } from '../pipeline/topology.js';
import { STAGES } from '../pipeline/topology.js';
import type {
  AuditEntry,
  BlobStore,
  Clock,
  KeyService,
  OnceStore,
  Ports,
  QueueSender,
} from '../ports/index.js';
import { handOverRecord, type PipelineRecord } from '../record.js';
import { lambdaContext } from './lambda-context.js';
import { lazyBody, type QueuedMessage } from './memory-queue.js';
import type { BindingProvider } from './ports-middleware.js';
import { composeStageHandler, type StageHandler } from './stage-handler.js';
import {
  type InspectableAuditLog,
  memoryState,
  type RuntimeState,
  type StageQueue,
  type StoredOutcome,
} from './state.js';

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

/** A stage's settings with every default applied (lib/infra/definitions.ts). */
export type EffectiveStageSettings = ReturnType<typeof stageSettings>;

export interface EmbeddedOptions {
  config: LoadedConfig;
  keys: KeyService;
  /** Folder-type delivery targets resolve against this directory. */
  baseDir: string;
  /** Defaults to a virtual clock starting now. */
  clock?: Clock & { advanceTo?(t: number): void };
  /**
   * Where queues, once-store, audit, blobs and outcomes live. Defaults to memory (unit tests); the
   * command line passes the SQLite state (lib/adapters/local/sqlite-state.ts).
   */
  state?: RuntimeState;
  /** Memory state only: mirror the audit trail to this JSON-lines file. */
  auditFile?: string;
  /** Memory state only: persist the once-store to this JSON-lines file. */
  onceFile?: string;
  /** Backpressure: refuse new submissions while this much is queued (defaults: {@link DEFAULT_LIMITS}). */
  limits?: Partial<BacklogLimits>;
  /** Per-stage overrides of the shared definitions (lib/infra/definitions.ts). */
  stages?: Partial<Record<StageName, Partial<StageSettings>>>;
  /** Replace individual ports (fault-injection tests wrap the local adapters). */
  ports?: Partial<Ports>;
  /**
   * Handlers to invoke; defaults to {@link pipelineHandlers} over this runtime's ports. A function
   * receives those defaults (to wrap them, as fault-injection tests do).
   */
  handlers?:
    | Record<StageName, StageHandler>
    | ((defaults: Record<StageName, StageHandler>) => Record<StageName, StageHandler>);
  /**
   * Run the CPU-heavy steps (recipient-key unwrap, signature checks, Bundle reading) on this worker
   * pool (lib/adapters/local/worker-pool.ts); a batch's records, processed concurrently, then use
   * every core. The caller closes the pool.
   */
  pool?: WorkerPool;
  /**
   * With a `pool`: invoke authenticate, authorise, decrypt and verify side by side when each has
   * work (their writes share one unit of work; deliver keeps its own), so this thread's work of one
   * stage overlaps the workers' of another. On by default with a pool: one invocation at a time
   * leaves this thread idle while the workers unwrap a decrypt batch, which bounds the gain below
   * the target on 2 cores (docs/PERFORMANCE.md, "Both cores"); `false` turns it off.
   */
  sideBySide?: boolean;
}

export interface BacklogLimits {
  maxMessages: number;
  maxBytes: number;
}

const DEFAULT_LIMITS: BacklogLimits = { maxMessages: 10_000, maxBytes: 512 * 1024 * 1024 };

/** Refused by backpressure: ingest answers 503 and `serve` adds Retry-After. */
class BacklogFullError extends Error {
  override readonly name = 'BacklogFullError';
}

type MessageStatus = 'delivered' | 'rejected' | 'dead-lettered' | 'in-flight';

export interface MessageOutcome {
  traceId: string;
  status: MessageStatus;
  stage?: string;
  itk3Code?: string;
  code?: string;
  messageId?: string;
  detail?: string;
}

/**
 * The one outcome shape a sender or operator reads, from `itk3 process` (one JSON line per message,
 * plus `file`) and from `GET /messages/<trackingId>` alike. `status` is one of `delivered`,
 * `rejected`, `dead-lettered`, `in-flight`, or `refused` (turned away at the front door: no
 * tracking id). `error` is the stable code (docs/REJECTION-CODES.md) or null.
 */
export interface OutcomeView {
  trackingId: string | null;
  messageId: string | null;
  status: MessageStatus | 'refused';
  stage: string | null;
  itk3Code: string | null;
  error: string | null;
}

export function outcomeView(o: MessageOutcome): OutcomeView {
  return {
    trackingId: o.traceId,
    messageId: o.messageId ?? null,
    status: o.status,
    stage: o.stage ?? null,
    itk3Code: o.itk3Code ?? null,
    error: o.code ?? null,
  };
}

export class EmbeddedPipeline {
  readonly config: LoadedConfig;
  readonly clock: Clock & { advanceTo?(t: number): void };
  readonly queues: Record<StageName, StageQueue>;
  readonly dlqs: Record<StageName, StageQueue>;
  readonly settings: Record<StageName, EffectiveStageSettings>;
  readonly state: RuntimeState;
  readonly audit: InspectableAuditLog;
  readonly once: OnceStore;
  readonly blobs: BlobStore;
  readonly ports: Ports;
  readonly limits: BacklogLimits;
  readonly invocations: Record<StageName, number>;
  /** Told about every trace that reaches a terminal outcome, once it is committed. */
  onOutcome: ((outcome: StoredOutcome) => void) | undefined;
  /** Told about every trace a redrive brought back from a DLQ, once it is committed. */
  onRedriven: ((traceId: string) => void) | undefined;
  readonly #handlers: Record<StageName, StageHandler>;
  readonly #pendingAudits: Promise<void>[] = [];
  #finished: StoredOutcome[] = [];
  /** Traces a running invocation forwarded to the next queue (a trace is at one stage at a time). */
  readonly #forwarded = new Set<string>();
  #stopping = false;
  #wake: (() => void) | undefined;
  /** With a worker pool (unless `sideBySide: false`): one drain round invokes the stages concurrently. */
  readonly #sideBySide: boolean;

  constructor(opts: EmbeddedOptions) {
    this.config = opts.config;
    this.clock = opts.clock ?? new VirtualClock();
    this.state =
      opts.state ??
      memoryState(this.clock, {
        ...(opts.auditFile ? { auditFile: opts.auditFile } : {}),
        ...(opts.onceFile ? { onceFile: opts.onceFile } : {}),
      });
    this.audit = this.state.audit;
    this.once = this.state.once;
    this.blobs = this.state.blobs;
    this.limits = { ...DEFAULT_LIMITS, ...opts.limits };

    const settings = {} as Record<StageName, EffectiveStageSettings>;
    const queues = {} as Record<StageName, StageQueue>;
    const dlqs = {} as Record<StageName, StageQueue>;
    for (const stage of STAGES) {
      const def = STAGE_DEFINITIONS[stage];
      const s = stageSettings(stage, opts.stages?.[stage]);
      settings[stage] = s;
      dlqs[stage] = this.state.queue({ name: def.dlq, visibilityTimeoutSeconds: 30 });
      queues[stage] = this.state.queue({
        name: def.queue,
        visibilityTimeoutSeconds: s.visibilityTimeoutSeconds,
        maxReceiveCount: s.maxReceiveCount,
        dlq: dlqs[stage],
        onDeadLetter: (m) => this.#auditDeadLetter(stage, m),
      });
    }
    this.settings = settings;
    this.queues = queues;
    this.dlqs = dlqs;
    this.invocations = Object.fromEntries(STAGES.map((s) => [s, 0])) as Record<StageName, number>;

    const sender: QueueSender = {
      sendBatch: async (queue: QueueName, bodies: readonly string[]) => {
        // Joins the handler's unit of work: forwarded with the deletion of its source, or not at all.
        this.state.run(() => {
          for (const body of bodies) this.queues[queue].send(body);
        });
        return { failed: [] };
      },
      // The stages' forwards: stored like sendBatch's bodies, and the records themselves ride along
      // in memory to the next stage (lib/record.ts, "hand-off").
      sendRecords: async (queue: QueueName, records: readonly PipelineRecord[]) => {
        this.state.run(() => {
          for (const record of records) this.queues[queue].sendRecord(record);
        });
        for (const record of records) this.#forwarded.add(record.traceId);
        return { failed: [] };
      },
      // Accept means stored: resolves only once the record is committed.
      sendInbound: (body: string, attributes: Readonly<Record<string, string>>) =>
        this.#sendInbound(body, attributes),
    };
    this.#sideBySide = opts.pool !== undefined && opts.sideBySide !== false;
    this.ports = {
      keys: opts.keys,
      ...(opts.pool ? { cpu: opts.pool.cpu } : {}),
      queues: sender,
      once: this.once,
      blobs: this.blobs,
      deliverer: new FolderDeliverer(opts.baseDir),
      audit: this.audit,
      clock: this.clock,
      ...opts.ports,
    };
    const defaults = pipelineHandlers(() => ({ ports: this.ports, config: this.config }));
    this.#handlers =
      typeof opts.handlers === 'function' ? opts.handlers(defaults) : (opts.handlers ?? defaults);
    // A chained audit log signs its checkpoints with the gateway's response-signing key (docs/AUDIT.md).
    this.audit.useCheckpointSigner?.({ kid: this.config.doc.responseSigning.kid, keys: this.ports.keys });
  }

  /**
   * Submit through the same front door as the HTTP API. `onAccepted` runs in the same commit as
   * the inbound record (the `process` command ties its input file to the trace there).
   */
  submit(credential: string, sealed: string, onAccepted?: (traceId: string) => void): Promise<IngestResult> {
    const ports = onAccepted ? this.portsAccepting(onAccepted) : this.ports;
    return ingest(
      { authorization: `Bearer ${credential}`, body: sealed, receivedAt: this.clock.now(), source: 'cli' },
      ports,
      this.config,
    );
  }

  /**
   * This runtime's ports, with `onAccepted` run in the commit that stores an accepted inbound
   * record (serve charges the submission to its sender there).
   */
  portsAccepting(onAccepted: (traceId: string) => void): Ports {
    return {
      ...this.ports,
      queues: {
        ...this.ports.queues,
        sendInbound: (body: string, attributes: Readonly<Record<string, string>>) =>
          this.#sendInbound(body, attributes, onAccepted),
      },
    };
  }

  /** Direct SQS ingestion: the JWE as the body, the credential as the `Authorization` attribute. */
  submitRaw(sealed: string, authorization?: string, onAccepted?: (traceId: string) => void): string {
    this.#admit();
    return this.state.transact(() => {
      const id = this.queues.authenticate.send(sealed, authorization ? { Authorization: authorization } : {});
      onAccepted?.(id);
      return id;
    });
  }

  /** What is queued and not finished: the serve command answers 503 above the limits. */
  backlog(): { messages: number; bytes: number } {
    return this.state.backlog();
  }

  /** Whether a new submission would be refused (503) now. */
  overloaded(): boolean {
    const b = this.state.backlog();
    return b.messages >= this.limits.maxMessages || b.bytes >= this.limits.maxBytes;
  }

  /**
   * After a restart: every message that was in flight is visible again, so drain resumes every
   * trace that has no terminal outcome. Returns how many queued messages there are to finish.
   */
  resume(): number {
    return this.state.resume(this.clock.now());
  }

  /**
   * Stop draining at the next safe point: the running handler invocation finishes (or, if the
   * process is killed first, rolls back), waits for visibility timeouts end at once, and
   * everything not finished stays queued for the next start.
   */
  stop(): void {
    this.#stopping = true;
    this.#wake?.();
  }

  get stopping(): boolean {
    return this.#stopping;
  }

  async #sendInbound(
    body: string,
    attributes: Readonly<Record<string, string>>,
    onAccepted?: (traceId: string) => void,
  ): Promise<string> {
    this.#admit();
    return this.state.write(() => {
      const id = this.queues.authenticate.send(body, { ...attributes });
      const claimCheck = claimCheckKey(body);
      if (claimCheck) this.state.ownBlob(claimCheck, id);
      onAccepted?.(id);
      return id;
    });
  }

  #admit(): void {
    if (this.overloaded())
      throw new BacklogFullError('the pipeline holds as much work as it may; retry later');
  }

  /**
   * Run event-source polling until every queue is empty (or `maxRounds` polls). Returns the
   * number of handler invocations made.
   */
  async drain(opts: { maxRounds?: number; onProgress?: (done: number) => void } = {}): Promise<number> {
    const handlers = this.#handlers;
    const maxRounds = opts.maxRounds ?? 1_000_000;
    let invoked = 0;
    for (let round = 0; round < maxRounds && !this.#stopping; round += 1) {
      let progressed = false;
      /** This round's side-by-side invocations, started once every receive of the round is committed. */
      const sideBySide: (() => Promise<void>)[] = [];
      // Later stages first, so a long run keeps few records in flight.
      for (const stage of [...STAGES].reverse()) {
        if (this.#stopping) break;
        // The receive commits on its own: a crash during the handler still counts the attempt, so a
        // message that kills the process every time ends in the DLQ instead of looping.
        const batch = this.state.transact(() => this.queues[stage].receive(this.settings[stage].batchSize), {
          survivesCrashOnly: true,
        });
        this.#announce();
        if (batch.length === 0) continue;
        progressed = true;
        invoked += 1;
        // Side by side (with a pool), every receive of the round is committed before any handler
        // runs (an invocation holds the unit of work open, and a receive made while it is held
        // would join it); the invocations then share one unit of work, committed when the last one
        // ends. Deliver (first in this order) runs on its own: its writes leave the process (files,
        // MESH), so its unit of work commits as soon as it ends, as without the pool.
        if (this.#sideBySide && stage !== 'deliver') {
          sideBySide.push(() => this.#invoke(stage, batch, handlers[stage], { sharedUnit: true }));
          continue;
        }
        await this.#invoke(stage, batch, handlers[stage]);
        opts.onProgress?.(invoked);
      }
      if (sideBySide.length > 0) {
        // Every invocation ends (and releases its hold) before a failure is reported.
        const failure = (await Promise.allSettled(sideBySide.map((start) => start()))).find(
          (r) => r.status === 'rejected',
        );
        // Outcomes are told once committed, i.e. once the last invocation has released its hold.
        this.#announce();
        if (failure) throw failure.reason;
        opts.onProgress?.(invoked);
      }
      if (progressed) continue;
      const next = this.#nextVisibleAt();
      if (next === undefined) break;
      await this.#waitUntil(next);
    }
    await Promise.all(this.#pendingAudits);
    // Sign the head once the work is done, so a finished run leaves no unsigned tail.
    await this.audit.checkpoint?.().catch(() => false);
    return invoked;
  }

  /** Where a trace stands: its terminal outcome once it has one, else from its audit trail. */
  async outcome(traceId: string): Promise<MessageOutcome> {
    const stored = this.state.storedOutcome(traceId);
    if (stored) return stored;
    const entries = await this.audit.byTrace(traceId);
    return outcomeFromAudit(traceId, entries);
  }

  /** Records currently in any DLQ. */
  deadLetters(): { stage: StageName; message: QueuedMessage }[] {
    return STAGES.flatMap((stage) => this.dlqs[stage].peekAll().map((message) => ({ stage, message })));
  }

  /**
   * Move one DLQ message (or all of a stage's) back to its source queue. `by` names who asked
   * (e.g. `console`) in the operator's audit entry.
   */
  async redrive(stage: StageName, messageId?: string, by?: string): Promise<number> {
    const ids = messageId ? [messageId] : this.dlqs[stage].peekAll().map((m) => m.messageId);
    let moved = 0;
    for (const id of ids) {
      const m = this.state.transact(() => this.dlqs[stage].take(id));
      if (!m) continue;
      // Keep the original send time: the authenticate stage judges credentials at receipt time, and a
      // redrive is not a new receipt.
      this.state.transact(() => {
        this.queues[stage].send(m.body, m.attributes, m.messageId, m.sentAt);
        this.state.forgetOutcome(traceIdOf(m));
        void this.audit.append({
          traceId: traceIdOf(m),
          at: new Date(this.clock.now()).toISOString(),
          stage: 'operator',
          event: 'redriven',
          detail: by ? `back to ${stage} by ${by}` : `back to ${stage}`,
        });
      });
      this.onRedriven?.(traceIdOf(m));
      moved += 1;
    }
    return moved;
  }

  async #invoke(
    stage: StageName,
    batch: QueuedMessage[],
    handler: StageHandler,
    opts: { sharedUnit?: boolean } = {},
  ): Promise<void> {
    this.invocations[stage] += 1;
    const now = this.clock.now();
    const event: SQSEvent = {
      Records: batch.map((m) => {
        const sqsRecord = toSqsRecord(stage, m, now);
        if (m.record) handOverRecord(sqsRecord, m.record);
        return sqsRecord;
      }),
    };
    const context = lambdaContext(stage);
    let failed: Set<string>;
    let handlerError: string | undefined;
    // One unit of work per invocation: the handler's writes and the deletion of its batch commit
    // together (one commit per batch); a crash before the commit leaves the batch to be received again.
    this.state.hold();
    try {
      try {
        const response = await handler(event, context);
        failed = new Set((response?.batchItemFailures ?? []).map((f) => f.itemIdentifier));
      } catch (error) {
        // A handler that throws fails the whole batch, as in Lambda.
        failed = new Set(batch.map((m) => m.messageId));
        handlerError = `handler error: ${(error as Error).name}`;
      }
      for (const m of batch) {
        const forwarded = stage !== 'deliver' && this.#forwarded.delete(traceIdOf(m));
        if (failed.has(m.messageId)) {
          this.queues[stage].noteFailure(m.messageId, handlerError ?? (await this.#lastFailure(m, stage)));
        } else {
          this.queues[stage].delete(m.messageId, m.receiptHandle!);
          if (stage === 'deliver') await this.#finish(traceIdOf(m));
          // Not forwarded: the trace may have ended here, refused without an answer.
          else if (!forwarded && (stage === 'authenticate' || stage === 'authorise')) {
            await this.#finishIfUnanswered(traceIdOf(m), stage);
          }
        }
      }
    } finally {
      this.state.release();
    }
    // In a side-by-side round's shared unit of work, nothing is committed yet: the round tells the
    // outcomes once the last invocation has released it. On its own (deliver always), now.
    if (!opts.sharedUnit) this.#announce();
  }

  /** A trace ended (it left deliver, or was refused unanswered): record its outcome, drop its blobs. */
  async #finish(traceId: string): Promise<void> {
    const outcome = outcomeFromAudit(traceId, await this.audit.byTrace(traceId));
    if (outcome.status === 'in-flight' || outcome.status === 'dead-lettered') return;
    const stored = terminal(outcome);
    this.state.recordOutcome(stored);
    this.state.releaseTrace(traceId);
    this.#finished.push(stored);
  }

  /**
   * A rejection that is not answered ends at the stage that made it: no response job goes to
   * deliver (nothing is signed or stored), so its outcome is terminal here. Such are authenticate's
   * refusals of a sender never authenticated and authorise's of a delegate the organisation has not
   * granted (lib/stages/batch.ts, `rejectionAnswered`); their audit entry is the one without a sender.
   */
  async #finishIfUnanswered(traceId: string, stage: StageName): Promise<void> {
    const entries = await this.audit.byTrace(traceId);
    if (entries.some((e) => e.event === 'rejected' && e.stage === stage && !e.sender)) {
      await this.#finish(traceId);
    }
  }

  /** Tell the listener about outcomes that are now committed. */
  #announce(): void {
    if (this.#finished.length === 0) return;
    const done = this.#finished;
    this.#finished = [];
    for (const o of done) this.onOutcome?.(o);
  }

  async #lastFailure(m: QueuedMessage, stage: StageName): Promise<string> {
    const entries = await this.audit.byTrace(traceIdOf(m));
    const last = entries.filter((e) => e.event === 'transient-failure' && e.stage === stage).at(-1);
    return last?.code ?? 'unknown';
  }

  #auditDeadLetter(stage: StageName, m: QueuedMessage): void {
    const traceId = traceIdOf(m);
    const reason = m.deadLetter?.reason ?? 'unknown';
    this.#pendingAudits.push(
      this.audit.append({
        traceId,
        at: new Date(this.clock.now()).toISOString(),
        stage,
        event: 'dead-lettered',
        code: reason,
        detail: `after ${this.settings[stage].maxReceiveCount} receives`,
      }),
    );
    // Terminal until an operator redrives it; its blobs stay, the redrive needs them.
    const outcome: StoredOutcome = { traceId, status: 'dead-lettered', stage, code: reason };
    this.state.recordOutcome(outcome);
    this.#finished.push(outcome);
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
    // A stop ends the wait at once: waiting out a visibility timeout parks nothing more safely.
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, Math.min(ms, 1000));
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#wake = done;
    });
    this.#wake = undefined;
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

function terminal(o: MessageOutcome): StoredOutcome {
  return {
    traceId: o.traceId,
    status: o.status as StoredOutcome['status'],
    ...(o.stage ? { stage: o.stage } : {}),
    ...(o.itk3Code ? { itk3Code: o.itk3Code } : {}),
    ...(o.code ? { code: o.code } : {}),
    ...(o.messageId ? { messageId: o.messageId } : {}),
  };
}

/** The blob key of an inbound claim-check body (`{"claimCheck": {"key": …}}`), if it is one. */
function claimCheckKey(body: string): string | undefined {
  if (!body.startsWith('{"claimCheck"')) return undefined;
  try {
    const key = (JSON.parse(body) as { claimCheck?: { key?: unknown } }).claimCheck?.key;
    return typeof key === 'string' ? key : undefined;
  } catch {
    return undefined;
  }
}

function traceIdOf(m: QueuedMessage): string {
  if (m.record) return m.record.traceId;
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
  const record: SQSRecord = {
    messageId: m.messageId,
    receiptHandle: m.receiptHandle!,
    body: '',
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
  // A handed-over record's body is read only if someone asks (the stage reads the record).
  if (m.record) lazyBody(record, () => m.body);
  else record.body = m.body;
  return record;
}

/**
 * The five stage handlers over one set of ports: each stage value (lib/pipeline/stages.ts) composed
 * with the batch step and the middy middlewares, exactly as functions/<stage>.ts composes it for
 * Lambda — only the ports differ.
 */
export function pipelineHandlers(provide: BindingProvider): Record<StageName, StageHandler> {
  const handlers = {} as Record<StageName, StageHandler>;
  for (const stage of STAGES) handlers[stage] = composeStageHandler(PIPELINE_STAGES[stage], provide);
  return handlers;
}
