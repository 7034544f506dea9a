/**
 * The in-memory queue behind the embedded runtime: the SQS behaviour the pipeline relies on —
 * visibility timeout, receive count, redrive to a DLQ after maxReceiveCount receives, receipt
 * handles, batch receive — judged on a virtual clock.
 */
import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../../../lib/runtime/embedded.js';
import { MemoryQueue, type QueuedMessage } from '../../../lib/runtime/memory-queue.js';

const VISIBILITY_S = 30;

function queues(opts: { maxReceiveCount?: number } = {}) {
  const clock = new VirtualClock(1_700_000_000_000);
  const deadLettered: QueuedMessage[] = [];
  const dlq = new MemoryQueue({ name: 'q-dlq', visibilityTimeoutSeconds: VISIBILITY_S }, clock);
  const queue = new MemoryQueue(
    {
      name: 'q',
      visibilityTimeoutSeconds: VISIBILITY_S,
      maxReceiveCount: opts.maxReceiveCount ?? 3,
      dlq,
      onDeadLetter: (m) => deadLettered.push(m),
    },
    clock,
  );
  return { clock, queue, dlq, deadLettered };
}

describe('MemoryQueue', () => {
  it('hides a received message until its visibility timeout expires', () => {
    const { clock, queue } = queues();
    const id = queue.send('body-1');

    expect(queue.receive(10).map((m) => m.messageId)).toEqual([id]);
    expect(queue.receive(10)).toEqual([]);
    expect(queue.visibleDepth).toBe(0);
    expect(queue.depth).toBe(1);
    expect(queue.nextVisibleAt()).toBe(clock.now() + VISIBILITY_S * 1000);

    clock.advanceBy(VISIBILITY_S * 1000 - 1);
    expect(queue.receive(10)).toEqual([]);

    clock.advanceBy(1);
    expect(queue.receive(10).map((m) => m.messageId)).toEqual([id]);
  });

  it('counts receives and keeps the first receive time', () => {
    const { clock, queue } = queues({ maxReceiveCount: 5 });
    queue.send('body');
    const first = clock.now();

    const counts: number[] = [];
    for (let i = 0; i < 3; i += 1) {
      const [m] = queue.receive(1);
      counts.push(m!.receiveCount);
      expect(m!.firstReceivedAt).toBe(first);
      clock.advanceBy(VISIBILITY_S * 1000);
    }
    expect(counts).toEqual([1, 2, 3]);
  });

  it('gives a new receipt handle on every receive', () => {
    const { clock, queue } = queues();
    queue.send('body');
    const h1 = queue.receive(1)[0]!.receiptHandle;
    clock.advanceBy(VISIBILITY_S * 1000);
    const h2 = queue.receive(1)[0]!.receiptHandle;
    expect(h1).toBeTruthy();
    expect(h2).toBeTruthy();
    expect(h2).not.toBe(h1);
  });

  it('moves a message to the DLQ on the receive after maxReceiveCount, with the last failure reason', () => {
    const { clock, queue, dlq, deadLettered } = queues({ maxReceiveCount: 3 });
    const id = queue.send('body', { Authorization: 'x' });

    for (let i = 1; i <= 3; i += 1) {
      const batch = queue.receive(10);
      expect(batch.map((m) => m.receiveCount)).toEqual([i]);
      queue.noteFailure(id, `REASON_${i}`);
      clock.advanceBy(VISIBILITY_S * 1000);
    }

    // The fourth receive returns nothing: the message went to the DLQ instead.
    expect(queue.receive(10)).toEqual([]);
    expect(queue.depth).toBe(0);
    expect(dlq.depth).toBe(1);

    const [dead] = dlq.peekAll();
    expect(dead!.messageId).toBe(id);
    expect(dead!.body).toBe('body');
    expect(dead!.attributes).toEqual({ Authorization: 'x' });
    expect(dead!.deadLetter).toEqual({ sourceQueue: 'q', reason: 'REASON_3', at: clock.now() });
    expect(deadLettered.map((m) => m.messageId)).toEqual([id]);
  });

  it('dead-letters with reason "unknown" when no failure was noted', () => {
    const { clock, queue, dlq } = queues({ maxReceiveCount: 1 });
    queue.send('body');
    queue.receive(1);
    clock.advanceBy(VISIBILITY_S * 1000);
    expect(queue.receive(1)).toEqual([]);
    expect(dlq.peekAll()[0]!.deadLetter!.reason).toBe('unknown');
  });

  it('deletes with the current receipt handle only: a stale handle is ignored', () => {
    const { clock, queue } = queues();
    const id = queue.send('body');
    const stale = queue.receive(1)[0]!.receiptHandle!;
    clock.advanceBy(VISIBILITY_S * 1000);
    const current = queue.receive(1)[0]!.receiptHandle!;

    expect(queue.delete(id, stale)).toBe(false);
    expect(queue.depth).toBe(1);
    expect(queue.delete(id, current)).toBe(true);
    expect(queue.depth).toBe(0);
    expect(queue.delete(id, current)).toBe(false);
  });

  it('a deleted message forgets its failure reason', () => {
    const { clock, queue, dlq } = queues({ maxReceiveCount: 1 });
    const id = queue.send('body');
    queue.noteFailure(id, 'OLD_REASON');
    const handle = queue.receive(1)[0]!.receiptHandle!;
    queue.delete(id, handle);

    // Same id sent again (as a redrive does): its history starts afresh.
    queue.send('body', {}, id);
    queue.receive(1);
    clock.advanceBy(VISIBILITY_S * 1000);
    queue.receive(1);
    expect(dlq.peekAll()[0]!.deadLetter!.reason).toBe('unknown');
  });

  it('receives at most `max` messages per batch and the rest on later receives', () => {
    const { queue } = queues();
    const ids = Array.from({ length: 7 }, (_, i) => queue.send(`body-${i}`));

    const first = queue.receive(3);
    const second = queue.receive(3);
    const third = queue.receive(3);
    expect(first).toHaveLength(3);
    expect(second).toHaveLength(3);
    expect(third).toHaveLength(1);
    expect(queue.receive(3)).toEqual([]);
    expect([...first, ...second, ...third].map((m) => m.messageId).sort()).toEqual([...ids].sort());
  });

  it('counts dead-lettered messages against no batch: a batch is filled only with receivable messages', () => {
    const { clock, queue, dlq } = queues({ maxReceiveCount: 1 });
    const old = queue.send('old');
    queue.receive(1);
    clock.advanceBy(VISIBILITY_S * 1000);
    const fresh = queue.send('fresh');

    const batch = queue.receive(1);
    expect(batch.map((m) => m.messageId)).toEqual([fresh]);
    expect(dlq.peekAll().map((m) => m.messageId)).toEqual([old]);
  });

  it('take removes a message whatever its visibility (operator redrive)', () => {
    const { queue } = queues();
    const id = queue.send('body');
    queue.receive(1);
    expect(queue.take(id)?.body).toBe('body');
    expect(queue.take(id)).toBeUndefined();
    expect(queue.depth).toBe(0);
  });
});
