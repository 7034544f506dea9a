/**
 * The attack suite (SECURITY-CORPUS.md §5, A1–A30): every catalogue item that applies to this
 * pipeline, built as a real hostile message — real keys, real RSA-OAEP / AES-GCM / ECDSA / RSA-PSS —
 * and run through the deployed stage handlers by the embedded runtime, from the HTTP front door (or
 * direct SQS ingestion where that is the more hostile path). Each case asserts the outcome, the
 * deciding stage, the error code and its ITK3 code, that a signed response was written for every
 * rejection, and (A27) that nothing rejected at authenticate or authorise ever reached the key
 * service: the counting key service must see zero unwrap calls for those.
 *
 * Every case's outcome is written to reports/security/attacks.json for scripts/security-report.ts.
 * Envelope-level unit tests of the same guards live in test/unit/envelope; this suite proves the
 * guards are wired into the running pipeline and answer with the right stage and code.
 */
import { generateKeyPairSync, type KeyObject, randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { createDeflateRaw } from 'node:zlib';
import { CompactEncrypt, compactVerify, exportJWK, FlattenedEncrypt, FlattenedSign } from 'jose';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { ItkRouting } from '../../lib/envelope/routing.js';
import { encryptSigned, signBundle } from '../../lib/envelope/seal.js';
import { ERROR_CATALOGUE, type RejectionCode } from '../../lib/errors.js';
import { rejectionAnswered } from '../../lib/stages/batch.js';
import { tokenFor } from '../../lib/testkit/scenario.js';
import type { DemoWorld } from '../../lib/testkit/world.js';
import {
  type BuiltMessage,
  buildMessage,
  configWith,
  credentialFor,
  makeTempDir,
  recipientOf,
  removeTempDirs,
  type SenderOds,
  sealAs,
  signAs,
  signerOf,
  testWorld,
  verifyResponse,
} from '../support/world.js';
import {
  type AttackRow,
  b64u,
  claimsOf,
  fromB64u,
  Harness,
  headerOf,
  malleateEs256,
  P256_N,
  privateKeyOf,
  publicKeyOf,
  type RawSignAlg,
  Results,
  type RunResult,
  rawEncrypt,
  rawSign,
  replaceSegment,
  rowFrom,
  type Via,
} from './support.js';

let world: DemoWorld;
let h: Harness;
const results = new Results<AttackRow>('attacks.json', 'test/security/attacks.test.ts');
let fetchSpy: ReturnType<typeof vi.spyOn>;

beforeAll(async () => {
  world = await testWorld();
  h = new Harness(world, makeTempDir('itk3-attacks-'));
  // A5: token- or header-supplied URLs must never be dereferenced. Any fetch fails the suite.
  fetchSpy = vi.spyOn(globalThis, 'fetch');
});

afterAll(() => {
  results.write({ total: results.rows.length });
  expect(fetchSpy).not.toHaveBeenCalled();
  fetchSpy.mockRestore();
  removeTempDirs();
});

// ---------------------------------------------------------------------------------------------
// Case runner.

interface Input {
  credential?: string;
  sealed: string;
  via?: Via;
  authorization?: string;
  beforeDrain?: () => void;
}

type Expected =
  | { status: 'delivered' }
  | { status: 'rejected'; stage: string; code: RejectionCode; keyCalls?: number }
  | { status: 'rejected'; stage: 'ingest'; code: string; http: number };

/**
 * Run one case and check it. Rejections at authenticate or authorise must not have touched the key
 * service (A27, rule 7); anything that reached decrypt made exactly one unwrap call.
 */
async function check(
  id: string,
  attack: string,
  input: Input,
  expected: Expected,
  harness: Harness = h,
): Promise<RunResult> {
  if (
    expected.status === 'rejected' &&
    expected.stage === 'authenticate' &&
    !('http' in expected) &&
    (input.via ?? 'http') === 'http' &&
    expected.code !== 'TOKEN_REPLAYED'
  ) {
    // The front door checks the credential itself (issue 9, class 4): a credential the stage would
    // refuse is answered 401 TOKEN_REJECTED (one answer whatever failed: no oracle), and nothing
    // is stored or queued for it.
    const blobsBefore = harness.blobCount;
    const atDoor = await harness.run(input);
    expect({ stage: atDoor.outcome.stage, code: atDoor.outcome.code, http: atDoor.http }, id).toEqual({
      stage: 'ingest',
      code: expected.code === 'TOKEN_MISSING' ? 'TOKEN_MISSING' : 'TOKEN_REJECTED',
      http: 401,
    });
    expect(harness.blobCount).toBe(blobsBefore);
    // The stage still refuses the same credential on the direct SQS path.
    return check(id, attack, { ...input, via: 'sqs' }, expected, harness);
  }
  const signsBefore = harness.keys.signs;
  const r = await harness.run(input);
  results.add(rowFrom(id, attack, r));
  const { outcome } = r;
  if (expected.status === 'delivered') {
    expect(outcome, `${id}: expected delivery`).toMatchObject({ status: 'delivered', stage: 'deliver' });
    expect(r.unwraps).toBe(1);
    return r;
  }
  if ('http' in expected) {
    expect({ stage: outcome.stage, code: outcome.code, http: r.http }, id).toEqual({
      stage: 'ingest',
      code: expected.code,
      http: expected.http,
    });
    expect(r.unwraps).toBe(0);
    return r;
  }
  expect(
    { status: outcome.status, stage: outcome.stage, code: outcome.code, itk3Code: outcome.itk3Code },
    id,
  ).toEqual({
    status: 'rejected',
    stage: expected.stage,
    code: expected.code,
    itk3Code: ERROR_CATALOGUE[expected.code],
  });
  if (!rejectionAnswered(expected.stage, expected.code)) {
    // No authenticated sender (issue 9, class 4), or a delegate the organisation has not granted:
    // nothing is signed or written, and nothing lands among the organisation's responses.
    expect(r.responseFiles, `${id}: response file`).toEqual([]);
    expect(harness.keys.signs - signsBefore, `${id}: signatures`).toBe(0);
  } else {
    // Every rejection of an authenticated sender is answered with a signed ITK3 response.
    expect(r.responseFiles, `${id}: response file`).toHaveLength(1);
  }
  if (expected.stage === 'authenticate' || expected.stage === 'authorise') {
    expect(r.unwraps, `${id}: key service called before authorisation`).toBe(0);
  } else {
    // One private-key call (unwrap or key agreement), unless the case says why there is none.
    const keyCalls = 'keyCalls' in expected && expected.keyCalls !== undefined ? expected.keyCalls : 1;
    expect(r.unwraps, `${id}: unwrap calls`).toBe(keyCalls);
  }
  return r;
}

const rejected = (stage: string, code: RejectionCode): Expected => ({ status: 'rejected', stage, code });
const atIngest = (code: string, http: number): Expected => ({
  status: 'rejected',
  stage: 'ingest',
  code,
  http,
});
const delivered: Expected = { status: 'delivered' };

// ---------------------------------------------------------------------------------------------
// Builders: a valid message from a sender, with one thing made hostile.

const FORMAT_CTY = { xml: 'fhir+xml', json: 'fhir+json' } as const;

function senderOf(ods: SenderOds) {
  return world.senders[ods];
}

function token(ods: SenderOds, opts: Parameters<typeof credentialFor>[3] = {}): Promise<string> {
  return credentialFor(world, ods, h.now(), opts);
}

/** A valid message and its credential: the control every hostile case departs from. */
async function valid(ods: SenderOds = 'X26', overrides: Parameters<typeof buildMessage>[1] = {}) {
  const msg = buildMessage(ods, overrides);
  return { msg, credential: await token(ods), sealed: await sealAs(world, ods, msg) };
}

/** The claims a sender's issuer would put in a fresh credential (new jti). */
async function claimsFor(ods: SenderOds, extra: Record<string, unknown> = {}) {
  return { ...claimsOf(await token(ods)), jti: randomUUID(), ...extra };
}

/** A credential built by hand: `header`/`claims` as objects or raw JSON; signed by the issuer key. */
async function rawToken(
  ods: SenderOds,
  opts: {
    header?: Record<string, unknown> | string;
    claims?: Record<string, unknown> | string;
    alg?: RawSignAlg;
    key?: KeyObject | Uint8Array;
    signature?: Uint8Array;
  } = {},
): Promise<string> {
  const issuerKey = senderOf(ods).issuer.key;
  const alg = opts.alg ?? (issuerKey.alg as RawSignAlg);
  return rawSign({
    header: opts.header ?? { alg, kid: issuerKey.kid, typ: 'JWT' },
    payload: opts.claims ?? (await claimsFor(ods)),
    alg,
    key: opts.key ?? privateKeyOf(issuerKey),
    ...(opts.signature ? { signature: opts.signature } : {}),
  });
}

/** The inner JWS of `msg`, signed with the sender's real key but any header (by hand). */
function rawInner(
  ods: SenderOds,
  msg: BuiltMessage,
  opts: {
    header?: Record<string, unknown> | string;
    alg?: RawSignAlg;
    key?: KeyObject | Uint8Array;
    signature?: Uint8Array;
    payloadSegment?: string;
  } = {},
): string {
  const key = senderOf(ods).key;
  const alg = opts.alg ?? (key.alg as RawSignAlg);
  return rawSign({
    header: opts.header ?? { alg, kid: key.kid, cty: FORMAT_CTY[msg.format], itk: msg.routing },
    payload: msg.bytes,
    alg,
    key: opts.key ?? privateKeyOf(key),
    ...(opts.signature ? { signature: opts.signature } : {}),
    ...(opts.payloadSegment !== undefined ? { payloadSegment: opts.payloadSegment } : {}),
  });
}

/** Encrypt any inner content with jose (real RSA-OAEP-256 + A256GCM) to the routed recipient (A83627 if not served). */
function seal(plaintext: string | Uint8Array, routing: ItkRouting, header: Record<string, unknown> = {}) {
  const to = routing.to === 'A8797979' ? 'A8797979' : 'A83627';
  return encryptSigned({ plaintext, routing, recipient: recipientOf(world, to), header });
}

/** The contract JWE header for A83627. */
function jweHeader(routing: ItkRouting, extra: Record<string, unknown> = {}) {
  return {
    alg: 'RSA-OAEP-256',
    enc: 'A256GCM',
    kid: world.recipients.A83627.key.kid,
    cty: 'JOSE',
    itk: routing,
    ...extra,
  };
}

function a83627Public(): KeyObject {
  return publicKeyOf(world.recipients.A83627.key);
}

/** A valid inner JWS of a fresh X26 message. */
async function validInner(ods: SenderOds = 'X26') {
  const msg = buildMessage(ods);
  const jws = await signAs(world, ods, msg);
  return { msg, jws };
}

// ---------------------------------------------------------------------------------------------

describe('controls', () => {
  it('a valid message from each sender is delivered (the baseline every case departs from)', async () => {
    for (const ods of ['GP0001', 'X26', 'FQ123'] as const) {
      const v = await valid(ods);
      await check(`control.${ods}`, `valid ${ods} message`, v, delivered);
    }
  });

  it('a valid message on the direct SQS path is delivered', async () => {
    const v = await valid('X26');
    await check('control.sqs', 'valid X26 message, direct SQS ingestion', { ...v, via: 'sqs' }, delivered);
  });
});

describe('A1 alg none', () => {
  for (const alg of ['none', 'None', 'nOnE'] as const) {
    it(`credential with alg ${alg} and an empty signature`, async () => {
      const { sealed } = await valid();
      const credential = await rawToken('X26', {
        header: { alg, kid: senderOf('X26').issuer.key.kid, typ: 'JWT' },
        alg,
      });
      await check(
        `A1.token.${alg}`,
        `credential alg "${alg}", empty signature`,
        { credential, sealed },
        rejected('authenticate', 'TOKEN_ALG_NOT_ALLOWED'),
      );
    });
  }

  it('inner JWS with alg none and an empty signature', async () => {
    const msg = buildMessage('X26');
    const jws = rawInner('X26', msg, {
      header: { alg: 'none', kid: senderOf('X26').key.kid, cty: 'fhir+xml', itk: msg.routing },
      alg: 'none',
    });
    // The missing signature is refused before the alg is even looked at.
    await check(
      'A1.jws.none',
      'inner JWS alg "none", empty signature',
      { credential: await token('X26'), sealed: await seal(jws, msg.routing) },
      rejected('verify', 'SIGNATURE_MALFORMED'),
    );
  });

  for (const alg of ['None', 'nOnE'] as const) {
    it(`inner JWS with alg ${alg} and a random signature`, async () => {
      const msg = buildMessage('X26');
      const jws = rawInner('X26', msg, {
        header: { alg, kid: senderOf('X26').key.kid, cty: 'fhir+xml', itk: msg.routing },
        alg,
        signature: randomBytes(256),
      });
      await check(
        `A1.jws.${alg}`,
        `inner JWS alg "${alg}", random signature`,
        { credential: await token('X26'), sealed: await seal(jws, msg.routing) },
        rejected('verify', 'SIGNATURE_ALG_NOT_ALLOWED'),
      );
    });
  }
});

describe('A2 algorithm confusion: HS256 keyed with a public key', () => {
  const forms = (key: KeyObject): Record<string, Uint8Array> => ({
    PEM: Buffer.from(key.export({ format: 'pem', type: 'spki' }) as string),
    DER: key.export({ format: 'der', type: 'spki' }),
    JWK: Buffer.from(JSON.stringify(key.export({ format: 'jwk' }))),
  });

  for (const form of ['PEM', 'DER', 'JWK'] as const) {
    it(`credential MACed with the issuer public key as ${form}`, async () => {
      const { sealed } = await valid();
      const issuerKey = senderOf('X26').issuer.key;
      const secret = forms(publicKeyOf(issuerKey))[form]!;
      const credential = await rawToken('X26', {
        header: { alg: 'HS256', kid: issuerKey.kid, typ: 'JWT' },
        alg: 'HS256',
        key: secret,
      });
      await check(
        `A2.token.${form}`,
        `credential HS256 with the issuer public key (${form}) as secret`,
        { credential, sealed },
        rejected('authenticate', 'TOKEN_ALG_NOT_ALLOWED'),
      );
    });

    it(`inner JWS MACed with the sender public key as ${form}`, async () => {
      const msg = buildMessage('X26');
      const secret = forms(publicKeyOf(senderOf('X26').key))[form]!;
      const jws = rawInner('X26', msg, {
        header: { alg: 'HS256', kid: senderOf('X26').key.kid, cty: 'fhir+xml', itk: msg.routing },
        alg: 'HS256',
        key: secret,
      });
      await check(
        `A2.jws.${form}`,
        `inner JWS HS256 with the sender public key (${form}) as secret`,
        { credential: await token('X26'), sealed: await seal(jws, msg.routing) },
        rejected('verify', 'SIGNATURE_ALG_NOT_ALLOWED'),
      );
    });
  }

  it("credential signed with an allowed alg that is not the issuer key's alg (ES256 for a PS256 issuer)", async () => {
    const { sealed } = await valid();
    const attacker = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const credential = await rawToken('X26', {
      header: { alg: 'ES256', kid: senderOf('X26').issuer.key.kid, typ: 'JWT' },
      alg: 'ES256',
      key: attacker.privateKey,
    });
    await check(
      'A2.token.alg-swap',
      'credential ES256 under a PS256 issuer kid',
      { credential, sealed },
      rejected('authenticate', 'TOKEN_ALG_NOT_ALLOWED'),
    );
  });

  it("inner JWS with an allowed alg that is not the sender key's alg (PS256 for an RS512 key)", async () => {
    const msg = buildMessage('X26');
    const jws = rawInner('X26', msg, {
      header: { alg: 'PS256', kid: senderOf('X26').key.kid, cty: 'fhir+xml', itk: msg.routing },
      alg: 'PS256',
    });
    await check(
      'A2.jws.alg-swap',
      'inner JWS PS256 with the RS512 sender key',
      { credential: await token('X26'), sealed: await seal(jws, msg.routing) },
      rejected('verify', 'SIGNATURE_ALG_NOT_ALLOWED'),
    );
  });
});

describe('A3 kid injection', () => {
  const hostileKids: Record<string, string> = {
    traversal: '../../dev/null',
    sql: "' OR '1'='1' --",
    command: '|cat /etc/passwd',
    huge: 'k'.repeat(65),
    'non-ascii': 'ключ-1',
    empty: '',
  };

  for (const [name, kid] of Object.entries(hostileKids)) {
    it(`credential kid: ${name}`, async () => {
      const { sealed } = await valid();
      const credential = await rawToken('X26', { header: { alg: 'PS256', kid, typ: 'JWT' } });
      await check(
        `A3.token.${name}`,
        `credential kid injection (${name})`,
        { credential, sealed },
        rejected('authenticate', 'TOKEN_MALFORMED'),
      );
    });
  }

  it('credential kid of another trusted issuer, signed with that issuer key (key must belong to iss)', async () => {
    const { sealed } = await valid();
    const nhs = world.issuers.nhs.key;
    const credential = await rawToken('X26', {
      header: { alg: 'ES256', kid: nhs.kid, typ: 'JWT' },
      alg: 'ES256',
      key: privateKeyOf(nhs),
    });
    await check(
      'A3.token.other-issuer-kid',
      "credential under another issuer's kid and key",
      { credential, sealed },
      rejected('authenticate', 'TOKEN_KEY_UNKNOWN'),
    );
  });

  it("credential signed with the sender's message-signing key under its kid (key-role confusion)", async () => {
    const { sealed } = await valid();
    const x26 = senderOf('X26').key;
    const credential = await rawToken('X26', {
      header: { alg: 'RS512', kid: x26.kid, typ: 'JWT' },
      alg: 'RS512',
      key: privateKeyOf(x26),
    });
    await check(
      'A3.token.sender-key',
      'credential signed with a message-signing key',
      { credential, sealed },
      rejected('authenticate', 'TOKEN_KEY_UNKNOWN'),
    );
  });

  it('inner JWS kid traversal string', async () => {
    const msg = buildMessage('X26');
    const jws = rawInner('X26', msg, {
      header: { alg: 'RS512', kid: '../../dev/null', cty: 'fhir+xml', itk: msg.routing },
    });
    await check(
      'A3.jws.traversal',
      'inner JWS kid injection (traversal)',
      { credential: await token('X26'), sealed: await seal(jws, msg.routing) },
      rejected('verify', 'SIGNATURE_MALFORMED'),
    );
  });

  it("inner JWS under another sender's kid (FQ123's), signed by X26", async () => {
    const msg = buildMessage('X26');
    const jws = rawInner('X26', msg, {
      header: { alg: 'RS512', kid: senderOf('FQ123').key.kid, cty: 'fhir+xml', itk: msg.routing },
    });
    await check(
      'A3.jws.other-sender-kid',
      "inner JWS under another sender's kid",
      { credential: await token('X26'), sealed: await seal(jws, msg.routing) },
      rejected('verify', 'SIGNATURE_KEY_NOT_SENDERS'),
    );
  });

  it('inner JWS under an issuer kid (a credential key is not a message key)', async () => {
    const msg = buildMessage('X26');
    const fed = senderOf('X26').issuer.key;
    const jws = rawInner('X26', msg, {
      header: { alg: 'PS256', kid: fed.kid, cty: 'fhir+xml', itk: msg.routing },
      alg: 'PS256',
      key: privateKeyOf(fed),
    });
    await check(
      'A3.jws.issuer-kid',
      'inner JWS signed with an issuer key under its kid',
      { credential: await token('X26'), sealed: await seal(jws, msg.routing) },
      rejected('verify', 'SIGNATURE_KEY_UNKNOWN'),
    );
  });

  it('JWE kid traversal string', async () => {
    const { msg, jws } = await validInner();
    const sealed = await seal(jws, msg.routing, { kid: '../../../etc/passwd' });
    await check(
      'A3.jwe.traversal',
      'JWE kid injection (traversal)',
      { credential: await token('X26'), sealed },
      rejected('authorise', 'ENVELOPE_MALFORMED'),
    );
  });

  it("JWE under the other recipient's kid while routed to A83627", async () => {
    const { msg, jws } = await validInner();
    const sealed = await seal(jws, msg.routing, { kid: world.recipients.A8797979.key.kid });
    await check(
      'A3.jwe.other-recipient-kid',
      "JWE kid of another recipient's key",
      { credential: await token('X26'), sealed },
      rejected('authorise', 'ENVELOPE_KEY_UNKNOWN'),
    );
  });

  it('JWE under the response-signing kid (a KMS key of another purpose)', async () => {
    const { msg, jws } = await validInner();
    const sealed = await seal(jws, msg.routing, { kid: world.responseSigningKid });
    await check(
      'A3.jwe.response-kid',
      'JWE kid of the response-signing key',
      { credential: await token('X26'), sealed },
      rejected('authorise', 'ENVELOPE_KEY_UNKNOWN'),
    );
  });
});

describe('A4–A6 key-carrying headers: embedded jwk, jku, x5u, x5c', () => {
  const attacker = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const attackerRsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const headerParams = async (): Promise<Record<string, Record<string, unknown>>> => ({
    jwk: { jwk: await exportJWK(attacker.publicKey) },
    jku: { jku: 'https://attacker.example/jwks.json' },
    x5u: { x5u: 'https://attacker.example/cert.pem' },
    x5c: { x5c: [randomBytes(600).toString('base64')] },
  });
  const ids: Record<string, string> = { jwk: 'A4', jku: 'A5', x5u: 'A5', x5c: 'A6' };

  for (const name of ['jwk', 'jku', 'x5u', 'x5c'] as const) {
    it(`credential with ${name}, signed by the attacker key the header points at`, async () => {
      const { sealed } = await valid();
      const credential = await rawToken('X26', {
        header: {
          alg: 'ES256',
          kid: senderOf('X26').issuer.key.kid,
          typ: 'JWT',
          ...(await headerParams())[name],
        },
        alg: 'ES256',
        key: attacker.privateKey,
      });
      await check(
        `${ids[name]}.token.${name}`,
        `credential with a ${name} header (attacker key)`,
        { credential, sealed },
        rejected('authenticate', 'TOKEN_MALFORMED'),
      );
    });

    it(`inner JWS with ${name}, signed by the attacker key`, async () => {
      const msg = buildMessage('X26');
      const jws = rawInner('X26', msg, {
        header: {
          alg: 'RS512',
          kid: senderOf('X26').key.kid,
          cty: 'fhir+xml',
          itk: msg.routing,
          ...(await headerParams())[name],
        },
        key: attackerRsa.privateKey,
      });
      await check(
        `${ids[name]}.jws.${name}`,
        `inner JWS with a ${name} header (attacker key)`,
        { credential: await token('X26'), sealed: await seal(jws, msg.routing) },
        rejected('verify', 'SIGNATURE_HEADER_NOT_ALLOWED'),
      );
    });

    it(`JWE with ${name}`, async () => {
      const { msg, jws } = await validInner();
      const sealed = await seal(jws, msg.routing, (await headerParams())[name]);
      await check(
        `${ids[name]}.jwe.${name}`,
        `JWE with a ${name} header`,
        { credential: await token('X26'), sealed },
        rejected('authorise', 'ENVELOPE_HEADER_NOT_ALLOWED'),
      );
    });
  }
});

describe('A7 crit and A8 b64:false', () => {
  const crits: Record<string, unknown[]> = { urn: ['urn:x'], exp: ['exp'], empty: [] };
  for (const [name, crit] of Object.entries(crits)) {
    it(`credential with crit ${JSON.stringify(crit)}`, async () => {
      const { sealed } = await valid();
      const credential = await rawToken('X26', {
        header: {
          alg: 'PS256',
          kid: senderOf('X26').issuer.key.kid,
          typ: 'JWT',
          crit,
          ...(name === 'urn' ? { 'urn:x': 1 } : {}),
        },
      });
      await check(
        `A7.token.${name}`,
        `credential with crit ${JSON.stringify(crit)}`,
        { credential, sealed },
        rejected('authenticate', 'TOKEN_MALFORMED'),
      );
    });
  }

  it('inner JWS with crit ["urn:x"]', async () => {
    const msg = buildMessage('X26');
    const jws = rawInner('X26', msg, {
      header: {
        alg: 'RS512',
        kid: senderOf('X26').key.kid,
        cty: 'fhir+xml',
        itk: msg.routing,
        crit: ['urn:x'],
        'urn:x': true,
      },
    });
    await check(
      'A7.jws.crit',
      'inner JWS with crit',
      { credential: await token('X26'), sealed: await seal(jws, msg.routing) },
      rejected('verify', 'SIGNATURE_HEADER_NOT_ALLOWED'),
    );
  });

  it('JWE with crit ["exp"]', async () => {
    const { msg, jws } = await validInner();
    // jose refuses to produce an unknown crit extension, so this one is encrypted by hand.
    const sealed = rawEncrypt({
      header: jweHeader(msg.routing, { crit: ['exp'], exp: 1 }),
      plaintext: jws,
      publicKey: a83627Public(),
    });
    await check(
      'A7.jwe.crit',
      'JWE with crit',
      { credential: await token('X26'), sealed },
      rejected('authorise', 'ENVELOPE_HEADER_NOT_ALLOWED'),
    );
  });

  it('credential with b64:false and crit ["b64"] (jose itself refuses b64 in a JWT)', async () => {
    const { sealed } = await valid();
    const claims = await claimsFor('X26');
    // The unencoded payload of a JWT would be JSON text; its base64url form keeps the alphabet valid.
    const credential = rawSign({
      header: { alg: 'PS256', kid: senderOf('X26').issuer.key.kid, typ: 'JWT', b64: false, crit: ['b64'] },
      payloadSegment: b64u(JSON.stringify(claims)),
      alg: 'PS256',
      key: privateKeyOf(senderOf('X26').issuer.key),
    });
    await check(
      'A8.token.b64',
      'credential b64:false with crit',
      { credential, sealed },
      rejected('authenticate', 'TOKEN_MALFORMED'),
    );
  });

  it('inner JWS b64:false + crit over alphabet-safe content (compactVerify alone would accept it)', async () => {
    const msg = buildMessage('X26');
    // RFC 7797: the signing input is the raw payload; a base64url-alphabet payload survives the guards.
    // (jose's FlattenedSign returns an empty payload for b64:false, so the JWS is signed by hand.)
    const jws = rawInner('X26', msg, {
      header: {
        alg: 'RS512',
        kid: senderOf('X26').key.kid,
        cty: 'fhir+xml',
        itk: msg.routing,
        b64: false,
        crit: ['b64'],
      },
      payloadSegment: b64u(msg.bytes),
    });
    // jose's compactVerify accepts it (SECURITY-CORPUS.md A8): only our header rule refuses it.
    await expect(compactVerify(jws, publicKeyOf(senderOf('X26').key))).resolves.toBeDefined();
    await check(
      'A8.jws.b64-crit',
      'inner JWS b64:false with crit',
      { credential: await token('X26'), sealed: await seal(jws, msg.routing) },
      rejected('verify', 'SIGNATURE_HEADER_NOT_ALLOWED'),
    );
  });

  it('inner JWS b64:false without crit', async () => {
    const msg = buildMessage('X26');
    const jws = rawInner('X26', msg, {
      header: { alg: 'RS512', kid: senderOf('X26').key.kid, cty: 'fhir+xml', itk: msg.routing, b64: false },
    });
    await check(
      'A8.jws.b64-no-crit',
      'inner JWS b64:false without crit',
      { credential: await token('X26'), sealed: await seal(jws, msg.routing) },
      rejected('verify', 'SIGNATURE_HEADER_NOT_ALLOWED'),
    );
  });

  it('inner JWS b64:false over the raw Bundle bytes (not compact-safe)', async () => {
    const msg = buildMessage('X26');
    const jws = rawInner('X26', msg, {
      header: {
        alg: 'RS512',
        kid: senderOf('X26').key.kid,
        cty: 'fhir+xml',
        itk: msg.routing,
        b64: false,
        crit: ['b64'],
      },
      payloadSegment: Buffer.from(msg.bytes).toString('latin1'),
    });
    await check(
      'A8.jws.b64-raw',
      'inner JWS b64:false over raw XML',
      { credential: await token('X26'), sealed: await seal(jws, msg.routing) },
      rejected('verify', 'SIGNATURE_MALFORMED'),
    );
  });
});

describe('A9 duplicate JSON members and prototype keys', () => {
  it('credential header with alg twice (PS256 then none)', async () => {
    const { sealed } = await valid();
    const kid = senderOf('X26').issuer.key.kid;
    const credential = await rawToken('X26', {
      header: `{"alg":"PS256","kid":"${kid}","typ":"JWT","alg":"none"}`,
      alg: 'PS256',
    });
    await check(
      'A9.token.header-alg',
      'credential header with a duplicate alg',
      { credential, sealed },
      rejected('authenticate', 'TOKEN_MALFORMED'),
    );
  });

  it('credential claims with sub twice, the second escaped (\\u0073ub)', async () => {
    const { sealed } = await valid();
    const claims = await claimsFor('X26');
    const text = JSON.stringify(claims).replace(/}$/, ',"\\u0073ub":"rogue-client"}');
    const credential = await rawToken('X26', { claims: text });
    await check(
      'A9.token.claims-sub',
      'credential claims with a duplicate (escaped) sub',
      { credential, sealed },
      rejected('authenticate', 'TOKEN_MALFORMED'),
    );
  });

  it('credential whose organisation claim is only reachable through __proto__', async () => {
    const { sealed } = await valid();
    const claims = await claimsFor('X26');
    // JSON.parse makes "__proto__" an own member; the claim reader must not walk into it.
    const text = JSON.stringify({ ...claims, organisation: 'PLACEHOLDER' }).replace(
      '"PLACEHOLDER"',
      '{"__proto__":{"ods_code":"X26"}}',
    );
    const credential = await rawToken('X26', { claims: text });
    await check(
      'A9.token.proto',
      'credential organisation via __proto__',
      { credential, sealed },
      rejected('authenticate', 'TOKEN_ORGANISATION_MISSING'),
    );
  });

  it('JWE header with itk twice (authorise and verify must not read different values)', async () => {
    const { msg, jws } = await validInner();
    const other = { ...msg.routing, to: 'A8797979' };
    const text = JSON.stringify(jweHeader(msg.routing)).replace(/}$/, `,"itk":${JSON.stringify(other)}}`);
    const sealed = rawEncrypt({ header: text, plaintext: jws, publicKey: a83627Public() });
    await check(
      'A9.jwe.itk',
      'JWE header with a duplicate itk',
      { credential: await token('X26'), sealed },
      rejected('authorise', 'ENVELOPE_MALFORMED'),
    );
  });

  it('inner JWS header with kid twice, the second escaped', async () => {
    const msg = buildMessage('X26');
    const header = JSON.stringify({
      alg: 'RS512',
      kid: senderOf('X26').key.kid,
      cty: 'fhir+xml',
      itk: msg.routing,
    }).replace(/}$/, `,"\\u006bid":"${senderOf('FQ123').key.kid}"}`);
    const jws = rawInner('X26', msg, { header });
    await check(
      'A9.jws.kid',
      'inner JWS header with a duplicate (escaped) kid',
      { credential: await token('X26'), sealed: await seal(jws, msg.routing) },
      rejected('verify', 'SIGNATURE_MALFORMED'),
    );
  });
});

describe('A10 base64url malleability and A16 replay by re-encoded token', () => {
  /** Set one spare low bit of the last character (the decoded bytes are unchanged). */
  const flipPadBits = (segment: string): string => {
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const last = alphabet.indexOf(segment.at(-1) ?? 'A');
    const flipped = alphabet[last ^ 0x01] ?? 'A';
    return `${segment.slice(0, -1)}${flipped}`;
  };

  /** Deliver a message with `credential`, so the credential is used. */
  async function useCredential(credential: string) {
    const v = await valid('GP0001');
    const r = await h.run({ credential, sealed: v.sealed });
    expect(r.outcome.status).toBe('delivered');
  }

  it('setup: the GP0001 signature segment has spare bits (86 chars for 64 bytes)', async () => {
    const t = await token('GP0001');
    expect(t.split('.')[2]).toHaveLength(86);
    expect(fromB64u(flipPadBits(t.split('.')[2] ?? '')).equals(fromB64u(t.split('.')[2] ?? ''))).toBe(true);
  });

  it('a used credential with flipped pad bits in the signature (same bytes to jose)', async () => {
    const t = await token('GP0001');
    await useCredential(t);
    const malleated = replaceSegment(t, 2, flipPadBits(t.split('.')[2] ?? ''));
    const v = await valid('GP0001');
    await check(
      'A10.token.pad-bits',
      'used credential, pad bits flipped (HTTP)',
      { credential: malleated, sealed: v.sealed },
      rejected('authenticate', 'TOKEN_MALFORMED'),
    );
  });

  it('a used credential with flipped pad bits in the header segment', async () => {
    // Only a header whose encoding is not a multiple of 4 characters has spare bits: pad it to one.
    const nhs = world.issuers.nhs.key;
    let t = '';
    for (let pad = 1; pad < 4; pad += 1) {
      t = await rawToken('GP0001', {
        header: { alg: 'ES256', kid: nhs.kid, typ: 'JWT', x: 'y'.repeat(pad) },
      });
      if ((t.split('.')[0] ?? '').length % 4 !== 0) break;
    }
    await useCredential(t);
    const malleated = replaceSegment(t, 0, flipPadBits(t.split('.')[0] ?? ''));
    const v = await valid('GP0001');
    await check(
      'A10.token.header-pad-bits',
      'used credential, header pad bits flipped',
      { credential: malleated, sealed: v.sealed },
      rejected('authenticate', 'TOKEN_MALFORMED'),
    );
  });

  it('a used credential with "=" padding appended: refused at the HTTP door and by the stage (SQS)', async () => {
    const t = await token('GP0001');
    await useCredential(t);
    const v = await valid('GP0001');
    await check(
      'A10.token.padding.http',
      'used credential with "=" padding (HTTP)',
      { credential: `${t}==`, sealed: v.sealed },
      atIngest('TOKEN_MISSING', 401),
    );
    await check(
      'A10.token.padding.sqs',
      'used credential with "=" padding (direct SQS)',
      { credential: `${t}==`, sealed: v.sealed, via: 'sqs' },
      rejected('authenticate', 'TOKEN_MALFORMED'),
    );
  });

  it('a used credential with whitespace inserted: refused at both doors', async () => {
    const t = await token('GP0001');
    await useCredential(t);
    const v = await valid('GP0001');
    const spaced = `${t.slice(0, 20)} ${t.slice(20)}`;
    await check(
      'A10.token.whitespace.http',
      'used credential with whitespace (HTTP)',
      { credential: spaced, sealed: v.sealed },
      atIngest('TOKEN_MISSING', 401),
    );
    await check(
      'A10.token.whitespace.sqs',
      'used credential with whitespace (direct SQS)',
      { credential: spaced, sealed: v.sealed, via: 'sqs' },
      rejected('authenticate', 'TOKEN_MISSING'),
    );
  });

  it('a used credential in standard base64 (+ and /) on the SQS path', async () => {
    const t = await token('GP0001');
    await useCredential(t);
    const v = await valid('GP0001');
    // Re-encode the signature with the standard alphabet; force a + or / to appear if none does.
    const sig = t.split('.')[2] ?? '';
    const std =
      sig.includes('-') || sig.includes('_')
        ? sig.replace(/-/g, '+').replace(/_/g, '/')
        : `${sig.slice(0, -1)}+`;
    await check(
      'A10.token.std-alphabet',
      'used credential in standard base64 (direct SQS)',
      { credential: replaceSegment(t, 2, std), sealed: v.sealed, via: 'sqs' },
      rejected('authenticate', 'TOKEN_MALFORMED'),
    );
  });

  it('A11: a used ES256 credential re-signed as (r, n − s) is a replay, keyed on (iss, jti)', async () => {
    const t = await token('GP0001');
    const malleated = replaceSegment(t, 2, malleateEs256(t.split('.')[2] ?? ''));
    expect(malleated).not.toBe(t);
    // jose accepts the malleated signature: the replay check is what stops it.
    const nhs = world.issuers.nhs.key;
    await expect(compactVerify(malleated, publicKeyOf(nhs))).resolves.toBeDefined();
    await useCredential(t);
    const v = await valid('GP0001');
    await check(
      'A11.token.high-s-replay',
      'used ES256 credential malleated to (r, n−s)',
      { credential: malleated, sealed: v.sealed },
      rejected('authenticate', 'TOKEN_REPLAYED'),
    );
  });

  it('A11: the malleated credential used first makes the original a replay', async () => {
    const t = await token('GP0001');
    const malleated = replaceSegment(t, 2, malleateEs256(t.split('.')[2] ?? ''));
    await useCredential(malleated);
    const v = await valid('GP0001');
    await check(
      'A11.token.original-after-high-s',
      'original ES256 credential after its (r, n−s) twin',
      { credential: t, sealed: v.sealed },
      rejected('authenticate', 'TOKEN_REPLAYED'),
    );
  });

  it('A11: a delivered message whose inner ES256 JWS is malleated and re-sealed is a duplicate message', async () => {
    const msg = buildMessage('GP0001');
    const jws = await signAs(world, 'GP0001', msg);
    const first = await h.run({ credential: await token('GP0001'), sealed: await seal(jws, msg.routing) });
    expect(first.outcome.status).toBe('delivered');
    const malleated = replaceSegment(jws, 2, malleateEs256(jws.split('.')[2] ?? ''));
    await check(
      'A11.jws.high-s-replay',
      'inner ES256 JWS malleated to (r, n−s), re-sealed',
      { credential: await token('GP0001'), sealed: await seal(malleated, msg.routing) },
      rejected('verify', 'DUPLICATE_MESSAGE'),
    );
  });

  it('A11: ES256 credential signature in DER instead of r‖s', async () => {
    const { sealed } = await valid('GP0001');
    const credential = await rawToken('GP0001', {
      alg: 'ES256-DER',
      header: { alg: 'ES256', kid: world.issuers.nhs.key.kid, typ: 'JWT' },
    });
    await check(
      'A11.token.der',
      'ES256 credential with a DER signature',
      { credential, sealed },
      rejected('authenticate', 'TOKEN_SIGNATURE_INVALID'),
    );
  });

  it('A11: ES256 credential with r = s = n', async () => {
    const { sealed } = await valid('GP0001');
    const n = Buffer.from(P256_N.toString(16).padStart(64, '0'), 'hex');
    const credential = await rawToken('GP0001', { signature: Buffer.concat([n, n]) });
    await check(
      'A11.token.r-s-n',
      'ES256 credential with r = s = n',
      { credential, sealed },
      rejected('authenticate', 'TOKEN_SIGNATURE_INVALID'),
    );
  });

  it('A10: JWE ciphertext segment with flipped pad bits', async () => {
    const v = await valid();
    const parts = v.sealed.split('.');
    // Find a segment with spare bits; the tag (16 bytes → 22 chars) always has them.
    const sealed = replaceSegment(v.sealed, 4, flipPadBits(parts[4] ?? ''));
    await check(
      'A10.jwe.pad-bits',
      'JWE tag segment with pad bits flipped',
      { credential: v.credential, sealed },
      rejected('authorise', 'ENVELOPE_MALFORMED'),
    );
  });
});

describe('A12 psychic signatures', () => {
  it('ES256 credential whose signature is 64 zero bytes', async () => {
    const { sealed } = await valid('GP0001');
    const credential = await rawToken('GP0001', { signature: new Uint8Array(64) });
    await check(
      'A12.token.zeros',
      'ES256 credential with r = s = 0',
      { credential, sealed },
      rejected('authenticate', 'TOKEN_SIGNATURE_INVALID'),
    );
  });

  it('ES256 inner JWS whose signature is 64 zero bytes', async () => {
    const msg = buildMessage('GP0001');
    const jws = rawInner('GP0001', msg, { signature: new Uint8Array(64) });
    await check(
      'A12.jws.zeros',
      'ES256 inner JWS with r = s = 0',
      { credential: await token('GP0001'), sealed: await seal(jws, msg.routing) },
      rejected('verify', 'SIGNATURE_INVALID'),
    );
  });
});

describe('A13 oversized and deeply nested headers', () => {
  it('credential of 1 MiB (a 1 MiB claim in a validly signed token)', async () => {
    const { sealed } = await valid();
    const credential = await rawToken('X26', {
      claims: await claimsFor('X26', { pad: 'x'.repeat(1024 * 1024) }),
    });
    await check(
      'A13.token.1mib.http',
      '1 MiB credential (HTTP)',
      { credential, sealed },
      atIngest('TOKEN_TOO_LARGE', 401),
    );
    await check(
      'A13.token.1mib.sqs',
      '1 MiB credential (direct SQS)',
      { credential, sealed, via: 'sqs' },
      rejected('authenticate', 'TOKEN_TOO_LARGE'),
    );
  });

  it('credential header over 4 KiB inside an 8 KiB token', async () => {
    const { sealed } = await valid();
    const credential = await rawToken('X26', {
      header: { alg: 'PS256', kid: senderOf('X26').issuer.key.kid, typ: 'JWT', x: 'y'.repeat(4200) },
    });
    expect(credential.length).toBeLessThan(8192);
    await check(
      'A13.token.big-header',
      'credential header over 4 KiB',
      { credential, sealed },
      rejected('authenticate', 'TOKEN_MALFORMED'),
    );
  });

  it('credential header nested 17 deep, and claims nested 1000 deep', async () => {
    const { sealed } = await valid();
    const kid = senderOf('X26').issuer.key.kid;
    const deep = `{"alg":"PS256","kid":"${kid}","typ":"JWT","x":${'['.repeat(17)}${']'.repeat(17)}}`;
    await check(
      'A13.token.deep-header',
      'credential header nested 17 deep',
      { credential: await rawToken('X26', { header: deep }), sealed },
      rejected('authenticate', 'TOKEN_MALFORMED'),
    );
    const claims = JSON.stringify(await claimsFor('X26')).replace(
      /}$/,
      `,"x":${'['.repeat(1000)}${']'.repeat(1000)}}`,
    );
    const v = await valid();
    await check(
      'A13.token.deep-claims',
      'credential claims nested 1000 deep',
      { credential: await rawToken('X26', { claims }), sealed: v.sealed },
      rejected('authenticate', 'TOKEN_MALFORMED'),
    );
  });

  it('JWE header of 10^6 nested brackets (~1.3 MB), refused before decoding', async () => {
    const { msg, jws } = await validInner();
    const text = JSON.stringify(jweHeader(msg.routing)).replace(
      /}$/,
      `,"x":${'['.repeat(1_000_000)}${']'.repeat(1_000_000)}}`,
    );
    const sealed = rawEncrypt({ header: text, plaintext: jws, publicKey: a83627Public() });
    await check(
      'A13.jwe.deep-1e6',
      'JWE header nested 10^6 deep',
      { credential: await token('X26'), sealed },
      rejected('authorise', 'ENVELOPE_MALFORMED'),
    );
  });

  it('JWE header nested 20 deep within the size cap', async () => {
    const { msg, jws } = await validInner();
    const text = JSON.stringify(jweHeader(msg.routing)).replace(
      /}$/,
      `,"x":${'['.repeat(20)}${']'.repeat(20)}}`,
    );
    const sealed = rawEncrypt({ header: text, plaintext: jws, publicKey: a83627Public() });
    await check(
      'A13.jwe.deep-20',
      'JWE header nested 20 deep',
      { credential: await token('X26'), sealed },
      rejected('authorise', 'ENVELOPE_MALFORMED'),
    );
  });

  it('sealed message over 9 MiB: 413 at the HTTP door, 20015 at authorise on SQS', async () => {
    const { msg, jws } = await validInner();
    const sealed = rawEncrypt({
      header: jweHeader(msg.routing),
      plaintext: `${jws}${'A'.repeat(7 * 1024 * 1024)}`,
      publicKey: a83627Public(),
    });
    expect(sealed.length).toBeGreaterThan(9 * 1024 * 1024);
    const credential = await token('X26');
    await check(
      'A13.jwe.9mib.http',
      'sealed message over 9 MiB (HTTP)',
      { credential, sealed },
      atIngest('MESSAGE_TOO_LARGE', 413),
    );
    await check(
      'A13.jwe.9mib.sqs',
      'sealed message over 9 MiB (direct SQS)',
      { credential, sealed, via: 'sqs' },
      rejected('authorise', 'MESSAGE_TOO_LARGE'),
    );
  });

  it('inner JWS header nested 17 deep', async () => {
    const msg = buildMessage('X26');
    const header = JSON.stringify({
      alg: 'RS512',
      kid: senderOf('X26').key.kid,
      cty: 'fhir+xml',
      itk: msg.routing,
    }).replace(/}$/, `,"x":${'['.repeat(17)}${']'.repeat(17)}}`);
    const jws = rawInner('X26', msg, { header });
    await check(
      'A13.jws.deep',
      'inner JWS header nested 17 deep',
      { credential: await token('X26'), sealed: await seal(jws, msg.routing) },
      rejected('verify', 'SIGNATURE_MALFORMED'),
    );
  });
});

describe('A14 time claims, judged at receipt time', () => {
  /** A credential whose times are set relative to receipt time `r` (whole seconds). */
  async function timed(claims: { iat?: number; exp?: number; nbf?: number }) {
    const base = await claimsFor('X26');
    return rawToken('X26', { claims: { ...base, ...claims } });
  }
  /** Receipt time on a whole second, so edges are exact. */
  function receipt(): number {
    h.clock.advanceTo(Math.ceil(h.now() / 1000) * 1000);
    return h.now() / 1000;
  }
  const skew = 30;

  it('exactly at exp: accepted (within skew)', async () => {
    const r = receipt();
    const v = await valid();
    await check(
      'A14.exp.at',
      'receipt exactly at exp',
      { credential: await timed({ iat: r - 300, exp: r }), sealed: v.sealed },
      delivered,
    );
  });

  it('at exp + skew − 1 s: accepted', async () => {
    const r = receipt();
    const v = await valid();
    const exp = r - (skew - 1);
    await check(
      'A14.exp.skew-1',
      'receipt at exp + skew − 1 s',
      { credential: await timed({ iat: exp - 300, exp }), sealed: v.sealed },
      delivered,
    );
  });

  it('at exp + skew: rejected', async () => {
    const r = receipt();
    const v = await valid();
    const exp = r - skew;
    await check(
      'A14.exp.skew',
      'receipt at exp + skew',
      { credential: await timed({ iat: exp - 300, exp }), sealed: v.sealed },
      rejected('authenticate', 'TOKEN_EXPIRED'),
    );
  });

  it('at exp + skew + 1 s: rejected', async () => {
    const r = receipt();
    const v = await valid();
    const exp = r - (skew + 1);
    await check(
      'A14.exp.skew+1',
      'receipt at exp + skew + 1 s',
      { credential: await timed({ iat: exp - 300, exp }), sealed: v.sealed },
      rejected('authenticate', 'TOKEN_EXPIRED'),
    );
  });

  it('nbf in the future within skew: accepted; beyond skew: rejected', async () => {
    let r = receipt();
    let v = await valid();
    await check(
      'A14.nbf.skew-1',
      'nbf = receipt + skew − 1 s',
      { credential: await timed({ iat: r, exp: r + 300, nbf: r + skew - 1 }), sealed: v.sealed },
      delivered,
    );
    r = receipt();
    v = await valid();
    await check(
      'A14.nbf.skew+1',
      'nbf = receipt + skew + 1 s',
      { credential: await timed({ iat: r, exp: r + 300, nbf: r + skew + 1 }), sealed: v.sealed },
      rejected('authenticate', 'TOKEN_NOT_YET_VALID'),
    );
  });

  it('iat in the future within skew: accepted; beyond skew: rejected; a year ahead: rejected', async () => {
    let r = receipt();
    let v = await valid();
    await check(
      'A14.iat.skew-1',
      'iat = receipt + skew − 1 s',
      { credential: await timed({ iat: r + skew - 1, exp: r + skew - 1 + 300 }), sealed: v.sealed },
      delivered,
    );
    r = receipt();
    v = await valid();
    await check(
      'A14.iat.skew+1',
      'iat = receipt + skew + 1 s',
      { credential: await timed({ iat: r + skew + 1, exp: r + skew + 1 + 300 }), sealed: v.sealed },
      rejected('authenticate', 'TOKEN_NOT_YET_VALID'),
    );
    r = receipt();
    v = await valid();
    const year = 365 * 86400;
    await check(
      'A14.iat.year',
      'iat a year ahead',
      { credential: await timed({ iat: r + year, exp: r + year + 300 }), sealed: v.sealed },
      rejected('authenticate', 'TOKEN_NOT_YET_VALID'),
    );
  });

  it('lifetime 300 s: accepted; 301 s: rejected; exp 100 years ahead: rejected', async () => {
    let r = receipt();
    let v = await valid();
    await check(
      'A14.lifetime.300',
      'exp − iat = 300 s',
      { credential: await timed({ iat: r, exp: r + 300 }), sealed: v.sealed },
      delivered,
    );
    r = receipt();
    v = await valid();
    await check(
      'A14.lifetime.301',
      'exp − iat = 301 s',
      { credential: await timed({ iat: r, exp: r + 301 }), sealed: v.sealed },
      rejected('authenticate', 'TOKEN_LIFETIME_TOO_LONG'),
    );
    r = receipt();
    v = await valid();
    await check(
      'A14.lifetime.100y',
      'exp 100 years ahead',
      { credential: await timed({ iat: r, exp: r + 100 * 365 * 86400 }), sealed: v.sealed },
      rejected('authenticate', 'TOKEN_LIFETIME_TOO_LONG'),
    );
  });

  it('missing exp, and exp as a string', async () => {
    const r = receipt();
    const v = await valid();
    await check(
      'A14.exp.missing',
      'credential without exp',
      { credential: await timed({ iat: r, exp: undefined }), sealed: v.sealed },
      rejected('authenticate', 'TOKEN_CLAIM_INVALID'),
    );
    const v2 = await valid();
    const base = await claimsFor('X26');
    const credential = await rawToken('X26', { claims: { ...base, iat: r, exp: String(r + 300) } });
    await check(
      'A14.exp.string',
      'credential with exp as a string',
      { credential, sealed: v2.sealed },
      rejected('authenticate', 'TOKEN_CLAIM_INVALID'),
    );
  });

  it('a credential valid at receipt is accepted even when processing happens an hour later', async () => {
    const r = receipt();
    const v = await valid();
    await check(
      'A14.receipt.late-processing',
      'valid at receipt, processed 1 h later',
      {
        credential: await timed({ iat: r, exp: r + 300 }),
        sealed: v.sealed,
        beforeDrain: () => h.clock.advanceBy(3_600_000),
      },
      delivered,
    );
  });

  it('a credential not yet valid at receipt stays rejected when processing happens after nbf', async () => {
    const r = receipt();
    const v = await valid();
    await check(
      'A14.receipt.nbf-after',
      'nbf after receipt, processed after nbf',
      {
        credential: await timed({ iat: r, exp: r + 300, nbf: r + 120 }),
        sealed: v.sealed,
        beforeDrain: () => h.clock.advanceBy(180_000),
      },
      rejected('authenticate', 'TOKEN_NOT_YET_VALID'),
    );
  });
});

describe('A15 aud / iss / typ confusion', () => {
  it('a credential for another audience, signed by a trusted issuer key', async () => {
    const { sealed } = await valid();
    const credential = await token('X26', {
      claims: { aud: 'https://other-gateway.example.nhs.uk/messages' },
    });
    await check(
      'A15.aud.other',
      'credential for another audience',
      { credential, sealed },
      rejected('authenticate', 'TOKEN_CLAIM_INVALID'),
    );
  });

  it('a credential for this and another audience', async () => {
    const { sealed } = await valid();
    const credential = await token('X26', {
      claims: { aud: [world.config.doc.audience, 'https://other.example'] },
    });
    await check(
      'A15.aud.both',
      'credential for this and another audience',
      { credential, sealed },
      rejected('authenticate', 'TOKEN_CLAIM_INVALID'),
    );
  });

  it('a credential naming the other trusted issuer, signed by the first (issuer confusion)', async () => {
    const { sealed } = await valid();
    const credential = await token('X26', { claims: { iss: world.issuers.nhs.iss } });
    await check(
      'A15.iss.other',
      "credential claiming the other issuer's iss",
      { credential, sealed },
      rejected('authenticate', 'TOKEN_KEY_UNKNOWN'),
    );
  });

  it('a credential from an unknown issuer', async () => {
    const { sealed } = await valid();
    const credential = await token('X26', { claims: { iss: 'https://evil-idp.example' } });
    await check(
      'A15.iss.unknown',
      'credential from an unknown issuer',
      { credential, sealed },
      rejected('authenticate', 'TOKEN_ISSUER_UNKNOWN'),
    );
  });

  for (const typ of ['at+jwt', 'jwt', 'application/JWT'] as const) {
    it(`a credential with typ ${typ}`, async () => {
      const { sealed } = await valid();
      const credential = await rawToken('X26', {
        header: { alg: 'PS256', kid: senderOf('X26').issuer.key.kid, typ },
      });
      await check(
        `A15.typ.${typ}`,
        `credential typ "${typ}"`,
        { credential, sealed },
        rejected('authenticate', 'TOKEN_CLAIM_INVALID'),
      );
    });
  }

  it("the gateway's own signed ITK3 response presented as a credential (token-kind confusion)", async () => {
    const v = await valid();
    const first = await h.run(v);
    const response = first.responseFiles[0];
    expect(response).toBeDefined();
    const { readFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    const jws = readFileSync(join(h.baseDir, 'responses', response ?? ''), 'utf8').trim();
    const v2 = await valid();
    await check(
      'A15.kind.response-as-token',
      'gateway response JWS as a credential',
      { credential: jws, sealed: v2.sealed },
      rejected('authenticate', 'TOKEN_CLAIM_INVALID'),
    );
  });
});

describe('A16 replay', () => {
  it('a used credential with another message', async () => {
    const credential = await token('X26');
    const v1 = await valid();
    expect((await h.run({ credential, sealed: v1.sealed })).outcome.status).toBe('delivered');
    const v2 = await valid();
    await check(
      'A16.token.replay',
      'used credential with another message',
      { credential, sealed: v2.sealed },
      rejected('authenticate', 'TOKEN_REPLAYED'),
    );
  });

  it('a delivered sealed message replayed with a fresh credential', async () => {
    const v = await valid();
    expect((await h.run(v)).outcome.status).toBe('delivered');
    await check(
      'A16.message.replay',
      'delivered sealed message, fresh credential',
      { credential: await token('X26'), sealed: v.sealed },
      rejected('verify', 'DUPLICATE_MESSAGE'),
    );
  });

  it('a delivered message re-sealed (new JWE, same signed Bundle)', async () => {
    const { msg, jws } = await validInner();
    expect(
      (await h.run({ credential: await token('X26'), sealed: await seal(jws, msg.routing) })).outcome.status,
    ).toBe('delivered');
    await check(
      'A16.message.resealed',
      'delivered message re-encrypted',
      { credential: await token('X26'), sealed: await seal(jws, msg.routing) },
      rejected('verify', 'DUPLICATE_MESSAGE'),
    );
  });

  it('a new message carrying a delivered document id', async () => {
    const first = buildMessage('X26');
    expect(
      (await h.run({ credential: await token('X26'), sealed: await sealAs(world, 'X26', first) })).outcome
        .status,
    ).toBe('delivered');
    const second = buildMessage('X26', { documentId: first.documentId });
    await check(
      'A16.document.replay',
      'new message, delivered document id',
      { credential: await token('X26'), sealed: await sealAs(world, 'X26', second) },
      rejected('verify', 'DUPLICATE_DOCUMENT'),
    );
  });
});

describe('A17 surreptitious forwarding and cross-recipient token substitution', () => {
  it('a message signed for another recipient, re-encrypted to us under our routing', async () => {
    // X26 signed it for B99999 (served elsewhere); B forwards it to A83627 with a JWE saying A83627.
    const msg = buildMessage('X26', { to: 'B99999', receiverOds: 'B99999' });
    const jws = await signAs(world, 'X26', msg);
    const sealed = await seal(jws, { ...msg.routing, to: 'A83627' });
    await check(
      'A17.forward.other-recipient',
      'signed for B99999, re-encrypted to A83627',
      { credential: await token('X26'), sealed },
      rejected('verify', 'BINDING_MISMATCH'),
    );
  });

  it('a message signed for A8797979, re-encrypted to A83627', async () => {
    const msg = buildMessage('X26', { to: 'A8797979', receiverOds: 'A8797979' });
    const jws = await signAs(world, 'X26', msg);
    const sealed = await seal(jws, { ...msg.routing, to: 'A83627' });
    await check(
      'A17.forward.served-recipient',
      'signed for A8797979, re-encrypted to A83627',
      { credential: await token('X26'), sealed },
      rejected('verify', 'BINDING_MISMATCH'),
    );
  });

  it('forwarded with the original routing: the JWE routing names a recipient not served here', async () => {
    const msg = buildMessage('X26', { to: 'B99999', receiverOds: 'B99999' });
    const jws = await signAs(world, 'X26', msg);
    await check(
      'A17.forward.original-routing',
      'signed for B99999, JWE routing unchanged',
      { credential: await token('X26'), sealed: await seal(jws, msg.routing) },
      rejected('authorise', 'RECIPIENT_UNKNOWN'),
    );
  });

  it("X26's credential with a message signed by FQ123 (token substitution)", async () => {
    const msg = buildMessage('X26');
    const jws = await signAs(world, 'FQ123', msg);
    await check(
      'A17.substitution.signer',
      'X26 credential, FQ123-signed message routed as X26',
      { credential: await token('X26'), sealed: await seal(jws, msg.routing) },
      rejected('verify', 'SIGNATURE_KEY_NOT_SENDERS'),
    );
  });

  it('a credential captured from X26 → A83627 reused for X26 → another recipient', async () => {
    const credential = await token('X26');
    const v1 = await valid('X26');
    expect((await h.run({ credential, sealed: v1.sealed })).outcome.status).toBe('delivered');
    const msg = buildMessage('X26', { to: 'A8797979', receiverOds: 'A8797979' });
    await check(
      'A17.substitution.replayed',
      'captured credential reused for another recipient',
      { credential, sealed: await sealAs(world, 'X26', msg) },
      rejected('authenticate', 'TOKEN_REPLAYED'),
    );
  });

  it('FQ123 credential presenting a message routed as from X26', async () => {
    const v = await valid('X26');
    await check(
      'A17.substitution.org',
      'FQ123 credential, X26 routing',
      { credential: await token('FQ123'), sealed: v.sealed },
      rejected('authorise', 'ROUTING_SENDER_MISMATCH'),
    );
  });

  it('a credential whose subject is not a client of the organisation', async () => {
    const v = await valid('X26');
    await check(
      'A17.substitution.client',
      'credential subject not a registered client',
      { credential: await token('X26', { claims: { sub: 'fq123-pharmacy-pms' } }), sealed: v.sealed },
      rejected('authenticate', 'TOKEN_CLIENT_NOT_REGISTERED'),
    );
  });

  it('a trusted issuer vouching for an organisation in its scope that is not registered', async () => {
    const msg = buildMessage('X26');
    // F* is the federation's scope; FZ99 is not a sender here.
    const routing = { ...msg.routing, from: 'FZ99' };
    const jws = await signBundle({
      bundle: msg.bytes,
      format: msg.format,
      routing,
      signer: signerOf(world, 'X26'),
    });
    const credential = await token('X26', { claims: { organisation: { ods_code: 'FZ99' } } });
    await check(
      'A17.substitution.unknown-org',
      'credential for an unregistered organisation',
      { credential, sealed: await seal(jws, routing) },
      rejected('authorise', 'SENDER_UNKNOWN'),
    );
  });
});

describe('federation scope: an issuer speaks only for its organisations, through its own clients', () => {
  it("the pharmacy federation mints a credential for a GP practice around the practice's own sealed message", async () => {
    // The attacker holds GP0001's genuine sealed message (captured, or its id learnt) and presents
    // it with a credential its own trusted issuer minted for GP0001, naming GP0001's real client.
    const genuine = await valid('GP0001');
    const federation = { ...world.senders.GP0001, issuer: world.issuers.federation };
    const r = await check(
      'federation.issuer-out-of-scope',
      'federation issuer credential for GP0001 (outside its scope) with GP0001’s sealed message',
      { credential: await tokenFor(world, federation, h.now()), sealed: genuine.sealed },
      rejected('authenticate', 'TOKEN_ORGANISATION_OUT_OF_SCOPE'),
    );
    // Unauthenticated (issue 9 class 4): no response is signed or stored at all, so nothing lands
    // in GP0001's response target and no id is quoted anywhere.
    expect(r.responseFiles).toEqual([]);
    expect(JSON.stringify(await h.pipeline.audit.byTrace(r.outcome.traceId))).not.toContain(
      genuine.msg.messageId,
    );
    // The practice's message is not burnt: sent by the practice itself, it is delivered.
    await check(
      'federation.issuer-out-of-scope.genuine',
      'the same sealed message with GP0001’s own credential (control)',
      { credential: genuine.credential, sealed: genuine.sealed },
      delivered,
    );
  });

  it('the same attack by hand-built claims at a prefix boundary: F* does not cover GP0001 or X260', async () => {
    const v = await valid('X26');
    for (const ods of ['GP0001', 'X260']) {
      await check(
        `federation.scope-boundary.${ods}`,
        `federation credential for ${ods}`,
        {
          credential: await token('X26', { claims: { organisation: { ods_code: ods } } }),
          sealed: v.sealed,
        },
        rejected('authenticate', 'TOKEN_ORGANISATION_OUT_OF_SCOPE'),
      );
    }
  });

  describe('with the NHS issuer also trusted for X26 (an overlap the operator chose)', () => {
    let overlap: Harness;
    const nhsFor = (extra: Parameters<typeof tokenFor>[3] = {}) =>
      tokenFor(world, { ...world.senders.X26, issuer: world.issuers.nhs }, overlap.now(), extra);

    beforeAll(() => {
      const doc = structuredClone(world.configDoc);
      doc.issuers.find((i) => i.id === 'nhs-identity')!.organisations = ['GP0001', 'X26'];
      overlap = new Harness(world, makeTempDir('itk3-attacks-overlap-'), {
        config: configWith(world, { issuers: doc.issuers }),
      });
    });

    it("X26's client id minted by the NHS issuer is not X26's client: refused at authenticate", async () => {
      const msg = buildMessage('X26');
      const r = await check(
        'federation.client-of-other-issuer',
        'NHS-issuer credential carrying X26’s federation client id',
        { credential: await nhsFor(), sealed: await sealAs(world, 'X26', msg) },
        rejected('authenticate', 'TOKEN_CLIENT_NOT_REGISTERED'),
        overlap,
      );
      expect(r.responseFiles).toEqual([]);
    });

    it('an actor vouched for by an issuer the grant does not name gets nothing from it', async () => {
      // Register X26's system under the NHS issuer too, so the credential itself is good.
      const doc = structuredClone(world.configDoc);
      doc.issuers.find((i) => i.id === 'nhs-identity')!.organisations = ['GP0001', 'X26'];
      doc.senders
        .find((s) => s.ods === 'X26')!
        .clients.push({ issuer: 'nhs-identity', sub: world.senders.X26.client });
      const both = new Harness(world, makeTempDir('itk3-attacks-grant-'), {
        config: configWith(world, { issuers: doc.issuers, senders: doc.senders }),
      });
      const nhs = (extra: Parameters<typeof tokenFor>[3] = {}) =>
        tokenFor(world, { ...world.senders.X26, issuer: world.issuers.nhs }, both.now(), extra);
      const control = buildMessage('X26');
      await check(
        'federation.grant-other-issuer.control',
        'NHS-issuer credential for X26, no actor (control)',
        { credential: await nhs(), sealed: await sealAs(world, 'X26', control) },
        delivered,
        both,
      );
      // hub7-for-x26 names the pharmacy federation only.
      const msg = buildMessage('X26');
      await check(
        'federation.grant-other-issuer',
        'the granted hub’s name in an act claim from an issuer the grant does not name',
        { credential: await nhs({ actors: [world.hubs.granted] }), sealed: await sealAs(world, 'X26', msg) },
        rejected('authorise', 'DELEGATION_NOT_GRANTED'),
        both,
      );
    });
  });

  it('an act claim naming another issuer for the actor is refused at authenticate', async () => {
    const v = await valid('X26');
    await check(
      'federation.act-iss',
      'act.iss names the NHS issuer inside a federation credential',
      {
        credential: await token('X26', {
          claims: { act: { sub: world.hubs.granted, iss: world.issuers.nhs.iss } },
        }),
        sealed: v.sealed,
      },
      rejected('authenticate', 'TOKEN_CLAIM_INVALID'),
    );
  });
});

describe('compromised partner keys', () => {
  it("a compromised issuer key vouching for another issuer's organisation is stopped at authenticate", async () => {
    // The federation issuer's scope (X26, F*) does not include GP0001, whose client is registered
    // under the NHS issuer: the credential is refused before any principal exists.
    const msg = buildMessage('GP0001');
    const attacker = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const jws = rawInner('GP0001', msg, { key: attacker.privateKey });
    const credential = await token('X26', {
      claims: { sub: 'gp0001-ehr', organisation: { ods_code: 'GP0001' } },
    });
    await check(
      'keys.issuer-vouches-other-org',
      "federation issuer credential for GP0001, message signed by an attacker key under GP0001's kid",
      { credential, sealed: await seal(jws, msg.routing) },
      rejected('authenticate', 'TOKEN_ORGANISATION_OUT_OF_SCOPE'),
    );
  });

  it("a compromised sender signing key without that sender's credential", async () => {
    // FQ123's credential, message signed with X26's (stolen) key and routed as FQ123.
    const msg = buildMessage('FQ123');
    const jws = rawInner('FQ123', msg, {
      header: { alg: 'RS512', kid: senderOf('X26').key.kid, cty: 'fhir+xml', itk: msg.routing },
      key: privateKeyOf(senderOf('X26').key),
    });
    await check(
      'keys.stolen-sender-key',
      "FQ123 credential, message signed with X26's key",
      { credential: await token('FQ123'), sealed: await seal(jws, msg.routing) },
      rejected('verify', 'SIGNATURE_KEY_NOT_SENDERS'),
    );
  });
});

describe('A18 signature stripping', () => {
  it('the Bundle encrypted to our public key with no inner JWS (cty JOSE faked)', async () => {
    const msg = buildMessage('X26');
    await check(
      'A18.strip.xml',
      'encrypt-only XML Bundle, cty JOSE',
      { credential: await token('X26'), sealed: await seal(msg.bytes, msg.routing) },
      rejected('verify', 'SIGNATURE_MALFORMED'),
    );
  });

  it('a JSON Bundle encrypted with no inner JWS', async () => {
    const msg = buildMessage('X26', { format: 'json' });
    await check(
      'A18.strip.json',
      'encrypt-only JSON Bundle',
      { credential: await token('X26'), sealed: await seal(msg.bytes, msg.routing) },
      rejected('verify', 'SIGNATURE_MALFORMED'),
    );
  });

  it('the Bundle encrypted with cty set to fhir+xml on the JWE', async () => {
    const msg = buildMessage('X26');
    await check(
      'A18.strip.cty-fhir',
      'encrypt-only Bundle, JWE cty fhir+xml',
      { credential: await token('X26'), sealed: await seal(msg.bytes, msg.routing, { cty: 'fhir+xml' }) },
      rejected('authorise', 'ENVELOPE_HEADER_NOT_ALLOWED'),
    );
  });

  it('the Bundle encrypted with cty removed', async () => {
    const msg = buildMessage('X26');
    const header: Record<string, unknown> = jweHeader(msg.routing);
    delete header.cty;
    const sealed = rawEncrypt({ header, plaintext: msg.bytes, publicKey: a83627Public() });
    await check(
      'A18.strip.no-cty',
      'encrypt-only Bundle, no cty',
      { credential: await token('X26'), sealed },
      rejected('authorise', 'ENVELOPE_HEADER_NOT_ALLOWED'),
    );
  });

  it('an unsigned JWS (header.payload. with alg none) as the inner content', async () => {
    const msg = buildMessage('X26');
    const unsigned = `${b64u(JSON.stringify({ alg: 'none', cty: 'fhir+xml', itk: msg.routing }))}.${b64u(msg.bytes)}.`;
    await check(
      'A18.strip.unsigned-jws',
      'inner content an unsigned JWS',
      { credential: await token('X26'), sealed: await seal(unsigned, msg.routing) },
      rejected('verify', 'SIGNATURE_MALFORMED'),
    );
  });

  it("a JWS signed by the attacker's own key under an unregistered kid", async () => {
    const msg = buildMessage('X26');
    const attacker = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const jws = rawInner('X26', msg, {
      header: { alg: 'RS512', kid: 'attacker-1', cty: 'fhir+xml', itk: msg.routing },
      key: attacker.privateKey,
    });
    await check(
      'A18.strip.attacker-key',
      'inner JWS by an unregistered key',
      { credential: await token('X26'), sealed: await seal(jws, msg.routing) },
      rejected('verify', 'SIGNATURE_KEY_UNKNOWN'),
    );
  });

  it('non-UTF-8 plaintext inside a valid JWE', async () => {
    const msg = buildMessage('X26');
    await check(
      'A18.strip.binary',
      'JWE plaintext of invalid UTF-8',
      {
        credential: await token('X26'),
        sealed: await seal(new Uint8Array([0xff, 0xfe, 0x80, 0x2e, 0xc3]), msg.routing),
      },
      rejected('decrypt', 'ENVELOPE_MALFORMED'),
    );
  });
});

describe('routing-header swaps between JWE, JWS and MessageHeader', () => {
  const fields: Record<keyof ItkRouting, (r: ItkRouting) => ItkRouting> = {
    from: (r) => ({ ...r, from: 'FQ123' }),
    to: (r) => ({ ...r, to: 'A8797979' }),
    event: (r) => ({ ...r, event: 'ITK013D' }),
    id: (r) => ({ ...r, id: randomUUID() }),
  };

  for (const field of ['from', 'to', 'event', 'id'] as const) {
    it(`JWE itk.${field} differs from the signed JWS itk.${field}`, async () => {
      const msg = buildMessage('X26');
      const jws = await signBundle({
        bundle: msg.bytes,
        format: msg.format,
        routing: fields[field](msg.routing),
        signer: signerOf(world, 'X26'),
      });
      await check(
        `swap.jwe-jws.${field}`,
        `JWE/JWS itk.${field} swapped`,
        { credential: await token('X26'), sealed: await seal(jws, msg.routing) },
        rejected('verify', 'BINDING_MISMATCH'),
      );
    });
  }

  it('JWE itk.from differs from the credential organisation (JWS agrees with the credential)', async () => {
    const msg = buildMessage('X26');
    const jws = await signAs(world, 'X26', msg);
    await check(
      'swap.jwe-token.from',
      'JWE itk.from differs from the credential',
      { credential: await token('X26'), sealed: await seal(jws, fields.from(msg.routing)) },
      rejected('authorise', 'ROUTING_SENDER_MISMATCH'),
    );
  });

  const headerSwaps: Record<keyof ItkRouting, Parameters<typeof buildMessage>[1]> = {
    from: { senderOds: 'FQ123' },
    to: { receiverOds: 'A8797979' },
    event: { event: 'ITK013D' },
    id: {},
  };
  for (const field of ['from', 'to', 'event', 'id'] as const) {
    it(`MessageHeader ${field} contradicts the signed routing (JWE and JWS agree)`, async () => {
      const msg = buildMessage('X26', headerSwaps[field]);
      // The routing stays the registered sender's; for `event`/`id` it is set to what X26 claims.
      const routing =
        field === 'id' ? { ...msg.routing, id: randomUUID() } : { ...msg.routing, event: 'ITK009D' };
      const sealed = await sealAs(world, 'X26', { ...msg, routing });
      await check(
        `swap.header.${field}`,
        `MessageHeader ${field} differs from the signed routing`,
        { credential: await token('X26'), sealed },
        rejected('verify', 'HEADER_CONTRADICTS_ENVELOPE'),
      );
    });
  }
});

describe('delegation beyond its grant', () => {
  it('a hub with a grant for X26 / ITK009D (control): delivered', async () => {
    const v = await valid('X26');
    await check(
      'delegation.granted',
      'granted hub acting for X26 (ITK009D)',
      { credential: await token('X26', { actors: [world.hubs.granted] }), sealed: v.sealed },
      delivered,
    );
  });

  it('the granted hub sending another event for X26', async () => {
    const msg = buildMessage('X26', {
      to: 'A8797979',
      receiverOds: 'A8797979',
      event: 'ITK013D',
      messageDefinition: 'ITK-DM-MIRC-MessageDefinition-1',
    });
    await check(
      'delegation.other-event',
      'granted hub, event outside the grant',
      {
        credential: await token('X26', { actors: [world.hubs.granted] }),
        sealed: await sealAs(world, 'X26', msg),
      },
      rejected('authorise', 'DELEGATION_NOT_GRANTED'),
    );
  });

  it('the granted hub acting for another organisation (FQ123)', async () => {
    const v = await valid('FQ123');
    await check(
      'delegation.other-org',
      'granted hub acting for an organisation outside the grant',
      { credential: await token('FQ123', { actors: [world.hubs.granted] }), sealed: v.sealed },
      rejected('authorise', 'DELEGATION_NOT_GRANTED'),
    );
  });

  it('a hub whose grant has expired', async () => {
    const v = await valid('X26');
    await check(
      'delegation.expired',
      'hub with an expired grant',
      { credential: await token('X26', { actors: [world.hubs.expired] }), sealed: v.sealed },
      rejected('authorise', 'DELEGATION_GRANT_EXPIRED'),
    );
  });

  it('a hub with no grant', async () => {
    const v = await valid('X26');
    await check(
      'delegation.ungranted',
      'hub with no grant',
      { credential: await token('X26', { actors: [world.hubs.ungranted] }), sealed: v.sealed },
      rejected('authorise', 'DELEGATION_NOT_GRANTED'),
    );
  });

  it('a chain of two where the inner actor has no grant', async () => {
    const v = await valid('X26');
    await check(
      'delegation.chain-2',
      'granted hub via an ungranted intermediary',
      {
        credential: await token('X26', { actors: [world.hubs.granted, world.hubs.ungranted] }),
        sealed: v.sealed,
      },
      rejected('authorise', 'DELEGATION_NOT_GRANTED'),
    );
  });

  it('a chain deeper than the limit (3 > 2)', async () => {
    const v = await valid('X26');
    await check(
      'delegation.too-deep',
      'delegation chain of 3',
      {
        credential: await token('X26', { actors: [world.hubs.granted, 'hub-b', 'hub-c'] }),
        sealed: v.sealed,
      },
      rejected('authenticate', 'DELEGATION_CHAIN_TOO_DEEP'),
    );
  });
});

describe('A19–A24 encryption: algorithms, bombs, oracles, GCM games', () => {
  it('A19 ECDH-ES+A256KW with an off-curve epk', async () => {
    const { msg, jws } = await validInner();
    const header = jweHeader(msg.routing, {
      alg: 'ECDH-ES+A256KW',
      epk: { kty: 'EC', crv: 'P-256', x: b64u(randomBytes(32)), y: b64u(randomBytes(32)) },
    });
    const sealed = rawEncrypt({ header, plaintext: jws, encryptedKey: randomBytes(40) });
    await check(
      'A19.jwe.ecdh-epk',
      'ECDH-ES with an off-curve epk',
      { credential: await token('X26'), sealed },
      // ECDH-ES+A256KW is allowed (P-256 recipients); the off-curve point is refused before any key
      // operation (no key-service call) and ends, like every decrypt failure, in DECRYPT_FAILED.
      { status: 'rejected', stage: 'decrypt', code: 'DECRYPT_FAILED', keyCalls: 0 },
    );
  });

  it('A20 PBES2 with p2c 2147483647 (hand-built) and with p2c 10000 (jose-built)', async () => {
    const { msg, jws } = await validInner();
    const bomb = rawEncrypt({
      header: jweHeader(msg.routing, {
        alg: 'PBES2-HS512+A256KW',
        p2s: b64u(randomBytes(16)),
        p2c: 2_147_483_647,
      }),
      plaintext: jws,
      encryptedKey: randomBytes(40),
    });
    await check(
      'A20.jwe.p2c-bomb',
      'PBES2 with p2c 2^31−1',
      { credential: await token('X26'), sealed: bomb },
      rejected('authorise', 'ENVELOPE_HEADER_NOT_ALLOWED'),
    );
    const real = await new CompactEncrypt(new TextEncoder().encode(jws))
      .setProtectedHeader({
        alg: 'PBES2-HS512+A256KW',
        enc: 'A256GCM',
        kid: world.recipients.A83627.key.kid,
        cty: 'JOSE',
        itk: msg.routing,
      })
      .setKeyManagementParameters({ p2c: 10_000 })
      .encrypt(new TextEncoder().encode('correct horse battery staple'));
    await check(
      'A20.jwe.pbes2',
      'PBES2-HS512+A256KW (jose)',
      { credential: await token('X26'), sealed: real },
      rejected('authorise', 'ENVELOPE_HEADER_NOT_ALLOWED'),
    );
  });

  it('A21 zip:DEF — 200 MiB of zeros deflated into a small JWE, never inflated', async () => {
    const { msg, jws } = await validInner();
    const compressed = await deflateZeros(200 * 1024 * 1024, jws);
    const sealed = rawEncrypt({
      header: jweHeader(msg.routing, { zip: 'DEF' }),
      plaintext: compressed,
      publicKey: a83627Public(),
    });
    expect(sealed.length).toBeLessThan(1024 * 1024);
    const started = performance.now();
    await check(
      'A21.jwe.zip-bomb',
      'zip:DEF bomb (200 MiB of zeros)',
      { credential: await token('X26'), sealed },
      rejected('authorise', 'ENVELOPE_HEADER_NOT_ALLOWED'),
    );
    console.log(
      `A21 zip bomb (${(sealed.length / 1024).toFixed(0)} KiB JWE) rejected in ${(performance.now() - started).toFixed(1)} ms`,
    );
  });

  it('A22 RSA1_5 key wrapping', async () => {
    const { msg, jws } = await validInner();
    const sealed = rawEncrypt({
      header: jweHeader(msg.routing, { alg: 'RSA1_5' }),
      plaintext: jws,
      publicKey: a83627Public(),
      pkcs1: true,
    });
    await check(
      'A22.jwe.rsa1_5',
      'RSA1_5 key wrapping',
      { credential: await token('X26'), sealed },
      rejected('authorise', 'ENVELOPE_HEADER_NOT_ALLOWED'),
    );
  });

  it('A22 encrypted_key variants all fail the same way, at the same stage, after one unwrap each', async () => {
    const variants: Record<string, (routing: ItkRouting, jws: string) => string> = {
      random: (routing, jws) =>
        rawEncrypt({ header: jweHeader(routing), plaintext: jws, encryptedKey: randomBytes(256) }),
      'bit-flip': (routing, jws) => {
        const sealed = rawEncrypt({ header: jweHeader(routing), plaintext: jws, publicKey: a83627Public() });
        const ek = fromB64u(sealed.split('.')[1] ?? '');
        ek[100] = (ek[100] ?? 0) ^ 0x80;
        return replaceSegment(sealed, 1, b64u(ek));
      },
      'oaep-sha1': (routing, jws) =>
        rawEncrypt({
          header: jweHeader(routing),
          plaintext: jws,
          publicKey: a83627Public(),
          oaepHash: 'sha1',
        }),
      'cek-16-bytes': (routing, jws) =>
        rawEncrypt({
          header: jweHeader(routing),
          plaintext: jws,
          publicKey: a83627Public(),
          cek: randomBytes(16),
        }),
      'other-recipient-key': (routing, jws) =>
        rawEncrypt({
          header: jweHeader(routing),
          plaintext: jws,
          publicKey: publicKeyOf(world.recipients.A8797979.key),
        }),
      'oversized-512': (routing, jws) =>
        rawEncrypt({ header: jweHeader(routing), plaintext: jws, encryptedKey: randomBytes(512) }),
    };
    const answers = new Set<string>();
    for (const [name, build] of Object.entries(variants)) {
      const { msg, jws } = await validInner();
      const r = await check(
        `A22.jwe.ek-${name}`,
        `encrypted_key: ${name}`,
        { credential: await token('X26'), sealed: build(msg.routing, jws) },
        rejected('decrypt', 'DECRYPT_FAILED'),
      );
      answers.add(
        `${r.outcome.stage}/${r.outcome.code}/${r.outcome.itk3Code}/${r.responseFiles.map((f) => f.split('/')[0]).join()}`,
      );
    }
    // No oracle: one outward answer whatever failed.
    expect(answers.size).toBe(1);
  });

  for (const tagBytes of [12, 8, 4, 1]) {
    it(`A23 GCM tag truncated to ${tagBytes} bytes`, async () => {
      const { msg, jws } = await validInner();
      const sealed = rawEncrypt({
        header: jweHeader(msg.routing),
        plaintext: jws,
        publicKey: a83627Public(),
        tagBytes,
      });
      await check(
        `A23.jwe.tag-${tagBytes}`,
        `GCM tag of ${tagBytes} bytes`,
        { credential: await token('X26'), sealed },
        rejected('authorise', 'ENVELOPE_MALFORMED'),
      );
    });
  }

  for (const ivBytes of [16, 8]) {
    it(`A23 GCM IV of ${ivBytes} bytes`, async () => {
      const { msg, jws } = await validInner();
      const sealed = rawEncrypt({
        header: jweHeader(msg.routing),
        plaintext: jws,
        publicKey: a83627Public(),
        iv: randomBytes(ivBytes),
      });
      await check(
        `A23.jwe.iv-${ivBytes}`,
        `GCM IV of ${ivBytes} bytes`,
        { credential: await token('X26'), sealed },
        rejected('authorise', 'ENVELOPE_MALFORMED'),
      );
    });
  }

  it('A23 one bit of the tag flipped, and the protected header re-encoded (AAD changed)', async () => {
    const { msg, jws } = await validInner();
    const sealed = rawEncrypt({ header: jweHeader(msg.routing), plaintext: jws, publicKey: a83627Public() });
    const tag = fromB64u(sealed.split('.')[4] ?? '');
    tag[0] = (tag[0] ?? 0) ^ 0x01;
    await check(
      'A23.jwe.tag-flip',
      'GCM tag bit flipped',
      { credential: await token('X26'), sealed: replaceSegment(sealed, 4, b64u(tag)) },
      rejected('decrypt', 'DECRYPT_FAILED'),
    );
    // Same header values, different JSON text: the AAD differs, so the tag must not verify.
    const reordered = b64u(JSON.stringify(Object.fromEntries(Object.entries(headerOf(sealed)).reverse())));
    await check(
      'A23.jwe.aad-reencoded',
      'protected header re-encoded (same values)',
      { credential: await token('X26'), sealed: replaceSegment(sealed, 0, reordered) },
      rejected('decrypt', 'DECRYPT_FAILED'),
    );
  });

  const joseBuilt: Record<string, { alg: string; enc: string; key: () => KeyObject | Uint8Array }> = {
    dir: { alg: 'dir', enc: 'A256GCM', key: () => randomBytes(32) },
    'RSA-OAEP': { alg: 'RSA-OAEP', enc: 'A256GCM', key: a83627Public },
    A128GCM: { alg: 'RSA-OAEP-256', enc: 'A128GCM', key: a83627Public },
    'A256CBC-HS512': { alg: 'RSA-OAEP-256', enc: 'A256CBC-HS512', key: a83627Public },
    'A128CBC-HS256': { alg: 'RSA-OAEP-256', enc: 'A128CBC-HS256', key: a83627Public },
  };
  for (const [name, spec] of Object.entries(joseBuilt)) {
    it(`A24 ${spec.alg} / ${spec.enc} (built with jose)`, async () => {
      const { msg, jws } = await validInner();
      const sealed = await new CompactEncrypt(new TextEncoder().encode(jws))
        .setProtectedHeader({
          alg: spec.alg,
          enc: spec.enc,
          kid: world.recipients.A83627.key.kid,
          cty: 'JOSE',
          itk: msg.routing,
        })
        .encrypt(spec.key());
      await check(
        `A24.jwe.${name}`,
        `JWE ${spec.alg} / ${spec.enc}`,
        { credential: await token('X26'), sealed },
        rejected('authorise', 'ENVELOPE_HEADER_NOT_ALLOWED'),
      );
    });
  }
});

describe('A25 JSON serialisation instead of compact', () => {
  it('a flattened JSON JWE: 400 at the HTTP door; on SQS a "{" body that is not a claim check is refused', async () => {
    const { msg, jws } = await validInner();
    const flattened = await new FlattenedEncrypt(new TextEncoder().encode(jws))
      .setProtectedHeader(jweHeader(msg.routing))
      .encrypt(a83627Public());
    const body = JSON.stringify(flattened);
    const credential = await token('X26');
    await check(
      'A25.jwe.json.http',
      'flattened JSON JWE (HTTP)',
      { credential, sealed: body },
      atIngest('ENVELOPE_MALFORMED', 400),
    );
    await check(
      'A25.jwe.json.sqs',
      'flattened JSON JWE (direct SQS)',
      { credential, sealed: body, via: 'sqs' },
      rejected('authenticate', 'ENVELOPE_MALFORMED'),
    );
  });

  it('a flattened JSON JWS as the inner content', async () => {
    const msg = buildMessage('X26');
    const flattened = await new FlattenedSign(msg.bytes)
      .setProtectedHeader({ alg: 'RS512', kid: senderOf('X26').key.kid, cty: 'fhir+xml', itk: msg.routing })
      .sign(privateKeyOf(senderOf('X26').key));
    await check(
      'A25.jws.json',
      'flattened JSON inner JWS',
      { credential: await token('X26'), sealed: await seal(JSON.stringify(flattened), msg.routing) },
      rejected('verify', 'SIGNATURE_MALFORMED'),
    );
  });

  it('a JSON-serialised credential on the SQS path', async () => {
    const v = await valid();
    const t = (await token('X26')).split('.');
    const json = JSON.stringify({ protected: t[0], payload: t[1], signature: t[2] });
    await check(
      'A25.token.json',
      'JSON-serialised credential (direct SQS)',
      { sealed: v.sealed, via: 'sqs', authorization: `Bearer ${json}` },
      rejected('authenticate', 'TOKEN_MISSING'),
    );
  });
});

describe('A27 key-service exhaustion: no unwrap before authentication and authorisation', () => {
  it('a flood of valid-looking JWEs with random encrypted_key makes zero unwrap calls unless authorised', async () => {
    const before = h.keys.unwraps;
    const n = 10;
    const floods: { id: string; input: Input; stage: string; code: RejectionCode }[] = [];
    for (let i = 0; i < n; i += 1) {
      const { msg, jws } = await validInner();
      const sealed = rawEncrypt({
        header: jweHeader(msg.routing),
        plaintext: jws,
        encryptedKey: randomBytes(256),
      });
      floods.push({
        id: 'no-credential',
        input: { sealed, via: 'sqs' },
        stage: 'authenticate',
        code: 'TOKEN_MISSING',
      });
      floods.push({
        id: 'forged-credential',
        input: { credential: await rawToken('X26', { signature: randomBytes(256) }), sealed, via: 'sqs' },
        stage: 'authenticate',
        code: 'TOKEN_SIGNATURE_INVALID',
      });
      floods.push({
        id: 'unauthorised',
        input: { credential: await token('X26', { actors: [world.hubs.ungranted] }), sealed },
        stage: 'authorise',
        code: 'DELEGATION_NOT_GRANTED',
      });
      floods.push({
        id: 'policy-denied',
        input: {
          credential: await token('FQ123'),
          sealed: rawEncrypt({
            header: jweHeader({ ...msg.routing, from: 'FQ123' }),
            plaintext: jws,
            encryptedKey: randomBytes(256),
          }),
        },
        stage: 'authorise',
        code: 'POLICY_DENIED',
      });
    }
    for (const [i, f] of floods.entries()) {
      const r = await h.run(f.input);
      if (i < 4) results.add(rowFrom(`A27.flood.${f.id}`, `random encrypted_key, ${f.id} (×${n})`, r));
      expect(r.outcome).toMatchObject({ status: 'rejected', stage: f.stage, code: f.code });
    }
    expect(h.keys.unwraps - before, 'unwrap calls for unauthenticated or unauthorised messages').toBe(0);

    // Authorised senders do reach the key service: once per message, and fail uniformly.
    const { msg, jws } = await validInner();
    const sealed = rawEncrypt({
      header: jweHeader(msg.routing),
      plaintext: jws,
      encryptedKey: randomBytes(256),
    });
    await check(
      'A27.flood.authorised',
      'random encrypted_key from an authorised sender',
      { credential: await token('X26'), sealed },
      rejected('decrypt', 'DECRYPT_FAILED'),
    );
  });
});

describe('A28 error oracles', () => {
  it('an unauthenticated sender gets nothing back: no response is signed or written, one audit entry', async () => {
    const v = await valid();
    const auditBefore = h.pipeline.audit.count;
    const r = await check(
      'A28.unauthenticated-response',
      'no credential (direct SQS): nothing answered',
      { sealed: v.sealed, via: 'sqs' },
      rejected('authenticate', 'TOKEN_MISSING'),
    );
    expect(r.responseFiles).toEqual([]);
    const trail = await h.pipeline.audit.byTrace(r.traceId ?? '');
    expect(trail.map((e) => [e.stage, e.event, e.code])).toEqual([
      ['authenticate', 'rejected', 'TOKEN_MISSING'],
    ]);
    expect(h.pipeline.audit.count - auditBefore).toBe(1);
  });
});

describe('A29 structure odds and ends', () => {
  it('credential with two and with four segments', async () => {
    const v = await valid();
    const t = await token('X26');
    await check(
      'A29.token.2-segments',
      'credential with two segments',
      { credential: t.split('.').slice(0, 2).join('.'), sealed: v.sealed },
      rejected('authenticate', 'TOKEN_MALFORMED'),
    );
    const v2 = await valid();
    await check(
      'A29.token.4-segments',
      'credential with four segments',
      { credential: `${await token('X26')}.AAAA`, sealed: v2.sealed },
      rejected('authenticate', 'TOKEN_MALFORMED'),
    );
  });

  for (const [name, alg] of Object.entries({ number: 256, array: ['PS256'], empty: '' })) {
    it(`credential alg as ${name}`, async () => {
      const v = await valid();
      const credential = await rawToken('X26', {
        header: { alg, kid: senderOf('X26').issuer.key.kid, typ: 'JWT' },
        alg: 'PS256',
      });
      await check(
        `A29.token.alg-${name}`,
        `credential alg as ${name}`,
        { credential, sealed: v.sealed },
        rejected('authenticate', 'TOKEN_ALG_NOT_ALLOWED'),
      );
    });
  }

  it('credential header of invalid UTF-8', async () => {
    const v = await valid();
    const t = await token('X26');
    const header = b64u(
      Buffer.concat([Buffer.from('{"alg":"PS256","x":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}')]),
    );
    await check(
      'A29.token.utf8',
      'credential header of invalid UTF-8',
      { credential: replaceSegment(t, 0, header), sealed: v.sealed },
      rejected('authenticate', 'TOKEN_MALFORMED'),
    );
  });

  it('JWE with four and with six segments (SQS path; the HTTP door refuses them with 400)', async () => {
    const v = await valid();
    const four = v.sealed.split('.').slice(0, 4).join('.');
    await check(
      'A29.jwe.4-segments.http',
      'JWE with four segments (HTTP)',
      { credential: v.credential, sealed: four },
      atIngest('ENVELOPE_MALFORMED', 400),
    );
    await check(
      'A29.jwe.4-segments.sqs',
      'JWE with four segments (direct SQS)',
      { credential: await token('X26'), sealed: four, via: 'sqs' },
      rejected('authorise', 'ENVELOPE_MALFORMED'),
    );
    const v2 = await valid();
    await check(
      'A29.jwe.6-segments.sqs',
      'JWE with six segments (direct SQS)',
      { credential: v2.credential, sealed: `${v2.sealed}.AAAA`, via: 'sqs' },
      rejected('authorise', 'ENVELOPE_MALFORMED'),
    );
  });

  it('JWE cty in another case (jose), and an unknown JWE header member', async () => {
    const { msg, jws } = await validInner();
    await check(
      'A29.jwe.cty-case',
      'JWE cty "jose"',
      { credential: await token('X26'), sealed: await seal(jws, msg.routing, { cty: 'jose' }) },
      rejected('authorise', 'ENVELOPE_HEADER_NOT_ALLOWED'),
    );
    const again = await validInner();
    await check(
      'A29.jwe.unknown-member',
      'JWE header with an unknown member',
      { credential: await token('X26'), sealed: await seal(again.jws, again.msg.routing, { foo: 'bar' }) },
      rejected('authorise', 'ENVELOPE_HEADER_NOT_ALLOWED'),
    );
  });

  // `application/fhir+xml` is the same media type as `fhir+xml` (RFC 7515 §4.1.10) and is accepted
  // (control.cty-prefix); case games and parameters are not.
  it('inner JWS cty "application/fhir+xml" is fhir+xml', async () => {
    const msg = buildMessage('X26');
    const jws = rawInner('X26', msg, {
      header: { alg: 'RS512', kid: senderOf('X26').key.kid, cty: 'application/fhir+xml', itk: msg.routing },
    });
    await check(
      'control.cty-prefix',
      'inner JWS cty "application/fhir+xml" (RFC 7515 §4.1.10)',
      { credential: await token('X26'), sealed: await seal(jws, msg.routing) },
      delivered,
    );
  });

  // Short ids keep the generated table's column widths.
  for (const [id, cty] of [
    ['App-case', 'Application/fhir+xml'],
    ['param', 'application/fhir+xml;charset=utf-8'],
    ['FHIR+XML', 'FHIR+XML'],
    ['xml', 'xml'],
  ] as const) {
    it(`inner JWS cty "${cty}"`, async () => {
      const msg = buildMessage('X26');
      const jws = rawInner('X26', msg, {
        header: { alg: 'RS512', kid: senderOf('X26').key.kid, cty, itk: msg.routing },
      });
      await check(
        `A29.jws.cty-${id}`,
        `inner JWS cty "${cty}"`,
        { credential: await token('X26'), sealed: await seal(jws, msg.routing) },
        rejected('verify', 'SIGNATURE_HEADER_NOT_ALLOWED'),
      );
    });
  }

  it('inner JWS cty says JSON but the payload is XML', async () => {
    const msg = buildMessage('X26');
    const jws = rawInner('X26', msg, {
      header: { alg: 'RS512', kid: senderOf('X26').key.kid, cty: 'fhir+json', itk: msg.routing },
    });
    await check(
      'A29.jws.cty-mismatch',
      'inner JWS cty fhir+json over XML',
      { credential: await token('X26'), sealed: await seal(jws, msg.routing) },
      rejected('verify', 'BUNDLE_UNREADABLE'),
    );
  });

  it('inner JWS with an empty payload', async () => {
    const msg = buildMessage('X26');
    const jws = rawInner('X26', msg, { payloadSegment: '' });
    await check(
      'A29.jws.empty-payload',
      'inner JWS with an empty payload',
      { credential: await token('X26'), sealed: await seal(jws, msg.routing) },
      rejected('verify', 'SIGNATURE_MALFORMED'),
    );
  });
});

/** Deflate (raw, as JWE zip:DEF) `size` zero bytes after `prefix`, streaming so memory stays small. */
function deflateZeros(size: number, prefix: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const deflate = createDeflateRaw({ level: 9 });
    const chunks: Buffer[] = [];
    deflate.on('data', (c: Buffer) => chunks.push(c));
    deflate.on('end', () => resolve(Buffer.concat(chunks)));
    deflate.on('error', reject);
    deflate.write(prefix);
    const chunk = Buffer.alloc(4 * 1024 * 1024);
    let left = size;
    const pump = () => {
      while (left > 0) {
        left -= chunk.length;
        if (!deflate.write(chunk)) {
          deflate.once('drain', pump);
          return;
        }
      }
      deflate.end();
    };
    pump();
  });
}

/**
 * Findings F1–F3 (reported by this suite, fixed in fa88428): the inbound queue used to accept a
 * record-shaped body from any writer and take its `traceId` and `receivedAt` from it. Direct SQS
 * ingestion is a documented transport for senders, so a sender could replay its own message past
 * duplicate detection (F1), backdate receipt time by up to 60 s (F2) or reuse another message's
 * trace id (F3). The inbound queue now has one format — a compact JWE or a claim-check reference —
 * and the trace id and receipt time come from SQS. These are the regression tests.
 */
describe('findings F1–F3: the inbound queue takes no trace id or receipt time from the body', () => {
  const recordBody = (traceId: string, credential: string, sealed: string, receivedAt = h.now()) =>
    JSON.stringify({ v: 1, traceId, receivedAt, source: 'http', credential, sealed: { inline: sealed } });

  it('F1: a delivered message replayed as a record body reusing its trace id is refused, delivered once', async () => {
    const v = await valid();
    const first = await h.run(v);
    expect(first.outcome.status).toBe('delivered');
    const traceId = first.traceId ?? '';
    await check(
      'F1.replay-same-trace',
      'record-shaped body reusing a delivered trace id (direct SQS)',
      {
        sealed: recordBody(traceId, await token('X26'), v.sealed),
        via: 'sqs',
        authorization: `Bearer ${await token('X26')}`,
      },
      rejected('authenticate', 'ENVELOPE_MALFORMED'),
    );
    const entries = await h.pipeline.audit.byTrace(traceId);
    expect(entries.filter((e) => e.event === 'delivered')).toHaveLength(1);
  });

  it('F2: a record body cannot backdate receipt time for a stale credential', async () => {
    const iat = Math.floor(h.now() / 1000) - 380;
    const v = await valid();
    const stale = await token('X26', { iat, exp: iat + 300 });
    await check(
      'F2.backdated-receipt',
      'record-shaped body backdating receivedAt by 59 s (direct SQS)',
      {
        sealed: recordBody(randomUUID(), stale, v.sealed, h.now() - 59_000),
        via: 'sqs',
        authorization: `Bearer ${stale}`,
      },
      rejected('authenticate', 'ENVELOPE_MALFORMED'),
    );
    // The same stale credential on the proper path is judged at the queue's own receipt time.
    await check(
      'F2.stale-credential',
      'credential expired 50 s beyond the skew (direct SQS)',
      { credential: stale, sealed: v.sealed, via: 'sqs' },
      rejected('authenticate', 'TOKEN_EXPIRED'),
    );
  });

  it("F3: a record body reusing a victim's trace id leaves the victim's outcome alone", async () => {
    const victim = await valid();
    const delivered = await h.run(victim);
    expect(delivered.outcome.status).toBe('delivered');
    const traceId = delivered.traceId ?? '';
    h.pipeline.submitRaw(recordBody(traceId, 'not.a.token', 'a.b.c.d.e'));
    await h.pipeline.drain();
    expect(await h.pipeline.outcome(traceId)).toMatchObject({ status: 'delivered' });
    results.add({
      id: 'F3.trace-hijack',
      attack: "record-shaped body reusing a victim's trace id: victim outcome after the attempt",
      stage: 'deliver',
      outcome: (await h.pipeline.outcome(traceId)).status,
      itk3Code: '20013',
      code: null,
    });
  });

  it('a claim-check body that names no stored artefact is dead-lettered at authorise, never decrypted', async () => {
    // Only an authenticated sender gets this far; the dangling reference is retried (blob stores
    // can lag) and then dead-lettered with its reason, making no key-service call.
    const body = JSON.stringify({
      claimCheck: {
        key: `claim-check/ingest-${randomUUID()}/sealed.jwe`,
        bytes: 1000,
        sha256: '0'.repeat(64),
      },
    });
    const before = h.keys.unwraps;
    const r = await h.run({ credential: await token('X26'), sealed: body, via: 'sqs' });
    results.add(
      rowFrom('claim-check.dangling', 'claim-check body naming no stored artefact (direct SQS)', r),
    );
    expect(r.outcome).toMatchObject({
      status: 'dead-lettered',
      stage: 'authorise',
      code: 'BLOB_STORE_UNAVAILABLE',
    });
    expect(h.keys.unwraps - before).toBe(0);
    // Leave the DLQ empty for the other cases.
    h.pipeline.dlqs.authorise.take(r.traceId ?? '');
  });
});

// ---------------------------------------------------------------------------------------------
// Issue 9, class 1: one view of the message. A registered sender, with a valid credential and a
// valid signature, sends a Bundle that a common recipient parser would read differently from the
// gateway. Each must end 20006 at verify, with the specific code in the response's diagnostics.

describe('one view of the message: what a recipient parser would read otherwise is refused', () => {
  const SENDER_ODS_XML = '<value value="X26"/>';
  const ODS_SYSTEM = 'https://fhir.nhs.uk/Id/ods-organization-code';

  /** X26's valid message with its Bundle text changed by `edit` (routing and ids unchanged). */
  function edited(edit: (text: string) => string, format: 'xml' | 'json' = 'xml'): BuiltMessage {
    const msg = buildMessage('X26', { format });
    return { ...msg, bytes: new TextEncoder().encode(edit(new TextDecoder().decode(msg.bytes))) };
  }

  /** The top-level entry whose fullUrl is the sender reference, as text. */
  function senderEntry(text: string): string {
    const reference = /<sender>\s*<reference value="([^"]+)"\/>/.exec(text)?.[1] as string;
    const start = text.indexOf(`<entry>\n    <fullUrl value="${reference}"/>`);
    return text.slice(start, text.indexOf('</entry>', start) + '</entry>'.length);
  }

  /** Run the case, then check the signed ITK3 response names the code in its diagnostics. */
  async function refused(id: string, attack: string, msg: BuiltMessage, code: RejectionCode): Promise<void> {
    const r = await check(
      id,
      attack,
      { credential: await token('X26'), sealed: await sealAs(world, 'X26', msg) },
      rejected('verify', code),
    );
    const file = r.responseFiles[0] as string;
    const { message } = await verifyResponse(
      world,
      readFileSync(path.join(h.baseDir, 'responses', file), 'utf8'),
    );
    expect(message.header.response).toMatchObject({ itkCode: '20006', diagnostics: code });
  }

  it('an entry in a foreign namespace before the real MessageHeader, naming FQ123 as sender', async () => {
    const evil = (text: string) => {
      const header = text.slice(text.indexOf('<entry>'), text.indexOf('</entry>') + '</entry>'.length);
      const foreign = header.replace('<entry>', '<entry xmlns="urn:x-evil">');
      const org = senderEntry(text)
        .replace('<entry>', '<entry xmlns="urn:x-evil">')
        .replace(SENDER_ODS_XML, '<value value="FQ123"/>');
      return text.replace('<entry>', `${foreign}${org}<entry>`);
    };
    await refused(
      'one-view.foreign-entry',
      'foreign-namespace entry before the real header',
      edited(evil),
      'BUNDLE_FOREIGN_CONTENT',
    );
  });

  it('a prefixed duplicate of the sender ODS attribute', async () => {
    const evil = (text: string) =>
      text.replace(SENDER_ODS_XML, '<value value="X26" xmlns:f="http://hl7.org/fhir" f:value="FQ123"/>');
    await refused(
      'one-view.prefixed-attribute',
      'prefixed duplicate attribute on the sender ODS code',
      edited(evil),
      'BUNDLE_FOREIGN_CONTENT',
    );
  });

  it('a second entry with the sender Organization fullUrl, placed first, naming FQ123', async () => {
    const evil = (text: string) =>
      text.replace(
        '<entry>',
        `${senderEntry(text).replace(SENDER_ODS_XML, '<value value="FQ123"/>')}<entry>`,
      );
    await refused(
      'one-view.duplicate-fullurl',
      'second entry under the sender fullUrl (bdl-7)',
      edited(evil),
      'DUPLICATE_FULL_URL',
    );
  });

  it('a second ODS identifier before the real one on the sender Organization', async () => {
    const extra = `<identifier><system value="${ODS_SYSTEM}"/><value value="FQ123"/></identifier>`;
    const evil = (text: string) => {
      const entry = senderEntry(text);
      return text.replace(entry, entry.replace('<identifier>', `${extra}<identifier>`));
    };
    await refused(
      'one-view.second-ods',
      'second ODS identifier before the real one',
      edited(evil),
      'ODS_IDENTIFIER_AMBIGUOUS',
    );
  });

  it('a receiver identifier under a near-miss ODS system (JSON)', async () => {
    const evil = (text: string) => {
      const bundle = JSON.parse(text) as { entry: { fullUrl: string; resource: Record<string, unknown> }[] };
      const header = bundle.entry[0]?.resource as { receiver: { reference: string } };
      const receiver = bundle.entry.find((e) => e.fullUrl === header.receiver.reference)?.resource as {
        identifier: unknown[];
      };
      receiver.identifier.unshift({
        system: 'http://fhir.nhs.uk/Id/ods-organization-code',
        value: 'A8797979',
      });
      return JSON.stringify(bundle);
    };
    await refused(
      'one-view.near-miss-receiver',
      'receiver identifier under a near-miss system',
      edited(evil, 'json'),
      'ODS_IDENTIFIER_AMBIGUOUS',
    );
  });

  it('fhir_comments in a JSON Bundle', async () => {
    const evil = (text: string) =>
      text.replace(
        '"resourceType": "MessageHeader",',
        '"resourceType": "MessageHeader", "fhir_comments": ["x"],',
      );
    await refused(
      'one-view.fhir-comments',
      'fhir_comments member in JSON',
      edited(evil, 'json'),
      'BUNDLE_FOREIGN_CONTENT',
    );
  });

  it('a byte-order mark before the Bundle (it would not be delivered byte for byte)', async () => {
    await refused(
      'one-view.bom',
      'UTF-8 byte-order mark before the Bundle',
      edited((text) => `\uFEFF${text}`),
      'BUNDLE_BYTE_ORDER_MARK',
    );
  });

  it('a receiver reference that resolves to no entry: refused by default, delivered under a rule that allows it', async () => {
    const dangling = () =>
      edited((text) =>
        text.replace(
          /(<receiver>\s*<reference value=")[^"]+/,
          '$1urn:uuid:ffffffff-0000-4000-8000-00000000dead',
        ),
      );
    await refused(
      'one-view.dangling-receiver',
      'receiver reference resolving to no entry',
      dangling(),
      'REFERENCE_UNRESOLVED',
    );

    const rules = world.configDoc.rules.map((rule) =>
      rule.sender.ods === 'X26' && rule.event === 'ITK009D'
        ? { ...rule, unresolvedReferences: 'allow' as const }
        : rule,
    );
    const lenient = new Harness(world, makeTempDir('itk3-one-view-'), {
      config: configWith(world, { rules }),
    });
    const msg = dangling();
    const r = await lenient.run({
      credential: await credentialFor(world, 'X26', lenient.now()),
      sealed: await sealAs(world, 'X26', msg),
    });
    expect(r.outcome).toMatchObject({ status: 'delivered', stage: 'deliver' });
  });
});
