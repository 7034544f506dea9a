/**
 * The gateway side of the interop suites (a sender written from the docs alone, in another
 * language, against a real `itk3 serve`): a world made with the CLI as docs/WIRE-FORMAT.md §4 says
 * (keys init, keys add, keys public, config validate), `itk3 serve` on a loopback port with
 * bounded waits, and the ITK3 Bundles the senders seal.
 *
 * The world always has an RSA (`a83627-enc-1`) and a P-256 (`a83627-enc-ec-1`) recipient key for
 * A83627, a response-signing key (`itk3gw-response-1`), and X26's CLI-made ES256 token-service key
 * (`x26-idp-1`, issuer `https://idp.x26.example`, client `x26-pharmacy-system`) and ES256 signing
 * key (`x26-sign-1`) in `sender-keystore.json`. Each suite adds the keys its sender made itself.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { expect } from 'vitest';
import { buildItk3Message } from '../../lib/itk3/builder.js';
import { loadSamples, type Sample } from '../../lib/itk3/samples.js';
import { makeTempDir, removeTempDirs } from '../support/world.js';

export const ROOT = resolve(import.meta.dirname, '../..');
export const AUDIENCE = 'https://itk3-gateway.example.nhs.uk/messages';
/** ITK009D, X26 → A83627, mailbox NOROT003: the fixture, or its built equivalent without ../shared. */
export const SAMPLE = 'engage_hettie_winters_imms.xml';
const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g;

/** What the gateway's configuration adds for the sender under test. */
interface SenderParty {
  issuers?: Record<string, unknown>[];
  clients?: { issuer: string; sub: string }[];
  signingKeys?: Record<string, unknown>[];
  delegations?: Record<string, unknown>[];
}

export interface InteropWorld {
  readonly work: string;
  readonly sample: Sample;
  /** A path in the work folder. */
  at(name: string): string;
  /** Runs the itk3 CLI in the work folder; throws with its stderr on a non-zero exit. */
  itk3(...args: string[]): string;
  /** The CLI-made X26 token-service and signing keys (public JWKs, as `keys add` printed them). */
  readonly cliIssuerJwk: string;
  readonly cliSignerJwk: string;
  /** Writes and validates the configuration, then starts `itk3 serve`; resolves to its base URL. */
  start(party: SenderParty): Promise<string>;
  /** Stops the server (SIGTERM, SIGKILL after 15 s) and removes the work folder. */
  stop(): Promise<void>;
  /** The sample with every UUID replaced consistently: a new message and document, same content. */
  freshSample(): string;
}

/** The public members of a JWK (what a sender gives the operator), from a JWK's JSON text. */
export function publicKey(text: string): Record<string, string> {
  const { kty, kid, alg, crv, x, y, n, e } = JSON.parse(text) as Record<string, string | undefined>;
  return Object.fromEntries(
    Object.entries({ kty, kid, alg, crv, x, y, n, e }).filter((entry): entry is [string, string] =>
      Boolean(entry[1]),
    ),
  );
}

/** A built ITK009D JSON Bundle from X26 to A83627 with fresh ids. */
export function jsonBundle(): string {
  return Buffer.from(
    buildItk3Message({
      format: 'json',
      event: 'ITK009D',
      senderOds: 'X26',
      receiverOds: 'A83627',
      meshMailbox: 'NOROT003',
      messageId: randomUUID(),
      bundleId: randomUUID(),
      documentId: randomUUID(),
      acks: { inf: true, bus: true },
      recipientType: 'FA',
      messageDefinition: 'ITK-DM-Immunization-MessageDefinition-1',
      timestamp: new Date().toISOString(),
    }),
  ).toString('utf8');
}

export function createInteropWorld(prefix: string): InteropWorld {
  const work = makeTempDir(prefix);
  const at = (name: string) => join(work, name);
  const sample = loadSamples().find((s) => s.name === SAMPLE);
  if (!sample) throw new Error(`sample ${SAMPLE} missing from loadSamples()`);
  let server: ChildProcess | undefined;

  const itk3 = (...args: string[]): string => {
    const done = spawnSync(process.execPath, [join(ROOT, 'bin/itk3.js'), ...args], {
      cwd: work,
      encoding: 'utf8',
      timeout: 60_000,
    });
    if (done.status !== 0) throw new Error(`itk3 ${args.join(' ')}: ${done.stderr}`);
    return done.stdout;
  };

  // The gateway: an RSA and a P-256 key for A83627 (both published), a response-signing key.
  itk3(
    'keys',
    'init',
    '--keystore',
    'gateway-keystore.json',
    '--recipient',
    'A83627',
    '--kid',
    'A83627=a83627-enc-1',
    '--kid',
    'ITK3GW=itk3gw-response-1',
    '--modulus',
    '2048',
  );
  itk3(
    'keys',
    'add',
    '--keystore',
    'gateway-keystore.json',
    '--purpose',
    'recipient-decrypt',
    '--alg',
    'ECDH-ES+A256KW',
    '--owner',
    'A83627',
    '--kid',
    'a83627-enc-ec-1',
  );
  writeFileSync(at('gateway.jwks'), itk3('keys', 'public', '--keystore', 'gateway-keystore.json'));
  // X26's keys made with the CLI, as in the worked example.
  const addSenderKey = (purpose: string, owner: string, kid: string) =>
    itk3(
      'keys',
      'add',
      '--keystore',
      'sender-keystore.json',
      '--purpose',
      purpose,
      '--alg',
      'ES256',
      '--owner',
      owner,
      '--kid',
      kid,
    );
  const cliIssuerJwk = addSenderKey('issuer-sign', 'x26-idp', 'x26-idp-1');
  const cliSignerJwk = addSenderKey('sender-sign', 'X26', 'x26-sign-1');

  const start = async (party: SenderParty): Promise<string> => {
    const config = {
      audience: AUDIENCE,
      gatewayOds: 'ITK3GW',
      responseSigning: { kid: 'itk3gw-response-1' },
      unauthenticatedResponseTarget: { type: 'folder', path: 'responses/_unauthenticated' },
      issuers: [
        {
          id: 'x26-idp',
          issuer: 'https://idp.x26.example',
          organisations: ['X26'],
          keys: [publicKey(cliIssuerJwk)],
        },
        ...(party.issuers ?? []),
      ],
      senders: [
        {
          ods: 'X26',
          clients: [{ issuer: 'x26-idp', sub: 'x26-pharmacy-system' }, ...(party.clients ?? [])],
          meshMailbox: 'NOROT003',
          signingKeys: [publicKey(cliSignerJwk), ...(party.signingKeys ?? [])],
          responseTarget: { type: 'folder', path: 'responses/X26' },
        },
      ],
      recipients: [
        {
          ods: 'A83627',
          keys: [{ kid: 'a83627-enc-1' }, { kid: 'a83627-enc-ec-1' }],
          target: { type: 'folder', path: 'delivered/A83627' },
        },
      ],
      rules: [
        {
          id: 'x26-immunisation-to-a83627',
          sender: { ods: 'X26' },
          event: 'ITK009D',
          messageDefinition: ['ITK-DM-Immunization-MessageDefinition-1'],
          recipientType: ['FA'],
          recipients: ['A83627'],
        },
      ],
      ...(party.delegations ? { delegations: party.delegations } : {}),
    };
    writeFileSync(at('config.json'), JSON.stringify(config, null, 2));
    expect(itk3('config', 'validate', 'config.json', '--keystore', 'gateway-keystore.json')).toMatch(
      /^valid:/,
    );

    const serve = spawn(
      process.execPath,
      [
        join(ROOT, 'bin/itk3.js'),
        'serve',
        '--config',
        'config.json',
        '--keystore',
        'gateway-keystore.json',
        '--port',
        '0',
        '--out',
        'run',
        '--workers',
        '0',
      ],
      { cwd: work, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    server = serve;
    return new Promise<string>((ready, fail) => {
      let output = '';
      const timer = setTimeout(() => fail(new Error(`serve did not listen within 30 s: ${output}`)), 30_000);
      const read = (chunk: Buffer) => {
        output += chunk.toString('utf8');
        const port = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(output)?.[1];
        if (port) {
          clearTimeout(timer);
          ready(`http://127.0.0.1:${port}`);
        }
      };
      serve.stdout.on('data', read);
      serve.stderr.on('data', read);
      serve.once('exit', (code) => {
        clearTimeout(timer);
        fail(new Error(`serve exited (${code}) before listening: ${output}`));
      });
    });
  };

  const stop = async (): Promise<void> => {
    const running = server;
    if (running && running.exitCode === null && running.signalCode === null) {
      const exited = new Promise((done) => running.once('exit', done));
      running.kill('SIGTERM');
      const timer = setTimeout(() => running.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(timer);
    }
    removeTempDirs();
  };

  const freshSample = (): string => {
    const fresh = new Map<string, string>();
    const text = Buffer.from(sample.bytes).toString('utf8');
    const file = at(`bundle-${randomUUID()}.xml`);
    writeFileSync(
      file,
      text.replace(UUID, (id) => fresh.get(id) ?? fresh.set(id, randomUUID()).get(id)!),
    );
    return file;
  };

  return { work, sample, at, itk3, cliIssuerJwk, cliSignerJwk, start, stop, freshSample };
}
