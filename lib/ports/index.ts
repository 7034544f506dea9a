/**
 * Ports: what the stages need from the outside world. Each has a local adapter
 * (lib/adapters/local) and an AWS adapter (lib/adapters/aws). Stages import only these types.
 */

import type { VerifiedCredential } from '../envelope/token.js';
import type { BundleFormat, Itk3Message } from '../itk3/parse.js';
import type { QueueName, StageName } from '../pipeline/topology.js';

import type { PipelineRecord } from '../record.js';
import type { ResponseSpec } from '../stages/deliver.js';
import type { BundleContent, SignedContentInput } from '../stages/verify.js';

/** Private-key operations. In AWS the keys never leave KMS. */
export interface KeyService {
  /**
   * Unwrap a JWE content-encryption key with the recipient key `kid`
   * (RSAES_OAEP_SHA_256). Throws {@link import('../errors.js').TransientError} on throttling or
   * unavailability; any other failure (bad ciphertext, unknown key) is reported as
   * `{ ok: false }` so the caller can continue with a random CEK (RFC 7516 §11.5).
   */
  unwrapKey(kid: string, encryptedKey: Uint8Array): Promise<{ ok: true; cek: Uint8Array } | { ok: false }>;
  /**
   * ECDH on P-256 between the recipient key-agreement key `kid` and a sender's ephemeral public
   * key (already checked to be a point on P-256), for JWE `ECDH-ES+A256KW`: returns the raw shared
   * secret Z (32 bytes); the caller runs the Concat KDF and the AES key unwrap. Same failure rules
   * as {@link unwrapKey}: `{ ok: false }` for an unknown kid, a kid that is not an agreement key or
   * a refused public key; {@link import('../errors.js').TransientError} when unavailable. The
   * caller zeroes Z once used, so return a fresh buffer per call. (Required, not optional, so a
   * wrapper around a key service cannot silently drop it.)
   */
  deriveSharedSecret(
    kid: string,
    ephemeralPublicKey: EcPublicJwk,
  ): Promise<{ ok: true; sharedSecret: Uint8Array } | { ok: false }>;
  /**
   * Sign `signingInput` (the ASCII of `base64url(header).base64url(payload)`) with the
   * response-signing key `kid` using ES256. Returns the 64-byte JOSE `r‖s` signature.
   */
  signEs256(kid: string, signingInput: Uint8Array): Promise<Uint8Array>;
  /** Public key of `kid` as SPKI DER (for JWKS publication and self-tests). */
  publicKeySpki(kid: string): Promise<Uint8Array>;
}

/** A P-256 public key as a JWK with exactly its public members (a JWE `epk`). */
export interface EcPublicJwk {
  kty: 'EC';
  crv: 'P-256';
  x: string;
  y: string;
}

/** Queue sending. Receiving is the job of the event source (Lambda or the embedded runtime). */
export interface QueueSender {
  /**
   * Send bodies to a stage's queue, batching as the transport allows. Returns the indexes of the
   * entries that failed (the caller reports their source records as batch item failures).
   */
  sendBatch(queue: QueueName, bodies: readonly string[]): Promise<{ failed: number[] }>;
  /**
   * In-process transports only (the embedded runtime): send pipeline records as they are; the
   * transport stores their serialisation and hands the records themselves to the next stage.
   * When absent, the stages serialise and use {@link sendBatch}. Same result contract.
   */
  sendRecords?(queue: QueueName, records: readonly PipelineRecord[]): Promise<{ failed: number[] }>;
  /**
   * Put one submission on the inbound (authenticate) queue with its message attributes, as a
   * sender using direct SQS ingestion would. Returns the transport's message id, which becomes the
   * trace id: the queue assigns it, so no writer can choose or reuse one.
   */
  sendInbound(body: string, attributes: Readonly<Record<string, string>>): Promise<string>;
}

/** Conditional single-write store: jti replay, duplicate message and document ids. */
export interface OnceStore {
  /**
   * Write `key` → `value` unless `key` exists. Returns the stored value when it already existed
   * (the caller decides whether it is its own redelivery or a real duplicate).
   * `ttlSeconds` bounds how long the key is remembered.
   */
  putIfAbsent(
    key: string,
    value: string,
    ttlSeconds: number,
  ): Promise<{ created: true } | { created: false; existing: string }>;
}

/** Large artefacts outside the queue record (claim check). */
export interface BlobStore {
  put(key: string, bytes: Uint8Array): Promise<void>;
  get(key: string): Promise<Uint8Array>;
  /** Remove `key` when its trace has ended. Idempotent: removing a missing key is not an error. */
  delete(key: string): Promise<void>;
}

/** Where a verified message goes for one recipient, and where responses go. */
export interface Deliverer {
  /**
   * Write `bytes` to `target` under `name`. Idempotent: writing the same name twice has one effect.
   * Returns a human-readable location.
   */
  deliver(target: DeliveryTarget, name: string, bytes: Uint8Array, contentType: string): Promise<string>;
}

export type DeliveryTarget =
  | { type: 'folder'; path: string }
  | { type: 's3'; bucket: string; prefix: string }
  | { type: 'sqs'; queueUrl: string }
  /**
   * A MESH mailbox, sent to from the gateway's mailbox `from` (default: the configured sending
   * mailbox) with `localId` as `Mex-LocalID` (the trace id, so MESH REPORTs join the trace).
   */
  | { type: 'mesh'; mailbox: string; workflowId?: string; from?: string; localId?: string };

/** One audit event. Never message bytes, tokens, keys or patient data. */
export interface AuditEntry {
  traceId: string;
  at: string; // ISO time of the event
  stage: StageName | 'ingest' | 'operator' | 'mesh';
  event:
    | 'received'
    | 'forwarded'
    | 'rejected'
    | 'delivered'
    | 'response-sent'
    | 'transient-failure'
    | 'dead-lettered'
    | 'redriven'
    // MESH (lib/mesh/poller.ts): a MESH REPORT (non-delivery, error) read from a mailbox, and a
    // message the poller would not take (over its size cap); never message bodies.
    | 'mesh-report'
    | 'mesh-refused';
  code?: string; // error code
  itk3Code?: string;
  messageId?: string; // MessageHeader id (after verify) or itk.id (claimed, before)
  sender?: string; // ODS
  recipient?: string; // ODS
  ruleId?: string;
  detail?: string; // short, non-sensitive
}

export interface AuditLog {
  append(entry: AuditEntry): Promise<void>;
  /**
   * Record a stage's outcome once per trace, however often the record is redelivered: append
   * `entries` (all of one trace) together with the marker `once` (unique within the trace, e.g.
   * `deliver#delivered`) atomically — the marker and every entry, or none of them. Returns true when
   * this call recorded them, false when the marker was already there (nothing is written then).
   * DynamoDB: one item and one conditional `PutItem`, whatever the number of entries.
   */
  appendOnce(once: string, entries: readonly AuditEntry[]): Promise<boolean>;
  /** Entries for one trace, oldest first. */
  byTrace(traceId: string): Promise<AuditEntry[]>;
}

/** Wall clock, injectable so tests and the embedded runtime can move time. */
export interface Clock {
  now(): number; // ms since epoch
}

export const systemClock: Clock = { now: () => Date.now() };

/**
 * The CPU-heavy, side-effect-free steps of the stages: verifying a credential, opening the sealed
 * message, verifying the signed Bundle, reading a Bundle, building and signing a response. Same results and the same errors (class,
 * code, message) as the stages' own functions, which is what stages call when a composition root
 * gives none; the embedded runtime runs them on a worker pool (lib/adapters/local/worker-pool.ts)
 * against the same configuration as the stage's, with the workers' own copies of the keys.
 */
export interface CpuWork {
  /** `verifyCredential` of lib/envelope/token.ts with the pipeline's configuration. */
  verifyCredential(token: string, receivedAtMs: number): Promise<VerifiedCredential>;
  /** `openSealedContent` of lib/stages/decrypt.ts: parse, unwrap with the recipient key, AES-GCM. */
  openSealed(compact: string, authorisedKid: string): Promise<string>;
  /** `verifySignedContent` of lib/stages/verify.ts: the inner signature, bindings, the Bundle's rules. */
  verifySignedContent(input: SignedContentInput): Promise<BundleContent>;
  /** `signedResponseJws` of lib/stages/deliver.ts: the ITK008M built and signed by the response key. */
  signResponse(spec: ResponseSpec): Promise<string>;
  /** `parseBundle` of lib/itk3/parse.ts with its default caps. */
  parseBundle(payload: Uint8Array, format: BundleFormat): Promise<Itk3Message>;
}

/** Everything a stage handler needs, assembled by a composition root. */
export interface Ports {
  keys: KeyService;
  /** Where the stages' CPU-heavy pure steps run; in the calling thread when absent. */
  cpu?: CpuWork;
  queues: QueueSender;
  once: OnceStore;
  blobs: BlobStore;
  deliverer: Deliverer;
  audit: AuditLog;
  clock: Clock;
}

/** FHIR id rule: only ids that pass it reach the audit and outcomes. */
const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;
const MAX_FIELD = 256;

/**
 * Bound an audit entry before it is stored: a `messageId` that fails the FHIR id rule is dropped
 * (it is sender-controlled and may carry patient data or be huge), and every other optional string
 * is truncated so an item stays far below DynamoDB's 400 KB limit.
 */
export function safeAuditEntry(entry: AuditEntry): AuditEntry {
  const out: AuditEntry = { ...entry };
  if (out.messageId !== undefined && !FHIR_ID.test(out.messageId)) delete out.messageId;
  for (const field of ['code', 'itk3Code', 'sender', 'recipient', 'ruleId', 'detail', 'traceId'] as const) {
    const value = out[field];
    if (typeof value === 'string' && value.length > MAX_FIELD) out[field] = `${value.slice(0, MAX_FIELD)}…`;
  }
  return out;
}

/**
 * The key of an {@link AuditLog.appendOnce} marker, `<trace>#<once>`, after checking the call: at
 * least one entry, all of one trace (an outcome belongs to one trace), and a non-empty marker.
 */
export function onceMarker(entries: readonly AuditEntry[], once: string): string {
  const traceId = entries[0]?.traceId;
  if (traceId === undefined || once === '')
    throw new Error('appendOnce needs a marker and at least one entry');
  if (entries.some((e) => e.traceId !== traceId)) throw new Error('appendOnce entries must share one trace');
  return `${traceId}#${once}`;
}
