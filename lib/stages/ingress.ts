/**
 * What the inbound (authenticate) queue carries, whoever wrote it: a sealed submission from the
 * ingest function or a sender using direct SQS ingestion, or a MESH message from the gateway's
 * poller. Decoded into a pipeline record by the authenticate stage (the `decode` of its stage value).
 */
import type { SQSRecord } from 'aws-lambda';
import * as z from 'zod';
import { AuthenticationError, RejectionError } from '../errors.js';
import { MESH_ATTESTATION_ATTRIBUTE, meshFactsFrom } from '../mesh/attestation.js';
import { type PipelineRecord, RECORD_VERSION } from '../record.js';

// The auth-scheme is case-insensitive (RFC 7235 §2.1).
const BEARER = /^Bearer +([A-Za-z0-9._~+/-]+=*)$/i;

/** The only JSON body the inbound queue accepts: a claim-check reference to a large envelope. */
const InboundClaimCheckSchema = z
  .object({
    claimCheck: z
      .object({
        // Only a key the front door makes (a random id per submission): a writer cannot point the
        // pipeline at another trace's artefacts, to read them or to have them removed.
        key: z.string().regex(/^claim-check\/ingest-[0-9a-f-]{36}\/sealed\.jwe$/),
        bytes: z.number().int().positive(),
        sha256: z.string().regex(/^[0-9a-f]{64}$/),
      })
      .strict(),
  })
  .strict();

/**
 * The inbound queue has one format, whoever writes to it (the ingest function or a sender using
 * direct SQS ingestion): the body is the compact JWE, or a claim-check reference to it; the
 * credential is the `Authorization` message attribute (`Bearer <jwt>`). The trace id is the SQS
 * message id and the receipt time the queue's SentTimestamp — facts the queue assigns, so no writer
 * can choose a trace id, reuse another message's, or backdate its receipt.
 */
export function recordFromIngress(sqsRecord: SQSRecord): PipelineRecord {
  const base = {
    v: RECORD_VERSION,
    traceId: sqsRecord.messageId,
    receivedAt: Number(sqsRecord.attributes?.SentTimestamp ?? Date.now()),
    source: ingressOf(sqsRecord),
  } satisfies Partial<PipelineRecord>;
  // A `Transport` attribute claims MESH: the message is judged only as MESH (its attestation is
  // checked at authenticate), never as a sealed submission with the claim ignored.
  if (sqsRecord.messageAttributes?.Transport !== undefined) return meshRecordFromIngress(sqsRecord, base);
  const header = sqsRecord.messageAttributes?.Authorization?.stringValue ?? '';
  const credential = BEARER.exec(header)?.[1];
  let sealed: PipelineRecord['sealed'];
  if (sqsRecord.body.startsWith('{')) {
    let json: unknown;
    try {
      json = JSON.parse(sqsRecord.body);
    } catch (cause) {
      throw new RejectionError(
        'ENVELOPE_MALFORMED',
        'inbound body is neither a compact JWE nor a claim check',
        { cause },
      );
    }
    const parsed = InboundClaimCheckSchema.safeParse(json);
    if (!parsed.success && json !== null && typeof json === 'object' && 'ciphertext' in json) {
      throw new RejectionError(
        'ENVELOPE_MALFORMED',
        'inbound body is a JSON-serialised JWE: send the compact serialisation',
      );
    }
    if (!parsed.success) {
      throw new RejectionError(
        'ENVELOPE_MALFORMED',
        'inbound body is neither a compact JWE nor a claim check',
      );
    }
    sealed = { ref: parsed.data.claimCheck };
  } else {
    sealed = { inline: sqsRecord.body };
  }
  return { ...base, ...(credential ? { credential } : {}), sealed };
}

/** The claim-check reference the MESH poller writes for a large MESH body (lib/mesh/poller.ts). */
const MeshClaimCheckSchema = z
  .object({
    claimCheck: z
      .object({
        key: z.string().regex(/^claim-check\/mesh-[0-9a-f]{32}\/mesh-body$/),
        bytes: z.number().int().positive(),
        sha256: z.string().regex(/^[0-9a-f]{64}$/),
      })
      .strict(),
  })
  .strict();

/**
 * A message the MESH poller enqueued: its MESH facts from the attributes, its body (the text, or a
 * claim check), and the poller's attestation, verified at authenticate. Missing or malformed MESH
 * attributes are an unauthenticated submission.
 */
function meshRecordFromIngress(
  sqsRecord: SQSRecord,
  base: Pick<PipelineRecord, 'v' | 'traceId' | 'receivedAt'>,
): PipelineRecord {
  const attributes: Record<string, string | undefined> = {};
  for (const [name, value] of Object.entries(sqsRecord.messageAttributes ?? {})) {
    attributes[name] = value.stringValue;
  }
  const facts = attributes.Transport === 'mesh' ? meshFactsFrom(attributes, sqsRecord.body) : undefined;
  if (!facts) {
    throw new AuthenticationError(
      'MESH_ATTESTATION_INVALID',
      'MESH transport attributes are missing or malformed',
    );
  }
  let meshBody: PipelineRecord['meshBody'];
  if (sqsRecord.body.startsWith('{"claimCheck"')) {
    let json: unknown;
    try {
      json = JSON.parse(sqsRecord.body);
    } catch {
      json = undefined;
    }
    const parsed = MeshClaimCheckSchema.safeParse(json);
    meshBody = parsed.success ? { ref: parsed.data.claimCheck } : { inline: sqsRecord.body };
  } else {
    meshBody = { inline: sqsRecord.body };
  }
  const attestation = attributes[MESH_ATTESTATION_ATTRIBUTE];
  return {
    ...base,
    source: 'mesh',
    mesh: facts,
    ...(attestation ? { meshAttestation: attestation.slice(0, 4096) } : {}),
    meshBody,
  };
}

/** Informational only (an attribute any writer can set): never used for a decision. */
function ingressOf(sqsRecord: SQSRecord): PipelineRecord['source'] {
  const value = sqsRecord.messageAttributes?.Ingress?.stringValue;
  return value === 'http' || value === 'cli' ? value : 'sqs';
}
