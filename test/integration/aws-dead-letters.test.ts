/**
 * Operations on real SQS dead-letter queues: a message whose delivery keeps failing dead-letters
 * through the emulator queue's own redrive policy, the SQS dead-letter adapter lists it with its
 * reason from the audit trail (without consuming it) and redrives it as the operator's, and once the
 * fault is gone it is delivered — the same port `itk3 dlq --aws-outputs` uses on a deployed stack.
 */
import { SendMessageBatchCommand } from '@aws-sdk/client-sqs';
import { beforeAll, expect, it } from 'vitest';
import { SqsDeadLetters } from '../../lib/adapters/aws/dead-letters.js';
import { TransientError } from '../../lib/errors.js';
import { EmulatorPipeline } from '../../lib/runtime/emulator.js';
import { freshImmunisation, sealFor, tokenFor } from '../../lib/testkit/scenario.js';
import { createWorld, type DemoWorld, publishRecipientKeys } from '../../lib/testkit/world.js';
import { describeEachEmulator } from './support/emulators.js';

describeEachEmulator('dead letters on SQS', ({ emulator, endpoint, unique }) => {
  let world: DemoWorld;
  let pipeline: EmulatorPipeline;
  let dlqs: SqsDeadLetters;
  let deliveryBroken = true;

  beforeAll(async () => {
    world = await createWorld({ recipientModulus: 2048 });
    pipeline = await EmulatorPipeline.start({
      config: world.config,
      endpoint,
      prefix: unique('dlq').replace('itk3-it-', '').slice(0, 20),
      localState: emulator.gaps.dynamodb !== undefined,
      visibilityTimeoutSeconds: 1,
      wrapPorts: (ports) => ({
        ...ports,
        deliverer: {
          deliver: async (target, name, bytes, type) => {
            if (deliveryBroken) throw new TransientError('DELIVERY_UNAVAILABLE', 'target down (injected)');
            return ports.deliverer.deliver(target, name, bytes, type);
          },
        },
      }),
    });
    const published = await pipeline.publicJwks();
    publishRecipientKeys(world, published);
    dlqs = new SqsDeadLetters(
      pipeline.clients.sqs,
      { dlq: pipeline.resources.dlqUrls, source: pipeline.resources.queueUrls },
      pipeline.ports.audit,
    );
  }, 120_000);

  it('dead-letters after maxReceiveCount, lists without consuming, redrives to delivered', async () => {
    const m = freshImmunisation();
    const sealed = await sealFor(world, world.senders.X26, m.bytes, m.format, m.routing);
    const submitted = await pipeline.submit(await tokenFor(world, world.senders.X26, Date.now()), sealed);
    expect(submitted.status).toBe(202);
    const traceId = submitted.status === 202 ? submitted.trackingId : '';

    await pipeline.drain({ timeoutMs: 120_000 });
    const listed = await dlqs.list('deliver');
    expect(listed.map((l) => l.traceId)).toEqual([traceId]);
    expect(listed[0]).toMatchObject({ stage: 'deliver', reason: 'DELIVERY_UNAVAILABLE' });
    expect(await dlqs.show(listed[0]!.messageId)).toMatchObject({ traceId, stage: 'deliver' });
    expect(await dlqs.list('deliver')).toHaveLength(1); // listing did not consume it
    const failures = (await pipeline.ports.audit.byTrace(traceId)).filter(
      (e) => e.event === 'transient-failure',
    );
    expect(failures.length).toBeGreaterThanOrEqual(5);
    expect(failures.every((e) => e.code === 'DELIVERY_UNAVAILABLE')).toBe(true);

    deliveryBroken = false;
    const moved = await dlqs.redrive('deliver', listed[0]!.messageId, 'test');
    expect(moved.map((l) => l.traceId)).toEqual([traceId]);
    expect((await pipeline.ports.audit.byTrace(traceId)).filter((e) => e.event === 'redriven')).toEqual([
      expect.objectContaining({ stage: 'operator', detail: 'back to deliver by test' }),
    ]);
    await pipeline.drain({ timeoutMs: 60_000 });
    expect(await dlqs.list('deliver')).toHaveLength(0);
    expect((await pipeline.outcome(traceId)).status).toBe('delivered');
  }, 240_000);

  // Real SQS answers at most 10 messages per receive and hides each for the receive's visibility
  // timeout: the adapter must page past the first 10 and make what it looked at visible again.
  it('lists past one receive of 10, and a redrive of one releases the others at once', async () => {
    const verifyDlq = pipeline.resources.dlqUrls.verify;
    const traceIds = Array.from({ length: 13 }, (_, i) => `paging-${i + 1}`);
    for (const [start, end] of [
      [0, 10],
      [10, 13],
    ] as const) {
      await pipeline.clients.sqs.send(
        new SendMessageBatchCommand({
          QueueUrl: verifyDlq,
          Entries: traceIds.slice(start, end).map((traceId, i) => ({
            Id: `e${start + i}`,
            MessageBody: JSON.stringify({ v: 1, traceId, receivedAt: 0, source: 'cli' }),
          })),
        }),
      );
    }

    const listed = await dlqs.list('verify');
    expect(listed.map((l) => l.traceId).sort()).toEqual([...traceIds].sort());
    expect(listed.every((l) => l.stage === 'verify' && l.reason === 'unknown')).toBe(true);

    const target = listed.find((l) => l.traceId === 'paging-12')!;
    const moved = await dlqs.redrive('verify', target.messageId, 'test');
    expect(moved.map((l) => l.traceId)).toEqual(['paging-12']);
    // Visible again straight away (not after the 30 s hold): the next look sees the other twelve.
    const after = await dlqs.list('verify');
    expect(after.map((l) => l.traceId).sort()).toEqual(traceIds.filter((t) => t !== 'paging-12').sort());
    expect(after.map((l) => l.messageId)).not.toContain(target.messageId);
    // The redriven record is on the verify queue now, audited as the operator's.
    expect((await pipeline.ports.audit.byTrace('paging-12')).map((e) => e.event)).toContain('redriven');
    expect(await dlqs.redrive('verify')).toHaveLength(12);
    expect(await dlqs.list('verify')).toEqual([]);
  }, 120_000);
});
