/**
 * What every rejection code means to a sender: the stage that raises it, what it says, and what
 * would have to change for the message to pass. Keyed by the codes of the error catalogue
 * (lib/errors.ts); test/unit/explain/integrator-friction.test.ts fails when a catalogue code has no
 * entry here, and when docs/REJECTION-CODES.md (generated: `itk3 codes --markdown`) is stale.
 * Typed by string rather than by the catalogue's code type so that codes another branch adds to
 * the catalogue (the one-view parser's, below) can be described before they arrive.
 */
import { ERROR_CATALOGUE, type Itk3ResponseCode, type RejectionCode } from '../errors.js';

/** Where a code can be raised: a pipeline stage, or `ingest` (the HTTP front door / inbound queue). */
type CodeStage = 'ingest' | 'authenticate' | 'authorise' | 'decrypt' | 'verify';

export interface CodeDescription {
  stages: readonly CodeStage[];
  /** What went wrong, as the sender should read it. */
  meaning: string;
  /** What would have to change to pass. */
  toPass: string;
}

export const REJECTION_CODES: Readonly<Record<string, CodeDescription>> = {
  TOKEN_MISSING: {
    stages: ['ingest', 'authenticate'],
    meaning: 'no credential was presented (no `Authorization: Bearer` header or SQS attribute)',
    toPass: 'send the credential as `Authorization: Bearer <jwt>` (the scheme name is case-insensitive)',
  },
  TOKEN_MALFORMED: {
    stages: ['authenticate'],
    meaning:
      'the credential is not a compact JWS, has non-canonical base64url, duplicate members, or a header parameter that is not accepted (`jwk`, `jku`, `x5u`, `x5c`, `crit`, `b64`, `zip`) or no valid `kid`',
    toPass: 'mint a compact JWT with header `{alg, kid, typ: "JWT"}` only',
  },
  TOKEN_TOO_LARGE: {
    stages: ['ingest', 'authenticate'],
    meaning: 'the credential is over `limits.maxTokenBytes`',
    toPass: 'keep the credential under the size limit (drop unneeded claims)',
  },
  TOKEN_ISSUER_UNKNOWN: {
    stages: ['authenticate'],
    meaning: 'the credential `iss` is not a trusted issuer of this gateway',
    toPass: 'use a token service the gateway trusts (`issuers[].issuer`), or have the operator add yours',
  },
  TOKEN_KEY_UNKNOWN: {
    stages: ['authenticate'],
    meaning: "the credential `kid` is not one of its issuer's configured keys",
    toPass: "sign with a key the gateway has for your issuer, or have the operator add the issuer's new key",
  },
  TOKEN_ALG_NOT_ALLOWED: {
    stages: ['authenticate'],
    meaning: 'the credential `alg` is not RS512, PS256 or ES256, or differs from the `alg` of the issuer key',
    toPass: "sign with the issuer key's own algorithm",
  },
  TOKEN_SIGNATURE_INVALID: {
    stages: ['authenticate'],
    meaning: "the credential signature does not verify with the issuer's key",
    toPass: 'sign the credential with the private key of the `kid` it names',
  },
  TOKEN_CLAIM_INVALID: {
    stages: ['authenticate'],
    meaning:
      'a claim is missing or wrong: `typ` must be `JWT`; `iss`, `sub`, `aud`, `iat`, `exp`, `jti` required; `aud` must name only this gateway; `act` must be well-formed and name no other issuer',
    toPass: 'send every required claim, with `aud` set to the gateway audience alone',
  },
  TOKEN_EXPIRED: {
    stages: ['authenticate'],
    meaning:
      'the credential had expired (or was issued too long ago) at receipt time, after the allowed skew',
    toPass: 'mint a fresh credential for each message, just before sending',
  },
  TOKEN_NOT_YET_VALID: {
    stages: ['authenticate'],
    meaning: '`nbf` or `iat` is in the future at receipt time, beyond the allowed skew',
    toPass: "check the token service's clock",
  },
  TOKEN_LIFETIME_TOO_LONG: {
    stages: ['authenticate'],
    meaning: '`exp − iat` is over `limits.maxTokenLifetimeSeconds` (300 s by default)',
    toPass: 'mint credentials that live at most the allowed lifetime',
  },
  TOKEN_REPLAYED: {
    stages: ['authenticate'],
    meaning: 'the credential (`iss`, organisation, `jti`) was already used with another submission',
    toPass: 'mint a new credential (a new `jti`) for every message',
  },
  TOKEN_ORGANISATION_MISSING: {
    stages: ['authenticate'],
    meaning: "the credential carries no ODS code in its issuer's organisation claim",
    toPass:
      "put the sending organisation's ODS code in the claim the issuer is configured with (default `ods`)",
  },
  TOKEN_ORGANISATION_OUT_OF_SCOPE: {
    stages: ['authenticate', 'authorise'],
    meaning: "the credential's organisation is not one its issuer may speak for (federation scope)",
    toPass:
      "use the issuer that speaks for your organisation, or have the operator add it to the issuer's `organisations`",
  },
  TOKEN_CLIENT_NOT_REGISTERED: {
    stages: ['authenticate'],
    meaning: 'the credential (issuer, `sub`) is not a registered client of its organisation',
    toPass: "use a registered client id, or have the operator add `{issuer, sub}` to the sender's `clients`",
  },
  DELEGATION_CHAIN_TOO_DEEP: {
    stages: ['authenticate'],
    meaning: 'the nested `act` chain is deeper than `limits.maxDelegationDepth`',
    toPass: 'shorten the delegation chain',
  },
  POLICY_DENIED: {
    stages: ['authorise'],
    meaning:
      'no policy rule allows this sender, client, event and recipient (deny by default), or the client is not one of the sender organisation',
    toPass:
      'send an event to a recipient a rule allows for your organisation, or have the operator add a rule',
  },
  DELEGATION_NOT_GRANTED: {
    stages: ['authorise'],
    meaning: 'an actor in the `act` chain holds no grant for this issuer, organisation and event',
    toPass: 'have the operator add a delegation grant for the actor, issuer, organisation and event',
  },
  DELEGATION_GRANT_EXPIRED: {
    stages: ['authorise'],
    meaning: "the actor's grant for this organisation and event has expired",
    toPass: 'have the operator renew the grant (`delegations[].expires`)',
  },
  ROUTING_SENDER_MISMATCH: {
    stages: ['authorise'],
    meaning: 'the JWE `itk.from` differs from the organisation the credential speaks for',
    toPass:
      "present the credential of the organisation that sends the message (`itk.from` = the credential's ODS code)",
  },
  SENDER_UNKNOWN: {
    stages: ['authorise'],
    meaning: 'the sending organisation is not registered with this gateway',
    toPass: 'have the operator register your organisation (`senders[]`)',
  },
  RECIPIENT_UNKNOWN: {
    stages: ['authorise'],
    meaning: 'the JWE `itk.to` is not an organisation this gateway serves',
    toPass: 'address the message to a recipient the gateway serves',
  },
  ENVELOPE_MALFORMED: {
    stages: ['ingest', 'authorise', 'decrypt'],
    meaning:
      'the body is not a compact JWE (five base64url segments; the JSON serialisation is refused), or its header, IV, tag or decrypted content is malformed',
    toPass: 'send the compact serialisation of the JWE as the whole body',
  },
  ENVELOPE_HEADER_NOT_ALLOWED: {
    stages: ['authorise'],
    meaning:
      'the JWE header has a parameter or value outside the allow-list (`alg` RSA-OAEP-256 or ECDH-ES+A256KW as the recipient key says, `enc` A256GCM, `cty` JOSE or application/jose, `typ` ignored, `epk`/`apu`/`apv` only with ECDH-ES+A256KW; no `zip`, `crit`, `jku`, `jwk`, `x5u`, `x5c` or other members)',
    toPass:
      'encrypt with exactly the contract header: `{alg, enc, kid, cty: "JOSE", itk}` (plus `epk`, and optionally `apu`/`apv`, for ECDH-ES+A256KW); see docs/WIRE-FORMAT.md §2',
  },
  ENVELOPE_KEY_UNKNOWN: {
    stages: ['authorise', 'decrypt'],
    meaning: 'the JWE `kid` is not a current key of the recipient named in `itk.to`',
    toPass: "encrypt to the recipient's published key (its `kid` from the JWKS)",
  },
  MESSAGE_TOO_LARGE: {
    stages: ['ingest', 'authorise', 'verify'],
    meaning:
      "the sealed message or the Bundle is over its size limit (`maxSealedBytes`, `maxBundleBytes`, the rule's `maxBytes`)",
    toPass: 'send a smaller Bundle',
  },
  MESH_ATTESTATION_INVALID: {
    stages: ['authenticate'],
    meaning:
      "the inbound record claims to come from MESH but carries no valid gateway attestation over its MESH facts and body (only the gateway's own poller may say MESH)",
    toPass:
      'send through MESH to a gateway mailbox, or over HTTPS / the inbound queue without MESH attributes',
  },
  MESH_MAILBOX_UNKNOWN: {
    stages: ['authenticate'],
    meaning:
      'the sending mailbox (`Mex-From`) belongs to no configured sender and no delegation grant names it',
    toPass: 'have the operator register your mailbox under your organisation (`senders[].mesh.mailboxes`)',
  },
  MESH_MESSAGE_REPEATED: {
    stages: ['authenticate'],
    meaning:
      "the same MESH message was enqueued a second time (the poller's one crash window); it is not answered again",
    toPass: 'nothing: the first copy is processed',
  },
  MESH_MAILBOX_NOT_REGISTERED: {
    stages: ['authorise'],
    meaning:
      "the mailbox may not speak for the MessageHeader's sender organisation (not its own mailbox, and no grant names the mailbox, organisation and event)",
    toPass:
      "send from your organisation's own mailbox, or have the operator add a grant (`delegations[].meshMailboxes`)",
  },
  MESH_SOURCE_MISMATCH: {
    stages: ['verify'],
    meaning: '`MessageHeader.source.endpoint` is not the mailbox the message came from (`Mex-From`)',
    toPass: 'put the sending mailbox id in `MessageHeader.source.endpoint`',
  },
  MESH_WORKFLOW_MISMATCH: {
    stages: ['verify'],
    meaning: "`Mex-WorkflowID` is not a workflow of the message's event code (ITK3.md §3)",
    toPass: 'send with the workflow id of the event (e.g. `GPFED_CONSULT_REPORT` for ITK007C)',
  },
  DECRYPT_FAILED: {
    stages: ['decrypt'],
    meaning: 'the sealed message could not be decrypted (one answer for every cause, RFC 7516 §11.5)',
    toPass: "encrypt to the recipient's current public key and send the JWE unaltered",
  },
  SIGNATURE_MALFORMED: {
    stages: ['verify'],
    meaning:
      'the decrypted content is not a compact JWS (e.g. an unsigned Bundle) or its header is malformed',
    toPass: 'sign the Bundle (compact JWS) and encrypt the JWS, never the Bundle alone',
  },
  SIGNATURE_HEADER_NOT_ALLOWED: {
    stages: ['verify'],
    meaning:
      'the JWS header has a parameter outside the allow-list, or `cty` is not `fhir+xml`/`fhir+json` (`application/` prefix optional)',
    toPass: 'sign with exactly `{alg, kid, cty, itk}`',
  },
  SIGNATURE_KEY_UNKNOWN: {
    stages: ['verify'],
    meaning: 'the JWS `kid` is not a registered sender signing key',
    toPass: 'sign with a key registered for your organisation (`senders[].signingKeys`)',
  },
  SIGNATURE_KEY_NOT_SENDERS: {
    stages: ['verify'],
    meaning: 'the JWS key belongs to another organisation than the authenticated sender',
    toPass: "sign with your own organisation's key",
  },
  SIGNATURE_ALG_NOT_ALLOWED: {
    stages: ['verify'],
    meaning: "the JWS `alg` is not allowed or differs from the registered key's `alg`",
    toPass: "sign with the registered key's own algorithm",
  },
  SIGNATURE_INVALID: {
    stages: ['verify'],
    meaning: 'the JWS signature does not verify with the registered key',
    toPass: 'sign with the private key of the `kid` you name, over the exact Bundle bytes',
  },
  BINDING_MISMATCH: {
    stages: ['verify'],
    meaning:
      'the JWE `itk` differs from the signed JWS `itk`, or the signed sender differs from the credential',
    toPass: 'put the same `itk` routing header in the JWS and the JWE, with `from` = your ODS code',
  },
  RECIPIENT_NOT_SERVED: {
    stages: ['verify'],
    meaning: 'the signed recipient is not served here',
    toPass: 'address the message to a recipient the gateway serves',
  },
  BUNDLE_UNREADABLE: {
    stages: ['verify'],
    meaning: 'the signed payload is not a well-formed FHIR XML or JSON Bundle',
    toPass: 'sign the Bundle bytes themselves, well-formed, in the format `cty` names',
  },
  BUNDLE_NOT_ITK3: {
    stages: ['verify'],
    meaning: 'the Bundle is not an ITK3 message (e.g. an ITK 2.x message, or not `type` message)',
    toPass: 'send an ITK3 FHIR STU3 Bundle of type message',
  },
  ITK3_HEADER_INVALID: {
    stages: ['verify'],
    meaning: 'the MessageHeader breaks an ITK3 header rule (or has a receiver the use case forbids)',
    toPass: 'fix the MessageHeader as the detail says (ITK3 messaging specification)',
  },
  HEADER_CONTRADICTS_ENVELOPE: {
    stages: ['verify'],
    meaning:
      'the MessageHeader sender, id, event, receiver or source endpoint differs from the signed routing header',
    toPass: 'derive `itk` from the MessageHeader (from, to, event, id); source endpoint = your MESH mailbox',
  },
  // The one-view parser's refusals (issue 9, class 1): what two readers could read differently.
  BUNDLE_BYTE_ORDER_MARK: {
    stages: ['verify'],
    meaning: 'the Bundle starts with a byte-order mark',
    toPass: 'sign the Bundle bytes without a byte-order mark',
  },
  BUNDLE_FOREIGN_CONTENT: {
    stages: ['verify'],
    meaning:
      'the Bundle carries content outside FHIR (a foreign XML namespace, a JSON member that is not a FHIR element)',
    toPass: 'send only FHIR elements',
  },
  BUNDLE_AMBIGUOUS: {
    stages: ['verify'],
    meaning:
      'part of the Bundle could be read two ways (a JSON null or non-array list, an entry without exactly one resource, a non-ASCII fullUrl or reference, an id that is not a FHIR id)',
    toPass: 'fix the element the detail names so every reader reads it the same way',
  },
  DUPLICATE_FULL_URL: {
    stages: ['verify'],
    meaning: 'two Bundle entries share a fullUrl (FHIR bdl-7)',
    toPass: 'give every entry its own fullUrl',
  },
  ODS_IDENTIFIER_AMBIGUOUS: {
    stages: ['verify'],
    meaning: 'an organisation identifier is not one ODS code in the ODS organisation or site system',
    toPass: 'identify organisations by one ODS code in the ODS system',
  },
  REFERENCE_UNRESOLVED: {
    stages: ['verify'],
    meaning: 'a MessageHeader reference (sender, receiver, focus) does not resolve to an entry of the Bundle',
    toPass: 'make MessageHeader.sender, receiver and focus point to entries of the Bundle',
  },
  HANDLING_SPEC_INVALID: {
    stages: ['verify'],
    meaning: 'the ITK3 handling specification extension is missing or malformed',
    toPass: 'send the handling specification keys the ITK3 specification requires',
  },
  INF_ACK_INVALID: {
    stages: ['verify'],
    meaning: 'InfAckRequested is missing or differs from the agreed pattern for the event',
    toPass: 'set InfAckRequested as the rule for the event requires (`rules[].acks.inf`)',
  },
  BUS_ACK_INVALID: {
    stages: ['verify'],
    meaning: 'BusAckRequested is missing or differs from the agreed pattern for the event',
    toPass: 'set BusAckRequested as the rule for the event requires (`rules[].acks.bus`)',
  },
  MESSAGE_DEFINITION_UNSUPPORTED: {
    stages: ['verify'],
    meaning: 'the MessageDefinition is unreadable or not one the rule accepts for the event',
    toPass: 'use a MessageDefinition the rule lists (`rules[].messageDefinition`)',
  },
  MESSAGE_DEFINITION_VERSION_UNSUPPORTED: {
    stages: ['verify'],
    meaning: 'the MessageDefinition version is not supported (reserved: not raised today)',
    toPass: 'use a supported MessageDefinition version',
  },
  SENDER_REFERENCE_INVALID: {
    stages: ['verify'],
    meaning: 'SenderReference is empty, padded or too long',
    toPass: 'send a SenderReference of 1–255 characters without surrounding spaces, or none',
  },
  RECIPIENT_TYPE_INVALID: {
    stages: ['verify'],
    meaning: 'RecipientType is not FA or FI, or not one the rule accepts',
    toPass: 'use a RecipientType the rule lists (`rules[].recipientType`)',
  },
  PAYLOAD_INVALID: {
    stages: ['verify'],
    meaning: 'the payload is invalid (reserved: not raised today)',
    toPass: 'send a valid payload',
  },
  DUPLICATE_MESSAGE: {
    stages: ['verify'],
    meaning: 'a message with this MessageHeader id was already processed (within `dedupeDays`)',
    toPass: 'give every message a new MessageHeader id',
  },
  DUPLICATE_DOCUMENT: {
    stages: ['verify'],
    meaning:
      "a document with this id was already received from this sender organisation; the document id is the id of the Bundle the MessageHeader's focus points to",
    toPass: 'send a new document id for a new document (an amended document is a new document Bundle)',
  },
  RECORD_MALFORMED: {
    stages: ['ingest'],
    meaning: 'a queue body is not a pipeline record (internal: only a writer to an internal queue sees it)',
    toPass: 'write only through the front door or the inbound queue',
  },
};

const UNDESCRIBED: CodeDescription = {
  stages: [],
  meaning: 'not described yet (add it to lib/explain/codes.ts)',
  toPass: 'see the detail',
};

/** The description of a catalogue code. */
export function describeCode(code: string): CodeDescription {
  return REJECTION_CODES[code] ?? UNDESCRIBED;
}

/** One row per catalogue code, in catalogue order. */
export function rejectionCodeRows(): {
  code: RejectionCode;
  itk3Code: Itk3ResponseCode;
  description: CodeDescription;
}[] {
  return (Object.keys(ERROR_CATALOGUE) as RejectionCode[]).map((code) => ({
    code,
    itk3Code: ERROR_CATALOGUE[code],
    description: describeCode(code),
  }));
}

const ITK3_MEANINGS: Readonly<Record<Itk3ResponseCode, string>> = {
  '10001': 'handling specification error',
  '10002': 'InfAckRequested error',
  '10003': 'BusAckRequested error',
  '10004': 'MessageDefinition not supported',
  '10005': 'MessageDefinition version not supported',
  '10007': 'SenderReference error',
  '10008': 'LocalExtension error',
  '10009': 'unreadable or not ITK3',
  '10010': 'RecipientType error',
  '20002': 'recipient unknown',
  '20003': 'sender unknown',
  '20006': 'MessageHeader invalid',
  '20007': 'duplicate message',
  '20008': 'duplicate document',
  '20009': 'payload invalid',
  '20010': 'payload ID mismatch',
  '20012': 'unauthorised sender',
  '20013': 'delivered (infrastructure acknowledgement)',
  '20015': 'message too large',
};

/** The HTTP front door's own refusals, before anything reaches a queue. */
const INGEST_RESPONSES: readonly [string, string, string][] = [
  ['401', 'TOKEN_MISSING', 'no `Authorization: Bearer <jwt>` header (scheme matched case-insensitively)'],
  ['401', 'TOKEN_TOO_LARGE', 'credential over `limits.maxTokenBytes`'],
  [
    '401',
    'TOKEN_REJECTED',
    'the credential failed a check the front door makes before storing anything (issuer, key, signature, times, audience, scope, client); one answer whatever failed, the reason is in the operator log only',
  ],
  [
    '401',
    'UNAUTHENTICATED',
    '`itk3 serve`: the same front-door credential check, made before the body is read (also for a missing or oversized credential, and for a credential serve already accepted a submission for)',
  ],
  ['421', 'MISDIRECTED', '`itk3 serve`: the `Host` header is not on the allow-list (`--allowed-host`)'],
  [
    '503',
    'BACKLOG_FULL',
    '`itk3 serve`: the pipeline backlog is over its bound; retry after `Retry-After` seconds',
  ],
  [
    '503',
    'SENDER_BACKLOG_FULL',
    "`itk3 serve`: this sender's own submissions (queued or being read) hold its share of the backlog bounds (`--max-backlog-share`); others are still taken. Retry after `Retry-After` seconds, once some have finished",
  ],
  ['413', 'MESSAGE_TOO_LARGE', 'body over `limits.maxSealedBytes`'],
  [
    '400',
    'ENVELOPE_MALFORMED',
    'body is a JSON-serialised JWE ("send the compact serialisation"), starts with a byte-order mark, or is not five base64url segments (only ASCII whitespace around them is ignored)',
  ],
  [
    '415',
    'CONTENT_ENCODING_NOT_ACCEPTED',
    'a `Content-Encoding` other than `identity`: the body is read as sent, never decoded',
  ],
  [
    '400',
    'HEADER_REPEATED',
    '`itk3 serve`: `Host`, `Authorization`, `Content-Length`, `Content-Type`, `Content-Encoding` or `Transfer-Encoding` appears more than once',
  ],
  [
    '400',
    'REQUEST_TARGET_NOT_ORIGIN_FORM',
    '`itk3 serve`: the request target is not a path (absolute-form `http://host/…`)',
  ],
  ['400', 'TRAILERS_NOT_ACCEPTED', '`itk3 serve`: a chunked body ends with trailer fields'],
  [
    '400',
    'REQUEST_TARGET_NOT_NORMALISED',
    '`itk3 serve`: the path has dot segments (`..`, `%2e%2e`), backslashes or a leading `//`',
  ],
  ['503', 'QUEUE_UNAVAILABLE', 'the inbound queue could not be written: retry later'],
];

/** docs/REJECTION-CODES.md, generated. */
export function rejectionCodesMarkdown(): string {
  const esc = (s: string) => s.replace(/\|/g, '\\|');
  const lines = [
    '# Rejection codes',
    '',
    '<!-- Generated by `./bin/itk3.js codes --markdown > docs/REJECTION-CODES.md` from lib/explain/codes.ts',
    '     and the error catalogue in lib/errors.ts. Do not edit by hand: test/unit/explain/codes.test.ts',
    '     fails when this file is stale. -->',
    '',
    'Every code a message can be rejected with. An authenticated sender receives the **ITK3 code**',
    'in a signed ITK008M response (`MessageHeader.response.code` `fatal-error`, the code in its',
    'OperationOutcome, the stable code in its diagnostics); what a sender who was never authenticated',
    'receives is in [WIRE-FORMAT.md § 5](WIRE-FORMAT.md#5-responses). The stable **code** is in the',
    'audit trail, the `process` and `GET /messages/<id>` outcomes and `itk3 explain`, which also says',
    'what would have to change. A rejection is never retried.',
    '',
    '**Duplicate keys.** A duplicate message (20007) is a MessageHeader id seen before; a duplicate',
    'document (20008) is a document id seen before, the document id being the id of the Bundle the',
    "MessageHeader's `focus` points to. Both are remembered for `limits.dedupeDays` (30 by default),",
    'per sender organisation: two organisations may use the same id.',
    '',
    '| code | ITK3 | stage | meaning | to pass |',
    '| --- | --- | --- | --- | --- |',
    ...rejectionCodeRows().map(
      (r) =>
        `| \`${r.code}\` | ${r.itk3Code} ${ITK3_MEANINGS[r.itk3Code]} | ${r.description.stages.join(', ')} | ${esc(r.description.meaning)} | ${esc(r.description.toPass)} |`,
    ),
    '',
    '## HTTP front door',
    '',
    '`POST /messages` answers these itself, before anything is queued (JSON body `{error, message}`);',
    'everything else is accepted with `202 {"trackingId"}` and decided by the pipeline.',
    '',
    '| HTTP | error | when |',
    '| --- | --- | --- |',
    ...INGEST_RESPONSES.map(([status, code, when]) => `| ${status} | \`${code}\` | ${esc(when)} |`),
    '',
  ];
  return lines.join('\n');
}
