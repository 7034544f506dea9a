/**
 * The small JSON record that travels between stages on the queues (ARCHITECTURE.md §3).
 *
 * Artefacts are carried inline or, above the claim-check threshold, as a reference into the blob
 * store. The record grows as it passes through the stages; a rejection turns it into a response
 * job for the deliver stage, which is the only stage that signs responses.
 */
import * as z from 'zod';
import { ItkRoutingSchema } from './envelope/routing.js';
import { RejectionError } from './errors.js';

export const RECORD_VERSION = 1;

const ArtefactSchema = z.union([
  z.object({ inline: z.string() }).strict(),
  z
    .object({ ref: z.object({ key: z.string(), bytes: z.number().int().nonnegative(), sha256: z.string() }) })
    .strict(),
]);
export type Artefact = z.infer<typeof ArtefactSchema>;

export const PrincipalSchema = z.object({
  issuer: z.string(), // configured issuer id (not the raw iss)
  iss: z.string(),
  subject: z.string(),
  organisation: z.string(), // ODS code the message is sent for
  actors: z.array(z.string()), // act chain, outermost (current actor) first; empty when not delegated
  roles: z.array(z.string()),
  jti: z.string(),
  /** `mesh` when MESH authenticated the sender: `subject` is the sending mailbox, `jti` the MESH message id. */
  transport: z.literal('mesh').optional(),
});
export type Principal = z.infer<typeof PrincipalSchema>;

const DecisionSchema = z.object({
  ruleId: z.string(),
  delegationId: z.string().optional(),
  recipient: z.string(),
  kid: z.string(),
});
export type Decision = z.infer<typeof DecisionSchema>;

/** What verify hands to deliver. */
const VerifiedMessageSchema = z.object({
  messageId: z.string(),
  documentId: z.string().optional(),
  event: z.string(),
  sender: z.string(),
  recipient: z.string(),
  format: z.enum(['xml', 'json']),
  sha256: z.string(),
  infAckRequested: z.boolean(),
  busAckRequested: z.boolean(),
  senderReference: z.string().optional(),
  bundle: ArtefactSchema,
});
export type VerifiedMessage = z.infer<typeof VerifiedMessageSchema>;

const RejectionSchema = z.object({
  stage: z.enum(['ingest', 'authenticate', 'authorise', 'decrypt', 'verify', 'deliver']),
  code: z.string(),
  itk3Code: z.string(),
  /** The party the response goes to, when it was authenticated; absent otherwise. */
  respondTo: z.string().optional(),
  /** Original MessageHeader id when known from a verified source; else the §5.2 literal is used. */
  originalMessageId: z.string().optional(),
  format: z.enum(['xml', 'json']).optional(),
  senderReference: z.string().optional(),
});
export type Rejection = z.infer<typeof RejectionSchema>;

/**
 * What MESH says about a message the gateway's poller took from its mailbox (docs/MESH.md): the
 * sending and receiving mailboxes, the workflow, MESH's message id, the sender's local id, how the
 * queue body is encoded and its hash. The poller attests these facts with the gateway's key; the
 * authenticate stage accepts a MESH message only with a valid attestation over exactly them.
 */
const MeshFactsSchema = z
  .object({
    from: z.string().min(1).max(64),
    to: z.string().min(1).max(64),
    workflowId: z.string().min(1).max(64),
    messageId: z.string().min(1).max(128),
    localId: z.string().max(256).optional(),
    bodyEncoding: z.enum(['utf-8', 'base64']),
    /** SHA-256 (hex) of the inbound queue body: the message text or its claim-check reference. */
    bodySha256: z.string().regex(/^[0-9a-f]{64}$/),
  })
  .strict();
export type MeshFacts = z.infer<typeof MeshFactsSchema>;

const PipelineRecordSchema = z.object({
  v: z.literal(RECORD_VERSION),
  traceId: z.string().min(1).max(128),
  receivedAt: z.number().int().nonnegative(), // ms epoch, receipt time at ingress
  source: z.enum(['http', 'sqs', 'cli', 'mesh']),
  credential: z.string().optional(), // dropped after authenticate
  /** MESH transport: the attested facts, kept to the end (responses go back through MESH). */
  mesh: MeshFactsSchema.optional(),
  meshAttestation: z.string().max(4096).optional(), // dropped after authenticate
  /** MESH transport: the body as it came, until authorise tells a sealed JWE from plain ITK3. */
  meshBody: ArtefactSchema.optional(),
  /** MESH transport: a plain ITK3 Bundle (no JWE/JWS); dropped after verify. */
  plain: ArtefactSchema.optional(),
  sealed: ArtefactSchema.optional(), // the JWE; dropped after decrypt
  principal: PrincipalSchema.optional(),
  routing: ItkRoutingSchema.optional(), // the JWE itk header (unauthenticated until verify)
  decision: DecisionSchema.optional(),
  signed: ArtefactSchema.optional(), // the inner JWS; dropped after verify
  message: VerifiedMessageSchema.optional(),
  rejection: RejectionSchema.optional(),
  /**
   * Claim-check keys of artefacts a stage has dropped from the record (the JWE after decrypt, the
   * JWS after verify): their blobs are removed with the others when the trace ends.
   */
  claimChecks: z.array(z.string().max(300)).max(8).optional(),
});
export type PipelineRecord = z.infer<typeof PipelineRecordSchema>;

/** Parse a queue body into a record; a body that is not one is a permanent failure. */
export function parseRecord(body: string): PipelineRecord {
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch (cause) {
    throw new RejectionError('RECORD_MALFORMED', 'queue body is not JSON', { cause });
  }
  const parsed = PipelineRecordSchema.safeParse(json);
  if (!parsed.success) {
    throw new RejectionError('RECORD_MALFORMED', 'queue body is not a pipeline record');
  }
  return parsed.data;
}

export function serialiseRecord(record: PipelineRecord): string {
  return JSON.stringify(record);
}

/**
 * In-process hand-off (the embedded runtime): records a stage produced in this process travel to
 * the next stage as objects beside their stored body, so the receiving stage skips the JSON parse
 * and schema check of a body this process serialised itself. Keyed by the SQS record object the
 * runtime builds for the invocation; a body received after a restart (or from SQS) has no entry
 * and is parsed and validated as always.
 */
const handedOver = new WeakMap<object, PipelineRecord>();

/**
 * Freeze `record` and everything in it, for the hand-off: the object a queue hands to the next
 * stage must stay what its stored body says, so neither the stage that sent it nor the one that
 * receives it may change it afterwards (a change throws instead of making the two views differ).
 */
export function freezeRecord(record: PipelineRecord): PipelineRecord {
  return deepFreeze(record);
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const member of Object.values(value)) deepFreeze(member);
  }
  return value;
}

/** `carrier`'s body is `serialiseRecord(record)`, produced in this process: hand `record` over. */
export function handOverRecord(carrier: object, record: PipelineRecord): void {
  handedOver.set(carrier, record);
}

/** The record handed over with `carrier`, once (a second decode of the same carrier parses). */
export function takeHandedOverRecord(carrier: object): PipelineRecord | undefined {
  const record = handedOver.get(carrier);
  if (record) handedOver.delete(carrier);
  return record;
}
