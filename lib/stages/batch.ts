/**
 * One SQS batch through one stage: the code every stage handler shares (deployed and embedded).
 *
 * Records are processed concurrently (Powertools BatchProcessor). Each record ends in exactly one
 * of three ways: forwarded to the next stage, turned into a rejection for the deliver stage (a
 * permanent failure: audited, answered with its ITK3 code), or reported as a batch item failure
 * (transient: SQS retries it and, after maxReceiveCount, dead-letters it). Forwarding is one
 * SendMessageBatch per destination for the whole batch; a record whose forward failed is reported
 * as failed too, so nothing is lost between queues.
 */
import { BatchProcessor, EventType } from '@aws-lambda-powertools/batch';
import type { Context, SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import { classify, RejectionError, TransientError } from '../errors.js';
import { NEXT_STAGE, type QueueName, REJECTIONS_TO, type StageName } from '../pipeline/topology.js';
import type { AuditEntry } from '../ports/index.js';
import {
  type PipelineRecord,
  parseRecord,
  RECORD_VERSION,
  serialiseRecord,
  takeHandedOverRecord,
} from '../record.js';
import { claimCheckKeys, removeClaimChecks } from './claim-check.js';
import type { BatchPortName, PortName, Stage, StageContext } from './stage.js';

type RecordResult = 'forwarded' | 'rejected' | 'delivered' | 'responded' | 'transient';

/** Told about every record's result; the handler turns these into metrics and log lines. */
export interface StageObserver {
  record(event: {
    stage: StageName;
    traceId: string;
    result: RecordResult;
    code?: string;
    itk3Code?: string;
    receiveCount: number;
  }): void;
}

interface Output {
  queue: QueueName;
  record: PipelineRecord;
  /** Runs once the forward succeeded (a rejection is audited and counted once, not per attempt). */
  afterForward?: () => Promise<void>;
}

type BatchContext = StageContext<BatchPortName>;

/** Process one SQS event through `stage`, returning the partial batch response. */
export async function processStageBatch<P extends PortName>(
  stage: Stage<P>,
  event: SQSEvent,
  ctx: StageContext<P | BatchPortName>,
  observer: StageObserver,
  lambdaContext?: Context,
): Promise<SQSBatchResponse> {
  const processor = new BatchProcessor(EventType.SQS);
  const outputs = new Map<string, Output>();
  processor.register(
    event.Records,
    async (sqsRecord: SQSRecord) => {
      const output = await processRecord(stage, sqsRecord, ctx, observer);
      if (output) outputs.set(sqsRecord.messageId, output);
    },
    { throwOnFullBatchFailure: false, ...(lambdaContext ? { context: lambdaContext } : {}) },
  );
  const processed = await processor.process();

  const failed = new Set<string>();
  for (const [status, , record] of processed) {
    if (status === 'fail') failed.add((record as SQSRecord).messageId);
  }

  // One batched send per destination queue.
  const byQueue = new Map<QueueName, { ids: string[]; records: PipelineRecord[] }>();
  for (const [messageId, output] of outputs) {
    const group = byQueue.get(output.queue) ?? { ids: [], records: [] };
    group.ids.push(messageId);
    group.records.push(output.record);
    byQueue.set(output.queue, group);
  }
  const queues = ctx.ports.queues;
  for (const [queue, group] of byQueue) {
    try {
      // An in-process transport takes the records as they are (it stores their serialisation).
      const { failed: failedIndexes } = queues.sendRecords
        ? await queues.sendRecords(queue, group.records)
        : await queues.sendBatch(queue, group.records.map(serialiseRecord));
      for (const i of failedIndexes) failed.add(group.ids[i]!);
    } catch {
      for (const id of group.ids) failed.add(id);
    }
  }
  for (const [messageId, output] of outputs) {
    if (!output.afterForward || failed.has(messageId)) continue;
    try {
      await output.afterForward();
    } catch {
      // The rejection is on its way to deliver but not yet audited: retry the record (deliver's
      // response names are idempotent, so a second forward has one effect).
      failed.add(messageId);
    }
  }

  return { batchItemFailures: [...failed].map((itemIdentifier) => ({ itemIdentifier })) };
}

async function processRecord<P extends PortName>(
  stage: Stage<P>,
  sqsRecord: SQSRecord,
  ctx: StageContext<P | BatchPortName>,
  observer: StageObserver,
): Promise<Output | undefined> {
  const receiveCount = Number(sqsRecord.attributes?.ApproximateReceiveCount ?? '1');
  const name = stage.name;
  let record: PipelineRecord | undefined;
  try {
    // A record this process forwarded comes as an object beside its body (the embedded runtime's
    // hand-off); anything else, e.g. a body read back after a restart, is parsed and validated.
    record = stage.decode
      ? stage.decode(sqsRecord)
      : (takeHandedOverRecord(sqsRecord) ?? parseRecord(sqsRecord.body));
    const result = await stage.run(record, ctx, sqsRecord.messageId);
    // An authenticated submission's `received` entry is written with its first outcome (auditOnce),
    // not here: one write per trace fewer. Anonymous traffic gets one entry in all, its rejection.
    if (result.kind === 'forward') {
      observer.record({ stage: name, traceId: record.traceId, result: 'forwarded', receiveCount });
      return { queue: NEXT_STAGE[name]!, record: result.record };
    }
    let outcome: RecordResult | 'reprocessed' = 'reprocessed';
    if (result.kind === 'end') {
      const first = result.audit.length > 0 && (await auditOnce(ctx, result.audit, record));
      // The trace has ended: its claim-check blobs are no longer needed.
      await removeClaimChecks(ctx, claimCheckKeys(record));
      if (first && result.outcome !== 'reprocessed') outcome = result.outcome;
    }
    // A reprocessed record's outcome was counted when it first happened.
    if (outcome !== 'reprocessed') {
      observer.record({ stage: name, traceId: record.traceId, result: outcome, receiveCount });
    }
    return undefined;
  } catch (error) {
    const classified = classify(error);
    const traceId = record?.traceId ?? sqsRecord.messageId;
    if (classified instanceof RejectionError && name !== REJECTIONS_TO) {
      const rejected = rejectionRecord(name, record, sqsRecord, classified);
      if (!rejected.rejection?.respondTo) {
        // The sender is not authenticated: no response job, so nothing is signed or stored for it.
        // One audit entry, one count, and its claim-check blob removed: that is all.
        const first = await auditFirst(ctx, {
          traceId,
          stage: name,
          event: 'rejected',
          code: classified.code,
          itk3Code: classified.itk3Code,
        });
        await removeClaimChecks(ctx, claimCheckKeys(record));
        if (first) {
          observer.record({
            stage: name,
            traceId,
            result: 'rejected',
            code: classified.code,
            itk3Code: classified.itk3Code,
            receiveCount,
          });
        }
        return undefined;
      }
      const afterForward = async () => {
        const first = await auditOnce(
          ctx,
          [
            {
              traceId,
              stage: name,
              event: 'rejected',
              code: classified.code,
              itk3Code: classified.itk3Code,
              ...(rejected.rejection?.originalMessageId
                ? { messageId: rejected.rejection.originalMessageId }
                : {}),
              ...(record?.principal ? { sender: record.principal.organisation } : {}),
              ...(record?.decision
                ? { recipient: record.decision.recipient, ruleId: record.decision.ruleId }
                : {}),
            },
          ],
          record,
        );
        if (!first) return;
        observer.record({
          stage: name,
          traceId,
          result: 'rejected',
          code: classified.code,
          itk3Code: classified.itk3Code,
          receiveCount,
        });
      };
      return { queue: REJECTIONS_TO, record: rejected, afterForward };
    }
    // Transient (or a permanent failure inside deliver, which has nowhere else to go): retry, then DLQ.
    observer.record({ stage: name, traceId, result: 'transient', code: classified.code, receiveCount });
    await audit(ctx, {
      traceId,
      stage: name,
      event: 'transient-failure',
      code: classified.code,
      detail: `attempt ${receiveCount}`,
    }).catch(() => undefined);
    throw classified;
  }
}

/**
 * Append one audit entry once per trace, however often the record is redelivered: one conditional
 * write (the entry and its marker are one item). Returns whether this call wrote it.
 */
async function auditFirst(ctx: BatchContext, entry: Omit<AuditEntry, 'at'>): Promise<boolean> {
  return auditOnce(ctx, [entry]);
}

/**
 * Append a stage's outcome events once per trace, however often SQS hands the record over (a crash
 * between forward and delete, a visibility timeout overrun): the marker (the first event's stage
 * and event) and the events are one atomic write (AuditLog.appendOnce), so a redelivery writes
 * nothing and no run can leave the marker without its events. The first outcome of an
 * authenticated submission also carries its `received` entry, timed at receipt. Returns whether
 * this call was the first to record it.
 */
async function auditOnce(
  ctx: BatchContext,
  entries: readonly Omit<AuditEntry, 'at'>[],
  record?: PipelineRecord,
): Promise<boolean> {
  const head = entries[0]!;
  const at = new Date(ctx.ports.clock.now()).toISOString();
  const received: AuditEntry[] =
    record?.principal && !record.rejection
      ? [
          {
            traceId: head.traceId,
            at: new Date(record.receivedAt).toISOString(),
            stage: 'authenticate',
            event: 'received',
          },
        ]
      : [];
  try {
    return await ctx.ports.audit.appendOnce(`${head.stage}#${head.event}`, [
      ...received,
      ...entries.map((entry) => ({ ...entry, at })),
    ]);
  } catch (cause) {
    if (cause instanceof TransientError) throw cause;
    throw new TransientError('AUDIT_UNAVAILABLE', 'audit log unavailable', { cause });
  }
}

/** Refusals of an actor acting for an organisation without a current grant from it. */
const UNGRANTED_DELEGATE: ReadonlySet<string> = new Set([
  'DELEGATION_NOT_GRANTED',
  'DELEGATION_GRANT_EXPIRED',
]);

/**
 * Whether a rejection is answered with a signed ITK3 response: not before the sender is
 * authenticated (nothing for free to the unauthenticated), and not in the name of an organisation
 * whose delegate it has not granted (its responses carry only what it or its granted delegates sent).
 */
export function rejectionAnswered(stage: string, code: string): boolean {
  return stage !== 'authenticate' && !UNGRANTED_DELEGATE.has(code);
}

function rejectionRecord(
  stage: StageName,
  record: PipelineRecord | undefined,
  sqsRecord: SQSRecord,
  error: RejectionError,
): PipelineRecord {
  const base: PipelineRecord = record ?? {
    v: RECORD_VERSION,
    traceId: sqsRecord.messageId,
    receivedAt: Number(sqsRecord.attributes?.SentTimestamp ?? Date.now()),
    source: 'sqs',
  };
  // Only an authenticated sender gets a response addressed to it; detail never leaves the audit.
  // A delegate the organisation has not (or no longer) granted is not answered in its name: the
  // organisation's responses carry only what it or its granted delegates sent.
  const respondTo = UNGRANTED_DELEGATE.has(error.code) ? undefined : base.principal?.organisation;
  const hints = error.responseHints ?? {};
  const claimChecks = claimCheckKeys(record);
  // The claimed itk.id is never echoed: before the sender's signature is verified nothing in the
  // message is the sender's word, so the response says UNREADABLE-IN-ORIGINAL-MESSAGE (issue 9).
  const originalMessageId = hints.originalMessageId;
  return {
    v: RECORD_VERSION,
    traceId: base.traceId,
    receivedAt: base.receivedAt,
    source: base.source,
    // A MESH sender is answered through MESH, to its mailbox, with the response workflow.
    ...(base.mesh ? { mesh: base.mesh } : {}),
    ...(base.principal ? { principal: base.principal } : {}),
    ...(base.routing ? { routing: base.routing } : {}),
    ...(base.decision ? { decision: base.decision } : {}),
    rejection: {
      stage,
      code: error.code,
      itk3Code: error.itk3Code,
      ...(respondTo ? { respondTo } : {}),
      ...(originalMessageId ? { originalMessageId } : {}),
      ...(hints.format ? { format: hints.format } : {}),
      ...(hints.senderReference ? { senderReference: hints.senderReference } : {}),
    },
    // Removed by deliver once the response is out, the trace's end.
    ...(claimChecks.length > 0 ? { claimChecks } : {}),
  };
}

async function audit(ctx: BatchContext, entry: Omit<AuditEntry, 'at'>): Promise<void> {
  await ctx.ports.audit.append({ ...entry, at: new Date(ctx.ports.clock.now()).toISOString() });
}
