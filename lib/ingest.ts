/**
 * The front door: accept a credential and a sealed message, answer with a tracking id, and queue a
 * record for the authenticate stage. Only cheap structural checks happen here (size, charset,
 * presence); every security decision is the pipeline's. Used by the HTTP ingest function and by
 * `itk3 serve`.
 */
import { randomUUID } from 'node:crypto';
import type { LoadedConfig } from './config/load.js';
import type { Ports } from './ports/index.js';
import type { PipelineRecord } from './record.js';
import { artefactKey, storeArtefact } from './stages/context.js';

export interface Submission {
  authorization: string | undefined;
  body: string;
  receivedAt: number;
  source: PipelineRecord['source'];
}

export type IngestResult =
  | { status: 202; trackingId: string }
  | { status: 400 | 401 | 413 | 503; error: string; message: string };

const COMPACT = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]*){4}$/;
// The auth-scheme is case-insensitive (RFC 7235 §2.1): `bearer` and `BEARER` are `Bearer`.
const BEARER = /^Bearer +([A-Za-z0-9._-]+)$/i;

export async function ingest(
  submission: Submission,
  ports: Ports,
  config: LoadedConfig,
): Promise<IngestResult> {
  const { limits } = config.doc;
  const token = BEARER.exec(submission.authorization ?? '')?.[1];
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
  const body = submission.body.trim();
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
  if (!COMPACT.test(body)) {
    return {
      status: 400,
      error: 'ENVELOPE_MALFORMED',
      message: 'body must be a compact JWE (five base64url segments)',
    };
  }
  let trackingId: string;
  try {
    // Small envelopes travel as the queue body itself; large ones go to the blob store and the
    // body is a claim-check reference. The credential is a message attribute either way, exactly
    // as for direct SQS ingestion: the inbound queue has one format, whoever writes to it.
    let queueBody = body;
    if (Buffer.byteLength(body, 'utf8') > limits.claimCheckBytes) {
      const artefact = await storeArtefact(
        { ports, config },
        artefactKey(`ingest-${randomUUID()}`, 'sealed.jwe'),
        body,
      );
      if ('ref' in artefact) queueBody = JSON.stringify({ claimCheck: artefact.ref });
    }
    trackingId = await ports.queues.sendInbound(queueBody, {
      Authorization: `Bearer ${token}`,
      Ingress: submission.source,
    });
  } catch {
    return { status: 503, error: 'QUEUE_UNAVAILABLE', message: 'try again later' };
  }
  return { status: 202, trackingId };
}
