/**
 * The SQLite state of the embedded runtime: queue semantics (visibility timeout, receive count,
 * DLQ with reason, stale receipt handles), units of work that commit together or not at all, the
 * once-store's TTL and dead-letter ownership rule, blobs, backlog and resumption after a crash.
 * A "crash" is a second connection opening the file while the first holds uncommitted work:
 * exactly what a restart after `kill -9` sees.
 */
import '../../support/env.js';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SqliteState } from '../../../lib/adapters/local/sqlite-state.js';
import { TransientError } from '../../../lib/errors.js';
import { VirtualClock } from '../../../lib/runtime/embedded.js';
import type { DemoWorld } from '../../../lib/testkit/world.js';
import { queueWithDlq } from '../../support/records.js';
import {
  buildMessage,
  credentialFor,
  embeddedPipeline,
  makeTempDir,
  removeTempDirs,
  sealAs,
  submitMessage,
  testWorld,
} from '../../support/world.js';

let world: DemoWorld;
beforeAll(async () => {
  world = await testWorld();
});
afterAll(removeTempDirs);

function open(file: string, clock = new VirtualClock(1_000_000)) {
  return { state: new SqliteState(file, { clock }), clock };
}

function stageQueue(state: SqliteState, dead: string[] = []) {
  return queueWithDlq(state, (m) => dead.push(`${m.messageId}:${m.deadLetter?.reason}`));
}

describe('SQLite queues', () => {
  it('hide a received message for the visibility timeout, then redeliver it with a higher receive count', () => {
    const { state, clock } = open(join(makeTempDir(), 'state.db'));
    const { q } = stageQueue(state);
    const id = state.transact(() => q.send('{"traceId":"t1"}', { A: 'b' }));
    const [first] = state.transact(() => q.receive(10));
    expect(first).toMatchObject({ messageId: id, receiveCount: 1, attributes: { A: 'b' } });
    expect(state.transact(() => q.receive(10))).toHaveLength(0);
    clock.advanceBy(10_000);
    const [again] = state.transact(() => q.receive(10));
    expect(again?.receiveCount).toBe(2);
    // The first receipt handle is stale: deleting with it does nothing, as in SQS.
    expect(state.transact(() => q.delete(id, first!.receiptHandle!))).toBe(false);
    expect(state.transact(() => q.delete(id, again!.receiptHandle!))).toBe(true);
    expect(q.depth).toBe(0);
    state.close();
  });

  it('move a message to the DLQ with its last failure reason after maxReceiveCount receives', () => {
    const { state, clock } = open(join(makeTempDir(), 'state.db'));
    const dead: string[] = [];
    const { q, dlq } = stageQueue(state, dead);
    const id = state.transact(() => q.send('body'));
    for (let i = 0; i < 2; i += 1) {
      state.transact(() => q.receive(1));
      state.transact(() => q.noteFailure(id, 'DELIVERY_UNAVAILABLE'));
      clock.advanceBy(10_000);
    }
    expect(state.transact(() => q.receive(1))).toHaveLength(0);
    expect(dead).toEqual([`${id}:DELIVERY_UNAVAILABLE`]);
    const [letter] = dlq.peekAll();
    expect(letter?.deadLetter).toMatchObject({ sourceQueue: 'q', reason: 'DELIVERY_UNAVAILABLE' });
    expect(state.deadLetters().map((l) => l.messageId)).toEqual([id]);
    expect(state.backlog().messages).toBe(0);
    state.close();
  });

  it('receive in batches, oldest first', () => {
    const { state } = open(join(makeTempDir(), 'state.db'));
    const { q } = stageQueue(state);
    const ids = state.transact(() => Array.from({ length: 25 }, (_, i) => q.send(`m${i}`)));
    const batch = state.transact(() => q.receive(10));
    expect(batch.map((m) => m.messageId)).toEqual(ids.slice(0, 10));
    expect(state.transact(() => q.receive(10)).map((m) => m.messageId)).toEqual(ids.slice(10, 20));
    state.close();
  });
});

describe('units of work', () => {
  it('a crash before the commit leaves neither the writes nor the deletion of the batch', async () => {
    const file = join(makeTempDir(), 'state.db');
    const { state } = open(file);
    const { q } = stageQueue(state);
    const id = state.transact(() => q.send('{"traceId":"t1"}'));
    const [m] = state.transact(() => q.receive(1));
    state.hold();
    await state.audit.append({ traceId: 't1', at: 'now', stage: 'verify', event: 'forwarded' });
    state.queue({ name: 'next', visibilityTimeoutSeconds: 1 }).send('{"traceId":"t1"}');
    q.delete(id, m!.receiptHandle!);

    // The process dies here (closing the connection without a commit is what SQLite sees of
    // kill -9: the WAL frames were never committed). What a restart sees:
    state.db.close();
    const after = open(file);
    expect(after.state.audit.count).toBe(0);
    expect(after.state.queue({ name: 'next', visibilityTimeoutSeconds: 1 }).depth).toBe(0);
    const { q: q2 } = stageQueue(after.state);
    expect(q2.peekAll().map((x) => [x.messageId, x.receiveCount])).toEqual([[id, 1]]);
    // It was in flight: resumption makes it visible at once instead of after the timeout.
    expect(after.state.resume(after.clock.now())).toBe(1);
    expect(after.state.transact(() => q2.receive(1))).toHaveLength(1);
    after.state.close();
  });

  it('a write resolves only once it is committed, and everything committed survives', async () => {
    const file = join(makeTempDir(), 'state.db');
    const { state } = open(file);
    const { q } = stageQueue(state);
    const id = await state.write(() => q.send('hello'));
    const other = open(file);
    expect(
      stageQueue(other.state)
        .q.peekAll()
        .map((m) => m.messageId),
    ).toEqual([id]);
    other.state.close();
    state.close();
  });

  it('is one file, mode 0600, in WAL mode with synchronous FULL', () => {
    const file = join(makeTempDir(), 'state.db');
    const { state } = open(file);
    expect(state.db.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(state.db.pragma('synchronous', { simple: true })).toBe(2);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    state.close();
  });

  it('a file that is not a state file is refused with a clear error', () => {
    const dir = makeTempDir();
    const file = join(dir, 'state.db');
    writeFileSync(file, 'x'.repeat(4096));
    expect(() => new SqliteState(file, { clock: new VirtualClock() })).toThrow(/not a valid state file/);
  });
});

describe('once-store, blobs, audit', () => {
  it('remembers a key until its TTL, then accepts it again', async () => {
    const { state, clock } = open(join(makeTempDir(), 'state.db'));
    expect(await state.once.putIfAbsent('jti#a', 'one', 60)).toEqual({ created: true });
    expect(await state.once.putIfAbsent('jti#a', 'two', 60)).toEqual({ created: false, existing: 'one' });
    clock.advanceBy(61_000);
    expect(await state.once.putIfAbsent('jti#a', 'three', 60)).toEqual({ created: true });
    state.close();
  });

  it('lets a resend own a message id whose first trace was dead-lettered, never one that is in flight or delivered', async () => {
    const { state } = open(join(makeTempDir(), 'state.db'));
    const owner = (traceId: string) => JSON.stringify({ traceId, sha256: 'h' });
    await state.once.putIfAbsent('msg#m1', owner('t-dead'), 60);
    await state.once.putIfAbsent('msg#m2', owner('t-flight'), 60);
    await state.once.putIfAbsent('msg#m3', owner('t-done'), 60);
    state.recordOutcome({ traceId: 't-dead', status: 'dead-lettered', stage: 'deliver', code: 'X' });
    state.recordOutcome({ traceId: 't-done', status: 'delivered', stage: 'deliver' });
    expect(await state.once.putIfAbsent('msg#m1', owner('t-new'), 60)).toEqual({ created: true });
    expect((await state.once.putIfAbsent('msg#m2', owner('t-new'), 60)).created).toBe(false);
    expect((await state.once.putIfAbsent('msg#m3', owner('t-new'), 60)).created).toBe(false);
    state.close();
  });

  it('keeps blobs until their trace ends and counts them in the backlog', async () => {
    const { state } = open(join(makeTempDir(), 'state.db'));
    const bytes = new Uint8Array(1000).fill(7);
    await state.blobs.put('claim-check/t1/signed.jws', bytes);
    await state.blobs.put('claim-check/ingest-x/sealed.jwe', bytes);
    state.ownBlob('claim-check/ingest-x/sealed.jwe', 't1');
    await state.blobs.put('claim-check/t2/signed.jws', bytes);
    expect(state.backlog().bytes).toBe(3000);
    expect(await state.blobs.get('claim-check/t1/signed.jws')).toEqual(bytes);
    state.releaseTrace('t1');
    expect(state.blobs.size).toBe(1);
    expect(state.backlog().bytes).toBe(1000);
    await state.blobs.delete('claim-check/t2/signed.jws');
    await state.blobs.delete('claim-check/t2/signed.jws');
    await expect(state.blobs.get('claim-check/t2/signed.jws')).rejects.toThrow(/not found/);
    state.close();
  });

  it('bounds audit entries as the other audit logs do', async () => {
    const { state } = open(join(makeTempDir(), 'state.db'));
    await state.audit.append({
      traceId: 't',
      at: 'now',
      stage: 'verify',
      event: 'rejected',
      messageId: 'NHS 9434765919 SMITH',
      detail: 'x'.repeat(1000),
    });
    const [entry] = await state.audit.byTrace('t');
    expect(entry?.messageId).toBeUndefined();
    expect(entry?.detail?.length).toBeLessThanOrEqual(257);
    expect(state.audit.traces()).toEqual(['t']);
    state.close();
  });
});

describe('the embedded pipeline on the SQLite state', () => {
  it('delivers, records terminal outcomes, removes claim-check blobs and leaves an empty backlog', async () => {
    const baseDir = makeTempDir();
    const clock = new VirtualClock();
    const state = new SqliteState(join(baseDir, 'state.db'), { clock });
    const pipeline = embeddedPipeline(world, { baseDir, clock, state });
    const finished: string[] = [];
    pipeline.onOutcome = (o) => finished.push(`${o.traceId}:${o.status}`);
    // One small and one above the claim-check threshold, so blobs are made and must go.
    const big = buildMessage('X26', { attachmentBytes: world.config.doc.limits.claimCheckBytes + 10_000 });
    const t1 = await submitMessage(pipeline, world, 'X26', buildMessage('X26'));
    const t2 = await submitMessage(pipeline, world, 'X26', big);
    expect(pipeline.backlog().messages).toBe(2);
    await pipeline.drain();
    expect(await pipeline.outcome(t1)).toMatchObject({ status: 'delivered' });
    expect(await pipeline.outcome(t2)).toMatchObject({ status: 'delivered' });
    expect(finished.sort()).toEqual([`${t1}:delivered`, `${t2}:delivered`].sort());
    expect(pipeline.backlog()).toEqual({ messages: 0, bytes: 0 });
    expect(state.blobs.size).toBe(0);
    state.close();
    // Everything is in the one file: a fresh open sees the outcome.
    const reopened = new SqliteState(join(baseDir, 'state.db'), { clock });
    expect(reopened.storedOutcome(t1)?.status).toBe('delivered');
    reopened.close();
  });

  it('refuses submissions over the backlog limit with 503 and takes them again once drained', async () => {
    const baseDir = makeTempDir();
    const clock = new VirtualClock();
    const state = new SqliteState(join(baseDir, 'state.db'), { clock });
    const pipeline = embeddedPipeline(world, { baseDir, clock, state, limits: { maxMessages: 2 } });
    await submitMessage(pipeline, world, 'X26', buildMessage('X26'));
    await submitMessage(pipeline, world, 'X26', buildMessage('X26'));
    const sealed = await sealAs(world, 'X26', buildMessage('X26'));
    // A valid credential: the front door refuses a bad one with 401 before the backlog is looked at.
    const refused = await pipeline.submit(await credentialFor(world, 'X26', clock.now()), sealed);
    expect(refused).toMatchObject({ status: 503 });
    expect(() => pipeline.submitRaw(sealed)).toThrow(/retry later/);
    await pipeline.drain();
    await submitMessage(pipeline, world, 'X26', buildMessage('X26'));
    state.close();
  });

  it('dead-letters a delivery that keeps failing with its reason and keeps it across a restart', async () => {
    const baseDir = makeTempDir();
    const clock = new VirtualClock();
    const file = join(baseDir, 'state.db');
    const state = new SqliteState(file, { clock });
    const failing = {
      deliver: async () => {
        throw new TransientError('DELIVERY_UNAVAILABLE', 'no space left on the delivery disk');
      },
    };
    const pipeline = embeddedPipeline(world, { baseDir, clock, state, ports: { deliverer: failing } });
    const t = await submitMessage(pipeline, world, 'X26', buildMessage('X26'));
    await pipeline.drain();
    expect(await pipeline.outcome(t)).toMatchObject({ status: 'dead-lettered', stage: 'deliver' });
    state.close();
    const reopened = new SqliteState(file, { clock });
    expect(reopened.deadLetters().map((l) => l.queue)).toEqual(['itk3-deliver-dlq']);
    expect(reopened.deadLetters()[0]?.deadLetter?.reason).toBe('DELIVERY_UNAVAILABLE');
    reopened.close();
    expect(existsSync(join(baseDir, 'audit.jsonl'))).toBe(false);
    expect(readFileSync(file).subarray(0, 15).toString()).toBe('SQLite format 3');
  });
});
