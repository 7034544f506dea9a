/**
 * The sender's side and the batch run: `itk3 token` (a credential), `itk3 seal` (sign then encrypt
 * a Bundle), and `itk3 process` (sealed messages through the embedded pipeline, state kept in the
 * `--out` folder so a re-run finishes what a killed run left).
 */
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { findKey, publicJwk, readKeystore } from '../adapters/local/keystore.js';
import { SoftwareKeyService } from '../adapters/local/software-keys.js';
import type { SqliteState } from '../adapters/local/sqlite-state.js';
import { loadConfigFile } from '../config/load.js';
import { isSigningAlg } from '../envelope/contract.js';
import { sealMessage } from '../envelope/seal.js';
import { mintToken } from '../envelope/token.js';
import { UsageError } from '../errors.js';
import { sha256Hex } from '../hashing.js';
import { trimAsciiWhitespace } from '../ingest.js';
import { parseBundle } from '../itk3/index.js';
import { type MessageOutcome, type OutcomeView, outcomeView } from '../runtime/embedded.js';
import {
  commandLinePipeline,
  commandLinePool,
  openRunState,
  reconcileDeliveryFolders,
  runFiles,
} from './ops.js';

type Write = (line: string) => void;

export interface TokenOptions {
  keystore: string;
  kid?: string;
  iss?: string;
  sub?: string;
  aud?: string;
  org?: string;
  orgClaim: string;
  act?: string[];
  lifetime: string;
}

export async function tokenCommand(values: TokenOptions, write: Write): Promise<number> {
  for (const name of ['kid', 'iss', 'sub', 'aud', 'org'] as const) {
    if (!values[name]) throw new UsageError(`--${name} is required`);
  }
  const entry = findKey(readKeystore(values.keystore), values.kid!);
  if (!entry) throw new UsageError(`no key ${values.kid} in ${values.keystore}`);
  if (entry.purpose !== 'issuer-sign' || !isSigningAlg(entry.alg)) {
    throw new UsageError(`key ${values.kid} is a ${entry.purpose} key, not an issuer signing key`);
  }
  const lifetime = Number(values.lifetime);
  if (!Number.isInteger(lifetime) || lifetime <= 0 || lifetime > 300)
    throw new UsageError('--lifetime must be 1–300 seconds');
  write(
    await mintToken({
      key: entry.privateJwk,
      kid: entry.kid,
      alg: entry.alg,
      iss: values.iss!,
      sub: values.sub!,
      aud: values.aud!,
      organisation: values.org!,
      organisationClaim: values.orgClaim,
      lifetimeSeconds: lifetime,
      ...(values.act ? { actors: values.act } : {}),
    }),
  );
  return 0;
}

export interface SealOptions {
  keystore: string;
  signerKid?: string;
  recipientKid?: string;
  recipientJwks?: string;
  to?: string;
  out?: string;
}

export async function sealCommand(file: string, values: SealOptions, write: Write): Promise<number> {
  if (!values.signerKid) throw new UsageError('--signer-kid is required');
  if (!values.to) throw new UsageError('--to is required (the recipient ODS code)');
  const bytes = readInput(file);
  const format = sniffFormat(bytes, file);
  const msg = parseBundle(bytes, format);
  const ks = readKeystore(values.keystore);
  const signer = findKey(ks, values.signerKid);
  if (signer?.purpose !== 'sender-sign' || !isSigningAlg(signer.alg)) {
    throw new UsageError(`no sender signing key ${values.signerKid} in ${values.keystore}`);
  }
  const recipient = recipientKey(values.recipientJwks, values.recipientKid, ks);
  const sealed = await sealMessage({
    bundle: bytes,
    format,
    routing: {
      from: msg.header.senderOds ?? signer.owner,
      to: values.to,
      event: msg.header.event.code,
      id: msg.header.id,
    },
    signer: { key: signer.privateJwk, kid: signer.kid, alg: signer.alg },
    recipient,
  });
  if (values.out) writeFileSync(values.out, `${sealed}\n`);
  else write(sealed);
  return 0;
}

function recipientKey(
  jwksFile: string | undefined,
  kid: string | undefined,
  ks: ReturnType<typeof readKeystore>,
) {
  if (jwksFile) {
    let jwks: { keys?: { kid?: string; use?: string; kty?: string; crv?: string; alg?: string }[] };
    try {
      jwks = JSON.parse(readInput(jwksFile).toString());
    } catch (error) {
      if (error instanceof UsageError) throw error;
      // Not the parser's message: it quotes the file's first characters (the wrong file may be a key).
      throw new UsageError(`--recipient-jwks ${jwksFile} is not valid JSON (a JWKS: {"keys": [...]})`);
    }
    // An encryption key: RSA (RSA-OAEP-256) or P-256 (ECDH-ES+A256KW); the JWE alg follows the key.
    const keys = (jwks.keys ?? []).filter(
      (k) =>
        (k.kty === 'RSA' || (k.kty === 'EC' && k.crv === 'P-256')) &&
        k.use !== 'sig' &&
        (k.alg === undefined || k.alg === 'RSA-OAEP-256' || k.alg === 'ECDH-ES+A256KW') &&
        (kid === undefined || k.kid === kid),
    );
    if (keys.length !== 1) {
      throw new UsageError(
        '--recipient-jwks must hold exactly one matching RSA or P-256 encryption key (add --recipient-kid)',
      );
    }
    const key = keys[0]!;
    return { key: key as Record<string, string>, kid: key.kid! };
  }
  if (!kid) throw new UsageError('give --recipient-kid (a key in the keystore) or --recipient-jwks FILE');
  const entry = findKey(ks, kid);
  if (entry?.purpose !== 'recipient-decrypt') throw new UsageError(`no recipient key ${kid} in the keystore`);
  return { key: publicJwk(entry) as Record<string, string>, kid };
}

/** How many accepted messages `process` lets wait before it drains (bounds memory and backlog). */
const PROCESS_WINDOW = 64;
/** How many submissions `process` makes at once (they share one commit). */
const SUBMIT_GROUP = 16;

export interface ProcessOptions {
  config?: string;
  keystore: string;
  out: string;
  /** Worker threads for the CPU-heavy steps (default: one per core; 0 = none). */
  workers?: string;
}

export async function processCommand(
  paths: readonly string[],
  values: ProcessOptions,
  write: Write,
): Promise<number> {
  if (!values.config) throw new UsageError('--config is required');
  if (paths.length === 0) throw new UsageError('usage: itk3 process FILE_OR_FOLDER… --config F');
  const config = loadConfigFile(values.config);
  const keys = new SoftwareKeyService(readKeystore(values.keystore));
  const sealedFiles = paths.flatMap(listSealed);
  if (sealedFiles.length === 0) throw new UsageError('no .jwe files found');
  const pool = await commandLinePool(values.workers, values.keystore, config);
  let state: SqliteState;
  try {
    state = openRunState(values.out);
  } catch (error) {
    // A state file that will not open (a newer format, unwritable) leaves no worker behind.
    await pool?.close();
    throw error;
  }
  const pipeline = commandLinePipeline(config, keys, state, pool ? { pool } : {});
  const stop = () => pipeline.stop();
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  try {
    // Whatever a killed earlier run left in flight finishes in this one.
    reconcileDeliveryFolders(config, runFiles(values.out).dir);
    pipeline.resume();
    let failures = 0;
    const reported = new Set<string>();
    const report = (file: string, o: MessageOutcome) => {
      if (reported.has(o.traceId)) return;
      reported.add(o.traceId);
      if (o.status !== 'delivered') failures += 1;
      write(JSON.stringify({ file: basename(file), ...outcomeView(o) }));
    };
    // One line per message as it finishes, not at the end.
    pipeline.onOutcome = (o) => {
      const submitted = state.submissionOf(o.traceId);
      if (submitted) report(submitted.file, o);
    };
    let waiting = 0;
    // Submissions go in groups, as concurrent senders would: one commit (one fsync) per group.
    let group: { file: string; key: string; sealed: string; credential: string }[] = [];
    const submitGroup = async () => {
      const results = await Promise.all(
        group.map(async ({ file, key, sealed, credential }) => {
          const remember = (traceId: string) => state.recordSubmission(key, traceId, file);
          if (!credential) return { file, traceId: pipeline.submitRaw(sealed, undefined, remember) };
          const result = await pipeline.submit(credential, sealed, remember);
          return result.status === 202
            ? { file, traceId: result.trackingId }
            : { file, traceId: undefined, refusal: result.error };
        }),
      );
      group = [];
      if (state.failure) throw state.failure;
      for (const result of results) {
        if (result.traceId) {
          waiting += 1;
          continue;
        }
        failures += 1;
        // Turned away at the front door (no tracking id): the front door's own reason.
        const refused: OutcomeView = {
          trackingId: null,
          messageId: null,
          status: 'refused',
          stage: 'ingest',
          itk3Code: null,
          error: 'refusal' in result ? (result.refusal ?? null) : null,
        };
        write(JSON.stringify({ file: basename(result.file), ...refused }));
      }
    };
    for (const file of sealedFiles) {
      if (pipeline.stopping) break;
      // Only ASCII whitespace (a line end) is taken off, as at serve's door: a byte-order mark or a
      // Unicode space is content another reader keeps, so ingest refuses it instead of it vanishing.
      const sealed = trimAsciiWhitespace(readInput(file).toString('utf8'));
      const tokenFile = file.replace(/\.jwe$/, '.jwt');
      const credential = existsSync(tokenFile)
        ? trimAsciiWhitespace(readInput(tokenFile).toString('utf8'))
        : '';
      // A file is known by its content: a re-run neither resubmits it (its credential is spent and
      // its message id taken) nor answers the sender again; it reports the outcome it already has.
      const key = sha256Hex(`${credential}\n${sealed}`);
      const known = state.submission(key);
      if (known) {
        const done = state.storedOutcome(known.traceId);
        if (done) report(file, done);
        continue; // otherwise in flight: resumed, reported when it finishes
      }
      group.push({ file, key, sealed, credential });
      if (group.length >= SUBMIT_GROUP) await submitGroup();
      if (waiting >= PROCESS_WINDOW || pipeline.overloaded()) {
        await pipeline.drain();
        waiting = 0;
      }
    }
    if (group.length > 0 && !pipeline.stopping) await submitGroup();
    await pipeline.drain();
    if (pipeline.stopping) {
      process.stderr.write(
        `stopped: unfinished messages stay queued in ${state.file}; run the same command again to finish them\n`,
      );
      return 1;
    }
    return failures === 0 ? 0 : 1;
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
    state.close();
    await pool?.close();
  }
}

function readInput(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (cause) {
    throw new UsageError(`cannot read ${path}: ${(cause as NodeJS.ErrnoException).code ?? 'error'}`);
  }
}

function sniffFormat(bytes: Buffer, file: string): 'xml' | 'json' {
  const first = bytes
    .toString('utf8', 0, Math.min(bytes.length, 512))
    .replace(/^\uFEFF/, '')
    .trimStart()[0];
  if (first === '<') return 'xml';
  if (first === '{') return 'json';
  throw new UsageError(`${file} is neither XML nor JSON`);
}

function listSealed(path: string): string[] {
  let st: ReturnType<typeof statSync>;
  try {
    st = statSync(path);
  } catch {
    throw new UsageError(`cannot read ${path}: no such file or folder`);
  }
  if (st.isDirectory()) {
    return readdirSync(path)
      .filter((f) => f.endsWith('.jwe'))
      .sort()
      .map((f) => join(path, f));
  }
  if (!path.endsWith('.jwe'))
    throw new UsageError(`${path}: sealed messages must be NAME.jwe (credential in NAME.jwt)`);
  return [path];
}
