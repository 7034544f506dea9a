/**
 * A sender in another language, written from the docs alone: scripts/interop/itk3_sender.py
 * (Python, jwcrypto) against a real `itk3 serve` on a loopback port, in a gateway world made with
 * the CLI as docs/WIRE-FORMAT.md §4 says (keys init, keys add, keys public, config validate).
 *
 * Accepted: a real ITK3 sample, delivered byte-identical with a verified ITK008M 20013; and the
 * legitimate choices another JOSE library or engineer makes (header member order and whitespace,
 * `\/` escapes, `cty` spellings the docs allow, `typ` members, RSA-OAEP-256 and ECDH-ES+A256KW
 * recipients, apu/apv, key ids, PS256/RS512/ES256 keys the sender made itself, extra claims, `aud`
 * as an array, `nbf`, fractional NumericDates, the Bearer scheme in any case, Content-Type, chunked
 * bodies, a trailing newline, a JSON Bundle, RFC 8693 delegation). Refused with the documented
 * answer: an expired credential, a wrong audience, a credential without `typ`, a replayed
 * credential, tampered ciphertext, a JWE `cty` in another case, an actor without a grant, a
 * duplicate MessageHeader id.
 *
 * Needs the venv of `bash scripts/interop.sh` (ITK3_INTEROP_PYTHON, or .interop/venv/bin/python).
 */
import { execFile, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { filesIn } from '../support/world.js';
import {
  AUDIENCE,
  createInteropWorld,
  type InteropWorld,
  jsonBundle,
  publicKey,
  ROOT,
  SAMPLE,
} from './support.js';

const SENDER = join(ROOT, 'scripts/interop/itk3_sender.py');
const SUITE = 'a Python sender written from the docs (jwcrypto) against itk3 serve';
const run = promisify(execFile);

const python = interopPython();

function interopPython(): string | undefined {
  const candidate = process.env.ITK3_INTEROP_PYTHON || join(ROOT, '.interop/venv/bin/python');
  if (!existsSync(candidate)) return undefined;
  const probe = spawnSync(candidate, ['-c', 'import jwcrypto'], { encoding: 'utf8' });
  return probe.status === 0 ? candidate : undefined;
}

interface Answer {
  http: number;
  body: { trackingId?: string; error?: string } | null;
  outcome?: { status: string; stage: string; itk3Code: string | null; error: string | null };
}

if (!python) {
  console.warn(
    `SKIPPED suite "${SUITE}": no Python with jwcrypto (bash scripts/interop.sh; ITK3_INTEROP_PYTHON=<venv python>)`,
  );
  describe.skip(SUITE, () => {
    it('needs the interop venv', () => {});
  });
} else {
  describe(SUITE, () => {
    let world: InteropWorld;
    const at = (name: string) => world.at(name);
    const itk3 = (...args: string[]) => world.itk3(...args);
    let url = '';
    let pythonIssuerKid = '';

    const sender = async (...args: string[]): Promise<string> => {
      try {
        return (await run(python, [SENDER, ...args], { cwd: world.work, timeout: 60_000 })).stdout;
      } catch (error) {
        const failed = error as { code?: number; stdout?: string; stderr?: string };
        // `post` and `send` exit 1 for an answer other than 202: still an answer to look at.
        if (failed.code === 1 && failed.stdout) return failed.stdout;
        throw new Error(`itk3_sender.py ${args[0]}: ${failed.stderr ?? String(error)}`);
      }
    };

    // The credential options of the two token services the gateway trusts for X26.
    const cliIssuer = [
      '--issuer-key',
      'sender-keystore.json#x26-idp-1',
      '--iss',
      'https://idp.x26.example',
      '--sub',
      'x26-pharmacy-system',
      '--aud',
      AUDIENCE,
      '--org',
      'X26',
    ];
    const pythonIssuer = () => [
      '--issuer-key',
      'py-issuer.jwk',
      '--iss',
      'https://auth.py-federation.example',
      '--sub',
      'x26-python-pms',
      '--aud',
      AUDIENCE,
      '--org',
      'X26',
      '--org-claim',
      'organisation.ods_code',
    ];
    const rsaRecipient = ['--recipient-jwks', 'gateway.jwks', '--recipient-kid', 'a83627-enc-1'];
    const ecRecipient = ['--recipient-jwks', 'gateway.jwks', '--recipient-kid', 'a83627-enc-ec-1'];
    const cliSigner = ['--signer-key', 'sender-keystore.json#x26-sign-1'];

    const freshSample = (): string => world.freshSample();
    const send = async (bundle: string, ...options: string[]): Promise<Answer> =>
      JSON.parse(await sender('send', bundle, ...options, '--url', url, '--wait', '20')) as Answer;

    beforeAll(async () => {
      // The gateway and X26's CLI-made keys (test/interop/support.ts)...
      world = createInteropWorld('itk3-interop-');
      // ...and keys the Python engineer made with jwcrypto: a PS256 token-service key whose kid is
      // its RFC 7638 thumbprint, an RS512 signing key with a dotted kid.
      const pythonIssuerJwk = await sender(
        'keygen',
        '--alg',
        'PS256',
        '--thumbprint-kid',
        '--out',
        'py-issuer.jwk',
      );
      const pythonSignerJwk = await sender(
        'keygen',
        '--alg',
        'RS512',
        '--kid',
        'x26.sign.rs512-1',
        '--out',
        'py-signer.jwk',
      );
      const pythonPssSignerJwk = await sender(
        'keygen',
        '--alg',
        'PS256',
        '--modulus',
        '3072',
        '--kid',
        'x26-sign-ps256',
        '--out',
        'py-pss-signer.jwk',
      );
      pythonIssuerKid = JSON.parse(pythonIssuerJwk).kid as string;
      url = await world.start({
        issuers: [
          {
            id: 'py-federation',
            issuer: 'https://auth.py-federation.example',
            organisations: ['X26'],
            organisationClaim: 'organisation.ods_code',
            keys: [publicKey(pythonIssuerJwk)],
          },
        ],
        clients: [{ issuer: 'py-federation', sub: 'x26-python-pms' }],
        signingKeys: [publicKey(pythonSignerJwk), publicKey(pythonPssSignerJwk)],
        delegations: [
          {
            id: 'hub7-for-x26',
            actor: 'pharmacy-hub-7',
            issuers: ['py-federation'],
            onBehalfOf: ['X26'],
            events: ['ITK009D'],
            expires: '2099-12-31',
          },
        ],
      });
    }, 90_000);

    afterAll(() => world?.stop(), 30_000);

    it('delivers a real ITK3 sample byte-identical and answers a signed ITK008M 20013 the sender verifies', async () => {
      const bundle = at(SAMPLE);
      writeFileSync(bundle, world.sample.bytes);
      const answer = await send(bundle, ...cliIssuer, ...cliSigner, ...rsaRecipient);
      expect(answer.http).toBe(202);
      expect(answer.outcome).toMatchObject({ status: 'delivered', stage: 'deliver', itk3Code: '20013' });
      const trackingId = answer.body?.trackingId;
      const delivered = filesIn(at('run/delivered/A83627')).filter((name) => name.includes(trackingId!));
      expect(delivered).toHaveLength(1);
      expect(
        readFileSync(at(`run/delivered/A83627/${delivered[0]}`)).equals(Buffer.from(world.sample.bytes)),
      ).toBe(true);
      const response = JSON.parse(
        await sender(
          'verify-response',
          `run/responses/X26/${trackingId}-20013.jws`,
          '--gateway-jwks',
          'gateway.jwks',
        ),
      );
      expect(response).toMatchObject({
        itk3Code: '20013',
        header: { trackingId, itk: { event: 'ITK008M', to: 'X26' } },
      });
    });

    // Each is what a conforming sender with another library or habit sends; every one is delivered.
    const legitimate: [string, () => string[]][] = [
      [
        'JSON members sorted (jwcrypto, many serialisers)',
        () => [...cliIssuer, ...cliSigner, ...rsaRecipient, '--header-style', 'sorted'],
      ],
      [
        'JSON members in reverse order',
        () => [...cliIssuer, ...cliSigner, ...rsaRecipient, '--header-style', 'reversed'],
      ],
      [
        'pretty-printed headers (whitespace and newlines)',
        () => [...cliIssuer, ...cliSigner, ...rsaRecipient, '--header-style', 'spaced'],
      ],
      [
        '"/" escaped as "\\/" in headers and claims (PHP, some Java encoders)',
        () => [
          ...cliIssuer,
          ...cliSigner,
          ...rsaRecipient,
          '--escape-slashes',
          '--cty-prefix',
          'application/',
        ],
      ],
      ['ECDH-ES+A256KW to the P-256 recipient key', () => [...cliIssuer, ...cliSigner, ...ecRecipient]],
      [
        'ECDH-ES+A256KW with apu/apv and sorted members',
        () => [
          ...cliIssuer,
          ...cliSigner,
          ...ecRecipient,
          '--apu',
          'X26',
          '--apv',
          'A83627',
          '--header-style',
          'sorted',
        ],
      ],
      [
        'JWS cty application/fhir+xml (RFC 7515 §4.1.10)',
        () => [...cliIssuer, ...cliSigner, ...rsaRecipient, '--cty-prefix', 'application/'],
      ],
      [
        'JWE cty application/jose (the registered media type)',
        () => [...cliIssuer, ...cliSigner, ...rsaRecipient, '--jwe-cty', 'application/jose'],
      ],
      [
        'JWE cty application/JOSE',
        () => [...cliIssuer, ...cliSigner, ...ecRecipient, '--jwe-cty', 'application/JOSE'],
      ],
      [
        'typ JOSE on the JWS and the JWE',
        () => [...cliIssuer, ...cliSigner, ...rsaRecipient, '--jws-typ', 'JOSE', '--jwe-typ', 'JOSE'],
      ],
      [
        'Python-made keys: PS256 token service (thumbprint kid), RS512 signer (dotted kid), dotted org claim',
        () => [...pythonIssuer(), '--signer-key', 'py-signer.jwk', ...ecRecipient],
      ],
      [
        'claims a token service adds (scope, client_id, roles)',
        () => [
          ...pythonIssuer(),
          ...cliSigner,
          ...rsaRecipient,
          '--extra-claim',
          'scope="itk3/messages.send"',
          '--extra-claim',
          'client_id="x26-python-pms"',
          '--extra-claim',
          'roles=["sender"]',
        ],
      ],
      [
        'aud as a one-element array (RFC 7519 §4.1.3), nbf, a 60 s lifetime',
        () => [...cliIssuer, ...cliSigner, ...rsaRecipient, '--aud-array', '--nbf', '--lifetime', '60'],
      ],
      [
        'fractional NumericDates (RFC 7519 §2)',
        () => [...cliIssuer, ...cliSigner, ...rsaRecipient, '--fractional-times'],
      ],
      [
        'scheme "bearer" in lower case (RFC 7235 §2.1)',
        () => [...cliIssuer, ...cliSigner, ...rsaRecipient, '--scheme', 'bearer'],
      ],
      [
        'Content-Type application/jose (RFC 7516 §9)',
        () => [...cliIssuer, ...cliSigner, ...rsaRecipient, '--content-type', 'application/jose'],
      ],
      [
        'no Content-Type, chunked transfer coding',
        () => [...cliIssuer, ...cliSigner, ...rsaRecipient, '--content-type=', '--chunked'],
      ],
      [
        'a trailing newline after the JWE (a file written with a line end)',
        () => [...cliIssuer, ...cliSigner, ...rsaRecipient, '--body-suffix', '\\r\\n'],
      ],
      [
        'a credential header with x5t and cty members (token services that sign with a certificate)',
        () => [
          ...cliIssuer,
          '--extra-header',
          'x5t="Q2VydGlmaWNhdGVUaHVtYnByaW50"',
          '--extra-header',
          'cty="JWT"',
          ...cliSigner,
          ...rsaRecipient,
        ],
      ],
      [
        'a PS256 message signature by a Python-made RSA-3072 key',
        () => [...pythonIssuer(), '--signer-key', 'py-pss-signer.jwk', ...rsaRecipient],
      ],
      [
        'delegation: an RFC 8693 act for a granted hub',
        () => [
          ...pythonIssuer(),
          '--act',
          'pharmacy-hub-7',
          '--signer-key',
          'py-pss-signer.jwk',
          ...ecRecipient,
        ],
      ],
      [
        'delegation: act.iss naming the credential issuer',
        () => [
          ...pythonIssuer(),
          '--extra-claim',
          'act={"sub": "pharmacy-hub-7", "iss": "https://auth.py-federation.example"}',
          ...cliSigner,
          ...rsaRecipient,
        ],
      ],
    ];
    it.each(legitimate)('accepts %s', async (_, options) => {
      const answer = await send(freshSample(), ...options());
      expect(answer.http, JSON.stringify(answer.body)).toBe(202);
      expect(answer.outcome).toMatchObject({ status: 'delivered', itk3Code: '20013' });
    });

    // The signed bytes are the sender's own: other serialisers write the same Bundle differently.
    const bundleSpellings: [string, () => string][] = [
      ['a JSON Bundle (cty fhir+json)', jsonBundle],
      [
        'a JSON Bundle as other encoders write it: `\\/` escapes, a non-ASCII name as `\\u00eb`',
        () => {
          const escaped = JSON.stringify(JSON.parse(jsonBundle()))
            .replaceAll('/', '\\/')
            .replace(/"family":"/, '"family":"Zo\\u00eb-');
          if (!escaped.includes('Zo\\u00eb-'))
            throw new Error('the built Bundle has no family name to escape');
          return escaped;
        },
      ],
      [
        'the sample with an XML declaration and CRLF line ends (a Windows-made file)',
        () =>
          `<?xml version="1.0" encoding="UTF-8"?>\r\n${readFileSync(freshSample(), 'utf8').replace(/\r?\n/g, '\r\n')}`,
      ],
    ];
    it.each(bundleSpellings)('accepts %s', async (_, text) => {
      const bundle = at(`spelling-${randomUUID()}`);
      const bytes = text();
      writeFileSync(bundle, bytes);
      const answer = await send(bundle, ...pythonIssuer(), '--signer-key', 'py-signer.jwk', ...rsaRecipient);
      expect(answer.outcome).toMatchObject({ status: 'delivered', itk3Code: '20013' });
      const trackingId = answer.body!.trackingId!;
      const delivered = filesIn(at('run/delivered/A83627')).find((name) => name.includes(trackingId));
      expect(readFileSync(at(`run/delivered/A83627/${delivered}`), 'utf8')).toBe(bytes);
      expect(pythonIssuerKid).toMatch(/^[A-Za-z0-9_-]{43}$/);
    });

    it('itk3 explain, the operator’s diagnosis, passes a message the Python sender made', async () => {
      await sender('token', ...pythonIssuer(), '--escape-slashes', '--out', 'explained.jwt');
      await sender(
        'seal',
        freshSample(),
        '--signer-key',
        'py-signer.jwk',
        ...ecRecipient,
        '--header-style',
        'sorted',
        '--out',
        'explained.jwe',
      );
      const report = itk3(
        'explain',
        'explained.jwe',
        '--config',
        'config.json',
        '--keystore',
        'gateway-keystore.json',
      );
      expect(report).toMatch(/result: every check passed/);
    });

    it('refuses at the door with one 401: an expired credential, a wrong audience, a credential without typ', async () => {
      const audience = cliIssuer.indexOf('--aud') + 1;
      const otherAudience = cliIssuer.map((value, i) =>
        i === audience ? 'https://other-gateway.example/messages' : value,
      );
      for (const options of [
        [...cliIssuer, '--iat-offset', '-400'],
        otherAudience,
        [...cliIssuer, '--typ', 'none'],
      ]) {
        const answer = await send(freshSample(), ...options, ...cliSigner, ...rsaRecipient);
        expect(answer.http).toBe(401);
        expect(answer.body?.error).toBe('UNAUTHENTICATED');
      }
    });

    it('refuses a replayed credential: a second POST with a credential serve already accepted is the door’s 401, nothing stored', async () => {
      await sender('token', ...cliIssuer, '--out', 'once.jwt');
      await sender('seal', freshSample(), ...cliSigner, ...rsaRecipient, '--out', 'first.jwe');
      await sender('seal', freshSample(), ...cliSigner, ...rsaRecipient, '--out', 'second.jwe');
      const post = async (jwe: string) =>
        JSON.parse(await sender('post', '--url', url, '--token', 'once.jwt', '--jwe', jwe)) as Answer;
      const responsesBefore = filesIn(at('run/responses/X26')).length;
      const first = await post('first.jwe');
      const second = await post('second.jwe');
      expect([first.http, second.http]).toEqual([202, 401]);
      expect(second.body).toMatchObject({ error: 'UNAUTHENTICATED' });
      expect(second.body?.trackingId).toBeUndefined();
      // The first submission is unaffected: delivered, with its one response.
      const outcome = JSON.parse(
        await sender(
          'status',
          ...cliIssuer,
          '--url',
          url,
          '--tracking-id',
          first.body!.trackingId!,
          '--wait',
          '20',
        ),
      );
      expect(outcome.body).toMatchObject({ status: 'delivered' });
      expect(filesIn(at('run/responses/X26')).length).toBe(responsesBefore + 1);
    });

    it('refuses tampered ciphertext at decrypt (10009 DECRYPT_FAILED) with a signed response saying so', async () => {
      await sender('token', ...cliIssuer, '--out', 'tampered.jwt');
      await sender('seal', freshSample(), ...cliSigner, ...rsaRecipient, '--out', 'tampered.jwe');
      const segments = readFileSync(at('tampered.jwe'), 'ascii').trim().split('.');
      const ciphertext = segments[3]!;
      const middle = Math.floor(ciphertext.length / 2);
      segments[3] =
        ciphertext.slice(0, middle) + (ciphertext[middle] === 'A' ? 'B' : 'A') + ciphertext.slice(middle + 1);
      writeFileSync(at('tampered.jwe'), segments.join('.'));
      const answer = JSON.parse(
        await sender('post', '--url', url, '--token', 'tampered.jwt', '--jwe', 'tampered.jwe'),
      ) as Answer;
      expect(answer.http).toBe(202);
      const trackingId = answer.body!.trackingId!;
      const outcome = JSON.parse(
        await sender('status', ...cliIssuer, '--url', url, '--tracking-id', trackingId, '--wait', '20'),
      );
      expect(outcome.body).toMatchObject({
        status: 'rejected',
        stage: 'decrypt',
        itk3Code: '10009',
        error: 'DECRYPT_FAILED',
      });
      const response = JSON.parse(
        await sender(
          'verify-response',
          `run/responses/X26/${trackingId}-10009.jws`,
          '--gateway-jwks',
          'gateway.jwks',
        ),
      );
      expect(response).toMatchObject({ itk3Code: '10009', diagnostics: 'DECRYPT_FAILED' });
    });

    it('refuses what the docs refuse: a JWE cty in another case (10009), an actor without a grant (20012), a reused MessageHeader id (20007)', async () => {
      const lowerCase = await send(
        freshSample(),
        ...cliIssuer,
        ...cliSigner,
        ...rsaRecipient,
        '--jwe-cty',
        'jose',
      );
      expect(lowerCase.outcome).toMatchObject({
        status: 'rejected',
        itk3Code: '10009',
        error: 'ENVELOPE_HEADER_NOT_ALLOWED',
      });
      const ungranted = await send(
        freshSample(),
        ...pythonIssuer(),
        '--act',
        'pharmacy-hub-9',
        ...cliSigner,
        ...rsaRecipient,
      );
      expect(ungranted.outcome).toMatchObject({
        status: 'rejected',
        itk3Code: '20012',
        error: 'DELEGATION_NOT_GRANTED',
      });
      const bundle = freshSample();
      const first = await send(bundle, ...cliIssuer, ...cliSigner, ...rsaRecipient);
      expect(first.outcome).toMatchObject({ status: 'delivered' });
      const duplicate = await send(bundle, ...cliIssuer, ...cliSigner, ...ecRecipient);
      expect(duplicate.outcome).toMatchObject({
        status: 'rejected',
        itk3Code: '20007',
        error: 'DUPLICATE_MESSAGE',
      });
    });
  });
}
