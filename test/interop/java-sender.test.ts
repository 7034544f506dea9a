/**
 * A second sender in another language, written from the docs alone: scripts/interop/java/Itk3Sender.java
 * (JDK 17, no JOSE library: base64url, JSON, JWS, JWE, the Concat KDF and the AES key wrap by hand)
 * against a real `itk3 serve` on a loopback port, in the gateway world of test/interop/support.ts.
 *
 * Accepted: a real ITK3 sample delivered byte-identical with an ITK008M 20013 the Java sender
 * verifies; RSA-OAEP-256 and ECDH-ES+A256KW (with and without apu/apv) recipients; ES256 and PS256
 * credentials and ES256, PS256 and RS512 message signatures by keys the JDK made; the CLI keystore's
 * keys read by Java; a JSON Bundle; JOSE JSON with every punctuation character escaped and
 * NumericDates as doubles; the JDK's default HTTP/2 client and one pinned to HTTP/1.1.
 * Refused with the documented answer: a wrong audience, an unknown key and a DER-encoded ES256
 * credential (401); padded base64url (401, 400 ENVELOPE_MALFORMED); the classic Java mistake of OAEP with MGF1-SHA-1 (10009 DECRYPT_FAILED, signed
 * response); a DER-encoded ES256 message signature (20012 SIGNATURE_INVALID); an event no rule
 * allows (20012 POLICY_DENIED); a replayed credential (20012 TOKEN_REPLAYED, no response); a
 * reused MessageHeader id (20007).
 *
 * Needs `javac` and `java` (JDK 17+) on PATH; compiled once into a temporary folder.
 */
import { execFile, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { filesIn, makeTempDir } from '../support/world.js';
import {
  AUDIENCE,
  createInteropWorld,
  type InteropWorld,
  jsonBundle,
  publicKey,
  ROOT,
  SAMPLE,
} from './support.js';

const SOURCE = join(ROOT, 'scripts/interop/java/Itk3Sender.java');
const SUITE = 'a Java sender written from the docs (JDK only, no JOSE library) against itk3 serve';
const run = promisify(execFile);

/** Why the suite cannot run here, or undefined when a JDK 17+ is on PATH. */
function missingJdk(): string | undefined {
  for (const tool of ['javac', 'java']) {
    const probe = spawnSync(tool, ['-version'], { encoding: 'utf8' });
    if (probe.error || probe.status !== 0) return `no \`${tool}\` on PATH (install a JDK 17 or later)`;
    const major = Number(/(?:version|javac) "?(\d+)/.exec(`${probe.stdout}${probe.stderr}`)?.[1] ?? 0);
    if (tool === 'javac' && major < 17) return `javac ${major} is older than 17`;
  }
  return undefined;
}

interface Answer {
  http: number;
  body: { trackingId?: string; error?: string } | null;
  outcome?: { status: string; stage: string; itk3Code: string | null; error: string | null };
}

const missing = missingJdk();
if (missing) {
  console.warn(`SKIPPED suite "${SUITE}": ${missing}`);
  describe.skip(SUITE, () => {
    it('needs a JDK', () => {});
  });
} else {
  describe(SUITE, () => {
    let world: InteropWorld;
    let url = '';
    let classes = '';
    const at = (name: string) => world.at(name);

    const sender = async (...args: string[]): Promise<string> => {
      try {
        const done = await run('java', ['-cp', classes, 'Itk3Sender', ...args], {
          cwd: world.work,
          timeout: 60_000,
        });
        return done.stdout;
      } catch (error) {
        const failed = error as { stderr?: string };
        throw new Error(`Itk3Sender ${args[0]}: ${failed.stderr ?? String(error)}`);
      }
    };
    const send = async (bundle: string, ...options: string[]): Promise<Answer> =>
      JSON.parse(await sender('send', bundle, ...options, '--url', url, '--wait', '20')) as Answer;
    const verifyResponse = async (trackingId: string, code: string) =>
      JSON.parse(
        await sender(
          'verify-response',
          `run/responses/X26/${trackingId}-${code}.jws`,
          '--jwks',
          'gateway.jwks',
        ),
      ) as {
        verified: boolean;
        itk3Code: string;
        diagnostics: string | null;
        header: Record<string, unknown>;
      };

    // Credentials: the Java-made token service (PS256 and ES256 keys), or X26's CLI-made one.
    const javaIssuer = (key: 'java-issuer-ps256.jwk' | 'java-issuer-es256.jwk') => [
      '--issuer-key',
      key,
      '--iss',
      'https://auth.java-federation.example',
      '--sub',
      'x26-java-pms',
      '--aud',
      AUDIENCE,
      '--org',
      'X26',
      '--org-claim',
      'organisation.ods_code',
    ];
    const cliIssuer = [
      '--issuer-key',
      'sender-keystore.json',
      '--issuer-kid',
      'x26-idp-1',
      '--iss',
      'https://idp.x26.example',
      '--sub',
      'x26-pharmacy-system',
      '--aud',
      AUDIENCE,
      '--org',
      'X26',
    ];
    const rsaRecipient = ['--recipient-jwks', 'gateway.jwks', '--recipient-kid', 'a83627-enc-1'];
    const ecRecipient = ['--recipient-jwks', 'gateway.jwks', '--recipient-kid', 'a83627-enc-ec-1'];

    beforeAll(async () => {
      // Compiled once (a source-launched run costs seconds), while the CLI makes the world.
      classes = makeTempDir('itk3-interop-java-classes-');
      const compiled = run('javac', ['-d', classes, SOURCE], { timeout: 60_000 });
      world = createInteropWorld('itk3-interop-java-');
      await compiled;
      // The keys a Java engineer makes with the JDK, each printed as the public JWK for the operator.
      const keygen = (alg: string, kid: string, out: string, ...extra: string[]) =>
        sender('keygen', '--alg', alg, '--kid', kid, '--private-out', out, ...extra);
      const [issuerPs256, issuerEs256, signerEs256, signerPs256, signerRs512] = await Promise.all([
        keygen('PS256', 'thumbprint', 'java-issuer-ps256.jwk'),
        keygen('ES256', 'java-federation-es256-1', 'java-issuer-es256.jwk'),
        keygen('ES256', 'x26-java-es256', 'java-signer-es256.jwk'),
        keygen('PS256', 'x26.java.ps256', 'java-signer-ps256.jwk'),
        keygen('RS512', 'x26-java-rs512', 'java-signer-rs512.jwk'),
        // A key the gateway is never given, for the unknown-key refusal.
        keygen('ES256', 'java-federation-es256-2', 'java-issuer-unknown.jwk'),
      ]);
      expect(JSON.parse(issuerPs256).kid).toMatch(/^[A-Za-z0-9_-]{43}$/); // an RFC 7638 thumbprint
      expect(JSON.parse(issuerPs256)).not.toHaveProperty('d');
      url = await world.start({
        issuers: [
          {
            id: 'java-federation',
            issuer: 'https://auth.java-federation.example',
            organisations: ['X26'],
            organisationClaim: 'organisation.ods_code',
            keys: [publicKey(issuerPs256), publicKey(issuerEs256)],
          },
        ],
        clients: [{ issuer: 'java-federation', sub: 'x26-java-pms' }],
        signingKeys: [publicKey(signerEs256), publicKey(signerPs256), publicKey(signerRs512)],
      });
    }, 90_000);

    afterAll(() => world?.stop(), 30_000);

    it('delivers a real ITK3 sample byte-identical and answers a signed ITK008M 20013 the sender verifies', async () => {
      const bundle = at(SAMPLE);
      writeFileSync(bundle, world.sample.bytes);
      const answer = await send(
        bundle,
        ...javaIssuer('java-issuer-ps256.jwk'),
        '--signer-key',
        'java-signer-es256.jwk',
        ...rsaRecipient,
      );
      expect(answer.http, JSON.stringify(answer.body)).toBe(202);
      expect(answer.outcome).toMatchObject({ status: 'delivered', stage: 'deliver', itk3Code: '20013' });
      const trackingId = answer.body!.trackingId!;
      const delivered = filesIn(at('run/delivered/A83627')).filter((name) => name.includes(trackingId));
      expect(delivered).toHaveLength(1);
      expect(
        readFileSync(at(`run/delivered/A83627/${delivered[0]}`)).equals(Buffer.from(world.sample.bytes)),
      ).toBe(true);
      expect(await verifyResponse(trackingId, '20013')).toMatchObject({
        verified: true,
        itk3Code: '20013',
        header: { alg: 'ES256', trackingId, itk: { event: 'ITK008M', to: 'X26' } },
      });
    });

    const legitimate: [string, () => string[]][] = [
      [
        'ECDH-ES+A256KW to the P-256 recipient, ES256 credential, RS512 signature',
        () => [
          ...javaIssuer('java-issuer-es256.jwk'),
          '--signer-key',
          'java-signer-rs512.jwk',
          ...ecRecipient,
        ],
      ],
      [
        'ECDH-ES+A256KW with apu/apv, PS256 credential, PS256 signature',
        () => [
          ...javaIssuer('java-issuer-ps256.jwk'),
          '--signer-key',
          'java-signer-ps256.jwk',
          ...ecRecipient,
          '--apu',
          'WDI2',
          '--apv',
          'QTgzNjI3',
        ],
      ],
      [
        'RSA-OAEP-256, PS256 credential, RS512 signature',
        () => [
          ...javaIssuer('java-issuer-ps256.jwk'),
          '--signer-key',
          'java-signer-rs512.jwk',
          ...rsaRecipient,
        ],
      ],
      [
        'the CLI keystore’s ES256 keys read by Java (itk3 keystore file, --kid)',
        () => [
          ...cliIssuer,
          '--signer-key',
          'sender-keystore.json',
          '--signer-kid',
          'x26-sign-1',
          ...ecRecipient,
        ],
      ],
      [
        'JOSE JSON as some Java encoders write it: every non-alphanumeric character \\u-escaped, NumericDates as doubles (1.7648E9)',
        () => [
          ...javaIssuer('java-issuer-ps256.jwk'),
          '--signer-key',
          'java-signer-es256.jwk',
          ...ecRecipient,
          '--apu',
          'WDI2',
          '--json-escape-all',
          '--numeric-dates-as-double',
        ],
      ],
      [
        'the JDK HTTP client pinned to HTTP/1.1 (no h2c upgrade offer)',
        () => [
          ...javaIssuer('java-issuer-es256.jwk'),
          '--signer-key',
          'java-signer-ps256.jwk',
          ...rsaRecipient,
          '--http-version',
          'HTTP_1_1',
        ],
      ],
    ];
    it.each(legitimate)('accepts %s', async (_, options) => {
      const answer = await send(world.freshSample(), ...options());
      expect(answer.http, JSON.stringify(answer.body)).toBe(202);
      expect(answer.outcome).toMatchObject({ status: 'delivered', itk3Code: '20013' });
    });

    it('accepts a JSON Bundle (cty fhir+json), delivered byte-identical', async () => {
      const bundle = at(`bundle-${randomUUID()}.json`);
      const bytes = jsonBundle();
      writeFileSync(bundle, bytes);
      const answer = await send(
        bundle,
        ...javaIssuer('java-issuer-es256.jwk'),
        '--signer-key',
        'java-signer-es256.jwk',
        ...ecRecipient,
      );
      expect(answer.outcome).toMatchObject({ status: 'delivered', itk3Code: '20013' });
      const trackingId = answer.body!.trackingId!;
      const delivered = filesIn(at('run/delivered/A83627')).find((name) => name.includes(trackingId));
      expect(delivered).toMatch(/\.json$/);
      expect(readFileSync(at(`run/delivered/A83627/${delivered}`), 'utf8')).toBe(bytes);
    });

    it('itk3 explain, the operator’s diagnosis, passes a message the Java sender made', async () => {
      writeFileSync(
        at('explained.jwt'),
        await sender(
          'token',
          '--key',
          'java-issuer-es256.jwk',
          ...javaIssuer('java-issuer-es256.jwk').slice(2),
        ),
      );
      await sender(
        'seal',
        world.freshSample(),
        '--key',
        'java-signer-ps256.jwk',
        ...ecRecipient,
        '--out',
        'explained.jwe',
      );
      const report = world.itk3(
        'explain',
        'explained.jwe',
        '--config',
        'config.json',
        '--keystore',
        'gateway-keystore.json',
      );
      expect(report).toMatch(/result: every check passed/);
    });

    it('refuses at the door with one 401: a wrong audience, a key the gateway lacks, a DER-encoded ES256 credential', async () => {
      const es256 = javaIssuer('java-issuer-es256.jwk');
      const audience = es256.indexOf('--aud') + 1;
      const credentials = [
        es256.map((value, i) => (i === audience ? 'https://other-gateway.example/messages' : value)),
        javaIssuer('java-issuer-es256.jwk').map((v) =>
          v === 'java-issuer-es256.jwk' ? 'java-issuer-unknown.jwk' : v,
        ),
        // "SHA256withECDSA" gives ASN.1 DER; JWS wants R || S (RFC 7518 §3.4).
        [...es256, '--insecure-der-ecdsa'],
      ];
      const answers = await Promise.all(
        credentials.map((credential) =>
          send(world.freshSample(), ...credential, '--signer-key', 'java-signer-rs512.jwk', ...rsaRecipient),
        ),
      );
      for (const answer of answers) {
        expect(answer.http).toBe(401);
        expect(answer.body?.error).toBe('UNAUTHENTICATED');
      }
    });

    it('refuses padded base64url (Base64.getUrlEncoder() without withoutPadding()): 401 for the credential, 400 ENVELOPE_MALFORMED for the JWE', async () => {
      const credential = javaIssuer('java-issuer-es256.jwk').slice(2);
      await Promise.all(
        ['padded-token', 'padded-body'].map(async (name) => {
          writeFileSync(
            at(`${name}.jwt`),
            await sender('token', '--key', 'java-issuer-es256.jwk', ...credential),
          );
          await sender(
            'seal',
            world.freshSample(),
            '--key',
            'java-signer-rs512.jwk',
            ...rsaRecipient,
            '--out',
            `${name}.jwe`,
          );
        }),
      );
      // An ES256 signature (64 bytes) and an RSA-2048 encrypted key (256 bytes) both need padding.
      const pad = (file: string, segment: number) => {
        const segments = readFileSync(at(file), 'ascii').trim().split('.');
        segments[segment] += '=='.slice(0, (4 - (segments[segment]!.length % 4)) % 4);
        expect(segments[segment]).toMatch(/=$/);
        writeFileSync(at(file), segments.join('.'));
      };
      pad('padded-token.jwt', 2);
      pad('padded-body.jwe', 1);
      const post = async (token: string, body: string) =>
        JSON.parse(await sender('post', '--url', url, '--token', token, '--body', body)) as Answer;
      expect(await post('padded-token.jwt', 'padded-token.jwe')).toMatchObject({
        http: 401,
        body: { error: 'UNAUTHENTICATED' },
      });
      expect(await post('padded-body.jwt', 'padded-body.jwe')).toMatchObject({
        http: 400,
        body: { error: 'ENVELOPE_MALFORMED' },
      });
    });

    it('refuses the classic Java mistake, RSA-OAEP-256 with MGF1-SHA-1, at decrypt (10009 DECRYPT_FAILED) with a signed response', async () => {
      const answer = await send(
        world.freshSample(),
        ...javaIssuer('java-issuer-ps256.jwk'),
        '--signer-key',
        'java-signer-es256.jwk',
        ...rsaRecipient,
        '--insecure-oaep-mgf1-sha1',
      );
      expect(answer.http).toBe(202);
      expect(answer.outcome).toMatchObject({
        status: 'rejected',
        stage: 'decrypt',
        itk3Code: '10009',
        error: 'DECRYPT_FAILED',
      });
      expect(await verifyResponse(answer.body!.trackingId!, '10009')).toMatchObject({
        verified: true,
        itk3Code: '10009',
        diagnostics: 'DECRYPT_FAILED',
      });
    });

    it('refuses a DER-encoded ES256 message signature (20012 SIGNATURE_INVALID) and an event no rule allows (20012 POLICY_DENIED)', async () => {
      const der = await send(
        world.freshSample(),
        ...javaIssuer('java-issuer-ps256.jwk'),
        '--signer-key',
        'java-signer-es256.jwk',
        ...ecRecipient,
        '--insecure-der-ecdsa',
      );
      expect(der.outcome).toMatchObject({
        status: 'rejected',
        itk3Code: '20012',
        error: 'SIGNATURE_INVALID',
      });
      const otherEvent = world.freshSample();
      writeFileSync(
        otherEvent,
        readFileSync(otherEvent, 'utf8').replace('<code value="ITK009D"/>', '<code value="ITK007C"/>'),
      );
      const denied = await send(
        otherEvent,
        ...javaIssuer('java-issuer-ps256.jwk'),
        '--signer-key',
        'java-signer-es256.jwk',
        ...rsaRecipient,
      );
      expect(denied.outcome).toMatchObject({ status: 'rejected', itk3Code: '20012', error: 'POLICY_DENIED' });
    });

    it('refuses a replayed credential at the door (401: serve already accepted a submission with it) and stores nothing; a reused MessageHeader id is 20007', async () => {
      writeFileSync(
        at('once.jwt'),
        await sender(
          'token',
          '--key',
          'java-issuer-es256.jwk',
          ...javaIssuer('java-issuer-es256.jwk').slice(2),
        ),
      );
      await Promise.all(
        ['first', 'second'].map((name) =>
          sender(
            'seal',
            world.freshSample(),
            '--key',
            'java-signer-es256.jwk',
            ...rsaRecipient,
            '--out',
            `${name}.jwe`,
          ),
        ),
      );
      const post = async (jwe: string) =>
        JSON.parse(await sender('post', '--url', url, '--token', 'once.jwt', '--body', jwe)) as Answer;
      const first = await post('first.jwe');
      const second = await post('second.jwe');
      expect([first.http, second.http]).toEqual([202, 401]);
      expect(second.body).toMatchObject({ error: 'UNAUTHENTICATED' });
      // GET shows the credential again without consuming its jti: the first is delivered.
      const outcome = JSON.parse(
        await sender(
          'status',
          '--url',
          url,
          '--token',
          'once.jwt',
          '--tracking-id',
          first.body!.trackingId!,
          '--wait',
          '20',
        ),
      );
      expect(outcome).toMatchObject({ status: 'delivered' });

      const bundle = world.freshSample();
      const options = [...javaIssuer('java-issuer-ps256.jwk'), '--signer-key', 'java-signer-es256.jwk'];
      expect((await send(bundle, ...options, ...rsaRecipient)).outcome).toMatchObject({
        status: 'delivered',
      });
      expect((await send(bundle, ...options, ...ecRecipient)).outcome).toMatchObject({
        status: 'rejected',
        itk3Code: '20007',
        error: 'DUPLICATE_MESSAGE',
      });
    });
  });
}
