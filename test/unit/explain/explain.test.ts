/**
 * `explain` over the demo scenario (real keys, real sealed messages, the real stage code on dry-run
 * ports): it tells why each hostile message fails — the same stage, code and ITK3 code the pipeline
 * gives it — passes the valid samples, and writes nothing: a credential explained is not consumed.
 * Then each mode on its own: claims and routing without keys, a sealed message without a keystore,
 * remembered state read but never written.
 */
import '../../support/env.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Explainer, type Explanation, explain, renderExplanation } from '../../../lib/explain/index.js';
import type { KeyService } from '../../../lib/ports/index.js';
import { buildScenario, type ScenarioMessage, tokenFor } from '../../../lib/testkit/scenario.js';
import type { DemoWorld } from '../../../lib/testkit/world.js';
import { buildMessage, keyService, removeTempDirs, sealAs, testWorld } from '../../support/world.js';

let world: DemoWorld;
let keys: KeyService;
let signed = 0;

beforeAll(async () => {
  world = await testWorld();
  const real = keyService(world);
  // Counts signing calls: explain must never sign (it sends no responses).
  keys = {
    unwrapKey: (kid, key) => real.unwrapKey(kid, key),
    deriveSharedSecret: (kid, epk) => real.deriveSharedSecret(kid, epk),
    publicKeySpki: (kid) => real.publicKeySpki(kid),
    signEs256: (kid, input) => {
      signed += 1;
      return real.signEs256(kid, input);
    },
  };
});
afterAll(removeTempDirs);

/** Every check before the failed one passed, nothing after it was reached. */
function expectConsistentPath(e: Explanation): void {
  const checks = e.stages.flatMap((s) => s.checks);
  const failed = checks.findIndex((c) => c.status === 'failed');
  if (e.outcome === 'deliver') {
    expect(failed).toBe(-1);
    expect(checks.every((c) => c.status === 'passed')).toBe(true);
    return;
  }
  expect(failed).toBeGreaterThanOrEqual(0);
  expect(checks.slice(0, failed).every((c) => c.status === 'passed' || c.status === 'skipped')).toBe(true);
  expect(checks.slice(failed + 1).every((c) => c.status === 'not-reached')).toBe(true);
  expect(checks[failed]?.code).toBe(e.code);
  expect(e.toPass.length).toBeGreaterThan(0);
}

describe('explain: the demo scenario', () => {
  let scenario: ScenarioMessage[];
  const results = new Map<string, Explanation>();

  beforeAll(async () => {
    const now = Date.now();
    scenario = await buildScenario(world, now);
    const explainer = new Explainer({ config: world.config, keys });
    // Phase order, as the demo sends them: an original is explained before its replay.
    for (const phase of [1, 2]) {
      for (const m of scenario.filter((s) => (s.phase ?? 1) === phase)) {
        results.set(
          m.name,
          await explainer.explain({
            sealed: m.sealed,
            ...(m.credential ? { credential: m.credential } : {}),
            receivedAt: now,
          }),
        );
      }
    }
  }, 60_000);

  it('tells why each hostile message fails, with the stage, code and ITK3 code the pipeline gives it', () => {
    const hostile = scenario.filter((m) => m.expected.status === 'rejected');
    expect(hostile.length).toBeGreaterThanOrEqual(14);
    for (const m of hostile) {
      const e = results.get(m.name) as Explanation;
      expect({
        name: m.name,
        outcome: e.outcome,
        stage: e.stage,
        code: e.code,
        itk3Code: e.itk3Code,
      }).toEqual({
        name: m.name,
        outcome: 'reject',
        stage: m.expected.stage,
        code: m.expected.code,
        itk3Code: m.expected.itk3Code,
      });
      expectConsistentPath(e);
    }
  });

  it('passes every valid sample and allowed message, naming the rule (and grant) that allowed it', () => {
    const valid = scenario.filter((m) => m.expected.status === 'delivered');
    expect(valid.length).toBeGreaterThanOrEqual(3);
    for (const m of valid) {
      const e = results.get(m.name) as Explanation;
      expect({ name: m.name, outcome: e.outcome }).toEqual({ name: m.name, outcome: 'deliver' });
      expect(e.policy?.ruleId).toBeTruthy();
      expect(e.stages.find((s) => s.stage === 'deliver')?.note).toMatch(/explain never delivers/);
      expectConsistentPath(e);
    }
    expect(results.get('delegated-by-granted-hub')?.policy?.delegationId).toBeTruthy();
  });

  it('shows the deny-by-default with the rules that did not match, and the grants of a refused hub', () => {
    const denied = results.get('unauthorised-sender') as Explanation;
    expect(denied.policy).toMatchObject({ denyByDefault: true });
    expect(denied.policy?.candidates.length).toBeGreaterThan(0);
    const rule = denied.stages.find((s) => s.stage === 'authorise')?.checks.find((c) => c.id === 'rule');
    expect(rule).toMatchObject({ status: 'failed', code: 'POLICY_DENIED', itk3Code: '20012' });
    expect(rule?.note).toMatch(/deny by default: rule .*event is ITK009D, not ITK013D/);

    const tampered = results.get('tampered-ciphertext') as Explanation;
    expect(tampered.toPass.join(' ')).toMatch(/does not hold .* \(check with config validate --keystore\)/);

    const expired = results.get('delegation-expired-grant') as Explanation;
    expect(expired.toPass.join(' ')).toMatch(/expired/);
    const text = renderExplanation(denied).join('\n');
    expect(text).toMatch(/result: REJECTED at authorise: POLICY_DENIED \(ITK3 20012\)/);
    expect(text).toMatch(/✗ rule/);
    expect(text).toMatch(/to pass:/);
  });

  it('never signs, delivers or consumes a jti: the same credential explained again in a new explainer passes', async () => {
    expect(signed).toBe(0);
    const original = scenario.find((m) => m.name === 'replay-original') as ScenarioMessage;
    const again = await explain(
      { sealed: original.sealed, credential: original.credential as string },
      { config: world.config, keys },
    );
    expect(again.outcome).toBe('deliver');
    expect(signed).toBe(0);
  });
});

describe('explain: modes', () => {
  it('claims and routing without keys: authenticate and authorise, the rule, and what verify will require', async () => {
    const x26 = world.senders.X26;
    // The federation issuer carries the organisation at a dotted path (organisation.ods_code).
    const org = (ods: string) =>
      x26.issuer.organisationClaim
        .split('.')
        .reduceRight<unknown>((inner, key) => ({ [key]: inner }), ods) as Record<string, unknown>;
    const claims = { iss: x26.issuer.iss, sub: x26.client, aud: world.config.doc.audience, ...org('X26') };
    const allowed = await explain(
      { claims, routing: { from: 'X26', to: 'A83627', event: 'ITK009D' } },
      { config: world.config },
    );
    expect(allowed.outcome).toBe('authorised');
    expect(allowed.mode).toBe('claims');
    expect(allowed.policy?.ruleId).toBeTruthy();
    const auth = allowed.stages.find((s) => s.stage === 'authenticate');
    expect(auth?.checks.find((c) => c.id === 'signature')?.status).toBe('skipped');
    expect(auth?.checks.find((c) => c.id === 'scope')?.status).toBe('passed');
    expect(allowed.stages.find((s) => s.stage === 'verify')?.note).toMatch(/will require/);

    const denied = await explain(
      { claims, routing: { from: 'X26', to: 'A8797979', event: 'ITK013D' } },
      { config: world.config },
    );
    expect(denied).toMatchObject({ outcome: 'reject', stage: 'authorise', code: 'POLICY_DENIED' });
    expect(denied.policy?.denyByDefault).toBe(true);

    const iat = Math.floor(Date.now() / 1000) - 900;
    const expired = await explain(
      {
        claims: { ...claims, iat, exp: iat + 300 },
        routing: { from: 'X26', to: 'A83627', event: 'ITK009D' },
      },
      { config: world.config },
    );
    expect(expired).toMatchObject({ outcome: 'reject', stage: 'authenticate', code: 'TOKEN_EXPIRED' });

    // A trusted issuer speaking for an organisation outside its scope.
    const outOfScope = await explain(
      {
        claims: { ...claims, ...org('GP0001') },
        routing: { from: 'GP0001', to: 'A83627', event: 'ITK007C' },
      },
      { config: world.config },
    );
    expect(outOfScope).toMatchObject({ stage: 'authenticate', code: 'TOKEN_ORGANISATION_OUT_OF_SCOPE' });

    const ungranted = await explain(
      {
        claims: { ...claims, act: { sub: world.hubs.ungranted } },
        routing: { from: 'X26', to: 'A83627', event: 'ITK009D' },
      },
      { config: world.config },
    );
    expect(ungranted).toMatchObject({ stage: 'authorise', code: 'DELEGATION_NOT_GRANTED' });
    expect(ungranted.toPass.join(' ')).toMatch(/holds no grant/);

    const unknownIssuer = await explain(
      {
        claims: { ...claims, iss: 'https://nobody.example' },
        routing: { from: 'X26', to: 'A83627', event: 'ITK009D' },
      },
      { config: world.config },
    );
    expect(unknownIssuer).toMatchObject({ stage: 'authenticate', code: 'TOKEN_ISSUER_UNKNOWN' });

    const { organisation: _dropped, ...noOrganisation } = claims as Record<string, unknown>;
    const missing = await explain(
      { claims: noOrganisation, routing: { from: 'X26', to: 'A83627', event: 'ITK009D' } },
      { config: world.config },
    );
    expect(missing).toMatchObject({ stage: 'authenticate', code: 'TOKEN_ORGANISATION_MISSING' });
    expect(missing.toPass.join(' ')).toContain(`"${x26.issuer.organisationClaim}"`);
  });

  it('a sealed message without a keystore is explained up to authorise', async () => {
    const msg = buildMessage('X26');
    const e = await explain(
      {
        sealed: await sealAs(world, 'X26', msg),
        credential: await tokenFor(world, world.senders.X26, Date.now()),
      },
      { config: world.config },
    );
    expect(e.outcome).toBe('authorised');
    expect(e.stages.find((s) => s.stage === 'decrypt')).toMatchObject({ status: 'skipped' });
  });

  it('reads remembered state without writing it: a message id already processed is a duplicate', async () => {
    const msg = buildMessage('X26');
    const looked: string[] = [];
    const remembered = async (key: string) => {
      looked.push(key);
      return key.startsWith('msg#') && key.endsWith(msg.messageId)
        ? JSON.stringify({ traceId: 'an-earlier-trace', sha256: 'other' })
        : undefined;
    };
    const e = await explain(
      {
        sealed: await sealAs(world, 'X26', msg),
        credential: await tokenFor(world, world.senders.X26, Date.now()),
      },
      { config: world.config, keys, remembered },
    );
    expect(e).toMatchObject({
      outcome: 'reject',
      stage: 'verify',
      code: 'DUPLICATE_MESSAGE',
      itk3Code: '20007',
    });
    expect(looked.some((k) => k.startsWith('jti#'))).toBe(true);
    expectConsistentPath(e);
  });
});
