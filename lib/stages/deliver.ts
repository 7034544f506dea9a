/**
 * Stage 5 — deliver. A verified message goes, byte for byte, to its recipient's target; an ITK3
 * response (ITK008M) goes to the sender when requested (20013) and on every rejection of an
 * authenticated sender. Responses
 * are signed with the response-signing key (KMS in AWS): this is the only stage that may sign.
 *
 * Names are derived from the sender, the MessageHeader id and the trace, whose id the inbound queue
 * assigns: two senders, or one sender reusing an id after the duplicate window, never share a name,
 * while a redelivered record finds its own object (same name, same bytes) and has one effect. A
 * response is sent once per trace and code: on a folder or S3 target the first response under its
 * name stands (a redelivery's new signature is not written over it); on SQS and MESH targets the
 * first signature is stored and a redelivery re-sends the same bytes.
 *
 * A rejection whose sender was never authenticated is not answered here at all: no signature, no
 * stored response (issue 9, class 4). The batch processor audits and counts it, and that is all.
 */

import type { SenderConfig } from '../config/schema.js';
import { signCompactWithKeyService } from '../envelope/response-sign.js';
import { TransientError } from '../errors.js';
import { sha256Hex } from '../hashing.js';
import { buildResponse, type ResponseOptions } from '../itk3/response.js';
import { ackWorkflowFor, sendWorkflowFor } from '../mesh/workflows.js';
import type { DeliveryTarget, KeyService } from '../ports/index.js';
import type { MeshFacts, PipelineRecord, Rejection, VerifiedMessage } from '../record.js';
import { loadArtefact } from './claim-check.js';
import type { AuditEvent, BatchPortName, Stage, StageContext, StageResult } from './stage.js';

/** The ports deliver's own code uses: the recipient target, the response-signing key, the once-store, time, blobs, the CPU pool. */
type DeliverPorts = 'deliverer' | 'keys' | 'once' | 'clock' | 'blobs' | 'cpu';

export type DeliverOutcome =
  | { kind: 'delivered'; location: string; response?: string }
  | { kind: 'responded'; location: string }
  /** A rejection of an unauthenticated sender: nothing signed, nothing written. */
  | { kind: 'unanswered' };

export async function deliverRecord(
  record: PipelineRecord,
  ctx: StageContext<DeliverPorts>,
): Promise<DeliverOutcome> {
  if (record.rejection) {
    if (!record.rejection.respondTo) return { kind: 'unanswered' };
    // An authenticated sender is told which check failed (a stable code, nothing more), so an
    // integration engineer can fix it.
    const location = await sendResponse(ctx, record, record.rejection.itk3Code, {
      ...record.rejection,
      diagnostics: record.rejection.code,
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
    // Over MESH the trace id travels as Mex-LocalID, so MESH's REPORTs join the trace.
    recipient.target.type === 'mesh'
      ? {
          ...recipient.target,
          localId: record.traceId,
          workflowId:
            recipient.target.workflowId ??
            record.mesh?.workflowId ??
            sendWorkflowFor(ctx.config, message.event),
        }
      : recipient.target,
    deliveryName(message, record.traceId),
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
  ctx: StageContext<DeliverPorts>,
  record: PipelineRecord,
  code: string,
  facts: ResponseFacts,
): Promise<string> {
  const { config } = ctx;
  const sender = facts.respondTo ? config.sendersByOds.get(facts.respondTo) : undefined;
  const target = sender?.responseTarget ?? config.doc.unauthenticatedResponseTarget;
  const format = facts.format ?? 'xml';
  const responseId = uuidFrom(`${record.traceId}#response#${code}`);
  const routing = {
    from: config.doc.gatewayOds,
    to: sender?.ods ?? 'UNKNOWN',
    event: 'ITK008M',
    id: responseId,
  };
  const spec: ResponseSpec = {
    response: {
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
    },
    routing,
    trackingId: record.traceId,
  };
  if (record.mesh) return sendMeshResponse(ctx, record, record.mesh, code, sender, spec);
  const name = responseName(record.traceId, code);
  if (target.type === 'folder' || target.type === 's3') {
    // These targets never replace an object under a name, and the name is this trace's and code's:
    // a different response already there was written by an earlier attempt (a redelivery after a
    // crash), so it stands. Nothing is stored to re-send the first signature: one DynamoDB write
    // per response fewer than on SQS and MESH targets, which cannot refuse a second send.
    try {
      return await deliverTo(
        ctx,
        target,
        name,
        new TextEncoder().encode(await responseJws(ctx, spec)),
        'application/jose',
      );
    } catch (error) {
      if (error instanceof TransientError && error.code === 'DELIVERY_CONFLICT') {
        return `${name} (sent by an earlier attempt)`;
      }
      throw error;
    }
  }
  return deliverTo(ctx, target, name, await signedResponse(ctx, record, code, spec), 'application/jose');
}

/**
 * The ITK008M as a compact ES256 JWS by the response-signing key, signed once per trace and code
 * (a retry re-sends the same bytes). `trackingId` (the 202's) is inside the signed header, so a
 * sender matches even an early rejection to its submission.
 */
async function signedResponse(
  ctx: StageContext<DeliverPorts>,
  record: PipelineRecord,
  code: string,
  spec: ResponseSpec,
): Promise<Uint8Array> {
  const signed = await responseJws(ctx, spec);
  return new TextEncoder().encode(await firstSignature(ctx, `response#${record.traceId}#${code}`, signed));
}

/** What a response JWS is made of: the ITK008M's facts, its routing header and the tracking id. */
export interface ResponseSpec {
  response: ResponseOptions;
  routing: { from: string; to: string; event: string; id: string };
  /** The trace id (the 202's tracking id), in the signed header. */
  trackingId: string;
}

/**
 * The ITK008M as a compact ES256 JWS by the response-signing key (a new signature each call): on
 * the composition root's worker pool when it gives one (with the workers' own copy of the key),
 * else here through the key-service port.
 */
function responseJws(ctx: StageContext<DeliverPorts>, spec: ResponseSpec): Promise<string> {
  const kid = ctx.config.doc.responseSigning.kid;
  return ctx.ports.cpu ? ctx.ports.cpu.signResponse(spec) : signedResponseJws(spec, kid, ctx.ports.keys);
}

/** Build the ITK008M and sign it: deliver's pure part, run here or on a pool worker. */
export function signedResponseJws(spec: ResponseSpec, kid: string, keys: KeyService): Promise<string> {
  const { bytes } = buildResponse(spec.response);
  return signCompactWithKeyService(
    keys,
    kid,
    {
      alg: 'ES256',
      kid,
      cty: spec.response.format === 'xml' ? 'fhir+xml' : 'fhir+json',
      itk: spec.routing,
      trackingId: spec.trackingId,
    },
    bytes,
  );
}

/**
 * A response to a message that came through MESH goes back through MESH: to the sending mailbox,
 * from the gateway mailbox that received it, with the response workflow of its workflow (e.g.
 * `GPFED_CONSULT_REPORT_ACK`) and the trace id as `Mex-LocalID`. The body is the plain ITK008M
 * Bundle, which is what MESH senders read, unless the sender is configured for signed responses
 * (`senders[].mesh.signedResponses`): then the same signed JWS as over HTTPS.
 */
async function sendMeshResponse(
  ctx: StageContext<DeliverPorts>,
  record: PipelineRecord,
  facts: MeshFacts,
  code: string,
  sender: SenderConfig | undefined,
  spec: ResponseSpec,
): Promise<string> {
  const target: DeliveryTarget = {
    type: 'mesh',
    mailbox: facts.from,
    workflowId: ackWorkflowFor(ctx.config, facts.workflowId),
    from: facts.to,
    localId: record.traceId,
  };
  if (sender?.mesh?.signedResponses) {
    return deliverTo(
      ctx,
      target,
      responseName(record.traceId, code),
      await signedResponse(ctx, record, code, spec),
      'application/jose',
    );
  }
  const { format } = spec.response;
  return deliverTo(
    ctx,
    target,
    responseName(record.traceId, code).replace(/\.jws$/, `.${format}`),
    buildResponse(spec.response).bytes,
    format === 'xml' ? 'application/fhir+xml' : 'application/fhir+json',
  );
}

/**
 * The response JWS of this trace and code as first signed. ES256 signatures are randomised, so a
 * redelivery that re-signs would carry different bytes under the same name; keeping the first one
 * makes the redelivery byte-identical, which the deliverers require (same name, same bytes).
 */
async function firstSignature(ctx: StageContext<DeliverPorts>, key: string, jws: string): Promise<string> {
  try {
    const ttl = ctx.config.doc.limits.dedupeDays * 86_400;
    const stored = await ctx.ports.once.putIfAbsent(key, jws, ttl);
    return stored.created ? jws : stored.existing;
  } catch (cause) {
    throw new TransientError('STORE_UNAVAILABLE', 'once-store unavailable', { cause });
  }
}

async function deliverTo(
  ctx: StageContext<DeliverPorts>,
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
function uuidFrom(seed: string): string {
  const h = sha256Hex(seed);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-${((Number.parseInt(h[16] ?? '0', 16) & 0x3) | 0x8).toString(16)}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/** A name part used as it is: FHIR id characters (no `_`, the separator), at most 64. */
const NAME_PART = /^[A-Za-z0-9.-]{1,64}$/;

/**
 * `<sender ODS>_<MessageHeader id>_<trace id>.<xml|json>`: unique per sender and per trace (the
 * queue assigns trace ids), readable by a person. Parts outside the FHIR id characters (never the
 * case for a verified message and a queue-assigned trace) give `x-<sha256 of the parts>.<ext>`,
 * so the mapping from parts to names stays one-to-one.
 */
export function deliveryName(
  message: Pick<VerifiedMessage, 'sender' | 'messageId' | 'format'>,
  traceId: string,
): string {
  const parts = [message.sender, message.messageId, traceId];
  if (parts.every((p) => NAME_PART.test(p))) return `${parts.join('_')}.${message.format}`;
  return `x-${sha256Hex(parts.join('\n'))}.${message.format}`;
}

/** `<trace id>-<ITK3 code>.jws` (the code is five digits, so the name parses back one way). */
export function responseName(traceId: string, code: string): string {
  if (NAME_PART.test(traceId) && /^\d{5}$/.test(code)) return `${traceId}-${code}.jws`;
  return `x-${sha256Hex(`${traceId}\n${code}`)}.jws`;
}

/**
 * Stage 5: a verified message delivered (with its 20013 when asked for) or a rejection answered;
 * either way the trace ends here. The batch step writes the outcome's audit entries once per trace
 * and then removes the trace's claim-check blobs.
 */
export const deliver: Stage<DeliverPorts> = {
  name: 'deliver',
  async run(record, ctx): Promise<StageResult> {
    const outcome = await deliverOrReprocessed(record, ctx);
    if (outcome === 'reprocessed') return { kind: 'reprocessed' };
    // A rejection of an unauthenticated sender queued before this version: the rejecting stage
    // audited it; nothing is signed for it.
    if (outcome.kind === 'unanswered') return { kind: 'end', outcome: 'reprocessed', audit: [] };
    if (outcome.kind === 'delivered') {
      const m = record.message!;
      const audit: AuditEvent[] = [
        {
          traceId: record.traceId,
          stage: 'deliver',
          event: 'delivered',
          messageId: m.messageId,
          sender: m.sender,
          recipient: m.recipient,
          ...(record.decision ? { ruleId: record.decision.ruleId } : {}),
        },
        ...(outcome.response
          ? [
              {
                traceId: record.traceId,
                stage: 'deliver' as const,
                event: 'response-sent' as const,
                itk3Code: '20013',
                messageId: m.messageId,
              },
            ]
          : []),
      ];
      return { kind: 'end', outcome: 'delivered', audit };
    }
    const rejection = record.rejection!;
    return {
      kind: 'end',
      outcome: 'responded',
      audit: [
        {
          traceId: record.traceId,
          stage: 'deliver',
          event: 'response-sent',
          code: rejection.code,
          itk3Code: rejection.itk3Code,
          ...(rejection.respondTo ? { sender: rejection.respondTo } : {}),
        },
      ],
    };
  },
};

/**
 * Deliver, or recognise a redelivery of a record whose trace already ended: its claim-check blobs
 * were removed after the outcome was audited, so a missing blob with a `delivered` entry in the
 * audit means there is nothing left to do (the audit read happens only on that rare path).
 */
async function deliverOrReprocessed(
  record: PipelineRecord,
  ctx: StageContext<DeliverPorts | BatchPortName>,
): Promise<DeliverOutcome | 'reprocessed'> {
  try {
    return await deliverRecord(record, ctx);
  } catch (error) {
    if (error instanceof TransientError && error.code === 'BLOB_STORE_UNAVAILABLE') {
      const trail = await ctx.ports.audit.byTrace(record.traceId);
      if (trail.some((e) => e.stage === 'deliver' && e.event === 'delivered')) return 'reprocessed';
    }
    throw error;
  }
}

export type { VerifiedMessage };
