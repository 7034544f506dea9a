/**
 * Red-team pass on `itk3 serve`'s front door (session 20): one sender must never block another.
 * The backlog bounds (`--max-backlog-messages`, `--max-backlog-bytes`, `--max-inflight-bytes`) were
 * global, so one authenticated organisation flooding valid submissions, or holding slow uploads
 * open, made every other organisation's submissions 503 BACKLOG_FULL. Each sender now holds at
 * most its share of each bound (`--max-backlog-share`, default 0.25) and, over it, gets its own
 * 503 SENDER_BACKLOG_FULL while the others are still taken. Real listener on 127.0.0.1, real
 * credentials and sealed messages; organisation A is X26, organisation B is FQ123.
 */
import '../support/env.js';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SqliteState } from '../../lib/adapters/local/sqlite-state.js';
import { backlogParty, type RunningServer } from '../../lib/cli/serve.js';
import { systemClock } from '../../lib/ports/index.js';
import type { DemoWorld } from '../../lib/testkit/world.js';
import { listenersPerTest } from '../support/listeners.js';
import {
  buildMessage,
  configWith,
  credentialFor,
  makeTempDir,
  type SenderOds,
  sealAs,
} from '../support/world.js';

const MAX_SEALED = 256 * 1024;

let world: DemoWorld;
const serve = listenersPerTest(
  (w) => {
    world = w;
  },
  { dirPrefix: 'itk3-fairshare-', maxSealedBytes: MAX_SEALED },
);

interface Answer {
  status: number;
  error: string | undefined;
  trackingId: string | undefined;
  retryAfter: string | null;
}

/** POST one sealed message from `sender` with a fresh credential (delegated when `actors` are given). */
async function submit(
  server: RunningServer,
  sender: SenderOds,
  sealed: string,
  actors?: string[],
): Promise<Answer> {
  const credential = await credentialFor(world, sender, Date.now(), actors ? { actors } : {});
  const response = await fetch(`http://127.0.0.1:${server.port}/messages`, {
    method: 'POST',
    headers: { authorization: `Bearer ${credential}` },
    body: sealed,
  });
  const body = (await response.json()) as { error?: string; trackingId?: string };
  return {
    status: response.status,
    error: body.error,
    trackingId: body.trackingId,
    retryAfter: response.headers.get('retry-after'),
  };
}

const sealedFrom = (sender: SenderOds, n: number) =>
  Promise.all(Array.from({ length: n }, () => sealAs(world, sender, buildMessage(sender))));

/** Send the headers and the first bytes of a declared body, then stall; collect what comes back. */
function holdUpload(
  server: RunningServer,
  head: string,
): Promise<{ socket: Socket; received: () => string }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const socket = connect(server.port, '127.0.0.1', () => {
      socket.write(head);
      socket.write('eyJ', () =>
        resolve({ socket, received: () => Buffer.concat(chunks).toString('latin1') }),
      );
    });
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', () => undefined); // cut by the server once refused: expected
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const ZERO = { queuedMessages: 0, queuedBytes: 0, readingMessages: 0, readingBytes: 0 };

describe('red team: one organisation cannot fill the front door for another', () => {
  it('A flooding gets its own 503 while B is still accepted and delivered; A is taken again once drained', async () => {
    // A's share: 2 of the 8 messages the backlog may hold.
    const server = await serve({ limits: { maxBacklogMessages: 8, requestTimeoutMs: 20_000 } });
    const flood = await sealedFrom('X26', 18);
    const [forB] = await sealedFrom('FQ123', 1);

    // A sends in concurrent bursts (bounded) until it is refused.
    const answers: Answer[] = [];
    for (let burst = 0; burst < 3; burst += 1) {
      const sent = await Promise.all(flood.splice(0, 6).map((sealed) => submit(server, 'X26', sealed)));
      answers.push(...sent);
      if (sent.some((a) => a.status === 503)) break;
    }
    const refused = answers.filter((a) => a.status === 503);
    expect(refused.length).toBeGreaterThan(0);
    for (const a of refused) {
      expect(a.error).toBe('SENDER_BACKLOG_FULL');
      expect(a.retryAfter).toBe('5');
    }
    expect(server.senderBacklog('X26').queuedMessages).toBeLessThanOrEqual(2);

    // B is still taken, and its message goes all the way.
    const b = await submit(server, 'FQ123', forB!);
    expect(b.status).toBe(202);
    await server.idle();
    expect((await server.pipeline.outcome(b.trackingId!)).status).toBe('delivered');
    for (const a of answers.filter((x) => x.status === 202)) {
      expect((await server.pipeline.outcome(a.trackingId!)).status).toBe('delivered');
    }

    // A's work has finished: nothing is charged to it, and it is taken again.
    expect(server.senderBacklog('X26')).toEqual(ZERO);
    const again = await submit(server, 'X26', flood[0]!);
    expect(again.status).toBe(202);
    await server.idle();
    expect((await server.pipeline.outcome(again.trackingId!)).status).toBe('delivered');
  });

  it("A's slow uploads hold only its own share of the bodies being read: B's upload still goes in", async () => {
    // 800 KiB of bodies may be read at once; A's share is 200 KiB, one body of it.
    const declared = 200 * 1024;
    const server = await serve({ limits: { maxInflightBytes: 4 * declared, requestTimeoutMs: 20_000 } });
    const host = `127.0.0.1:${server.port}`;
    const uploads = [];
    for (let i = 0; i < 5; i += 1) {
      const credential = await credentialFor(world, 'X26', Date.now());
      uploads.push(
        await holdUpload(
          server,
          `POST /messages HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer ${credential}\r\nContent-Length: ${declared}\r\n\r\n`,
        ),
      );
    }
    // Every upload authenticated and either reading or refused (bounded wait on a busy machine).
    for (let waited = 0; waited < 5_000 && uploads.slice(1).some((u) => u.received() === ''); waited += 50) {
      await sleep(50);
    }
    await sleep(50);
    const answered = uploads.map((u) => u.received());
    // The first is being read; every further one of A's is refused with its own code, unread.
    expect(answered[0]).toBe('');
    for (const text of answered.slice(1)) {
      expect(text).toMatch(/^HTTP\/1\.1 503 /);
      expect(text).toContain('"error":"SENDER_BACKLOG_FULL"');
    }
    expect(server.senderBacklog('X26')).toMatchObject({ readingMessages: 1, readingBytes: declared });

    const [forB] = await sealedFrom('FQ123', 1);
    const b = await submit(server, 'FQ123', forB!);
    expect(b.status).toBe(202);
    await server.idle();
    expect((await server.pipeline.outcome(b.trackingId!)).status).toBe('delivered');

    // A gives up: its reservation goes, and it is taken again.
    for (const u of uploads) u.socket.destroy();
    for (let waited = 0; waited < 5_000 && server.senderBacklog('X26').readingMessages > 0; waited += 50) {
      await sleep(50);
    }
    expect(server.senderBacklog('X26')).toEqual(ZERO);
    const [forA] = await sealedFrom('X26', 1);
    expect((await submit(server, 'X26', forA!)).status).toBe(202);
    await server.idle();
  });

  it('a hub holds one share whichever organisations it acts for, and never uses up their own', async () => {
    const server = await serve({ limits: { maxBacklogMessages: 8 } });
    // Nothing drains: what is accepted stays queued, so the counts are exact.
    server.pipeline.stop();
    const fromX26 = await sealedFrom('X26', 4);
    const [fromFQ123] = await sealedFrom('FQ123', 1);
    const hub = ['hub-7'];
    expect((await submit(server, 'X26', fromX26[0]!, hub)).status).toBe(202);
    expect((await submit(server, 'X26', fromX26[1]!, hub)).status).toBe(202);
    // The hub's share (2 of 8) is used up, for X26 and for FQ123 alike…
    for (const [sender, sealed] of [
      ['X26', fromX26[2]!],
      ['FQ123', fromFQ123!],
    ] as const) {
      const refused = await submit(server, sender, sealed, hub);
      expect([refused.status, refused.error]).toEqual([503, 'SENDER_BACKLOG_FULL']);
    }
    // …while X26's own system is not charged for what its hub sent.
    expect(server.senderBacklog('X26')).toEqual(ZERO);
    expect((await submit(server, 'X26', fromX26[3]!)).status).toBe(202);
    expect(server.senderBacklog('X26').queuedMessages).toBe(1);
    const hubParty = backlogParty({ organisation: 'X26', actors: hub, issuer: world.senders.X26.issuer.id });
    expect(server.senderBacklog(hubParty).queuedMessages).toBe(2);
  });

  it("a hub's submission that ends in a refusal (an ungranted delegate) releases the hub's share", async () => {
    const server = await serve({ limits: { maxBacklogMessages: 8 } });
    const hubParty = backlogParty({
      organisation: 'X26',
      actors: ['hub-7'],
      issuer: world.senders.X26.issuer.id,
    });
    const [sealed] = await sealedFrom('X26', 1);
    const accepted = await submit(server, 'X26', sealed!, ['hub-7']);
    expect(accepted.status).toBe(202);
    await server.idle();
    expect(await server.pipeline.outcome(accepted.trackingId!)).toMatchObject({
      status: 'rejected',
      code: 'DELEGATION_NOT_GRANTED',
    });
    expect(server.senderBacklog(hubParty)).toEqual(ZERO);
  });

  it('a restart on the same state counts the queued work against its sender again', async () => {
    const baseDir = makeTempDir('itk3-fairshare-');
    const limits = { maxBacklogMessages: 8 };
    const first = await serve({ baseDir, limits });
    // Nothing drains in this process: whatever is accepted is left queued for the next start.
    first.pipeline.stop();
    const fromA = await sealedFrom('X26', 3);
    const [fromB] = await sealedFrom('FQ123', 1);
    const acceptedA = [await submit(first, 'X26', fromA[0]!), await submit(first, 'X26', fromA[1]!)];
    expect(acceptedA.map((a) => a.status)).toEqual([202, 202]);
    const overShare = await submit(first, 'X26', fromA[2]!);
    expect([overShare.status, overShare.error]).toEqual([503, 'SENDER_BACKLOG_FULL']);
    const acceptedB = await submit(first, 'FQ123', fromB!);
    expect(acceptedB.status).toBe(202);
    const heldByA = first.senderBacklog('X26');
    expect(heldByA).toEqual({
      queuedMessages: 2,
      queuedBytes: Buffer.byteLength(fromA[0]!) + Buffer.byteLength(fromA[1]!),
      readingMessages: 0,
      readingBytes: 0,
    });
    await first.close();

    const second = await serve({ baseDir, limits });
    expect(second.resumed).toBe(3);
    // Read before any resumed trace can have finished: the charges come from the state file.
    expect(second.senderBacklog('X26')).toEqual(heldByA);
    expect(second.senderBacklog('FQ123').queuedMessages).toBe(1);
    await second.idle();
    for (const a of [...acceptedA, acceptedB]) {
      expect((await second.pipeline.outcome(a.trackingId!)).status).toBe('delivered');
    }
    expect(second.senderBacklog('X26')).toEqual(ZERO);
    expect((await submit(second, 'X26', fromA[2]!)).status).toBe(202);
    await second.idle();
    await second.close();
    // Each outcome dropped its admission in its own commit: nothing is left to charge.
    const file = new SqliteState(join(baseDir, 'state.db'), { clock: systemClock, readonly: true });
    try {
      expect(file.db.prepare('SELECT count(*) AS n FROM admissions').get()).toEqual({ n: 0 });
    } finally {
      file.close();
    }

    // Finished work is charged to no one at the next start either.
    const third = await serve({ baseDir, limits });
    expect(third.senderBacklog('X26')).toEqual(ZERO);
    expect(third.senderBacklog('FQ123')).toEqual(ZERO);
  });

  it('a dead letter is charged to no one; a redrive charges it again, after a restart too', async () => {
    // FQ123's recipient behind an S3 bucket nobody can reach: its message ends in deliver's DLQ.
    const doc = structuredClone(world.configDoc);
    doc.recipients.find((r) => r.ods === 'A8797979')!.target = {
      type: 's3',
      bucket: 'itk3-unreachable-bucket',
      prefix: '',
    };
    const baseDir = makeTempDir('itk3-fairshare-');
    const options = {
      config: configWith(world, doc),
      baseDir,
      stages: { deliver: { visibilityTimeoutSeconds: 0.2, maxReceiveCount: 2 } },
    };
    const first = await serve(options);
    const [sealed] = await sealedFrom('FQ123', 1);
    const accepted = await submit(first, 'FQ123', sealed!);
    expect(accepted.status).toBe(202);
    await first.idle();
    expect((await first.pipeline.outcome(accepted.trackingId!)).status).toBe('dead-lettered');
    expect(first.senderBacklog('FQ123')).toEqual(ZERO);

    // Redriven (the console's call, without its drain): queued again, so charged again.
    expect(await first.pipeline.redrive('deliver')).toBe(1);
    expect(first.senderBacklog('FQ123')).toMatchObject({
      queuedMessages: 1,
      queuedBytes: Buffer.byteLength(sealed!),
    });
    await first.pipeline.drain();
    expect((await first.pipeline.outcome(accepted.trackingId!)).status).toBe('dead-lettered');
    expect(first.senderBacklog('FQ123')).toEqual(ZERO);
    await first.close();

    // The next start does not charge the dead letter, but keeps what a redrive needs to.
    const second = await serve(options);
    expect(second.senderBacklog('FQ123')).toEqual(ZERO);
    expect(await second.pipeline.redrive('deliver')).toBe(1);
    expect(second.senderBacklog('FQ123').queuedMessages).toBe(1);
    await second.pipeline.drain();
    expect(second.senderBacklog('FQ123')).toEqual(ZERO);
  });
});
