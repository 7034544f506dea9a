/**
 * Issue 9, class 4 — amplification by the unauthenticated, at the level of the batch processor and
 * the front door, with real crypto and the real local adapters: an unauthenticated rejection costs
 * one audit entry and nothing else (no signature, no stored response, no once-store write, no
 * claim-check blob); the front door checks the credential before it stores anything; claim-check
 * blobs are removed when their trace ends, whichever way it ends.
 */
import '../../support/env.js';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ingest } from '../../../lib/ingest.js';
import { PIPELINE_STAGES } from '../../../lib/pipeline/stages.js';
import type { StageName } from '../../../lib/pipeline/topology.js';
import type { PipelineRecord } from '../../../lib/record.js';
import { parseRecord, serialiseRecord } from '../../../lib/record.js';
import { processStageBatch, type StageObserver } from '../../../lib/stages/batch.js';
import type { DemoWorld } from '../../../lib/testkit/world.js';
import { CountingKeys } from '../../security/support.js';
import { sqsEvent, sqsRecord, stageContext, type TestStageContext } from '../../support/records.js';
import {
  buildMessage,
  configWithLimits,
  credentialFor,
  filesBelow,
  makeTempDir,
  removeTempDirs,
  sealAs,
  sealCustom,
  testWorld,
} from '../../support/world.js';

let world: DemoWorld;

beforeAll(async () => {
  world = await testWorld();
});
afterAll(removeTempDirs);

/** Claim checks from 8 KiB up, so ordinary test messages exercise the blob store. */
function context(keys = new CountingKeys(world.keystore)) {
  const baseDir = makeTempDir();
  const ctx = stageContext(world, {
    baseDir,
    keys,
    config: configWithLimits(world, { claimCheckBytes: 8 * 1024 }),
  });
  return Object.assign(ctx, { baseDir, keys });
}

const observed: Parameters<StageObserver['record']>[0][] = [];
const observer: StageObserver = { record: (event) => observed.push(event) };

/** A compact-JWE-shaped body of about `bytes` characters: garbage, but it passes the shape check. */
function garbageEnvelope(bytes: number): string {
  return `eyJhbGciOiJ4In0.${'A'.repeat(Math.max(1, bytes - 40))}.AAAA.AAAA.AAAA`;
}

/** Run `stage` on one queue body, as the event source would, and return what it forwarded. */
async function runStage(
  ctx: TestStageContext,
  stage: StageName,
  body: string,
  opts: { attributes?: Record<string, string>; messageId?: string } = {},
): Promise<PipelineRecord[]> {
  const before = ctx.queues.sent.length;
  const response = await processStageBatch(
    PIPELINE_STAGES[stage],
    sqsEvent([sqsRecord(body, { sentAt: ctx.clock.now(), ...opts })]),
    ctx,
    observer,
  );
  expect(response.batchItemFailures).toEqual([]);
  return ctx.queues.sent.slice(before).map((s) => parseRecord(s.body));
}

/** Take the front door's queued submission through all five stages; returns the deliver input. */
async function throughPipeline(ctx: TestStageContext, trackingId: string): Promise<PipelineRecord[]> {
  const inbound = ctx.queues.sent.find((s) => s.messageId === trackingId)!;
  let records = await runStage(ctx, 'authenticate', inbound.body, {
    attributes: inbound.attributes ?? {},
    messageId: trackingId,
  });
  for (const stage of ['authorise', 'decrypt', 'verify'] as const) {
    const next: PipelineRecord[] = [];
    for (const r of records) {
      if (r.rejection) next.push(r);
      else next.push(...(await runStage(ctx, stage, serialiseRecord(r))));
    }
    records = next;
  }
  for (const r of records) await runStage(ctx, 'deliver', serialiseRecord(r));
  return records;
}

describe('an unauthenticated rejection is audited and counted, and that is all', () => {
  it('N anonymous garbage submissions on the inbound queue: no signature, no response, no store write', async () => {
    const ctx = context();
    const n = 50;
    observed.length = 0;
    for (let i = 0; i < n; i += 1) {
      const attributes: Record<string, string> =
        i % 2 === 0 ? {} : { Authorization: `Bearer ${randomUUID()}.x.y` };
      const forwarded = await runStage(ctx, 'authenticate', garbageEnvelope(200), { attributes });
      expect(forwarded).toEqual([]);
    }
    expect(ctx.keys.signs).toBe(0);
    expect(ctx.keys.unwraps).toBe(0);
    expect(ctx.queues.sent).toEqual([]);
    expect(filesBelow(ctx.baseDir)).toEqual([]);
    // No once-store write at all: no outcome marker, no jti, no stored response.
    expect(ctx.once.size).toBe(0);
    // One audit entry per submission: the rejection, with no message id or sender.
    expect(ctx.audit.count).toBe(n);
    for (const entry of ctx.audit.all()) {
      expect(Object.keys(entry).sort()).toEqual(['at', 'code', 'event', 'itk3Code', 'stage', 'traceId']);
      expect(entry).toMatchObject({ stage: 'authenticate', event: 'rejected', itk3Code: '20012' });
    }
    // Counted once each.
    expect(observed.filter((e) => e.result === 'rejected')).toHaveLength(n);
  });

  it('a redelivery of the same anonymous submission adds no second audit entry', async () => {
    const ctx = context();
    const messageId = randomUUID();
    const body = garbageEnvelope(200);
    await runStage(ctx, 'authenticate', body, { messageId });
    await processStageBatch(
      PIPELINE_STAGES.authenticate,
      sqsEvent([sqsRecord(body, { messageId, receiveCount: 2, sentAt: ctx.clock.now() })]),
      ctx,
      observer,
    );
    expect(ctx.audit.count).toBe(1);
  });

  it('the exact replay of a delivered (credential, sealed) pair: refused at authenticate, nothing decrypted, signed or sent to the real sender', async () => {
    const ctx = context();
    const credential = await credentialFor(world, 'X26', ctx.clock.now());
    const sealed = await sealAs(world, 'X26', buildMessage('X26'));
    const attributes = { Authorization: `Bearer ${credential}` };
    const original = await runStage(ctx, 'authenticate', sealed, { attributes });
    expect(original).toHaveLength(1);
    const { signs, unwraps } = ctx.keys;
    const before = ctx.audit.count;

    const replay = await runStage(ctx, 'authenticate', sealed, { attributes });
    expect(replay).toEqual([]);
    expect({ signs: ctx.keys.signs - signs, unwraps: ctx.keys.unwraps - unwraps }).toEqual({
      signs: 0,
      unwraps: 0,
    });
    expect(ctx.audit.all().slice(before)).toEqual([
      expect.objectContaining({ stage: 'authenticate', event: 'rejected', code: 'TOKEN_REPLAYED' }),
    ]);
  });
});

const submit = (ctx: TestStageContext, authorization: string | undefined, body: string) =>
  ingest({ authorization, body, receivedAt: ctx.clock.now(), source: 'http' }, ctx.ports, ctx.config);

describe('the front door checks the credential before it stores anything', () => {
  it('a 9 MB anonymous body: 401, no claim-check blob, nothing queued', async () => {
    const ctx = context();
    const body = garbageEnvelope(9_000_000);
    for (const authorization of [undefined, 'Bearer not.a.jwt', `Bearer ${await forged(ctx)}`]) {
      const result = await submit(ctx, authorization, body);
      expect(result.status).toBe(401);
    }
    expect(ctx.blobs.size).toBe(0);
    expect(ctx.queues.sent).toEqual([]);
  });

  it('an expired credential: 401 TOKEN_EXPIRED, before anything is stored', async () => {
    const ctx = context();
    const iat = Math.floor(ctx.clock.now() / 1000) - 900;
    const expired = await credentialFor(world, 'X26', ctx.clock.now(), { iat, exp: iat + 300 });
    const result = await submit(ctx, `Bearer ${expired}`, garbageEnvelope(64 * 1024));
    expect(result).toMatchObject({ status: 401, error: 'TOKEN_REJECTED', reason: 'TOKEN_EXPIRED' });
    expect(ctx.blobs.size).toBe(0);
    expect(ctx.queues.sent).toEqual([]);
  });

  it('a valid credential with a large envelope: stored as a claim check, removed if it cannot be queued', async () => {
    const ctx = context();
    const credential = await credentialFor(world, 'X26', ctx.clock.now());
    const body = await sealAs(world, 'X26', buildMessage('X26', { attachmentBytes: 64 * 1024 }));
    const accepted = await submit(ctx, `Bearer ${credential}`, body);
    expect(accepted.status).toBe(202);
    expect(ctx.blobs.size).toBe(1);

    ctx.ports.queues = {
      ...ctx.ports.queues,
      sendInbound: async () => {
        throw new Error('queue unavailable');
      },
    };
    const again = await credentialFor(world, 'X26', ctx.clock.now());
    const refused = await submit(ctx, `Bearer ${again}`, body);
    expect(refused.status).toBe(503);
    // Only the first (queued) submission's blob is left; the refused one's was removed.
    expect(ctx.blobs.size).toBe(1);
  });
});

describe('the front door is no oracle', () => {
  it('an unknown issuer, an unknown key id, a bad signature and an expired credential get the same answer', async () => {
    const ctx = context();
    const real = await credentialFor(world, 'X26', ctx.clock.now());
    const [h, p] = real.split('.') as [string, string];
    const header = JSON.parse(Buffer.from(h, 'base64url').toString('utf8')) as Record<string, unknown>;
    const claims = JSON.parse(Buffer.from(p, 'base64url').toString('utf8')) as Record<string, unknown>;
    const enc = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const iat = Math.floor(ctx.clock.now() / 1000) - 900;
    const cases = [
      `${h}.${enc({ ...claims, iss: 'https://issuer.invalid' })}.${real.split('.')[2]}`,
      `${enc({ ...header, kid: 'no-such-kid' })}.${p}.${real.split('.')[2]}`,
      await forged(ctx),
      await credentialFor(world, 'X26', ctx.clock.now(), { iat, exp: iat + 300 }),
    ];
    const answers = new Set<string>();
    const reasons = new Set<string>();
    for (const credential of cases) {
      const result = await submit(ctx, `Bearer ${credential}`, garbageEnvelope(500));
      if (result.status === 202) throw new Error('accepted');
      answers.add(JSON.stringify({ status: result.status, error: result.error, message: result.message }));
      reasons.add(result.reason ?? '');
    }
    expect([...answers]).toEqual([
      JSON.stringify({ status: 401, error: 'TOKEN_REJECTED', message: 'the credential was not accepted' }),
    ]);
    // The log still tells them apart.
    expect(reasons.size).toBe(4);
  });
});

describe('claim-check blobs are removed when their trace ends', () => {
  it('after delivery', async () => {
    const ctx = context();
    const credential = await credentialFor(world, 'X26', ctx.clock.now());
    const msg = buildMessage('X26', { attachmentBytes: 64 * 1024 });
    const result = await ingest(
      {
        authorization: `Bearer ${credential}`,
        body: await sealAs(world, 'X26', msg),
        receivedAt: ctx.clock.now(),
        source: 'http',
      },
      ctx.ports,
      ctx.config,
    );
    if (result.status !== 202) throw new Error('refused');
    const [deliverInput] = await throughPipeline(ctx, result.trackingId);
    // The envelope, the inner JWS and the Bundle were all claim checks on the way.
    expect(deliverInput?.message && 'ref' in deliverInput.message.bundle).toBe(true);
    expect(deliverInput?.claimChecks).toHaveLength(2);
    expect(ctx.blobs.size).toBe(0);
    expect(ctx.audit.all().some((e) => e.event === 'delivered')).toBe(true);
  });

  it('after an authenticated rejection (answered at deliver)', async () => {
    const ctx = context();
    const credential = await credentialFor(world, 'X26', ctx.clock.now());
    const msg = buildMessage('X26', { attachmentBytes: 64 * 1024 });
    const sealed = await sealCustom(world, msg, { signer: 'FQ123', recipientKey: 'A83627' });
    const result = await ingest(
      { authorization: `Bearer ${credential}`, body: sealed, receivedAt: ctx.clock.now(), source: 'http' },
      ctx.ports,
      ctx.config,
    );
    if (result.status !== 202) throw new Error('refused');
    const [job] = await throughPipeline(ctx, result.trackingId);
    expect(job?.rejection).toMatchObject({ stage: 'verify', code: 'SIGNATURE_KEY_NOT_SENDERS' });
    expect(ctx.keys.signs).toBe(1);
    expect(ctx.blobs.size).toBe(0);
  });

  it('after an unauthenticated rejection (at authenticate), with no response', async () => {
    const ctx = context();
    const credential = await credentialFor(world, 'X26', ctx.clock.now());
    const body = await sealAs(world, 'X26', buildMessage('X26', { attachmentBytes: 64 * 1024 }));
    const first = await ingest(
      { authorization: `Bearer ${credential}`, body, receivedAt: ctx.clock.now(), source: 'http' },
      ctx.ports,
      ctx.config,
    );
    if (first.status !== 202) throw new Error('refused');
    await throughPipeline(ctx, first.trackingId);
    // The captured pair replayed through the front door (the credential is still in date there).
    const replay = await ingest(
      { authorization: `Bearer ${credential}`, body, receivedAt: ctx.clock.now(), source: 'http' },
      ctx.ports,
      ctx.config,
    );
    if (replay.status !== 202) throw new Error('refused');
    expect(ctx.blobs.size).toBe(1);
    const signs = ctx.keys.signs;
    expect(await throughPipeline(ctx, replay.trackingId)).toEqual([]);
    expect(ctx.keys.signs).toBe(signs);
    expect(ctx.blobs.size).toBe(0);
  });

  it('a claim-check body naming another trace’s artefact is refused, and nothing is removed', async () => {
    const ctx = context();
    await ctx.blobs.put('claim-check/victim-trace/bundle.xml', new TextEncoder().encode('<Bundle/>'));
    const body = JSON.stringify({
      claimCheck: { key: 'claim-check/victim-trace/bundle.xml', bytes: 9, sha256: '0'.repeat(64) },
    });
    expect(await runStage(ctx, 'authenticate', body)).toEqual([]);
    expect(ctx.audit.all()).toEqual([expect.objectContaining({ code: 'ENVELOPE_MALFORMED' })]);
    expect(ctx.blobs.size).toBe(1);
  });
});

/** A credential for X26 whose signature is not the issuer's. */
async function forged(ctx: TestStageContext): Promise<string> {
  const real = await credentialFor(world, 'X26', ctx.clock.now());
  const [h, p] = real.split('.');
  return `${h}.${p}.${Buffer.alloc(256, 1).toString('base64url')}`;
}
