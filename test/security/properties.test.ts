/**
 * Property-based tests (fast-check) at the pipeline's trust boundaries:
 *
 * 1. The envelope parsers — `parseSealed`, `parseSigned`, `verifyCredential` — on arbitrary input
 *    and on mutations of valid envelopes never throw anything but a classified `PipelineError`
 *    (an unclassified throw is treated as transient: retried, then dead-lettered, which would turn
 *    hostile input into queue load), and a mutated envelope is never accepted.
 * 2. The policy (`authorise`) never allows a principal/routing unless one rule matches exactly and
 *    every delegation hop holds an unexpired grant; checked against an independent oracle.
 * 3. "Never acceptance of a mutated valid message": single-character mutations of a valid sealed
 *    message or its credential, sent through the whole embedded pipeline, are never delivered.
 *
 * The ITK3 Bundle parser has its own property test (test/unit/itk3/property.test.ts).
 * Runs are bounded so the file stays fast on 2 cores; failures print fast-check's seed and path.
 */
import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decryptSealed, parseSealed } from '../../lib/envelope/jwe.js';
import { parseSigned, verifySigned } from '../../lib/envelope/jws.js';
import type { ItkRouting } from '../../lib/envelope/routing.js';
import { verifyCredential } from '../../lib/envelope/token.js';
import { AuthorisationError, EnvelopeError, PipelineError } from '../../lib/errors.js';
import { authorise, grantExpiry } from '../../lib/policy/index.js';
import type { Principal } from '../../lib/record.js';
import type { DemoWorld } from '../../lib/testkit/world.js';
import {
  buildMessage,
  credentialFor,
  keyService,
  makeTempDir,
  removeTempDirs,
  type SenderOds,
  sealAs,
  signAs,
  testWorld,
} from '../support/world.js';
import { b64u, Harness } from './support.js';

let world: DemoWorld;
const limits = { maxSealedBytes: 9 * 1024 * 1024 };

beforeAll(async () => {
  world = await testWorld();
});

afterAll(() => {
  removeTempDirs();
});

/** Run `fn`; true when it returned, false when it threw a PipelineError; anything else fails. */
async function classified(fn: () => unknown): Promise<boolean> {
  try {
    await fn();
    return true;
  } catch (error) {
    if (!(error instanceof PipelineError)) {
      throw new Error(
        `unclassified ${(error as Error)?.constructor?.name ?? typeof error}: ${(error as Error)?.message}`,
      );
    }
    return false;
  }
}

const B64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const HOSTILE_CHARS = [...B64URL, '.', '=', ' ', '+', '/', '{', '}', '"', '\u00e9', '\u0000', '\ud800'];

/** A JSON-ish protected header: the names and values the parsers branch on, plus noise. */
const headerArb = fc.dictionary(
  fc.constantFrom(
    'alg',
    'enc',
    'kid',
    'cty',
    'itk',
    'typ',
    'zip',
    'crit',
    'jwk',
    'b64',
    'x5u',
    'p2c',
    '__proto__',
    'x',
  ),
  fc.oneof(
    fc.constantFrom(
      'RSA-OAEP-256',
      'A256GCM',
      'JOSE',
      'fhir+xml',
      'ES256',
      'RS512',
      'PS256',
      'none',
      'HS256',
      'DEF',
      'JWT',
    ),
    fc.record({
      from: fc.constantFrom('X26', 'GP0001', ''),
      to: fc.constantFrom('A83627', 'x'),
      event: fc.string(),
      id: fc.string(),
    }),
    fc.jsonValue({ maxDepth: 3 }),
  ),
  { maxKeys: 7 },
);

const segmentArb = fc.oneof(
  fc.string({ unit: fc.constantFrom(...B64URL), maxLength: 64 }),
  fc.uint8Array({ maxLength: 300 }).map((b) => b64u(b)),
  fc.string({ unit: fc.constantFrom(...HOSTILE_CHARS), maxLength: 16 }),
);

/** Compact-looking strings: an encoded header (or noise) followed by 0–6 more segments. */
const compactArb = fc
  .tuple(
    fc.oneof(
      headerArb.map((h) => b64u(JSON.stringify(h))),
      segmentArb,
    ),
    fc.array(segmentArb, { maxLength: 6 }),
  )
  .map(([h, rest]) => [h, ...rest].join('.'));

const anyStringArb = fc.oneof(fc.string({ unit: 'binary', maxLength: 400 }), compactArb);

describe('envelope parsers on arbitrary input: classified errors only', () => {
  it('parseSealed', async () => {
    await fc.assert(
      fc.asyncProperty(anyStringArb, async (s) => {
        await classified(() => parseSealed(s, limits));
      }),
      { numRuns: 1500 },
    );
  });

  it('parseSigned, from a string and from bytes', async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(anyStringArb, fc.uint8Array({ maxLength: 400 })), async (s) => {
        await classified(() => parseSigned(s, limits));
      }),
      { numRuns: 1500 },
    );
  });

  it('verifyCredential', async () => {
    await fc.assert(
      fc.asyncProperty(anyStringArb, async (s) => {
        await classified(() => verifyCredential(s, world.config, Date.now()));
      }),
      { numRuns: 800 },
    );
  });
});

/** One edit of one segment of a compact serialisation. */
interface Mutation {
  segment: number;
  offset: number;
  op: 'replace' | 'insert' | 'delete';
  ch: string;
}

const mutationArb = (segments: number): fc.Arbitrary<Mutation> =>
  fc.record({
    segment: fc.nat(segments - 1),
    offset: fc.nat(),
    op: fc.constantFrom('replace', 'insert', 'delete'),
    ch: fc.constantFrom(...HOSTILE_CHARS),
  });

/** Apply a mutation; the result differs from the input or is `undefined` (a no-op, skipped). */
function mutate(compact: string, m: Mutation): string | undefined {
  const parts = compact.split('.');
  const seg = parts[m.segment] ?? '';
  const at = seg.length === 0 ? 0 : m.offset % (m.op === 'insert' ? seg.length + 1 : seg.length);
  let next: string;
  if (m.op === 'replace') next = `${seg.slice(0, at)}${m.ch}${seg.slice(at + 1)}`;
  else if (m.op === 'insert') next = `${seg.slice(0, at)}${m.ch}${seg.slice(at)}`;
  else next = `${seg.slice(0, at)}${seg.slice(at + 1)}`;
  parts[m.segment] = next;
  const out = parts.join('.');
  return out === compact ? undefined : out;
}

describe('mutations of valid envelopes are never accepted', () => {
  it('credential: verifyCredential refuses every single edit, with a classified error', async () => {
    const token = await credentialFor(world, 'GP0001', Date.now());
    const now = Date.now();
    await fc.assert(
      fc.asyncProperty(mutationArb(3), async (m) => {
        const mutated = mutate(token, m);
        fc.pre(mutated !== undefined);
        expect(await classified(() => verifyCredential(mutated ?? '', world.config, now))).toBe(false);
      }),
      { numRuns: 400 },
    );
  });

  it('sealed message: parseSealed + decryptSealed refuse every single edit', async () => {
    const keys = keyService(world);
    const sealed = await sealAs(world, 'X26', buildMessage('X26'));
    await fc.assert(
      fc.asyncProperty(mutationArb(5), async (m) => {
        const mutated = mutate(sealed, m);
        fc.pre(mutated !== undefined);
        expect(await classified(async () => decryptSealed(parseSealed(mutated ?? '', limits), keys))).toBe(
          false,
        );
      }),
      { numRuns: 400 },
    );
  });

  it('inner JWS: parseSigned + verifySigned refuse every single edit', async () => {
    const msg = buildMessage('GP0001');
    const jws = await signAs(world, 'GP0001', msg);
    await fc.assert(
      fc.asyncProperty(mutationArb(3), async (m) => {
        const mutated = mutate(jws, m);
        fc.pre(mutated !== undefined);
        expect(
          await classified(async () =>
            verifySigned(parseSigned(mutated ?? '', limits), 'GP0001', world.config),
          ),
        ).toBe(false);
      }),
      { numRuns: 400 },
    );
  });
});

describe('policy: deny unless a rule matches exactly', () => {
  it('authorise allows only what an independent oracle allows, and names a matching rule', () => {
    const { config } = world;
    const doc = config.doc;
    const now = Date.now();
    const clients = doc.senders.flatMap((s) => s.clients);
    const rogue = { issuer: doc.issuers[0]!.id, sub: 'rogue-client' };
    // Each registered subject also under the other issuers: the same sub from another issuer.
    const crossIssuer = clients.flatMap((c) =>
      doc.issuers.filter((i) => i.id !== c.issuer).map((i) => ({ issuer: i.id, sub: c.sub })),
    );
    const unknownIssuer = { issuer: 'unknown-issuer', sub: clients[0]!.sub };
    const kids = [...config.recipientByKid.keys(), world.responseSigningKid, 'unknown-kid'];
    const events = [...new Set(doc.rules.map((r) => r.event)), 'ITK008M', 'ITK011M'];
    const recipients = [...config.recipientsByOds.keys(), 'B99999'];
    const orgs = [...config.sendersByOds.keys(), 'Z99'];
    const actors = [world.hubs.granted, world.hubs.expired, world.hubs.ungranted, 'other-hub'];

    const inputArb = fc.oneof(
      // Near a rule: most fields from the rule, some swapped.
      fc
        .record({
          rule: fc.constantFrom(...doc.rules),
          swapFrom: fc.integer({ min: 0, max: 3 }).map((n) => n === 0),
          org: fc.constantFrom(...orgs),
          subject: fc.constantFrom(...clients, ...crossIssuer, rogue, unknownIssuer),
          useRuleSubject: fc.boolean(),
          // freq 2: half the time the rule's own value (nil), half a swapped one.
          to: fc.option(fc.constantFrom(...recipients), { freq: 2, nil: undefined }),
          event: fc.option(fc.constantFrom(...events), { freq: 2, nil: undefined }),
          kid: fc.option(fc.constantFrom(...kids), { freq: 2, nil: undefined }),
          actors: fc.oneof(
            { weight: 3, arbitrary: fc.constant<string[]>([]) },
            { weight: 2, arbitrary: fc.array(fc.constantFrom(...actors), { minLength: 1, maxLength: 3 }) },
          ),
          dayOffset: fc.integer({ min: -200, max: 200 }),
        })
        .map((v) => {
          const sender = config.sendersByOds.get(v.rule.sender.ods);
          const organisation = v.swapFrom ? v.org : v.rule.sender.ods;
          const to = v.to ?? v.rule.recipients[0] ?? 'A83627';
          const recipientKid =
            [...config.recipientByKid.entries()].find(([, ods]) => ods === to)?.[0] ?? 'unknown-kid';
          return {
            principal: principal(
              organisation,
              v.useRuleSubject ? (sender?.clients[0] ?? rogue) : v.subject,
              v.actors,
            ),
            routing: { from: v.rule.sender.ods, to, event: v.event ?? v.rule.event, id: randomUUID() },
            kid: v.kid ?? recipientKid,
            receivedAt: now + v.dayOffset * 86_400_000,
          };
        }),
      // Anything at all from the vocabularies.
      fc
        .record({
          org: fc.constantFrom(...orgs),
          from: fc.constantFrom(...orgs),
          subject: fc.constantFrom(...clients, ...crossIssuer, rogue, unknownIssuer),
          to: fc.constantFrom(...recipients),
          event: fc.constantFrom(...events),
          kid: fc.constantFrom(...kids),
          actors: fc.array(fc.constantFrom(...actors), { maxLength: 3 }),
          dayOffset: fc.integer({ min: -200, max: 200 }),
        })
        .map((v) => ({
          principal: principal(v.org, v.subject, v.actors),
          routing: { from: v.from, to: v.to, event: v.event, id: randomUUID() },
          kid: v.kid,
          receivedAt: now + v.dayOffset * 86_400_000,
        })),
    );

    let allowed = 0;
    let denied = 0;
    fc.assert(
      fc.property(inputArb, (input) => {
        const expected = oracle(input);
        let decision: ReturnType<typeof authorise> | undefined;
        try {
          decision = authorise(input, config);
        } catch (error) {
          expect(error instanceof AuthorisationError || error instanceof EnvelopeError).toBe(true);
        }
        if (decision) {
          allowed += 1;
          expect(expected, 'authorise allowed what no rule allows').toBeDefined();
          expect(decision.ruleId).toBe(expected);
          expect(decision.recipient).toBe(input.routing.to);
        } else {
          denied += 1;
          expect(expected, 'authorise denied what a rule allows').toBeUndefined();
        }
      }),
      { numRuns: 3000 },
    );
    // The generator must exercise both answers, or the property proves little.
    expect(allowed).toBeGreaterThan(50);
    expect(denied).toBeGreaterThan(50);
    console.log(`policy property: ${allowed} allowed, ${denied} denied`);

    function principal(
      organisation: string,
      client: { issuer: string; sub: string },
      chain: string[],
    ): Principal {
      return {
        issuer: client.issuer,
        iss: doc.issuers.find((i) => i.id === client.issuer)?.issuer ?? 'https://unknown.example',
        subject: client.sub,
        organisation,
        actors: chain,
        roles: [],
        jti: randomUUID(),
      };
    }

    /** The rule id that allows `input`, or undefined. Written from the README, not from the code. */
    function oracle(input: {
      principal: Principal;
      routing: ItkRouting;
      kid: string;
      receivedAt: number;
    }): string | undefined {
      const { principal: p, routing: r, kid, receivedAt } = input;
      const issuer = doc.issuers.find((i) => i.id === p.issuer && i.issuer === p.iss);
      const inScope = issuer?.organisations.some((entry) =>
        entry.endsWith('*') ? p.organisation.startsWith(entry.slice(0, -1)) : entry === p.organisation,
      );
      if (!inScope) return undefined;
      if (r.from !== p.organisation) return undefined;
      const isClient = (c: { issuer: string; sub: string }) => c.issuer === p.issuer && c.sub === p.subject;
      const sender = doc.senders.find((s) => s.ods === r.from);
      if (!sender?.clients.some(isClient)) return undefined;
      const recipient = doc.recipients.find((x) => x.ods === r.to);
      if (!recipient?.keys.some((k) => k.kid === kid)) return undefined;
      for (const actor of p.actors) {
        const ok = doc.delegations.some(
          (g) =>
            g.actor === actor &&
            g.issuers.includes(p.issuer) &&
            g.onBehalfOf.includes(r.from) &&
            g.events.includes(r.event) &&
            grantExpiry(g) > receivedAt,
        );
        if (!ok) return undefined;
      }
      return doc.rules.find(
        (rule) =>
          rule.sender.ods === r.from &&
          rule.event === r.event &&
          rule.recipients.includes(r.to) &&
          (rule.sender.clients === undefined || rule.sender.clients.some(isClient)),
      )?.id;
    }
  });
});

describe('never acceptance of a mutated valid message through the whole pipeline', () => {
  it('single-character edits of the sealed message or its credential are never delivered (200 runs)', async () => {
    const h = new Harness(world, makeTempDir('itk3-properties-'));
    const senders: SenderOds[] = ['GP0001', 'X26', 'FQ123'];
    const sealed = Object.fromEntries(
      await Promise.all(senders.map(async (s) => [s, await sealAs(world, s, buildMessage(s))] as const)),
    ) as Record<SenderOds, string>;
    const outcomes: Record<string, number> = {};
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...senders),
        fc.constantFrom('token', 'sealed'),
        mutationArb(5),
        fc.constantFrom('http', 'sqs'),
        async (sender, target, m, via) => {
          // A fresh credential each run, so an edit of the sealed message is judged past authenticate.
          const token = await credentialFor(world, sender, h.now());
          const original = target === 'token' ? token : sealed[sender];
          const mutated = mutate(original, { ...m, segment: m.segment % (target === 'token' ? 3 : 5) });
          fc.pre(mutated !== undefined);
          const r = await h.run({
            credential: target === 'token' ? (mutated ?? '') : token,
            sealed: target === 'sealed' ? (mutated ?? '') : sealed[sender],
            via,
          });
          const key = `${r.outcome.stage}/${r.outcome.code ?? r.outcome.status}`;
          outcomes[key] = (outcomes[key] ?? 0) + 1;
          expect(r.outcome.status).not.toBe('delivered');
          expect(r.outcome.status).toBe('rejected');
        },
      ),
      { numRuns: 200 },
    );
    console.log(`mutated messages through the pipeline: ${JSON.stringify(outcomes)}`);
    expect(h.pipeline.deadLetters()).toHaveLength(0);
  });
});
