/**
 * Stage 1 — authenticate the sender credential (federation over the configured issuers).
 * Times are judged at receipt time. `(iss, jti)` is single use: the once-store remembers it with a
 * digest of the whole submission (credential bytes and sealed message), so a redelivery or redrive
 * of the same submission is not mistaken for a replay, while the same jti with any other bytes —
 * another message, or a re-encoded copy of the token — is one. A resubmission of identical bytes
 * passes here and is then refused as a duplicate (20007) by the verify stage.
 */
import { verifyCredential } from '../envelope/token.js';
import { AuthenticationError, TransientError } from '../errors.js';
import type { PipelineRecord } from '../record.js';
import { type StageContext, sha256Hex } from './context.js';

export interface AuthenticateInput {
  record: PipelineRecord;
  /** The transport's id of the inbound message (SQS MessageId), for the record; not a replay key. */
  inboundMessageId: string;
}

export async function authenticate(input: AuthenticateInput, ctx: StageContext): Promise<PipelineRecord> {
  const { record } = input;
  if (!record.credential) throw new AuthenticationError('TOKEN_MISSING', 'no credential was presented');
  if (!record.sealed) throw new AuthenticationError('TOKEN_MISSING', 'no sealed message was presented');

  const credential = await verifyCredential(record.credential, ctx.config, record.receivedAt);

  const { clockSkewSeconds } = ctx.config.doc.limits;
  const sealedIdentity =
    'inline' in record.sealed ? sha256Hex(record.sealed.inline) : record.sealed.ref.sha256;
  const submission = sha256Hex(`${sha256Hex(record.credential)}.${sealedIdentity}`);
  // Remember the jti until the token could no longer be accepted anywhere, plus skew and a margin.
  const ttlSeconds = Math.max(
    60,
    Math.ceil(credential.exp - record.receivedAt / 1000) + clockSkewSeconds + 60,
  );
  let result: Awaited<ReturnType<typeof ctx.ports.once.putIfAbsent>>;
  try {
    result = await ctx.ports.once.putIfAbsent(
      `jti#${credential.iss}#${credential.jti}`,
      submission,
      ttlSeconds,
    );
  } catch (cause) {
    throw new TransientError('STORE_UNAVAILABLE', 'once-store unavailable', { cause });
  }
  if (!result.created && result.existing !== submission) {
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
