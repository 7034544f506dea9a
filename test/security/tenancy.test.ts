/**
 * Issue 9, classes 3 and 4, tried as an attacker would: real keys, real sealed messages, the deployed
 * stage handlers driven by the embedded runtime from the HTTP front door or straight onto the
 * inbound queue.
 *
 * - Class 3: one registered organisation squats another's message and document ids, or probes
 *   whether they were used; two organisations (or one, after the duplicate window) deliver under
 *   the same MessageHeader id. Every genuine message must still be delivered, to its own name.
 * - Class 4: anonymous floods (HTTP and direct SQS) must cost no signature, no stored response, no
 *   claim-check blob and one audit entry at most; a captured (credential, sealed message) pair
 *   replayed unchanged is refused before decryption, in a race as after the fact, while an
 *   operator redrive of the original queue message still goes through.
 */
import '../support/env.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TransientError } from '../../lib/errors.js';
import type { OnceStore } from '../../lib/ports/index.js';
import type { DemoWorld } from '../../lib/testkit/world.js';
import { worldPaths } from '../../lib/testkit/world.js';
import {
  buildMessage,
  credentialFor,
  deliveredIds,
  filesIn,
  makeTempDir,
  removeTempDirs,
  sealAs,
  testWorld,
} from '../support/world.js';
import { Harness, responseFilesFor } from './support.js';

let world: DemoWorld;

beforeAll(async () => {
  world = await testWorld();
});
afterAll(removeTempDirs);

function harness(): Harness {
  return new Harness(world, makeTempDir('itk3-tenancy-'));
}

/** Shaped like a compact JWE (passes the front door's shape check), meaningless inside. */
function garbageEnvelope(bytes: number): string {
  return `eyJhbGciOiJ4In0.${'A'.repeat(Math.max(1, bytes - 40))}.AAAA.AAAA.AAAA`;
}

function queued(h: Harness): number {
  return Object.values(h.pipeline.queues).reduce((n, q) => n + q.peekAll().length, 0);
}

describe('class 3: per-organisation namespaces', () => {
  it('GP0001 squats X26’s message and document ids first: X26’s genuine message is still delivered', async () => {
    const h = harness();
    const genuine = buildMessage('X26');
    const squat = buildMessage('GP0001', { messageId: genuine.messageId, documentId: genuine.documentId });
    const first = await h.run({
      credential: await credentialFor(world, 'GP0001', h.now()),
      sealed: await sealAs(world, 'GP0001', squat),
    });
    const second = await h.run({
      credential: await credentialFor(world, 'X26', h.now()),
      sealed: await sealAs(world, 'X26', genuine),
    });
    expect(first.outcome).toMatchObject({ status: 'delivered' });
    expect(second.outcome).toMatchObject({ status: 'delivered', messageId: genuine.messageId });
    // Both are at the recipient, each under its own name.
    expect(deliveredIds(worldPaths(h.baseDir).delivered('A83627'))).toEqual([
      `${genuine.messageId}.xml`,
      `${genuine.messageId}.xml`,
    ]);
  });

  it('a sender reusing its own id after the duplicate window gets a second delivery; the first file is untouched', async () => {
    const h = harness();
    const msg = buildMessage('X26');
    await h.run({
      credential: await credentialFor(world, 'X26', h.now()),
      sealed: await sealAs(world, 'X26', msg),
    });
    const folder = worldPaths(h.baseDir).delivered('A83627');
    const [firstName] = filesIn(folder);
    h.clock.advanceBy((world.config.doc.limits.dedupeDays + 1) * 86_400_000);
    const again = buildMessage('X26', { messageId: msg.messageId, documentId: msg.documentId });
    const r = await h.run({
      credential: await credentialFor(world, 'X26', h.now()),
      sealed: await sealAs(world, 'X26', again),
    });
    expect(r.outcome).toMatchObject({ status: 'delivered' });
    expect(filesIn(folder)).toHaveLength(2);
    expect(filesIn(folder)).toContain(firstName);
  });
});

describe('class 4: amplification by the unauthenticated', () => {
  it('200 anonymous garbage POSTs: all 401 at the door; nothing signed, stored, queued or audited', async () => {
    const h = harness();
    const auditBefore = h.pipeline.audit.count;
    const onceBefore = h.onceCount;
    for (let i = 0; i < 200; i += 1) {
      // Half small, half large enough to have been a claim check (and 9 MB every 50th).
      const size = i % 50 === 0 ? 9_000_000 : i % 2 === 0 ? 1_000 : 300_000;
      const credential = i % 3 === 0 ? '' : `eyJhbGciOiJFUzI1NiJ9.e30.${'A'.repeat(86)}`;
      const r = await h.pipeline.submit(credential, garbageEnvelope(size));
      expect(r.status).toBe(401);
    }
    await h.pipeline.drain();
    expect(h.keys.signs).toBe(0);
    expect(h.blobCount).toBe(0);
    expect(queued(h)).toBe(0);
    expect(h.onceCount).toBe(onceBefore);
    expect(h.pipeline.audit.count).toBe(auditBefore);
  });

  it('200 anonymous garbage messages straight onto the inbound queue: one audit entry each and nothing more', async () => {
    const h = harness();
    const onceBefore = h.onceCount;
    const traces: string[] = [];
    for (let i = 0; i < 200; i += 1) {
      const authorization = i % 2 === 0 ? undefined : 'Bearer eyJhbGciOiJub25lIn0.e30.';
      traces.push(h.pipeline.submitRaw(garbageEnvelope(1_000), authorization));
    }
    await h.pipeline.drain();
    expect(h.keys.signs).toBe(0);
    expect(h.keys.unwraps).toBe(0);
    expect(h.onceCount).toBe(onceBefore);
    expect(h.pipeline.audit.count).toBe(200);
    for (const trace of traces) {
      expect(responseFilesFor(h.baseDir, trace)).toEqual([]);
      expect(await h.pipeline.outcome(trace)).toMatchObject({ status: 'rejected', stage: 'authenticate' });
    }
    expect(filesIn(worldPaths(h.baseDir).unauthenticated)).toEqual([]);
  });

  it('a captured pair replayed in a race: one delivery, one acknowledgement, one decrypt; the other copy refused before decryption', async () => {
    const h = harness();
    const msg = buildMessage('X26');
    const credential = await credentialFor(world, 'X26', h.now());
    const sealed = await sealAs(world, 'X26', msg);
    const sender = await h.pipeline.submit(credential, sealed);
    const attacker = await h.pipeline.submit(credential, sealed);
    if (sender.status !== 202 || attacker.status !== 202) throw new Error('front door refused');
    await h.pipeline.drain();

    const outcomes = await Promise.all([sender, attacker].map((s) => h.pipeline.outcome(s.trackingId)));
    expect(outcomes.map((o) => o.status).sort()).toEqual(['delivered', 'rejected']);
    expect(outcomes.find((o) => o.status === 'rejected')).toMatchObject({
      stage: 'authenticate',
      code: 'TOKEN_REPLAYED',
    });
    expect(h.keys.unwraps).toBe(1);
    expect(h.keys.signs).toBe(1);
    expect(deliveredIds(worldPaths(h.baseDir).delivered('A83627'))).toEqual([`${msg.messageId}.xml`]);
    // The real sender hears once (20013), never a 20007 spam for the copies.
    expect(filesIn(worldPaths(h.baseDir).responses('X26'))).toHaveLength(1);

    // Replayed again after delivery, from either door: refused the same way, nothing spent.
    for (const via of ['http', 'sqs'] as const) {
      const r = await h.run({ credential, sealed, via });
      expect(r.outcome).toMatchObject({ status: 'rejected', stage: 'authenticate', code: 'TOKEN_REPLAYED' });
      expect(r.unwraps).toBe(0);
      expect(r.responseFiles).toEqual([]);
    }
    expect(h.keys.signs).toBe(1);
  });

  it('a message dead-lettered after its jti was recorded is delivered when the operator redrives it', async () => {
    const h = harness();
    // The once-store records every jti but its answer is lost while `broken`: each attempt of the
    // authenticate stage fails after the write, until the message dead-letters.
    let broken = true;
    const real = h.pipeline.ports.once;
    const lossy: OnceStore = {
      putIfAbsent: async (key, value, ttl) => {
        const result = await real.putIfAbsent(key, value, ttl);
        if (broken && key.startsWith('jti#')) throw new TransientError('STORE_UNAVAILABLE', 'answer lost');
        return result;
      },
    };
    h.pipeline.ports.once = lossy;
    const msg = buildMessage('X26');
    const r = await h.run({
      credential: await credentialFor(world, 'X26', h.now()),
      sealed: await sealAs(world, 'X26', msg),
    });
    expect(r.outcome).toMatchObject({ status: 'dead-lettered', stage: 'authenticate' });

    broken = false;
    expect(await h.pipeline.redrive('authenticate')).toBe(1);
    await h.pipeline.drain();
    expect(await h.pipeline.outcome(r.traceId ?? '')).toMatchObject({ status: 'delivered' });
    expect(deliveredIds(worldPaths(h.baseDir).delivered('A83627'))).toEqual([`${msg.messageId}.xml`]);
  });

  it('a large authenticated message leaves no claim-check blob once delivered', async () => {
    const h = harness();
    const msg = buildMessage('X26', { attachmentBytes: 2 * 1024 * 1024 });
    const r = await h.run({
      credential: await credentialFor(world, 'X26', h.now()),
      sealed: await sealAs(world, 'X26', msg),
    });
    expect(r.outcome).toMatchObject({ status: 'delivered' });
    expect(h.blobCount).toBe(0);
  });
});
