/**
 * Stage 1 — authenticate the sender credential (federation over the configured issuers).
 * Times are judged at receipt time. `(iss, jti)` is single use across new submissions: the
 * once-store gives the jti to the first trace that presents it — the trace id is the inbound queue's
 * message id, which the queue assigns — so an SQS redelivery or an operator redrive of that same
 * queue message passes, while any new submission presenting the jti, even a byte-identical replay
 * of a captured (credential, sealed message) pair, is TOKEN_REPLAYED here: before any decryption,
 * signature or response (issue 9, class 4).
 */
import { AuthenticationError, TransientError } from '../errors.js';
import { attestationKid, verifyMeshAttestation } from '../mesh/attestation.js';
import { meshMailboxKnown } from '../policy/mesh.js';
import type { PipelineRecord } from '../record.js';
import { cpuWork, type StageContext } from './context.js';

export interface AuthenticateInput {
  record: PipelineRecord;
  /** The transport's id of the inbound message (SQS MessageId), for the record; not a replay key. */
  inboundMessageId: string;
}

export async function authenticate(input: AuthenticateInput, ctx: StageContext): Promise<PipelineRecord> {
  const { record } = input;
  if (record.source === 'mesh' || record.mesh) return authenticateMesh(record, ctx);
  if (!record.credential) throw new AuthenticationError('TOKEN_MISSING', 'no credential was presented');
  if (!record.sealed) throw new AuthenticationError('TOKEN_MISSING', 'no sealed message was presented');

  const credential = await cpuWork(ctx).verifyCredential(record.credential, record.receivedAt);

  const { clockSkewSeconds } = ctx.config.doc.limits;
  // Remember the jti until the token could no longer be accepted anywhere, plus skew and a margin.
  const ttlSeconds = Math.max(
    60,
    Math.ceil(credential.exp - record.receivedAt / 1000) + clockSkewSeconds + 60,
  );
  let result: Awaited<ReturnType<typeof ctx.ports.once.putIfAbsent>>;
  try {
    result = await ctx.ports.once.putIfAbsent(
      `jti#${credential.iss}#${credential.jti}`,
      record.traceId,
      ttlSeconds,
    );
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
 * MESH as the identity source: the principal is the sending mailbox (`Mex-From`), which MESH
 * authenticated (mutual TLS and the NHSMESH token of the sender). We believe the facts only from
 * our own poller (its attestation, lib/mesh/attestation.ts). The mailbox must be a configured
 * sender's or named by a delegation grant; an unknown mailbox is unauthenticated (no response, no
 * stored artefact: the issue 9 rule). Which organisation it speaks for is decided at authorise,
 * against the MessageHeader (or the sealed routing header).
 */
async function authenticateMesh(record: PipelineRecord, ctx: StageContext): Promise<PipelineRecord> {
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
