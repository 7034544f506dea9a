import { generateKeyPairSync } from 'node:crypto';
import { exportJWK } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import { mintToken, verifyCredential } from '../../../lib/envelope/token.js';
import { AuthenticationError } from '../../../lib/errors.js';
import { PrincipalSchema } from '../../../lib/record.js';
import {
  AUDIENCE,
  b64u,
  expectCode,
  flipBit,
  makeWorld,
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

/** A valid credential from issuer A (NHS signed-JWT style), with overrides. */
function tokenA(claims: Record<string, unknown> = {}, header: Record<string, unknown> = {}): Promise<string> {
  const a = world.issuerA;
  return mintToken({
    key: a.privateKey,
    kid: a.kid,
    alg: a.alg,
    iss: a.iss,
    sub: a.iss,
    aud: AUDIENCE,
    organisation: 'GP0001',
    iat: NOW,
    claims,
    header,
  });
}

/** Claims of a valid issuer-A token, for the raw signer. */
function claimsA(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    iss: world.issuerA.iss,
    sub: world.issuerA.iss,
    aud: AUDIENCE,
    iat: NOW,
    exp: NOW + 300,
    jti: 'jti-1',
    ods: 'GP0001',
    ...over,
  };
}

function headerA(over: Record<string, unknown> = {}): Record<string, unknown> {
  return { alg: 'PS256', kid: world.issuerA.kid, typ: 'JWT', ...over };
}

const verify = (token: string, at = NOW_MS) => verifyCredential(token, world.config, at);
const rejects = (token: string | Promise<string>, code: Parameters<typeof expectCode>[2], at = NOW_MS) =>
  expectCode((async () => verify(await token, at))(), AuthenticationError, code);

describe('mintToken', () => {
  it('writes the contract header and claims, with exp = iat + 300 and a random jti by default', async () => {
    const token = await tokenA();
    const [h, p] = token.split('.');
    expect(JSON.parse(Buffer.from(h ?? '', 'base64url').toString())).toEqual({
      alg: 'PS256',
      kid: 'iss-a-1',
      typ: 'JWT',
    });
    const claims = JSON.parse(Buffer.from(p ?? '', 'base64url').toString());
    expect(claims).toMatchObject({
      iss: 'gp0001-ehr',
      sub: 'gp0001-ehr',
      aud: AUDIENCE,
      iat: NOW,
      exp: NOW + 300,
    });
    expect(claims.ods).toBe('GP0001');
    expect(claims.jti).toMatch(/^[0-9a-f-]{36}$/);
    expect(claims.act).toBeUndefined();
  });

  it('nests a dotted organisation claim, the roles claim and an RFC 8693 act chain', async () => {
    const b = world.issuerB;
    const token = await mintToken({
      key: b.entry.privateJwk,
      kid: b.kid,
      alg: 'ES256',
      iss: b.iss,
      sub: 'user-1',
      aud: AUDIENCE,
      organisation: 'X26',
      organisationClaim: 'org.ods',
      actors: ['hub-7', 'hub-1'],
      roles: ['R8000'],
      jti: 'fixed',
      claims: { org: { name: 'kept?' } },
    });
    const claims = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString());
    // Extra claims are applied last and replace whole members.
    expect(claims.org).toEqual({ name: 'kept?' });
    const token2 = await mintToken({
      key: b.entry.privateJwk,
      kid: b.kid,
      alg: 'ES256',
      iss: b.iss,
      sub: 'user-1',
      aud: AUDIENCE,
      organisation: 'X26',
      organisationClaim: 'org.ods',
      actors: ['hub-7', 'hub-1'],
      roles: ['R8000'],
      jti: 'fixed',
    });
    const claims2 = JSON.parse(Buffer.from(token2.split('.')[1] ?? '', 'base64url').toString());
    expect(claims2.org).toEqual({ ods: 'X26' });
    expect(claims2.roles).toEqual(['R8000']);
    expect(claims2.act).toEqual({ sub: 'hub-7', act: { sub: 'hub-1' } });
    expect(claims2.jti).toBe('fixed');
  });
});

describe('verifyCredential — accepted credentials', () => {
  it('returns the principal of an NHS-style credential (PS256, iss = sub, ods claim)', async () => {
    const token = await tokenA({ jti: 'abc-123' });
    const principal = await verify(token);
    expect(principal).toEqual({
      issuer: 'nhs-jwt',
      issuerId: 'nhs-jwt',
      iss: 'gp0001-ehr',
      subject: 'gp0001-ehr',
      organisation: 'GP0001',
      actors: [],
      roles: [],
      jti: 'abc-123',
      exp: NOW + 300,
    });
    // Usable as the record's Principal.
    expect(PrincipalSchema.parse(principal)).toMatchObject({ issuer: 'nhs-jwt', organisation: 'GP0001' });
  });

  it('accepts two issuers with different organisation claim mappings, each by its own mapping', async () => {
    const b = world.issuerB;
    const fed = await mintToken({
      key: b.privateKey,
      kid: b.kid,
      alg: 'ES256',
      iss: b.iss,
      sub: 'clinician-42',
      aud: AUDIENCE,
      organisation: 'X26',
      organisationClaim: 'org.ods',
      roles: ['R8000', 'R8001'],
      actors: ['pharmacy-hub-7'],
      iat: NOW,
    });
    const p1 = await verify(fed);
    expect(p1).toMatchObject({
      issuer: 'fed-idp',
      organisation: 'X26',
      subject: 'clinician-42',
      roles: ['R8000', 'R8001'],
      actors: ['pharmacy-hub-7'],
    });
    const p2 = await verify(await tokenA());
    expect(p2.organisation).toBe('GP0001');
    expect(p2.issuer).toBe('nhs-jwt');
  });

  it('accepts RS512 credentials', async () => {
    const c = world.issuerC;
    const token = await mintToken({
      key: c.privateKey,
      kid: c.kid,
      alg: 'RS512',
      iss: c.iss,
      sub: 'x26-pms',
      aud: AUDIENCE,
      organisation: 'X26',
      iat: NOW,
    });
    expect((await verify(token)).organisation).toBe('X26');
  });

  it('accepts an iat slightly in the future within the clock skew, and aud as a one-element array', async () => {
    await expect(verify(await tokenA({ iat: NOW + 20, exp: NOW + 300 }))).resolves.toBeTruthy();
    await expect(verify(await tokenA({ aud: [AUDIENCE] }))).resolves.toBeTruthy();
  });

  it('accepts a delegation chain at the maximum depth', async () => {
    const token = await tokenA({ act: { sub: 'hub-2', act: { sub: 'hub-1' } } });
    expect((await verify(token)).actors).toEqual(['hub-2', 'hub-1']);
  });

  it('verifies repeatedly with the cached key, also after a config reload with the same key', async () => {
    const token = await tokenA();
    await verify(token);
    await verify(token);
    const reloaded = await import('../../../lib/config/load.js').then((m) =>
      m.loadConfig(JSON.parse(JSON.stringify(world.config.doc))),
    );
    await expect(verifyCredential(token, reloaded, NOW_MS)).resolves.toBeTruthy();
  });

  it('does not use a stale cached key after a reload that replaces the key under the same kid', async () => {
    const token = await tokenA();
    await verify(token);
    const other = await makeWorld();
    // other world: same issuer ids and kids, different key material.
    await expectCode(
      verifyCredential(token, other.config, NOW_MS),
      AuthenticationError,
      'TOKEN_SIGNATURE_INVALID',
    );
  });
});

describe('verifyCredential — time claims (A14)', () => {
  it('rejects an expired credential', async () => {
    await rejects(tokenA({ iat: NOW - 200, exp: NOW - 60 }), 'TOKEN_EXPIRED');
  });
  it('rejects a credential older than the maximum lifetime even if exp were later', async () => {
    await rejects(tokenA({ iat: NOW - 400, exp: NOW - 100 }), 'TOKEN_EXPIRED');
  });
  it('rejects nbf in the future', async () => {
    await rejects(tokenA({ nbf: NOW + 3600 }), 'TOKEN_NOT_YET_VALID');
  });
  it('rejects iat in the future beyond the skew', async () => {
    await rejects(tokenA({ iat: NOW + 3600, exp: NOW + 3700 }), 'TOKEN_NOT_YET_VALID');
    await rejects(tokenA({ iat: NOW + 31, exp: NOW + 100 }), 'TOKEN_NOT_YET_VALID');
  });
  it('rejects a lifetime over 300 s', async () => {
    await rejects(tokenA({ exp: NOW + 301 }), 'TOKEN_LIFETIME_TOO_LONG');
    await rejects(tokenA({ exp: NOW + 100 * 365 * 86400 }), 'TOKEN_LIFETIME_TOO_LONG');
  });
  it('judges at receipt time, not at verification time', async () => {
    const token = await tokenA();
    await rejects(token, 'TOKEN_EXPIRED', NOW_MS + 400_000);
    await expect(verify(token, NOW_MS + 200_000)).resolves.toBeTruthy();
  });
  it('rejects missing exp, iat or jti, and exp as a string', async () => {
    await rejects(tokenA({ exp: undefined }), 'TOKEN_CLAIM_INVALID');
    await rejects(tokenA({ iat: undefined }), 'TOKEN_CLAIM_INVALID');
    await rejects(tokenA({ jti: undefined }), 'TOKEN_CLAIM_INVALID');
    await rejects(tokenA({ exp: String(NOW + 300) }), 'TOKEN_CLAIM_INVALID');
    await rejects(tokenA({ jti: '' }), 'TOKEN_CLAIM_INVALID');
    await rejects(tokenA({ jti: 42 }), 'TOKEN_CLAIM_INVALID');
  });
});

describe('verifyCredential — issuer, audience, subject (A15)', () => {
  it('rejects the wrong audience, and an array naming other audiences too', async () => {
    await rejects(tokenA({ aud: 'https://other.example/token' }), 'TOKEN_CLAIM_INVALID');
    await rejects(tokenA({ aud: [AUDIENCE, 'https://other.example'] }), 'TOKEN_CLAIM_INVALID');
    await rejects(tokenA({ aud: undefined }), 'TOKEN_CLAIM_INVALID');
  });
  it('rejects an unknown issuer', async () => {
    await rejects(tokenA({ iss: 'someone-else' }), 'TOKEN_ISSUER_UNKNOWN');
    await rejects(tokenA({ iss: undefined }), 'TOKEN_CLAIM_INVALID');
  });
  it('rejects iss ≠ sub where the issuer requires them equal (wrong iss for the client)', async () => {
    await rejects(tokenA({ sub: 'another-client' }), 'TOKEN_CLAIM_INVALID');
  });
  it('rejects an unknown kid', async () => {
    await rejects(tokenA({}, { kid: 'no-such-key' }), 'TOKEN_KEY_UNKNOWN');
  });
  it("rejects a kid that belongs to another issuer, even when signed with that issuer's key", async () => {
    const b = world.issuerB;
    // Issuer B's key and kid, claiming to be issuer A: the key is looked up under A only.
    const token = rawSign({ alg: 'ES256', kid: b.kid, typ: 'JWT' }, claimsA(), b.privateKey, 'ES256');
    await rejects(token, 'TOKEN_KEY_UNKNOWN');
  });
  it('rejects a missing or hostile kid before any look-up (A3)', async () => {
    for (const kid of [
      undefined,
      '',
      '../../dev/null',
      "x' OR '1'='1",
      '|cat /etc/passwd',
      'k'.repeat(65),
      'ключ',
      7,
    ]) {
      await rejects(
        rawSign(headerA({ kid }), claimsA(), world.issuerA.privateKey, 'PS256'),
        'TOKEN_MALFORMED',
      );
    }
  });
});

describe('verifyCredential — algorithms and keys (A1, A2, A4, A5, A7, A8)', () => {
  it('rejects alg none in any spelling', async () => {
    for (const alg of ['none', 'None', 'nOnE', '']) {
      await rejects(rawSign(headerA({ alg }), claimsA(), undefined, 'none'), 'TOKEN_ALG_NOT_ALLOWED');
    }
  });
  it('rejects HS256 keyed with the public key (PEM, DER and JWK text)', async () => {
    const pub = world.issuerA.publicKey;
    const secrets = [
      Buffer.from(pub.export({ format: 'pem', type: 'spki' })),
      pub.export({ format: 'der', type: 'spki' }),
      Buffer.from(JSON.stringify(world.issuerA.jwk)),
    ];
    for (const secret of secrets) {
      await rejects(rawSign(headerA({ alg: 'HS256' }), claimsA(), secret, 'HS256'), 'TOKEN_ALG_NOT_ALLOWED');
    }
  });
  it("rejects an allowed alg that is not the issuer key's alg", async () => {
    // RS512 with issuer A's (PS256) RSA key: a valid RSA signature under the wrong algorithm.
    const token = rawSign(headerA({ alg: 'RS512' }), claimsA(), world.issuerA.privateKey, 'RS512');
    await rejects(token, 'TOKEN_ALG_NOT_ALLOWED');
    await rejects(
      rawSign(headerA({ alg: 'RS256' }), claimsA(), world.issuerA.privateKey, 'RS512'),
      'TOKEN_ALG_NOT_ALLOWED',
    );
    await rejects(
      rawSign(headerA({ alg: ['PS256'] }), claimsA(), world.issuerA.privateKey, 'PS256'),
      'TOKEN_ALG_NOT_ALLOWED',
    );
  });
  it('rejects an embedded jwk header even though the header kid is known', async () => {
    const attacker = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const jwk = await exportJWK(attacker.publicKey);
    const token = rawSign(headerA({ jwk }), claimsA(), attacker.privateKey, 'PS256');
    await rejects(token, 'TOKEN_MALFORMED');
  });
  it('rejects jku, x5u, x5c, zip, b64 and crit headers', async () => {
    const key = world.issuerA.privateKey;
    for (const extra of [
      { jku: 'https://attacker.example/jwks.json' },
      { x5u: 'https://attacker.example/cert.pem' },
      { x5c: ['MIIB'] },
      { zip: 'DEF' },
      { b64: false, crit: ['b64'] },
      { crit: ['urn:x'] },
      { crit: ['exp'] },
      { crit: [] },
    ]) {
      await rejects(rawSign(headerA(extra), claimsA(), key, 'PS256'), 'TOKEN_MALFORMED');
    }
  });
  it('rejects a typ other than exactly JWT', async () => {
    const key = world.issuerA.privateKey;
    for (const typ of [undefined, 'jwt', 'application/jwt', 'at+jwt', 'JOSE']) {
      await rejects(rawSign(headerA({ typ }), claimsA(), key, 'PS256'), 'TOKEN_CLAIM_INVALID');
    }
  });
  it('rejects a bad signature', async () => {
    const token = await tokenA();
    await rejects(flipBit(token, 2), 'TOKEN_SIGNATURE_INVALID');
    // Claims changed after signing.
    const forged = replaceSegment(token, 1, b64u(JSON.stringify(claimsA({ ods: 'X26' }))));
    await rejects(forged, 'TOKEN_SIGNATURE_INVALID');
  });
  it('rejects an ES256 signature of zeros (psychic signature, A12)', async () => {
    const b = world.issuerB;
    const good = await mintToken({
      key: b.privateKey,
      kid: b.kid,
      alg: 'ES256',
      iss: b.iss,
      sub: 's',
      aud: AUDIENCE,
      organisation: 'X26',
      organisationClaim: 'org.ods',
      iat: NOW,
    });
    await rejects(replaceSegment(good, 2, b64u(new Uint8Array(64))), 'TOKEN_SIGNATURE_INVALID');
  });
});

describe('verifyCredential — encoding and size (rules 1 and 10; A9, A10, A13, A29)', () => {
  it('rejects an oversize credential before parsing', async () => {
    const big = await tokenA({ pad: 'x'.repeat(9000) });
    await rejects(big, 'TOKEN_TOO_LARGE');
    await rejects(`${'a'.repeat(10_000)}.b.c`, 'TOKEN_TOO_LARGE');
  });
  it('rejects non-canonical base64url: padding, whitespace, + and /, pad bits', async () => {
    const token = await tokenA();
    const [h = '', p = '', s = ''] = token.split('.');
    await rejects(`${h}=.${p}.${s}`, 'TOKEN_MALFORMED');
    await rejects(`${h}.${p}.${s}==`, 'TOKEN_MALFORMED');
    await rejects(`${h}.${p.slice(0, 10)} ${p.slice(10)}.${s}`, 'TOKEN_MALFORMED');
    await rejects(`${h}.${p}\n.${s}`, 'TOKEN_MALFORMED');
    await rejects(`${h}.${p}.${s.replace(/-/g, '+').replace(/_/g, '/')}x+/`, 'TOKEN_MALFORMED');
    // Flip an unused low bit of the last character: same bytes, different string (A10).
    const malleable = withPadBitSet(token);
    if (malleable) await rejects(malleable, 'TOKEN_MALFORMED');
  });
  it('rejects JSON serialisation and wrong segment counts', async () => {
    const token = await tokenA();
    const [h = '', p = '', s = ''] = token.split('.');
    await rejects(JSON.stringify({ protected: h, payload: p, signature: s }), 'TOKEN_MALFORMED');
    await rejects(`${h}.${p}`, 'TOKEN_MALFORMED');
    await rejects(`${h}.${p}.${s}.`, 'TOKEN_MALFORMED');
    await rejects(`${h}.${p}.${s}.${s}.${s}`, 'TOKEN_MALFORMED');
    await rejects('.'.repeat(5000), 'TOKEN_MALFORMED');
  });
  it('rejects an empty credential', async () => {
    await rejects('', 'TOKEN_MISSING');
  });
  it('rejects duplicate members in the header or claims, including escaped duplicates', async () => {
    const key = world.issuerA.privateKey;
    const dupHeader = `{"alg":"HS256","alg":"PS256","kid":"${world.issuerA.kid}","typ":"JWT"}`;
    await rejects(rawSign(dupHeader, claimsA(), key, 'PS256'), 'TOKEN_MALFORMED');
    const claims = JSON.stringify(claimsA());
    const dupSub = `${claims.slice(0, -1)},"s\\u0075b":"someone-else"}`;
    await rejects(rawSign(headerA(), dupSub, key, 'PS256'), 'TOKEN_MALFORMED');
  });
  it('rejects deep nesting and non-object JSON', async () => {
    const key = world.issuerA.privateKey;
    const deep = `${claimsJson().slice(0, -1)},"x":${'['.repeat(2000)}${']'.repeat(2000)}}`;
    await rejects(rawSign(headerA(), deep, key, 'PS256'), 'TOKEN_MALFORMED');
    await rejects(rawSign('[1]', claimsA(), key, 'PS256'), 'TOKEN_MALFORMED');
    await rejects(rawSign(headerA(), '"just a string"', key, 'PS256'), 'TOKEN_MALFORMED');
    await rejects(rawSign(headerA(), 'null', key, 'PS256'), 'TOKEN_MALFORMED');
  });
  it('rejects invalid UTF-8 in the header', async () => {
    const token = await tokenA();
    const badHeader = Buffer.concat([
      Buffer.from('{"alg":"PS256","kid":"'),
      Buffer.from([0xc3, 0x28]),
      Buffer.from('"}'),
    ]);
    await rejects(replaceSegment(token, 0, badHeader.toString('base64url')), 'TOKEN_MALFORMED');
  });
});

describe('verifyCredential — organisation, delegation, roles', () => {
  it('rejects a missing or malformed organisation claim', async () => {
    await rejects(tokenA({ ods: undefined }), 'TOKEN_ORGANISATION_MISSING');
    await rejects(tokenA({ ods: 'gp0001' }), 'TOKEN_ORGANISATION_MISSING');
    await rejects(tokenA({ ods: ['GP0001'] }), 'TOKEN_ORGANISATION_MISSING');
  });
  it("uses each issuer's own organisation claim: `ods` means nothing to the federated issuer", async () => {
    const b = world.issuerB;
    const token = await mintToken({
      key: b.privateKey,
      kid: b.kid,
      alg: 'ES256',
      iss: b.iss,
      sub: 's',
      aud: AUDIENCE,
      organisation: 'X26',
      iat: NOW,
    });
    await rejects(token, 'TOKEN_ORGANISATION_MISSING');
  });
  it('does not follow the prototype chain when reading a claim path', async () => {
    const b = world.issuerB;
    const token = await mintToken({
      key: b.privateKey,
      kid: b.kid,
      alg: 'ES256',
      iss: b.iss,
      sub: 's',
      aud: AUDIENCE,
      organisation: 'X26',
      organisationClaim: '__proto__.ods',
      iat: NOW,
    });
    await rejects(token, 'TOKEN_ORGANISATION_MISSING');
  });
  it('rejects a delegation chain deeper than the limit', async () => {
    await rejects(
      tokenA({ act: { sub: 'a', act: { sub: 'b', act: { sub: 'c' } } } }),
      'DELEGATION_CHAIN_TOO_DEEP',
    );
  });
  it('rejects a malformed act claim', async () => {
    await rejects(tokenA({ act: 'hub-7' }), 'TOKEN_CLAIM_INVALID');
    await rejects(tokenA({ act: { iss: 'x' } }), 'TOKEN_CLAIM_INVALID');
    await rejects(tokenA({ act: [{ sub: 'a' }] }), 'TOKEN_CLAIM_INVALID');
  });
  it('rejects a roles claim that is not an array of strings', async () => {
    const b = world.issuerB;
    const token = await mintToken({
      key: b.privateKey,
      kid: b.kid,
      alg: 'ES256',
      iss: b.iss,
      sub: 's',
      aud: AUDIENCE,
      organisation: 'X26',
      organisationClaim: 'org.ods',
      claims: { roles: 'R8000' },
      iat: NOW,
    });
    await rejects(token, 'TOKEN_CLAIM_INVALID');
  });
});

describe('verifyCredential — federation scope', () => {
  /** A credential from the federated issuer B (scope: X26) for `organisation` as `sub`. */
  function tokenB(organisation: string, sub = 's', claims: Record<string, unknown> = {}): Promise<string> {
    const b = world.issuerB;
    return mintToken({
      key: b.privateKey,
      kid: b.kid,
      alg: 'ES256',
      iss: b.iss,
      sub,
      aud: AUDIENCE,
      organisation,
      organisationClaim: 'org.ods',
      iat: NOW,
      claims,
    });
  }

  it("refuses an organisation outside the issuer's organisations, registered or not", async () => {
    // GP0001 is a registered sender, but issuer B speaks for X26 only.
    await rejects(tokenB('GP0001', 'gp0001-ehr'), 'TOKEN_ORGANISATION_OUT_OF_SCOPE');
    await rejects(tokenB('ZZ999'), 'TOKEN_ORGANISATION_OUT_OF_SCOPE');
    await rejects(tokenA({ ods: 'X26' }), 'TOKEN_ORGANISATION_OUT_OF_SCOPE');
    expect((await verify(await tokenB('X26'))).organisation).toBe('X26');
  });

  it('refuses a subject that is not a client registered under this issuer for the organisation', async () => {
    // x26-pms is an X26 client, but under issuer C, not B.
    await rejects(tokenB('X26', 'x26-pms'), 'TOKEN_CLIENT_NOT_REGISTERED');
    await rejects(tokenB('X26', 'someone-else'), 'TOKEN_CLIENT_NOT_REGISTERED');
  });

  it('refuses an act claim that names another issuer, and accepts one naming its own', async () => {
    await rejects(
      tokenB('X26', 's', { act: { sub: 'hub-7', iss: world.issuerA.iss } }),
      'TOKEN_CLAIM_INVALID',
    );
    await rejects(
      tokenB('X26', 's', { act: { sub: 'hub-7', act: { sub: 'hub-1', iss: 'https://elsewhere.example' } } }),
      'TOKEN_CLAIM_INVALID',
    );
    const own = await verify(await tokenB('X26', 's', { act: { sub: 'hub-7', iss: world.issuerB.iss } }));
    expect(own.actors).toEqual(['hub-7']);
  });
});

describe('verifyCredential — errors leak nothing (A28)', () => {
  it('keeps neither the token nor claim values in message or cause', async () => {
    const secretJti = 'jti-secret-9f8e7d';
    const token = await tokenA({ jti: secretJti, aud: 'https://wrong.example', ods: 'GP0001' });
    const error = await rejects(token, 'TOKEN_CLAIM_INVALID');
    const dump = `${error.message} ${JSON.stringify(error.cause)} ${String(error.stack)}`;
    expect(dump).not.toContain(secretJti);
    expect(dump).not.toContain('wrong.example');
    expect(dump).not.toContain(token.slice(0, 40));
    expect(error.cause).toEqual({ joseCode: 'ERR_JWT_CLAIM_VALIDATION_FAILED', claim: 'aud' });
  });
  it('maps jose expiry to a cause with the code only, no payload', async () => {
    const error = await rejects(
      tokenA({ iat: NOW - 200, exp: NOW - 60, jti: 'jti-expired-1' }),
      'TOKEN_EXPIRED',
    );
    expect(JSON.stringify(error.cause)).not.toContain('jti-expired-1');
  });
});

describe('verifyCredential — malleability (A11, A16)', () => {
  it('accepts an ES256 (r, n − s) twin with the same jti: replay protection must key on iss#jti', async () => {
    const b = world.issuerB;
    const token = await mintToken({
      key: b.privateKey,
      kid: b.kid,
      alg: 'ES256',
      iss: b.iss,
      sub: 's',
      aud: AUDIENCE,
      organisation: 'X26',
      organisationClaim: 'org.ods',
      jti: 'same-jti',
      iat: NOW,
    });
    const sig = Buffer.from(token.split('.')[2] ?? '', 'base64url');
    const n = BigInt('0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551');
    const s = BigInt(`0x${sig.subarray(32).toString('hex')}`);
    const twin = Buffer.concat([
      sig.subarray(0, 32),
      Buffer.from((n - s).toString(16).padStart(64, '0'), 'hex'),
    ]);
    const malleated = replaceSegment(token, 2, twin.toString('base64url'));
    expect(malleated).not.toBe(token);
    const [p1, p2] = [await verify(token), await verify(malleated)];
    expect(p2.jti).toBe(p1.jti);
    expect(p2.iss).toBe(p1.iss);
  });
});

function claimsJson(): string {
  return JSON.stringify(claimsA());
}

/** The token with a spare low bit set in the last char of a segment, when one has spare bits. */
function withPadBitSet(token: string): string | undefined {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  const parts = token.split('.');
  for (const [i, part] of parts.entries()) {
    if (part.length % 4 === 2 || part.length % 4 === 3) {
      const last = alphabet.indexOf(part.charAt(part.length - 1));
      const changed = alphabet.charAt(last ^ 1);
      parts[i] = part.slice(0, -1) + changed;
      // Same decoded bytes, different text: exactly the malleability the guard must refuse.
      expect(Buffer.from(parts[i] ?? '', 'base64url')).toEqual(Buffer.from(part, 'base64url'));
      return parts.join('.');
    }
  }
  return undefined;
}
