/**
 * The configuration document: every problem reported at once (schema and cross-references), the
 * demo world's and the example's documents valid, the loaded configuration frozen, and a JSON
 * Schema for editors.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configJsonSchema, loadConfig, loadConfigFile } from '../../../lib/config/load.js';
import type { PipelineConfigInput } from '../../../lib/config/schema.js';
import { ConfigError } from '../../../lib/errors.js';
import type { DemoWorld } from '../../../lib/testkit/world.js';
import { makeTempDir, removeTempDirs, testWorld } from '../../support/world.js';

let world: DemoWorld;

beforeAll(async () => {
  world = await testWorld();
});
afterAll(removeTempDirs);

function configError(input: unknown): ConfigError {
  try {
    loadConfig(input);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error('expected the configuration to be refused');
}

function doc(): PipelineConfigInput {
  return structuredClone(world.configDoc);
}

describe('configuration: problems are all reported at once', () => {
  it('lists every schema problem in one error', () => {
    const bad = doc() as Record<string, unknown> & PipelineConfigInput;
    bad.gatewayOds = 'not an ods';
    bad.rules[0]!.event = 'ITK7C';
    bad.recipients[0]!.keys = [];
    delete (bad as Partial<PipelineConfigInput>).audience;
    (bad as Record<string, unknown>).surprise = true;

    const error = configError(bad);
    expect(error.code).toBe('CONFIG_INVALID');
    const paths = error.issues.map((i) => i.slice(0, i.indexOf(':')));
    expect(paths).toEqual(
      expect.arrayContaining(['gatewayOds', 'rules.0.event', 'recipients.0.keys', 'audience', '(document)']),
    );
    expect(error.issues.length).toBeGreaterThanOrEqual(5);
    expect(error.message).toContain(`${error.issues.length} problems`);
  });

  it('lists every cross-reference problem in one error', () => {
    const bad = doc();
    // A rule naming an unknown sender and an unknown recipient.
    bad.rules[0]!.sender = { ods: 'ZZ999' };
    bad.rules[1]!.recipients = ['A83627', 'B99999'];
    // A recipient key id listed twice (by another recipient).
    bad.recipients[1]!.keys = [{ kid: bad.recipients[0]!.keys[0]!.kid }];
    // A sender signing key id reused by another sender.
    bad.senders[2]!.signingKeys = [{ ...bad.senders[1]!.signingKeys[0]! }];
    // A delegation grant for an organisation that is not a sender.
    bad.delegations = [
      ...(bad.delegations ?? []),
      {
        id: 'ghost-grant',
        actor: 'hub',
        issuers: ['pharmacy-federation'],
        onBehalfOf: ['FQ777'],
        events: ['ITK009D'],
        expires: '2030-01-01',
      },
    ];
    // A rule id listed twice.
    bad.rules.push({ ...bad.rules[2]! });

    const error = configError(bad);
    expect(error.issues).toEqual(
      expect.arrayContaining([
        'rules.0.sender.ods: "ZZ999" is not a configured sender',
        'rules.1.recipients: "B99999" is not a configured recipient',
        `recipients.1.keys.0.kid: "${world.recipients.A83627.key.kid}" is listed twice`,
        `senders.2.signingKeys.0.kid: "${world.senders.X26.key.kid}" is used by another sender key`,
        `delegations.${bad.delegations.length - 1}.onBehalfOf: "FQ777" is not a configured sender`,
        `rules.3.id: "${bad.rules[2]!.id}" is listed twice`,
      ]),
    );
    expect(error.issues).toHaveLength(6);
  });

  it('names a rule client that is not a client of its sender', () => {
    const bad = doc();
    bad.rules[0]!.sender = {
      ods: 'GP0001',
      clients: [
        { issuer: 'nhs-identity', sub: 'not-a-gp0001-client' },
        // GP0001's real subject, but as the federation would name it.
        { issuer: 'pharmacy-federation', sub: 'gp0001-ehr' },
      ],
    };
    expect(configError(bad).issues).toEqual([
      'rules.0.sender.clients.0: client "not-a-gp0001-client" of issuer "nhs-identity" is not a client of sender GP0001',
      'rules.0.sender.clients.1: client "gp0001-ehr" of issuer "pharmacy-federation" is not a client of sender GP0001',
    ]);
  });

  it('refuses a response-signing key id that is also a recipient key id', () => {
    const bad = doc();
    bad.responseSigning = { kid: world.recipients.A83627.key.kid };
    expect(configError(bad).issues).toEqual(['responseSigning.kid: must differ from every recipient key id']);
  });

  it('refuses a private key member in a published JWK', () => {
    const bad = doc();
    const key = bad.senders[0]!.signingKeys[0]! as Record<string, unknown>;
    key.d = 'private-part';
    expect(configError(bad).issues.some((i) => i.startsWith('senders.0.signingKeys.0'))).toBe(true);
  });

  it('lists schema problems and cross-reference problems together', () => {
    const bad = doc() as Record<string, unknown> & PipelineConfigInput;
    // Schema problems: a malformed gateway ODS code and a malformed rule event.
    bad.gatewayOds = 'bad ods';
    bad.rules[1]!.event = 'ITK7C';
    // Cross-reference problems in elements that are well-formed on their own.
    bad.rules[0]!.sender = { ods: 'ZZZ999' };
    bad.rules[2]!.recipients = ['B99999'];

    const error = configError(bad);
    expect(error.code).toBe('CONFIG_INVALID');
    const paths = error.issues.map((i) => i.slice(0, i.indexOf(':')));
    expect(paths).toEqual(expect.arrayContaining(['gatewayOds', 'rules.1.event']));
    // Reported in the same round, naming each element by its index in the document.
    expect(error.issues).toEqual(
      expect.arrayContaining([
        'rules.0.sender.ods: "ZZZ999" is not a configured sender',
        'rules.2.recipients: "B99999" is not a configured recipient',
      ]),
    );
    expect(error.issues).toHaveLength(4);
    expect(error.message).toContain('4 problems');
  });
});

describe('configuration: federation scope', () => {
  const issuer = (d: PipelineConfigInput, id: string) => d.issuers.find((i) => i.id === id)!;

  it('refuses an unscoped issuer, an empty scope, a bare "*" and malformed entries', () => {
    const bad = doc();
    delete (issuer(bad, 'nhs-identity') as Partial<(typeof bad.issuers)[number]>).organisations;
    issuer(bad, 'pharmacy-federation').organisations = ['*', 'F**', 'x26', 'FQ123'];
    const issues = configError(bad).issues;
    expect(issues).toEqual(
      expect.arrayContaining([
        'issuers.0.organisations: required: list the ODS codes or prefix patterns (such as "FA*") this issuer may speak for',
        'issuers.1.organisations.0: a bare "*" (any organisation) is not accepted: list the ODS codes or prefixes (such as "FA*") this issuer speaks for',
        expect.stringMatching(/^issuers\.1\.organisations\.1: an ODS code .* or a prefix pattern/),
        expect.stringMatching(/^issuers\.1\.organisations\.2: an ODS code .* or a prefix pattern/),
      ]),
    );
    expect(issues).toHaveLength(4);

    const empty = doc();
    issuer(empty, 'nhs-identity').organisations = [];
    expect(configError(empty).issues).toContain(
      'issuers.0.organisations: an issuer must speak for at least one organisation',
    );
  });

  it('refuses a bare client subject: a client names its issuer', () => {
    const bad = doc() as unknown as { senders: { clients: unknown[] }[] };
    bad.senders[0]!.clients = ['gp0001-ehr'];
    expect(configError(bad).issues).toEqual([
      'senders.0.clients.0: a client is {"issuer": <issuer id>, "sub": <token subject>}: a bare subject is not tied to an issuer',
    ]);
  });

  it('names clients of unknown issuers, of issuers that may not speak for the sender, and duplicates', () => {
    const bad = doc();
    bad.senders[0]!.clients = [
      { issuer: 'nhs-identity', sub: 'gp0001-ehr' },
      { issuer: 'retired-idp', sub: 'gp0001-ehr' },
      // The federation's scope (X26, F*) does not include GP0001: this client could never send.
      { issuer: 'pharmacy-federation', sub: 'gp0001-ehr' },
      { issuer: 'nhs-identity', sub: 'gp0001-ehr' },
    ];
    expect(configError(bad).issues).toEqual([
      'senders.0.clients.1.issuer: "retired-idp" is not a configured issuer id',
      'senders.0.clients.2.issuer: issuer "pharmacy-federation" may not speak for GP0001 (not in its organisations), so this client\'s credentials would be refused',
      'senders.0.clients.3: client "gp0001-ehr" of issuer "nhs-identity" is listed twice',
    ]);
  });

  it('refuses a grant that names no issuer, an unknown one, or only issuers that cannot speak for its organisations', () => {
    const bad = doc();
    const grant = bad.delegations![0]!;
    bad.delegations = [
      { ...grant, id: 'no-issuers', issuers: [] },
      { ...grant, id: 'ghost-issuer', issuers: ['retired-idp'] },
      { ...grant, id: 'wrong-issuer', issuers: ['nhs-identity'] },
    ];
    expect(configError(bad).issues).toEqual([
      'delegations.0.issuers: a grant names the issuers that vouch for the actor, or the MESH mailboxes it runs (meshMailboxes)',
      'delegations.1.issuers.0: "retired-idp" is not a configured issuer id',
      'delegations.2.onBehalfOf: "X26" is outside the organisations of every issuer the grant names, so the grant can never apply to it',
    ]);
  });

  it('reports overlapping scopes as warnings, and keeps them beside the problems of an invalid document', () => {
    const overlapping = doc();
    issuer(overlapping, 'nhs-identity').organisations = ['GP0001', 'FQ123', 'X2*'];
    const config = loadConfig(overlapping);
    expect(config.warnings).toEqual([
      'issuers.0 "nhs-identity" and issuers.1 "pharmacy-federation" may both speak for FQ123 ("FQ123" / "F*"), X26 ("X2*" / "X26")',
    ]);
    expect(loadConfig(world.configDoc).warnings).toEqual([]);

    overlapping.rules[0]!.recipients = ['B99999'];
    const error = configError(overlapping);
    expect(error.issues).toEqual(['rules.0.recipients: "B99999" is not a configured recipient']);
    expect(error.warnings).toHaveLength(1);
    expect(error.message).toMatch(
      /1 problem\):[\s\S]*warnings:\n {2}- issuers\.0 "nhs-identity" and issuers\.1/,
    );
  });

  it('refuses an organisation listed twice in one scope', () => {
    const bad = doc();
    issuer(bad, 'pharmacy-federation').organisations = ['X26', 'F*', 'X26'];
    expect(configError(bad).issues).toEqual(['issuers.1.organisations.2: "X26" is listed twice']);
  });
});

describe('configuration: valid documents', () => {
  it('the demo world’s document is valid and indexed', () => {
    const config = loadConfig(world.configDoc);
    expect([...config.sendersByOds.keys()].sort()).toEqual(['FQ123', 'GP0001', 'X26']);
    expect([...config.recipientsByOds.keys()].sort()).toEqual(['A83627', 'A8797979']);
    expect(config.recipientByKid.get(world.recipients.A8797979.key.kid)).toBe('A8797979');
    expect(config.senderKeyByKid.get(world.senders.FQ123.key.kid)?.ods).toBe('FQ123');
    expect(config.issuersByIss.get(world.issuers.federation.iss)?.id).toBe('pharmacy-federation');
  });

  it('fills in defaults: limits, delegations, receiverAllowed', () => {
    const minimal = doc();
    delete minimal.limits;
    delete minimal.delegations;
    const config = loadConfig(minimal);
    expect(config.doc.limits).toMatchObject({
      maxBundleBytes: 5_242_880,
      clockSkewSeconds: 30,
      dedupeDays: 30,
    });
    expect(config.doc.delegations).toEqual([]);
    expect(config.doc.rules.find((r) => r.id === 'x26-immunisation-to-gp')?.receiverAllowed).toBe(true);
  });

  it('is frozen all the way down', () => {
    const config = loadConfig(world.configDoc);
    expect(Object.isFrozen(config)).toBe(true);
    expect(Object.isFrozen(config.doc)).toBe(true);
    expect(Object.isFrozen(config.doc.limits)).toBe(true);
    expect(Object.isFrozen(config.doc.rules)).toBe(true);
    expect(Object.isFrozen(config.doc.rules[0])).toBe(true);
    expect(Object.isFrozen(config.doc.senders[0]!.signingKeys[0])).toBe(true);
    expect(Object.isFrozen(config.sendersByOds.get('X26'))).toBe(true);

    expect(() => {
      (config.doc.limits as { maxBundleBytes: number }).maxBundleBytes = 1;
    }).toThrow(TypeError);
    expect(() => (config.doc.rules as unknown as unknown[]).push({})).toThrow(TypeError);
    expect(() => {
      (config.doc.senders[0]!.clients as { issuer: string; sub: string }[])[0] = {
        issuer: 'pharmacy-federation',
        sub: 'intruder',
      };
    }).toThrow(TypeError);
  });

  it('does not change or freeze the input document', () => {
    const input = doc();
    const before = JSON.stringify(input);
    loadConfig(input);
    expect(JSON.stringify(input)).toBe(before);
    expect(Object.isFrozen(input)).toBe(false);
  });

  it('loads a file and reports unreadable or non-JSON files as configuration problems', () => {
    const dir = makeTempDir();
    const good = join(dir, 'config.json');
    writeFileSync(good, JSON.stringify(world.configDoc));
    expect(loadConfigFile(good).doc.gatewayOds).toBe('ITK3GW');

    const missing = join(dir, 'missing.json');
    expect(() => loadConfigFile(missing)).toThrow(ConfigError);
    const notJson = join(dir, 'bad.json');
    writeFileSync(notJson, '{ not json');
    expect(() => loadConfigFile(notJson)).toThrow(/not valid JSON/);
  });

  it('docs/config.example.json validates', (ctx) => {
    const example = resolve(import.meta.dirname, '../../../docs/config.example.json');
    if (!existsSync(example)) {
      console.warn(`skipped: ${example} does not exist`);
      ctx.skip();
      return;
    }
    const config = loadConfigFile(example);
    expect(config.doc.rules.length).toBeGreaterThan(0);
    expect(config.doc.recipients.length).toBeGreaterThan(0);
    // The example's rules name only configured parties (cross-references were checked).
    for (const rule of config.doc.rules) expect(config.sendersByOds.has(rule.sender.ods)).toBe(true);
    expect(JSON.parse(readFileSync(example, 'utf8')).$schema).toBeTypeOf('string');
  });
});

describe('configuration: JSON Schema', () => {
  it('produces a JSON Schema object describing the document', () => {
    const schema = configJsonSchema() as {
      $schema?: string;
      type?: string;
      properties?: Record<string, unknown>;
      required?: string[];
      additionalProperties?: unknown;
    };
    expect(schema.$schema).toMatch(/json-schema\.org/);
    expect(schema.type).toBe('object');
    expect(Object.keys(schema.properties ?? {})).toEqual(
      expect.arrayContaining([
        'audience',
        'gatewayOds',
        'responseSigning',
        'issuers',
        'senders',
        'recipients',
        'rules',
        'delegations',
        'limits',
      ]),
    );
    expect(schema.required).toEqual(expect.arrayContaining(['audience', 'issuers', 'recipients', 'rules']));
    expect(schema.additionalProperties).toBe(false);
    // Serialisable as JSON (written to docs/config.schema.json).
    expect(() => JSON.stringify(schema)).not.toThrow();
  });
});
