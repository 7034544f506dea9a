/**
 * Shared machinery of the security suites: hand-built JOSE objects that `jose` refuses to produce
 * (raw JWS signing with any header text, raw JWE encryption with any header, IV, tag or encrypted
 * key), an embedded pipeline with a key service that counts unwrap calls, a runner that submits one
 * message and reports its outcome, and the results files the report generator reads.
 *
 * Everything is real: real keys from the demo world, real RSA-OAEP / AES-GCM / ECDSA / RSA-PSS, the
 * deployed stage handlers. Nothing here prints tokens, keys or message bytes.
 */
import '../support/env.js';
import {
  constants,
  createCipheriv,
  createHmac,
  createPrivateKey,
  createPublicKey,
  type KeyObject,
  sign as nodeSign,
  publicEncrypt,
  randomBytes,
} from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { MemoryBlobStore, MemoryOnceStore } from '../../lib/adapters/local/memory-stores.js';
import { SoftwareKeyService } from '../../lib/adapters/local/software-keys.js';
import type { LoadedConfig } from '../../lib/config/load.js';
import type { EcPublicJwk, Ports } from '../../lib/ports/index.js';
import { EmbeddedPipeline, type MessageOutcome, VirtualClock } from '../../lib/runtime/embedded.js';
import type { DemoWorld } from '../../lib/testkit/world.js';

const projectRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const reportsDir = path.join(projectRoot, 'reports', 'security');

// ---------------------------------------------------------------------------------------------
// Encoding helpers.

export function b64u(data: string | Uint8Array): string {
  return Buffer.from(data).toString('base64url');
}

export function fromB64u(segment: string): Buffer {
  return Buffer.from(segment, 'base64url');
}

/** Replace segment `index` of a compact serialisation. */
export function replaceSegment(compact: string, index: number, segment: string): string {
  const parts = compact.split('.');
  parts[index] = segment;
  return parts.join('.');
}

/** Decoded protected header of a compact serialisation (test inspection only). */
export function headerOf(compact: string): Record<string, unknown> {
  return JSON.parse(fromB64u(compact.split('.')[0] ?? '').toString('utf8')) as Record<string, unknown>;
}

/** Decoded JSON payload of a compact JWS (test inspection only). */
export function claimsOf(compact: string): Record<string, unknown> {
  return JSON.parse(fromB64u(compact.split('.')[1] ?? '').toString('utf8')) as Record<string, unknown>;
}

// ---------------------------------------------------------------------------------------------
// Keys.

/** A private KeyObject from a keystore entry's private JWK. */
export function privateKeyOf(entry: { privateJwk: object }): KeyObject {
  return createPrivateKey({ key: entry.privateJwk as never, format: 'jwk' });
}

/** The public KeyObject of a keystore entry. */
export function publicKeyOf(entry: { privateJwk: object }): KeyObject {
  return createPublicKey(privateKeyOf(entry));
}

/** P-256 group order: `(r, n − s)` is the other valid ECDSA signature of the same message (A11). */
export const P256_N = BigInt('0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551');

/** Malleate a 64-byte P1363 ES256 signature segment into `(r, n − s)`. */
export function malleateEs256(signatureSegment: string): string {
  const sig = fromB64u(signatureSegment);
  if (sig.length !== 64) throw new Error('not an ES256 signature');
  const s = BigInt(`0x${sig.subarray(32).toString('hex')}`);
  const flipped = Buffer.from((P256_N - s).toString(16).padStart(64, '0'), 'hex');
  return b64u(Buffer.concat([sig.subarray(0, 32), flipped]));
}

// ---------------------------------------------------------------------------------------------
// Raw JOSE construction.

export type RawSignAlg = 'RS512' | 'PS256' | 'ES256' | 'HS256' | 'none' | 'None' | 'nOnE' | 'ES256-DER';

/**
 * Sign a compact JWS by hand. `header` and `payload` may be objects or raw JSON / byte strings (for
 * duplicate members and shapes `JSON.stringify` cannot make). `payloadSegment` overrides the
 * encoded payload (b64:false). Unknown algorithms (`none` in any spelling) give an empty signature.
 */
export function rawSign(opts: {
  header: object | string;
  payload?: object | string | Uint8Array;
  payloadSegment?: string;
  alg: RawSignAlg;
  key?: KeyObject | Uint8Array;
  signature?: Uint8Array;
}): string {
  const h = b64u(typeof opts.header === 'string' ? opts.header : JSON.stringify(opts.header));
  const p =
    opts.payloadSegment ??
    b64u(
      opts.payload instanceof Uint8Array || typeof opts.payload === 'string'
        ? opts.payload
        : JSON.stringify(opts.payload ?? {}),
    );
  const input = Buffer.from(`${h}.${p}`, 'ascii');
  let sig: Uint8Array = new Uint8Array(0);
  if (opts.signature) sig = opts.signature;
  else if (opts.alg === 'HS256') {
    sig = createHmac('sha256', opts.key as Uint8Array)
      .update(input)
      .digest();
  } else if (opts.alg === 'RS512') sig = nodeSign('sha512', input, opts.key as KeyObject);
  else if (opts.alg === 'PS256') {
    sig = nodeSign('sha256', input, {
      key: opts.key as KeyObject,
      padding: constants.RSA_PKCS1_PSS_PADDING,
      saltLength: 32,
    });
  } else if (opts.alg === 'ES256') {
    sig = nodeSign('sha256', input, { key: opts.key as KeyObject, dsaEncoding: 'ieee-p1363' });
  } else if (opts.alg === 'ES256-DER') {
    sig = nodeSign('sha256', input, { key: opts.key as KeyObject, dsaEncoding: 'der' });
  }
  return `${h}.${p}.${b64u(sig)}`;
}

/** Options of {@link rawEncrypt}. */
export interface RawEncryptOptions {
  /** Protected header as an object or raw JSON text. */
  header: object | string;
  plaintext: string | Uint8Array;
  /** Recipient RSA public key; the CEK is wrapped with RSA-OAEP (`oaepHash`, default SHA-256). */
  publicKey?: KeyObject;
  oaepHash?: 'sha1' | 'sha256';
  /** Use RSAES-PKCS1-v1_5 instead of OAEP (RSA1_5, A22). */
  pkcs1?: boolean;
  /** @default 32 random bytes */
  cek?: Buffer;
  /** Replace the wrapped key with these bytes (random encrypted_key, A22, A27). */
  encryptedKey?: Uint8Array;
  /** @default 12 random bytes */
  iv?: Buffer;
  /** Truncate the tag to this many bytes (A23). @default 16 */
  tagBytes?: number;
}

/**
 * Encrypt a compact JWE by hand with AES-256-GCM, AAD = ASCII of the encoded protected header, as
 * RFC 7516 §5.1 says — so any header text (duplicates, `zip`, deep nesting) produces a JWE whose
 * cryptography is valid and only the header is hostile.
 */
export function rawEncrypt(opts: RawEncryptOptions): string {
  const cek = opts.cek ?? randomBytes(32);
  const h = b64u(typeof opts.header === 'string' ? opts.header : JSON.stringify(opts.header));
  let encryptedKey: Uint8Array;
  if (opts.encryptedKey) encryptedKey = opts.encryptedKey;
  else if (!opts.publicKey) encryptedKey = new Uint8Array(0);
  else if (opts.pkcs1) {
    encryptedKey = publicEncrypt({ key: opts.publicKey, padding: constants.RSA_PKCS1_PADDING }, cek);
  } else {
    encryptedKey = publicEncrypt(
      { key: opts.publicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: opts.oaepHash ?? 'sha256' },
      cek,
    );
  }
  const iv = opts.iv ?? randomBytes(12);
  const aesKey = cek.length === 32 ? cek : Buffer.concat([cek, Buffer.alloc(32)]).subarray(0, 32);
  const cipher = createCipheriv('aes-256-gcm', aesKey, iv, { authTagLength: 16 });
  cipher.setAAD(Buffer.from(h, 'ascii'));
  const plaintext = typeof opts.plaintext === 'string' ? Buffer.from(opts.plaintext, 'utf8') : opts.plaintext;
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  const tag = cipher.getAuthTag().subarray(0, opts.tagBytes ?? 16);
  return [h, b64u(encryptedKey), b64u(iv), b64u(ciphertext), b64u(tag)].join('.');
}

// ---------------------------------------------------------------------------------------------
// The pipeline under attack.

/**
 * A key service that counts unwrap calls, key agreements included (A27: none before
 * authentication and authorisation).
 */
export class CountingKeys extends SoftwareKeyService {
  unwraps = 0;
  signs = 0;
  override async unwrapKey(kid: string, encryptedKey: Uint8Array) {
    this.unwraps += 1;
    return super.unwrapKey(kid, encryptedKey);
  }
  override async deriveSharedSecret(kid: string, ephemeralPublicKey: EcPublicJwk) {
    this.unwraps += 1;
    return super.deriveSharedSecret(kid, ephemeralPublicKey);
  }
  override async signEs256(kid: string, signingInput: Uint8Array) {
    this.signs += 1;
    return super.signEs256(kid, signingInput);
  }
}

/** What one submitted message came to. */
export interface RunResult {
  outcome: MessageOutcome;
  /** Unwrap calls the key service saw while this message was processed. */
  unwraps: number;
  /** HTTP answer of the front door when it refused the message (no trace was created). */
  http?: number;
  /** A response file for the trace exists (rejections and acknowledged deliveries). */
  responseFiles: string[];
  traceId?: string;
}

/** How a message reaches the pipeline: the HTTP front door, or direct SQS ingestion. */
export type Via = 'http' | 'sqs';

/** An embedded pipeline over the world, with a counting key service and a controllable clock. */
export class Harness {
  readonly world: DemoWorld;
  readonly keys: CountingKeys;
  readonly clock: VirtualClock;
  readonly pipeline: EmbeddedPipeline;
  readonly baseDir: string;

  constructor(
    world: DemoWorld,
    baseDir: string,
    opts: { config?: LoadedConfig; ports?: Partial<Ports>; now?: number } = {},
  ) {
    this.world = world;
    this.baseDir = baseDir;
    this.keys = new CountingKeys(world.keystore);
    this.clock = new VirtualClock(opts.now ?? Date.now());
    this.pipeline = new EmbeddedPipeline({
      config: opts.config ?? world.config,
      keys: this.keys,
      baseDir,
      clock: this.clock,
      ...(opts.ports ? { ports: opts.ports } : {}),
    });
  }

  /** Claim-check blobs held now (the harness runs on the in-memory state). */
  get blobCount(): number {
    return (this.pipeline.blobs as MemoryBlobStore).size;
  }

  /** Once-store keys held now (jti, duplicate ids, outcome markers). */
  get onceCount(): number {
    return (this.pipeline.once as MemoryOnceStore).size;
  }

  /** Receipt time of the next submission, ms since epoch. */
  now(): number {
    return this.clock.now();
  }

  /**
   * Submit one message and drain the pipeline. `authorization` overrides the `Bearer <token>`
   * attribute on the SQS path (for malformed bearer values); `beforeDrain` runs between receipt
   * and processing (to move the clock and prove receipt-time judgement).
   */
  async run(opts: {
    credential?: string;
    sealed: string;
    via?: Via;
    authorization?: string;
    beforeDrain?: () => void;
  }): Promise<RunResult> {
    const via = opts.via ?? 'http';
    const before = this.keys.unwraps;
    let traceId: string;
    if (via === 'http') {
      const result = await this.pipeline.submit(opts.credential ?? '', opts.sealed);
      if (result.status !== 202) {
        return {
          outcome: { traceId: '', status: 'rejected', stage: 'ingest', code: result.error },
          unwraps: this.keys.unwraps - before,
          http: result.status,
          responseFiles: [],
        };
      }
      traceId = result.trackingId;
    } else {
      const authorization =
        opts.authorization ?? (opts.credential !== undefined ? `Bearer ${opts.credential}` : undefined);
      traceId = this.pipeline.submitRaw(opts.sealed, authorization);
    }
    opts.beforeDrain?.();
    await this.pipeline.drain();
    const outcome = await this.pipeline.outcome(traceId);
    return {
      outcome,
      unwraps: this.keys.unwraps - before,
      responseFiles: responseFilesFor(this.baseDir, traceId),
      traceId,
    };
  }
}

/** Response files written for a trace, under any sender's or the unauthenticated folder. */
export function responseFilesFor(baseDir: string, traceId: string): string[] {
  const root = path.join(baseDir, 'responses');
  if (!existsSync(root)) return [];
  const out: string[] = [];
  for (const folder of readdirSync(root)) {
    for (const name of readdirSync(path.join(root, folder))) {
      if (name.startsWith(`${traceId}-`)) out.push(path.join(folder, name));
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Results files (reports/ is git-ignored; scripts/security-report.ts reads them).

/** One row of attacks.json / parsers.json. */
export interface AttackRow {
  id: string;
  attack: string;
  stage: string;
  outcome: string;
  itk3Code: string | null;
  code: string | null;
  /** HTTP status when the front door refused the message before any stage ran. */
  http?: number;
  /** Milliseconds, for the size-cap cases. */
  ms?: number;
}

/** Collects rows and writes them as one JSON document. */
export class Results<Row> {
  readonly rows: Row[] = [];
  readonly #file: string;
  readonly #suite: string;

  constructor(file: string, suite: string) {
    this.#file = path.join(reportsDir, file);
    this.#suite = suite;
  }

  add(row: Row): void {
    this.rows.push(row);
  }

  write(extra: Record<string, unknown> = {}): void {
    mkdirSync(reportsDir, { recursive: true });
    const doc = { suite: this.#suite, generatedAt: new Date().toISOString(), ...extra, rows: this.rows };
    writeFileSync(this.#file, `${JSON.stringify(doc, null, 2)}\n`);
  }
}

/** A row from a run result. */
export function rowFrom(id: string, attack: string, r: RunResult, ms?: number): AttackRow {
  return {
    id,
    attack,
    stage: r.outcome.stage ?? '-',
    outcome: r.outcome.status,
    itk3Code: r.outcome.itk3Code ?? null,
    code: r.outcome.code ?? null,
    ...(r.http !== undefined ? { http: r.http } : {}),
    ...(ms !== undefined ? { ms: Math.round(ms * 10) / 10 } : {}),
  };
}

/** The jose cookbook corpora folder, or undefined with a warning naming the suite. */
export function vectorsDir(suite: string): string | undefined {
  const dir =
    process.env.ITK3_JOSE_VECTORS_DIR ?? path.resolve(projectRoot, '../shared/fixtures/jose-cookbook');
  if (!existsSync(dir)) {
    console.warn(`[${suite}] skipped: JOSE vectors not found at ${dir} (set ITK3_JOSE_VECTORS_DIR)`);
    return undefined;
  }
  return dir;
}
