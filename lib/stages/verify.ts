/**
 * Stage 4 — verify the inner signature with a key registered to the authenticated sender, then
 * hold every binding of ARCHITECTURE.md §2: token organisation = JWE itk.from = JWS itk.from =
 * MessageHeader sender; JWE itk = JWS itk; MessageHeader id and event = itk.id and itk.event; the
 * recipient is served here. Then ITK3 header rules, the matched rule's content constraints, and
 * duplicate message (20007) / document (20008) detection.
 */
import { isDeepStrictEqual } from 'node:util';
import { parseSigned, verifySigned } from '../envelope/jws.js';
import type { ItkRouting } from '../envelope/routing.js';
import {
  AuthenticationError,
  Itk3ValidationError,
  type RejectionError,
  SignatureError,
  TransientError,
} from '../errors.js';
import { sha256Hex } from '../hashing.js';
import { type Itk3Message, parseBundle } from '../itk3/parse.js';
import { validateItk3 } from '../itk3/validate.js';
import { workflowMatchesEvent } from '../mesh/workflows.js';
import { ruleById } from '../policy/index.js';
import type { MeshFacts, PipelineRecord, VerifiedMessage } from '../record.js';
import { artefactKey, dropArtefact, loadArtefact, storeArtefact } from './claim-check.js';
import type { Stage, StageContext } from './stage.js';

/** The ports verify's own code uses: the once-store (duplicates) and the blob store. */
type VerifyPorts = 'once' | 'blobs' | 'cpu';

const decoder = new TextDecoder('utf-8', { fatal: true });

export async function verifyRecord(
  record: PipelineRecord,
  ctx: StageContext<VerifyPorts>,
): Promise<PipelineRecord> {
  if (record.principal?.transport === 'mesh' && record.plain) return verifyPlainMesh(record, ctx);
  const { principal, routing, decision } = record;
  if (!principal || !routing || !decision || !record.signed) {
    throw new AuthenticationError('TOKEN_MISSING', 'record reached verify without decryption');
  }
  const compact = await loadArtefact(ctx, record.signed);
  const input: SignedContentInput = {
    compact,
    organisation: principal.organisation,
    routing,
    ruleId: decision.ruleId,
    ...(record.mesh ? { mesh: record.mesh } : {}),
  };
  // On a worker pool where the composition root gives one (embedded): every pure check in one task,
  // and only the facts the duplicate checks and deliver need come back. Else here: the same function.
  const content = ctx.ports.cpu
    ? await ctx.ports.cpu.verifySignedContent(input)
    : await verifySignedContent(input, ctx.config);
  const message = await verifiedMessage(ctx, record, content);
  return { ...dropArtefact(record, 'signed'), message };
}

/** What {@link verifySignedContent} checks: the inner JWS and what the record says about it. */
export interface SignedContentInput {
  compact: string;
  /** The authenticated sender organisation. */
  organisation: string;
  /** The JWE's routing header, as authorise read it. */
  routing: ItkRouting;
  /** The policy rule the decision matched. */
  ruleId: string;
  /** MESH facts, when the message came through MESH. */
  mesh?: MeshFacts;
}

/** A verified Bundle: what the duplicate checks and the record for deliver need of it. */
export interface BundleContent {
  routing: ItkRouting;
  format: 'xml' | 'json';
  hints: NonNullable<RejectionError['responseHints']>;
  messageId: string;
  documentId?: string;
  event: string;
  infAckRequested: boolean;
  busAckRequested: boolean;
  sha256: string;
  /** The exact Bundle bytes the sender signed, as text. */
  bundleText: string;
}

/**
 * Verify's pure part for a sealed message: the inner signature, every binding, the size limit, the
 * Bundle read, the ITK3 rules and the rule's constraints; run in the stage's thread or on a pool
 * worker (one task). Throws what verify throws, response hints attached.
 */
export async function verifySignedContent(
  input: SignedContentInput,
  config: StageContext['config'],
): Promise<BundleContent> {
  const { organisation, routing } = input;
  const limits = config.doc.limits;
  const verified = await verifySigned(parseSigned(input.compact, limits), organisation, config);

  // The signed routing header is the authenticated one; the JWE copy must agree with it exactly.
  if (!isDeepStrictEqual({ ...verified.routing }, { ...routing })) {
    throw new SignatureError(
      'BINDING_MISMATCH',
      'signed routing header differs from the envelope routing header',
    );
  }
  if (verified.routing.from !== organisation) {
    throw new SignatureError('BINDING_MISMATCH', 'signed sender differs from the credential organisation');
  }
  if (!config.recipientsByOds.has(verified.routing.to)) {
    throw new SignatureError('RECIPIENT_NOT_SERVED', 'signed recipient is not served here');
  }

  const rule = ruleById(config, input.ruleId);
  const maxBytes = Math.min(limits.maxBundleBytes, rule?.maxBytes ?? Number.POSITIVE_INFINITY);
  if (verified.payload.byteLength > maxBytes) {
    throw new Itk3ValidationError('MESSAGE_TOO_LARGE', 'bundle exceeds the size limit');
  }

  const msg = withHints(() => parseBundle(verified.payload, verified.format), { format: verified.format });
  const hints = hintsOf(msg, verified.format);
  withHints(() => {
    validateItk3(msg, { unresolvedReferences: rule?.unresolvedReferences ?? 'refuse' });
    checkHeaderBindings(
      msg,
      verified.routing,
      // Over MESH the source endpoint is bound to the mailbox MESH authenticated instead.
      input.mesh ? undefined : config.sendersByOds.get(organisation)?.meshMailbox,
    );
    if (input.mesh) checkMeshBindings(msg, input.mesh, config);
    if (rule) checkRuleConstraints(msg, rule);
  }, hints);
  return bundleContent(msg, verified.payload, verified.format, verified.routing, hints);
}

/** The response hints a read Bundle gives its rejections. */
function hintsOf(msg: Itk3Message, format: 'xml' | 'json'): BundleContent['hints'] {
  return {
    originalMessageId: msg.header.id,
    format,
    ...(msg.header.handling.senderReference ? { senderReference: msg.header.handling.senderReference } : {}),
  };
}

function bundleContent(
  msg: Itk3Message,
  payload: Uint8Array,
  format: 'xml' | 'json',
  routing: ItkRouting,
  hints: BundleContent['hints'],
): BundleContent {
  return {
    routing,
    format,
    hints,
    messageId: msg.header.id,
    ...(msg.documentId ? { documentId: msg.documentId } : {}),
    event: msg.header.event.code,
    infAckRequested: msg.header.handling.infAckRequested === true,
    busAckRequested: msg.header.handling.busAckRequested === true,
    sha256: sha256Hex(payload),
    // parseBundle read it as fatal UTF-8 already: this cannot fail.
    bundleText: decoder.decode(payload),
  };
}

/**
 * Plain ITK3 over MESH: no JWS; MESH authenticated the mailbox and authorise bound it to the
 * organisation. The Bundle is read and held to every binding: MessageHeader sender = the
 * organisation authorise settled, `source.endpoint` = `Mex-From`, the event's workflow =
 * `Mex-WorkflowID`; then the usual ITK3 rules, the rule's constraints and the per-organisation
 * duplicate checks, as for a sealed message.
 */
async function verifyPlainMesh(
  record: PipelineRecord,
  ctx: StageContext<VerifyPorts>,
): Promise<PipelineRecord> {
  const { principal, routing, decision, mesh: facts } = record;
  if (!principal || !routing || !decision || !facts || !record.plain) {
    throw new AuthenticationError('TOKEN_MISSING', 'MESH record reached verify without authorisation');
  }
  const { config } = ctx;
  const payload = Buffer.from(await loadArtefact(ctx, record.plain), 'utf8');
  const rule = ruleById(config, decision.ruleId);
  const maxBytes = Math.min(config.doc.limits.maxBundleBytes, rule?.maxBytes ?? Number.POSITIVE_INFINITY);
  if (payload.byteLength > maxBytes) {
    throw new Itk3ValidationError('MESSAGE_TOO_LARGE', 'bundle exceeds the size limit');
  }
  const format = payload.subarray(0, 64).toString('latin1').trimStart().startsWith('{') ? 'json' : 'xml';
  const msg = await withHintsAsync(() => readBundle(ctx, payload, format), { format });
  const hints = hintsOf(msg, format);
  withHints(() => {
    validateItk3(msg, { unresolvedReferences: rule?.unresolvedReferences ?? 'refuse' });
    if (principal.organisation !== routing.from) {
      throw new SignatureError('BINDING_MISMATCH', 'routing sender differs from the authorised organisation');
    }
    checkHeaderBindings(msg, routing, undefined);
    checkMeshBindings(msg, facts, config);
    if (rule) checkRuleConstraints(msg, rule);
  }, hints);
  const message = await verifiedMessage(ctx, record, bundleContent(msg, payload, format, routing, hints));
  return { ...dropArtefact(record, 'plain'), message };
}

/**
 * MESH facts against the MessageHeader: the mailbox MESH authenticated is the one the header names
 * as its source (20012 otherwise: the message claims another sender's mailbox), and the workflow
 * MESH carried it under is one of the header event's (ITK3.md §3; 20006 otherwise: the header
 * contradicts its transport).
 */
function checkMeshBindings(msg: Itk3Message, facts: MeshFacts, config: StageContext['config']): void {
  if (msg.header.sourceEndpoint?.toUpperCase() !== facts.from) {
    throw new SignatureError(
      'MESH_SOURCE_MISMATCH',
      'MessageHeader.source.endpoint is not the sending mailbox',
    );
  }
  if (!workflowMatchesEvent(config, facts.workflowId, msg.header.event.code)) {
    throw new Itk3ValidationError(
      'MESH_WORKFLOW_MISMATCH',
      "Mex-WorkflowID is not a workflow of the message's event",
    );
  }
}

/** Duplicate checks, then the record deliver needs. */
async function verifiedMessage(
  ctx: StageContext<VerifyPorts>,
  record: PipelineRecord,
  content: BundleContent,
): Promise<VerifiedMessage> {
  const { routing, format, hints, sha256 } = content;
  await withHintsAsync(
    () => checkDuplicates(ctx, record.traceId, routing.from, content.messageId, content.documentId, sha256),
    hints,
  );
  return {
    messageId: content.messageId,
    ...(content.documentId ? { documentId: content.documentId } : {}),
    event: content.event,
    sender: routing.from,
    recipient: routing.to,
    format,
    sha256,
    infAckRequested: content.infAckRequested,
    busAckRequested: content.busAckRequested,
    ...(hints.senderReference ? { senderReference: hints.senderReference } : {}),
    bundle: await storeArtefact(ctx, artefactKey(record.traceId, `bundle.${format}`), content.bundleText),
  };
}

function checkHeaderBindings(
  msg: Itk3Message,
  routing: { from: string; to: string; event: string; id: string },
  meshMailbox: string | undefined,
): void {
  // The envelope is consistent and signed: a MessageHeader that contradicts it is a header failure.
  const contradict = (what: string) =>
    new Itk3ValidationError(
      'HEADER_CONTRADICTS_ENVELOPE',
      `MessageHeader ${what} differs from the signed routing header`,
    );
  if (msg.header.senderOds !== routing.from) throw contradict('sender');
  if (msg.header.id !== routing.id) throw contradict('id');
  if (msg.header.event.code !== routing.event) throw contradict('event');
  if (msg.header.receiverOds !== undefined && msg.header.receiverOds !== routing.to)
    throw contradict('receiver');
  if (meshMailbox !== undefined && msg.header.sourceEndpoint !== meshMailbox)
    throw contradict('source endpoint');
}

function checkRuleConstraints(msg: Itk3Message, rule: NonNullable<ReturnType<typeof ruleById>>): void {
  const h = msg.header.handling;
  if (
    rule.messageDefinition &&
    !rule.messageDefinition.some((d) => sameDefinition(d, msg.messageDefinitionName))
  ) {
    throw new Itk3ValidationError(
      'MESSAGE_DEFINITION_UNSUPPORTED',
      'MessageDefinition is not accepted for this event',
    );
  }
  if (rule.recipientType && !rule.recipientType.includes(h.recipientType as 'FA' | 'FI')) {
    throw new Itk3ValidationError('RECIPIENT_TYPE_INVALID', 'RecipientType is not accepted for this event');
  }
  if (rule.acks?.inf !== undefined && h.infAckRequested !== rule.acks.inf) {
    throw new Itk3ValidationError('INF_ACK_INVALID', 'InfAckRequested does not match the agreed pattern');
  }
  if (rule.acks?.bus !== undefined && h.busAckRequested !== rule.acks.bus) {
    throw new Itk3ValidationError('BUS_ACK_INVALID', 'BusAckRequested does not match the agreed pattern');
  }
  if (!rule.receiverAllowed && msg.header.receiverOds !== undefined) {
    throw new Itk3ValidationError(
      'ITK3_HEADER_INVALID',
      'MessageHeader.receiver is not allowed for this use case',
    );
  }
}

/** `ITK-X-MessageDefinition-1` and the older `ITK-X-MessageDefinition-Instance-1` are one definition. */
function sameDefinition(allowed: string, actual: string | undefined): boolean {
  if (!actual) return false;
  const norm = (s: string) => s.replace('-MessageDefinition-Instance-', '-MessageDefinition-');
  return norm(allowed) === norm(actual);
}

/**
 * 20007 on a MessageHeader id, 20008 on a document id, seen before under another trace.
 * The same trace seeing its own id again is an SQS redelivery, not a duplicate.
 */
async function checkDuplicates(
  ctx: StageContext<VerifyPorts>,
  traceId: string,
  senderOds: string,
  messageId: string,
  documentId: string | undefined,
  sha256: string,
): Promise<void> {
  const ttl = ctx.config.doc.limits.dedupeDays * 86_400;
  const value = JSON.stringify({ traceId, sha256 });
  const put = async (key: string) => {
    try {
      return await ctx.ports.once.putIfAbsent(key, value, ttl);
    } catch (cause) {
      throw new TransientError('STORE_UNAVAILABLE', 'once-store unavailable', { cause });
    }
  };
  const seenBy = (existing: string): { traceId?: string; sha256?: string } => {
    try {
      return JSON.parse(existing) as { traceId?: string; sha256?: string };
    } catch {
      return {};
    }
  };
  // Keys are per authenticated sender organisation: one organisation can neither squat another's
  // message or document ids nor learn whether anyone else used an id (issue 9, class 3).
  const m = await put(`msg#${senderOds}#${messageId}`);
  if (!m.created && seenBy(m.existing).traceId !== traceId) {
    const same = seenBy(m.existing).sha256 === sha256;
    throw new Itk3ValidationError(
      'DUPLICATE_MESSAGE',
      same
        ? 'MessageHeader id already processed'
        : 'MessageHeader id already processed with different content',
    );
  }
  if (documentId) {
    const d = await put(`doc#${senderOds}#${documentId}`);
    if (!d.created && seenBy(d.existing).traceId !== traceId) {
      throw new Itk3ValidationError('DUPLICATE_DOCUMENT', 'document id already processed');
    }
  }
}

function withHints<T>(fn: () => T, hints: RejectionError['responseHints']): T {
  try {
    return fn();
  } catch (error) {
    attachHints(error, hints);
    throw error;
  }
}

async function withHintsAsync<T>(fn: () => Promise<T>, hints: RejectionError['responseHints']): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    attachHints(error, hints);
    throw error;
  }
}

function attachHints(error: unknown, hints: RejectionError['responseHints']): void {
  if (error && typeof error === 'object' && 'itk3Code' in error) {
    (error as RejectionError).responseHints = { ...hints, ...(error as RejectionError).responseHints };
  }
}

/** Stage 4: the sender's signature, every binding, the ITK3 rules and duplicate detection. */
export const verify: Stage<VerifyPorts> = {
  name: 'verify',
  async run(record, ctx) {
    return { kind: 'forward', record: await verifyRecord(record, ctx) };
  },
};

/** `parseBundle` on the composition root's worker pool when it gives one, else here. */
async function readBundle(
  ctx: StageContext<VerifyPorts>,
  payload: Uint8Array,
  format: 'xml' | 'json',
): Promise<Itk3Message> {
  return ctx.ports.cpu ? ctx.ports.cpu.parseBundle(payload, format) : parseBundle(payload, format);
}
