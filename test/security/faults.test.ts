/**
 * Faults through the embedded pipeline with the real (deployed) handlers: KMS throttling, outage
 * and errors (SoftwareKeyService `beforeCall`), SQS sends failing mid-batch or losing their
 * acknowledgement (a wrapped `ports.queues`), once-store throttling and lost conditional-write
 * answers (a wrapped `ports.once`), a crash between forwarding and deleting (a handler that runs and
 * then throws, so the batch is redelivered), and a stage that overruns its visibility timeout (the
 * batch is received again and processed by a second invocation while the first still runs).
 *
 * Invariants, for every fault: every message is accounted for — delivered (its file exists),
 * rejected with a response (the response file exists), or dead-lettered with its reason — nothing
 * is lost, and nothing is delivered twice (one file per message id and one `delivered` audit event
 * per message id). Rows go to reports/security/faults.json.
 */
// Powertools reads its log level when the handlers are first imported: quiet it before that.
import '../support/env.js';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import type { Context, SQSEvent } from 'aws-lambda';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SoftwareKeyService } from '../../lib/adapters/local/software-keys.js';
import { TransientError } from '../../lib/errors.js';
import type { QueueName, StageName } from '../../lib/pipeline/topology.js';
import { STAGES } from '../../lib/pipeline/topology.js';
import type { OnceStore } from '../../lib/ports/index.js';
import type { PipelineRecord } from '../../lib/record.js';
import { EmbeddedPipeline, toSqsRecord, VirtualClock } from '../../lib/runtime/embedded.js';
import type { QueuedMessage } from '../../lib/runtime/memory-queue.js';
import type { StageHandler } from '../../lib/runtime/stage-handler.js';
import type { DemoWorld } from '../../lib/testkit/world.js';
import {
  buildMessage,
  credentialFor,
  makeTempDir,
  removeTempDirs,
  type SenderOds,
  sealAs,
  sealCustom,
  testWorld,
} from '../support/world.js';
import { Results, responseFilesFor } from './support.js';

/** A stage-to-stage batch send, of bodies (`sendBatch`) or records (`sendRecords`): one contract. */
type BatchSend = (queue: QueueName, entries: readonly unknown[]) => Promise<{ failed: number[] }>;

interface FaultRow {
  fault: string;
  outcome: string;
  delivered: number;
  rejected: number;
  deadLettered: number;
  /** Duplicate deliveries: extra files per message id plus extra `delivered` audit events. */
  duplicates: number;
  duplicateFiles: number;
  duplicateAuditEvents: number;
  lost: number;
  /** Expected final state of the valid messages, for the report. */
  expected: string;
  deadLetterReasons?: Record<string, number>;
}

let world: DemoWorld;
const results = new Results<FaultRow>('faults.json', 'test/security/faults.test.ts');

beforeAll(async () => {
  world = await testWorld();
});

afterAll(() => {
  results.write({ total: results.rows.length });
  removeTempDirs();
});

// ---------------------------------------------------------------------------------------------
// A pipeline with fault points, and the accounting of what became of every message.

interface FaultOptions {
  beforeKeyCall?: (operation: string, kid: string) => void;
  /**
   * Wraps the runtime's own stage-to-stage sends, `sendBatch` and `sendRecords` alike (the front
   * door's `sendInbound` is left alone).
   */
  sendBatch?: (real: BatchSend) => BatchSend;
  /** Wraps the runtime's own once-store. */
  once?: (real: OnceStore) => OnceStore;
  handlers?: (real: Record<StageName, StageHandler>, run: FaultRun) => Record<StageName, StageHandler>;
}

class FaultRun {
  readonly baseDir = makeTempDir('itk3-faults-');
  readonly clock = new VirtualClock();
  readonly pipeline: EmbeddedPipeline;
  readonly traces: { traceId: string; kind: 'valid' | 'hostile'; sender: SenderOds }[] = [];

  constructor(opts: FaultOptions) {
    const keys = new SoftwareKeyService(world.keystore, {
      beforeCall: (operation, kid) => opts.beforeKeyCall?.(operation, kid),
    });
    this.pipeline = new EmbeddedPipeline({
      config: world.config,
      keys,
      baseDir: this.baseDir,
      clock: this.clock,
      ...(opts.handlers ? { handlers: (real) => opts.handlers!(real, this) } : {}),
    });
    // The runtime builds its sender and once-store around its own queues and clock, so the faults
    // wrap them in place, on the very ports object the handlers and the front door use.
    const ports = this.pipeline.ports;
    if (opts.sendBatch) {
      const real = ports.queues;
      const wrap = opts.sendBatch;
      const sendRecords = real.sendRecords?.bind(real);
      ports.queues = {
        ...real,
        sendBatch: wrap((queue, bodies) => real.sendBatch(queue, bodies as readonly string[])),
        ...(sendRecords
          ? {
              sendRecords: wrap((queue, records) => sendRecords(queue, records as readonly PipelineRecord[])),
            }
          : {}),
      };
    }
    if (opts.once) ports.once = opts.once(ports.once);
  }

  /** 9 valid messages (3 per sender) and 3 hostile ones rejected at authenticate, authorise, verify. */
  async submitMix(): Promise<void> {
    const now = this.clock.now();
    for (const sender of ['GP0001', 'X26', 'FQ123'] as const) {
      for (let i = 0; i < 3; i += 1) {
        const msg = buildMessage(sender);
        const r = await this.pipeline.submit(
          await credentialFor(world, sender, now),
          await sealAs(world, sender, msg),
        );
        if (r.status !== 202) throw new Error(`front door refused a valid message: ${JSON.stringify(r)}`);
        this.traces.push({ traceId: r.trackingId, kind: 'valid', sender });
      }
    }
    // No credential (direct SQS): rejected at authenticate, audited, not answered.
    const m1 = buildMessage('X26');
    this.traces.push({
      traceId: this.pipeline.submitRaw(await sealAs(world, 'X26', m1)),
      kind: 'hostile',
      sender: 'X26',
    });
    // FQ123's credential for an X26-routed message: rejected at authorise.
    const m2 = buildMessage('X26');
    const r2 = await this.pipeline.submit(
      await credentialFor(world, 'FQ123', now),
      await sealAs(world, 'X26', m2),
    );
    if (r2.status === 202) this.traces.push({ traceId: r2.trackingId, kind: 'hostile', sender: 'FQ123' });
    // Signed by FQ123 but routed as X26 with X26's credential: rejected at verify.
    const m3 = buildMessage('X26');
    const r3 = await this.pipeline.submit(
      await credentialFor(world, 'X26', now),
      await sealCustom(world, m3, { signer: 'FQ123', recipientKey: 'A83627' }),
    );
    if (r3.status === 202) this.traces.push({ traceId: r3.trackingId, kind: 'hostile', sender: 'X26' });
  }

  /** What became of every submitted message, with the invariants' counts. */
  async account(): Promise<
    Omit<FaultRow, 'fault' | 'outcome' | 'expected'> & { byTrace: Map<string, string> }
  > {
    const dlq = new Map<string, { stage: StageName; message: QueuedMessage }>();
    for (const d of this.pipeline.deadLetters()) dlq.set(traceOf(d.message), d);
    const deliveredFiles = new Map<string, number>();
    for (const ods of Object.keys(world.recipients)) {
      for (const f of filesIn(path.join(this.baseDir, 'delivered', ods))) {
        // `<sender>_<MessageHeader id>_<trace id>.<ext>`: counted per message id, so a message
        // delivered under two traces still shows up as a duplicate.
        const id = f.split('_')[1] ?? f;
        deliveredFiles.set(id, (deliveredFiles.get(id) ?? 0) + 1);
      }
    }
    const deliveredEvents = new Map<string, number>();
    for (const e of this.pipeline.audit.all()) {
      if (e.event === 'delivered' && e.messageId)
        deliveredEvents.set(e.messageId, (deliveredEvents.get(e.messageId) ?? 0) + 1);
    }
    let delivered = 0;
    let rejected = 0;
    let deadLettered = 0;
    let lost = 0;
    const reasons: Record<string, number> = {};
    const byTrace = new Map<string, string>();
    for (const t of this.traces) {
      const outcome = await this.pipeline.outcome(t.traceId);
      const dead = dlq.get(t.traceId);
      let state: string;
      if (dead) {
        // Dead-lettered with its reason: the DLQ message carries it, and so does the audit trail.
        const reason = dead.message.deadLetter?.reason ?? 'unknown';
        expect(reason, `${t.traceId}: dead-lettered without a reason`).not.toBe('unknown');
        reasons[`${dead.stage}:${reason}`] = (reasons[`${dead.stage}:${reason}`] ?? 0) + 1;
        deadLettered += 1;
        state = 'dead-lettered';
      } else if (
        outcome.status === 'delivered' &&
        outcome.messageId &&
        deliveredFiles.has(outcome.messageId)
      ) {
        delivered += 1;
        state = 'delivered';
      } else if (
        outcome.status === 'rejected' &&
        // An authenticated sender is answered; an unauthenticated one is audited and nothing more.
        (responseFilesFor(this.baseDir, t.traceId).length > 0 || outcome.stage === 'authenticate')
      ) {
        rejected += 1;
        state = 'rejected';
      } else {
        lost += 1;
        state = `lost (${outcome.status})`;
      }
      byTrace.set(t.traceId, state);
    }
    let duplicateFiles = 0;
    let duplicateAuditEvents = 0;
    for (const n of deliveredFiles.values()) if (n > 1) duplicateFiles += n - 1;
    for (const n of deliveredEvents.values()) if (n > 1) duplicateAuditEvents += n - 1;
    return {
      delivered,
      rejected,
      deadLettered,
      duplicates: duplicateFiles + duplicateAuditEvents,
      duplicateFiles,
      duplicateAuditEvents,
      lost,
      ...(deadLettered > 0 ? { deadLetterReasons: reasons } : {}),
      byTrace,
    };
  }

  /** Redrive every DLQ back to its queue (the operator's `itk3 dlq redrive`). */
  async redriveAll(): Promise<number> {
    let moved = 0;
    for (const stage of STAGES) moved += await this.pipeline.redrive(stage);
    return moved;
  }
}

function traceOf(m: QueuedMessage): string {
  if (m.body.startsWith('{')) {
    try {
      const parsed = JSON.parse(m.body) as { traceId?: unknown };
      if (typeof parsed.traceId === 'string') return parsed.traceId;
    } catch {
      // a raw JWE body: the transport id is the trace id
    }
  }
  return m.messageId;
}

function filesIn(dir: string): string[] {
  try {
    return readdirSync(dir).filter((f) => !f.endsWith('.tmp'));
  } catch {
    return [];
  }
}

/** Run a fault scenario, check the invariants and record a row. */
async function scenario(
  fault: string,
  expected: string,
  run: FaultRun,
  opts: { validDelivered?: boolean; allDeadLettered?: boolean } = {},
) {
  await run.submitMix();
  await run.pipeline.drain();
  const acc = await run.account();
  const { byTrace, ...counts } = acc;
  const outcome = [
    `${counts.delivered} delivered`,
    `${counts.rejected} rejected`,
    counts.deadLettered ? `${counts.deadLettered} dead-lettered` : '',
  ]
    .filter(Boolean)
    .join(', ');
  results.add({ fault, outcome, expected, ...counts });
  console.log(`${fault}: ${outcome}; duplicates ${counts.duplicates}; lost ${counts.lost}`);
  expect(counts.lost, `${fault}: lost messages ${JSON.stringify([...byTrace])}`).toBe(0);
  expect(counts.delivered + counts.rejected + counts.deadLettered).toBe(run.traces.length);
  if (opts.validDelivered) {
    for (const t of run.traces) {
      expect(byTrace.get(t.traceId), `${fault}: ${t.kind} message`).toBe(
        t.kind === 'valid' ? 'delivered' : 'rejected',
      );
    }
  }
  return acc;
}

// ---------------------------------------------------------------------------------------------

describe('key service (KMS) faults', () => {
  it('a throttling burst: the first 15 unwrap calls are throttled', async () => {
    let calls = 0;
    const run = new FaultRun({
      beforeKeyCall: (op) => {
        if (op === 'unwrapKey' && calls++ < 15)
          throw new TransientError('KEY_SERVICE_UNAVAILABLE', 'ThrottlingException');
      },
    });
    const acc = await scenario(
      'KMS throttling burst (first 15 Decrypt calls)',
      'all valid delivered after retries',
      run,
      { validDelivered: true },
    );
    expect(acc.duplicates).toBe(0);
  });

  it('intermittent throttling: every third unwrap and sign call is throttled', async () => {
    let calls = 0;
    const run = new FaultRun({
      beforeKeyCall: () => {
        if (calls++ % 3 === 0) throw new TransientError('KEY_SERVICE_UNAVAILABLE', 'ThrottlingException');
      },
    });
    const acc = await scenario(
      'KMS throttling, every 3rd Decrypt/Sign call',
      'all valid delivered after retries',
      run,
      { validDelivered: true },
    );
    expect(acc.duplicates).toBe(0);
  });

  it('an outage longer than the retries: dead-lettered with the reason, then redriven and delivered', async () => {
    let outage = true;
    const run = new FaultRun({
      beforeKeyCall: () => {
        if (outage) throw new TransientError('KEY_SERVICE_UNAVAILABLE', 'KMSInternalException');
      },
    });
    const phase1 = await scenario(
      'KMS outage (every call fails beyond maxReceiveCount)',
      'every message dead-lettered with KEY_SERVICE_UNAVAILABLE',
      run,
    );
    // Nothing can be answered or decrypted without KMS: every message waits in a DLQ — except the
    // one with no credential, whose rejection needs no key at all (nothing is signed for it).
    expect(phase1.deadLettered).toBe(run.traces.length - 1);
    expect(phase1.rejected).toBe(1);
    expect(
      Object.keys(phase1.deadLetterReasons ?? {}).every((r) => r.endsWith(':KEY_SERVICE_UNAVAILABLE')),
    ).toBe(true);

    outage = false;
    expect(await run.redriveAll()).toBe(run.traces.length - 1);
    await run.pipeline.drain();
    const phase2 = await run.account();
    const { byTrace, ...counts } = phase2;
    results.add({
      fault: 'KMS outage, then recovery and `itk3 dlq redrive`',
      outcome: `${counts.delivered} delivered, ${counts.rejected} rejected`,
      expected: 'all valid delivered, hostile rejected with a response',
      ...counts,
    });
    expect(counts.lost).toBe(0);
    expect(counts.duplicates).toBe(0);
    for (const t of run.traces)
      expect(byTrace.get(t.traceId)).toBe(t.kind === 'valid' ? 'delivered' : 'rejected');
  });

  it('an unwrap failure reported as an exception that is not transient is one uniform DECRYPT_FAILED', async () => {
    // The KMS adapter maps throttling and 5xx to TransientError; anything else it throws is treated
    // like a failed unwrap (random CEK, RFC 7516 §11.5) so no error oracle appears. The messages
    // are rejected with a response, not lost.
    const run = new FaultRun({
      beforeKeyCall: (op) => {
        if (op === 'unwrapKey') throw new Error('InvalidKeyUsageException');
      },
    });
    const acc = await scenario(
      'KMS Decrypt error that is not transient',
      'reached decrypt → rejected 10009 with a response',
      run,
    );
    expect(acc.delivered).toBe(0);
    expect(acc.rejected).toBe(run.traces.length);
  });
});

describe('queue (SQS) send faults', () => {
  it('SendMessageBatch fails for the second half of every other batch', async () => {
    let calls = 0;
    const run = new FaultRun({
      sendBatch: (real) => async (queue, bodies) => {
        if (calls++ % 2 === 0 || bodies.length < 2) return real(queue, bodies);
        const half = Math.ceil(bodies.length / 2);
        await real(queue, bodies.slice(0, half));
        return { failed: bodies.map((_, i) => i).slice(half) };
      },
    });
    const acc = await scenario(
      'SQS send fails mid-batch (second half of every other batch)',
      'all valid delivered after retries',
      run,
      { validDelivered: true },
    );
    expect(acc.duplicates).toBe(0);
  });

  it('SendMessageBatch throws on every third call', async () => {
    let calls = 0;
    const run = new FaultRun({
      sendBatch: (real) => async (queue, bodies) => {
        if (calls++ % 3 === 2) throw new TransientError('QUEUE_UNAVAILABLE', 'ServiceUnavailable');
        return real(queue, bodies);
      },
    });
    const acc = await scenario('SQS send throws (every 3rd call)', 'all valid delivered after retries', run, {
      validDelivered: true,
    });
    expect(acc.duplicates).toBe(0);
  });
});

describe('once-store (DynamoDB) faults', () => {
  it('throttling: the first conditional put of every key is throttled', async () => {
    // Per key rather than every n-th call: a counter can alias with batch sizes and starve one record.
    const seen = new Set<string>();
    const run = new FaultRun({
      once: (real) => ({
        putIfAbsent: async (key, value, ttl) => {
          if (!seen.has(key)) {
            seen.add(key);
            throw new TransientError('STORE_UNAVAILABLE', 'ProvisionedThroughputExceededException');
          }
          return real.putIfAbsent(key, value, ttl);
        },
      }),
    });
    const acc = await scenario(
      'DynamoDB throttling (first put of every key)',
      'all valid delivered after retries',
      run,
      {
        validDelivered: true,
      },
    );
    expect(acc.duplicates).toBe(0);
  });

  it('a conditional put that succeeded but whose answer was lost: the retry is not mistaken for a replay', async () => {
    // The first put of every key is written but its answer is lost: deterministic, so every
    // message needs at most one retry per key it writes — well inside maxReceiveCount.
    const answered = new Set<string>();
    const run = new FaultRun({
      once: (real) => ({
        putIfAbsent: async (key, value, ttl) => {
          const result = await real.putIfAbsent(key, value, ttl);
          if (!answered.has(key)) {
            answered.add(key);
            throw new TransientError('STORE_UNAVAILABLE', 'RequestTimeout after the write');
          }
          return result;
        },
      }),
    });
    // jti (authenticate) and message/document ids (verify) are remembered with the SQS message id /
    // trace id, so the retry finds its own write: no false TOKEN_REPLAYED or DUPLICATE_MESSAGE.
    const acc = await scenario(
      'DynamoDB write succeeded, answer lost (first put of every key)',
      'all valid delivered, no false replay',
      run,
      { validDelivered: true },
    );
    expect(acc.duplicates).toBe(0);
  });
});

/**
 * Whether a batch is worth disturbing: at deliver, one that carries a verified message (the first
 * deliver batches often hold only rejections, whose responses are idempotent anyway).
 */
function carriesWork(stage: StageName, event: SQSEvent): boolean {
  if (event.Records.length === 0) return false;
  if (stage !== 'deliver') return true;
  return event.Records.some((r) => r.body.includes('"message":{'));
}

/**
 * Redelivery makes a stage run a record twice. Files are named from the message id, so the
 * delivery itself happens once, and the outcome events are recorded once per trace behind a
 * once-store marker (finding F4, fixed): no lost message, every valid message delivered, no
 * duplicate file and no duplicate `delivered` event.
 */
async function redeliveryScenario(fault: string, run: FaultRun, disturbed: () => number): Promise<void> {
  const acc = await scenario(
    fault,
    'all valid delivered; one file per message; one delivered event per message',
    run,
    { validDelivered: true },
  );
  expect(disturbed(), `${fault}: the fault never fired`).toBeGreaterThan(0);
  expect(acc.duplicateFiles).toBe(0);
  expect(acc.duplicateAuditEvents).toBe(0);
}

describe('redelivery: crash between forwarding and deleting', () => {
  for (const stage of STAGES) {
    it(`the ${stage} handler forwards its batch, then crashes before the delete: the batch is redelivered`, async () => {
      let crashes = 0;
      const run = new FaultRun({
        handlers: (real) => ({
          ...real,
          [stage]: async (event: SQSEvent, context: Context) => {
            const response = await real[stage](event, context);
            // One crash is enough to force a full redelivery of a batch that did its work.
            if (crashes === 0 && carriesWork(stage, event)) {
              crashes += 1;
              throw new Error('container crashed after forwarding');
            }
            return response;
          },
        }),
      });
      await redeliveryScenario(`crash after forwarding, before delete (${stage})`, run, () => crashes);
    });
  }
});

describe('redelivery: a stage slower than its visibility timeout', () => {
  for (const stage of ['authenticate', 'decrypt', 'deliver'] as const) {
    it(`${stage} overruns its visibility timeout: a second invocation processes the same batch meanwhile`, async () => {
      let overruns = 0;
      const run: FaultRun = new FaultRun({
        handlers: (real, self) => ({
          ...real,
          [stage]: async (event: SQSEvent, context: Context) => {
            if (overruns > 0 || !carriesWork(stage, event)) return real[stage](event, context);
            overruns += 1;
            const response = await real[stage](event, context);
            // The first invocation runs past the visibility timeout before returning…
            const queue = self.pipeline.queues[stage];
            self.clock.advanceBy((self.pipeline.settings[stage].visibilityTimeoutSeconds + 1) * 1000);
            // …so the event source hands the batch to a second invocation, which completes first.
            const again = queue.receive(self.pipeline.settings[stage].batchSize);
            const second = await real[stage](
              { Records: again.map((m) => toSqsRecord(stage, m, self.clock.now())) },
              context,
            );
            const failed = new Set((second?.batchItemFailures ?? []).map((f) => f.itemIdentifier));
            for (const m of again)
              if (!failed.has(m.messageId)) queue.delete(m.messageId, m.receiptHandle ?? '');
            // The first invocation's delete then uses a stale receipt handle and is ignored, as in SQS.
            return response;
          },
        }),
      });
      await redeliveryScenario(`${stage} slower than its visibility timeout`, run, () => overruns);
    });
  }
});
