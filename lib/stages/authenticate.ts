/**
 * Stage 1 — authenticate the sender credential (federation over the configured issuers).
 * Times are judged at receipt time. `(iss, jti)` is single use across new submissions: the
 * once-store gives the jti to the first trace that presents it — the trace id is the inbound queue's
 * message id, which the queue assigns — so an SQS redelivery or an operator redrive of that same
 * queue message passes, while any new submission presenting the jti, even a byte-identical replay
 * of a captured (credential, sealed message) pair, is TOKEN_REPLAYED here: before any decryption,
 * signature or response (issue 9, class 4).
 */
import { verifyCredential } from '../envelope/token.js';
import { AuthenticationError, TransientError } from '../errors.js';
import type { PipelineRecord } from '../record.js';
import type { StageContext } from './context.js';

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
