/**
 * ITK3 header rules (ITK3.md §2, §8) over a parsed message.
 *
 * The first broken rule throws, in a fixed order: Bundle structure (20006), then the handling
 * specification (10002/10003/10004/10007/10010 for a specific key, 10001 for the extension as a
 * whole), then the remaining MessageHeader elements (20006). Known variants seen in the wild are
 * accepted and reported as warnings. Messages and warnings are static text: they are logged and
 * audited, so they never quote message content.
 */
import { Itk3ValidationError, type RejectionCode } from '../errors.js';
import {
  EVENT_SYSTEM,
  EVENTS,
  MESSAGE_DEFINITION_BASE,
  RESPONSE_EVENT,
  RESPONSE_MESSAGE_DEFINITION,
} from './constants.js';
import type { Itk3Message } from './parse.js';

/** What references that do not resolve lead to: refusal (the default) or a warning. */
export type UnresolvedReferencePolicy = 'refuse' | 'allow';

/** Per-rule choices that change validation. */
export interface Itk3ValidationOptions {
  /**
   * `receiver` present but not resolving to an ODS-coded Organization in the Bundle, or `focus`
   * not resolving to an entry. `sender` must always resolve. @default 'refuse'
   */
  unresolvedReferences?: UnresolvedReferencePolicy;
}

/** Result of a successful validation. */
export interface Itk3Validation {
  /** Accepted deviations, e.g. an `-Instance-` MessageDefinition URL or a legacy `Priority` key. */
  warnings: string[];
}

/** FHIR `id` datatype (MessageHeader.id, response.identifier). */
const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;
/** FHIR `instant`: seconds and a zone are required. */
const FHIR_INSTANT =
  /^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|[+-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00))$/;
const EVENT_CODE = /^ITK[0-9]{3}[A-Z]$/;
const MESSAGE_DEFINITION_NAME = /^[A-Za-z0-9][A-Za-z0-9-]*-MessageDefinition-[0-9]+$/;
const RECIPIENT_TYPES = new Set(['FA', 'FI']);
const RESPONSE_CODES = new Set(['ok', 'transient-error', 'fatal-error']);
const SENDER_REFERENCE_MAX = 255;

/** Handling key → the code a problem with it maps to; anything else is 10001. */
const KEY_CODES: Readonly<Record<string, RejectionCode>> = {
  InfAckRequested: 'INF_ACK_INVALID',
  BusAckRequested: 'BUS_ACK_INVALID',
  MessageDefinition: 'MESSAGE_DEFINITION_UNSUPPORTED',
  SenderReference: 'SENDER_REFERENCE_INVALID',
  RecipientType: 'RECIPIENT_TYPE_INVALID',
};
/** Order in which handling problems are reported when several exist. */
const KEY_ORDER = [
  'handling',
  'InfAckRequested',
  'BusAckRequested',
  'MessageDefinition',
  'RecipientType',
  'SenderReference',
];

/**
 * Apply the ITK3 header rules.
 *
 * @example
 * const msg = parseBundle(bytes, 'xml');
 * const { warnings } = validateItk3(msg); // throws Itk3ValidationError on the first broken rule
 *
 * @throws Itk3ValidationError `ITK3_HEADER_INVALID` (20006), `REFERENCE_UNRESOLVED` (20006),
 *   `HANDLING_SPEC_INVALID` (10001),
 *   `INF_ACK_INVALID` (10002), `BUS_ACK_INVALID` (10003), `MESSAGE_DEFINITION_UNSUPPORTED` (10004),
 *   `SENDER_REFERENCE_INVALID` (10007), `RECIPIENT_TYPE_INVALID` (10010).
 */
export function validateItk3(msg: Itk3Message, options: Itk3ValidationOptions = {}): Itk3Validation {
  const warnings: string[] = [];
  const header = (message: string): never => {
    throw new Itk3ValidationError('ITK3_HEADER_INVALID', message);
  };
  const { header: mh } = msg;

  // Bundle structure.
  if (msg.messageHeaderCount === 0) header('bundle has no MessageHeader');
  if (!msg.firstEntryIsMessageHeader) header('first entry is not the MessageHeader');
  if (msg.messageHeaderCount > 1) header('bundle has more than one MessageHeader');
  if (msg.hasSignature) header('Bundle.signature is not allowed');
  if (msg.bundleIdentifier === undefined || msg.bundleIdentifier.trim() === '') {
    header('Bundle.identifier is missing');
  }
  if (msg.forbiddenElements.length > 0) header('bundle carries elements the ITK profiles forbid');
  if (msg.problems.length > 0) header('bundle or MessageHeader has a repeated element');
  if (msg.bundleId === '') warnings.push('Bundle.id is missing');
  if (!FHIR_ID.test(mh.id)) header('MessageHeader.id is missing or not a FHIR id');

  // Handling specification.
  checkHandling(msg, warnings);

  // Remaining MessageHeader elements.
  if (mh.event.system !== EVENT_SYSTEM) header('MessageHeader.event.system is not ITK-MessageEvent-2');
  if (!EVENT_CODE.test(mh.event.code)) header('MessageHeader.event.code is missing or malformed');
  if (mh.event.display.trim() === '') header('MessageHeader.event.display is missing');
  if (mh.hasDestination) header('MessageHeader.destination is not allowed');
  if (mh.senderRef === undefined || mh.senderRef.trim() === '') header('MessageHeader.sender is missing');
  if (mh.timestamp === undefined || !FHIR_INSTANT.test(mh.timestamp)) {
    header('MessageHeader.timestamp is missing or not an instant');
  }
  if (mh.sourceEndpoint === undefined || mh.sourceEndpoint.trim() === '') {
    header('MessageHeader.source.endpoint is missing');
  }
  if (mh.focusReference === undefined || mh.focusReference.trim() === '') {
    header('MessageHeader.focus is missing');
  }
  checkResponse(msg);
  checkReferences(msg, options.unresolvedReferences ?? 'refuse', warnings);

  // Accepted, but worth knowing.
  const expected = EVENTS[mh.event.code]?.messageDefinition;
  if (expected !== undefined && msg.messageDefinitionName !== expected) {
    warnings.push('MessageDefinition is not the one usual for this event');
  }
  return { warnings };
}

/**
 * A reference that resolves to nothing leaves the recipient to guess what it means, and a guess can
 * differ from what was checked here. The sender is the authenticated party: it must always resolve.
 */
function checkReferences(msg: Itk3Message, policy: UnresolvedReferencePolicy, warnings: string[]): void {
  const { header: mh } = msg;
  if (mh.senderOds === undefined) {
    throw new Itk3ValidationError(
      'REFERENCE_UNRESOLVED',
      'MessageHeader.sender does not resolve to an ODS-coded Organization',
    );
  }
  const unresolved: string[] = [];
  if (mh.receiverRef !== undefined && mh.receiverOds === undefined) {
    unresolved.push('MessageHeader.receiver does not resolve to an ODS-coded Organization');
  }
  if (msg.payloadType === undefined) unresolved.push('MessageHeader.focus does not resolve to an entry');
  if (unresolved.length === 0) return;
  if (policy === 'refuse') throw new Itk3ValidationError('REFERENCE_UNRESOLVED', unresolved[0] as string);
  warnings.push(...unresolved);
}

function checkHandling(msg: Itk3Message, warnings: string[]): void {
  const { handling } = msg.header;
  if (handling.problems.length > 0) {
    const keyOf = (p: string): string => p.slice(0, p.indexOf(':'));
    const rank = (p: string): number => {
      const index = KEY_ORDER.indexOf(keyOf(p));
      return index === -1 ? KEY_ORDER.length : index;
    };
    const first = [...handling.problems].sort((a, b) => rank(a) - rank(b))[0] as string;
    const code = KEY_CODES[keyOf(first)] ?? 'HANDLING_SPEC_INVALID';
    // The problem text is ours (key name + static reason), never content.
    throw new Itk3ValidationError(code, `handling specification: ${first}`);
  }
  if (handling.infAckRequested === undefined) {
    throw new Itk3ValidationError('INF_ACK_INVALID', 'InfAckRequested is missing');
  }
  if (handling.busAckRequested === undefined) {
    throw new Itk3ValidationError('BUS_ACK_INVALID', 'BusAckRequested is missing');
  }

  const url = handling.messageDefinition;
  const name = msg.messageDefinitionName;
  if (url === undefined || url.trim() !== url || name === undefined || !MESSAGE_DEFINITION_NAME.test(name)) {
    throw new Itk3ValidationError('MESSAGE_DEFINITION_UNSUPPORTED', 'MessageDefinition is unreadable');
  }
  if (!/^https?:\/\/[^/\s]+\/\S+$/.test(url)) {
    throw new Itk3ValidationError('MESSAGE_DEFINITION_UNSUPPORTED', 'MessageDefinition is not a URL');
  }
  if (!url.startsWith(MESSAGE_DEFINITION_BASE)) warnings.push('MessageDefinition is not under fhir.nhs.uk');
  if (/-MessageDefinition-Instance-[0-9]+$/.test(url)) {
    warnings.push('MessageDefinition uses the -Instance- URL variant');
  }

  if (handling.recipientType === undefined || !RECIPIENT_TYPES.has(handling.recipientType)) {
    throw new Itk3ValidationError('RECIPIENT_TYPE_INVALID', 'RecipientType is not FA or FI');
  }

  const senderReference = handling.senderReference;
  if (senderReference === undefined) {
    warnings.push('SenderReference is missing (pre-2.5.0 sender)');
  } else if (
    senderReference.length === 0 ||
    senderReference.length > SENDER_REFERENCE_MAX ||
    senderReference.trim() !== senderReference
  ) {
    throw new Itk3ValidationError('SENDER_REFERENCE_INVALID', 'SenderReference is empty or too long');
  }
  if (handling.localExtension === undefined) warnings.push('LocalExtension is missing (pre-2.5.0 sender)');
  if (handling.priority !== undefined) warnings.push('legacy Priority key present');
}

function checkResponse(msg: Itk3Message): void {
  const { header: mh } = msg;
  const isResponse = mh.event.code === RESPONSE_EVENT;
  if (!isResponse) {
    if (mh.response !== undefined) {
      throw new Itk3ValidationError('ITK3_HEADER_INVALID', 'MessageHeader.response outside a response');
    }
    return;
  }
  const response = mh.response;
  if (response === undefined) {
    throw new Itk3ValidationError('ITK3_HEADER_INVALID', 'response message has no MessageHeader.response');
  }
  if (response.identifier === undefined || !FHIR_ID.test(response.identifier)) {
    throw new Itk3ValidationError('ITK3_HEADER_INVALID', 'response.identifier is missing or not a FHIR id');
  }
  if (response.code === undefined || !RESPONSE_CODES.has(response.code)) {
    throw new Itk3ValidationError('ITK3_HEADER_INVALID', 'response.code is not a response code');
  }
  if (response.issueCount !== 1 || response.itkCode === undefined) {
    throw new Itk3ValidationError(
      'ITK3_HEADER_INVALID',
      'response.details is not an OperationOutcome with one ITK response code',
    );
  }
  if (msg.messageDefinitionName !== RESPONSE_MESSAGE_DEFINITION) {
    throw new Itk3ValidationError('MESSAGE_DEFINITION_UNSUPPORTED', 'response MessageDefinition is wrong');
  }
  // A response never asks for a response: that would let two gateways ack each other forever.
  if (mh.handling.infAckRequested !== false) {
    throw new Itk3ValidationError('INF_ACK_INVALID', 'a response must not request an acknowledgement');
  }
  if (mh.handling.busAckRequested !== false) {
    throw new Itk3ValidationError('BUS_ACK_INVALID', 'a response must not request an acknowledgement');
  }
}
