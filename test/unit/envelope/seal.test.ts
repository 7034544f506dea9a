import { compactDecrypt } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import { createKeystore } from '../../../lib/adapters/local/keystore.js';
import { SoftwareKeyService } from '../../../lib/adapters/local/software-keys.js';
import { decryptSealed, parseSealed } from '../../../lib/envelope/jwe.js';
import { parseSigned, verifySigned } from '../../../lib/envelope/jws.js';
import { encryptSigned, sealMessage, signBundle } from '../../../lib/envelope/seal.js';
import { SignatureError } from '../../../lib/errors.js';
import { expectCode, headerOf, makeWorld, ROUTING, type TestWorld } from './helpers.js';

let world: TestWorld;
let keys: SoftwareKeyService;

beforeAll(async () => {
  world = await makeWorld();
  keys = new SoftwareKeyService(createKeystore([world.recipient.entry, world.response.entry]));
});

// A BOM, CRLF line ends, non-ASCII text and trailing whitespace: any re-serialisation would show.
const XML_BUNDLE = Buffer.concat([
  Buffer.from([0xef, 0xbb, 0xbf]),
  Buffer.from(
    '<Bundle xmlns="http://hl7.org/fhir">\r\n  <id value="Ünïcødé – ✓"/>\r\n</Bundle>\r\n  ',
    'utf8',
  ),
]);
const JSON_BUNDLE = Buffer.from('{ "resourceType" : "Bundle", "type":"message" ,"id":"x"}\n', 'utf8');

async function open(sealed: string, senderOds = 'GP0001') {
  const { limits } = world.config.doc;
  const parsedSealed = parseSealed(sealed, limits);
  const plaintext = await decryptSealed(parsedSealed, keys);
  const parsedSigned = parseSigned(plaintext, limits);
  const verified = await verifySigned(parsedSigned, senderOds, world.config);
  return { parsedSealed, parsedSigned, verified };
}

describe('sealMessage → parseSealed → decryptSealed → parseSigned → verifySigned', () => {
  it('round-trips the exact XML bytes with a PS256 sender key', async () => {
    const sealed = await sealMessage({
      bundle: XML_BUNDLE,
      format: 'xml',
      routing: ROUTING,
      signer: { key: world.senderGp.privateKey, kid: world.senderGp.kid, alg: 'PS256' },
      recipient: { key: world.recipient.publicKey, kid: world.recipient.kid },
    });
    const { parsedSealed, verified } = await open(sealed);
    expect(Buffer.from(verified.payload).equals(XML_BUNDLE)).toBe(true);
    expect(verified.format).toBe('xml');
    expect(verified.routing).toEqual(ROUTING);
    expect(parsedSealed.routing).toEqual(ROUTING);
    expect(parsedSealed.kid).toBe('rx1-enc-1');
  });

  it('round-trips JSON bytes with an ES256 sender key given as a private JWK', async () => {
    const routing = { ...ROUTING, from: 'X26' };
    const sealed = await sealMessage({
      bundle: JSON_BUNDLE,
      format: 'json',
      routing,
      signer: { key: world.senderX26.entry.privateJwk, kid: world.senderX26.kid, alg: 'ES256' },
      recipient: { key: world.recipient.publicKey, kid: world.recipient.kid },
    });
    const { verified } = await open(sealed, 'X26');
    expect(Buffer.from(verified.payload).equals(JSON_BUNDLE)).toBe(true);
    expect(verified.format).toBe('json');
    expect(verified.routing).toEqual(routing);
  });

  it('writes exactly the contract headers', async () => {
    const signed = await signBundle({
      bundle: XML_BUNDLE,
      format: 'xml',
      routing: ROUTING,
      signer: { key: world.senderGp.privateKey, kid: world.senderGp.kid, alg: 'PS256' },
    });
    expect(headerOf(signed)).toEqual({ alg: 'PS256', kid: 'gp0001-sig-1', cty: 'fhir+xml', itk: ROUTING });
    const sealed = await encryptSigned({
      plaintext: signed,
      routing: ROUTING,
      recipient: { key: world.recipient.publicKey, kid: world.recipient.kid },
    });
    expect(headerOf(sealed)).toEqual({
      alg: 'RSA-OAEP-256',
      enc: 'A256GCM',
      kid: 'rx1-enc-1',
      cty: 'JOSE',
      itk: ROUTING,
    });
  });

  it('produces JWEs that jose itself decrypts with the recipient key (wire compatibility)', async () => {
    const signed = await signBundle({
      bundle: JSON_BUNDLE,
      format: 'json',
      routing: ROUTING,
      signer: { key: world.senderGp.privateKey, kid: world.senderGp.kid, alg: 'PS256' },
    });
    const sealed = await encryptSigned({
      plaintext: signed,
      routing: ROUTING,
      recipient: { key: world.recipient.publicKey, kid: world.recipient.kid },
    });
    const { plaintext } = await compactDecrypt(sealed, world.recipient.privateKey, {
      keyManagementAlgorithms: ['RSA-OAEP-256'],
      contentEncryptionAlgorithms: ['A256GCM'],
      maxDecompressedLength: 0,
    });
    expect(Buffer.from(plaintext).toString('ascii')).toBe(signed);
  });

  it('lets tests build envelopes whose JWE and JWS routing disagree (the verify stage rejects them)', async () => {
    const signed = await signBundle({
      bundle: XML_BUNDLE,
      format: 'xml',
      routing: { ...ROUTING, to: 'OTHER1' },
      signer: { key: world.senderGp.privateKey, kid: world.senderGp.kid, alg: 'PS256' },
    });
    const sealed = await encryptSigned({
      plaintext: signed,
      routing: ROUTING,
      recipient: { key: world.recipient.publicKey, kid: world.recipient.kid },
    });
    const { parsedSealed, verified } = await open(sealed);
    expect(parsedSealed.routing.to).toBe('RX1');
    expect(verified.routing.to).toBe('OTHER1');
  });

  it('decrypts encrypt-only content (no inner JWS), which parseSigned then rejects (A18)', async () => {
    const sealed = await encryptSigned({
      plaintext: XML_BUNDLE,
      routing: ROUTING,
      recipient: { key: world.recipient.publicKey, kid: world.recipient.kid },
    });
    const { limits } = world.config.doc;
    const plaintext = await decryptSealed(parseSealed(sealed, limits), keys);
    expect(Buffer.from(plaintext).equals(XML_BUNDLE)).toBe(true);
    await expectCode(() => parseSigned(plaintext, limits), SignatureError, 'SIGNATURE_MALFORMED');
  });

  it('rejects encrypt-only content dressed as an unsigned JWS (A1 inside the envelope)', async () => {
    const fake = `${Buffer.from(JSON.stringify({ alg: 'none', kid: 'gp0001-sig-1', cty: 'fhir+xml', itk: ROUTING })).toString('base64url')}.${XML_BUNDLE.toString('base64url')}.`;
    const sealed = await encryptSigned({
      plaintext: fake,
      routing: ROUTING,
      recipient: { key: world.recipient.publicKey, kid: world.recipient.kid },
    });
    const { limits } = world.config.doc;
    const plaintext = await decryptSealed(parseSealed(sealed, limits), keys);
    await expectCode(() => parseSigned(plaintext, limits), SignatureError, 'SIGNATURE_MALFORMED');
  });
});
