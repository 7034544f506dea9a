/**
 * Published JOSE corpora through the pipeline's own code paths (SECURITY-CORPUS.md §6):
 *
 * - Wycheproof `json_web_encryption_test.json`, RSA-OAEP-256 groups, through `parseSealed` +
 *   `decryptSealed` with the group key behind the real local key service; and every vector of the
 *   file through the running pipeline (front door → authenticate → authorise) with a valid
 *   credential, counting key-service calls. The crypto-only layer (header allow-list bypassed) is
 *   test/unit/envelope/jwe-vectors.test.ts; it is not repeated here.
 * - Wycheproof `json_web_signature_test.json`, every group, through the verify stage's checks:
 *   `parseSigned` + `verifySigned` ("contract" layer) with a configuration whose sender key is the
 *   group key, and `verifySigned` on the unparsed header ("signature" layer: key registry, alg
 *   pinning and `compactVerify`) for the groups whose key the contract can register at all.
 * - RFC 7520: §4.1–4.3 verify with jose but our allow-list refuses them; §6 (PS256 inside
 *   RSA-OAEP / A128GCM) decrypts and verifies with jose but is refused for RSA-OAEP and A128GCM;
 *   every other compact output of the cookbook is refused too.
 *
 * No invalid vector may be accepted anywhere. A valid vector that is rejected must be listed in an
 * errata map below with its reason; a stale entry (the vector is now accepted) fails too. Totals go
 * to reports/security/corpora.json.
 */
import { createPrivateKey, createPublicKey, randomUUID } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { compactDecrypt, compactVerify } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKeystore, type KeystoreEntry } from '../../lib/adapters/local/keystore.js';
import { SoftwareKeyService } from '../../lib/adapters/local/software-keys.js';
import { type LoadedConfig, loadConfig } from '../../lib/config/load.js';
import type { PublicJwk } from '../../lib/config/schema.js';
import { decryptSealed, parseSealed } from '../../lib/envelope/jwe.js';
import { type ParsedSigned, parseSigned, type SignedHeader, verifySigned } from '../../lib/envelope/jws.js';
import { verifyCredential } from '../../lib/envelope/token.js';
import { ConfigError, PipelineError } from '../../lib/errors.js';
import type { DemoWorld } from '../../lib/testkit/world.js';
import { credentialFor, makeTempDir, removeTempDirs, testWorld } from '../support/world.js';
import { Harness, headerOf, Results, vectorsDir } from './support.js';

const dir = vectorsDir('security corpora');
const limits = { maxSealedBytes: 9 * 1024 * 1024 };

let world: DemoWorld;
const totals: Record<string, unknown> = {};
const results = new Results<Record<string, unknown>>('corpora.json', 'test/security/corpora.test.ts');

beforeAll(async () => {
  world = await testWorld();
});

afterAll(() => {
  if (dir) results.write({ vectorsDir: dir, totals });
  removeTempDirs();
});

function readJson<T>(relative: string): T {
  return JSON.parse(readFileSync(path.join(dir ?? '', relative), 'utf8')) as T;
}

type Outcome = { accepted: true } | { accepted: false; code: string };

async function outcome(run: () => Promise<unknown>): Promise<Outcome> {
  try {
    await run();
    return { accepted: true };
  } catch (error) {
    // Only classified pipeline errors are acceptable refusals: anything else would be retried.
    expect(error, 'unclassified error').toBeInstanceOf(PipelineError);
    return { accepted: false, code: (error as PipelineError).code };
  }
}

function count<K extends string>(into: Record<K, number>, key: K): void {
  into[key] = (into[key] ?? 0) + 1;
}

// ---------------------------------------------------------------------------------------------
// Wycheproof JWE.

interface JweTest {
  tcId: number;
  comment: string;
  jwe: string | Record<string, unknown>;
  result: 'valid' | 'invalid' | 'acceptable';
}
interface JweFile {
  testGroups: {
    comment: string;
    private: Record<string, unknown> & { alg?: string; kid?: string };
    tests: JweTest[];
  }[];
}

/**
 * Valid RSA-OAEP-256 vectors the contract refuses, and why. None is a forgery: the contract fixes
 * `enc` to A256GCM and requires `kid`, `cty: "JOSE"` and the `itk` routing header in the protected
 * header, which no published vector carries.
 */
const JWE_CONTRACT_ERRATA: ReadonlyMap<number, string> = new Map([
  [88, 'enc A128GCM: outside the enc allow-list (A256GCM only)'],
  [89, 'enc A192GCM: outside the enc allow-list (A256GCM only)'],
  [90, 'A256GCM but no kid / cty JOSE / itk routing header'],
  [91, 'enc A128CBC-HS256: outside the enc allow-list (A256GCM only)'],
  [92, 'enc A192CBC-HS384: outside the enc allow-list (A256GCM only)'],
  [93, 'enc A256CBC-HS512: outside the enc allow-list (A256GCM only)'],
  [121, 'enc A128GCM (jwe_rsa_oaep_modified "valid"): outside the enc allow-list'],
]);

describe.skipIf(!dir)('Wycheproof JWE', () => {
  const file = () => readJson<JweFile>('wycheproof/testvectors_v1/json_web_encryption_test.json');

  it('RSA-OAEP-256 groups through parseSealed + decryptSealed: no invalid vector accepted, valid refusals explained', async () => {
    const groups = file().testGroups.filter((g) => g.private.alg === 'RSA-OAEP-256');
    expect(groups.length).toBeGreaterThan(0);
    const tally = {
      total: 0,
      valid: 0,
      invalid: 0,
      validAccepted: 0,
      validRejected: 0,
      invalidAccepted: 0,
      invalidRejected: 0,
    };
    const byReason: Record<string, number> = {};
    const byCode: Record<string, number> = {};
    for (const group of groups) {
      const kid = group.private.kid ?? 'wycheproof';
      const entry = {
        kid,
        purpose: 'recipient-decrypt',
        owner: 'wycheproof',
        alg: 'RSA-OAEP-256',
        privateJwk: group.private,
      };
      const keys = new SoftwareKeyService(createKeystore([entry as unknown as KeystoreEntry]));
      for (const t of group.tests) {
        tally.total += 1;
        const compact = typeof t.jwe === 'string' ? t.jwe : JSON.stringify(t.jwe);
        const o = await outcome(() => decryptSealed(parseSealed(compact, limits), keys));
        if (!o.accepted) count(byCode, o.code);
        if (t.result === 'invalid') {
          tally.invalid += 1;
          expect(o.accepted, `tcId ${t.tcId}: invalid vector accepted`).toBe(false);
          if (o.accepted) tally.invalidAccepted += 1;
          else tally.invalidRejected += 1;
          continue;
        }
        tally.valid += 1;
        const reason = JWE_CONTRACT_ERRATA.get(t.tcId);
        if (o.accepted) {
          tally.validAccepted += 1;
          expect(reason, `tcId ${t.tcId}: errata entry is stale, the vector is accepted`).toBeUndefined();
        } else {
          tally.validRejected += 1;
          expect(
            reason,
            `tcId ${t.tcId}: valid vector rejected (${o.code}) without an errata entry`,
          ).toBeDefined();
          count(byReason, reason ?? '?');
        }
      }
    }
    expect(tally.invalidAccepted).toBe(0);
    totals.wycheproofJwe = {
      groups: groups.map((g) => g.comment),
      ...tally,
      validRejectedByReason: byReason,
      rejectedByCode: byCode,
    };
    console.log(`Wycheproof JWE (RSA-OAEP-256 groups): ${JSON.stringify(tally)}`);
  });

  it('every vector of the file through the running pipeline: none delivered, none reaches the key service', async () => {
    const h = new Harness(world, makeTempDir('itk3-corpora-jwe-'));
    const tests = file().testGroups.flatMap((g) => g.tests);
    const byStageCode: Record<string, number> = {};
    let delivered = 0;
    for (const t of tests) {
      const compact = typeof t.jwe === 'string' ? t.jwe : JSON.stringify(t.jwe);
      const r = await h.run({ credential: await credentialFor(world, 'X26', h.now()), sealed: compact });
      if (r.outcome.status === 'delivered') delivered += 1;
      count(byStageCode, `${r.outcome.stage}/${r.outcome.code}`);
      expect(r.outcome.status, `tcId ${t.tcId}`).toBe('rejected');
    }
    expect(delivered).toBe(0);
    // Nothing published carries our routing header: all are refused before any key is used.
    expect(h.keys.unwraps).toBe(0);
    totals.wycheproofJwePipeline = {
      total: tests.length,
      delivered,
      unwrapCalls: h.keys.unwraps,
      byStageCode,
    };
    console.log(
      `Wycheproof JWE through the pipeline: ${tests.length} submitted, ${delivered} delivered, ${h.keys.unwraps} unwrap calls`,
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Wycheproof JWS.

interface JwsTest {
  tcId: number;
  comment: string;
  jws: string | Record<string, unknown>;
  result: 'valid' | 'invalid' | 'acceptable';
}
interface JwsGroup {
  comment: string;
  public?: Record<string, string>;
  private?: Record<string, string>;
  tests: JwsTest[];
}

/**
 * Why the contract layer (parseSigned + verifySigned) refuses valid signature vectors. Every valid
 * vector is refused here, legitimately: published vectors carry neither `cty` fhir+xml/json nor the
 * `itk` routing header, many use algorithms outside RS512 / PS256 / ES256, some have an empty
 * payload (our payload is a Bundle, never empty), and two contain `?` although labelled valid.
 */
const JWS_CONTRACT_ERRATA: Readonly<Record<string, { code: string; tcIds: number[] }>> = {
  'alg outside the allow-list (HS256, RS256, RS384, PS384, PS512, ES512)': {
    code: 'SIGNATURE_ALG_NOT_ALLOWED',
    tcIds: [
      1, 33, 260, 261, 262, 263, 265, 266, 267, 321, 322, 323, 326, 327, 328, 345, 346, 347, 348, 349, 350,
      351, 352, 357, 358, 359, 376, 377,
    ],
  },
  'allowed alg but no cty fhir+xml/json and no itk routing header': {
    code: 'SIGNATURE_MALFORMED',
    tcIds: [18, 269, 270, 271, 273, 274, 275, 287, 288, 378],
  },
  'empty payload (a message signature always covers a Bundle)': {
    code: 'SIGNATURE_MALFORMED',
    tcIds: [259, 264, 268, 272, 320, 325],
  },
  'contains "?" although labelled valid (upstream labelling, SECURITY-CORPUS.md §6.2)': {
    code: 'SIGNATURE_MALFORMED',
    tcIds: [372, 373],
  },
};

/**
 * Valid vectors the signature layer refuses although their group key is registrable. The RFC 7520
 * groups give the key `alg` PS256 while the token is PS384; the registered key's alg is pinned.
 */
const JWS_SIGNATURE_ERRATA: ReadonlyMap<number, string> = new Map([
  [346, 'RFC 7520 Figure 20: key registered as PS256, token signed PS384 — alg pinned to the key'],
  [350, 'RFC 7520 Figure 20 (key_ops variant): key registered as PS256, token signed PS384'],
]);

/** The group key as the configuration would register it, or why it cannot be registered. */
function registrable(group: JwsGroup): { jwk: PublicJwk } | { why: string } {
  const k = group.public ?? group.private ?? {};
  const kid = String(k.kid ?? group.comment)
    .replace(/[^A-Za-z0-9._-]/g, '-')
    .slice(0, 64);
  const jwk = {
    kty: k.kty,
    kid,
    alg: k.alg,
    ...(k.n ? { n: k.n, e: k.e } : {}),
    ...(k.crv ? { crv: k.crv, x: k.x, y: k.y } : {}),
  } as PublicJwk;
  if (!['RS512', 'PS256', 'ES256'].includes(k.alg ?? '')) {
    return {
      why: `key ${k.kty ?? '?'} with alg ${k.alg ?? 'none'} cannot be registered (allow-list RS512, PS256, ES256)`,
    };
  }
  return { jwk };
}

function configWithSender(jwk: PublicJwk): LoadedConfig {
  const doc = structuredClone(world.configDoc);
  const federation = doc.issuers.find((i) => i.id === 'pharmacy-federation')!;
  federation.organisations = [...federation.organisations, 'WYC01'];
  doc.senders = [
    ...doc.senders,
    {
      ods: 'WYC01',
      clients: [{ issuer: 'pharmacy-federation', sub: 'wycheproof' }],
      signingKeys: [jwk],
      responseTarget: { type: 'folder', path: 'responses/WYC01' },
    },
  ];
  return loadConfig(doc);
}

describe.skipIf(!dir)('Wycheproof JWS through the verify stage checks', () => {
  it('no invalid vector accepted at either layer; valid refusals explained', async () => {
    const file = readJson<{ testGroups: JwsGroup[] }>(
      'wycheproof/testvectors_v1/json_web_signature_test.json',
    );
    const contractErrata = new Map<number, string>();
    for (const [reason, { tcIds }] of Object.entries(JWS_CONTRACT_ERRATA))
      for (const id of tcIds) contractErrata.set(id, reason);

    const contract = {
      total: 0,
      valid: 0,
      invalid: 0,
      validAccepted: 0,
      validRejected: 0,
      invalidAccepted: 0,
      invalidRejected: 0,
    };
    const signature = {
      run: 0,
      notRegistrable: 0,
      jsonSerialisation: 0,
      validAccepted: 0,
      validRejected: 0,
      invalidAccepted: 0,
      invalidRejected: 0,
    };
    const contractByReason: Record<string, number> = {};
    const notRegistrableByReason: Record<string, number> = {};
    const signatureRejectedByCode: Record<string, number> = {};

    for (const group of file.testGroups) {
      const reg = registrable(group);
      let config: LoadedConfig = world.config;
      if ('jwk' in reg) config = configWithSender(reg.jwk);
      for (const t of group.tests) {
        contract.total += 1;
        const compact = typeof t.jws === 'string' ? t.jws : JSON.stringify(t.jws);

        // Contract layer: exactly what the verify stage runs.
        const c = await outcome(async () => verifySigned(parseSigned(compact, limits), 'WYC01', config));
        if (t.result === 'invalid') {
          contract.invalid += 1;
          expect(c.accepted, `tcId ${t.tcId}: invalid vector accepted (contract)`).toBe(false);
          if (c.accepted) contract.invalidAccepted += 1;
          else contract.invalidRejected += 1;
        } else {
          contract.valid += 1;
          const reason = contractErrata.get(t.tcId);
          if (c.accepted) {
            contract.validAccepted += 1;
            expect(reason, `tcId ${t.tcId}: contract errata entry is stale`).toBeUndefined();
          } else {
            contract.validRejected += 1;
            expect(
              reason,
              `tcId ${t.tcId}: valid vector rejected (${c.code}) without an errata entry`,
            ).toBeDefined();
            const expectedCode = Object.values(JWS_CONTRACT_ERRATA).find((e) =>
              e.tcIds.includes(t.tcId),
            )?.code;
            expect(c.code, `tcId ${t.tcId}: rejected for another reason than its erratum`).toBe(expectedCode);
            count(contractByReason, reason ?? '?');
          }
        }

        // Signature layer: key registry, alg pinning and compactVerify on the unparsed header.
        if (!('jwk' in reg)) {
          signature.notRegistrable += 1;
          count(notRegistrableByReason, reg.why);
          continue;
        }
        if (typeof t.jws !== 'string') {
          signature.jsonSerialisation += 1;
          continue;
        }
        signature.run += 1;
        const s = await outcome(async () => {
          let header: Record<string, unknown>;
          try {
            header = headerOf(compact);
          } catch {
            header = {};
          }
          // No guards here on purpose: the segments decoded as forgivingly as Buffer does.
          const first = compact.indexOf('.');
          const last = compact.lastIndexOf('.');
          const parsed: ParsedSigned = {
            compact,
            payload: Buffer.from(compact.slice(first + 1, last), 'base64url'),
            signature: Buffer.from(compact.slice(last + 1), 'base64url'),
            header: header as unknown as SignedHeader,
            alg: header.alg as SignedHeader['alg'],
            kid: reg.jwk.kid,
            format: 'xml',
            routing: { from: 'WYC01', to: 'A83627', event: 'ITK009D', id: randomUUID() },
          };
          return verifySigned(parsed, 'WYC01', config);
        });
        if (!s.accepted) count(signatureRejectedByCode, s.code);
        if (t.result === 'invalid') {
          expect(s.accepted, `tcId ${t.tcId}: invalid vector accepted (signature layer)`).toBe(false);
          if (s.accepted) signature.invalidAccepted += 1;
          else signature.invalidRejected += 1;
        } else if (s.accepted) {
          signature.validAccepted += 1;
          expect(JWS_SIGNATURE_ERRATA.has(t.tcId), `tcId ${t.tcId}: signature errata entry is stale`).toBe(
            false,
          );
        } else {
          signature.validRejected += 1;
          expect(
            JWS_SIGNATURE_ERRATA.get(t.tcId),
            `tcId ${t.tcId}: valid vector rejected (${s.code}) without an erratum`,
          ).toBeDefined();
        }
      }
    }
    expect(contract.invalidAccepted + signature.invalidAccepted).toBe(0);
    totals.wycheproofJws = {
      contract: { ...contract, validRejectedByReason: contractByReason },
      signature: {
        ...signature,
        validRejectedErrata: Object.fromEntries(JWS_SIGNATURE_ERRATA),
        notRegistrableByReason,
        rejectedByCode: signatureRejectedByCode,
      },
    };
    console.log(`Wycheproof JWS contract layer: ${JSON.stringify(contract)}`);
    console.log(`Wycheproof JWS signature layer: ${JSON.stringify(signature)}`);
  });
});

// ---------------------------------------------------------------------------------------------
// RFC 7520.

interface CookbookJws {
  input: { key: Record<string, string>; alg: string };
  output: { compact?: string };
}

describe.skipIf(!dir)('RFC 7520', () => {
  const sigs = [
    { file: 'rfc7520/jws/4_1.rsa_v15_signature.json', section: '4.1', alg: 'RS256' },
    { file: 'rfc7520/jws/4_2.rsa-pss_signature.json', section: '4.2', alg: 'PS384' },
    { file: 'rfc7520/jws/4_3.ecdsa_signature.json', section: '4.3', alg: 'ES512' },
  ];
  const rows: Record<string, unknown>[] = [];
  afterAll(() => {
    totals.rfc7520 = rows;
  });

  for (const s of sigs) {
    it(`§${s.section} (${s.alg}) verifies with jose but is refused by our allow-list`, async () => {
      const v = readJson<CookbookJws>(s.file);
      const compact = v.output.compact ?? '';
      const { kty, crv, n, e, x, y } = v.input.key;
      const key = createPublicKey({ key: { kty, crv, n, e, x, y } as never, format: 'jwk' });
      await expect(compactVerify(compact, key, { algorithms: [s.alg] })).resolves.toBeDefined();

      const inner = await outcome(async () => parseSigned(compact, limits));
      expect(inner).toEqual({ accepted: false, code: 'SIGNATURE_ALG_NOT_ALLOWED' });
      const credential = await outcome(() => verifyCredential(compact, world.config, Date.now()));
      expect(credential).toEqual({ accepted: false, code: 'TOKEN_ALG_NOT_ALLOWED' });
      // Nor can the key be registered: the configuration admits RS512, PS256 and ES256 keys only.
      expect(() =>
        configWithSender({ kty, kid: 'rfc7520', alg: s.alg, n, e, crv, x, y } as unknown as PublicJwk),
      ).toThrow(ConfigError);
      rows.push({
        vector: `RFC 7520 §${s.section} ${s.alg}`,
        jose: 'verifies',
        messageSignature: inner,
        credential,
        reason: `${s.alg} is outside the allow-list (RS512, PS256, ES256)`,
      });
    });
  }

  it('§6 nesting (PS256 inside RSA-OAEP / A128GCM): jose decrypts and verifies; the pipeline refuses RSA-OAEP and A128GCM', async () => {
    const v = readJson<{
      sign: { input: { key: Record<string, string> }; output: { compact: string } };
      encrypt: { input: { key: Record<string, string> }; output: { compact: string } };
    }>('rfc7520/6.nesting_signatures_and_encryption.json');
    const compact = v.encrypt.output.compact;
    const { plaintext } = await compactDecrypt(
      compact,
      createPrivateKey({ key: v.encrypt.input.key as never, format: 'jwk' }),
      {
        keyManagementAlgorithms: ['RSA-OAEP'],
        contentEncryptionAlgorithms: ['A128GCM'],
      },
    );
    const inner = new TextDecoder().decode(plaintext);
    expect(inner).toBe(v.sign.output.compact);
    const { kty, n, e } = v.sign.input.key;
    await expect(
      compactVerify(inner, createPublicKey({ key: { kty, n, e } as never, format: 'jwk' }), {
        algorithms: ['PS256'],
      }),
    ).resolves.toBeDefined();

    expect(headerOf(compact)).toMatchObject({ alg: 'RSA-OAEP', enc: 'A128GCM' });
    const outer = await outcome(async () => parseSealed(compact, limits));
    expect(outer).toEqual({ accepted: false, code: 'ENVELOPE_HEADER_NOT_ALLOWED' });
    // The inner JWS has no kid, cty or itk: refused on its own too.
    const innerOutcome = await outcome(async () => parseSigned(inner, limits));
    expect(innerOutcome).toEqual({ accepted: false, code: 'SIGNATURE_MALFORMED' });

    // And through the running pipeline with a valid credential: refused at authorise, no key used.
    const h = new Harness(world, makeTempDir('itk3-corpora-7520-'));
    const r = await h.run({ credential: await credentialFor(world, 'X26', h.now()), sealed: compact });
    expect(r.outcome).toMatchObject({
      status: 'rejected',
      stage: 'authorise',
      code: 'ENVELOPE_HEADER_NOT_ALLOWED',
      itk3Code: '10009',
    });
    expect(h.keys.unwraps).toBe(0);
    rows.push({
      vector: 'RFC 7520 §6 PS256 in RSA-OAEP/A128GCM',
      jose: 'decrypts and verifies',
      sealed: outer,
      innerSignature: innerOutcome,
      pipeline: {
        stage: r.outcome.stage,
        code: r.outcome.code,
        itk3Code: r.outcome.itk3Code,
        unwrapCalls: h.keys.unwraps,
      },
      reason: 'alg RSA-OAEP (SHA-1) and enc A128GCM are outside the JWE allow-list (RSA-OAEP-256, A256GCM)',
    });
  });

  it('every other compact output of the cookbook is refused by the envelope parsers', async () => {
    const files: string[] = [];
    for (const sub of ['rfc7520/jws', 'rfc7520/jwe', 'rfc7520/curve25519', 'rfc7520/rfc7797']) {
      for (const f of readdirSync(path.join(dir ?? '', sub)))
        if (f.endsWith('.json')) files.push(`${sub}/${f}`);
    }
    const refused: Record<string, string> = {};
    for (const f of files) {
      const v = readJson<{ output?: { compact?: string } }>(f);
      const compact = v.output?.compact;
      if (typeof compact !== 'string') continue;
      const segments = compact.split('.').length;
      const o =
        segments === 5
          ? await outcome(async () => parseSealed(compact, limits))
          : await outcome(async () => parseSigned(compact, limits));
      expect(o.accepted, `${f} accepted`).toBe(false);
      refused[f] = o.accepted ? 'accepted' : o.code;
    }
    expect(Object.keys(refused).length).toBeGreaterThan(5);
    rows.push({ vector: 'RFC 7520 all other compact outputs', refused });
  });
});
