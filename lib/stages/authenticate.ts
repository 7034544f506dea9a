/**
 * Stage 1 — authenticate the sender credential (federation over the configured issuers).
 * Times are judged at receipt time; `(iss, jti)` is single use, remembered with the inbound SQS
 * message id so a redelivery of the same message is not mistaken for a replay.
 */
import { verifyCredential } from '../envelope/token.js';
import { AuthenticationError, TransientError } from '../errors.js';
import type { PipelineRecord } from '../record.js';
import type { StageContext } from './context.js';

export interface AuthenticateInput {
  record: PipelineRecord;
  /** The transport's id of the inbound message (SQS MessageId): stable across redeliveries. */
  inboundMessageId: string;
}

export async function authenticate(input: AuthenticateInput, ctx: StageContext): Promise<PipelineRecord> {
  const { record, inboundMessageId } = input;
  if (!record.credential) throw new AuthenticationError('TOKEN_MISSING', 'no credential was presented');
  if (!record.sealed) throw new AuthenticationError('TOKEN_MISSING', 'no sealed message was presented');

  const credential = await verifyCredential(record.credential, ctx.config, record.receivedAt);

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
      inboundMessageId,
      ttlSeconds,
    );
  } catch (cause) {
    throw new TransientError('STORE_UNAVAILABLE', 'once-store unavailable', { cause });
  }
  if (!result.created && result.existing !== inboundMessageId) {
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
