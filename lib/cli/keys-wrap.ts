/**
 * `itk3 keys wrap`: make a recipient key for the cached key mode (docs/KEY-MODES.md) and print what
 * a deployment needs — the wrapped private key and the public JWK — as JSON. Optionally collect the
 * results in a wrapped-keys file, the file the CDK app reads with `-c itk3:wrappedKeysFile=FILE`.
 *
 * Nothing printed or written here is secret: the private key exists in plaintext only inside KMS,
 * and the blob opens only with `kms:Decrypt` on the wrapping key under the kid's encryption context.
 * The AWS SDK is loaded only when the command runs, like the other AWS commands (`ops.ts`), so the
 * CLI starts without it.
 */
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import type { RecipientKeyPairSpec, WrappedKeyRecord } from '../adapters/aws/key-wrapping.js';
import { UsageError } from '../errors.js';

const KEYS_WRAP_USAGE =
  'usage: itk3 keys wrap --wrapping-key KEY --kid KID [--purpose recipient-decrypt|response-sign] [--spec RSA_2048|RSA_3072|RSA_4096|ECC_NIST_P256] [--out FILE [--force]]';

/** What a wrapped key is for (`itk3:purpose` of its encryption context). */
const PURPOSES = ['recipient-decrypt', 'response-sign'] as const;

/** Same rule as a kid in the configuration (lib/config/schema.ts), so every wrapped kid is usable. */
const KID = /^[A-Za-z0-9._-]{1,64}$/;

/** Key-pair specs accepted on the command line (kept here so a typo is a usage error without the SDK). */
const SPECS: readonly RecipientKeyPairSpec[] = ['RSA_2048', 'RSA_3072', 'RSA_4096', 'ECC_NIST_P256'];

/**
 * A KMS key reference KMS accepts for `KeyId`: key id (UUID or multi-Region `mrk-…`), key ARN,
 * alias name or alias ARN. Checked before any call so a pasted kid or a truncated ARN is a usage error.
 */
const KMS_KEY_REF =
  /^(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32}|alias\/[A-Za-z0-9/_-]{1,250}|arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(?:key\/(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32})|alias\/[A-Za-z0-9/_-]{1,250}))$/;

/** Fields of one entry of a wrapped-keys file (a {@link WrappedKeyRecord}, checked for shape only). */
export interface WrappedKeysFileEntry {
  kid: string;
  wrappedPrivateKey: string;
  /** The public JWK as printed; its content is checked where it is used (the CDK construct). */
  publicJwk?: Readonly<Record<string, unknown>>;
  wrappingKeyArn?: string;
  /** `response-sign` for the response-signing key; absent for a recipient key. */
  purpose?: 'response-sign';
}

const ENTRY_FIELDS = new Set(['kid', 'wrappedPrivateKey', 'publicJwk', 'wrappingKeyArn', 'purpose']);

/**
 * Parse a wrapped-keys file: a JSON array of `keys wrap` outputs (what `--out` writes), or a single
 * output (`itk3 keys wrap … > FILE`). Every problem is reported, each prefixed with `where`.
 * Only the shape is checked here; base64, kid coverage and the JWK are checked by the CDK construct.
 *
 * @example
 * ```ts
 * const { entries, problems } = parseWrappedKeysFile(readFileSync('wrapped.json', 'utf8'), 'wrapped.json');
 * ```
 */
export function parseWrappedKeysFile(
  text: string,
  where: string,
): { entries: WrappedKeysFileEntry[]; problems: string[] } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return { entries: [], problems: [`${where}: not valid JSON`] };
  }
  const items = Array.isArray(parsed) ? parsed : [parsed];
  const entries: WrappedKeysFileEntry[] = [];
  const problems: string[] = [];
  const seen = new Set<string>();
  for (const [i, item] of items.entries()) {
    const at = `${where}[${i}]`;
    if (typeof item !== 'object' || item === null || Array.isArray(item)) {
      problems.push(`${at}: must be an object { kid, wrappedPrivateKey, publicJwk, wrappingKeyArn }`);
      continue;
    }
    const entry = item as Record<string, unknown>;
    const before = problems.length;
    for (const field of Object.keys(entry)) {
      if (!ENTRY_FIELDS.has(field)) problems.push(`${at}: unknown field "${field}"`);
    }
    const { kid, wrappedPrivateKey, publicJwk, wrappingKeyArn, purpose } = entry;
    if (typeof kid !== 'string' || kid === '') problems.push(`${at}.kid: must be a non-empty string`);
    if (typeof wrappedPrivateKey !== 'string' || wrappedPrivateKey === '') {
      problems.push(`${at}.wrappedPrivateKey: must be a non-empty string`);
    }
    if (
      publicJwk !== undefined &&
      (typeof publicJwk !== 'object' || publicJwk === null || Array.isArray(publicJwk))
    ) {
      problems.push(`${at}.publicJwk: must be a JWK object`);
    }
    if (wrappingKeyArn !== undefined && typeof wrappingKeyArn !== 'string') {
      problems.push(`${at}.wrappingKeyArn: must be a string`);
    }
    if (purpose !== undefined && purpose !== 'response-sign') {
      problems.push(`${at}.purpose: must be "response-sign" (or absent for a recipient key)`);
    }
    if (typeof kid === 'string' && seen.has(kid)) problems.push(`${at}.kid: "${kid}" appears twice`);
    if (typeof kid === 'string') seen.add(kid);
    if (problems.length === before) entries.push(entry as unknown as WrappedKeysFileEntry);
  }
  return { entries, problems };
}

export interface KeysWrapOptions {
  wrappingKey?: string;
  kid?: string;
  /** `recipient-decrypt` (default) or `response-sign`. */
  purpose?: string;
  /** @default RSA_4096, or ECC_NIST_P256 for `response-sign` */
  spec?: string;
  out?: string;
  force?: boolean;
}

/**
 * Run `itk3 keys wrap`. Bad arguments throw a `UsageError` (exit 2) before KMS is called; a KMS
 * refusal is a `KeyWrappingError` with the reason (exit 1).
 *
 * @param env - the AWS environment the KMS client is built from (tests pass their own)
 */
export async function keysWrapCommand(
  values: KeysWrapOptions,
  write: (line: string) => void,
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  const { wrappingKey } = values;
  const { kid, out } = values;
  const purpose = values.purpose ?? 'recipient-decrypt';
  const signing = purpose === 'response-sign';
  const spec = values.spec ?? (signing ? 'ECC_NIST_P256' : 'RSA_4096');
  const problems: string[] = [];
  if (!wrappingKey) problems.push('--wrapping-key is required (a symmetric KMS key: key id, ARN or alias)');
  else if (!KMS_KEY_REF.test(wrappingKey)) {
    problems.push(`--wrapping-key "${wrappingKey}" is not a KMS key id, key ARN, alias name or alias ARN`);
  }
  if (!kid) problems.push('--kid is required (the recipient key id senders will use)');
  else if (!KID.test(kid)) problems.push(`--kid "${kid}" is not a key id: 1–64 of A-Z a-z 0-9 . _ -`);
  if (!(PURPOSES as readonly string[]).includes(purpose))
    problems.push(`--purpose must be one of ${PURPOSES.join(', ')}`);
  if (!(SPECS as readonly string[]).includes(spec))
    problems.push(`--spec must be one of ${SPECS.join(', ')}`);
  else if (signing && spec !== 'ECC_NIST_P256')
    problems.push(`--purpose response-sign makes an ES256 key: --spec ECC_NIST_P256 only, not ${spec}`);
  if (values.force && !out) problems.push('--force only applies with --out');
  if (problems.length > 0) throw new UsageError(`${problems.join('; ')}\n${KEYS_WRAP_USAGE}`);

  // Read the file before calling KMS: a bad file or a reused kid must not cost a key pair.
  const existing = out ? readForUpdate(out, kid!, values.force === true) : undefined;

  const { generateWrappedKeyRecord, kmsClientFromEnv } = await import('../adapters/aws/key-wrapping.js');
  const record: WrappedKeyRecord = await generateWrappedKeyRecord(kmsClientFromEnv(env), {
    wrappingKeyId: wrappingKey!,
    kid: kid!,
    keyPairSpec: spec as RecipientKeyPairSpec,
    ...(signing ? { purpose: 'response-sign' as const } : {}),
  });

  if (out && existing) {
    const next = [...existing.filter((e) => e.kid !== record.kid), record];
    // Write then rename, so an interrupted run never leaves half a file the CDK app would read.
    const temp = `${out}.${process.pid}.tmp`;
    writeFileSync(temp, `${JSON.stringify(next, null, 2)}\n`);
    renameSync(temp, out);
    process.stderr.write(
      `kid ${record.kid} added to ${out} (${next.length} wrapped key${next.length === 1 ? '' : 's'}); publish its publicJwk to senders${signing ? ' (the response-signing key)' : ''}\n`,
    );
  }
  write(JSON.stringify(record, null, 2));
  return 0;
}

/** The entries already in `file` (none if it does not exist), refusing to replace `kid` unless forced. */
function readForUpdate(file: string, kid: string, force: boolean): WrappedKeysFileEntry[] {
  if (!existsSync(file)) return [];
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (cause) {
    throw new UsageError(`cannot read ${file}: ${(cause as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  const { entries, problems } = parseWrappedKeysFile(text, file);
  if (problems.length > 0) throw new UsageError(`${file} is not a wrapped-keys file: ${problems.join('; ')}`);
  if (!force && entries.some((e) => e.kid === kid)) {
    // A new pair under a kid senders already have would make their messages undecryptable.
    throw new UsageError(
      `${file} already holds kid ${kid}; a new key pair under the same kid breaks senders who have its public key — wrap a new kid (rotation), or pass --force`,
    );
  }
  return entries;
}
