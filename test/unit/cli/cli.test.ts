/**
 * The `itk3` command line through `main(argv, write)`: help, usage errors with clear messages and
 * exit code 2, unreadable files, configuration validation, key generation, a full token → seal →
 * process flow over a demo world written to disk (the HTTP front door of `serve`: serve.test.ts).
 */
import '../../support/env.js';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { readKeystore, writeKeystore } from '../../../lib/adapters/local/keystore.js';
import { main } from '../../../lib/cli/main.js';
import { DEMO_AUDIENCE, type DemoWorld, worldPaths } from '../../../lib/demo/world.js';
import { loadSamples } from '../../../lib/itk3/index.js';
import {
  buildMessage,
  credentialFor,
  deliveredFile,
  filesIn,
  makeTempDir,
  removeTempDirs,
  sealAs,
  testWorld,
} from '../../support/world.js';

let world: DemoWorld;

beforeAll(async () => {
  world = await testWorld();
});
afterAll(removeTempDirs);

/** Run the CLI, capturing its output lines and everything written to stderr. */
async function cli(...argv: string[]): Promise<{ code: number; out: string[]; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const spy = vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
    err.push(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8'));
    return true;
  });
  try {
    const code = await main(argv, (line) => out.push(line));
    return { code, out, err: err.join('') };
  } finally {
    spy.mockRestore();
  }
}

/** The world's keystore and configuration written where the CLI can read them. */
function worldOnDisk(): { dir: string; keystore: string; config: string } {
  const dir = makeTempDir('itk3-cli-');
  const keystore = join(dir, 'keystore.json');
  const config = join(dir, 'config.json');
  writeKeystore(keystore, world.keystore);
  writeFileSync(config, `${JSON.stringify(world.configDoc, null, 2)}\n`);
  return { dir, keystore, config };
}

describe('itk3: help and usage errors', () => {
  it('help prints the usage and exits 0', async () => {
    const { code, out } = await cli('help');
    expect(code).toBe(0);
    expect(out.join('\n')).toMatch(/Usage: itk3 <command>/);
    for (const command of ['demo', 'keys init', 'token', 'seal', 'process', 'serve', 'config validate']) {
      expect(out.join('\n')).toContain(command);
    }
  });

  it('no command prints the usage and exits 2', async () => {
    const { code, out } = await cli();
    expect(code).toBe(2);
    expect(out.join('\n')).toMatch(/Usage:/);
  });

  it('an unknown command exits 2 with a clear message', async () => {
    const { code, err } = await cli('frobnicate');
    expect(code).toBe(2);
    expect(err).toMatch(/error: unknown command "frobnicate"/);
  });

  it.each([
    [['token', '--iss', 'x'], /--kid is required/],
    [['process', 'somewhere'], /--config is required/],
    [['serve'], /--config is required/],
    [
      ['serve', '--config', 'c.json', '--max-connections', '0'],
      /--max-connections must be a positive integer/,
    ],
    [['serve', '--config', 'c.json', '--idle-timeout', 'soon'], /--idle-timeout must be a number of seconds/],
    [
      ['serve', '--config', 'c.json', '--headers-timeout', '90', '--request-timeout', '30'],
      /--headers-timeout must not exceed --request-timeout/,
    ],
    [['serve', '--config', 'c.json', '--allowed-host', 'a b'], /--allowed-host "a b" is not a host\[:port\]/],
    [['seal', '--to', 'A83627'], /usage: itk3 seal FILE/],
    [['seal', 'bundle.xml', '--to', 'A83627'], /--signer-kid is required/],
    [['keys', 'init', '--keystore', '/tmp/itk3-never-written/ks.json'], /name at least one recipient/],
    [['keys', 'frob'], /usage: itk3 keys init\|add\|public/],
    [['config', 'validate'], /usage: itk3 config validate FILE/],
    [['token', '--bogus'], /error: .*bogus/],
  ])('%j exits 2 with a clear message', async (argv, message) => {
    const { code, err } = await cli(...argv);
    expect(code).toBe(2);
    expect(err).toMatch(message);
    expect(err.trim().split('\n')).toHaveLength(1);
  });

  it('a bad option value exits 2', async () => {
    const { config, keystore } = worldOnDisk();
    const port = await cli('serve', '--config', config, '--port', '70000');
    expect(port.code).toBe(2);
    expect(port.err).toMatch(/--port must be 0–65535/);
    const workers = await cli('serve', '--config', config, '--keystore', keystore, '--workers', 'many');
    expect(workers.code).toBe(2);
    expect(workers.err).toMatch(/--workers must be a whole number 0–256/);
    const modulus = await cli(
      'keys',
      'init',
      '--keystore',
      join(makeTempDir(), 'ks.json'),
      '--recipient',
      'RX1',
      '--modulus',
      '1024',
    );
    expect(modulus.code).toBe(2);
    expect(modulus.err).toMatch(/--modulus must be 2048, 3072 or 4096/);
  });
});

describe('itk3: unreadable files', () => {
  it.each([
    [
      ['seal', '/nonexistent/bundle.xml', '--signer-kid', 'k', '--to', 'A83627'],
      /cannot read \/nonexistent\/bundle\.xml/,
    ],
    [['config', 'validate', '/nonexistent/config.json'], /cannot read configuration file/],
    [['keys', 'public', '--keystore', '/nonexistent/keystore.json'], /cannot read keystore file/],
  ])('%j exits non-zero naming the file', async (argv, message) => {
    const { code, err } = await cli(...argv);
    expect(code).not.toBe(0);
    expect(err).toMatch(message);
  });

  it('process of a missing path exits non-zero', async () => {
    const { config, keystore } = worldOnDisk();
    const { code, err } = await cli(
      'process',
      '/nonexistent/messages',
      '--config',
      config,
      '--keystore',
      keystore,
    );
    expect(code).not.toBe(0);
    expect(err).toMatch(/cannot read \/nonexistent\/messages/);
  });

  it('seal of a file that is neither XML nor JSON exits non-zero', async () => {
    const dir = makeTempDir();
    const file = join(dir, 'notes.txt');
    writeFileSync(file, 'plain text');
    const { code, err } = await cli('seal', file, '--signer-kid', 'k', '--to', 'A83627');
    expect(code).not.toBe(0);
    expect(err).toMatch(/neither XML nor JSON/);
  });

  it('a keystore that is not JSON is refused without quoting its content', async () => {
    const file = join(makeTempDir(), 'keystore.json');
    writeFileSync(file, '{"d": "SECRET-PRIVATE-MATERIAL", broken');
    const { code, err } = await cli('keys', 'public', '--keystore', file);
    expect(code).not.toBe(0);
    expect(err).toMatch(/is not valid JSON/);
    expect(err).not.toContain('SECRET-PRIVATE-MATERIAL');
  });
});

describe('itk3 config', () => {
  it('validate lists every problem of a bad file', async () => {
    const doc = structuredClone(world.configDoc);
    doc.rules[0]!.sender = { ods: 'ZZ999' };
    doc.rules[1]!.recipients = ['B99999'];
    doc.delegations = [
      {
        id: 'g',
        actor: 'hub',
        issuers: ['pharmacy-federation'],
        onBehalfOf: ['FQ777'],
        events: ['ITK009D'],
        expires: '2030-01-01',
      },
    ];
    const file = join(makeTempDir(), 'bad.json');
    writeFileSync(file, JSON.stringify(doc));

    const { code, err } = await cli('config', 'validate', file);
    expect(code).toBe(2);
    expect(err).toMatch(/configuration is invalid \(3 problems\)/);
    expect(err).toContain('rules.0.sender.ods: "ZZ999" is not a configured sender');
    expect(err).toContain('rules.1.recipients: "B99999" is not a configured recipient');
    expect(err).toContain('delegations.0.onBehalfOf: "FQ777" is not a configured sender');
  });

  it('validate accepts a good file and summarises it', async () => {
    const { config } = worldOnDisk();
    const { code, out } = await cli('config', 'validate', config);
    expect(code).toBe(0);
    expect(out.join('\n')).toMatch(/valid: 2 issuers, 3 senders, 2 recipients, 3 rules, 2 delegation grants/);
  });

  it('validate reports unscoped issuers and bare client ids as problems, with overlaps as warnings', async () => {
    const doc = structuredClone(world.configDoc);
    const nhs = doc.issuers[0]!;
    const federation = doc.issuers[1]!;
    delete (nhs as Partial<typeof nhs>).organisations;
    federation.organisations = ['X26', 'F*', 'GP*'];
    (doc.senders[0] as { clients: unknown }).clients = ['gp0001-ehr'];
    const file = join(makeTempDir(), 'unscoped.json');
    writeFileSync(file, JSON.stringify(doc));
    const { code, err } = await cli('config', 'validate', file);
    expect(code).toBe(2);
    expect(err).toMatch(/configuration is invalid \(2 problems\)/);
    expect(err).toContain('issuers.0.organisations: required: list the ODS codes or prefix patterns');
    expect(err).toContain('senders.0.clients.0: a client is {"issuer": <issuer id>, "sub": <token subject>}');

    // Scoped again, the overlap (both may speak for GP0001) is valid but said.
    nhs.organisations = ['GP0001'];
    doc.senders = structuredClone(world.configDoc.senders);
    writeFileSync(file, JSON.stringify(doc));
    const overlap = await cli('config', 'validate', file);
    expect(overlap.code).toBe(0);
    expect(overlap.out).toContain(
      'warning: issuers.0 "nhs-identity" and issuers.1 "pharmacy-federation" may both speak for GP0001 ("GP0001" / "GP*")',
    );
  });

  it('schema prints a JSON Schema', async () => {
    const { code, out } = await cli('config', 'schema');
    expect(code).toBe(0);
    expect(JSON.parse(out.join('\n'))).toMatchObject({ type: 'object' });
  });
});

describe('itk3 keys', () => {
  it('init writes a 0600 keystore and prints its public JWKS', async () => {
    const keystore = join(makeTempDir(), 'nested', 'keystore.json');
    const { code, out, err } = await cli(
      'keys',
      'init',
      '--keystore',
      keystore,
      '--recipient',
      'RX1',
      '--modulus',
      '2048',
    );
    expect(code).toBe(0);
    expect(err).toMatch(/mode 0600/);
    expect(statSync(keystore).mode & 0o777).toBe(0o600);

    const jwks = JSON.parse(out.join('\n')) as { keys: Record<string, unknown>[] };
    expect(jwks.keys.map((k) => [k.kty, k.alg, k.use])).toEqual([
      ['RSA', 'RSA-OAEP-256', 'enc'],
      ['EC', 'ES256', 'sig'],
    ]);
    for (const key of jwks.keys) {
      for (const member of ['d', 'p', 'q', 'dp', 'dq', 'qi']) expect(key).not.toHaveProperty(member);
    }
    const stored = readKeystore(keystore);
    expect(stored.keys.map((k) => k.kid)).toEqual(jwks.keys.map((k) => k.kid));
    expect(stored.keys.map((k) => k.purpose)).toEqual(['recipient-decrypt', 'response-sign']);

    const again = await cli(
      'keys',
      'init',
      '--keystore',
      keystore,
      '--recipient',
      'RX1',
      '--modulus',
      '2048',
    );
    expect(again.code).toBe(2);
    expect(again.err).toMatch(/exists; pass --force/);
  });
});

describe('itk3 token → seal → process', () => {
  it('a message sealed and credentialled through the CLI is delivered by process', async () => {
    const { dir, keystore, config } = worldOnDisk();
    const sample = loadSamples().find((s) => s.name === 'engage_hettie_winters_imms.xml')!;
    const bundle = join(dir, 'hettie.xml');
    writeFileSync(bundle, sample.bytes);
    const messages = join(dir, 'messages');
    mkdirSync(messages);

    const x26 = world.senders.X26;
    const token = await cli(
      'token',
      '--keystore',
      keystore,
      '--kid',
      x26.issuer.key.kid,
      '--iss',
      x26.issuer.iss,
      '--sub',
      x26.client,
      '--aud',
      DEMO_AUDIENCE,
      '--org',
      'X26',
      '--org-claim',
      x26.issuer.organisationClaim,
    );
    expect(token.code).toBe(0);
    // Counts, not values: a failure must never print the credential.
    expect(token.out.length).toBe(1);
    expect(token.out[0]!.split('.').length).toBe(3);
    writeFileSync(join(messages, 'hettie.jwt'), `${token.out[0]}\n`);

    const seal = await cli(
      'seal',
      bundle,
      '--keystore',
      keystore,
      '--signer-kid',
      x26.key.kid,
      '--to',
      'A83627',
      '--recipient-kid',
      world.recipients.A83627.key.kid,
      '--out',
      join(messages, 'hettie.jwe'),
    );
    expect(seal.code).toBe(0);
    expect(readFileSync(join(messages, 'hettie.jwe'), 'utf8').trim().split('.').length).toBe(5);

    const out = join(dir, 'run');
    const processed = await cli(
      'process',
      messages,
      '--config',
      config,
      '--keystore',
      keystore,
      '--out',
      out,
    );
    expect(processed.code).toBe(0);
    expect(processed.out).toHaveLength(1);
    const line = JSON.parse(processed.out[0]!);
    expect(line).toMatchObject({
      file: 'hettie.jwe',
      messageId: 'cd836dc4-2e34-11eb-adc1-0242ac120002',
      status: 'delivered',
      stage: 'deliver',
      itk3Code: '20013',
      error: null,
    });
    const delivered = deliveredFile(worldPaths(out).delivered('A83627'), line.messageId);
    expect(Buffer.compare(readFileSync(delivered), Buffer.from(sample.bytes))).toBe(0);
    expect(filesIn(out)).toContain('state.db');
  });

  it('process reports a rejection as a JSON line and exits 1', async () => {
    const { dir, keystore, config } = worldOnDisk();
    const messages = join(dir, 'messages');
    mkdirSync(messages);
    // A sealed message with no credential file beside it goes straight onto the inbound queue.
    writeFileSync(join(messages, 'anonymous.jwe'), await sealAs(world, 'X26', buildMessage('X26')));

    // Without the worker pool (the test above runs with the default one on a multi-core machine).
    const processed = await cli(
      'process',
      messages,
      '--config',
      config,
      '--keystore',
      keystore,
      '--out',
      join(dir, 'run'),
      '--workers',
      '0',
    );
    expect(processed.code).toBe(1);
    expect(JSON.parse(processed.out[0]!)).toMatchObject({
      file: 'anonymous.jwe',
      status: 'rejected',
      stage: 'authenticate',
      itk3Code: '20012',
      error: 'TOKEN_MISSING',
    });
  });
});

describe('itk3 dlq', () => {
  it('redrive of a message dead-lettered at deliver, with the target fixed, delivers it; list empties and trace shows it', async () => {
    const { dir, keystore, config } = worldOnDisk();
    // The same world, but A83627's delivery target is an S3 bucket, which embedded mode cannot reach.
    const brokenDoc = structuredClone(world.configDoc);
    const a83627 = brokenDoc.recipients.find((r) => r.ods === 'A83627')!;
    a83627.target = { type: 's3', bucket: 'itk3-unreachable-bucket', prefix: '' };
    const broken = join(dir, 'broken-config.json');
    writeFileSync(broken, JSON.stringify(brokenDoc));

    const messages = join(dir, 'messages');
    mkdirSync(messages);
    const msg = buildMessage('X26');
    writeFileSync(join(messages, 'imms.jwe'), `${await sealAs(world, 'X26', msg)}\n`);
    writeFileSync(join(messages, 'imms.jwt'), `${await credentialFor(world, 'X26', Date.now())}\n`);
    const out = join(dir, 'run');

    const processed = await cli(
      'process',
      messages,
      '--config',
      broken,
      '--keystore',
      keystore,
      '--out',
      out,
    );
    expect(processed.code).toBe(1);
    // Embedded mode says up front which targets it cannot reach.
    expect(processed.err).toMatch(
      /warning: embedded mode delivers to folders only; these targets will dead-letter: recipient A83627 \(s3\)/,
    );
    const line = JSON.parse(processed.out[0]!);
    expect(line).toMatchObject({ file: 'imms.jwe', status: 'dead-lettered', stage: 'deliver' });
    const trackingId = line.trackingId as string;

    const listed = await cli('dlq', 'list', '--out', out, '--json');
    expect(listed.code).toBe(0);
    expect(listed.out.map((l) => JSON.parse(l))).toEqual([
      expect.objectContaining({ stage: 'deliver', traceId: trackingId, reason: 'DELIVERY_UNAVAILABLE' }),
    ]);

    const redriven = await cli(
      'dlq',
      'redrive',
      'deliver',
      '--config',
      config,
      '--keystore',
      keystore,
      '--out',
      out,
    );
    expect(redriven.code).toBe(0);
    expect(redriven.out.map((l) => JSON.parse(l))).toEqual([
      expect.objectContaining({
        traceId: trackingId,
        status: 'delivered',
        stage: 'deliver',
        itk3Code: '20013',
        error: null,
      }),
    ]);
    const delivered = deliveredFile(worldPaths(out).delivered('A83627'), msg.messageId);
    expect(Buffer.compare(readFileSync(delivered), Buffer.from(msg.bytes))).toBe(0);

    const empty = await cli('dlq', 'list', '--out', out);
    expect(empty.code).toBe(0);
    expect(empty.out.join('\n')).toMatch(/^no dead letters in /);
    expect((await cli('dlq', 'list', '--out', out, '--json')).out).toEqual([]);

    const traced = await cli('trace', trackingId, '--out', out);
    expect(traced.code).toBe(0);
    const rows = traced.out.join('\n').split('\n');
    const row = (stage: string, event: string) =>
      rows.findIndex((r) => new RegExp(`^\\S+\\s+${stage}\\s+${event}(\\s|$)`).test(r));
    const deadLettered = row('deliver', 'dead-lettered');
    const redrive = row('operator', 'redriven');
    const deliveredRow = row('deliver', 'delivered');
    expect(deadLettered).toBeGreaterThan(0);
    expect(redrive).toBeGreaterThan(deadLettered);
    expect(deliveredRow).toBeGreaterThan(redrive);
    expect(rows.filter((r) => /^\S+\s+deliver\s+delivered(\s|$)/.test(r))).toHaveLength(1);
    expect(rows.at(-1)).toBe('outcome: delivered at deliver, ITK3 20013');
  });
});
