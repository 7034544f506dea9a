/**
 * Test factories for the envelope and key tests: a small world of real keys (2048-bit RSA for
 * speed), a validated configuration that uses them, a raw JWS signer for hostile tokens that
 * `jose` would refuse to produce, and the location of the shared JOSE vector corpora.
 */
import {
  constants,
  createHmac,
  createPrivateKey,
  createPublicKey,
  type KeyObject,
  sign as nodeSign,
  privateDecrypt,
} from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { generateKey, type KeystoreEntry, publicJwk } from '../../../lib/adapters/local/keystore.js';
import { type LoadedConfig, loadConfig } from '../../../lib/config/load.js';
import type { PipelineConfigInput, PublicJwk } from '../../../lib/config/schema.js';
import type { SealedParts } from '../../../lib/envelope/jwe.js';
import type { ItkRouting } from '../../../lib/envelope/routing.js';
import type { PipelineError, PipelineErrorCode } from '../../../lib/errors.js';
import type { KeyService } from '../../../lib/ports/index.js';

export const AUDIENCE = 'https://itk3.test.example/messages';

/** A signing identity: keystore entry, private KeyObject and public JWK. */
interface TestSigner {
  entry: KeystoreEntry;
  kid: string;
  alg: 'RS512' | 'PS256' | 'ES256';
  privateKey: KeyObject;
  publicKey: KeyObject;
  jwk: PublicJwk;
}

/** Everything the envelope tests share. */
export interface TestWorld {
  config: LoadedConfig;
  /** `gp0001-ehr`, NHS signed-JWT style: `iss` = `sub`, org in `ods`. PS256. */
  issuerA: TestSigner & { iss: string; id: string };
  /** A federated IdP: org under `org.ods`, roles in `roles`. ES256. */
  issuerB: TestSigner & { iss: string; id: string };
  /** A third issuer with an RS512 key. */
  issuerC: TestSigner & { iss: string; id: string };
  /** GP0001's message-signing key (PS256). */
  senderGp: TestSigner;
  /** X26's message-signing key (ES256). */
  senderX26: TestSigner;
  /** RX1's decryption key (RSA-OAEP-256, 2048 bits for speed). */
  recipient: { entry: KeystoreEntry; kid: string; publicKey: KeyObject; privateKey: KeyObject };
  /** The gateway's response-signing key (ES256). */
  response: { entry: KeystoreEntry; kid: string };
}

async function signer(
  purpose: 'issuer-sign' | 'sender-sign',
  alg: TestSigner['alg'],
  kid: string,
  owner: string,
): Promise<TestSigner> {
  const entry = await generateKey(purpose, alg, kid, owner, { modulusLength: 2048 });
  const privateKey = createPrivateKey({ key: entry.privateJwk, format: 'jwk' });
  return {
    entry,
    kid,
    alg,
    privateKey,
    publicKey: createPublicKey(privateKey),
    jwk: publicJwk(entry) as PublicJwk,
  };
}

/** Build a fresh world: new keys every call. */
export async function makeWorld(overrides: Partial<PipelineConfigInput['limits']> = {}): Promise<TestWorld> {
  const [a, b, c, gp, x26, rec, resp] = await Promise.all([
    signer('issuer-sign', 'PS256', 'iss-a-1', 'nhs-jwt'),
    signer('issuer-sign', 'ES256', 'iss-b-1', 'fed-idp'),
    signer('issuer-sign', 'RS512', 'iss-c-1', 'rs512-iss'),
    signer('sender-sign', 'PS256', 'gp0001-sig-1', 'GP0001'),
    signer('sender-sign', 'ES256', 'x26-sig-1', 'X26'),
    generateKey('recipient-decrypt', 'RSA-OAEP-256', 'rx1-enc-1', 'RX1', { modulusLength: 2048 }),
    generateKey('response-sign', 'ES256', 'gw-resp-1', 'GW001'),
  ]);
  const folder = { type: 'folder' as const, path: '/tmp/itk3-test' };
  const doc: PipelineConfigInput = {
    audience: AUDIENCE,
    gatewayOds: 'GW001',
    responseSigning: { kid: resp.kid },
    unauthenticatedResponseTarget: folder,
    limits: { ...overrides },
    issuers: [
      {
        id: 'nhs-jwt',
        issuer: 'gp0001-ehr',
        organisations: ['GP0001'],
        requireIssEqualsSub: true,
        keys: [a.jwk],
      },
      {
        id: 'fed-idp',
        issuer: 'https://idp.test.example',
        organisations: ['X26'],
        organisationClaim: 'org.ods',
        rolesClaim: 'roles',
        keys: [b.jwk],
      },
      { id: 'rs512-iss', issuer: 'x26-pms', organisations: ['X26'], keys: [c.jwk] },
    ],
    senders: [
      {
        ods: 'GP0001',
        clients: [{ issuer: 'nhs-jwt', sub: 'gp0001-ehr' }],
        signingKeys: [gp.jwk],
        responseTarget: folder,
      },
      {
        ods: 'X26',
        // The subjects the token tests mint for X26, each under its own issuer.
        clients: [
          { issuer: 'rs512-iss', sub: 'x26-pms' },
          ...['s', 'user-1', 'clinician-42'].map((sub) => ({ issuer: 'fed-idp', sub })),
        ],
        signingKeys: [x26.jwk],
        responseTarget: folder,
      },
    ],
    recipients: [{ ods: 'RX1', keys: [{ kid: rec.kid }], target: folder }],
    rules: [],
    delegations: [],
  };
  const recipientPrivate = createPrivateKey({ key: rec.privateJwk, format: 'jwk' });
  return {
    config: loadConfig(doc),
    issuerA: { ...a, iss: 'gp0001-ehr', id: 'nhs-jwt' },
    issuerB: { ...b, iss: 'https://idp.test.example', id: 'fed-idp' },
    issuerC: { ...c, iss: 'x26-pms', id: 'rs512-iss' },
    senderGp: gp,
    senderX26: x26,
    recipient: {
      entry: rec,
      kid: rec.kid,
      privateKey: recipientPrivate,
      publicKey: createPublicKey(recipientPrivate),
    },
    response: { entry: resp, kid: resp.kid },
  };
}

export const ROUTING: ItkRouting = {
  from: 'GP0001',
  to: 'RX1',
  event: 'ITK007C',
  id: 'f1f9d0c2-8d8d-4b5e-a1c5-1b1b1b1b1b1b',
};

export function b64u(data: string | Uint8Array): string {
  return Buffer.from(data).toString('base64url');
}

/** Algorithms the raw signer can produce, including ones the contract refuses. */
export type RawAlg = 'RS512' | 'PS256' | 'ES256' | 'HS256' | 'none' | string;

/**
 * Sign a compact JWS by hand. `header` and `payload` may be objects or raw JSON text (for
 * duplicate members and other shapes `JSON.stringify` cannot make). `key` is a private KeyObject,
 * or HMAC secret bytes for HS256. Unknown algorithms produce an empty signature.
 */
export function rawSign(
  header: object | string,
  payload: object | string | Uint8Array,
  key: KeyObject | Uint8Array | undefined,
  alg: RawAlg,
): string {
  const h = b64u(typeof header === 'string' ? header : JSON.stringify(header));
  const p = b64u(
    payload instanceof Uint8Array || typeof payload === 'string' ? payload : JSON.stringify(payload),
  );
  const input = Buffer.from(`${h}.${p}`, 'ascii');
  let sig: Uint8Array = new Uint8Array(0);
  if (alg === 'HS256')
    sig = createHmac('sha256', key as Uint8Array)
      .update(input)
      .digest();
  else if (alg === 'RS512') sig = nodeSign('sha512', input, key as KeyObject);
  else if (alg === 'PS256') {
    sig = nodeSign('sha256', input, {
      key: key as KeyObject,
      padding: constants.RSA_PKCS1_PSS_PADDING,
      saltLength: 32,
    });
  } else if (alg === 'ES256')
    sig = nodeSign('sha256', input, { key: key as KeyObject, dsaEncoding: 'ieee-p1363' });
  return `${h}.${p}.${b64u(sig)}`;
}

/** Replace segment `index` of a compact serialisation. */
export function replaceSegment(compact: string, index: number, segment: string): string {
  const parts = compact.split('.');
  parts[index] = segment;
  return parts.join('.');
}

/** Flip one bit in the decoded bytes of segment `index` (byte `at`, default the middle). */
export function flipBit(compact: string, index: number, at?: number): string {
  const parts = compact.split('.');
  const bytes = Buffer.from(parts[index] ?? '', 'base64url');
  const i = at ?? Math.floor(bytes.length / 2);
  bytes[i] = (bytes[i] ?? 0) ^ 0x01;
  parts[index] = bytes.toString('base64url');
  return parts.join('.');
}

/** Decode the protected header of a compact serialisation (test inspection only). */
export function headerOf(compact: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(compact.split('.')[0] ?? '', 'base64url').toString('utf8'));
}

/** Assert that `action` rejects with an error of `type` carrying `code`; returns the error. */
export async function expectCode<T extends PipelineError>(
  action: Promise<unknown> | (() => unknown),
  type: abstract new (...args: never[]) => T,
  code: PipelineErrorCode,
): Promise<T> {
  let caught: unknown;
  try {
    await (typeof action === 'function' ? action() : action);
  } catch (error) {
    caught = error;
  }
  expect(caught, `expected ${code}`).toBeInstanceOf(type);
  expect((caught as T).code).toBe(code);
  return caught as T;
}

// ---------------------------------------------------------------------------------------------
// Shared JOSE vector corpora (SECURITY-CORPUS.md §6): read in place, never copied.

const projectRoot = fileURLToPath(new URL('../../../', import.meta.url));

/** Root of the vector corpora: `ITK3_JOSE_VECTORS_DIR`, else `../shared/fixtures/jose-cookbook`. */
const VECTORS_DIR =
  process.env.ITK3_JOSE_VECTORS_DIR ?? path.resolve(projectRoot, '../shared/fixtures/jose-cookbook');

/**
 * Load a vector file, or return `undefined` and warn that its suite is skipped. Callers pass the
 * result's presence to `describe.skipIf`.
 */
export function loadVectors<T>(relative: string, suite: string): T | undefined {
  const file = path.join(VECTORS_DIR, relative);
  if (!existsSync(file)) {
    console.warn(
      `[vectors] skipped "${suite}": ${file} is absent (set ITK3_JOSE_VECTORS_DIR to the jose-cookbook folder)`,
    );
    return undefined;
  }
  return JSON.parse(readFileSync(file, 'utf8')) as T;
}

/**
 * A test-only key service around one RSA private key with a chosen OAEP hash. RFC 7520 §5.2 uses
 * SHA-1 OAEP, which the real key services (KMS, {@link SoftwareKeyService}) never accept.
 */
export class OaepTestKeyService implements KeyService {
  constructor(
    private readonly privateKey: KeyObject,
    private readonly oaepHash: 'sha1' | 'sha256',
  ) {}

  async unwrapKey(
    _kid: string,
    encryptedKey: Uint8Array,
  ): Promise<{ ok: true; cek: Uint8Array } | { ok: false }> {
    try {
      const cek = privateDecrypt(
        { key: this.privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: this.oaepHash },
        encryptedKey,
      );
      return { ok: true, cek };
    } catch {
      return { ok: false };
    }
  }

  /** RSA only: no key agreement, like an unknown kid. */
  async deriveSharedSecret(): Promise<{ ok: false }> {
    return { ok: false };
  }

  async signEs256(): Promise<Uint8Array> {
    throw new Error('not a signing key service');
  }

  async publicKeySpki(): Promise<Uint8Array> {
    return createPublicKey(this.privateKey).export({ format: 'der', type: 'spki' });
  }
}

/**
 * Split a compact JWE into the parts {@link decryptSealed} needs, without the contract's header
 * allow-list: lets vector tests exercise the AES-GCM path on headers the contract refuses.
 */
export function rawSealedParts(compact: string, kid = 'vector'): SealedParts {
  const [h = '', k = '', iv = '', ct = '', tag = ''] = compact.split('.');
  return {
    kid,
    encodedProtectedHeader: h,
    encryptedKey: Buffer.from(k, 'base64url'),
    iv: Buffer.from(iv, 'base64url'),
    ciphertext: Buffer.from(ct, 'base64url'),
    tag: Buffer.from(tag, 'base64url'),
  };
}
