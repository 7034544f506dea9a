/**
 * Every failure the pipeline can report, with a stable code.
 *
 * One base class, one subclass per family, a `code` from the catalogue below and the original
 * error kept as `cause`. The catalogue is the one table that maps a failure to its ITK3 response
 * code (ITK3.md §8) and to its metric name; nothing else in the code base decides a response code.
 *
 * Messages are terse and never carry token, key or message content: they are logged and audited.
 */

/** ITK3 response codes this pipeline emits (ITK-ResponseCodes-1). */
export type Itk3ResponseCode =
  | '10001'
  | '10002'
  | '10003'
  | '10004'
  | '10005'
  | '10007'
  | '10008'
  | '10009'
  | '10010'
  | '20002'
  | '20003'
  | '20006'
  | '20007'
  | '20008'
  | '20009'
  | '20010'
  | '20012'
  | '20013'
  | '20015';

/** Stable error codes, grouped by family. The value is the ITK3 response code it maps to. */
export const ERROR_CATALOGUE = {
  // Credential (authenticate) — all "unauthorised sender".
  TOKEN_MISSING: '20012',
  TOKEN_MALFORMED: '20012',
  TOKEN_TOO_LARGE: '20012',
  TOKEN_ISSUER_UNKNOWN: '20012',
  TOKEN_KEY_UNKNOWN: '20012',
  TOKEN_ALG_NOT_ALLOWED: '20012',
  TOKEN_SIGNATURE_INVALID: '20012',
  TOKEN_CLAIM_INVALID: '20012',
  TOKEN_EXPIRED: '20012',
  TOKEN_NOT_YET_VALID: '20012',
  TOKEN_LIFETIME_TOO_LONG: '20012',
  TOKEN_REPLAYED: '20012',
  TOKEN_ORGANISATION_MISSING: '20012',
  /** The credential's organisation is not one its issuer may speak for (issuer scope). */
  TOKEN_ORGANISATION_OUT_OF_SCOPE: '20012',
  /** The credential's (issuer, sub) is not a registered client of its organisation. */
  TOKEN_CLIENT_NOT_REGISTERED: '20012',
  DELEGATION_CHAIN_TOO_DEEP: '20012',
  // MESH as the identity source (docs/MESH.md). The first three leave the sender unauthenticated.
  /** `Transport: mesh` without the poller's valid attestation: not from our MESH poller. */
  MESH_ATTESTATION_INVALID: '20012',
  /** The sending mailbox is no configured sender's and no grant's. */
  MESH_MAILBOX_UNKNOWN: '20012',
  /** The same MESH message on a second trace (a poller crash window): the first one is answered. */
  MESH_MESSAGE_REPEATED: '20007',
  /** The mailbox is known but not registered for the organisation the MessageHeader names. */
  MESH_MAILBOX_NOT_REGISTERED: '20012',
  /** MessageHeader.source.endpoint names another mailbox than the one MESH authenticated. */
  MESH_SOURCE_MISMATCH: '20012',

  // Authorisation.
  POLICY_DENIED: '20012',
  DELEGATION_NOT_GRANTED: '20012',
  DELEGATION_GRANT_EXPIRED: '20012',
  ROUTING_SENDER_MISMATCH: '20012',
  SENDER_UNKNOWN: '20003',
  RECIPIENT_UNKNOWN: '20002',

  // Envelope structure (before any key is used) — "unreadable".
  ENVELOPE_MALFORMED: '10009',
  ENVELOPE_HEADER_NOT_ALLOWED: '10009',
  ENVELOPE_KEY_UNKNOWN: '10009',
  MESSAGE_TOO_LARGE: '20015',

  // Decryption: one uniform code whatever failed (SECURITY-CORPUS.md A22, rule 9).
  DECRYPT_FAILED: '10009',

  // Inner signature and bindings.
  SIGNATURE_MALFORMED: '20012',
  SIGNATURE_HEADER_NOT_ALLOWED: '20012',
  SIGNATURE_KEY_UNKNOWN: '20012',
  SIGNATURE_KEY_NOT_SENDERS: '20012',
  SIGNATURE_ALG_NOT_ALLOWED: '20012',
  SIGNATURE_INVALID: '20012',
  BINDING_MISMATCH: '20012',
  RECIPIENT_NOT_SERVED: '20002',

  // ITK3 content.
  BUNDLE_UNREADABLE: '10009',
  BUNDLE_NOT_ITK3: '10009',
  ITK3_HEADER_INVALID: '20006',
  HEADER_CONTRADICTS_ENVELOPE: '20006',
  /** `Mex-WorkflowID` is not a workflow of the MessageHeader's event (ITK3.md §3). */
  MESH_WORKFLOW_MISMATCH: '20006',
  // One view of the message: what any reasonable reader would read differently is refused.
  BUNDLE_BYTE_ORDER_MARK: '20006',
  BUNDLE_FOREIGN_CONTENT: '20006',
  BUNDLE_AMBIGUOUS: '20006',
  DUPLICATE_FULL_URL: '20006',
  ODS_IDENTIFIER_AMBIGUOUS: '20006',
  REFERENCE_UNRESOLVED: '20006',
  HANDLING_SPEC_INVALID: '10001',
  INF_ACK_INVALID: '10002',
  BUS_ACK_INVALID: '10003',
  MESSAGE_DEFINITION_UNSUPPORTED: '10004',
  MESSAGE_DEFINITION_VERSION_UNSUPPORTED: '10005',
  SENDER_REFERENCE_INVALID: '10007',
  RECIPIENT_TYPE_INVALID: '10010',
  PAYLOAD_INVALID: '20009',
  DUPLICATE_MESSAGE: '20007',
  DUPLICATE_DOCUMENT: '20008',

  // Records between stages.
  RECORD_MALFORMED: '10009',
} as const satisfies Record<string, Itk3ResponseCode>;

export type RejectionCode = keyof typeof ERROR_CATALOGUE;

/** Codes for failures that are retried (SQS redelivery) and end in a DLQ. */
export type TransientCode =
  | 'KEY_SERVICE_UNAVAILABLE'
  | 'QUEUE_UNAVAILABLE'
  | 'STORE_UNAVAILABLE'
  | 'BLOB_STORE_UNAVAILABLE'
  | 'DELIVERY_UNAVAILABLE'
  /** A different object already holds the delivery name: never claimed as delivered (issue 9). */
  | 'DELIVERY_CONFLICT'
  | 'AUDIT_UNAVAILABLE'
  /** MESH did not take a message or response (retried, then dead-lettered with MESH's reason). */
  | 'MESH_SEND_FAILED'
  | 'UNEXPECTED';

export type PipelineErrorCode = RejectionCode | TransientCode | 'CONFIG_INVALID' | 'USAGE';

/** Base class: a stable `code`, a short message, the cause kept. */
export abstract class PipelineError extends Error {
  abstract readonly code: PipelineErrorCode;
  abstract readonly permanent: boolean;

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/**
 * A permanent failure: never retried. The record goes to the response path with the ITK3 code
 * from {@link ERROR_CATALOGUE}.
 */
export class RejectionError extends PipelineError {
  override readonly code: RejectionCode;
  readonly permanent = true;
  readonly itk3Code: Itk3ResponseCode;
  /** What the stage knew about the message when it failed, for the ITK3 response. */
  responseHints?: ResponseHints;

  constructor(code: RejectionCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.itk3Code = ERROR_CATALOGUE[code];
  }
}

/** Facts a stage learnt before rejecting, used to address and format the ITK3 response. */
export interface ResponseHints {
  originalMessageId?: string;
  format?: 'xml' | 'json';
  senderReference?: string;
}

/** Credential problems (authenticate). */
export class AuthenticationError extends RejectionError {}
/** Policy, grants, known parties (authorise). */
export class AuthorisationError extends RejectionError {}
/** Envelope structure, allow-lists and size, checked before any key is used. */
export class EnvelopeError extends RejectionError {}
/** The one external decryption error. Which step failed is never told. */
export class DecryptionError extends RejectionError {
  constructor(options?: { cause?: unknown }) {
    super('DECRYPT_FAILED', 'the sealed message could not be decrypted', options);
  }
}
/** Inner JWS and the bindings between token, JWE, JWS and MessageHeader. */
export class SignatureError extends RejectionError {}
/** ITK3 Bundle content: unreadable, header rules, duplicates. */
export class Itk3ValidationError extends RejectionError {}

/** A failure that may succeed on retry: throttling, timeouts, 5xx. */
export class TransientError extends PipelineError {
  override readonly code: TransientCode;
  readonly permanent = false;

  constructor(code: TransientCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

/** Configuration document problems: every issue listed at once. */
export class ConfigError extends PipelineError {
  readonly code = 'CONFIG_INVALID' as const;
  readonly permanent = true;
  readonly issues: readonly string[];
  /** Findings that would not on their own make the document invalid, listed after the problems. */
  readonly warnings: readonly string[];

  constructor(issues: readonly string[], warnings: readonly string[] = []) {
    const listed = (items: readonly string[]) => `\n  - ${items.join('\n  - ')}`;
    super(
      `configuration is invalid (${issues.length} problem${issues.length === 1 ? '' : 's'}):${listed(issues)}` +
        (warnings.length > 0 ? `\nwarnings:${listed(warnings)}` : ''),
    );
    this.issues = issues;
    this.warnings = warnings;
  }
}

/** Bad CLI arguments or unreadable input files. */
export class UsageError extends PipelineError {
  readonly code = 'USAGE' as const;
  readonly permanent = true;
}

/** Anything thrown that is not a {@link PipelineError} is treated as transient: retry, then DLQ. */
export function classify(error: unknown): PipelineError {
  if (error instanceof PipelineError) return error;
  return new TransientError('UNEXPECTED', 'unexpected failure', { cause: error });
}
