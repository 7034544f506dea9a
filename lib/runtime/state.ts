/**
 * Where the embedded runtime keeps its state: the stage queues and DLQs, the once-store, the audit
 * trail, claim-check blobs and terminal outcomes.
 *
 * Two implementations: {@link memoryState} (everything in the process; unit tests and the
 * in-memory benchmark baseline) and the SQLite state (lib/adapters/local/sqlite-state.ts: one file,
 * survives a crash), chosen by the composition root. The runtime is written against this interface
 * only.
 *
 * Writes are grouped into units of work: everything a handler invocation writes (its once-store
 * entries, audit events, forwarded records and the deletion of its batch) commits together, so a
 * crash leaves either all of it or none of it.
 */

import { MemoryAuditLog, MemoryBlobStore, MemoryOnceStore } from '../adapters/local/memory-stores.js';
import type { CheckpointSigner } from '../audit/chain.js';
import type { AuditEntry, AuditLog, BlobStore, Clock, OnceStore } from '../ports/index.js';
import type { PipelineRecord } from '../record.js';
import { MemoryQueue, type QueuedMessage, type QueueSettings } from './memory-queue.js';

/** The event-source view of one queue (SQS semantics; see lib/runtime/memory-queue.ts). */
export interface StageQueue {
  readonly name: string;
  send(body: string, attributes?: Record<string, string>, messageId?: string, sentAt?: number): string;
  /**
   * Send a pipeline record this process produced: its serialisation is stored as the body, as by
   * {@link send}, and the record itself rides along in memory to the message's first receive in
   * this process ({@link QueuedMessage.record}), so the next stage need not parse the body again.
   */
  sendRecord(record: PipelineRecord): string;
  /** Put a message back exactly as it was (used when moving between a queue and its DLQ). */
  enqueue(message: QueuedMessage): void;
  receive(max: number): QueuedMessage[];
  delete(messageId: string, receiptHandle: string): boolean;
  noteFailure(messageId: string, reason: string): void;
  take(messageId: string): QueuedMessage | undefined;
  peekAll(): QueuedMessage[];
  readonly depth: number;
  nextVisibleAt(): number | undefined;
}

/** An audit log the runtime and its tests can also list. */
export interface InspectableAuditLog extends AuditLog {
  all(): AuditEntry[];
  traces(): string[];
  readonly count: number;
  /** Chained logs (the SQLite state): sign checkpoints with this key (docs/AUDIT.md). */
  useCheckpointSigner?(signer: CheckpointSigner): void;
  /** Chained logs: sign and file a checkpoint of the current head now. */
  checkpoint?(): Promise<boolean>;
}

type TerminalStatus = 'delivered' | 'rejected' | 'dead-lettered';

export interface StoredOutcome {
  traceId: string;
  status: TerminalStatus;
  stage?: string;
  itk3Code?: string;
  code?: string;
  messageId?: string;
}

/** How much work is queued and not yet finished (DLQs excluded: they are parked, not pending). */
export interface Backlog {
  messages: number;
  bytes: number;
}

export interface RuntimeState {
  /** True when the state survives the process (the SQLite state). */
  readonly durable: boolean;
  readonly audit: InspectableAuditLog;
  readonly once: OnceStore;
  readonly blobs: BlobStore;
  /** The queue (or DLQ) of this name, created on first use. */
  queue(settings: QueueSettings): StageQueue;
  /** Run `fn` inside the current unit of work (opening one if none); it commits soon, unawaited. */
  run<T>(fn: () => T): T;
  /** Run `fn` and resolve once it is committed (durable, for the SQLite state). */
  write<T>(fn: () => T): Promise<T>;
  /**
   * Run `fn` and commit now, unless a unit of work is held open (then it joins it).
   * `survivesCrashOnly`: the commit must survive a crash of the process, not necessarily a power
   * loss (the SQLite state may then skip its fsync).
   */
  transact<T>(fn: () => T, opts?: { survivesCrashOnly?: boolean }): T;
  /** Hold one unit of work open (one handler invocation) until {@link release}. */
  hold(): void;
  /** Commit the held unit of work; throws when the state cannot be written. */
  release(): void;
  backlog(): Backlog;
  /**
   * Every queued message that was in flight when the process died becomes visible now. Returns how
   * many messages are queued (work without a terminal outcome, picked up by the next drain).
   */
  resume(now: number): number;
  recordOutcome(outcome: StoredOutcome): void;
  storedOutcome(traceId: string): StoredOutcome | undefined;
  forgetOutcome(traceId: string): void;
  /** Blob `key` belongs to `traceId` (its inbound claim check), so it goes when the trace ends. */
  ownBlob(key: string, traceId: string): void;
  /** The trace has ended for good: remove its claim-check blobs. */
  releaseTrace(traceId: string): void;
  close(): void;
}

/** All state in this process. For unit tests and the in-memory baseline; lost when it exits. */
export function memoryState(
  clock: Clock,
  opts: { auditFile?: string; onceFile?: string } = {},
): RuntimeState {
  const audit = new MemoryAuditLog(opts.auditFile ? { file: opts.auditFile } : {});
  const once = new MemoryOnceStore(clock, opts.onceFile ? { file: opts.onceFile } : {});
  const blobs = new MemoryBlobStore();
  const queues = new Map<string, MemoryQueue>();
  const outcomes = new Map<string, StoredOutcome>();
  return {
    durable: false,
    audit,
    once,
    blobs,
    queue(settings) {
      let q = queues.get(settings.name);
      if (!q) {
        q = new MemoryQueue(settings, clock);
        queues.set(settings.name, q);
      }
      return q;
    },
    run: (fn) => fn(),
    write: async (fn) => fn(),
    transact: (fn) => fn(),
    hold: () => undefined,
    release: () => undefined,
    backlog() {
      let messages = 0;
      let bytes = 0;
      for (const q of queues.values()) {
        if (!q.settings.dlq) continue; // DLQs have no DLQ of their own
        for (const m of q.peekAll()) {
          messages += 1;
          bytes += Buffer.byteLength(m.body, 'utf8');
        }
      }
      return { messages, bytes: bytes + blobs.bytes };
    },
    resume: () => 0,
    recordOutcome: (o) => {
      outcomes.set(o.traceId, o);
    },
    storedOutcome: (traceId) => outcomes.get(traceId),
    forgetOutcome: (traceId) => {
      outcomes.delete(traceId);
    },
    ownBlob: (key, traceId) => blobs.own(key, traceId),
    releaseTrace: (traceId) => blobs.deleteTrace(traceId),
    close: () => undefined,
  };
}
