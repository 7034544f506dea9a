/**
 * Authorisation policy: deny by default, the matched rule named, client restrictions, known
 * parties and keys, delegation grants with their expiry judged at receipt time, actor chains.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import type { LoadedConfig } from '../../../lib/config/load.js';
import type { ItkRouting } from '../../../lib/envelope/routing.js';
import {
  AuthorisationError,
  EnvelopeError,
  type RejectionCode,
  RejectionError,
} from '../../../lib/errors.js';
import { type AuthoriseInput, authorise, grantExpiry } from '../../../lib/policy/index.js';
import type { Principal } from '../../../lib/record.js';
import type { DemoWorld } from '../../../lib/testkit/world.js';
import { configWith, testWorld } from '../../support/world.js';

let world: DemoWorld;
const RECEIVED_AT = Date.parse('2030-03-01T12:00:00Z');

beforeAll(async () => {
  world = await testWorld();
});

function principal(overrides: Partial<Principal> = {}): Principal {
  return {
    issuer: 'pharmacy-federation',
    iss: 'https://auth.pharmacy-federation.example',
    subject: 'x26-pharmacy-pms',
    organisation: 'X26',
    actors: [],
    roles: ['itk3-sender'],
    jti: 'jti-1',
    ...overrides,
  };
}

/** A principal the NHS issuer vouches for: GP0001's EHR. */
function gpPrincipal(overrides: Partial<Principal> = {}): Principal {
  return principal({
    issuer: 'nhs-identity',
    iss: 'https://identity.nhs.example/itk3',
    subject: 'gp0001-ehr',
    organisation: 'GP0001',
    roles: [],
    ...overrides,
  });
}

function routing(overrides: Partial<ItkRouting> = {}): ItkRouting {
  return { from: 'X26', to: 'A83627', event: 'ITK009D', id: 'msg-1', ...overrides };
}

/** An X26 → A83627 immunisation, as the world's policy allows. */
function input(overrides: Partial<AuthoriseInput> = {}): AuthoriseInput {
  return {
    principal: principal(),
    routing: routing(),
    kid: world.recipients.A83627.key.kid,
    receivedAt: RECEIVED_AT,
    ...overrides,
  };
}

function refusal(fn: () => unknown): RejectionError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(RejectionError);
    return error as RejectionError;
  }
  throw new Error('expected a rejection, got a decision');
}

function expectRefused(
  fn: () => unknown,
  code: RejectionCode,
  itk3Code: string,
  type: new (...args: never[]) => RejectionError = AuthorisationError,
) {
  const error = refusal(fn);
  expect(error).toBeInstanceOf(type);
  expect({ code: error.code, itk3Code: error.itk3Code }).toEqual({ code, itk3Code });
}

describe('policy: rules', () => {
  it('allows a message a rule covers and names the rule', () => {
    const decision = authorise(input(), world.config);
    expect(decision).toEqual({
      ruleId: 'x26-immunisation-to-gp',
      recipient: 'A83627',
      kid: world.recipients.A83627.key.kid,
    });
    expect(decision.delegationId).toBeUndefined();
  });

  it('names the rule of each sender', () => {
    const gp = authorise(
      input({
        principal: gpPrincipal(),
        routing: routing({ from: 'GP0001', event: 'ITK007C' }),
      }),
      world.config,
    );
    expect(gp.ruleId).toBe('gp0001-send-document-consultation');
    const fq = authorise(
      input({
        principal: principal({ organisation: 'FQ123', subject: 'fq123-pharmacy-pms' }),
        routing: routing({ from: 'FQ123', to: 'A8797979', event: 'ITK013D' }),
        kid: world.recipients.A8797979.key.kid,
      }),
      world.config,
    );
    expect(fq).toMatchObject({ ruleId: 'fq123-minor-illness-referral-to-gp', recipient: 'A8797979' });
  });

  it('denies by default: with no rules, nothing is allowed', () => {
    const config = configWith(world, { rules: [] });
    expectRefused(() => authorise(input(), config), 'POLICY_DENIED', '20012');
  });

  it('denies an event no rule lists for the sender', () => {
    expectRefused(
      () => authorise(input({ routing: routing({ event: 'ITK007C' }) }), world.config),
      'POLICY_DENIED',
      '20012',
    );
  });

  it('denies a recipient the sender’s rule does not list', () => {
    // X26 may send ITK009D to A83627 only; A8797979 is served here but not for X26.
    expectRefused(
      () =>
        authorise(
          input({ routing: routing({ to: 'A8797979' }), kid: world.recipients.A8797979.key.kid }),
          world.config,
        ),
      'POLICY_DENIED',
      '20012',
    );
  });

  it('denies a subject that is not a client of the sender organisation', () => {
    expectRefused(
      () => authorise(input({ principal: principal({ subject: 'someone-else' }) }), world.config),
      'POLICY_DENIED',
      '20012',
    );
  });

  it('honours a rule’s client restriction', () => {
    // GP0001 has two registered clients; its rule lets only the EHR send consultation reports.
    const doc = structuredClone(world.configDoc);
    doc.senders.find((s) => s.ods === 'GP0001')!.clients = ['gp0001-ehr', 'gp0001-portal'].map((sub) => ({
      issuer: 'nhs-identity',
      sub,
    }));
    const config = configWith(world, { senders: doc.senders });
    const gp = (subject: string) =>
      input({
        principal: gpPrincipal({ subject }),
        routing: routing({ from: 'GP0001', event: 'ITK007C' }),
      });

    expect(authorise(gp('gp0001-ehr'), config).ruleId).toBe('gp0001-send-document-consultation');
    expectRefused(() => authorise(gp('gp0001-portal'), config), 'POLICY_DENIED', '20012');
  });

  it('picks the rule that matches the client when several rules cover the event', () => {
    const doc = structuredClone(world.configDoc);
    doc.senders.find((s) => s.ods === 'GP0001')!.clients = ['gp0001-ehr', 'gp0001-portal'].map((sub) => ({
      issuer: 'nhs-identity',
      sub,
    }));
    const portalRule = {
      ...doc.rules.find((r) => r.id === 'gp0001-send-document-consultation')!,
      id: 'gp0001-portal-consultation',
      sender: { ods: 'GP0001', clients: [{ issuer: 'nhs-identity', sub: 'gp0001-portal' }] },
    };
    const config = configWith(world, { senders: doc.senders, rules: [...doc.rules, portalRule] });
    const decision = authorise(
      input({
        principal: gpPrincipal({ subject: 'gp0001-portal' }),
        routing: routing({ from: 'GP0001', event: 'ITK007C' }),
      }),
      config,
    );
    expect(decision.ruleId).toBe('gp0001-portal-consultation');
  });
});

describe('policy: federation scope on the principal carried in the record', () => {
  it('refuses a principal whose organisation its issuer may not speak for', () => {
    // The pharmacy federation (X26, F*) vouching for GP0001, with GP0001's own client id.
    expectRefused(
      () =>
        authorise(
          input({
            principal: principal({ organisation: 'GP0001', subject: 'gp0001-ehr' }),
            routing: routing({ from: 'GP0001', event: 'ITK007C' }),
          }),
          world.config,
        ),
      'TOKEN_ORGANISATION_OUT_OF_SCOPE',
      '20012',
    );
  });

  it('applies a scope narrowed after authenticate (a configuration update between stages)', () => {
    const doc = structuredClone(world.configDoc);
    doc.issuers.find((i) => i.id === 'pharmacy-federation')!.organisations = ['F*'];
    doc.senders = doc.senders.filter((s) => s.ods !== 'X26');
    doc.rules = doc.rules.filter((r) => r.sender.ods !== 'X26');
    doc.delegations = [];
    expectRefused(
      () => authorise(input(), configWith(world, doc)),
      'TOKEN_ORGANISATION_OUT_OF_SCOPE',
      '20012',
    );
  });

  it('refuses a principal of an issuer that is not configured, or whose iss differs', () => {
    for (const p of [
      principal({ issuer: 'retired-issuer' }),
      principal({ iss: 'https://identity.nhs.example/itk3' }),
    ]) {
      expectRefused(() => authorise(input({ principal: p }), world.config), 'POLICY_DENIED', '20012');
    }
  });

  it('a registered subject vouched for by another in-scope issuer is not that client', () => {
    // Both issuers may speak for X26 here; X26's client is registered under the federation only.
    const doc = structuredClone(world.configDoc);
    doc.issuers.find((i) => i.id === 'nhs-identity')!.organisations = ['GP0001', 'X26'];
    const config = configWith(world, { issuers: doc.issuers });
    const nhs = { issuer: 'nhs-identity', iss: 'https://identity.nhs.example/itk3' };
    expectRefused(() => authorise(input({ principal: principal(nhs) }), config), 'POLICY_DENIED', '20012');
    expect(authorise(input(), config).ruleId).toBe('x26-immunisation-to-gp');
  });

  it('a rule’s client restriction names the issuer too', () => {
    const doc = structuredClone(world.configDoc);
    doc.issuers.find((i) => i.id === 'nhs-identity')!.organisations = ['GP*'];
    doc.issuers.find((i) => i.id === 'pharmacy-federation')!.organisations = ['X26', 'F*', 'GP0001'];
    const gp = doc.senders.find((s) => s.ods === 'GP0001')!;
    gp.clients = [
      { issuer: 'nhs-identity', sub: 'gp0001-ehr' },
      { issuer: 'pharmacy-federation', sub: 'gp0001-ehr' },
    ];
    const config = configWith(world, { issuers: doc.issuers, senders: doc.senders });
    const fromGp = (p: Principal) =>
      input({ principal: p, routing: routing({ from: 'GP0001', event: 'ITK007C' }) });
    // The rule lists {nhs-identity, gp0001-ehr}: the same sub from the federation is not it.
    expect(authorise(fromGp(gpPrincipal()), config).ruleId).toBe('gp0001-send-document-consultation');
    expectRefused(
      () => authorise(fromGp(principal({ organisation: 'GP0001', subject: 'gp0001-ehr' })), config),
      'POLICY_DENIED',
      '20012',
    );
  });
});

describe('policy: parties and keys', () => {
  it('refuses an envelope sent for another organisation than the credential’s', () => {
    expectRefused(
      () =>
        authorise(
          input({ principal: principal({ organisation: 'FQ123', subject: 'fq123-pharmacy-pms' }) }),
          world.config,
        ),
      'ROUTING_SENDER_MISMATCH',
      '20012',
    );
  });

  it('refuses an unregistered sender organisation with 20003', () => {
    expectRefused(
      () =>
        authorise(
          input({
            // Inside the federation's scope (F*), but not registered here.
            principal: principal({ organisation: 'FZ999' }),
            routing: routing({ from: 'FZ999' }),
          }),
          world.config,
        ),
      'SENDER_UNKNOWN',
      '20003',
    );
  });

  it('refuses a recipient not served here with 20002', () => {
    expectRefused(
      () => authorise(input({ routing: routing({ to: 'B99999' }) }), world.config),
      'RECIPIENT_UNKNOWN',
      '20002',
    );
  });

  it('refuses a key id that belongs to another recipient (10009)', () => {
    expectRefused(
      () => authorise(input({ kid: world.recipients.A8797979.key.kid }), world.config),
      'ENVELOPE_KEY_UNKNOWN',
      '10009',
      EnvelopeError,
    );
  });

  it('refuses a key id no recipient has (10009)', () => {
    expectRefused(
      () => authorise(input({ kid: 'not-a-configured-kid' }), world.config),
      'ENVELOPE_KEY_UNKNOWN',
      '10009',
      EnvelopeError,
    );
  });

  it('refuses the response-signing key id as an envelope key', () => {
    expectRefused(
      () => authorise(input({ kid: world.responseSigningKid }), world.config),
      'ENVELOPE_KEY_UNKNOWN',
      '10009',
      EnvelopeError,
    );
  });
});

describe('policy: delegation', () => {
  const EXPIRY_DAY = '2030-06-30';
  let config: LoadedConfig;

  beforeAll(() => {
    config = configWith(world, {
      delegations: [
        {
          id: 'hub7-for-x26',
          actor: 'pharmacy-hub-7',
          issuers: ['pharmacy-federation'],
          onBehalfOf: ['X26'],
          events: ['ITK009D'],
          expires: EXPIRY_DAY,
        },
        {
          id: 'hub8-for-x26-exact',
          actor: 'pharmacy-hub-8',
          issuers: ['pharmacy-federation'],
          onBehalfOf: ['X26'],
          events: ['ITK009D'],
          expires: '2030-06-30T12:00:00Z',
        },
        {
          id: 'upstream-for-x26',
          actor: 'upstream-hub',
          issuers: ['pharmacy-federation'],
          onBehalfOf: ['X26'],
          events: ['ITK009D'],
          expires: EXPIRY_DAY,
        },
        {
          id: 'old-hub9-for-x26',
          actor: 'pharmacy-hub-9',
          issuers: ['pharmacy-federation'],
          onBehalfOf: ['X26'],
          events: ['ITK009D'],
          expires: '2029-01-01',
        },
        {
          id: 'new-hub9-for-x26',
          actor: 'pharmacy-hub-9',
          issuers: ['pharmacy-federation'],
          onBehalfOf: ['X26'],
          events: ['ITK009D'],
          expires: '2031-01-01',
        },
      ],
    });
  });

  const delegated = (actors: string[], receivedAt = RECEIVED_AT, extra: Partial<AuthoriseInput> = {}) =>
    input({ principal: principal({ actors }), receivedAt, ...extra });

  it('allows an actor holding a grant and names the grant', () => {
    const decision = authorise(delegated(['pharmacy-hub-7']), config);
    expect(decision).toMatchObject({ ruleId: 'x26-immunisation-to-gp', delegationId: 'hub7-for-x26' });
  });

  it('refuses an actor without any grant', () => {
    expectRefused(() => authorise(delegated(['rogue-hub']), config), 'DELEGATION_NOT_GRANTED', '20012');
  });

  it('refuses a grant that covers another event', () => {
    // hub 7 may act for X26 on ITK009D only.
    const doc = structuredClone(world.configDoc);
    const rule = {
      ...doc.rules.find((r) => r.id === 'x26-immunisation-to-gp')!,
      id: 'x26-other',
      event: 'ITK007C',
    };
    const withRule = configWith(world, { rules: [...doc.rules, rule], delegations: config.doc.delegations });
    expect(authorise(delegated(['pharmacy-hub-7']), withRule).delegationId).toBe('hub7-for-x26');
    expectRefused(
      () =>
        authorise(
          delegated(['pharmacy-hub-7'], RECEIVED_AT, { routing: routing({ event: 'ITK007C' }) }),
          withRule,
        ),
      'DELEGATION_NOT_GRANTED',
      '20012',
    );
  });

  it('refuses a grant that covers another organisation', () => {
    // hub 8 holds a grant for X26 only; acting for FQ123 is not granted.
    expectRefused(
      () =>
        authorise(
          input({
            principal: principal({
              organisation: 'FQ123',
              subject: 'fq123-pharmacy-pms',
              actors: ['pharmacy-hub-8'],
            }),
            routing: routing({ from: 'FQ123', to: 'A8797979', event: 'ITK013D' }),
            kid: world.recipients.A8797979.key.kid,
            receivedAt: RECEIVED_AT,
          }),
          config,
        ),
      'DELEGATION_NOT_GRANTED',
      '20012',
    );
  });

  it('refuses an expired grant', () => {
    expectRefused(
      () => authorise(delegated(['pharmacy-hub-7'], Date.parse('2030-07-15T00:00:00Z')), config),
      'DELEGATION_GRANT_EXPIRED',
      '20012',
    );
  });

  it('a date-only expiry is valid through that UTC day, judged at receipt time', () => {
    const lastMoment = Date.parse(`${EXPIRY_DAY}T23:59:59.999Z`);
    const nextDay = Date.parse('2030-07-01T00:00:00.000Z');
    expect(grantExpiry(config.doc.delegations[0]!)).toBe(nextDay);

    expect(authorise(delegated(['pharmacy-hub-7'], lastMoment), config).delegationId).toBe('hub7-for-x26');
    expectRefused(
      () => authorise(delegated(['pharmacy-hub-7'], nextDay), config),
      'DELEGATION_GRANT_EXPIRED',
      '20012',
    );
  });

  it('a date-time expiry is exact: void at that instant', () => {
    const expiry = Date.parse('2030-06-30T12:00:00Z');
    expect(authorise(delegated(['pharmacy-hub-8'], expiry - 1), config).delegationId).toBe(
      'hub8-for-x26-exact',
    );
    expectRefused(
      () => authorise(delegated(['pharmacy-hub-8'], expiry), config),
      'DELEGATION_GRANT_EXPIRED',
      '20012',
    );
  });

  it('uses a valid grant when the actor also holds an expired one', () => {
    expect(authorise(delegated(['pharmacy-hub-9']), config).delegationId).toBe('new-hub9-for-x26');
  });

  it('allows a chain of two actors when both hold grants, naming the current actor’s grant', () => {
    const decision = authorise(delegated(['pharmacy-hub-7', 'upstream-hub']), config);
    expect(decision.delegationId).toBe('hub7-for-x26');
  });

  it('refuses a chain of two actors where the second holds no grant', () => {
    expectRefused(
      () => authorise(delegated(['pharmacy-hub-7', 'rogue-hub']), config),
      'DELEGATION_NOT_GRANTED',
      '20012',
    );
  });

  it('refuses a chain whose second actor’s grant has expired', () => {
    expectRefused(
      () =>
        authorise(delegated(['pharmacy-hub-7', 'upstream-hub'], Date.parse('2030-07-01T00:00:00Z')), config),
      'DELEGATION_GRANT_EXPIRED',
      '20012',
    );
  });

  it('an actor vouched for by an issuer the grant does not name gets nothing from it', () => {
    // The NHS issuer may speak for X26 here and X26 registers a client under it, so only the
    // grant's issuer list stands between its credential with act.sub = pharmacy-hub-7 and the grant.
    const doc = structuredClone(world.configDoc);
    doc.issuers.find((i) => i.id === 'nhs-identity')!.organisations = ['GP0001', 'X26'];
    doc.senders
      .find((s) => s.ods === 'X26')!
      .clients.push({ issuer: 'nhs-identity', sub: 'x26-pharmacy-pms' });
    const withNhs = configWith(world, {
      issuers: doc.issuers,
      senders: doc.senders,
      delegations: config.doc.delegations,
    });
    const nhs = { issuer: 'nhs-identity', iss: 'https://identity.nhs.example/itk3' };
    expect(authorise(input({ principal: principal(nhs) }), withNhs).ruleId).toBe('x26-immunisation-to-gp');
    expectRefused(
      () => authorise(input({ principal: principal({ ...nhs, actors: ['pharmacy-hub-7'] }) }), withNhs),
      'DELEGATION_NOT_GRANTED',
      '20012',
    );
    // Second hop: the current actor's grant names the NHS issuer, the upstream one's does not.
    const delegations = withNhs.doc.delegations.map((g) =>
      g.id === 'hub7-for-x26' ? { ...g, issuers: ['pharmacy-federation', 'nhs-identity'] } : g,
    );
    const hub7ForBoth = configWith(world, { issuers: doc.issuers, senders: doc.senders, delegations });
    const chain = (actors: string[]) => input({ principal: principal({ ...nhs, actors }) });
    expect(authorise(chain(['pharmacy-hub-7']), hub7ForBoth).delegationId).toBe('hub7-for-x26');
    expectRefused(
      () => authorise(chain(['pharmacy-hub-7', 'upstream-hub']), hub7ForBoth),
      'DELEGATION_NOT_GRANTED',
      '20012',
    );
  });

  it('the world’s own grants: granted hub allowed, expired hub refused', () => {
    const now = Date.now();
    expect(authorise(delegated([world.hubs.granted], now), world.config).delegationId).toBe('hub7-for-x26');
    expectRefused(
      () => authorise(delegated([world.hubs.expired], now), world.config),
      'DELEGATION_GRANT_EXPIRED',
      '20012',
    );
    expectRefused(
      () => authorise(delegated([world.hubs.ungranted], now), world.config),
      'DELEGATION_NOT_GRANTED',
      '20012',
    );
  });
});
