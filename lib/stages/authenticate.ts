/**
 * Stage 1 — authenticate the sender credential (federation over the configured issuers).
 * Times are judged at receipt time. `(iss, organisation, jti)` is single use across new submissions: the
 * once-store gives the jti to the first trace that presents it — the trace id is the inbound queue's
 * message id, which the queue assigns — so an SQS redelivery or an operator redrive of that same
 * queue message passes, while any new submission presenting the jti, even a byte-identical replay
 * of a captured (credential, sealed message) pair, is TOKEN_REPLAYED here: before any decryption,
 * signature or response (issue 9, class 4).
 *
 * Authenticate also decodes what the inbound queue carries, whoever wrote it: a sealed submission
 * from the ingest function or a sender using direct SQS ingestion, or a MESH message from the
 * gateway's poller ({@link recordFromIngress}, the `decode` of the stage value).
 */
import type { SQSRecord } from 'aws-lambda';
import * as z from 'zod';
import { verifyCredential } from '../envelope/token.js';
import { AuthenticationError, RejectionError, TransientError } from '../errors.js';
import {
  attestationKid,
  MESH_ATTESTATION_ATTRIBUTE,
  meshFactsFrom,
  verifyMeshAttestation,
} from '../mesh/attestation.js';
import { meshMailboxKnown } from '../policy/mesh.js';
import { type PipelineRecord, RECORD_VERSION } from '../record.js';
import type { Stage, StageContext } from './stage.js';

/** The ports authenticate's own code uses: the attestation key (MESH) and the once-store (jti). */
type AuthenticatePorts = 'keys' | 'once' | 'cpu';

export interface AuthenticateInput {
  record: PipelineRecord;
  /** The transport's id of the inbound message (SQS MessageId), for the record; not a replay key. */
  inboundMessageId: string;
}

export async function authenticateRecord(
  input: AuthenticateInput,
  ctx: StageContext<AuthenticatePorts>,
): Promise<PipelineRecord> {
  const { record } = input;
  if (record.source === 'mesh' || record.mesh) return authenticateMesh(record, ctx);
  if (!record.credential) throw new AuthenticationError('TOKEN_MISSING', 'no credential was presented');
  if (!record.sealed) throw new AuthenticationError('TOKEN_MISSING', 'no sealed message was presented');

  // On a worker pool where the composition root gives one (embedded), else here: the same function.
  const credential = ctx.ports.cpu
    ? await ctx.ports.cpu.verifyCredential(record.credential, record.receivedAt)
    : await verifyCredential(record.credential, ctx.config, record.receivedAt);

  const { clockSkewSeconds } = ctx.config.doc.limits;
  // Remember the jti until the token could no longer be accepted anywhere, plus skew and a margin.
  const ttlSeconds = Math.max(
    60,
    Math.ceil(credential.exp - record.receivedAt / 1000) + clockSkewSeconds + 60,
  );
  let result: Awaited<ReturnType<typeof ctx.ports.once.putIfAbsent>>;
  try {
    result = await ctx.ports.once.putIfAbsent(credentialOnceKey(credential), record.traceId, ttlSeconds);
  } catch (cause) {
    throw new TransientError('STORE_UNAVAILABLE', 'once-store unavailable', { cause });
  }
  if (!result.created && result.existing !== record.traceId) {
    throw new AuthenticationError('TOKEN_REPLAYED', 'credential jti has been used before');
  }

  const { credential: _dropped, ...rest } = record;
  return {
    ...rest,
    principal: {
      issuer: credential.issuerId,
      iss: credential.iss,
      subject: credential.subject,
      organisation: credential.organisation,
      actors: credential.actors,
      roles: credential.roles,
      jti: credential.jti,
    },
  };
}

/**
 * The once-store key of a credential's jti: per issuer **and organisation**. A replay carries the
 * same issuer, organisation and jti, so nothing is lost; but one organisation can no longer burn
 * another's jti under an issuer both use (an issuer that takes a client's proposed jti, or a
 * predictable one) so that the other's genuine credential is refused as replayed. The issuer is
 * URI-encoded so that a `#` in it cannot make two issuers' keys meet; the jti comes last.
 */
export function credentialOnceKey(credential: { iss: string; organisation: string; jti: string }): string {
  return `jti#${credential.organisation}#${encodeURIComponent(credential.iss)}#${credential.jti}`;
}

/**
 * MESH as the identity source: the principal is the sending mailbox (`Mex-From`), which MESH
 * authenticated (mutual TLS and the NHSMESH token of the sender). We believe the facts only from
 * our own poller (its attestation, lib/mesh/attestation.ts). The mailbox must be a configured
 * sender's or named by a delegation grant; an unknown mailbox is unauthenticated (no response, no
 * stored artefact: the issue 9 rule). Which organisation it speaks for is decided at authorise,
 * against the MessageHeader (or the sealed routing header).
 */
async function authenticateMesh(
  record: PipelineRecord,
  ctx: StageContext<AuthenticatePorts>,
): Promise<PipelineRecord> {
  const { config } = ctx;
  const facts = record.mesh;
  if (!facts || !record.meshAttestation || !record.meshBody || !config.doc.mesh) {
    throw new AuthenticationError('MESH_ATTESTATION_INVALID', 'MESH message without an attestation');
  }
  let attested: boolean;
  try {
    attested = await verifyMeshAttestation(
      ctx.ports.keys,
      attestationKid(config),
      record.meshAttestation,
      facts,
    );
  } catch (cause) {
    throw new TransientError('KEY_SERVICE_UNAVAILABLE', 'cannot read the attestation key', { cause });
  }
  if (!attested) {
    throw new AuthenticationError(
      'MESH_ATTESTATION_INVALID',
      "MESH facts are not attested by the gateway's poller",
    );
  }
  const owner = config.meshSenderByMailbox.get(facts.from);
  if (!meshMailboxKnown(config, facts.from)) {
    throw new AuthenticationError('MESH_MAILBOX_UNKNOWN', 'the sending mailbox is not registered');
  }
  // One trace per MESH message: a second enqueue of the same message (the poller's one crash
  // window) is not answered twice.
  let result: Awaited<ReturnType<typeof ctx.ports.once.putIfAbsent>>;
  try {
    result = await ctx.ports.once.putIfAbsent(
      `meshmsg#${facts.to}#${facts.messageId}`,
      record.traceId,
      config.doc.limits.dedupeDays * 86_400,
    );
  } catch (cause) {
    throw new TransientError('STORE_UNAVAILABLE', 'once-store unavailable', { cause });
  }
  if (!result.created && result.existing !== record.traceId) {
    throw new AuthenticationError('MESH_MESSAGE_REPEATED', 'this MESH message is already on another trace');
  }
  const { meshAttestation: _dropped, ...rest } = record;
  return {
    ...rest,
    principal: {
      transport: 'mesh',
      issuer: 'mesh',
      iss: 'mesh',
      subject: facts.from,
      // The owner; for a third party's mailbox, settled at authorise from its grants.
      organisation: owner ?? `MESH:${facts.from}`,
      actors: [],
      roles: [],
      jti: facts.messageId,
    },
  };
}

/** Stage 1: the inbound queue's message decoded, its sender authenticated. */
export const authenticate: Stage<AuthenticatePorts> = {
  name: 'authenticate',
  decode: recordFromIngress,
  async run(record, ctx, inboundMessageId) {
    // No `received` entry here: it is written with the trace's first outcome (one write fewer), and
    // anonymous traffic gets one audit entry in all, its rejection (issue 9, class 4).
    return { kind: 'forward', record: await authenticateRecord({ record, inboundMessageId }, ctx) };
  },
};

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
