/**
 * The dead-letter port's contract (lib/ops/dead-letters.ts), on the local adapter: an embedded
 * pipeline over the SQLite state whose delivery to one recipient fails transiently, so real
 * messages, sealed and credentialed by the test world, dead-letter at deliver through the runtime's
 * own retries. The SQS adapter keeps the same contract on an emulator
 * (test/integration/aws-dead-letters.test.ts).
 */
import '../../support/env.js';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FolderDeliverer } from '../../../lib/adapters/local/folder-deliverer.js';
import { SqliteState } from '../../../lib/adapters/local/sqlite-state.js';
import { TransientError } from '../../../lib/errors.js';
import {
  type DeadLetter,
  LocalDeadLetterReader,
  LocalDeadLetters,
  stateDeadLetterSource,
} from '../../../lib/ops/dead-letters.js';
import type { Deliverer } from '../../../lib/ports/index.js';
import { type EmbeddedPipeline, VirtualClock } from '../../../lib/runtime/embedded.js';
import type { DemoWorld } from '../../../lib/testkit/world.js';
import {
  buildMessage,
  embeddedPipeline,
  makeTempDir,
  removeTempDirs,
  submitMessage,
  testWorld,
} from '../../support/world.js';

let world: DemoWorld;
beforeAll(async () => {
  world = await testWorld();
});
afterAll(removeTempDirs);

/** Delivery to FQ123's recipient (A8797979) fails while `broken`; every other delivery is real. */
function flakyDeliverer(baseDir: string, broken: () => boolean): Deliverer {
  const real: Deliverer = new FolderDeliverer(baseDir);
  return {
    deliver: async (target, name, bytes, contentType) => {
      if (broken() && target.type === 'folder' && target.path === 'delivered/A8797979') {
        throw new TransientError('DELIVERY_UNAVAILABLE', 'recipient folder unavailable (injected)');
      }
      return real.deliver(target, name, bytes, contentType);
    },
  };
}

describe('dead-letter port, local adapter', () => {
  let baseDir: string;
  let state: SqliteState;
  let pipeline: EmbeddedPipeline;
  let broken = true;
  let deadTraces: string[];
  let deliveredTrace: string;

  beforeAll(async () => {
    baseDir = makeTempDir('itk3-dlq-');
    const clock = new VirtualClock();
    state = new SqliteState(join(baseDir, 'state.db'), { clock });
    pipeline = embeddedPipeline(world, {
      baseDir,
      clock,
      state,
      ports: { deliverer: flakyDeliverer(baseDir, () => broken) },
    });
    deadTraces = [
      await submitMessage(pipeline, world, 'FQ123', buildMessage('FQ123')),
      await submitMessage(pipeline, world, 'FQ123', buildMessage('FQ123')),
    ];
    deliveredTrace = await submitMessage(pipeline, world, 'X26', buildMessage('X26'));
    await pipeline.drain();
  });
  afterAll(() => state.close());

  it('lists every dead letter with its stage, reason and times, never a body', async () => {
    const port = new LocalDeadLetters(pipeline, baseDir);
    const letters = await port.list();
    expect(letters.map((l) => l.traceId).sort()).toEqual([...deadTraces].sort());
    expect(letters.map((l) => l.traceId)).not.toContain(deliveredTrace);
    for (const l of letters) {
      expect(l).toMatchObject({ stage: 'deliver', reason: 'DELIVERY_UNAVAILABLE' });
      expect(l.bodyBytes).toBeGreaterThan(0);
      expect(Date.parse(l.deadLetteredAt!)).toBeGreaterThanOrEqual(Date.parse(l.sentAt));
      expect(Object.keys(l)).not.toContain('body');
    }
    expect(await port.list('deliver')).toEqual(letters);
    expect(await port.list('verify')).toEqual([]);
    expect(port.where).toBe(baseDir);
  });

  it('shows one dead letter by message id, and nothing for an unknown id', async () => {
    const port = new LocalDeadLetters(pipeline, baseDir);
    const [first] = await port.list();
    expect(await port.show(first!.messageId)).toEqual(first);
    expect(await port.show('no-such-message')).toBeUndefined();
  });

  it('reads a run’s state file without a pipeline: the same letters, read only', async () => {
    const readonly = new SqliteState(join(baseDir, 'state.db'), {
      clock: new VirtualClock(),
      readonly: true,
    });
    try {
      const reader = new LocalDeadLetterReader(stateDeadLetterSource(readonly), baseDir);
      expect(await reader.list()).toEqual(await new LocalDeadLetters(pipeline, baseDir).list());
      expect(reader).not.toHaveProperty('redrive');
    } finally {
      readonly.close();
    }
  });

  it('redrives one letter at its stage only, keeps its receipt time, audits it, and it is delivered', async () => {
    const port = new LocalDeadLetters(pipeline, baseDir);
    const before = await port.list();
    const letter = before.find((l) => l.traceId === deadTraces[0]) as DeadLetter;

    // The wrong stage or an unknown id moves nothing and audits nothing.
    expect(await port.redrive('verify', letter.messageId, 'test')).toEqual([]);
    expect(await port.redrive('deliver', 'no-such-message', 'test')).toEqual([]);
    expect(await port.list()).toEqual(before);

    broken = false;
    expect(await port.redrive('deliver', letter.messageId, 'test')).toEqual([letter]);
    expect((await port.list()).map((l) => l.traceId)).toEqual([deadTraces[1]]);
    // Back on its stage's queue with the time it was first received: a redrive is not a new receipt.
    const requeued = pipeline.queues.deliver.peekAll().find((m) => m.messageId === letter.messageId);
    expect(requeued?.sentAt).toBe(Date.parse(letter.sentAt));
    // The stored dead-lettered outcome is forgotten: the trace is open again.
    expect((await pipeline.outcome(letter.traceId)).status).not.toBe('dead-lettered');
    expect((await pipeline.audit.byTrace(letter.traceId)).filter((e) => e.event === 'redriven')).toEqual([
      expect.objectContaining({ stage: 'operator', event: 'redriven', detail: 'back to deliver by test' }),
    ]);

    await pipeline.drain();
    expect(await pipeline.outcome(letter.traceId)).toMatchObject({ status: 'delivered', stage: 'deliver' });
  });

  it('redrives all of a stage’s letters, and then there are none', async () => {
    const port = new LocalDeadLetters(pipeline, baseDir);
    const moved = await port.redrive('deliver', undefined, 'test');
    expect(moved.map((l) => l.traceId)).toEqual([deadTraces[1]]);
    expect(await port.list()).toEqual([]);
    expect(await port.redrive('deliver')).toEqual([]);
    await pipeline.drain();
    expect((await pipeline.outcome(deadTraces[1]!)).status).toBe('delivered');
  });
});
