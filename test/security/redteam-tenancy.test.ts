/**
 * Red-team pass (session 20): one organisation acting as, blocking or reading another, and a
 * trusted party used beyond what it was registered for. Real keys, real sealed messages; the
 * pipeline through the embedded runtime, outcome lookups through a real `itk3 serve` listener.
 *
 * Fixed here:
 * - a jti was single use per issuer only, so an organisation could spend another organisation's
 *   jti under an issuer both use (the pharmacy federation speaks for X26 and every F… code) and
 *   the other's genuine credential was refused as replayed; the key is now per issuer and
 *   organisation.
 * - `GET /messages/<id>` showed an organisation's outcomes to any delegated credential for it —
 *   a hub with no grant at all, or one granted a single event — now a hub sees what it sent only.
 *
 * Listed because they hold (coverage): outcome lookups by other organisations, by the operator
 * token, by a credential claiming the right organisation from the wrong issuer; the operator
 * console refusing every sender credential and every token that is not the operator's, however
 * it is presented.
 */
import '../support/env.js';
import { describe, expect, it } from 'vitest';
import type { RunningServer } from '../../lib/cli/serve.js';
import { mintToken, verifyCredential } from '../../lib/envelope/token.js';
import type { DemoWorld } from '../../lib/testkit/world.js';
import { listenersPerTest } from '../support/listeners.js';
import { buildMessage, credentialFor, makeTempDir, sealAs } from '../support/world.js';
import { Harness } from './support.js';

let world: DemoWorld;
const serve = listenersPerTest(
  (w) => {
    world = w;
  },
  { dirPrefix: 'itk3-redteam-' },
);

describe('red team: duplicate keys are per organisation (jti)', () => {
  it('FQ123 spends the jti X26 is about to use under the shared federation issuer: X26 is still delivered', async () => {
    const h = new Harness(world, makeTempDir('itk3-redteam-'));
    const jti = 'x26-predictable-0001';
    // FQ123's own, valid credential from the federation, carrying the jti X26 will present.
    const squat = await h.run({
      credential: await credentialFor(world, 'FQ123', h.now(), { jti }),
      sealed: await sealAs(world, 'FQ123', buildMessage('FQ123')),
    });
    expect(squat.outcome).toMatchObject({ status: 'delivered' });

    const genuine = await h.run({
      credential: await credentialFor(world, 'X26', h.now(), { jti }),
      sealed: await sealAs(world, 'X26', buildMessage('X26')),
    });
    expect(genuine.outcome).toMatchObject({ status: 'delivered', stage: 'deliver' });
  });

  it('replay protection is unchanged: the same organisation presenting the jti again is TOKEN_REPLAYED', async () => {
    const h = new Harness(world, makeTempDir('itk3-redteam-'));
    const jti = 'x26-once';
    const first = await h.run({
      credential: await credentialFor(world, 'X26', h.now(), { jti }),
      sealed: await sealAs(world, 'X26', buildMessage('X26')),
    });
    expect(first.outcome).toMatchObject({ status: 'delivered' });
    // A fresh credential (new iat/exp, new signature) with the same jti, same issuer and organisation.
    const again = await h.run({
      credential: await credentialFor(world, 'X26', h.now() + 1_000, { jti }),
      sealed: await sealAs(world, 'X26', buildMessage('X26')),
    });
    expect(again.outcome).toMatchObject({
      status: 'rejected',
      stage: 'authenticate',
      code: 'TOKEN_REPLAYED',
    });
    expect(again.unwraps).toBe(0);
  });
});

async function submit(server: RunningServer, credential: string, sealed: string): Promise<string> {
  const response = await fetch(`http://127.0.0.1:${server.port}/messages`, {
    method: 'POST',
    headers: { authorization: `Bearer ${credential}` },
    body: sealed,
  });
  expect(response.status).toBe(202);
  return ((await response.json()) as { trackingId: string }).trackingId;
}

async function lookup(server: RunningServer, trackingId: string, authorization?: string) {
  const response = await fetch(`http://127.0.0.1:${server.port}/messages/${trackingId}`, {
    headers: authorization ? { authorization } : {},
  });
  return { status: response.status, body: await response.text() };
}

const OPERATOR_TOKEN = 'redteam-operator-token-0123456789abcdef';

describe('red team: acting as another organisation at the door', () => {
  it('each attempt is the one 401 before the body is read; nothing is queued, audited or signed', async () => {
    const server = await serve();
    const now = Date.now();
    const federation = world.issuers.federation;
    const nhs = world.issuers.nhs;
    const mint = (issuer: typeof federation | typeof nhs, claims: { sub: string; organisation: string }) =>
      mintToken({
        key: issuer.key.privateJwk,
        kid: issuer.key.kid,
        alg: issuer.key.alg as 'PS256',
        iss: issuer.iss,
        aud: world.config.doc.audience,
        organisationClaim: issuer.organisationClaim,
        nowMs: now,
        ...claims,
      });
    // [what, credential, the reason (operator log only; the sender sees one 401)]
    const attempts: [string, string, string][] = [
      [
        'X26’s client claiming FQ123 (same issuer)',
        await mint(federation, { sub: world.senders.X26.client, organisation: 'FQ123' }),
        'TOKEN_CLIENT_NOT_REGISTERED',
      ],
      [
        'the federation minting for GP0001 with GP0001’s client',
        await mint(federation, { sub: world.senders.GP0001.client, organisation: 'GP0001' }),
        'TOKEN_ORGANISATION_OUT_OF_SCOPE',
      ],
      [
        'the NHS issuer minting for X26 with X26’s client',
        await mint(nhs, { sub: world.senders.X26.client, organisation: 'X26' }),
        'TOKEN_ORGANISATION_OUT_OF_SCOPE',
      ],
      [
        'an act naming another issuer',
        await credentialFor(world, 'X26', now, {
          claims: { act: { sub: world.hubs.granted, iss: nhs.iss } },
        }),
        'TOKEN_CLAIM_INVALID',
      ],
      [
        'a delegation chain deeper than allowed',
        await credentialFor(world, 'X26', now, {
          actors: [world.hubs.granted, world.hubs.expired, world.hubs.ungranted],
        }),
        'DELEGATION_CHAIN_TOO_DEEP',
      ],
      [
        'another audience (the gateway’s with a path)',
        await mintToken({
          key: federation.key.privateJwk,
          kid: federation.key.kid,
          alg: federation.key.alg as 'PS256',
          iss: federation.iss,
          sub: world.senders.X26.client,
          aud: `${world.config.doc.audience}/X26`,
          organisation: 'X26',
          organisationClaim: federation.organisationClaim,
          nowMs: now,
        }),
        'TOKEN_CLAIM_INVALID',
      ],
    ];
    const sealed = await sealAs(world, 'X26', buildMessage('X26'));
    for (const [what, credential, reason] of attempts) {
      await expect(verifyCredential(credential, world.config, now), what).rejects.toMatchObject({
        code: reason,
      });
      const response = await fetch(`http://127.0.0.1:${server.port}/messages`, {
        method: 'POST',
        headers: { authorization: `Bearer ${credential}` },
        body: sealed,
      });
      expect(response.status, what).toBe(401);
      expect(await response.json(), what).toMatchObject({ error: 'UNAUTHENTICATED' });
    }
    expect(server.pipeline.backlog()).toEqual({ messages: 0, bytes: 0 });
    expect(server.pipeline.audit.all()).toEqual([]);
  });
});

describe('red team: outcome lookups across organisations and hubs', () => {
  it('an outcome is shown to its organisation and to the hub that sent it, and to no one else', async () => {
    const server = await serve({ console: { operatorToken: OPERATOR_TOKEN } });
    const now = Date.now();
    const hub = world.hubs.granted;
    // X26 sends one message itself; hub 7 (granted ITK009D for X26) sends one on its behalf.
    const direct = await submit(
      server,
      await credentialFor(world, 'X26', now),
      await sealAs(world, 'X26', buildMessage('X26')),
    );
    const viaHub = await submit(
      server,
      await credentialFor(world, 'X26', now, { actors: [hub] }),
      await sealAs(world, 'X26', buildMessage('X26')),
    );
    await server.idle();
    const unknown = await lookup(
      server,
      '00000000-0000-4000-8000-000000000000',
      `Bearer ${await credentialFor(world, 'X26', now)}`,
    );
    expect(unknown.status).toBe(404);

    const x26 = `Bearer ${await credentialFor(world, 'X26', now)}`;
    const hub7 = `Bearer ${await credentialFor(world, 'X26', now, { actors: [hub] })}`;
    const rogueHub = `Bearer ${await credentialFor(world, 'X26', now, { actors: [world.hubs.ungranted] })}`;
    const chain = `Bearer ${await credentialFor(world, 'X26', now, { actors: [hub, world.hubs.expired] })}`;
    const issuer = world.issuers.nhs; // speaks for GP0001 only
    const wrongIssuer = `Bearer ${await mintToken({
      key: issuer.key.privateJwk,
      kid: issuer.key.kid,
      alg: issuer.key.alg as 'ES256',
      iss: issuer.iss,
      sub: world.senders.X26.client,
      aud: world.config.doc.audience,
      organisation: 'X26',
      organisationClaim: issuer.organisationClaim,
      nowMs: now,
    })}`;

    const table: [string, string, string | undefined, number][] = [
      ['X26 reads its own message', direct, x26, 200],
      ['X26 reads what its hub sent for it', viaHub, x26, 200],
      ['hub 7 reads what it sent', viaHub, hub7, 200],
      ['hub 7 reads X26’s own message (beyond its grant)', direct, hub7, 404],
      ['a hub with no grant reads X26’s message', direct, rogueHub, 404],
      ['a hub with no grant reads hub 7’s message', viaHub, rogueHub, 404],
      ['a longer actor chain through hub 7', viaHub, chain, 404],
      ['FQ123 (same issuer as X26)', direct, `Bearer ${await credentialFor(world, 'FQ123', now)}`, 404],
      ['GP0001 (another issuer)', direct, `Bearer ${await credentialFor(world, 'GP0001', now)}`, 404],
      ['X26’s organisation from an issuer not scoped for it', direct, wrongIssuer, 404],
      ['the operator token', direct, `Bearer ${OPERATOR_TOKEN}`, 404],
      ['no credential', direct, undefined, 404],
      ['X26’s credential as Basic', direct, x26.replace('Bearer', 'Basic'), 404],
    ];
    for (const [what, trackingId, authorization, status] of table) {
      const answer = await lookup(server, trackingId, authorization);
      expect(answer.status, what).toBe(status);
      // Every refusal is exactly the unknown id's answer: nothing to tell traces apart.
      if (status === 404) expect(answer.body, what).toBe(unknown.body);
    }
  });

  it('the console’s data answers only the operator token, however a sender’s credential is presented', async () => {
    const server = await serve({ console: { operatorToken: OPERATOR_TOKEN } });
    const now = Date.now();
    const origin = `http://127.0.0.1:${server.port}`;
    const sender = await credentialFor(world, 'X26', now);
    const hub = await credentialFor(world, 'X26', now, { actors: [world.hubs.granted] });
    const attempts: [string, string, Record<string, string>][] = [
      ['no credential', '/console/api/traces', {}],
      ['a sender credential', '/console/api/traces', { authorization: `Bearer ${sender}` }],
      ['a delegated hub credential', '/console/api/traces', { authorization: `Bearer ${hub}` }],
      ['the operator token as Basic', '/console/api/traces', { authorization: `Basic ${OPERATOR_TOKEN}` }],
      ['the operator token in the query', `/console/api/traces?token=${OPERATOR_TOKEN}`, {}],
      ['the operator token as a cookie', '/console/api/traces', { cookie: `token=${OPERATOR_TOKEN}` }],
      [
        'a prefix of the operator token',
        '/console/api/traces',
        { authorization: `Bearer ${OPERATOR_TOKEN.slice(0, -1)}` },
      ],
      [
        'the operator token with a suffix',
        '/console/api/traces',
        { authorization: `Bearer ${OPERATOR_TOKEN}x` },
      ],
      ['dead letters, sender credential', '/console/api/dead-letters', { authorization: `Bearer ${sender}` }],
      ['counts, sender credential', '/console/api/counts', { authorization: `Bearer ${sender}` }],
    ];
    for (const [what, path, headers] of attempts) {
      const response = await fetch(`${origin}${path}`, { headers });
      expect(response.status, what).toBe(401);
      expect(await response.text(), what).not.toContain(OPERATOR_TOKEN);
    }
    const redrive = await fetch(`${origin}/console/api/dead-letters/deliver/x/redrive`, {
      method: 'POST',
      headers: { authorization: `Bearer ${sender}` },
    });
    expect(redrive.status).toBe(401);
    // The console's own path rewritten to reach the sender API, and back: no crossing.
    const crossed = await fetch(`${origin}/console/api/../../messages/x`, {
      headers: { authorization: `Bearer ${OPERATOR_TOKEN}` },
    });
    expect(crossed.status).toBe(404);
    // Control: the operator token itself is accepted.
    const ok = await fetch(`${origin}/console/api/traces`, {
      headers: { authorization: `Bearer ${OPERATOR_TOKEN}` },
    });
    expect(ok.status).toBe(200);
  });
});
