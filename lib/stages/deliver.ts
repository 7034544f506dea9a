/**
 * Stage 5 — deliver. A verified message goes, byte for byte, to its recipient's target; an ITK3
 * response (ITK008M) goes to the sender when requested (20013) and on every rejection. Responses
 * are signed with the response-signing key (KMS in AWS): this is the only stage that may sign.
 *
 * Names are derived from the trace, so a redelivered record rewrites the same objects: one effect.
 */
import { signCompactWithKeyService } from '../envelope/response-sign.js';
import { TransientError } from '../errors.js';
import { buildResponse } from '../itk3/index.js';
import type { DeliveryTarget } from '../ports/index.js';
import type { PipelineRecord, Rejection, VerifiedMessage } from '../record.js';
import { loadArtefact, type StageContext, sha256Hex } from './context.js';

export const UNREADABLE_ID = 'UNREADABLE-IN-ORIGINAL-MESSAGE';

export type DeliverOutcome =
  | { kind: 'delivered'; location: string; response?: string }
  | { kind: 'responded'; location: string };

export async function deliverStage(record: PipelineRecord, ctx: StageContext): Promise<DeliverOutcome> {
  if (record.rejection) {
    // An authenticated sender is told which check failed (a stable code, nothing more), so an
    // integration engineer can fix it; an unauthenticated one learns only the ITK3 code.
    const diagnostics = record.rejection.respondTo ? record.rejection.code : undefined;
    const location = await sendResponse(ctx, record, record.rejection.itk3Code, {
      ...record.rejection,
      ...(diagnostics ? { diagnostics } : {}),
    });
    return { kind: 'responded', location };
  }
  const message = record.message;
  if (!message)
    throw new TransientError('UNEXPECTED', 'deliver received a record with neither message nor rejection');

  const recipient = ctx.config.recipientsByOds.get(message.recipient);
  if (!recipient)
    throw new TransientError('DELIVERY_UNAVAILABLE', 'recipient vanished from the configuration');
  const bytes = new TextEncoder().encode(await loadArtefact(ctx, message.bundle));
  const location = await deliverTo(
    ctx,
    recipient.target,
    `${safeName(message.messageId)}.${message.format}`,
    bytes,
    message.format === 'xml' ? 'application/fhir+xml' : 'application/fhir+json',
  );

  let response: string | undefined;
  if (message.infAckRequested) {
    response = await sendResponse(ctx, record, '20013', {
      respondTo: message.sender,
      originalMessageId: message.messageId,
      format: message.format,
      ...(message.senderReference ? { senderReference: message.senderReference } : {}),
    });
  }
  return { kind: 'delivered', location, ...(response ? { response } : {}) };
}

type ResponseFacts = Pick<Rejection, 'respondTo' | 'originalMessageId' | 'format' | 'senderReference'> & {
  diagnostics?: string;
};

async function sendResponse(
  ctx: StageContext,
  record: PipelineRecord,
  code: string,
  facts: ResponseFacts,
): Promise<string> {
  const { config } = ctx;
  const sender = facts.respondTo ? config.sendersByOds.get(facts.respondTo) : undefined;
  const target = sender?.responseTarget ?? config.doc.unauthenticatedResponseTarget;
  const format = facts.format ?? 'xml';
  const responseId = uuidFrom(`${record.traceId}#response#${code}`);
  const { bytes } = buildResponse({
    format,
    code,
    ...(facts.originalMessageId ? { originalMessageId: facts.originalMessageId } : {}),
    responderOds: config.doc.gatewayOds,
    ...(sender ? { recipientOds: sender.ods } : {}),
    ...(facts.senderReference ? { senderReference: facts.senderReference } : {}),
    ...(facts.diagnostics ? { diagnostics: facts.diagnostics } : {}),
    messageId: responseId,
    bundleId: uuidFrom(`${record.traceId}#response-bundle#${code}`),
    timestamp: new Date(ctx.ports.clock.now()).toISOString(),
  });
  const routing = {
    from: config.doc.gatewayOds,
    to: sender?.ods ?? 'UNKNOWN',
    event: 'ITK008M',
    id: responseId,
  };
  const kid = config.doc.responseSigning.kid;
  const jws = await signCompactWithKeyService(
    ctx.ports.keys,
    kid,
    { alg: 'ES256', kid, cty: format === 'xml' ? 'fhir+xml' : 'fhir+json', itk: routing },
    bytes,
  );
  return deliverTo(
    ctx,
    target,
    `${safeName(record.traceId)}-${code}.jws`,
    new TextEncoder().encode(jws),
    'application/jose',
  );
}

async function deliverTo(
  ctx: StageContext,
  target: DeliveryTarget,
  name: string,
  bytes: Uint8Array,
  contentType: string,
): Promise<string> {
  try {
    return await ctx.ports.deliverer.deliver(target, name, bytes, contentType);
  } catch (cause) {
    if (cause instanceof TransientError) throw cause;
    throw new TransientError('DELIVERY_UNAVAILABLE', 'delivery target unavailable', { cause });
  }
}

/** A stable UUID-shaped id derived from a seed, so retries produce the same response ids. */
export function uuidFrom(seed: string): string {
  const h = sha256Hex(seed);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-${((Number.parseInt(h[16] ?? '0', 16) & 0x3) | 0x8).toString(16)}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

function safeName(id: string): string {
  return id.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 128);
}

export type { VerifiedMessage };
