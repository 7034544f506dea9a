/**
 * The verifiable audit trail (docs/AUDIT.md): every audit entry carries the SHA-256 of the entry
 * before it in its stream, and periodic checkpoints sign a stream's head with an ES256 key through
 * the {@link KeyService} port (the software keystore embedded, KMS `Sign` deployed).
 *
 * This module is storage-free: the SQLite and DynamoDB adapters store links and checkpoints, and
 * {@link verifyStream} judges what they read back.
 */
import { createPublicKey, verify as verifySignature } from 'node:crypto';
import { sha256Hex } from '../hashing.js';
import type { AuditEntry, KeyService } from '../ports/index.js';

/** Version tag inside every hashed link, so a future format cannot be confused with this one. */
const LINK_VERSION = 'itk3-audit-link-v1';
/** JWS `typ` of a checkpoint: never confusable with a signed ITK3 response of the same key. */
const CHECKPOINT_TYP = 'itk3-audit-checkpoint+jws';

/** One chained entry as stored: its position in the stream, the previous hash and its own. */
export interface ChainLink {
  n: number;
  prev: string;
  hash: string;
  entry: AuditEntry;
}

/** A signed statement "stream S had `n` entries and its head hash was `hash`". */
export interface CheckpointClaims {
  stream: string;
  n: number;
  hash: string;
  at: string;
}

export interface StoredCheckpoint {
  /** Where the store filed it (must equal the signed `n`). */
  n: number;
  jws: string;
}

/** What a stream's first link points back to: bound to the stream, so links cannot move streams. */
export function genesisHash(stream: string): string {
  return sha256Hex(JSON.stringify([LINK_VERSION, 'genesis', stream]));
}

/** Field order of the hashed form; every field of an entry is covered, unknown ones included. */
function canonicalEntry(entry: AuditEntry): string {
  const record = entry as unknown as Record<string, unknown>;
  const keys = Object.keys(record)
    .filter((k) => record[k] !== undefined)
    .sort();
  return JSON.stringify(keys.map((k) => [k, record[k]]));
}

export function linkHash(stream: string, n: number, prev: string, entry: AuditEntry): string {
  return sha256Hex(JSON.stringify([LINK_VERSION, stream, n, prev, canonicalEntry(entry)]));
}

/** Signs checkpoints with an ES256 key of the key service. */
export interface CheckpointSigner {
  kid: string;
  keys: KeyService;
}

export async function signCheckpoint(signer: CheckpointSigner, claims: CheckpointClaims): Promise<string> {
  const header = b64u(JSON.stringify({ alg: 'ES256', kid: signer.kid, typ: CHECKPOINT_TYP }));
  const payload = b64u(JSON.stringify(claims));
  const signingInput = `${header}.${payload}`;
  const signature = await signer.keys.signEs256(signer.kid, new TextEncoder().encode(signingInput));
  return `${signingInput}.${Buffer.from(signature).toString('base64url')}`;
}

/** The trusted public keys of checkpoint signers: kid → SPKI DER (never taken from the trail). */
export interface CheckpointKeys {
  get(kid: string): Uint8Array | undefined;
}

/** Verify a checkpoint JWS; returns its claims or why it is not one. */
export function openCheckpoint(
  jws: string,
  keys: CheckpointKeys,
): { ok: true; claims: CheckpointClaims; kid: string } | { ok: false; reason: string } {
  const parts = jws.split('.');
  if (parts.length !== 3) return { ok: false, reason: 'not a compact JWS' };
  let header: { alg?: unknown; kid?: unknown; typ?: unknown };
  let claims: CheckpointClaims;
  try {
    header = JSON.parse(Buffer.from(parts[0]!, 'base64url').toString('utf8')) as typeof header;
    claims = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as CheckpointClaims;
  } catch {
    return { ok: false, reason: 'header or payload is not JSON' };
  }
  if (header.alg !== 'ES256' || header.typ !== CHECKPOINT_TYP || typeof header.kid !== 'string') {
    return { ok: false, reason: 'not an ES256 audit checkpoint' };
  }
  const spki = keys.get(header.kid);
  if (!spki)
    return { ok: false, reason: `signed by key ${header.kid}, which is not a trusted checkpoint key` };
  const valid = verifySignature(
    'sha256',
    Buffer.from(`${parts[0]}.${parts[1]}`, 'ascii'),
    {
      key: createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' }),
      dsaEncoding: 'ieee-p1363',
    },
    Buffer.from(parts[2]!, 'base64url'),
  );
  if (!valid) return { ok: false, reason: 'signature does not verify' };
  if (
    typeof claims.stream !== 'string' ||
    !Number.isSafeInteger(claims.n) ||
    typeof claims.hash !== 'string' ||
    typeof claims.at !== 'string'
  ) {
    return { ok: false, reason: 'claims are not { stream, n, hash, at }' };
  }
  return { ok: true, claims, kid: header.kid };
}

/** A broken trail: the first entry position that is not proven, and why. */
export interface ChainBreak {
  stream: string;
  /** Position of the first entry that is missing, altered or out of place. */
  firstBadEntry: number;
  kind: 'missing' | 'altered' | 'out-of-place' | 'truncated' | 'bad-checkpoint' | 'checkpoint-mismatch';
  reason: string;
  /** The stored entry at that position, when there is one (never message content: safe entries). */
  entry?: AuditEntry;
}

export interface StreamReport {
  stream: string;
  entries: number;
  checkpoints: number;
  /** Position of the last signed checkpoint (0 when none): entries after it are chained, unsigned. */
  lastCheckpoint: number;
  break?: ChainBreak;
}

/**
 * Judge one stream: `links` in stored order (by position), `checkpoints` as stored.
 * Proves positions 1..N consecutive, every hash recomputed from the entry, every `prev` the hash
 * before it, every checkpoint signed by a trusted key for this stream and equal to the chain at its
 * position, and no checkpoint beyond the stored head (a truncated tail).
 */
export function verifyStream(
  stream: string,
  links: readonly ChainLink[],
  checkpoints: readonly StoredCheckpoint[],
  keys: CheckpointKeys,
): StreamReport {
  const report: StreamReport = {
    stream,
    entries: links.length,
    checkpoints: checkpoints.length,
    lastCheckpoint: 0,
  };
  const breaks: ChainBreak[] = [];
  const hashAt = new Map<number, string>();
  let prev = genesisHash(stream);
  let linkBreak: ChainBreak | undefined;
  for (const [i, link] of links.entries()) {
    const expected = i + 1;
    if (link.n !== expected) {
      linkBreak =
        link.n > expected
          ? {
              stream,
              firstBadEntry: expected,
              kind: 'missing',
              reason: `entry ${expected} is missing (the next stored is ${link.n})`,
            }
          : {
              stream,
              firstBadEntry: expected,
              kind: 'out-of-place',
              reason: `position ${link.n} is stored twice or out of order`,
              entry: link.entry,
            };
      break;
    }
    const recomputed = linkHash(stream, link.n, link.prev, link.entry);
    if (recomputed !== link.hash) {
      linkBreak = {
        stream,
        firstBadEntry: link.n,
        kind: 'altered',
        reason: 'its content, position or stream does not match its hash (altered or moved)',
        entry: link.entry,
      };
      break;
    }
    if (link.prev !== prev) {
      linkBreak = {
        stream,
        firstBadEntry: link.n,
        kind: 'out-of-place',
        reason: 'it does not follow the entry before it (an entry was removed, inserted or reordered)',
        entry: link.entry,
      };
      break;
    }
    hashAt.set(link.n, link.hash);
    prev = link.hash;
  }
  if (linkBreak) breaks.push(linkBreak);
  const provenUpTo = linkBreak ? linkBreak.firstBadEntry - 1 : links.length;

  for (const stored of checkpoints) {
    const opened = openCheckpoint(stored.jws, keys);
    if (!opened.ok) {
      breaks.push({
        stream,
        firstBadEntry: stored.n,
        kind: 'bad-checkpoint',
        reason: `the checkpoint filed at entry ${stored.n} is not valid: ${opened.reason}`,
      });
      continue;
    }
    const { claims } = opened;
    if (claims.stream !== stream || claims.n !== stored.n) {
      breaks.push({
        stream,
        firstBadEntry: stored.n,
        kind: 'bad-checkpoint',
        reason: `the checkpoint filed at entry ${stored.n} was signed for ${claims.stream} entry ${claims.n} (replaced)`,
      });
      continue;
    }
    if (claims.n > links.length && !linkBreak) {
      breaks.push({
        stream,
        firstBadEntry: links.length + 1,
        kind: 'truncated',
        reason: `a checkpoint signed ${claims.at} covers ${claims.n} entries but only ${links.length} are stored (the tail was removed)`,
      });
      continue;
    }
    if (claims.n <= provenUpTo && hashAt.get(claims.n) !== claims.hash) {
      // The chain is internally consistent yet differs from what was signed: rewritten and re-chained.
      const before = checkpoints.filter((c) => c.n < claims.n).reduce((max, c) => Math.max(max, c.n), 0);
      breaks.push({
        stream,
        firstBadEntry: before + 1,
        kind: 'checkpoint-mismatch',
        reason: `entries ${before + 1}..${claims.n} differ from the checkpoint signed ${claims.at} (rewritten and re-chained)`,
      });
      continue;
    }
    if (claims.n <= provenUpTo) report.lastCheckpoint = Math.max(report.lastCheckpoint, claims.n);
  }
  if (breaks.length > 0) {
    breaks.sort((a, b) => a.firstBadEntry - b.firstBadEntry);
    report.break = breaks[0]!;
    const at = report.break.firstBadEntry;
    const stored = links.find((l) => l.n === at);
    if (!report.break.entry && stored) report.break.entry = stored.entry;
  }
  return report;
}

function b64u(text: string): string {
  return Buffer.from(text, 'utf8').toString('base64url');
}

/** When a stream is due a checkpoint: every `entries` appends or `seconds` after the last one. */
export interface CheckpointPolicy {
  entries: number;
  seconds: number;
}

export const DEFAULT_CHECKPOINT_POLICY: CheckpointPolicy = { entries: 100, seconds: 60 };
