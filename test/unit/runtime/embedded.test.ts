/**
 * The embedded runtime through the real middy + Powertools handlers: Lambda SQS event-source
 * semantics (batch size, partial batch failure, visibility timeout, receive count, DLQ, redrive)
 * under injected faults. Faults wrap the real local adapters (the `ports` option) or come from the
 * software key service's `beforeCall` hook; no component of the pipeline is replaced.
 */
import '../../support/env.js';
import type { SQSEvent } from 'aws-lambda';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FolderDeliverer } from '../../../lib/adapters/local/folder-deliverer.js';
import { submitScenarioMessage } from '../../../lib/cli/demo.js';
import { TransientError } from '../../../lib/errors.js';
import type { QueueName, StageName } from '../../../lib/pipeline/topology.js';
import { STAGES } from '../../../lib/pipeline/topology.js';
import type { AuditEntry, Deliverer, DeliveryTarget } from '../../../lib/ports/index.js';
import type { PipelineRecord } from '../../../lib/record.js';
import type { EmbeddedPipeline } from '../../../lib/runtime/embedded.js';
import type { StageHandler } from '../../../lib/runtime/stage-handler.js';
import { hostileMessages, type ScenarioMessage, tokenFor } from '../../../lib/testkit/scenario.js';
import { type DemoWorld, worldPaths } from '../../../lib/testkit/world.js';
import {
  type BuiltMessage,
  buildMessage,
  deliveredIds,
  embeddedPipeline,
  filesIn,
  keyService,
  makeTempDir,
  removeTempDirs,
  type SenderOds,
  sealAs,
  submitMessage,
  testWorld,
} from '../../support/world.js';

let world: DemoWorld;

beforeAll(async () => {
  world = await testWorld();
});
afterAll(removeTempDirs);

/** A folder deliverer whose deliveries to `ods` fail transiently while `broken()` says so. */
function deliveryFailingFor(
  baseDir: string,
  ods: string,
  broken: () => boolean = () => true,
): Deliverer & { attempts: number } {
  const real: Deliverer = new FolderDeliverer(baseDir);
  const wrapper = {
    attempts: 0,
    async deliver(target: DeliveryTarget, name: string, bytes: Uint8Array, contentType: string) {
      if (target.type === 'folder' && target.path === `delivered/${ods}`) {
        wrapper.attempts += 1;
        if (broken()) throw new TransientError('DELIVERY_UNAVAILABLE', 'recipient folder unavailable');
      }
      return real.deliver(target, name, bytes, contentType);
    },
  };
  return wrapper;
}

/** An override of one stage's handler, given the runtime's own handler for that stage. */
type Override = (
  event: SQSEvent,
  context: Parameters<StageHandler>[1],
  real: StageHandler,
) => ReturnType<StageHandler>;

/** The runtime's own stage handlers, with every batch each stage was invoked with recorded. */
function recordingHandlers(overrides: Partial<Record<StageName, Override>> = {}) {
  const batches: { stage: StageName; records: { id: string; receiveCount: number }[] }[] = [];
  const handlers = (real: Record<StageName, StageHandler>) =>
    Object.fromEntries(
      STAGES.map((stage) => [
        stage,
        async (event: SQSEvent, context: Parameters<StageHandler>[1]) => {
          batches.push({
            stage,
            records: event.Records.map((r) => ({
              id: r.messageId,
              receiveCount: Number(r.attributes.ApproximateReceiveCount),
            })),
          });
          const override = overrides[stage];
          return override ? override(event, context, real[stage]) : real[stage](event, context);
        },
      ]),
    ) as Record<StageName, StageHandler>;
  return { handlers, batches };
}

/**
 * Wrap the runtime's own queue sender (the real local adapter over its in-memory queues). The
 * runtime builds that sender around its queues, so it exists only once the pipeline does; the
 * wrapper replaces `sendBatch` and `sendRecords` on the very ports object the handlers and the front
 * door use.
 */
function wrapQueueSender(pipeline: EmbeddedPipeline, wrap: (real: BatchSend) => BatchSend): void {
  const real = pipeline.ports.queues;
  const sendRecords = real.sendRecords?.bind(real);
  pipeline.ports.queues = {
    ...real,
    sendBatch: wrap((queue, bodies) => real.sendBatch(queue, bodies as readonly string[])),
    ...(sendRecords
      ? { sendRecords: wrap((queue, records) => sendRecords(queue, records as readonly PipelineRecord[])) }
      : {}),
  };
}

/** A stage-to-stage batch send, of bodies (`sendBatch`) or records (`sendRecords`): one contract. */
type BatchSend = (queue: QueueName, entries: readonly unknown[]) => Promise<{ failed: number[] }>;

async function entries(pipeline: EmbeddedPipeline, traceId: string): Promise<AuditEntry[]> {
  return pipeline.audit.byTrace(traceId);
}

const count = (list: readonly AuditEntry[], event: AuditEntry['event'], stage?: string) =>
  list.filter((e) => e.event === event && (stage === undefined || e.stage === stage)).length;

/** Terminal states of a trace from its audit trail: each should appear once, and only one of them. */
function terminals(list: readonly AuditEntry[]) {
  const lastRedrive = list.findLastIndex((e) => e.event === 'redriven');
  return {
    delivered: count(list, 'delivered'),
    rejected: count(list, 'rejected'),
    deadLettered: list.filter((e, i) => e.event === 'dead-lettered' && i > lastRedrive).length,
  };
}

function queueDepths(pipeline: EmbeddedPipeline) {
  return {
    queues: STAGES.reduce((n, s) => n + pipeline.queues[s].depth, 0),
    dlqs: STAGES.reduce((n, s) => n + pipeline.dlqs[s].depth, 0),
  };
}

async function submitAll(
  pipeline: EmbeddedPipeline,
  list: readonly { sender: SenderOds; msg: BuiltMessage }[],
): Promise<string[]> {
  const traces: string[] = [];
  for (const { sender, msg } of list) traces.push(await submitMessage(pipeline, world, sender, msg));
  return traces;
}

describe('embedded runtime: partial batch failure, retry and DLQ', () => {
  it('retries a failing record maxReceiveCount times, dead-letters it, and delivers the rest of its batch once', async () => {
    const baseDir = makeTempDir();
    const paths = worldPaths(baseDir);
    const deliverer = deliveryFailingFor(baseDir, 'A8797979');
    const { handlers, batches } = recordingHandlers();
    const pipeline = embeddedPipeline(world, { baseDir, ports: { deliverer }, handlers });
    const maxReceiveCount = pipeline.settings.deliver.maxReceiveCount;

    const good = [buildMessage('X26'), buildMessage('X26'), buildMessage('GP0001')];
    const doomed = buildMessage('FQ123');
    const [t1, t2, t3, tDoomed] = await submitAll(pipeline, [
      { sender: 'X26', msg: good[0]! },
      { sender: 'X26', msg: good[1]! },
      { sender: 'GP0001', msg: good[2]! },
      { sender: 'FQ123', msg: doomed },
    ]);
    await pipeline.drain();

    // All four reached deliver in one batch.
    const deliverBatches = batches.filter((b) => b.stage === 'deliver');
    expect(deliverBatches[0]!.records).toHaveLength(4);
    expect(deliverBatches[0]!.records.every((r) => r.receiveCount === 1)).toBe(true);

    // The failing record: exactly maxReceiveCount attempts, then the deliver DLQ.
    expect(deliverer.attempts).toBe(maxReceiveCount);
    const doomedBatches = deliverBatches.slice(1);
    expect(doomedBatches.map((b) => b.records.map((r) => r.receiveCount))).toEqual(
      Array.from({ length: maxReceiveCount - 1 }, (_, i) => [i + 2]),
    );
    const doomedTrail = await entries(pipeline, tDoomed!);
    expect(
      doomedTrail.filter((e) => e.event === 'transient-failure').map((e) => [e.stage, e.code, e.detail]),
    ).toEqual(
      Array.from({ length: maxReceiveCount }, (_, i) => [
        'deliver',
        'DELIVERY_UNAVAILABLE',
        `attempt ${i + 1}`,
      ]),
    );
    expect(doomedTrail.filter((e) => e.event === 'dead-lettered')).toEqual([
      expect.objectContaining({ stage: 'deliver', code: 'DELIVERY_UNAVAILABLE' }),
    ]);
    const dead = pipeline.deadLetters();
    expect(dead).toHaveLength(1);
    expect(dead[0]!.stage).toBe('deliver');
    expect(dead[0]!.message.deadLetter).toMatchObject({
      sourceQueue: 'itk3-deliver',
      reason: 'DELIVERY_UNAVAILABLE',
    });
    expect(JSON.parse(dead[0]!.message.body).traceId).toBe(tDoomed);
    expect(await pipeline.outcome(tDoomed!)).toMatchObject({
      status: 'dead-lettered',
      stage: 'deliver',
      code: 'DELIVERY_UNAVAILABLE',
    });

    // The others: delivered once, one file each, never received again.
    for (const [i, trace] of [t1, t2, t3].entries()) {
      const trail = await entries(pipeline, trace!);
      expect(count(trail, 'delivered')).toBe(1);
      expect(count(trail, 'transient-failure')).toBe(0);
      expect(await pipeline.outcome(trace!)).toMatchObject({
        status: 'delivered',
        messageId: good[i]!.messageId,
      });
    }
    expect(deliveredIds(paths.delivered('A83627'))).toEqual(good.map((m) => `${m.messageId}.xml`).sort());
    expect(filesIn(paths.delivered('A8797979'))).toEqual([]);
    expect(queueDepths(pipeline)).toEqual({ queues: 0, dlqs: 1 });
  });

  it('a transient key-service fault that clears after two attempts ends delivered, exactly once', async () => {
    const baseDir = makeTempDir();
    let unwraps = 0;
    const keys = keyService(world, {
      beforeCall: (operation) => {
        if (operation !== 'unwrapKey') return;
        unwraps += 1;
        if (unwraps <= 2) throw new TransientError('KEY_SERVICE_UNAVAILABLE', 'throttled');
      },
    });
    const pipeline = embeddedPipeline(world, { baseDir, keys });
    const msg = buildMessage('X26');
    const [trace] = await submitAll(pipeline, [{ sender: 'X26', msg }]);
    await pipeline.drain();

    const trail = await entries(pipeline, trace!);
    expect(unwraps).toBe(3);
    expect(trail.filter((e) => e.event === 'transient-failure').map((e) => [e.stage, e.code])).toEqual([
      ['decrypt', 'KEY_SERVICE_UNAVAILABLE'],
      ['decrypt', 'KEY_SERVICE_UNAVAILABLE'],
    ]);
    expect(trail.some((e) => e.code === 'DECRYPT_FAILED')).toBe(false);
    expect(count(trail, 'rejected')).toBe(0);
    expect(count(trail, 'delivered')).toBe(1);
    expect(await pipeline.outcome(trace!)).toMatchObject({ status: 'delivered', itk3Code: '20013' });
    expect(deliveredIds(worldPaths(baseDir).delivered('A83627'))).toEqual([`${msg.messageId}.xml`]);
    expect(queueDepths(pipeline)).toEqual({ queues: 0, dlqs: 0 });
  });

  for (const failingQueue of ['authorise', 'decrypt', 'verify', 'deliver'] as const) {
    it(`a forward to ${failingQueue} that fails for one entry mid-batch loses nothing and doubles nothing`, async () => {
      const baseDir = makeTempDir();
      const pipeline = embeddedPipeline(world, { baseDir });
      let failedOnce = false;
      // Entry 1 of the first multi-entry send to the queue is reported failed (and not sent), once.
      wrapQueueSender(pipeline, (real) => async (queue, bodies) => {
        if (failedOnce || queue !== failingQueue || bodies.length < 2) return real(queue, bodies);
        failedOnce = true;
        const { failed } = await real(queue, [bodies[0]!, ...bodies.slice(2)]);
        return { failed: [1, ...failed.map((i) => (i === 0 ? 0 : i + 1))] };
      });

      const good = [buildMessage('X26'), buildMessage('X26'), buildMessage('FQ123'), buildMessage('GP0001')];
      const traces = await submitAll(pipeline, [
        { sender: 'X26', msg: good[0]! },
        { sender: 'X26', msg: good[1]! },
        { sender: 'FQ123', msg: good[2]! },
        { sender: 'GP0001', msg: good[3]! },
      ]);
      // And one that is rejected on the way and answered: FQ123's credential on an X26 message
      // (authenticated, so its rejection is forwarded to deliver like the rest of the batch).
      const otherOrg = await pipeline.submit(
        await tokenFor(world, world.senders.FQ123, pipeline.clock.now()),
        await sealAs(world, 'X26', buildMessage('X26')),
      );
      if (otherOrg.status !== 202) throw new Error('front door refused');
      await pipeline.drain();

      expect(failedOnce).toBe(true);
      for (const trace of traces) {
        const trail = await entries(pipeline, trace);
        expect(terminals(trail)).toEqual({ delivered: 1, rejected: 0, deadLettered: 0 });
        expect(count(trail, 'response-sent')).toBe(1);
      }
      const rejectedTrail = await entries(pipeline, otherOrg.trackingId);
      expect(terminals(rejectedTrail)).toEqual({ delivered: 0, rejected: 1, deadLettered: 0 });
      expect(count(rejectedTrail, 'response-sent')).toBe(1);

      const paths = worldPaths(baseDir);
      expect(deliveredIds(paths.delivered('A83627'))).toEqual(
        [good[0]!, good[1]!, good[3]!].map((m) => `${m.messageId}.xml`).sort(),
      );
      expect(deliveredIds(paths.delivered('A8797979'))).toEqual([`${good[2]!.messageId}.xml`]);
      expect(queueDepths(pipeline)).toEqual({ queues: 0, dlqs: 0 });
    });
  }

  it('a handler that throws fails the whole batch, and every record in it is retried', async () => {
    const baseDir = makeTempDir();
    let thrown = false;
    const { handlers, batches } = recordingHandlers({
      verify: async (event, context, real) => {
        if (!thrown) {
          thrown = true;
          throw new Error('verify function crashed');
        }
        return real(event, context);
      },
    });
    const pipeline = embeddedPipeline(world, { baseDir, handlers });
    const msgs = [buildMessage('X26'), buildMessage('X26'), buildMessage('FQ123')];
    const traces = await submitAll(
      pipeline,
      msgs.map((msg, i) => ({ sender: (['X26', 'X26', 'FQ123'] as const)[i]!, msg })),
    );
    await pipeline.drain();

    const verifyBatches = batches.filter((b) => b.stage === 'verify');
    expect(verifyBatches).toHaveLength(2);
    const [crashed, retried] = verifyBatches;
    expect(crashed!.records).toHaveLength(3);
    expect(retried!.records.map((r) => r.id).sort()).toEqual(crashed!.records.map((r) => r.id).sort());
    expect(crashed!.records.every((r) => r.receiveCount === 1)).toBe(true);
    expect(retried!.records.every((r) => r.receiveCount === 2)).toBe(true);

    for (const trace of traces) {
      expect(terminals(await entries(pipeline, trace))).toEqual({
        delivered: 1,
        rejected: 0,
        deadLettered: 0,
      });
    }
    expect(filesIn(worldPaths(baseDir).delivered('A83627'))).toHaveLength(2);
    expect(filesIn(worldPaths(baseDir).delivered('A8797979'))).toHaveLength(1);
  });

  it('a handler that always throws dead-letters the whole batch after maxReceiveCount', async () => {
    const baseDir = makeTempDir();
    const { handlers, batches } = recordingHandlers({
      verify: async () => {
        throw new Error('verify function crashed');
      },
    });
    const pipeline = embeddedPipeline(world, { baseDir, handlers });
    const traces = await submitAll(pipeline, [
      { sender: 'X26', msg: buildMessage('X26') },
      { sender: 'X26', msg: buildMessage('X26') },
    ]);
    await pipeline.drain();

    expect(batches.filter((b) => b.stage === 'verify')).toHaveLength(
      pipeline.settings.verify.maxReceiveCount,
    );
    for (const trace of traces) {
      expect(await pipeline.outcome(trace)).toMatchObject({ status: 'dead-lettered', stage: 'verify' });
    }
    expect(pipeline.dlqs.verify.depth).toBe(2);
    expect(filesIn(worldPaths(baseDir).delivered('A83627'))).toEqual([]);
  });

  it('a handler that always throws dead-letters with reason "handler error: Error", not "unknown"', async () => {
    const baseDir = makeTempDir();
    const { handlers } = recordingHandlers({
      verify: async () => {
        throw new Error('verify function crashed');
      },
    });
    const pipeline = embeddedPipeline(world, { baseDir, handlers });
    const [trace] = await submitAll(pipeline, [{ sender: 'X26', msg: buildMessage('X26') }]);
    await pipeline.drain();

    // The reason the runtime noted in its catch block survives to the DLQ and the audit trail (it
    // was overwritten by the last transient-failure audit entry, of which a crash leaves none).
    const dead = pipeline.deadLetters();
    expect(dead).toHaveLength(1);
    expect(dead[0]!.stage).toBe('verify');
    expect(dead[0]!.message.deadLetter).toMatchObject({
      sourceQueue: 'itk3-verify',
      reason: 'handler error: Error',
    });
    const trail = await entries(pipeline, trace!);
    expect(trail.filter((e) => e.event === 'dead-lettered')).toEqual([
      expect.objectContaining({ stage: 'verify', code: 'handler error: Error' }),
    ]);
    expect(await pipeline.outcome(trace!)).toMatchObject({
      status: 'dead-lettered',
      stage: 'verify',
      code: 'handler error: Error',
    });
  });

  it('redrive puts a dead-lettered message back and, once the fault is gone, it is delivered', async () => {
    const baseDir = makeTempDir();
    const paths = worldPaths(baseDir);
    let broken = true;
    const deliverer = deliveryFailingFor(baseDir, 'A8797979', () => broken);
    const pipeline = embeddedPipeline(world, { baseDir, ports: { deliverer } });
    const msg = buildMessage('FQ123');
    const [trace] = await submitAll(pipeline, [{ sender: 'FQ123', msg }]);
    await pipeline.drain();
    expect(await pipeline.outcome(trace!)).toMatchObject({ status: 'dead-lettered', stage: 'deliver' });

    broken = false;
    expect(await pipeline.redrive('deliver')).toBe(1);
    expect(pipeline.dlqs.deliver.depth).toBe(0);
    expect(await pipeline.outcome(trace!)).toMatchObject({ status: 'in-flight' });
    await pipeline.drain();

    const trail = await entries(pipeline, trace!);
    expect(trail.filter((e) => e.event === 'redriven')).toEqual([
      expect.objectContaining({ stage: 'operator', detail: 'back to deliver' }),
    ]);
    expect(count(trail, 'delivered')).toBe(1);
    expect(await pipeline.outcome(trace!)).toMatchObject({ status: 'delivered', messageId: msg.messageId });
    expect(deliveredIds(paths.delivered('A8797979'))).toEqual([`${msg.messageId}.xml`]);
    expect(filesIn(paths.responses('FQ123'))).toEqual([`${trace}-20013.jws`]);
    expect(queueDepths(pipeline)).toEqual({ queues: 0, dlqs: 0 });
  });

  it('a message dead-lettered at authenticate and redriven once the once-store is back is delivered (credential judged at receipt)', async () => {
    const baseDir = makeTempDir();
    const pipeline = embeddedPipeline(world, { baseDir });
    let storeDown = true;
    let puts = 0;
    const realOnce = pipeline.ports.once;
    pipeline.ports.once = {
      putIfAbsent: (key, value, ttlSeconds) => {
        puts += 1;
        if (storeDown) return Promise.reject(new Error('once-store unreachable'));
        return realOnce.putIfAbsent(key, value, ttlSeconds);
      },
    };
    const msg = buildMessage('X26');
    const receivedAt = pipeline.clock.now();
    const [trace] = await submitAll(pipeline, [{ sender: 'X26', msg }]);
    await pipeline.drain();

    // Down for every receive: dead-lettered at authenticate, long after the credential expired.
    expect(puts).toBe(pipeline.settings.authenticate.maxReceiveCount);
    expect(await pipeline.outcome(trace!)).toMatchObject({
      status: 'dead-lettered',
      stage: 'authenticate',
      code: 'STORE_UNAVAILABLE',
    });
    const [dead] = pipeline.dlqs.authenticate.peekAll();
    expect(dead!.messageId).toBe(trace);
    expect(dead!.sentAt).toBe(receivedAt);
    // Five receives, each a visibility timeout apart: the 300 s credential is long expired by now.
    expect(pipeline.clock.now() - receivedAt).toBeGreaterThan(300_000);

    storeDown = false;
    expect(await pipeline.redrive('authenticate')).toBe(1);
    // The redriven message keeps its original receipt time (SentTimestamp), not the redrive time.
    const [redriven] = pipeline.queues.authenticate.peekAll();
    expect(redriven).toMatchObject({ messageId: trace, sentAt: receivedAt });
    await pipeline.drain();

    const trail = await entries(pipeline, trace!);
    expect(trail.some((e) => e.code === 'TOKEN_EXPIRED')).toBe(false);
    expect(count(trail, 'rejected')).toBe(0);
    expect(trail.filter((e) => e.event === 'redriven')).toEqual([
      expect.objectContaining({ stage: 'operator', detail: 'back to authenticate' }),
    ]);
    expect(terminals(trail)).toEqual({ delivered: 1, rejected: 0, deadLettered: 0 });
    expect(await pipeline.outcome(trace!)).toMatchObject({
      status: 'delivered',
      messageId: msg.messageId,
      itk3Code: '20013',
    });
    expect(deliveredIds(worldPaths(baseDir).delivered('A83627'))).toEqual([`${msg.messageId}.xml`]);
    expect(queueDepths(pipeline)).toEqual({ queues: 0, dlqs: 0 });
  });

  it('a rejection whose forward to the deliver queue fails once is audited "rejected" once', async () => {
    const baseDir = makeTempDir();
    const { handlers, batches } = recordingHandlers();
    const pipeline = embeddedPipeline(world, { baseDir, handlers });
    let failedOnce = false;
    // Entry 1 of the first multi-entry send to deliver is reported failed (and not sent), once.
    wrapQueueSender(pipeline, (real) => async (queue, bodies) => {
      if (failedOnce || queue !== 'deliver' || bodies.length < 2) return real(queue, bodies);
      failedOnce = true;
      const { failed } = await real(queue, [bodies[0]!, ...bodies.slice(2)]);
      return { failed: [1, ...failed.map((i) => (i === 0 ? 0 : i + 1))] };
    });

    // Three messages to an organisation not served here: rejected together in one authorise batch.
    const traces = await submitAll(
      pipeline,
      [0, 1, 2].map(() => ({ sender: 'X26' as const, msg: buildMessage('X26', { to: 'B99999' }) })),
    );
    await pipeline.drain();

    expect(failedOnce).toBe(true);
    const authorise = batches.filter((b) => b.stage === 'authorise');
    expect(authorise[0]!.records).toHaveLength(3);
    // The record whose forward failed went round authorise a second time.
    expect(authorise.slice(1).map((b) => b.records.map((r) => r.receiveCount))).toEqual([[2]]);

    for (const trace of traces) {
      const trail = await entries(pipeline, trace);
      expect(terminals(trail), `trace ${trace}`).toEqual({ delivered: 0, rejected: 1, deadLettered: 0 });
      expect(count(trail, 'response-sent')).toBe(1);
      expect(await pipeline.outcome(trace)).toMatchObject({
        status: 'rejected',
        stage: 'authorise',
        code: 'RECIPIENT_UNKNOWN',
        itk3Code: '20002',
      });
    }
    expect(filesIn(worldPaths(baseDir).responses('X26'))).toEqual(traces.map((t) => `${t}-20002.jws`).sort());
    expect(queueDepths(pipeline)).toEqual({ queues: 0, dlqs: 0 });
  });

  it('redrive of an unknown message id moves nothing', async () => {
    const pipeline = embeddedPipeline(world, { baseDir: makeTempDir() });
    expect(await pipeline.redrive('deliver', 'no-such-message')).toBe(0);
  });
});

describe('embedded runtime: malformed records on internal queues', () => {
  for (const [what, body] of [
    ['not JSON', 'this is not a pipeline record'],
    ['JSON that is not a record', '{"v":1,"traceId":""}'],
  ] as const) {
    it(`a body that is ${what} on the verify queue ends rejected with 10009 RECORD_MALFORMED`, async () => {
      const baseDir = makeTempDir();
      const pipeline = embeddedPipeline(world, { baseDir });
      const id = pipeline.queues.verify.send(body);
      await pipeline.drain();

      expect(await pipeline.outcome(id)).toMatchObject({
        status: 'rejected',
        stage: 'verify',
        code: 'RECORD_MALFORMED',
        itk3Code: '10009',
      });
      // No authenticated sender to answer: audited once, nothing signed or written (issue 9).
      expect(filesIn(worldPaths(baseDir).unauthenticated)).toEqual([]);
      expect((await entries(pipeline, id)).map((e) => [e.stage, e.event, e.code])).toEqual([
        ['verify', 'rejected', 'RECORD_MALFORMED'],
      ]);
      expect(queueDepths(pipeline)).toEqual({ queues: 0, dlqs: 0 });
    });
  }
});

describe('embedded runtime: conservation', () => {
  it('every one of N mixed messages ends in exactly one of delivered / rejected / dead-lettered', async () => {
    const baseDir = makeTempDir();
    let unwraps = 0;
    const keys = keyService(world, {
      beforeCall: (operation) => {
        if (operation === 'unwrapKey' && ++unwraps <= 3) {
          throw new TransientError('KEY_SERVICE_UNAVAILABLE', 'throttled');
        }
      },
    });
    const deliverer = deliveryFailingFor(baseDir, 'A8797979');
    const pipeline = embeddedPipeline(world, { baseDir, keys, ports: { deliverer } });
    const now = pipeline.clock.now();

    const expected = new Map<string, 'delivered' | 'rejected' | 'dead-lettered'>();
    // Valid messages, delivered.
    for (const sender of ['X26', 'X26', 'GP0001', 'X26'] as const) {
      const [trace] = await submitAll(pipeline, [{ sender, msg: buildMessage(sender) }]);
      expected.set(trace!, 'delivered');
    }
    // Valid messages to a recipient whose target is down: dead-lettered at deliver.
    for (let i = 0; i < 2; i += 1) {
      const [trace] = await submitAll(pipeline, [{ sender: 'FQ123', msg: buildMessage('FQ123') }]);
      expected.set(trace!, 'dead-lettered');
    }
    // The demo's hostile set (first phase), each with its own expected outcome.
    const hostile: ScenarioMessage[] = (await hostileMessages(world, now)).filter(
      (m) => (m.phase ?? 1) === 1,
    );
    for (const message of hostile) {
      expected.set(await submitScenarioMessage(pipeline, message), message.expected.status);
    }
    // Garbage on an internal queue.
    expected.set(pipeline.queues.decrypt.send('garbage'), 'rejected');

    await pipeline.drain();

    const n = expected.size;
    expect(n).toBeGreaterThanOrEqual(18);
    expect(new Set(pipeline.audit.traces())).toEqual(new Set(expected.keys()));
    const tally = { delivered: 0, rejected: 0, 'dead-lettered': 0 };
    for (const [trace, want] of expected) {
      const trail = await entries(pipeline, trace);
      const t = terminals(trail);
      const ended = Object.entries(t).filter(([, c]) => c > 0);
      expect(ended, `trace ${trace} should end exactly once`).toHaveLength(1);
      expect(ended[0]![1]).toBe(1);
      const outcome = await pipeline.outcome(trace);
      expect(outcome.status, `trace ${trace}`).toBe(want);
      if (outcome.status === 'rejected') {
        // Answered when the sender was authenticated; otherwise audited once and nothing more.
        const answered = trail.some((e) => e.event === 'rejected' && e.sender !== undefined);
        expect(count(trail, 'response-sent')).toBe(answered ? 1 : 0);
        if (!answered) expect(trail).toHaveLength(1);
      }
      tally[outcome.status as keyof typeof tally] += 1;
    }
    expect(tally.delivered + tally.rejected + tally['dead-lettered']).toBe(n);
    expect(tally['dead-lettered']).toBe(2);
    expect(unwraps).toBeGreaterThan(3);
    expect(queueDepths(pipeline)).toEqual({ queues: 0, dlqs: 2 });
    expect(filesIn(worldPaths(baseDir).delivered('A83627'))).toHaveLength(tally.delivered);
  });
});
