/**
 * Federation scope through the stages, with real credentials minted by the world's issuers and
 * real sealed messages: an issuer speaks only for the organisations configured for it, a client is
 * an (issuer, sub) pair, and a delegation grant covers only actors vouched for by the issuers it
 * names. A refusal of identity happens at authenticate, so it is answered as unauthenticated: never
 * in the claimed organisation's response target, never quoting the claimed message id.
 */
import '../../support/env.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LoadedConfig } from '../../../lib/config/load.js';
import {
  AuthenticationError,
  AuthorisationError,
  type RejectionCode,
  RejectionError,
} from '../../../lib/errors.js';
import { PIPELINE_STAGES } from '../../../lib/pipeline/stages.js';
import type { PipelineRecord } from '../../../lib/record.js';
import { authenticateRecord } from '../../../lib/stages/authenticate.js';
import { authoriseRecord } from '../../../lib/stages/authorise.js';
import { processStageBatch, type StageObserver } from '../../../lib/stages/batch.js';
import { tokenFor } from '../../../lib/testkit/scenario.js';
import { type DemoIssuer, type DemoWorld, worldPaths } from '../../../lib/testkit/world.js';
import {
  ingressRecord,
  sqsEvent,
  sqsRecord,
  stageContext,
  type TestStageContext,
} from '../../support/records.js';
import {
  buildMessage,
  configWith,
  filesIn,
  makeTempDir,
  removeTempDirs,
  type SenderOds,
  sealAs,
  sealCustom,
  testWorld,
} from '../../support/world.js';

let world: DemoWorld;

beforeAll(async () => {
  world = await testWorld();
});
afterAll(removeTempDirs);

const silentObserver: StageObserver = { record: () => undefined };

function context(config?: LoadedConfig): TestStageContext & { paths: ReturnType<typeof worldPaths> } {
  const baseDir = makeTempDir();
  return Object.assign(stageContext(world, { baseDir, ...(config ? { config } : {}) }), {
    paths: worldPaths(baseDir),
  });
}

/** A credential for `ods` (its registered client id) minted by `issuer`, whoever that is. */
function credential(
  ctx: TestStageContext,
  ods: SenderOds,
  issuer: DemoIssuer,
  opts: Parameters<typeof tokenFor>[3] = {},
): Promise<string> {
  return tokenFor(world, { ...world.senders[ods], issuer }, ctx.clock.now(), opts);
}

async function refusal(promise: Promise<unknown>): Promise<RejectionError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, 'expected the stage to reject').toBeInstanceOf(RejectionError);
  return error as RejectionError;
}

async function expectRefused(
  promise: Promise<unknown>,
  type: new (...args: never[]) => RejectionError,
  code: RejectionCode,
): Promise<void> {
  const error = await refusal(promise);
  expect(error).toBeInstanceOf(type);
  expect({ code: error.code, itk3Code: error.itk3Code }).toEqual({ code, itk3Code: '20012' });
}

function authenticateIngress(ctx: TestStageContext, record: PipelineRecord): Promise<PipelineRecord> {
  return authenticateRecord({ record, inboundMessageId: record.traceId }, ctx);
}

describe('authenticate: an issuer speaks only for its organisations', () => {
  it("refuses the federation's credential for a GP practice, and answers it as unauthenticated", async () => {
    const ctx = context();
    // The practice's own message, correctly sealed: only the credential is the federation's.
    const msg = buildMessage('GP0001');
    const sealed = await sealAs(world, 'GP0001', msg);
    const bearer = await credential(ctx, 'GP0001', world.issuers.federation);
    await expectRefused(
      authenticateIngress(ctx, ingressRecord({ credential: bearer, sealed, receivedAt: ctx.clock.now() })),
      AuthenticationError,
      'TOKEN_ORGANISATION_OUT_OF_SCOPE',
    );

    // Through the batch and deliver, as deployed: the response goes to the unauthenticated
    // target, quotes no message id and names no recipient.
    const response = await processStageBatch(
      PIPELINE_STAGES.authenticate,
      sqsEvent([
        sqsRecord(sealed, { sentAt: ctx.clock.now(), attributes: { Authorization: `Bearer ${bearer}` } }),
      ]),
      ctx,
      silentObserver,
    );
    expect(response.batchItemFailures).toEqual([]);
    // Unauthenticated: no response job, so nothing is signed or stored (issue 9 class 4); nothing
    // can land in the practice's response target, and the audit quotes no message id.
    expect(ctx.queues.sent).toEqual([]);
    expect(filesIn(ctx.paths.responses('GP0001'))).toEqual([]);
    expect(filesIn(ctx.paths.unauthenticated)).toEqual([]);
    const audit = JSON.stringify(ctx.audit.all());
    expect(audit).toContain('TOKEN_ORGANISATION_OUT_OF_SCOPE');
    expect(audit).not.toContain(msg.messageId);
  });

  it('a prefix pattern covers the codes under it and nothing else', async () => {
    const ctx = context();
    const msg = buildMessage('FQ123');
    const sealed = await sealAs(world, 'FQ123', msg);
    // FQ123 is covered by the federation's "F*".
    const principal = (
      await authenticateIngress(
        ctx,
        ingressRecord({
          credential: await credential(ctx, 'FQ123', world.issuers.federation),
          sealed,
          receivedAt: ctx.clock.now(),
        }),
      )
    ).principal;
    expect(principal).toMatchObject({ issuer: 'pharmacy-federation', organisation: 'FQ123' });
    // "X26" is exact: X260 is not X26, and the NHS issuer's "GP0001" does not cover GP00011.
    for (const [issuer, ods] of [
      [world.issuers.federation, 'X260'],
      [world.issuers.nhs, 'GP00011'],
      [world.issuers.nhs, 'FQ123'],
    ] as const) {
      const organisationClaim = issuer === world.issuers.nhs ? { ods } : { organisation: { ods_code: ods } };
      const bearer = await credential(ctx, 'X26', issuer, { claims: organisationClaim });
      await expectRefused(
        authenticateIngress(ctx, ingressRecord({ credential: bearer, sealed, receivedAt: ctx.clock.now() })),
        AuthenticationError,
        'TOKEN_ORGANISATION_OUT_OF_SCOPE',
      );
    }
  });
});

describe('authenticate: a client is (issuer, sub)', () => {
  /** The NHS issuer also trusted for X26, whose client is registered under the federation only. */
  function overlapping(): LoadedConfig {
    const doc = structuredClone(world.configDoc);
    doc.issuers.find((i) => i.id === 'nhs-identity')!.organisations = ['GP0001', 'X26'];
    return configWith(world, { issuers: doc.issuers });
  }

  it("refuses X26's client id in a credential from another issuer that may speak for X26", async () => {
    const config = overlapping();
    expect(config.warnings).toHaveLength(1);
    const ctx = context(config);
    const msg = buildMessage('X26');
    const record = ingressRecord({
      credential: await credential(ctx, 'X26', world.issuers.nhs),
      sealed: await sealAs(world, 'X26', msg),
      receivedAt: ctx.clock.now(),
    });
    await expectRefused(authenticateIngress(ctx, record), AuthenticationError, 'TOKEN_CLIENT_NOT_REGISTERED');
    // The same client id from its own issuer is X26.
    const own = ingressRecord({
      credential: await credential(ctx, 'X26', world.issuers.federation),
      sealed: await sealAs(world, 'X26', buildMessage('X26')),
      receivedAt: ctx.clock.now(),
    });
    expect((await authenticateIngress(ctx, own)).principal?.subject).toBe(world.senders.X26.client);
  });

  it("refuses another organisation's client id from the right issuer", async () => {
    const ctx = context();
    const record = ingressRecord({
      credential: await credential(ctx, 'X26', world.issuers.federation, {
        claims: { sub: world.senders.FQ123.client },
      }),
      sealed: await sealAs(world, 'X26', buildMessage('X26')),
      receivedAt: ctx.clock.now(),
    });
    await expectRefused(authenticateIngress(ctx, record), AuthenticationError, 'TOKEN_CLIENT_NOT_REGISTERED');
  });

  it('leaves an in-scope organisation that is not registered to authorise (20003)', async () => {
    const ctx = context();
    const msg = buildMessage('X26');
    const sealed = await sealCustom(world, msg, {
      signer: 'X26',
      recipientKey: 'A83627',
      jweRouting: { ...msg.routing, from: 'FZ999' },
    });
    const bearer = await credential(ctx, 'X26', world.issuers.federation, {
      claims: { organisation: { ods_code: 'FZ999' } },
    });
    const record = await authenticateIngress(
      ctx,
      ingressRecord({ credential: bearer, sealed, receivedAt: ctx.clock.now() }),
    );
    const error = await refusal(authoriseRecord(record, ctx));
    expect({ code: error.code, itk3Code: error.itk3Code }).toEqual({
      code: 'SENDER_UNKNOWN',
      itk3Code: '20003',
    });
  });
});

describe('delegation: every actor is vouched for by an issuer its grant names', () => {
  /** The NHS issuer may also speak for X26, and X26's system is registered under it too. */
  function bothIssuersForX26(): LoadedConfig {
    const doc = structuredClone(world.configDoc);
    doc.issuers.find((i) => i.id === 'nhs-identity')!.organisations = ['GP0001', 'X26'];
    doc.senders
      .find((s) => s.ods === 'X26')!
      .clients.push({ issuer: 'nhs-identity', sub: world.senders.X26.client });
    return configWith(world, { issuers: doc.issuers, senders: doc.senders });
  }

  async function authorised(ctx: TestStageContext, issuer: DemoIssuer, actors: string[]) {
    const record = ingressRecord({
      credential: await credential(ctx, 'X26', issuer, { actors }),
      sealed: await sealAs(world, 'X26', buildMessage('X26')),
      receivedAt: ctx.clock.now(),
    });
    return authoriseRecord(await authenticateIngress(ctx, record), ctx);
  }

  it('the granted hub, vouched for by the federation the grant names, is allowed', async () => {
    const ctx = context(bothIssuersForX26());
    const out = await authorised(ctx, world.issuers.federation, [world.hubs.granted]);
    expect(out.decision?.delegationId).toBe('hub7-for-x26');
  });

  it('the same hub name vouched for by the NHS issuer gets nothing from that grant', async () => {
    const ctx = context(bothIssuersForX26());
    // Without an actor the NHS credential is good: only the grant stands in the way.
    expect((await authorised(ctx, world.issuers.nhs, [])).decision?.ruleId).toBe('x26-immunisation-to-gp');
    await expectRefused(
      authorised(ctx, world.issuers.nhs, [world.hubs.granted]),
      AuthorisationError,
      'DELEGATION_NOT_GRANTED',
    );
  });

  it('an act claim that names another issuer for the actor is refused at authenticate', async () => {
    const ctx = context();
    const sealed = await sealAs(world, 'X26', buildMessage('X26'));
    const act = (iss: string) =>
      credential(ctx, 'X26', world.issuers.federation, { claims: { act: { sub: world.hubs.granted, iss } } });
    await expectRefused(
      authenticateIngress(
        ctx,
        ingressRecord({ credential: await act(world.issuers.nhs.iss), sealed, receivedAt: ctx.clock.now() }),
      ),
      AuthenticationError,
      'TOKEN_CLAIM_INVALID',
    );
    // Naming the credential's own issuer is the same statement as naming none.
    const own = await authenticateIngress(
      ctx,
      ingressRecord({
        credential: await act(world.issuers.federation.iss),
        sealed: await sealAs(world, 'X26', buildMessage('X26')),
        receivedAt: ctx.clock.now(),
      }),
    );
    expect(own.principal?.actors).toEqual([world.hubs.granted]);
  });
});
