/**
 * Build ITK3 responses (event ITK008M, ITK3.md §5): one OperationOutcome issue carrying one code
 * of `ITK-ResponseCodes-1`, both ack flags false, For Action, SenderReference echoed.
 */
import {
  EVENT_SYSTEM,
  EVENTS,
  HANDLING_EXTENSION_URL,
  MESSAGE_DEFINITION_BASE,
  NONE,
  ODS_ORGANIZATION_SYSTEM,
  PROFILES,
  RECIPIENT_TYPE_SYSTEM,
  RESPONSE_CODE_SYSTEM,
  RESPONSE_EVENT,
  RESPONSE_MESSAGE_DEFINITION,
  RFC4122_SYSTEM,
  UNREADABLE_ID,
} from './constants.js';
import { uuidFrom } from './ids.js';
import type { BundleFormat } from './parse.js';
import { type FhirObject, serialize } from './serialize.js';

/** How a response code is written (ITK3.md §5.1 mapping table). */
export interface ResponseCodeInfo {
  /** Display text of the code in `ITK-ResponseCodes-1`. */
  readonly display: string;
  /** `MessageHeader.response.code`. */
  readonly responseCode: 'ok' | 'fatal-error';
  /** `OperationOutcome.issue.severity`. */
  readonly severity: 'information' | 'fatal';
  /** `OperationOutcome.issue.code` (FHIR IssueType). */
  readonly issueType: string;
}

const fatal = (display: string, issueType: string): ResponseCodeInfo => ({
  display,
  responseCode: 'fatal-error',
  severity: 'fatal',
  issueType,
});
const ok = (display: string): ResponseCodeInfo => ({
  display,
  responseCode: 'ok',
  severity: 'information',
  issueType: 'informational',
});

/**
 * Every response code this module can write. Displays follow `CodeSystem-ITK-ResponseCodes-1`;
 * 20014 and 20015 are not in the published copy we have, so their text is ours. 20015 has no
 * mapping row in the spec: `too-long` is the FHIR IssueType that says what happened.
 */
export const RESPONSE_CODES: Readonly<Record<string, ResponseCodeInfo>> = {
  '10001': fatal('Handling Specification Error', 'processing'),
  '10002': fatal('Infrastructure Level Response Value - Processing Error', 'processing'),
  '10003': fatal('Business Level Response Value - Processing Error', 'processing'),
  '10004': fatal('Message Definition Value - Processing Error', 'processing'),
  '10005': fatal('Message Definition Version Value - Processing Error', 'processing'),
  '10007': fatal('Sender Reference Value - Processing Error', 'processing'),
  '10008': fatal('Handling Specification Business Rule Error', 'processing'),
  '10009': fatal('Unreadable message received', 'processing'),
  '10010': fatal('Recipient Type - Processing Error', 'processing'),
  '20001': fatal('Unrecognised Recipient Person', 'not-found'),
  '20002': fatal('Unrecognised Recipient Organisation', 'not-found'),
  '20003': fatal('Unrecognised Sender', 'not-found'),
  '20004': fatal('Non-Approved file type received as an attachment', 'security'),
  '20005': fatal('Unsupported file type received as an attachment', 'security'),
  '20006': fatal('ITK header validation failure', 'invalid'),
  '20007': fatal('Duplicate Message received', 'duplicate'),
  '20008': fatal('Duplicate Document received', 'duplicate'),
  '20009': fatal('Payload validation failure', 'invalid'),
  '20010': fatal('Unrecognised Payload Recipient Organisation', 'not-found'),
  '20011': fatal('Unrecognised Payload Recipient Person', 'not-found'),
  '20012': fatal('Unauthorised Sender', 'security'),
  '20013': ok('Success'),
  '20014': fatal('Replacement document cannot be processed', 'processing'),
  '20015': fatal('Message too large', 'too-long'),
  '30001': ok('Patient known here'),
  '30002': fatal('Patient not known here', 'not-found'),
  '30003': fatal('Patient no longer at this clinical setting', 'business-rule'),
  '30004': ok('Patient known here and recently deceased'),
};

/** Options of {@link buildResponse}. Ids and time are inputs so output is deterministic. */
export interface ResponseOptions {
  format: BundleFormat;
  /** ITK response code, e.g. `20013` or `20012` (a key of {@link RESPONSE_CODES}). */
  code: string;
  /** Original MessageHeader id; absent or not a FHIR id → `UNREADABLE-IN-ORIGINAL-MESSAGE`. */
  originalMessageId?: string;
  /** Our ODS code (response sender). */
  responderOds: string;
  /** Our MESH mailbox (`source.endpoint`); the ODS code stands in when absent. */
  responderMailbox?: string;
  /** ODS code of the original sender, when known (response receiver). */
  recipientOds?: string;
  /** Original SenderReference, echoed when it is a usable value (1–255 chars), else `None`. */
  senderReference?: string;
  /** Short detail for `OperationOutcome.diagnostics`. Never patient data; cut at 250 chars. */
  diagnostics?: string;
  /** Id of the response MessageHeader. */
  messageId: string;
  /** Id of the response Bundle. */
  bundleId: string;
  /** FHIR instant of the response. */
  timestamp: string;
}

const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;
const DIAGNOSTICS_MAX = 250;

/**
 * Build an ITK008M response message.
 *
 * @example
 * const { bytes } = buildResponse({
 *   format: 'xml', code: '20013', originalMessageId: msg.header.id, responderOds: 'A83627',
 *   responderMailbox: 'A83627OT001', recipientOds: msg.header.senderOds,
 *   senderReference: msg.header.handling.senderReference, messageId, bundleId, timestamp,
 * });
 *
 * @throws RangeError for a code not in {@link RESPONSE_CODES} (a programming error).
 */
export function buildResponse(opts: ResponseOptions): { bytes: Uint8Array; messageId: string } {
  const info = RESPONSE_CODES[opts.code];
  if (info === undefined || !Object.hasOwn(RESPONSE_CODES, opts.code)) {
    throw new RangeError('unknown ITK response code');
  }
  const identifier =
    opts.originalMessageId !== undefined && FHIR_ID.test(opts.originalMessageId)
      ? opts.originalMessageId
      : UNREADABLE_ID;
  const senderReference =
    opts.senderReference !== undefined &&
    opts.senderReference.length > 0 &&
    opts.senderReference.length <= 255 &&
    opts.senderReference.trim() === opts.senderReference
      ? opts.senderReference
      : NONE;

  const senderId = uuidFrom(`${opts.messageId}:sender`);
  const receiverId = uuidFrom(`${opts.messageId}:receiver`);
  const outcomeId = uuidFrom(`${opts.messageId}:outcome`);
  const hasReceiver = opts.recipientOds !== undefined && opts.recipientOds !== '';
  const diagnostics =
    opts.diagnostics === undefined || opts.diagnostics.trim() === ''
      ? undefined
      : opts.diagnostics.slice(0, DIAGNOSTICS_MAX);

  const header: FhirObject = {
    resourceType: 'MessageHeader',
    id: opts.messageId,
    meta: { profile: [PROFILES.messageHeader] },
    extension: [
      handlingExtension({
        busAck: false,
        infAck: false,
        recipientType: 'FA',
        messageDefinition: RESPONSE_MESSAGE_DEFINITION,
        senderReference,
        localExtension: NONE,
      }),
    ],
    event: {
      system: EVENT_SYSTEM,
      code: RESPONSE_EVENT,
      display: EVENTS[RESPONSE_EVENT]?.display ?? 'ITK Response',
    },
    receiver: hasReceiver ? { reference: `urn:uuid:${receiverId}` } : undefined,
    sender: { reference: `urn:uuid:${senderId}` },
    timestamp: opts.timestamp,
    source: { endpoint: opts.responderMailbox ?? opts.responderOds },
    response: {
      identifier,
      code: info.responseCode,
      details: { reference: `urn:uuid:${outcomeId}` },
    },
    focus: { reference: `urn:uuid:${outcomeId}` },
  };

  const outcome: FhirObject = {
    resourceType: 'OperationOutcome',
    id: outcomeId,
    meta: { profile: [PROFILES.responseOutcome] },
    issue: [
      {
        severity: info.severity,
        code: info.issueType,
        details: { coding: [{ system: RESPONSE_CODE_SYSTEM, code: opts.code, display: info.display }] },
        diagnostics,
      },
    ],
  };

  const entries: FhirObject[] = [
    { fullUrl: `urn:uuid:${opts.messageId}`, resource: header },
    { fullUrl: `urn:uuid:${senderId}`, resource: headerOrganization(senderId, opts.responderOds) },
  ];
  if (hasReceiver) {
    entries.push({
      fullUrl: `urn:uuid:${receiverId}`,
      resource: headerOrganization(receiverId, opts.recipientOds as string),
    });
  }
  entries.push({ fullUrl: `urn:uuid:${outcomeId}`, resource: outcome });

  const bundle: FhirObject = {
    resourceType: 'Bundle',
    id: opts.bundleId,
    meta: { profile: [PROFILES.messageBundle] },
    identifier: { system: RFC4122_SYSTEM, value: uuidFrom(`${opts.bundleId}:identifier`) },
    type: 'message',
    entry: entries,
  };
  return { bytes: serialize(bundle, opts.format), messageId: opts.messageId };
}

/** Values of the handling-specification extension. */
export interface HandlingValues {
  busAck: boolean;
  infAck: boolean;
  recipientType: string;
  /** MessageDefinition name (last URL segment). */
  messageDefinition: string;
  senderReference: string;
  localExtension: string;
}

/** The `Extension-ITK-MessageHandling-2` extension, keys in the order NHS samples use. */
export function handlingExtension(values: HandlingValues): FhirObject {
  return {
    url: HANDLING_EXTENSION_URL,
    extension: [
      { url: 'BusAckRequested', valueBoolean: values.busAck },
      { url: 'InfAckRequested', valueBoolean: values.infAck },
      {
        url: 'RecipientType',
        valueCoding: {
          system: RECIPIENT_TYPE_SYSTEM,
          code: values.recipientType,
          display: values.recipientType === 'FI' ? 'For Information' : 'For Action',
        },
      },
      {
        url: 'MessageDefinition',
        valueReference: { reference: `${MESSAGE_DEFINITION_BASE}${values.messageDefinition}` },
      },
      { url: 'SenderReference', valueString: values.senderReference },
      { url: 'LocalExtension', valueString: values.localExtension },
    ],
  };
}

/** A `CareConnect-ITK-Header-Organization-1`: an id and an ODS code, nothing else. */
export function headerOrganization(id: string, ods: string): FhirObject {
  return {
    resourceType: 'Organization',
    id,
    meta: { profile: [PROFILES.headerOrganization] },
    identifier: [{ system: ODS_ORGANIZATION_SYSTEM, value: ods }],
  };
}
