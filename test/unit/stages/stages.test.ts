/**
 * The five stages called directly, with real crypto and the real local adapters (software keys,
 * in-memory once-store, blob store and audit log, folder delivery, a recording queue sender).
 * Every rejection class the end-to-end scenario does not already cover is asserted by its class,
 * its catalogue code and its ITK3 code.
 */
import '../../support/env.js';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { LoadedConfig } from '../../../lib/config/load.js';
import {
  AuthenticationError,
  AuthorisationError,
  DecryptionError,
  EnvelopeError,
  Itk3ValidationError,
  type RejectionCode,
  RejectionError,
  SignatureError,
  TransientError,
} from '../../../lib/errors.js';
import { validateItk3 } from '../../../lib/itk3/index.js';
import { PIPELINE_STAGES } from '../../../lib/pipeline/stages.js';
import { type PipelineRecord, parseRecord, serialiseRecord } from '../../../lib/record.js';
import { authenticateRecord } from '../../../lib/stages/authenticate.js';
import { authoriseRecord } from '../../../lib/stages/authorise.js';
import { processStageBatch, type StageObserver } from '../../../lib/stages/batch.js';
import { decryptRecord } from '../../../lib/stages/decrypt.js';
import { deliverRecord, deliveryName, responseName } from '../../../lib/stages/deliver.js';
import { verifyRecord } from '../../../lib/stages/verify.js';
import { type DemoWorld, GATEWAY_ODS, worldPaths } from '../../../lib/testkit/world.js';
import { CountingKeys } from '../../security/support.js';
import {
  ingressRecord,
  sqsEvent,
  sqsRecord,
  stageContext,
  type TestStageContext,
} from '../../support/records.js';
import {
  type BuiltMessage,
  buildMessage,
  configWith,
  configWithLimits,
  credentialFor,
  filesIn,
  keyService,
  makeTempDir,
  removeTempDirs,
  type SenderOds,
  sealAs,
  sealCustom,
  testWorld,
  verifyResponse,
} from '../../support/world.js';

let world: DemoWorld;

beforeAll(async () => {
  world = await testWorld();
});
afterAll(removeTempDirs);

function context(
  opts: { config?: LoadedConfig; keys?: TestStageContext['ports']['keys'] } = {},
): TestStageContext & { paths: ReturnType<typeof worldPaths> } {
  const baseDir = makeTempDir();
  return Object.assign(stageContext(world, { baseDir, ...opts }), { paths: worldPaths(baseDir) });
}

/** The front door's record for `msg` sealed by `sender` (or `sealed`), with `sender`'s credential. */
async function recordFor(
  ctx: TestStageContext,
  sender: SenderOds,
  msg: BuiltMessage,
  opts: { sealed?: string; credential?: string } = {},
): Promise<PipelineRecord> {
  return ingressRecord({
    credential: opts.credential ?? (await credentialFor(world, sender, ctx.clock.now())),
    sealed: opts.sealed ?? (await sealAs(world, sender, msg)),
    receivedAt: ctx.clock.now(),
  });
}

type Upto = 'authenticate' | 'authorise' | 'decrypt' | 'verify';

/** Run a record through the stages up to and including `upto`, as the queues would. */
async function through(ctx: TestStageContext, record: PipelineRecord, upto: Upto): Promise<PipelineRecord> {
  let r = await authenticateRecord({ record, inboundMessageId: record.traceId }, ctx);
  if (upto === 'authenticate') return r;
  r = await authoriseRecord(r, ctx);
  if (upto === 'authorise') return r;
  r = await decryptRecord(r, ctx);
  if (upto === 'decrypt') return r;
  return verifyRecord(r, ctx);
}

async function rejection(promise: Promise<unknown>): Promise<RejectionError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, 'expected the stage to reject').toBeInstanceOf(RejectionError);
  return error as RejectionError;
}

async function expectRejected(
  promise: Promise<unknown>,
  type: new (...args: never[]) => RejectionError,
  code: RejectionCode,
  itk3Code: string,
): Promise<RejectionError> {
  const error = await rejection(promise);
  expect(error).toBeInstanceOf(type);
  expect({ code: error.code, itk3Code: error.itk3Code }).toEqual({ code, itk3Code });
  return error;
}

const silentObserver: StageObserver = { record: () => undefined };

/** Where a delivered or answered record went. */
function locationOf(outcome: Awaited<ReturnType<typeof deliverRecord>>): string {
  if (outcome.kind === 'unanswered') throw new Error('expected a delivery or a response');
  return outcome.location;
}

describe('authenticate', () => {
  it('turns a valid credential into a principal and drops the credential', async () => {
    const ctx = context();
    const record = await recordFor(ctx, 'X26', buildMessage('X26'));
    const out = await authenticateRecord({ record, inboundMessageId: 'sqs-1' }, ctx);
    // Booleans, not values: a failure must never print a credential or an envelope.
    expect('credential' in out).toBe(false);
    expect(JSON.stringify(out.sealed) === JSON.stringify(record.sealed)).toBe(true);
    expect(out.principal).toMatchObject({
      issuer: 'pharmacy-federation',
      organisation: 'X26',
      subject: 'x26-pharmacy-pms',
      actors: [],
      roles: ['itk3-sender'],
    });
  });

  it('rejects a record with no credential: TOKEN_MISSING', async () => {
    const ctx = context();
    const record = ingressRecord({ sealed: await sealAs(world, 'X26', buildMessage('X26')) });
    await expectRejected(
      authenticateRecord({ record, inboundMessageId: 'sqs-1' }, ctx),
      AuthenticationError,
      'TOKEN_MISSING',
      '20012',
    );
  });

  it('rejects a record with no sealed message: TOKEN_MISSING', async () => {
    const ctx = context();
    const record = ingressRecord({ credential: await credentialFor(world, 'X26', ctx.clock.now()) });
    await expectRejected(
      authenticateRecord({ record, inboundMessageId: 'sqs-1' }, ctx),
      AuthenticationError,
      'TOKEN_MISSING',
      '20012',
    );
  });

  it('the same inbound message redelivered is not a replay', async () => {
    const ctx = context();
    const record = await recordFor(ctx, 'X26', buildMessage('X26'));
    const first = await authenticateRecord({ record, inboundMessageId: 'sqs-1' }, ctx);
    const again = await authenticateRecord({ record, inboundMessageId: 'sqs-1' }, ctx);
    expect(again.principal).toEqual(first.principal);
  });

  it('the same credential on another inbound message is TOKEN_REPLAYED', async () => {
    const ctx = context();
    const credential = await credentialFor(world, 'X26', ctx.clock.now());
    const first = await recordFor(ctx, 'X26', buildMessage('X26'), { credential });
    const second = await recordFor(ctx, 'X26', buildMessage('X26'), { credential });
    await authenticateRecord({ record: first, inboundMessageId: 'sqs-1' }, ctx);
    await expectRejected(
      authenticateRecord({ record: second, inboundMessageId: 'sqs-2' }, ctx),
      AuthenticationError,
      'TOKEN_REPLAYED',
      '20012',
    );
  });
});

describe('authenticate: a jti belongs to the first trace that presents it (issue 9, class 4)', () => {
  it('the exact replay of a captured (credential, sealed message) pair as a new submission is TOKEN_REPLAYED', async () => {
    const ctx = context();
    const original = await recordFor(ctx, 'X26', buildMessage('X26'));
    await authenticateRecord({ record: original, inboundMessageId: original.traceId }, ctx);
    // Same bytes, new queue message: the queue gave it another trace id.
    const replay: PipelineRecord = { ...original, traceId: 'replayed-queue-message' };
    await expectRejected(
      authenticateRecord({ record: replay, inboundMessageId: replay.traceId }, ctx),
      AuthenticationError,
      'TOKEN_REPLAYED',
      '20012',
    );
  });

  it('a redelivery or redrive of the same queue message (same trace) passes, however often', async () => {
    const ctx = context();
    const record = await recordFor(ctx, 'X26', buildMessage('X26'));
    for (let i = 0; i < 3; i += 1) {
      const out = await authenticateRecord({ record, inboundMessageId: record.traceId }, ctx);
      expect(out.principal?.organisation).toBe('X26');
    }
  });
});

describe('authorise', () => {
  it('decides on the principal and the JWE header alone, with no key-service call', async () => {
    const calls: string[] = [];
    const ctx = context({ keys: keyService(world, { beforeCall: (op) => void calls.push(op) }) });
    const msg = buildMessage('X26');
    const out = await through(ctx, await recordFor(ctx, 'X26', msg), 'authorise');
    expect(out.decision).toEqual({
      ruleId: 'x26-immunisation-to-gp',
      recipient: 'A83627',
      kid: world.recipients.A83627.key.kid,
    });
    expect(out.routing).toEqual(msg.routing);
    expect(calls).toEqual([]);
  });

  it('rejects an organisation that is not a registered sender: SENDER_UNKNOWN 20003', async () => {
    const ctx = context();
    const msg = buildMessage('X26');
    // A trusted issuer vouches for FZ999, inside its scope (F*) but not configured as a sender here.
    const credential = await credentialFor(world, 'X26', ctx.clock.now(), {
      claims: { organisation: { ods_code: 'FZ999' } },
    });
    const sealed = await sealCustom(world, msg, {
      signer: 'X26',
      recipientKey: 'A83627',
      jweRouting: { ...msg.routing, from: 'FZ999' },
    });
    const record = await through(
      ctx,
      await recordFor(ctx, 'X26', msg, { credential, sealed }),
      'authenticate',
    );
    expect(record.principal?.organisation).toBe('FZ999');
    await expectRejected(authoriseRecord(record, ctx), AuthorisationError, 'SENDER_UNKNOWN', '20003');
  });

  it('rejects an envelope key id of another recipient: ENVELOPE_KEY_UNKNOWN 10009', async () => {
    const ctx = context();
    const msg = buildMessage('X26');
    const sealed = await sealCustom(world, msg, {
      signer: 'X26',
      recipientKey: 'A8797979',
      kid: world.recipients.A8797979.key.kid,
    });
    const record = await through(ctx, await recordFor(ctx, 'X26', msg, { sealed }), 'authenticate');
    await expectRejected(authoriseRecord(record, ctx), EnvelopeError, 'ENVELOPE_KEY_UNKNOWN', '10009');
  });

  it('rejects a client the matching rule does not list: POLICY_DENIED', async () => {
    const doc = structuredClone(world.configDoc);
    doc.senders.find((s) => s.ods === 'GP0001')!.clients = ['gp0001-ehr', 'gp0001-portal'].map((sub) => ({
      issuer: 'nhs-identity',
      sub,
    }));
    const ctx = context({ config: configWith(world, { senders: doc.senders }) });
    const msg = buildMessage('GP0001');
    const credential = await credentialFor(world, 'GP0001', ctx.clock.now(), {
      claims: { sub: 'gp0001-portal' },
    });
    const record = await through(ctx, await recordFor(ctx, 'GP0001', msg, { credential }), 'authenticate');
    expect(record.principal?.subject).toBe('gp0001-portal');
    await expectRejected(authoriseRecord(record, ctx), AuthorisationError, 'POLICY_DENIED', '20012');
  });
});

describe('decrypt', () => {
  it('yields the inner JWS and drops the sealed message', async () => {
    const ctx = context();
    const out = await through(ctx, await recordFor(ctx, 'X26', buildMessage('X26')), 'decrypt');
    expect('sealed' in out).toBe(false);
    expect(out.signed && 'inline' in out.signed && out.signed.inline.split('.').length).toBe(3);
  });

  it('ciphertext for another recipient’s key under this kid: DECRYPT_FAILED 10009', async () => {
    const ctx = context();
    const msg = buildMessage('X26');
    // Claims A83627's key id but the CEK is wrapped for A8797979's key.
    const sealed = await sealCustom(world, msg, {
      signer: 'X26',
      recipientKey: 'A8797979',
      kid: world.recipients.A83627.key.kid,
    });
    const record = await through(ctx, await recordFor(ctx, 'X26', msg, { sealed }), 'authorise');
    const error = await expectRejected(
      decryptRecord(record, ctx),
      DecryptionError,
      'DECRYPT_FAILED',
      '10009',
    );
    expect(error.cause).toBeUndefined();
  });

  it('a TransientError from the key service propagates unchanged, never as DECRYPT_FAILED', async () => {
    const fault = new TransientError('KEY_SERVICE_UNAVAILABLE', 'throttled');
    const ctx = context({
      keys: keyService(world, {
        beforeCall: (op) => {
          if (op === 'unwrapKey') throw fault;
        },
      }),
    });
    const record = await through(ctx, await recordFor(ctx, 'X26', buildMessage('X26')), 'authorise');
    const error = await decryptRecord(record, ctx).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBe(fault);
    expect(error).not.toBeInstanceOf(RejectionError);
  });

  it('a decision made for another key id than the envelope’s: ENVELOPE_KEY_UNKNOWN 10009', async () => {
    const ctx = context();
    const record = await through(ctx, await recordFor(ctx, 'X26', buildMessage('X26')), 'authorise');
    const tampered: PipelineRecord = {
      ...record,
      decision: { ...record.decision!, kid: world.recipients.A8797979.key.kid },
    };
    await expectRejected(decryptRecord(tampered, ctx), EnvelopeError, 'ENVELOPE_KEY_UNKNOWN', '10009');
  });
});

describe('verify', () => {
  /** Run `msg` (sealed as given) up to decrypt, then verify it. */
  async function verifyOf(
    ctx: TestStageContext,
    sender: SenderOds,
    msg: BuiltMessage,
    opts: { sealed?: string } = {},
  ): Promise<PipelineRecord> {
    const record = await through(ctx, await recordFor(ctx, sender, msg, opts), 'decrypt');
    return verifyRecord(record, ctx);
  }

  it('hands deliver a verified message and drops the inner JWS', async () => {
    const ctx = context();
    const msg = buildMessage('X26', { senderReference: 'ref-123' });
    const out = await verifyOf(ctx, 'X26', msg);
    expect('signed' in out).toBe(false);
    const { bundle: _bundle, ...facts } = out.message!;
    expect(facts).toMatchObject({
      messageId: msg.messageId,
      documentId: msg.documentId,
      event: 'ITK009D',
      sender: 'X26',
      recipient: 'A83627',
      format: 'xml',
      infAckRequested: true,
      busAckRequested: true,
      senderReference: 'ref-123',
    });
  });

  it('a JWS signed with FQ123’s key for a message sent by X26: SIGNATURE_KEY_NOT_SENDERS', async () => {
    const ctx = context();
    const msg = buildMessage('X26');
    const sealed = await sealCustom(world, msg, { signer: 'FQ123', recipientKey: 'A83627' });
    await expectRejected(
      verifyOf(ctx, 'X26', msg, { sealed }),
      SignatureError,
      'SIGNATURE_KEY_NOT_SENDERS',
      '20012',
    );
  });

  it('a consistently signed envelope whose MessageHeader sender differs: HEADER_CONTRADICTS_ENVELOPE 20006', async () => {
    const ctx = context();
    const msg = buildMessage('X26', { senderOds: 'FQ123' });
    const error = await expectRejected(
      verifyOf(ctx, 'X26', msg),
      Itk3ValidationError,
      'HEADER_CONTRADICTS_ENVELOPE',
      '20006',
    );
    expect(error.responseHints).toMatchObject({ originalMessageId: msg.messageId, format: 'xml' });
  });

  it('a MessageDefinition the rule does not accept: MESSAGE_DEFINITION_UNSUPPORTED 10004', async () => {
    const ctx = context();
    const msg = buildMessage('X26', { messageDefinition: 'ITK-DM-MIRC-MessageDefinition-1' });
    await expectRejected(
      verifyOf(ctx, 'X26', msg),
      Itk3ValidationError,
      'MESSAGE_DEFINITION_UNSUPPORTED',
      '10004',
    );
  });

  it('FI where the rule requires FA: RECIPIENT_TYPE_INVALID 10010', async () => {
    const ctx = context();
    const msg = buildMessage('X26', { recipientType: 'FI' });
    await expectRejected(verifyOf(ctx, 'X26', msg), Itk3ValidationError, 'RECIPIENT_TYPE_INVALID', '10010');
  });

  it('GP0001 with InfAckRequested false where the rule requires true: INF_ACK_INVALID 10002', async () => {
    const ctx = context();
    const msg = buildMessage('GP0001', { acks: { inf: false, bus: true } });
    await expectRejected(verifyOf(ctx, 'GP0001', msg), Itk3ValidationError, 'INF_ACK_INVALID', '10002');
  });

  it('GP0001 with a receiver where the rule forbids one: ITK3_HEADER_INVALID 20006', async () => {
    const ctx = context();
    const msg = buildMessage('GP0001', { receiverOds: 'A83627' });
    await expectRejected(verifyOf(ctx, 'GP0001', msg), Itk3ValidationError, 'ITK3_HEADER_INVALID', '20006');
  });

  it('a Bundle over limits.maxBundleBytes: MESSAGE_TOO_LARGE 20015', async () => {
    const ctx = context({ config: configWithLimits(world, { maxBundleBytes: 16 * 1024 }) });
    const small = buildMessage('X26');
    expect(small.bytes.byteLength).toBeLessThan(16 * 1024);
    await expect(verifyOf(ctx, 'X26', small)).resolves.toHaveProperty('message');

    const large = buildMessage('X26', { attachmentBytes: 32 * 1024 });
    await expectRejected(verifyOf(ctx, 'X26', large), Itk3ValidationError, 'MESSAGE_TOO_LARGE', '20015');
  });

  it('a Bundle over the matched rule’s maxBytes: MESSAGE_TOO_LARGE 20015', async () => {
    const doc = structuredClone(world.configDoc);
    doc.rules.find((r) => r.id === 'x26-immunisation-to-gp')!.maxBytes = 16 * 1024;
    const ctx = context({ config: configWith(world, { rules: doc.rules }) });
    const large = buildMessage('X26', { attachmentBytes: 32 * 1024 });
    await expectRejected(verifyOf(ctx, 'X26', large), Itk3ValidationError, 'MESSAGE_TOO_LARGE', '20015');
  });

  it('a new message id reusing a document id: DUPLICATE_DOCUMENT 20008', async () => {
    const ctx = context();
    const first = buildMessage('X26');
    const second = buildMessage('X26', { documentId: first.documentId });
    await verifyOf(ctx, 'X26', first);
    await expectRejected(verifyOf(ctx, 'X26', second), Itk3ValidationError, 'DUPLICATE_DOCUMENT', '20008');
  });

  it('a message id seen under another trace: DUPLICATE_MESSAGE 20007', async () => {
    const ctx = context();
    const first = buildMessage('X26');
    const again = buildMessage('X26', { messageId: first.messageId });
    await verifyOf(ctx, 'X26', first);
    await expectRejected(verifyOf(ctx, 'X26', again), Itk3ValidationError, 'DUPLICATE_MESSAGE', '20007');
  });

  it('another organisation cannot squat a message id or document id (keys are per sender organisation)', async () => {
    const ctx = context();
    const genuine = buildMessage('X26');
    // GP0001, a registered sender to the same recipient, uses X26's ids first.
    const squat = buildMessage('GP0001', { messageId: genuine.messageId, documentId: genuine.documentId });
    await verifyOf(ctx, 'GP0001', squat);
    const out = await verifyOf(ctx, 'X26', genuine);
    expect(out.message).toMatchObject({ messageId: genuine.messageId, sender: 'X26' });
  });

  it('an id another organisation used gives a prober no signal; its own namespace still catches duplicates', async () => {
    const ctx = context();
    const used = buildMessage('X26');
    await verifyOf(ctx, 'X26', used);
    // The probe verifies exactly like a fresh id: nothing tells GP0001 that X26 used it.
    const probe = buildMessage('GP0001', { messageId: used.messageId, documentId: used.documentId });
    expect((await verifyOf(ctx, 'GP0001', probe)).message?.messageId).toBe(used.messageId);
    await expectRejected(
      verifyOf(ctx, 'GP0001', buildMessage('GP0001', { messageId: used.messageId })),
      Itk3ValidationError,
      'DUPLICATE_MESSAGE',
      '20007',
    );
    await expectRejected(
      verifyOf(ctx, 'X26', buildMessage('X26', { documentId: used.documentId })),
      Itk3ValidationError,
      'DUPLICATE_DOCUMENT',
      '20008',
    );
  });

  it('the same trace verifying the same message again (a redelivery) is not a duplicate', async () => {
    const ctx = context();
    const record = await through(ctx, await recordFor(ctx, 'X26', buildMessage('X26')), 'decrypt');
    const first = await verifyRecord(record, ctx);
    const again = await verifyRecord(record, ctx);
    const { bundle: _b1, ...facts1 } = first.message!;
    const { bundle: _b2, ...facts2 } = again.message!;
    expect(facts2).toEqual(facts1);
  });
});

describe('deliver', () => {
  async function verified(ctx: TestStageContext, sender: SenderOds, msg: BuiltMessage) {
    return through(ctx, await recordFor(ctx, sender, msg), 'verify');
  }

  for (const format of ['xml', 'json'] as const) {
    it(`delivers the ${format.toUpperCase()} Bundle byte for byte, once however often it is delivered`, async () => {
      const ctx = context();
      const msg = buildMessage('X26', { format });
      const record = await verified(ctx, 'X26', msg);
      const outcome = await deliverRecord(record, ctx);
      await deliverRecord(record, ctx);

      const name = `X26_${msg.messageId}_${record.traceId}.${format}`;
      expect(outcome.kind).toBe('delivered');
      expect(locationOf(outcome)).toBe(join(ctx.paths.delivered('A83627'), name));
      expect(filesIn(ctx.paths.delivered('A83627'))).toEqual([name]);
      expect(Buffer.compare(readFileSync(locationOf(outcome)), Buffer.from(msg.bytes))).toBe(0);
    });
  }

  it('two senders with the same MessageHeader id are both delivered, under distinct names', async () => {
    const ctx = context();
    const fromX26 = buildMessage('X26');
    const fromGp = buildMessage('GP0001', { messageId: fromX26.messageId });
    const a = await deliverRecord(await verified(ctx, 'X26', fromX26), ctx);
    const b = await deliverRecord(await verified(ctx, 'GP0001', fromGp), ctx);

    expect(locationOf(a)).not.toBe(locationOf(b));
    expect(filesIn(ctx.paths.delivered('A83627'))).toHaveLength(2);
    expect(Buffer.compare(readFileSync(locationOf(a)), Buffer.from(fromX26.bytes))).toBe(0);
    expect(Buffer.compare(readFileSync(locationOf(b)), Buffer.from(fromGp.bytes))).toBe(0);
  });

  it('an id reused after the duplicate window is a new delivery: the earlier file is never replaced', async () => {
    const ctx = context();
    const first = buildMessage('X26');
    const earlier = await deliverRecord(await verified(ctx, 'X26', first), ctx);
    ctx.clock.advanceBy((ctx.config.doc.limits.dedupeDays + 1) * 86_400_000);
    const later = buildMessage('X26', { messageId: first.messageId, documentId: first.documentId });
    const outcome = await deliverRecord(await verified(ctx, 'X26', later), ctx);

    expect(locationOf(outcome)).not.toBe(locationOf(earlier));
    expect(filesIn(ctx.paths.delivered('A83627'))).toHaveLength(2);
    expect(Buffer.compare(readFileSync(locationOf(earlier)), Buffer.from(first.bytes))).toBe(0);
  });

  it('a different file already under the delivery name is DELIVERY_CONFLICT, never claimed delivered', async () => {
    const ctx = context();
    const msg = buildMessage('X26');
    const record = await verified(ctx, 'X26', msg);
    const name = deliveryName(record.message!, record.traceId);
    const folder = ctx.paths.delivered('A83627');
    mkdirSync(folder, { recursive: true });
    writeFileSync(join(folder, name), '<Bundle>planted</Bundle>');

    const error = await deliverRecord(record, ctx).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(TransientError);
    expect((error as TransientError).code).toBe('DELIVERY_CONFLICT');
    expect(readFileSync(join(folder, name), 'utf8')).toBe('<Bundle>planted</Bundle>');
  });

  it('a redelivered acknowledgement leaves the first response in place, storing no signature for it', async () => {
    const ctx = context();
    const record = await verified(ctx, 'X26', buildMessage('X26'));
    const putIfAbsent = vi.spyOn(ctx.once, 'putIfAbsent');
    const first = await deliverRecord(record, ctx);
    const file = (first as { response: string }).response;
    const bytes = readFileSync(file);
    const again = await deliverRecord(record, ctx);
    expect(again).toMatchObject({
      kind: 'delivered',
      response: `${record.traceId}-20013.jws (sent by an earlier attempt)`,
    });
    expect(filesIn(ctx.paths.responses('X26'))).toEqual([`${record.traceId}-20013.jws`]);
    expect(Buffer.compare(readFileSync(file), bytes)).toBe(0);
    // A folder target keeps the first response by itself: no once-store write (response#) per ack.
    expect(putIfAbsent).not.toHaveBeenCalled();
  });

  it('delivery and response names stay one-to-one for parts outside the FHIR id characters', () => {
    const message = { sender: 'X26', messageId: 'a_b', format: 'xml' as const };
    expect(deliveryName(message, 'trace-1')).toMatch(/^x-[0-9a-f]{64}\.xml$/);
    expect(deliveryName(message, 'trace-1')).not.toBe(
      deliveryName({ ...message, messageId: 'a/b' }, 'trace-1'),
    );
    expect(deliveryName({ ...message, messageId: 'm-1' }, 'trace-1')).toBe('X26_m-1_trace-1.xml');
    expect(responseName('trace-1', '20013')).toBe('trace-1-20013.jws');
    expect(responseName('trace/1', '20013')).toMatch(/^x-[0-9a-f]{64}\.jws$/);
  });

  it('carries artefacts over the claim-check threshold through the blob store, delivered byte for byte', async () => {
    const ctx = context({ config: configWithLimits(world, { claimCheckBytes: 8 * 1024 }) });
    const msg = buildMessage('X26', { attachmentBytes: 64 * 1024 });
    const sealed = await sealAs(world, 'X26', msg);
    const record = ingressRecord({
      credential: await credentialFor(world, 'X26', ctx.clock.now()),
      sealed,
      receivedAt: ctx.clock.now(),
    });
    const decrypted = await through(ctx, record, 'decrypt');
    expect(decrypted.signed && 'ref' in decrypted.signed).toBe(true);
    const verifiedRecord = await verifyRecord(decrypted, ctx);
    expect(verifiedRecord.message && 'ref' in verifiedRecord.message.bundle).toBe(true);
    expect(ctx.blobs.size).toBe(2);
    // Records stay small: the queue body holds a reference, not the Bundle.
    expect(serialiseRecord(verifiedRecord).length).toBeLessThan(8 * 1024);

    const outcome = await deliverRecord(verifiedRecord, ctx);
    expect(Buffer.compare(readFileSync(locationOf(outcome)), Buffer.from(msg.bytes))).toBe(0);
  });

  it('a claim-check payload changed after it was stored is a transient failure, never delivered', async () => {
    const ctx = context({ config: configWithLimits(world, { claimCheckBytes: 8 * 1024 }) });
    const msg = buildMessage('X26', { attachmentBytes: 64 * 1024 });
    const verifiedRecord = await verified(ctx, 'X26', msg);
    const bundle = verifiedRecord.message!.bundle;
    if (!('ref' in bundle)) throw new Error('expected a claim-check reference');
    await ctx.blobs.put(bundle.ref.key, new TextEncoder().encode('<Bundle>tampered</Bundle>'));

    const error = await deliverRecord(verifiedRecord, ctx).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(TransientError);
    expect((error as TransientError).code).toBe('BLOB_STORE_UNAVAILABLE');
    expect(filesIn(ctx.paths.delivered('A83627'))).toEqual([]);
  });

  it('writes a signed ITK008M 20013 response when InfAckRequested', async () => {
    const ctx = context();
    const msg = buildMessage('X26', { senderReference: 'sender-ref-42' });
    const record = await verified(ctx, 'X26', msg);
    const outcome = await deliverRecord(record, ctx);
    if (outcome.kind !== 'delivered') throw new Error('expected a delivery');
    expect(outcome.response).toBe(join(ctx.paths.responses('X26'), `${record.traceId}-20013.jws`));

    const { message, header } = await verifyResponse(world, readFileSync(outcome.response!, 'utf8'));
    expect(header).toMatchObject({ alg: 'ES256', kid: world.responseSigningKid, cty: 'fhir+xml' });
    expect(header.itk).toMatchObject({ from: GATEWAY_ODS, to: 'X26', event: 'ITK008M' });
    expect(message.header.event.code).toBe('ITK008M');
    expect(message.header.response).toMatchObject({
      identifier: msg.messageId,
      code: 'ok',
      itkCode: '20013',
    });
    expect(message.header.senderOds).toBe(GATEWAY_ODS);
    expect(message.header.receiverOds).toBe('X26');
    expect(message.header.handling.senderReference).toBe('sender-ref-42');
    expect(() => validateItk3(message)).not.toThrow();
  });

  it('writes no response when InfAckRequested is false', async () => {
    const ctx = context();
    const msg = buildMessage('X26', { acks: { inf: false, bus: false } });
    const record = await verified(ctx, 'X26', msg);
    const outcome = await deliverRecord(record, ctx);
    expect(outcome).toMatchObject({ kind: 'delivered' });
    expect(outcome.kind === 'delivered' && outcome.response).toBeUndefined();
    expect(filesIn(ctx.paths.responses('X26'))).toEqual([]);
  });

  it('answers a rejection of an authenticated sender in that sender’s folder, with the rejection code', async () => {
    const ctx = context();
    const msg = buildMessage('X26');
    const sealed = await sealCustom(world, msg, { signer: 'FQ123', recipientKey: 'A83627' });
    const decrypted = await through(ctx, await recordFor(ctx, 'X26', msg, { sealed }), 'decrypt');

    // The verify batch turns the rejection into a response job for deliver.
    const response = await processStageBatch(
      PIPELINE_STAGES.verify,
      sqsEvent([sqsRecord(serialiseRecord(decrypted))]),
      ctx,
      silentObserver,
    );
    expect(response.batchItemFailures).toEqual([]);
    expect(ctx.queues.sent.map((s) => s.queue)).toEqual(['deliver']);
    const job = parseRecord(ctx.queues.sent[0]!.body);
    expect(job.rejection).toMatchObject({
      stage: 'verify',
      code: 'SIGNATURE_KEY_NOT_SENDERS',
      itk3Code: '20012',
      respondTo: 'X26',
    });

    const outcome = await deliverRecord(job, ctx);
    expect(outcome.kind).toBe('responded');
    expect(locationOf(outcome)).toBe(join(ctx.paths.responses('X26'), `${job.traceId}-20012.jws`));
    const { message, header } = await verifyResponse(world, readFileSync(locationOf(outcome), 'utf8'));
    expect(header.itk).toMatchObject({ to: 'X26', event: 'ITK008M' });
    expect(message.header.response).toMatchObject({ code: 'fatal-error', itkCode: '20012' });
    expect(message.header.receiverOds).toBe('X26');
    // The claimed id is never echoed before the signature is verified (issue 9 class 2).
    expect(message.header.response?.identifier).toBe('UNREADABLE-IN-ORIGINAL-MESSAGE');
    expect(message.header.response?.diagnostics).toBe('SIGNATURE_KEY_NOT_SENDERS');
  });

  it('a rejection with no authenticated principal is audited once and answered with nothing', async () => {
    const keys = new CountingKeys(world.keystore);
    const ctx = context({ keys });
    const sealed = await sealAs(world, 'X26', buildMessage('X26'));
    // Raw SQS ingestion with no Authorization attribute.
    const response = await processStageBatch(
      PIPELINE_STAGES.authenticate,
      sqsEvent([sqsRecord(sealed, { sentAt: ctx.clock.now() })]),
      ctx,
      silentObserver,
    );
    expect(response.batchItemFailures).toEqual([]);
    // No response job: nothing goes to deliver, nothing is signed, nothing is written.
    expect(ctx.queues.sent).toEqual([]);
    expect(keys.signs).toBe(0);
    expect(filesIn(ctx.paths.unauthenticated)).toEqual([]);
    expect(ctx.audit.all().map((e) => [e.stage, e.event, e.code, e.itk3Code])).toEqual([
      ['authenticate', 'rejected', 'TOKEN_MISSING', '20012'],
    ]);
  });

  it('a queued rejection with no authenticated principal (from an older version) is not signed at deliver', async () => {
    const keys = new CountingKeys(world.keystore);
    const ctx = context({ keys });
    const job: PipelineRecord = {
      ...ingressRecord({ receivedAt: ctx.clock.now() }),
      rejection: { stage: 'authenticate', code: 'TOKEN_MISSING', itk3Code: '20012' },
    };
    expect(await deliverRecord(job, ctx)).toEqual({ kind: 'unanswered' });
    expect(keys.signs).toBe(0);
    expect(filesIn(ctx.paths.unauthenticated)).toEqual([]);
  });
});
