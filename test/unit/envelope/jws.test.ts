import { sign as nodeSign } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseSigned, verifySigned } from '../../../lib/envelope/jws.js';
import { signBundle } from '../../../lib/envelope/seal.js';
import { EnvelopeError, SignatureError } from '../../../lib/errors.js';
import {
  b64u,
  expectCode,
  flipBit,
  makeWorld,
  ROUTING,
  rawSign,
  replaceSegment,
  type TestWorld,
} from './helpers.js';

let world: TestWorld;
let signedGp: string;
const BUNDLE = Buffer.from('<Bundle xmlns="http://hl7.org/fhir"><id value="1"/></Bundle>', 'utf8');
const limits = { maxSealedBytes: 64 * 1024 };

beforeAll(async () => {
  world = await makeWorld();
  signedGp = await signBundle({
    bundle: BUNDLE,
    format: 'xml',
    routing: ROUTING,
    signer: { key: world.senderGp.privateKey, kid: world.senderGp.kid, alg: 'PS256' },
  });
});

const gpHeader = (over: Record<string, unknown> = {}) => ({
  alg: 'PS256',
  kid: world.senderGp.kid,
  cty: 'fhir+xml',
  itk: ROUTING,
  ...over,
});
const verify = (compact: string, ods = 'GP0001') =>
  verifySigned(parseSigned(compact, limits), ods, world.config);
const parseFails = (compact: string | Uint8Array, code: Parameters<typeof expectCode>[2]) =>
  expectCode(() => parseSigned(compact, limits), SignatureError, code);
const verifyFails = (compact: string, code: Parameters<typeof expectCode>[2], ods = 'GP0001') =>
  expectCode(verify(compact, ods), SignatureError, code);

describe('parseSigned', () => {
  it('parses a contract JWS from a string or from decrypted bytes', () => {
    const fromString = parseSigned(signedGp, limits);
    expect(fromString).toMatchObject({ alg: 'PS256', kid: 'gp0001-sig-1', format: 'xml', routing: ROUTING });
    const fromBytes = parseSigned(Buffer.from(signedGp, 'ascii'), limits);
    expect(fromBytes.compact).toBe(signedGp);
  });

  it('rejects b64:false (A8), crit, key-carrying headers and zip', async () => {
    const key = world.senderGp.privateKey;
    await parseFails(
      rawSign(gpHeader({ b64: false, crit: ['b64'] }), BUNDLE, key, 'PS256'),
      'SIGNATURE_HEADER_NOT_ALLOWED',
    );
    await parseFails(rawSign(gpHeader({ b64: false }), BUNDLE, key, 'PS256'), 'SIGNATURE_HEADER_NOT_ALLOWED');
    for (const extra of [
      { crit: ['urn:x'] },
      { jwk: world.senderGp.jwk },
      { jku: 'https://attacker.example' },
      { x5u: 'https://attacker.example' },
      { x5c: ['MIIB'] },
      { zip: 'DEF' },
      { 'x-unknown': true },
    ]) {
      await parseFails(rawSign(gpHeader(extra), BUNDLE, key, 'PS256'), 'SIGNATURE_HEADER_NOT_ALLOWED');
    }
  });

  it('rejects algorithms outside the allow-list (A1, A2)', async () => {
    const pem = Buffer.from(world.senderGp.publicKey.export({ format: 'pem', type: 'spki' }));
    await parseFails(rawSign(gpHeader({ alg: 'HS256' }), BUNDLE, pem, 'HS256'), 'SIGNATURE_ALG_NOT_ALLOWED');
    await parseFails(
      rawSign(gpHeader({ alg: 'RS256' }), BUNDLE, world.senderGp.privateKey, 'RS512'),
      'SIGNATURE_ALG_NOT_ALLOWED',
    );
    // An unsigned JWS has an empty signature segment: structurally not a signed message.
    await parseFails(rawSign(gpHeader({ alg: 'none' }), BUNDLE, undefined, 'none'), 'SIGNATURE_MALFORMED');
    await parseFails(rawSign(gpHeader({ alg: 'none' }), BUNDLE, pem, 'HS256'), 'SIGNATURE_ALG_NOT_ALLOWED');
    await parseFails(rawSign(gpHeader({ alg: 'nOnE' }), BUNDLE, pem, 'HS256'), 'SIGNATURE_ALG_NOT_ALLOWED');
  });

  it('requires cty fhir+xml or fhir+json exactly (A29), a kid and a valid itk', async () => {
    const key = world.senderGp.privateKey;
    for (const cty of [
      'FHIR+XML',
      'Application/fhir+xml',
      'application/fhir+xml; charset=utf-8',
      'JOSE',
      'xml',
    ]) {
      await parseFails(rawSign(gpHeader({ cty }), BUNDLE, key, 'PS256'), 'SIGNATURE_HEADER_NOT_ALLOWED');
    }
    await parseFails(rawSign(gpHeader({ cty: undefined }), BUNDLE, key, 'PS256'), 'SIGNATURE_MALFORMED');
    await parseFails(rawSign(gpHeader({ kid: undefined }), BUNDLE, key, 'PS256'), 'SIGNATURE_MALFORMED');
    await parseFails(rawSign(gpHeader({ kid: 'a/b' }), BUNDLE, key, 'PS256'), 'SIGNATURE_MALFORMED');
    await parseFails(rawSign(gpHeader({ itk: undefined }), BUNDLE, key, 'PS256'), 'SIGNATURE_MALFORMED');
    await parseFails(
      rawSign(gpHeader({ itk: { ...ROUTING, id: 7 } }), BUNDLE, key, 'PS256'),
      'SIGNATURE_MALFORMED',
    );
  });

  it('treats cty application/fhir+xml and application/fhir+json as fhir+xml and fhir+json (RFC 7515 §4.1.10)', async () => {
    const key = world.senderGp.privateKey;
    const xml = rawSign(gpHeader({ cty: 'application/fhir+xml' }), BUNDLE, key, 'PS256');
    expect(parseSigned(xml, limits)).toMatchObject({ format: 'xml', header: { cty: 'fhir+xml' } });
    const verified = await verify(xml);
    expect(Buffer.from(verified.payload).equals(BUNDLE)).toBe(true);
    expect(verified.format).toBe('xml');
    const json = rawSign(gpHeader({ cty: 'application/fhir+json' }), BUNDLE, key, 'PS256');
    expect(parseSigned(json, limits)).toMatchObject({ format: 'json', header: { cty: 'fhir+json' } });
  });

  it('rejects content that is not a compact JWS (signature stripping, A18)', async () => {
    await parseFails(BUNDLE, 'SIGNATURE_MALFORMED');
    await parseFails(Buffer.from([0xff, 0xfe, 0x2e, 0x41, 0x2e, 0x41]), 'SIGNATURE_MALFORMED');
    await parseFails(`${signedGp.split('.').slice(0, 2).join('.')}.`, 'SIGNATURE_MALFORMED');
    await parseFails(replaceSegment(signedGp, 1, ''), 'SIGNATURE_MALFORMED');
    await parseFails(`{"payload":"${b64u(BUNDLE)}"}`, 'SIGNATURE_MALFORMED');
    await parseFails(`${signedGp}=`, 'SIGNATURE_MALFORMED');
  });

  it('reports an oversize JWS as MESSAGE_TOO_LARGE', async () => {
    await expectCode(
      () => parseSigned(signedGp, { maxSealedBytes: signedGp.length - 1 }),
      EnvelopeError,
      'MESSAGE_TOO_LARGE',
    );
    await expectCode(
      () => parseSigned(Buffer.from(signedGp), { maxSealedBytes: 10 }),
      EnvelopeError,
      'MESSAGE_TOO_LARGE',
    );
  });
});

describe('verifySigned', () => {
  it('returns the exact payload, format and signed routing', async () => {
    const verified = await verify(signedGp);
    expect(Buffer.from(verified.payload).equals(BUNDLE)).toBe(true);
    expect(verified).toMatchObject({ format: 'xml', routing: ROUTING });
  });

  it("rejects a valid signature by another sender's key (A17-style substitution)", async () => {
    const byX26 = await signBundle({
      bundle: BUNDLE,
      format: 'xml',
      routing: ROUTING,
      signer: { key: world.senderX26.privateKey, kid: world.senderX26.kid, alg: 'ES256' },
    });
    await verifyFails(byX26, 'SIGNATURE_KEY_NOT_SENDERS');
    await verifyFails(signedGp, 'SIGNATURE_KEY_NOT_SENDERS', 'X26');
    await expect(verify(byX26, 'X26')).resolves.toBeTruthy();
  });

  it('rejects an unknown kid, and an issuer (credential) key used as a message key', async () => {
    await verifyFails(
      rawSign(gpHeader({ kid: 'gp0001-sig-9' }), BUNDLE, world.senderGp.privateKey, 'PS256'),
      'SIGNATURE_KEY_UNKNOWN',
    );
    const issuerKeyed = rawSign(
      gpHeader({ kid: world.issuerA.kid }),
      BUNDLE,
      world.issuerA.privateKey,
      'PS256',
    );
    await verifyFails(issuerKeyed, 'SIGNATURE_KEY_UNKNOWN');
  });

  it('rejects a tampered payload or signature', async () => {
    await verifyFails(replaceSegment(signedGp, 1, b64u(Buffer.from('<Bundle/>'))), 'SIGNATURE_INVALID');
    await verifyFails(flipBit(signedGp, 2), 'SIGNATURE_INVALID');
    // The signed itk is covered too: changing the routing in the JWS header breaks the signature.
    await verifyFails(
      replaceSegment(signedGp, 0, b64u(JSON.stringify(gpHeader({ itk: { ...ROUTING, to: 'X9' } })))),
      'SIGNATURE_INVALID',
    );
  });

  it("rejects an allowed alg that is not the registered key's alg", async () => {
    // RS512 with GP0001's RSA key, whose registered alg is PS256.
    await verifyFails(
      rawSign(gpHeader({ alg: 'RS512' }), BUNDLE, world.senderGp.privateKey, 'RS512'),
      'SIGNATURE_ALG_NOT_ALLOWED',
    );
    // PS256 header on X26's key, registered as ES256.
    const x26 = rawSign(
      gpHeader({ alg: 'PS256', kid: world.senderX26.kid }),
      BUNDLE,
      world.senderGp.privateKey,
      'PS256',
    );
    await verifyFails(x26, 'SIGNATURE_ALG_NOT_ALLOWED', 'X26');
  });

  it('rejects ES256 psychic (all-zero) and DER-encoded signatures (A11, A12)', async () => {
    const byX26 = await signBundle({
      bundle: BUNDLE,
      format: 'xml',
      routing: ROUTING,
      signer: { key: world.senderX26.privateKey, kid: world.senderX26.kid, alg: 'ES256' },
    });
    await verifyFails(replaceSegment(byX26, 2, b64u(new Uint8Array(64))), 'SIGNATURE_INVALID', 'X26');
    const [h, p] = byX26.split('.');
    const der = nodeSign('sha256', Buffer.from(`${h}.${p}`), world.senderX26.privateKey);
    await verifyFails(replaceSegment(byX26, 2, b64u(der)), 'SIGNATURE_INVALID', 'X26');
  });

  it('keeps jose detail out of the error: code only', async () => {
    const error = await verifyFails(flipBit(signedGp, 2), 'SIGNATURE_INVALID');
    expect(error.cause).toEqual({ joseCode: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' });
  });
});
