/**
 * Crash and load tests of `itk3 serve` with large messages, run as an outside reviewer would: real
 * processes on loopback, Bundles of 1 MiB and just under the 5 MiB ITK3 cap (sealed ≈ 1.9 MB and
 * 9.3 MB, so every one travels by claim check: the JWE a blob, the inner JWS and the Bundle too),
 * and one 4 KiB over the cap, which verify refuses 20015.
 *
 * - `kill -9` at four kinds of point (seeded): while a body is being uploaded, just after some
 *   202s, while the stages work on large bodies, while a delivery file is being written. Restart on
 *   the same `--out`, the senders resend what they never saw a 202 for, drain, and account for
 *   everything: each message delivered exactly once with identical bytes (or its resend refused
 *   20007 because the first copy was), the over-cap one refused on every trace, one signed response
 *   per trace, no trace in the file that no one can explain, nothing half-delivered, no blob, body
 *   part or queued body left, the file intact and its audit chain proven.
 * - Overload: concurrent maximum-size POSTs. The server answers 503 with `Retry-After` rather than
 *   reading every body at once (`--max-inflight-bytes`); its peak memory stays within a bound set
 *   by its limits; every 202 is answered for.
 * - The one crash window a kill cannot aim at: between the commit of a submission's claim-check
 *   blob and its inbound message's. Reproduced in process; the next start drops the blob.
 * - Dead letters: `itk3 process` killed while large deliveries fail; the re-run dead-letters them
 *   with their reason and keeps their blobs; `itk3 dlq redrive` delivers each once, nothing left.
 *
 * Sizes and counts are chosen to fit CI on two cores (about a minute for the whole file).
 */
import '../support/env.js';
import { createPublicKey } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SqliteState } from '../../lib/adapters/local/sqlite-state.js';
import { ingest } from '../../lib/ingest.js';
import { systemClock } from '../../lib/ports/index.js';
import { EmbeddedPipeline } from '../../lib/runtime/embedded.js';
import { type DemoWorld, worldPaths } from '../../lib/testkit/world.js';
import {
  buildMessage,
  filesIn,
  keyService,
  makeTempDir,
  removeTempDirs,
  sealAs,
  testWorld,
} from '../support/world.js';
import {
  freshCredential,
  peakRss,
  post,
  postExpectingContinue,
  postInChunks,
  postWithPause,
  prng,
  readState,
  type Sealed,
  type Server,
  sleep,
  spawnItk3,
  startServe,
  storedLeftovers,
  type WorldFiles,
  waitFor,
  writeWorld,
} from './support.js';

const MIB = 1024 * 1024;
/** A Bundle just under the ITK3 recommended maximum (limits.maxBundleBytes, 5 MiB). */
const NEAR_CAP = 5 * MIB - 64;

let world: DemoWorld;
let files: WorldFiles;
/** Four 1 MiB and two near-cap messages, sealed once: each run has its own state file. */
let mixed: Sealed[];
/** A Bundle 4 KiB over the cap (sealed still under maxSealedBytes): verify refuses it 20015. */
let overCap: Sealed;

function sealLarge(bundleBytes: number): Promise<Sealed> {
  const msg = buildMessage('X26', { targetBytes: bundleBytes });
  return sealAs(world, 'X26', msg).then((sealed) => ({ msg, sealed }));
}

beforeAll(async () => {
  world = await testWorld();
  files = writeWorld(world, makeTempDir('itk3-large-world-'));
  mixed = [];
  for (const bytes of [MIB, NEAR_CAP, MIB, MIB, NEAR_CAP, MIB]) mixed.push(await sealLarge(bytes));
  overCap = await sealLarge(5 * MIB + 4096);
});
afterAll(removeTempDirs);

async function waitUntilFinished(out: string, traces: Iterable<string>, ms = 60_000): Promise<void> {
  const wanted = [...traces];
  await waitFor(
    () => {
      const state = readState(out);
      try {
        return state.queued === 0 && wanted.every((t) => state.outcome(t) !== undefined);
      } finally {
        state.close();
      }
    },
    ms,
    'every accepted message to finish',
  );
}

/** The trusted checkpoint keys: the world's response-signing public keys, from the keystore. */
function checkpointKeys(): Map<string, Uint8Array> {
  const keys = new Map<string, Uint8Array>();
  for (const entry of world.keystore.keys) {
    if (entry.purpose !== 'response-sign') continue;
    const spki = createPublicKey({ key: { ...entry.privateJwk }, format: 'jwk' }).export({
      format: 'der',
      type: 'spki',
    });
    keys.set(entry.kid, new Uint8Array(spki));
  }
  return keys;
}

/**
 * What a drained state file still holds besides terminal records: it must be nothing, except the
 * blobs and sender-share charges of dead-lettered traces (kept for their redrive).
 */
function leftovers(out: string): Record<string, unknown> {
  const state = new SqliteState(join(out, 'state.db'), { clock: systemClock, readonly: true });
  try {
    const all = (sql: string) => state.db.prepare(sql).all();
    const integrity = state.db.pragma('integrity_check', { simple: true });
    const deadTraces = new Set(
      (
        all('SELECT trace_id FROM outcomes WHERE outcome LIKE \'%"dead-lettered"%\'') as {
          trace_id: string;
        }[]
      ).map((r) => r.trace_id),
    );
    const blobs = (
      all('SELECT key, trace_id FROM blobs') as { key: string; trace_id: string | null }[]
    ).filter(
      (b) =>
        !(b.trace_id && deadTraces.has(b.trace_id)) && ![...deadTraces].some((t) => b.key.includes(`/${t}/`)),
    );
    const audit = state.audit.verify(checkpointKeys());
    return {
      integrity,
      queued: all('SELECT id, queue FROM messages WHERE dead_at IS NULL'),
      blobs: blobs.map((b) => b.key),
      bodyParts: all('SELECT key FROM body_parts WHERE key NOT IN (SELECT part FROM message_splices)'),
      orphanBodies: all('SELECT seq FROM message_bodies WHERE seq NOT IN (SELECT seq FROM messages)'),
      orphanSplices: all('SELECT seq FROM message_splices WHERE seq NOT IN (SELECT seq FROM messages)'),
      // A sender's share is charged in the commit that accepts its message and released in the one
      // that ends its trace; a dead letter keeps its row for the redrive.
      admissions: (all('SELECT trace_id FROM admissions') as { trace_id: string }[])
        .map((a) => a.trace_id)
        .filter((t) => !deadTraces.has(t)),
      auditBreak: audit.break ?? null,
    };
  } finally {
    state.close();
  }
}

const CLEAN = {
  integrity: 'ok',
  queued: [],
  blobs: [],
  bodyParts: [],
  orphanBodies: [],
  orphanSplices: [],
  admissions: [],
  auditBreak: null,
};

/**
 * Every deliverable message delivered exactly once, byte-identical; the over-cap one rejected 20015
 * on every trace that carried it; every trace in the file is a 202 the senders hold or the first
 * copy of a message whose resend was refused 20007 as its duplicate; exactly one signed response
 * per trace (20013 or its rejection code); no temporary or unexplained file in the delivery and
 * response folders.
 */
function accountFor(
  out: string,
  accepted: Map<string, Sealed>,
  messages: readonly Sealed[],
  tooLarge?: Sealed,
): { storedUnanswered: number } {
  const state = readState(out);
  try {
    const byMessageId = new Map(messages.map((m) => [m.msg.messageId, m]));
    const refusedAsDuplicate = new Set<string>();
    for (const [traceId, m] of accepted) {
      const outcome = state.outcome(traceId);
      expect(outcome, `202 ${traceId} has no outcome`).toBeDefined();
      if (m === tooLarge) {
        expect(outcome).toMatchObject({ status: 'rejected', itk3Code: '20015', code: 'MESSAGE_TOO_LARGE' });
      } else if (outcome!.status === 'rejected') {
        // Only the resend of a message whose first, unanswered submission was stored.
        expect(outcome).toMatchObject({ itk3Code: '20007', code: 'DUPLICATE_MESSAGE' });
        refusedAsDuplicate.add(m.msg.messageId);
      } else {
        expect(outcome!.status).toBe('delivered');
      }
    }
    // A trace no sender holds a 202 for was stored before the kill, its 202 never sent: the first
    // copy of a message whose resend was refused as its duplicate (or the over-cap one, refused).
    const traces = new Set(state.audit.map((e) => e.traceId));
    const unanswered = [...traces].filter((t) => !accepted.has(t));
    let unansweredDelivered = 0;
    for (const traceId of unanswered) {
      const outcome = state.outcome(traceId);
      if (outcome?.code === 'MESSAGE_TOO_LARGE' && tooLarge) continue;
      expect(outcome?.status, `unanswered trace ${traceId}`).toBe('delivered');
      expect(refusedAsDuplicate.has(outcome!.messageId!), `unanswered trace ${traceId} was resent`).toBe(
        true,
      );
      unansweredDelivered += 1;
    }
    expect(unansweredDelivered).toBe(refusedAsDuplicate.size);

    const delivered = worldPaths(out).delivered('A83627');
    const names = filesIn(delivered);
    expect(names.length).toBe(messages.length);
    for (const name of names) {
      const messageId = name.split('_')[1]!;
      const m = byMessageId.get(messageId);
      expect(m, `delivered file ${name} is one of the messages`).toBeDefined();
      expect(Buffer.compare(readFileSync(join(delivered, name)), Buffer.from(m!.msg.bytes))).toBe(0);
    }
    for (const m of messages) {
      expect(state.deliveredPerMessage.get(m.msg.messageId), `${m.msg.messageId} delivered`).toBe(1);
    }
    if (tooLarge) expect(state.deliveredPerMessage.get(tooLarge.msg.messageId)).toBeUndefined();
    // One response per trace, named by the trace and its code; no temporaries.
    const expected = [...traces].map((t) => {
      const outcome = state.outcome(t)!;
      return `${t}-${outcome.status === 'delivered' ? '20013' : outcome.itk3Code}.jws`;
    });
    expect(filesIn(worldPaths(out).responses('X26'))).toEqual(expected.sort());
    return { storedUnanswered: unanswered.length };
  } finally {
    state.close();
  }
}

type KillPoint = 'upload' | 'after-202' | 'stages' | 'delivery';

/** Whether a stage other than deliver holds a large record in flight (received, not finished). */
function stagesInFlight(out: string): boolean {
  if (!existsSync(join(out, 'state.db'))) return false;
  try {
    const state = new SqliteState(join(out, 'state.db'), { clock: systemClock, readonly: true });
    try {
      const row = state.db
        .prepare(
          "SELECT count(*) AS n FROM messages WHERE queue IN ('itk3-decrypt', 'itk3-verify') AND receipt_handle IS NOT NULL",
        )
        .get() as { n: number };
      return row.n > 0;
    } finally {
      state.close();
    }
  } catch {
    return false; // the file is being created
  }
}

describe('kill -9 of itk3 serve with large (claim-check) messages, restart on the same --out', () => {
  const caught: Record<KillPoint, boolean> = {
    upload: false,
    'after-202': false,
    stages: false,
    delivery: false,
  };
  const runs: { seed: number; point: KillPoint }[] = [
    { seed: 101, point: 'upload' },
    { seed: 202, point: 'after-202' },
    { seed: 303, point: 'stages' },
    { seed: 404, point: 'delivery' },
  ];
  for (const { seed, point } of runs) {
    it(`seed ${seed}, killed ${point}: every 202 delivered once with its bytes or refused with a response, nothing left over`, async () => {
      const random = prng(seed);
      const out = makeTempDir('itk3-large-crash-');
      const accepted = new Map<string, Sealed>();
      const answered = new Set<number>();
      // The over-cap message among them: a large rejection goes through the same crash points.
      const sent = [...mixed.slice(0, 3), overCap, ...mixed.slice(3)];
      let server: Server = await startServe(files, out, ['--workers', '2']);
      let killed = false;
      const kill = () => {
        if (killed) return;
        killed = true;
        server.proc.kill('SIGKILL');
      };
      const killAfterAnswers = 1 + Math.floor(random() * 3);
      const killDelayMs = Math.floor(random() * 30);
      const uploadFraction = 0.2 + random() * 0.7;

      // Watchers for the kill points that are not about answers.
      let watching = true;
      const watcher = (async () => {
        const deliveredDir = worldPaths(out).delivered('A83627');
        while (watching && !killed) {
          if (point === 'stages' && stagesInFlight(out)) {
            await sleep(killDelayMs);
            caught.stages = stagesInFlight(out) || caught.stages;
            kill();
          } else if (point === 'delivery' && filesIn(deliveredDir).length > 0) {
            // The first delivery file (or its temporary) exists: others are being written.
            caught.delivery = filesIn(deliveredDir).length < mixed.length;
            kill();
          }
          await sleep(2);
        }
      })();

      let next = 0;
      const sender = async () => {
        while (next < sent.length && !killed) {
          const i = next;
          next += 1;
          const m = sent[i]!;
          const credential = await freshCredential(world);
          try {
            // The upload kill: one near-cap body sent in pieces, the server killed part-way through.
            const r =
              point === 'upload' && i === 1
                ? await postInChunks(server.port, credential, m.sealed, 20, (sent) => {
                    if (sent >= uploadFraction && !killed) {
                      caught.upload = true;
                      kill();
                    }
                  })
                : await post(server.port, credential, m.sealed);
            if (r.status !== 202) continue;
            accepted.set(r.trackingId!, m);
            answered.add(i);
            if (point === 'after-202' && answered.size === killAfterAnswers) {
              caught['after-202'] = true;
              setTimeout(kill, killDelayMs);
            }
          } catch {
            // The connection died with the server: as far as the sender knows, not accepted.
          }
        }
      };
      await Promise.all([sender(), sender(), sender()]);
      // A kill point the run went past (everything finished first): kill now.
      if (!killed) await sleep(200);
      kill();
      watching = false;
      await watcher;
      expect((await server.exited).signal).toBe('SIGKILL');

      server = await startServe(files, out, ['--workers', '2']);
      for (const [i, m] of sent.entries()) {
        if (answered.has(i)) continue;
        const r = await post(server.port, await freshCredential(world), m.sealed);
        expect(r.status).toBe(202);
        accepted.set(r.trackingId!, m);
      }
      await waitUntilFinished(out, accepted.keys());
      server.proc.kill('SIGTERM');
      expect((await server.exited).code).toBe(0);
      const { storedUnanswered } = accountFor(out, accepted, mixed, overCap);
      const resumed = /resumed (\d+)/.exec(server.stdout.join('\n'))?.[1] ?? '0';
      process.stdout.write(
        `seed ${seed} (${point}): ${answered.size} answered before the kill, ${accepted.size} accepted in all, ${resumed} queued at restart, ${storedUnanswered} stored but unanswered\n`,
      );

      expect(leftovers(out)).toEqual(CLEAN);
    });
  }
  it('each kill landed where it was aimed', () => {
    expect(caught).toEqual({ upload: true, 'after-202': true, stages: true, delivery: true });
  });
});

describe('overload with near-cap messages', () => {
  it('a body that would pass --max-inflight-bytes is answered 503 with Retry-After, unread (before it is sent, when the sender expects 100-continue)', async () => {
    const out = makeTempDir('itk3-inflight-');
    const [first, second] = [mixed[1]!, mixed[4]!]; // near-cap: 9.3 MB sealed each
    // Room for one near-cap body being read, not two (the global bound: no per-sender share).
    const server = await startServe(files, out, [
      '--max-inflight-bytes',
      String(12 * MIB),
      '--max-backlog-share',
      '1',
    ]);
    try {
      let halfSent: () => void = () => undefined;
      const reading = new Promise<void>((done) => {
        halfSent = done;
      });
      const slow = postInChunks(server.port, await freshCredential(world), first.sealed, 40, (sent) => {
        if (sent >= 0.5) halfSent();
      });
      await reading;
      // A sender that sends headers and its first MiB, then reads: answered before the rest.
      const refused = await postWithPause(
        server.port,
        await freshCredential(world),
        second.sealed,
        MIB,
        3_000,
      );
      expect(refused).toEqual({ status: 503, retryAfter: '5', early: true });
      // A sender that asks first (`Expect: 100-continue`, as curl does) is told before it sends.
      const asked = await postExpectingContinue(server.port, await freshCredential(world), second.sealed);
      expect(asked).toEqual({ status: 503, retryAfter: '5', bodySent: false });
      const accepted = await slow;
      expect(accepted.status).toBe(202);
      // Once the first is answered there is room again: 100 Continue, then the 202.
      const later = await postExpectingContinue(server.port, await freshCredential(world), second.sealed);
      expect(later).toMatchObject({ status: 202, bodySent: true });
      await waitUntilFinished(out, [accepted.trackingId!, later.trackingId!]);
      const state = readState(out);
      try {
        // The refused body left nothing: two traces, both delivered.
        expect(new Set(state.audit.map((e) => e.traceId)).size).toBe(2);
        expect(state.deliveredPerMessage.get(first.msg.messageId)).toBe(1);
        expect(state.deliveredPerMessage.get(second.msg.messageId)).toBe(1);
      } finally {
        state.close();
      }
    } finally {
      server.proc.kill('SIGTERM');
      await server.exited;
    }
  });

  it('64 concurrent near-cap POSTs: 202, or 503 + Retry-After with the body unread; memory bounded by the limits; every 202 answered for', async () => {
    const out = makeTempDir('itk3-overload-');
    // Six distinct near-cap messages, each posted about 11 times at once: a 202'd copy after the first is
    // refused 20007 as its duplicate (with a response), so every 202 is still accounted for.
    const distinct = [mixed[1]!, mixed[4]!];
    while (distinct.length < 6) distinct.push(await sealLarge(NEAR_CAP));
    const inflightBound = 32 * MIB;
    const backlogBound = 32 * MIB;
    const server = await startServe(files, out, [
      '--workers',
      '2',
      '--max-inflight-bytes',
      String(inflightBound),
      '--max-backlog-bytes',
      String(backlogBound),
    ]);
    const pid = server.proc.pid!;
    try {
      const base = peakRss(pid);
      // Each sender sends its headers and first MiB, then waits (up to 8 s: on a host shared with
      // other test runs an answer due at once has taken over 3 s) for an early answer.
      const posts = await Promise.all(
        Array.from({ length: 64 }, async (_, i) => {
          const m = distinct[i % distinct.length]!;
          const r = await postWithPause(server.port, await freshCredential(world), m.sealed, MIB, 8_000);
          return { ...r, m };
        }),
      );
      // 0: the connection was closed while the body was still being sent (the 503 went out, but a
      // reset can reach a client that is mid-upload before it reads the answer).
      expect(posts.every((p) => [202, 503, 0].includes(p.status))).toBe(true);
      const refused = posts.filter((p) => p.status === 503);
      expect(refused.length).toBeGreaterThan(0);
      expect(refused.every((p) => p.retryAfter === '5')).toBe(true);
      // The burst arrives at once: the server reads in full only the bodies its in-flight bound
      // holds; every other one is answered before it was sent.
      const smallest = Math.min(...distinct.map((m) => Buffer.byteLength(m.sealed)));
      const readWhole = posts.filter((p) => !p.early);
      expect(readWhole.length).toBeLessThanOrEqual(Math.floor(inflightBound / smallest));
      const accepted = new Map(posts.filter((p) => p.status === 202).map((p) => [p.trackingId!, p.m]));
      expect(accepted.size).toBeGreaterThan(0);
      await waitUntilFinished(out, accepted.keys());
      const peak = peakRss(pid);
      process.stdout.write(
        `overload: ${accepted.size} accepted, ${refused.length} refused 503; peak RSS ${Math.round(peak / MIB)} MiB, ${Math.round((peak - base) / MIB)} MiB over the idle server\n`,
      );
      // A byte being read is held about three times (socket chunks, the joined body, its text); an
      // accepted one a few times more, briefly, by the stages (blob, text, worker copy, decrypted
      // JWS, Bundle). What the server holds is bounded by the bytes it may read and queue, not by
      // how many senders post at once (64 near-cap bodies are 600 MB).
      expect(peak - base).toBeLessThan(8 * (inflightBound + backlogBound));

      const state = readState(out);
      try {
        expect(state.queued).toBe(0);
        // A refused body left nothing: the traces in the file are exactly the 202s.
        expect(new Set(state.audit.map((e) => e.traceId))).toEqual(new Set(accepted.keys()));
        const deliveredOnce = new Set<string>();
        for (const [traceId, m] of accepted) {
          const outcome = state.outcome(traceId)!;
          if (outcome.status === 'delivered') {
            expect(deliveredOnce.has(m.msg.messageId)).toBe(false);
            deliveredOnce.add(m.msg.messageId);
          } else {
            expect(outcome).toMatchObject({
              status: 'rejected',
              itk3Code: '20007',
              code: 'DUPLICATE_MESSAGE',
            });
          }
        }
        for (const id of new Set([...accepted.values()].map((m) => m.msg.messageId))) {
          expect(state.deliveredPerMessage.get(id)).toBe(1);
        }
      } finally {
        state.close();
      }
      expect(leftovers(out)).toEqual(CLEAN);
    } finally {
      server.proc.kill('SIGTERM');
      await server.exited;
    }
  });
});

describe('a crash between storing a claim-check blob and committing its inbound message', () => {
  it('the next start drops the blob no message owns, so it no longer counts against the backlog', async () => {
    const out = makeTempDir('itk3-unowned-blob-');
    const file = join(out, 'state.db');
    const m = mixed[0]!; // 1 MiB Bundle: its 1.9 MB JWE goes to the blob store
    const first = new SqliteState(file, { clock: systemClock });
    const pipeline = new EmbeddedPipeline({
      config: world.config,
      keys: keyService(world),
      baseDir: out,
      clock: systemClock,
      state: first,
    });
    // The front door stores the JWE, then commits the inbound message. Anything else committing in
    // between (a receive, a handler's unit of work, the group commit: one turn of the event loop)
    // makes the blob durable on its own; the process dies right then.
    let died: () => void = () => undefined;
    const dead = new Promise<void>((done) => {
      died = done;
    });
    void ingest(
      {
        authorization: `Bearer ${await freshCredential(world)}`,
        body: m.sealed,
        receivedAt: Date.now(),
        source: 'http',
      },
      {
        blobs: pipeline.blobs,
        queues: {
          ...pipeline.ports.queues,
          sendInbound: async () => {
            await new Promise((turn) => setImmediate(turn));
            died();
            return new Promise<string>(() => undefined); // no 202: the process is gone
          },
        },
      },
      world.config,
    );
    await dead;
    first.db.close(); // kill -9: nothing more is written, nothing is rolled forward

    const state = new SqliteState(file, { clock: systemClock });
    try {
      expect(state.blobs.size).toBe(1); // what the crash left
      const restarted = new EmbeddedPipeline({
        config: world.config,
        keys: keyService(world),
        baseDir: out,
        clock: systemClock,
        state,
      });
      expect(restarted.resume()).toBe(0);
      expect(state.blobs.size).toBe(0);
      expect(restarted.backlog()).toEqual({ messages: 0, bytes: 0 });
      // The sender never saw a 202 and sends again: delivered once, nothing left.
      const again = await restarted.submit(await freshCredential(world), m.sealed);
      expect(again.status).toBe(202);
      await restarted.drain();
      expect((await restarted.outcome((again as { trackingId: string }).trackingId)).status).toBe(
        'delivered',
      );
      expect(state.blobs.size).toBe(0);
      expect(restarted.backlog()).toEqual({ messages: 0, bytes: 0 });
    } finally {
      state.close();
    }
  });
});

describe('large messages dead-lettered across a crash, then redriven', () => {
  it('kill -9 while their deliveries fail; the re-run dead-letters them with the reason and keeps their blobs; a redrive delivers each once', async () => {
    const dir = makeTempDir('itk3-large-dlq-');
    const inbox = join(dir, 'inbox');
    const out = join(dir, 'run');
    mkdirSync(inbox);
    const messages = [mixed[0]!, mixed[1]!]; // 1 MiB and near-cap
    for (const [i, m] of messages.entries()) {
      writeFileSync(join(inbox, `m${i}.jwe`), m.sealed);
      writeFileSync(join(inbox, `m${i}.jwt`), await freshCredential(world));
    }
    // A file where the recipient's folder should be: every delivery fails (retried each second).
    const blocked = worldPaths(out).delivered('A83627');
    mkdirSync(dirname(blocked), { recursive: true });
    writeFileSync(blocked, 'not a folder');
    const args = ['--config', files.config, '--keystore', files.keystore, '--out', out];
    const deliveryFailures = () => {
      let state: ReturnType<typeof readState>;
      try {
        state = readState(out);
      } catch {
        return 0; // the file is being created
      }
      try {
        return state.audit.filter((e) => e.event === 'transient-failure' && e.stage === 'deliver').length;
      } finally {
        state.close();
      }
    };

    const first = spawnItk3(['process', inbox, ...args, '--workers', '2']);
    await waitFor(
      () => existsSync(join(out, 'state.db')) && deliveryFailures() > 0,
      30_000,
      'a failed delivery',
    );
    first.proc.kill('SIGKILL');
    expect((await first.exited).signal).toBe('SIGKILL');

    const second = spawnItk3(['process', inbox, ...args, '--workers', '2']);
    expect((await second.exited).code).toBe(1); // not delivered
    const lines = second.stdout.map((l) => JSON.parse(l) as { status: string; error: string | null });
    expect(lines).toHaveLength(messages.length);
    for (const l of lines)
      expect(l).toMatchObject({ status: 'dead-lettered', error: 'DELIVERY_UNAVAILABLE' });
    // Kept for the redrive: what the start's sweep of unowned blobs must not take.
    expect(storedLeftovers(out).blobs).toBeGreaterThanOrEqual(messages.length);

    rmSync(blocked);
    const redrive = spawnItk3(['dlq', 'redrive', 'all', ...args]);
    expect((await redrive.exited).code, redrive.stderr.join('')).toBe(0);
    const redriven = redrive.stdout.map((l) => JSON.parse(l) as { status: string });
    expect(redriven.map((r) => r.status)).toEqual(messages.map(() => 'delivered'));
    const delivered = worldPaths(out).delivered('A83627');
    const state = readState(out);
    try {
      for (const m of messages) {
        expect(state.deliveredPerMessage.get(m.msg.messageId)).toBe(1);
        const name = filesIn(delivered).find((f) => f.split('_')[1] === m.msg.messageId)!;
        expect(Buffer.compare(readFileSync(join(delivered, name)), Buffer.from(m.msg.bytes))).toBe(0);
      }
    } finally {
      state.close();
    }
    expect(leftovers(out)).toEqual(CLEAN);
  });
});
