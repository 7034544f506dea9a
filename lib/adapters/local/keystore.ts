/**
 * The local keystore: a JSON file of private keys for the embedded runtime, the CLI and tests,
 * standing in for KMS. Each key has one purpose, one algorithm and an owner.
 *
 * The file holds private keys in the clear: it is written with mode 0600 and is for development
 * and demos only. In AWS the same key ids name KMS keys and no private key exists outside KMS.
 */
import { generateKeyPair as generateKeyPairCb, type KeyObject } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { promisify } from 'node:util';
import type { JWK } from 'jose';
import * as z from 'zod';
import { ConfigError } from '../../errors.js';

const generateKeyPair = promisify(generateKeyPairCb);

export const KEY_PURPOSES = ['recipient-decrypt', 'response-sign', 'issuer-sign', 'sender-sign'] as const;
export type KeyPurpose = (typeof KEY_PURPOSES)[number];

export const KEY_ALGS = ['RSA-OAEP-256', 'ECDH-ES+A256KW', 'ES256', 'RS512', 'PS256'] as const;
export type KeyAlg = (typeof KEY_ALGS)[number];

/** Which algorithms each purpose may use: one algorithm family per key (A24). */
const ALGS_BY_PURPOSE: Record<KeyPurpose, readonly KeyAlg[]> = {
  'recipient-decrypt': ['RSA-OAEP-256', 'ECDH-ES+A256KW'],
  'response-sign': ['ES256'],
  'issuer-sign': ['RS512', 'PS256', 'ES256'],
  'sender-sign': ['RS512', 'PS256', 'ES256'],
};

const b64u = z.string().regex(/^[A-Za-z0-9_-]+$/, 'base64url');

const PrivateJwkSchema = z.discriminatedUnion('kty', [
  z.looseObject({
    kty: z.literal('RSA'),
    n: b64u,
    e: b64u,
    d: b64u,
    p: b64u.optional(),
    q: b64u.optional(),
    dp: b64u.optional(),
    dq: b64u.optional(),
    qi: b64u.optional(),
  }),
  z.looseObject({ kty: z.literal('EC'), crv: z.literal('P-256'), x: b64u, y: b64u, d: b64u }),
]);

const KeystoreEntrySchema = z
  .object({
    kid: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'a key id: 1–64 of A-Z a-z 0-9 . _ -'),
    purpose: z.enum(KEY_PURPOSES),
    /** ODS code, issuer id or gateway name the key belongs to. */
    owner: z.string().min(1),
    alg: z.enum(KEY_ALGS),
    privateJwk: PrivateJwkSchema,
  })
  .strict()
  .superRefine((entry, ctx) => {
    if (!ALGS_BY_PURPOSE[entry.purpose].includes(entry.alg)) {
      ctx.addIssue({
        code: 'custom',
        message: `alg ${entry.alg} is not allowed for purpose ${entry.purpose}`,
      });
    }
    const wantKty = isEcAlg(entry.alg) ? 'EC' : 'RSA';
    if (entry.privateJwk.kty !== wantKty) {
      ctx.addIssue({ code: 'custom', message: `alg ${entry.alg} needs a ${wantKty} key` });
    }
  });

/** ES256 signing and ECDH-ES key agreement use P-256 keys; every other algorithm an RSA key. */
function isEcAlg(alg: KeyAlg): boolean {
  return alg === 'ES256' || alg === 'ECDH-ES+A256KW';
}

/** Keystore document shape. Duplicate kids are checked by {@link validateKeystore}. */
const KeystoreSchema = z.object({ version: z.literal(1), keys: z.array(KeystoreEntrySchema) }).strict();

export type KeystoreEntry = z.infer<typeof KeystoreEntrySchema>;
export type Keystore = z.infer<typeof KeystoreSchema>;

/** Options for {@link generateKey}. */
export interface GenerateKeyOptions {
  /**
   * RSA modulus length. Recipient keys default to 4096 (they protect message content for as long
   * as a copy exists); signing keys to 2048. 2048 makes tests fast.
   */
  modulusLength?: number;
}

/**
 * Generate a new key for `purpose`.
 *
 * @example
 * ```ts
 * const key = await generateKey('recipient-decrypt', 'RSA-OAEP-256', 'rx1-enc-2025', 'RX1');
 * ```
 */
export async function generateKey(
  purpose: KeyPurpose,
  alg: KeyAlg,
  kid: string,
  owner: string,
  opts: GenerateKeyOptions = {},
): Promise<KeystoreEntry> {
  if (!ALGS_BY_PURPOSE[purpose].includes(alg)) {
    throw new TypeError(`alg ${alg} is not allowed for purpose ${purpose}`);
  }
  let privateKey: KeyObject;
  if (isEcAlg(alg)) {
    ({ privateKey } = await generateKeyPair('ec', { namedCurve: 'P-256' }));
  } else {
    const modulusLength = opts.modulusLength ?? (purpose === 'recipient-decrypt' ? 4096 : 2048);
    if (modulusLength < 2048) throw new TypeError('RSA keys must be at least 2048 bits');
    ({ privateKey } = await generateKeyPair('rsa', { modulusLength, publicExponent: 0x10001 }));
  }
  const privateJwk = privateKey.export({ format: 'jwk' });
  return KeystoreEntrySchema.parse({ kid, purpose, owner, alg, privateJwk });
}

/** Build a validated keystore from entries (duplicate kids refused). */
export function createKeystore(entries: readonly KeystoreEntry[]): Keystore {
  return validateKeystore({ version: 1, keys: entries }, 'keystore');
}

/**
 * Validate a keystore document, listing every problem at once (schema and duplicate kids).
 * Throws {@link ConfigError}; `where` prefixes each problem (a file path or "keystore").
 */
function validateKeystore(json: unknown, where: string): Keystore {
  const parsed = KeystoreSchema.safeParse(json);
  const problems = parsed.success ? [] : parsed.error.issues.map((i) => formatIssue(i, where));
  // Checked on the raw input so it is reported alongside schema problems, not after them.
  const keys = (json as { keys?: unknown } | null)?.keys;
  if (Array.isArray(keys)) {
    const seen = new Set<unknown>();
    for (const [i, entry] of keys.entries()) {
      const kid = (entry as { kid?: unknown } | null)?.kid;
      if (typeof kid !== 'string') continue;
      if (seen.has(kid)) problems.push(`${where}: keys.${i}.kid: kid is listed twice`);
      seen.add(kid);
    }
  }
  if (!parsed.success || problems.length > 0) throw new ConfigError(problems);
  return parsed.data;
}

/**
 * Read and validate a keystore file. Throws {@link ConfigError} naming the problem; messages never
 * include key material.
 */
export function readKeystore(path: string): Keystore {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (cause) {
    throw new ConfigError([
      `cannot read keystore file ${path}: ${(cause as NodeJS.ErrnoException).code ?? 'error'}`,
    ]);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    // The parser's message can quote file content, which here is private key material.
    throw new ConfigError([`keystore file ${path} is not valid JSON`]);
  }
  return validateKeystore(json, path);
}

/** Write a keystore file readable by its owner only (mode 0600), creating its folder (0700). */
export function writeKeystore(path: string, ks: Keystore): void {
  const valid = createKeystore(ks.keys);
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  writeFileSync(path, `${JSON.stringify(valid, null, 2)}\n`, { mode: 0o600 });
  // `mode` applies only when the file is created: tighten an existing file too.
  chmodSync(path, 0o600);
}

/**
 * The public half of a keystore entry as a JWK: public members only, plus `kid`, `alg` and `use`
 * (`enc` for recipient keys, `sig` otherwise).
 */
export function publicJwk(entry: KeystoreEntry): JWK {
  const use = entry.purpose === 'recipient-decrypt' ? 'enc' : 'sig';
  const jwk = entry.privateJwk;
  if (jwk.kty === 'RSA') return { kty: 'RSA', kid: entry.kid, alg: entry.alg, use, n: jwk.n, e: jwk.e };
  return { kty: 'EC', kid: entry.kid, alg: entry.alg, use, crv: jwk.crv, x: jwk.x, y: jwk.y };
}

/** A JWKS of the keystore's public keys, optionally only those of some purposes. */
export function publicJwks(ks: Keystore, purposes?: readonly KeyPurpose[]): { keys: JWK[] } {
  return {
    keys: ks.keys.filter((e) => !purposes || purposes.includes(e.purpose)).map(publicJwk),
  };
}

/** Look up an entry by kid. */
export function findKey(ks: Keystore, kid: string): KeystoreEntry | undefined {
  return ks.keys.find((e) => e.kid === kid);
}

function formatIssue(issue: z.core.$ZodIssue, where: string): string {
  const path = issue.path.length > 0 ? issue.path.join('.') : '(document)';
  return `${where}: ${path}: ${issue.message}`;
}
