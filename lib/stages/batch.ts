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
import * as z from 'zod';
import { AuthenticationError, classify, RejectionError, TransientError } from '../errors.js';
import { MESH_ATTESTATION_ATTRIBUTE, meshFactsFrom } from '../mesh/attestation.js';
import type { AuditEntry, QueueName, StageName } from '../ports/index.js';
import { NEXT_STAGE, type PipelineRecord, parseRecord, RECORD_VERSION, serialiseRecord } from '../record.js';
import { authenticate } from './authenticate.js';
import { authoriseStage } from './authorise.js';
import { claimCheckKeys, removeClaimChecks, type StageContext } from './context.js';
import { decryptStage } from './decrypt.js';
import { type DeliverOutcome, deliverStage } from './deliver.js';
import { verifyStage } from './verify.js';

export type RecordResult = 'forwarded' | 'rejected' | 'delivered' | 'responded' | 'transient';

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
  body: string;
  /** Runs once the forward succeeded (a rejection is audited and counted once, not per attempt). */
  afterForward?: () => Promise<void>;
}

// The auth-scheme is case-insensitive (RFC 7235 §2.1).
const BEARER = /^Bearer +([A-Za-z0-9._~+/-]+=*)$/i;

/** Process one SQS event for `stage`, returning the partial batch response. */
export async function processStageBatch(
  stage: StageName,
  event: SQSEvent,
  ctx: StageContext,
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
  const byQueue = new Map<QueueName, { ids: string[]; bodies: string[] }>();
  for (const [messageId, output] of outputs) {
    const group = byQueue.get(output.queue) ?? { ids: [], bodies: [] };
    group.ids.push(messageId);
    group.bodies.push(output.body);
    byQueue.set(output.queue, group);
  }
  for (const [queue, group] of byQueue) {
    try {
      const { failed: failedIndexes } = await ctx.ports.queues.sendBatch(queue, group.bodies);
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

async function processRecord(
  stage: StageName,
  sqsRecord: SQSRecord,
  ctx: StageContext,
  observer: StageObserver,
): Promise<Output | undefined> {
  const receiveCount = Number(sqsRecord.attributes?.ApproximateReceiveCount ?? '1');
  let record: PipelineRecord | undefined;
  try {
    record = stage === 'authenticate' ? recordFromIngress(sqsRecord) : parseRecord(sqsRecord.body);
    const result = await runStage(stage, record, sqsRecord.messageId, ctx);
    // An authenticated submission's `received` entry is written with its outcome (auditOnce), not
    // here: one write per trace fewer. Anonymous traffic gets one entry in all, its rejection.
    if (result.kind === 'forward') {
      observer.record({ stage, traceId: record.traceId, result: 'forwarded', receiveCount });
      return { queue: NEXT_STAGE[stage]!, body: serialiseRecord(result.record) };
    }
    // A reprocessed record's outcome was counted when it first happened.
    if (result.kind !== 'reprocessed') {
      observer.record({ stage, traceId: record.traceId, result: result.kind, receiveCount });
    }
    return undefined;
  } catch (error) {
    const classified = classify(error);
    const traceId = record?.traceId ?? sqsRecord.messageId;
    if (classified instanceof RejectionError && stage !== 'deliver') {
      const rejected = rejectionRecord(stage, record, sqsRecord, classified);
      if (!rejected.rejection?.respondTo) {
        // The sender is not authenticated: no response job, so nothing is signed or stored for it.
        // One audit entry, one count, and its claim-check blob removed: that is all.
        const first = await auditFirst(ctx, {
          traceId,
          stage,
          event: 'rejected',
          code: classified.code,
          itk3Code: classified.itk3Code,
        });
        await removeClaimChecks(ctx, claimCheckKeys(record));
        if (first) {
          observer.record({
            stage,
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
              stage,
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
          stage,
          traceId,
          result: 'rejected',
          code: classified.code,
          itk3Code: classified.itk3Code,
          receiveCount,
        });
      };
      return { queue: 'deliver', body: serialiseRecord(rejected), afterForward };
    }
    // Transient (or a permanent failure inside deliver, which has nowhere else to go): retry, then DLQ.
    observer.record({ stage, traceId, result: 'transient', code: classified.code, receiveCount });
    await audit(ctx, {
      traceId,
      stage,
      event: 'transient-failure',
      code: classified.code,
      detail: `attempt ${receiveCount}`,
    }).catch(() => undefined);
    throw classified;
  }
}

type StageResult =
  | { kind: 'forward'; record: PipelineRecord }
  | { kind: 'delivered' }
  | { kind: 'responded' }
  /** The outcome was already recorded by an earlier run of the same record. */
  | { kind: 'reprocessed' };

async function runStage(
  stage: StageName,
  record: PipelineRecord,
  inboundMessageId: string,
  ctx: StageContext,
): Promise<StageResult> {
  switch (stage) {
    case 'authenticate':
      return { kind: 'forward', record: await authenticate({ record, inboundMessageId }, ctx) };
    case 'authorise':
      return { kind: 'forward', record: await authoriseStage(record, ctx) };
    case 'decrypt':
      return { kind: 'forward', record: await decryptStage(record, ctx) };
    case 'verify':
      return { kind: 'forward', record: await verifyStage(record, ctx) };
    case 'deliver': {
      const outcome = await deliverOrReprocessed(record, ctx);
      if (outcome === 'reprocessed') return { kind: 'reprocessed' };
      if (outcome.kind === 'unanswered') {
        // A rejection of an unauthenticated sender queued before this version: the rejecting
        // stage audited it; nothing is signed for it.
        await removeClaimChecks(ctx, claimCheckKeys(record));
        return { kind: 'reprocessed' };
      }
      if (outcome.kind === 'delivered') {
        const m = record.message!;
        const first = await auditOnce(
          ctx,
          [
            {
              traceId: record.traceId,
              stage,
              event: 'delivered',
              messageId: m.messageId,
              sender: m.sender,
              recipient: m.recipient,
              ...(record.decision ? { ruleId: record.decision.ruleId } : {}),
            },
            ...(outcome.response
              ? [
                  {
                    traceId: record.traceId,
                    stage,
                    event: 'response-sent' as const,
                    itk3Code: '20013',
                    messageId: m.messageId,
                  },
                ]
              : []),
          ],
          record,
        );
        // The trace has ended: its claim-check blobs are no longer needed.
        await removeClaimChecks(ctx, claimCheckKeys(record));
        return { kind: first ? 'delivered' : 'reprocessed' };
      }
      const first = await auditOnce(ctx, [
        {
          traceId: record.traceId,
          stage,
          event: 'response-sent',
          code: record.rejection!.code,
          itk3Code: record.rejection!.itk3Code,
          ...(record.rejection!.respondTo ? { sender: record.rejection!.respondTo } : {}),
        },
      ]);
      await removeClaimChecks(ctx, claimCheckKeys(record));
      return { kind: first ? 'responded' : 'reprocessed' };
    }
  }
}

/**
 * Deliver, or recognise a redelivery of a record whose trace already ended: its claim-check blobs
 * were removed after the outcome was audited, so a missing blob with a `delivered` entry in the
 * audit means there is nothing left to do (the audit read happens only on that rare path).
 */
async function deliverOrReprocessed(
  record: PipelineRecord,
  ctx: StageContext,
): Promise<DeliverOutcome | 'reprocessed'> {
  try {
    return await deliverStage(record, ctx);
  } catch (error) {
    if (error instanceof TransientError && error.code === 'BLOB_STORE_UNAVAILABLE') {
      const trail = await ctx.ports.audit.byTrace(record.traceId);
      if (trail.some((e) => e.stage === 'deliver' && e.event === 'delivered')) return 'reprocessed';
    }
    throw error;
  }
}

/**
 * Append one audit entry once per trace, however often the record is redelivered: one conditional
 * write (the entry and its marker are one item). Returns whether this call wrote it.
 */
async function auditFirst(ctx: StageContext, entry: Omit<AuditEntry, 'at'>): Promise<boolean> {
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
  ctx: StageContext,
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

/** The only JSON body the inbound queue accepts: a claim-check reference to a large envelope. */
const InboundClaimCheckSchema = z
  .object({
    claimCheck: z
      .object({
        // Only a key the front door makes (a random id per submission): a writer cannot point the
        // pipeline at another trace's artefacts, to read them or to have them removed.
        key: z.string().regex(/^claim-check\/ingest-[0-9a-f-]{36}\/sealed\.jwe$/),
        bytes: z.number().int().positive(),
        sha256: z.string().regex(/^[0-9a-f]{64}$/),
      })
      .strict(),
  })
  .strict();

/**
 * The inbound queue has one format, whoever writes to it (the ingest function or a sender using
 * direct SQS ingestion): the body is the compact JWE, or a claim-check reference to it; the
 * credential is the `Authorization` message attribute (`Bearer <jwt>`). The trace id is the SQS
 * message id and the receipt time the queue's SentTimestamp — facts the queue assigns, so no writer
 * can choose a trace id, reuse another message's, or backdate its receipt.
 */
export function recordFromIngress(sqsRecord: SQSRecord): PipelineRecord {
  const base = {
    v: RECORD_VERSION,
    traceId: sqsRecord.messageId,
    receivedAt: Number(sqsRecord.attributes?.SentTimestamp ?? Date.now()),
    source: ingressOf(sqsRecord),
  } satisfies Partial<PipelineRecord>;
  // A `Transport` attribute claims MESH: the message is judged only as MESH (its attestation is
  // checked at authenticate), never as a sealed submission with the claim ignored.
  if (sqsRecord.messageAttributes?.Transport !== undefined) return meshRecordFromIngress(sqsRecord, base);
  const header = sqsRecord.messageAttributes?.Authorization?.stringValue ?? '';
  const credential = BEARER.exec(header)?.[1];
  let sealed: PipelineRecord['sealed'];
  if (sqsRecord.body.startsWith('{')) {
    let json: unknown;
    try {
      json = JSON.parse(sqsRecord.body);
    } catch (cause) {
      throw new RejectionError(
        'ENVELOPE_MALFORMED',
        'inbound body is neither a compact JWE nor a claim check',
        { cause },
      );
    }
    const parsed = InboundClaimCheckSchema.safeParse(json);
    if (!parsed.success && json !== null && typeof json === 'object' && 'ciphertext' in json) {
      throw new RejectionError(
        'ENVELOPE_MALFORMED',
        'inbound body is a JSON-serialised JWE: send the compact serialisation',
      );
    }
    if (!parsed.success) {
      throw new RejectionError(
        'ENVELOPE_MALFORMED',
        'inbound body is neither a compact JWE nor a claim check',
      );
    }
    sealed = { ref: parsed.data.claimCheck };
  } else {
    sealed = { inline: sqsRecord.body };
  }
  return { ...base, ...(credential ? { credential } : {}), sealed };
}

/** The claim-check reference the MESH poller writes for a large MESH body (lib/mesh/poller.ts). */
const MeshClaimCheckSchema = z
  .object({
    claimCheck: z
      .object({
        key: z.string().regex(/^claim-check\/mesh-[0-9a-f]{32}\/mesh-body$/),
        bytes: z.number().int().positive(),
        sha256: z.string().regex(/^[0-9a-f]{64}$/),
      })
      .strict(),
  })
  .strict();

/**
 * A message the MESH poller enqueued: its MESH facts from the attributes, its body (the text, or a
 * claim check), and the poller's attestation, verified at authenticate. Missing or malformed MESH
 * attributes are an unauthenticated submission.
 */
function meshRecordFromIngress(
  sqsRecord: SQSRecord,
  base: Pick<PipelineRecord, 'v' | 'traceId' | 'receivedAt'>,
): PipelineRecord {
  const attributes: Record<string, string | undefined> = {};
  for (const [name, value] of Object.entries(sqsRecord.messageAttributes ?? {})) {
    attributes[name] = value.stringValue;
  }
  const facts = attributes.Transport === 'mesh' ? meshFactsFrom(attributes, sqsRecord.body) : undefined;
  if (!facts) {
    throw new AuthenticationError(
      'MESH_ATTESTATION_INVALID',
      'MESH transport attributes are missing or malformed',
    );
  }
  let meshBody: PipelineRecord['meshBody'];
  if (sqsRecord.body.startsWith('{"claimCheck"')) {
    let json: unknown;
    try {
      json = JSON.parse(sqsRecord.body);
    } catch {
      json = undefined;
    }
    const parsed = MeshClaimCheckSchema.safeParse(json);
    meshBody = parsed.success ? { ref: parsed.data.claimCheck } : { inline: sqsRecord.body };
  } else {
    meshBody = { inline: sqsRecord.body };
  }
  const attestation = attributes[MESH_ATTESTATION_ATTRIBUTE];
  return {
    ...base,
    source: 'mesh',
    mesh: facts,
    ...(attestation ? { meshAttestation: attestation.slice(0, 4096) } : {}),
    meshBody,
  };
}

/** Informational only (an attribute any writer can set): never used for a decision. */
function ingressOf(sqsRecord: SQSRecord): PipelineRecord['source'] {
  const value = sqsRecord.messageAttributes?.Ingress?.stringValue;
  return value === 'http' || value === 'cli' ? value : 'sqs';
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
  const respondTo = base.principal?.organisation;
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

async function audit(ctx: StageContext, entry: Omit<AuditEntry, 'at'>): Promise<void> {
  await ctx.ports.audit.append({ ...entry, at: new Date(ctx.ports.clock.now()).toISOString() });
}
