/**
 * Build realistic ITK3 message Bundles for tests and demos: header, header Organizations and a
 * document Bundle payload (Composition first, Patient, author Organization, optional PDF-like
 * Binary) shaped like the NHS samples. All patient data is FICTITIOUS (NHS test number range
 * 999 999 xxxx); ids and time are inputs, so the same options give the same bytes.
 */
import {
  EVENT_SYSTEM,
  EVENTS,
  NHS_NUMBER_SYSTEM,
  NONE,
  ODS_ORGANIZATION_SYSTEM,
  PROFILES,
  RFC4122_SYSTEM,
} from './constants.js';
import { uuidFrom } from './ids.js';
import type { BundleFormat } from './parse.js';
import { handlingExtension, headerOrganization } from './response.js';
import { escapeXmlText, type FhirObject, serialize } from './serialize.js';

/** Options of {@link buildItk3Message}. */
export interface BuildOptions {
  format: BundleFormat;
  /** Event code, e.g. `ITK007C`, `ITK009D`, `ITK013D`. */
  event: string;
  senderOds: string;
  /** Receiver ODS; omit for GP look-up routed use cases (no `receiver`). */
  receiverOds?: string;
  /** Sender's MESH mailbox (`source.endpoint`). */
  meshMailbox: string;
  /** MessageHeader id. */
  messageId: string;
  /** Outer Bundle id. */
  bundleId: string;
  /** Payload document Bundle id. */
  documentId: string;
  acks: { inf: boolean; bus: boolean };
  /** `FA` or `FI`. */
  recipientType: string;
  /** MessageDefinition name, e.g. `ITK-GPConnectSendDocument-MessageDefinition-1`. */
  messageDefinition: string;
  /** Omitted → `None`. */
  senderReference?: string;
  /** Omitted → `None`. */
  localExtension?: string;
  /** FHIR instant. */
  timestamp: string;
  /** Decoded size of a PDF-like Binary attachment; none when omitted or 0. */
  attachmentBytes?: number;
  /**
   * Total message size to aim for: the attachment is sized so the output is at most this many
   * bytes and within 4 of it (overrides `attachmentBytes`). Must exceed the size without one.
   */
  targetBytes?: number;
  /** Varies the document content (title, narrative) so two messages can share ids yet differ. */
  variant?: string;
}

/**
 * Build an ITK3 message Bundle.
 *
 * @example
 * const bytes = buildItk3Message({
 *   format: 'xml', event: 'ITK009D', senderOds: 'X26', receiverOds: 'A83627',
 *   meshMailbox: 'NOROT003', messageId, bundleId, documentId, acks: { inf: true, bus: true },
 *   recipientType: 'FA', messageDefinition: 'ITK-DM-Immunization-MessageDefinition-1',
 *   timestamp: '2020-12-01T20:00:00+00:00', targetBytes: 1024 * 1024,
 * });
 */
export function buildItk3Message(opts: BuildOptions): Uint8Array {
  return serialize(buildItk3Object(opts), opts.format);
}

/**
 * The message as a FHIR JSON object (before serialisation), for tests that mutate a valid
 * message and write it in either format with `serialize`.
 */
export function buildItk3Object(opts: BuildOptions): FhirObject {
  if (opts.targetBytes === undefined) return assemble(opts, attachmentOf(opts.attachmentBytes ?? 0));
  // Measure the message with an empty attachment, then fill the gap with base64 (4 chars per 3 bytes).
  const bare = serialize(assemble(opts, ''), opts.format).byteLength;
  const room = opts.targetBytes - bare;
  if (room < 4) throw new RangeError('targetBytes is smaller than the message without attachment');
  return assemble(opts, attachmentOf(Math.floor(room / 4) * 3));
}

/** Deterministic PDF-like bytes: a PDF header, filler, an EOF marker; base64-encoded. */
function attachmentOf(size: number): string | undefined {
  if (size <= 0) return undefined;
  const head = Buffer.from('%PDF-1.4\n% fictitious test attachment, not a real document\n');
  const tail = Buffer.from('\n%%EOF\n');
  const bytes = Buffer.alloc(size, 0x20);
  const filler = Buffer.from('0 0 0 rg BT /F1 12 Tf (FICTITIOUS TEST DATA) Tj ET\n');
  for (let i = 0; i < size; i += filler.length) filler.copy(bytes, i, 0, Math.min(filler.length, size - i));
  head.copy(bytes, 0, 0, Math.min(head.length, size));
  if (size > head.length + tail.length) tail.copy(bytes, size - tail.length);
  return bytes.toString('base64');
}

function assemble(opts: BuildOptions, attachment: string | undefined): FhirObject {
  const id = (role: string): string => uuidFrom(`${opts.messageId}:${opts.documentId}:${role}`);
  const senderOrgId = id('sender');
  const receiverOrgId = id('receiver');
  const hasReceiver = opts.receiverOds !== undefined && opts.receiverOds !== '';
  const event = EVENTS[opts.event];

  const header: FhirObject = {
    resourceType: 'MessageHeader',
    id: opts.messageId,
    meta: { profile: [PROFILES.messageHeader] },
    extension: [
      handlingExtension({
        busAck: opts.acks.bus,
        infAck: opts.acks.inf,
        recipientType: opts.recipientType,
        messageDefinition: opts.messageDefinition,
        senderReference: opts.senderReference ?? NONE,
        localExtension: opts.localExtension ?? NONE,
      }),
    ],
    event: { system: EVENT_SYSTEM, code: opts.event, display: event?.display ?? `ITK ${opts.event}` },
    receiver: hasReceiver ? { reference: `urn:uuid:${receiverOrgId}` } : undefined,
    sender: { reference: `urn:uuid:${senderOrgId}` },
    timestamp: opts.timestamp,
    source: { endpoint: opts.meshMailbox },
    focus: { reference: `urn:uuid:${opts.documentId}` },
  };

  const entries: FhirObject[] = [
    { fullUrl: `urn:uuid:${opts.messageId}`, resource: header },
    { fullUrl: `urn:uuid:${senderOrgId}`, resource: headerOrganization(senderOrgId, opts.senderOds) },
  ];
  if (hasReceiver) {
    entries.push({
      fullUrl: `urn:uuid:${receiverOrgId}`,
      resource: headerOrganization(receiverOrgId, opts.receiverOds as string),
    });
  }
  entries.push({ fullUrl: `urn:uuid:${opts.documentId}`, resource: documentBundle(opts, attachment) });

  return {
    resourceType: 'Bundle',
    id: opts.bundleId,
    meta: { profile: [PROFILES.messageBundle] },
    identifier: { system: RFC4122_SYSTEM, value: uuidFrom(`${opts.bundleId}:identifier`) },
    type: 'message',
    entry: entries,
  };
}

function documentBundle(opts: BuildOptions, attachment: string | undefined): FhirObject {
  const id = (role: string): string => uuidFrom(`${opts.documentId}:${role}`);
  const compositionId = id('composition');
  const patientId = id('patient');
  const authorId = id('author');
  const binaryId = id('binary');
  const title = opts.variant === undefined ? 'Consultation report' : `Consultation report (${opts.variant})`;

  const composition: FhirObject = {
    resourceType: 'Composition',
    id: compositionId,
    meta: { profile: [PROFILES.composition] },
    identifier: { system: RFC4122_SYSTEM, value: compositionId },
    status: 'final',
    type: {
      coding: [
        { system: 'http://snomed.info/sct', code: '371531000', display: 'Report of clinical encounter' },
      ],
    },
    subject: { reference: `urn:uuid:${patientId}` },
    date: opts.timestamp,
    author: [{ reference: `urn:uuid:${authorId}` }],
    title,
    section: [
      {
        title: 'Consultation',
        text: {
          status: 'generated',
          div: `<div xmlns="http://www.w3.org/1999/xhtml"><p>${escapeXmlText(title)}: fictitious test data, not a real patient.</p></div>`,
        },
        entry: attachment === undefined ? undefined : [{ reference: `urn:uuid:${binaryId}` }],
      },
    ],
  };

  const patient: FhirObject = {
    resourceType: 'Patient',
    id: patientId,
    meta: { profile: [PROFILES.patient] },
    identifier: [{ system: NHS_NUMBER_SYSTEM, value: '9999999468' }],
    name: [{ use: 'official', family: 'FICTITIOUS', given: ['Test'] }],
    gender: 'unknown',
    birthDate: '1970-01-01',
  };

  const author: FhirObject = {
    resourceType: 'Organization',
    id: authorId,
    meta: { profile: [PROFILES.organization] },
    identifier: [{ system: ODS_ORGANIZATION_SYSTEM, value: opts.senderOds }],
    name: 'FICTITIOUS TEST ORGANISATION',
  };

  const entries: FhirObject[] = [
    { fullUrl: `urn:uuid:${compositionId}`, resource: composition },
    { fullUrl: `urn:uuid:${patientId}`, resource: patient },
    { fullUrl: `urn:uuid:${authorId}`, resource: author },
  ];
  if (attachment !== undefined) {
    entries.push({
      fullUrl: `urn:uuid:${binaryId}`,
      resource: {
        resourceType: 'Binary',
        id: binaryId,
        meta: { profile: [PROFILES.binary] },
        contentType: 'application/pdf',
        content: attachment,
      },
    });
  }

  return {
    resourceType: 'Bundle',
    id: opts.documentId,
    meta: { lastUpdated: opts.timestamp, profile: [PROFILES.documentBundle] },
    identifier: { system: RFC4122_SYSTEM, value: id('identifier') },
    type: 'document',
    entry: entries,
  };
}
