/**
 * The credential and inner-JWS verification moved from `jose` (`jwtVerify`, `compactVerify`) to
 * `node:crypto` plus our own claim checks (PERFORMANCE.md, issue 14). These tests run `jose` beside
 * it as the reference: for every credential and JWS below, with each of the three algorithms, the
 * new code must accept exactly what `jose` accepts, return the same payload, and refuse with the
 * same jose error code and claim in the cause (hence the same catalogue code).
 */

import { generateKeyPairSync, sign } from 'node:crypto';
import { compactVerify, errors, importJWK, jwtVerify } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseSigned, verifySigned } from '../../../lib/envelope/jws.js';
import { SignatureKeyError, verifyJwsSignature } from '../../../lib/envelope/signature.js';
import { verifyCredential } from '../../../lib/envelope/token.js';
import { PipelineError } from '../../../lib/errors.js';
import {
  AUDIENCE,
  b64u,
  flipBit,
  makeWorld,
  ROUTING,
  rawSign,
  replaceSegment,
  type TestWorld,
} from './helpers.js';

let world: TestWorld;
const NOW_MS = Date.UTC(2026, 0, 15, 12, 0, 0);
const NOW = NOW_MS / 1000;

beforeAll(async () => {
  world = await makeWorld();
});

type Issuer = TestWorld['issuerA'];
const issuers = (): Issuer[] => [world.issuerA, world.issuerB, world.issuerC];

function claims(issuer: Issuer, over: Record<string, unknown>): Record<string, unknown> {
  const organisation =
    issuer === world.issuerB ? { org: { ods: 'X26' } } : { ods: issuer === world.issuerA ? 'GP0001' : 'X26' };
  const sub = issuer === world.issuerA ? issuer.iss : issuer === world.issuerB ? 's' : issuer.iss;
  const base: Record<string, unknown> = {
    iss: issuer.iss,
    sub,
    aud: AUDIENCE,
    iat: NOW,
    exp: NOW + 300,
    jti: 'jti-1',
    ...organisation,
    ...(issuer === world.issuerB ? { roles: ['itk3-sender'] } : {}),
  };
  for (const [k, v] of Object.entries(over)) {
    if (v === undefined) delete base[k];
    else base[k] = v;
  }
  return base;
}

function token(issuer: Issuer, over: Record<string, unknown> = {}): string {
  return rawSign(
    { alg: issuer.alg, kid: issuer.kid, typ: 'JWT' },
    Buffer.from(JSON.stringify(claims(issuer, over))),
    issuer.privateKey,
    issuer.alg,
  );
}

/** What `jose` made of a credential with the options `verifyCredential` used to pass it. */
async function joseOutcome(issuer: Issuer, jwt: string): Promise<unknown> {
  const limits = world.config.doc.limits;
  try {
    await jwtVerify(jwt, await importJWK({ ...issuer.jwk }, issuer.alg), {
      algorithms: [issuer.alg],
      issuer: issuer.iss,
      audience: AUDIENCE,
      typ: 'JWT',
      requiredClaims: ['iss', 'sub', 'aud', 'iat', 'exp', 'jti'],
      maxTokenAge: limits.maxTokenLifetimeSeconds,
      clockTolerance: limits.clockSkewSeconds,
      currentDate: new Date(NOW_MS),
    });
    return 'accepted';
  } catch (error) {
    if (!(error instanceof errors.JOSEError)) throw error;
    const claim = (error as { claim?: string }).claim;
    return claim === undefined ? { joseCode: error.code } : { joseCode: error.code, claim };
  }
}

/** What `verifyCredential` makes of it: accepted, or the jose-vocabulary cause of its refusal. */
async function ourOutcome(jwt: string): Promise<unknown> {
  try {
    await verifyCredential(jwt, world.config, NOW_MS);
    return 'accepted';
  } catch (error) {
    if (!(error instanceof PipelineError)) throw error;
    return error.cause ?? { code: error.code };
  }
}

const CLAIM_CASES: [string, Record<string, unknown>][] = [
  ['valid', {}],
  // (A missing `iss` is refused earlier, by the issuer look-up that picks the key.)
  ...['sub', 'aud', 'iat', 'exp', 'jti'].map((c): [string, Record<string, unknown>] => [
    `no ${c}`,
    { [c]: undefined },
  ]),
  ['no aud and no iat', { aud: undefined, iat: undefined }],
  ['no exp and no sub', { exp: undefined, sub: undefined }],
  ['aud of another service', { aud: 'https://other.example' }],
  ['aud as an array with ours', { aud: [AUDIENCE] }],
  ['aud as an array without ours', { aud: ['https://other.example'] }],
  ['aud as a number', { aud: 7 }],
  ['iat as a string', { iat: String(NOW) }],
  ['iat in the future within the skew', { iat: NOW + 30, exp: NOW + 300 }],
  ['iat in the future beyond the skew', { iat: NOW + 3600, exp: NOW + 3700 }],
  ['iat older than the maximum age', { iat: NOW - 1000, exp: NOW + 60 }],
  ['nbf as a string', { nbf: 'soon' }],
  ['nbf in the future', { nbf: NOW + 3600 }],
  ['nbf in the past', { nbf: NOW - 10 }],
  ['exp as a string', { exp: String(NOW + 300) }],
  ['exp passed', { iat: NOW - 200, exp: NOW - 100 }],
  ['exp exactly now', { iat: NOW - 200, exp: NOW }],
  ['exp passed within the skew', { iat: NOW - 200, exp: NOW - 5 }],
];

describe('verifyCredential with node:crypto agrees with jose jwtVerify', () => {
  it('on every claim case, for PS256, ES256 and RS512 credentials', async () => {
    const rows: string[] = [];
    for (const issuer of issuers()) {
      for (const [name, over] of CLAIM_CASES) {
        const jwt = token(issuer, over);
        const expected = await joseOutcome(issuer, jwt);
        const actual = await ourOutcome(jwt);
        // Our own checks after jose's (lifetime, aud singleness, organisation…) may refuse more:
        // only where jose refused must the cause be identical, and nothing jose refused may pass.
        if (expected === 'accepted') {
          if (actual !== 'accepted') rows.push(`${issuer.alg} ${name}: jose accepted, we refused`);
        } else {
          expect(actual, `${issuer.alg} ${name}`).toEqual(expected);
        }
      }
    }
    // None of these cases falls foul of our own stricter rules: jose's acceptances are ours.
    expect(rows).toEqual([]);
  });

  it('refuses a signature by the wrong key, a tampered payload and a bad signature like jose', async () => {
    for (const issuer of issuers()) {
      const other = issuer === world.issuerA ? world.issuerC : world.issuerA;
      const wrongKey = rawSign(
        { alg: issuer.alg, kid: issuer.kid, typ: 'JWT' },
        Buffer.from(JSON.stringify(claims(issuer, {}))),
        issuer.alg === 'ES256' ? world.senderX26.privateKey : other.privateKey,
        issuer.alg,
      );
      const valid = token(issuer);
      const tampered = replaceSegment(valid, 1, b64u(JSON.stringify(claims(issuer, { jti: 'jti-2' }))));
      const flipped = flipBit(valid, 2);
      const truncated = replaceSegment(valid, 2, valid.split('.')[2]?.slice(0, 40) ?? '');
      for (const jwt of [wrongKey, tampered, flipped, truncated]) {
        const expected = await joseOutcome(issuer, jwt);
        expect(expected).not.toBe('accepted');
        expect(await ourOutcome(jwt)).toEqual(expected);
      }
    }
  });

  it('refuses an alg that is not the issuer key’s before any signature check', async () => {
    const a = world.issuerA; // PS256 key
    const rs = rawSign(
      { alg: 'RS512', kid: a.kid, typ: 'JWT' },
      Buffer.from(JSON.stringify(claims(a, {}))),
      a.privateKey,
      'RS512',
    );
    await expect(verifyCredential(rs, world.config, NOW_MS)).rejects.toMatchObject({
      code: 'TOKEN_ALG_NOT_ALLOWED',
    });
  });
});

describe('verifySigned with node:crypto agrees with jose compactVerify', () => {
  const BUNDLE = Buffer.from('<Bundle xmlns="http://hl7.org/fhir"><id value="1"/></Bundle>', 'utf8');
  const limits = { maxSealedBytes: 64 * 1024 };
  const senders = () => [
    { signer: world.senderGp, ods: 'GP0001', other: world.issuerC.privateKey },
    { signer: world.senderX26, ods: 'X26', other: world.issuerB.privateKey },
  ];
  const header = (s: TestWorld['senderGp'], over: Record<string, unknown> = {}) => ({
    alg: s.alg,
    kid: s.kid,
    cty: 'fhir+xml',
    itk: ROUTING,
    ...over,
  });

  async function joseSays(s: TestWorld['senderGp'], jws: string): Promise<Uint8Array | string> {
    try {
      return (await compactVerify(jws, await importJWK({ ...s.jwk }, s.alg), { algorithms: [s.alg] }))
        .payload;
    } catch (error) {
      return (error as errors.JOSEError).code;
    }
  }

  async function weSay(jws: string, ods: string): Promise<Uint8Array | string> {
    try {
      return (await verifySigned(parseSigned(jws, limits), ods, world.config)).payload;
    } catch (error) {
      return (
        ((error as PipelineError).cause as { joseCode?: string } | undefined)?.joseCode ??
        (error as PipelineError).code
      );
    }
  }

  it('returns the same payload bytes for valid PS256 and ES256 signatures', async () => {
    for (const { signer, ods } of senders()) {
      const jws = rawSign(header(signer), BUNDLE, signer.privateKey, signer.alg);
      const ours = await weSay(jws, ods);
      expect(ours).toBeInstanceOf(Uint8Array);
      expect(
        Buffer.from(ours as Uint8Array).equals(Buffer.from((await joseSays(signer, jws)) as Uint8Array)),
      ).toBe(true);
    }
  });

  it('refuses a wrong key, a tampered payload, a flipped or truncated signature as jose does', async () => {
    for (const { signer, ods, other } of senders()) {
      const valid = rawSign(header(signer), BUNDLE, signer.privateKey, signer.alg);
      const cases = [
        rawSign(header(signer), BUNDLE, other, signer.alg),
        replaceSegment(
          valid,
          1,
          b64u(Buffer.from('<Bundle xmlns="http://hl7.org/fhir"><id value="2"/></Bundle>')),
        ),
        flipBit(valid, 2),
        replaceSegment(valid, 2, valid.split('.')[2]?.slice(0, 40) ?? ''),
        replaceSegment(valid, 2, ''),
      ].filter((jws) => jws.split('.')[2] !== '');
      for (const jws of cases) {
        const expected = await joseSays(signer, jws);
        expect(typeof expected).toBe('string');
        expect(await weSay(jws, ods)).toBe(expected);
      }
    }
  });

  it('still refuses an alg mismatch and b64:false before verifying', async () => {
    const gp = world.senderGp; // PS256 key
    const rs = rawSign(header(gp, { alg: 'RS512' }), BUNDLE, gp.privateKey, 'RS512');
    await expect(verifySigned(parseSigned(rs, limits), 'GP0001', world.config)).rejects.toMatchObject({
      code: 'SIGNATURE_ALG_NOT_ALLOWED',
    });
    const unencoded = rawSign(header(gp, { b64: false, crit: ['b64'] }), BUNDLE, gp.privateKey, 'PS256');
    expect(() => parseSigned(unencoded, limits)).toThrow(
      expect.objectContaining({ code: 'SIGNATURE_HEADER_NOT_ALLOWED' }),
    );
  });
});

describe('verifyJwsSignature refuses keys unfit for the alg, as jose did', () => {
  const input = Buffer.from('e30.e30', 'ascii');
  it('an RSA key under 2048 bits, an RSA key for ES256 and a P-384 key for ES256', () => {
    const small = generateKeyPairSync('rsa', { modulusLength: 1024 });
    const sig = sign('sha512', input, small.privateKey);
    expect(() => verifyJwsSignature('RS512', small.publicKey, input, sig)).toThrow(SignatureKeyError);
    expect(() => verifyJwsSignature('PS256', small.publicKey, input, sig)).toThrow(SignatureKeyError);
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
    expect(() => verifyJwsSignature('ES256', rsa.publicKey, input, new Uint8Array(64))).toThrow(
      SignatureKeyError,
    );
    const p384 = generateKeyPairSync('ec', { namedCurve: 'secp384r1' });
    expect(() => verifyJwsSignature('ES256', p384.publicKey, input, new Uint8Array(64))).toThrow(
      SignatureKeyError,
    );
    const ec = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    expect(() => verifyJwsSignature('RS512', ec.publicKey, input, new Uint8Array(256))).toThrow(
      SignatureKeyError,
    );
  });

  it('a DER-encoded or wrong-length ES256 signature is false, never an exception', () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const der = sign('sha256', input, ec.privateKey);
    const p1363 = sign('sha256', input, { key: ec.privateKey, dsaEncoding: 'ieee-p1363' });
    expect(verifyJwsSignature('ES256', ec.publicKey, input, p1363)).toBe(true);
    expect(verifyJwsSignature('ES256', ec.publicKey, input, der)).toBe(false);
    expect(verifyJwsSignature('ES256', ec.publicKey, input, p1363.subarray(0, 63))).toBe(false);
  });
});
