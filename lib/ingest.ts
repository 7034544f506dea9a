/**
 * The front door: accept a credential and a sealed message, answer with a tracking id, and queue a
 * record for the authenticate stage. Used by the HTTP ingest function and by `itk3 serve`.
 *
 * Only cheap checks happen here, but the credential is one of them (issue 9, class 4): its
 * signature against the configured issuers' public keys, its times at receipt and its audience —
 * no key service, no store. A credential that fails is answered 401 `TOKEN_REJECTED` (the same
 * answer whatever failed; the reason is for the log) before anything is stored, so anonymous traffic never reaches the blob store or the queue. Single use (`jti`),
 * authorisation and everything else stay the pipeline's decisions.
 */
import { randomUUID } from 'node:crypto';
import type { LoadedConfig } from './config/load.js';
import { verifyCredential } from './envelope/token.js';
import { AuthenticationError } from './errors.js';
import type { Ports } from './ports/index.js';
import type { PipelineRecord } from './record.js';
import { artefactKey, storeArtefact } from './stages/claim-check.js';

export interface Submission {
  authorization: string | undefined;
  body: string;
  receivedAt: number;
  source: PipelineRecord['source'];
  /**
   * The request's `Content-Encoding`, when the transport has one (HTTP). The body is read as sent,
   * so any coding but `identity` is refused: a reader that decodes would see other bytes.
   */
  contentEncoding?: string;
}

export type IngestResult =
  | { status: 202; trackingId: string }
  | {
      status: 400 | 401 | 413 | 415 | 503;
      error: string;
      message: string;
      /** For the operator's log only, never the client: which credential check failed. */
      reason?: string;
    };

const COMPACT = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]*){4}$/;
// The auth-scheme is case-insensitive (RFC 7235 §2.1): `bearer` and `BEARER` are `Bearer`.
const BEARER = /^Bearer +([A-Za-z0-9._-]+)$/i;

/**
 * The credential of an `Authorization` header value, or undefined when it is not `Bearer <jwt>`.
 * The one parser of every HTTP front door (the ingest function and `itk3 serve`), so a header one
 * door accepts is never refused by the other.
 */
export function bearerCredential(authorization: string | undefined): string | undefined {
  return BEARER.exec(authorization ?? '')?.[1];
}

export async function ingest(
  submission: Submission,
  ports: Pick<Ports, 'queues' | 'blobs'>,
  config: LoadedConfig,
): Promise<IngestResult> {
  const { limits } = config.doc;
  const coding = submission.contentEncoding?.trim().toLowerCase();
  if (coding !== undefined && coding !== 'identity') {
    return {
      status: 415,
      error: 'CONTENT_ENCODING_NOT_ACCEPTED',
      message: 'send the body without a content coding',
    };
  }
  const token = bearerCredential(submission.authorization);
  if (!token) {
    return {
      status: 401,
      error: 'TOKEN_MISSING',
      message: 'send the credential as Authorization: Bearer <jwt>',
    };
  }
  if (token.length > limits.maxTokenBytes) {
    return { status: 401, error: 'TOKEN_TOO_LARGE', message: 'credential exceeds the size limit' };
  }
  const body = trimAsciiWhitespace(submission.body);
  if (Buffer.byteLength(body, 'utf8') > limits.maxSealedBytes) {
    return { status: 413, error: 'MESSAGE_TOO_LARGE', message: 'sealed message exceeds the size limit' };
  }
  if (body.startsWith('{')) {
    // A JWE in the JSON serialisation (RFC 7516 §7.2): say what to send instead of a bare refusal.
    return {
      status: 400,
      error: 'ENVELOPE_MALFORMED',
      message: 'send the compact serialisation (five base64url segments joined by dots), not JSON',
    };
  }
  if (body.startsWith('\uFEFF')) {
    return {
      status: 400,
      error: 'ENVELOPE_MALFORMED',
      message: 'body starts with a byte-order mark; send the compact JWE bytes alone',
    };
  }
  if (!COMPACT.test(body)) {
    return {
      status: 400,
      error: 'ENVELOPE_MALFORMED',
      message: 'body must be a compact JWE (five base64url segments)',
    };
  }
  try {
    await verifyCredential(token, config, submission.receivedAt);
  } catch (error) {
    if (error instanceof AuthenticationError) {
      // One answer whatever failed: the door is no oracle for trusted issuers, key ids or algorithms.
      return {
        status: 401,
        error: 'TOKEN_REJECTED',
        message: 'the credential was not accepted',
        reason: error.code,
      };
    }
    throw error;
  }
  let trackingId: string;
  let claimCheckKey: string | undefined;
  try {
    // Small envelopes travel as the queue body itself; large ones go to the blob store and the
    // body is a claim-check reference. The credential is a message attribute either way, exactly
    // as for direct SQS ingestion: the inbound queue has one format, whoever writes to it.
    let queueBody = body;
    if (Buffer.byteLength(body, 'utf8') > limits.claimCheckBytes) {
      const key = artefactKey(`ingest-${randomUUID()}`, 'sealed.jwe');
      const artefact = await storeArtefact({ ports, config }, key, body);
      if ('ref' in artefact) {
        claimCheckKey = key;
        queueBody = JSON.stringify({ claimCheck: artefact.ref });
      }
    }
    trackingId = await ports.queues.sendInbound(queueBody, {
      Authorization: `Bearer ${token}`,
      Ingress: submission.source,
    });
  } catch {
    // Nothing was queued: the stored envelope belongs to no trace, so it goes now.
    if (claimCheckKey) await ports.blobs.delete(claimCheckKey).catch(() => undefined);
    return { status: 503, error: 'QUEUE_UNAVAILABLE', message: 'try again later' };
  }
  return { status: 202, trackingId };
}

/**
 * The body without surrounding ASCII whitespace (a file's trailing newline), nothing else:
 * `String.trim` would also remove a byte-order mark, NBSP or U+2028 — content another reader keeps.
 * A loop, not a regex: `[ \t\r\n]+$` backtracks quadratically over a long inner run of spaces.
 */
export function trimAsciiWhitespace(text: string): string {
  const isSpace = (code: number) => code === 0x20 || code === 0x09 || code === 0x0d || code === 0x0a;
  let start = 0;
  let end = text.length;
  while (start < end && isSpace(text.charCodeAt(start))) start += 1;
  while (end > start && isSpace(text.charCodeAt(end - 1))) end -= 1;
  return text.slice(start, end);
}
