/**
 * Sample ITK3 messages for tests, demos and the CLI: the real public fixtures when the shared
 * fixture folder exists (bytes exactly as on disk), otherwise built equivalents with the same
 * ids, parties, events and mailboxes (patient data fictitious).
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { type BuildOptions, buildItk3Message } from './builder.js';

/** One sample message. */
export interface Sample {
  /** Fixture file name (built samples reuse the name of the fixture they stand in for). */
  name: string;
  bytes: Uint8Array;
  format: 'xml' | 'json';
  source: 'fixture' | 'built';
  /** `legacy-itk2`: ITK 2.x SOAP, which must be refused with 10009. */
  kind: 'itk3' | 'legacy-itk2';
}

/** Facts of an ITK3 sample, the same whether it comes from a fixture or is built. */
export interface SampleFacts {
  readonly name: string;
  readonly messageId: string;
  readonly bundleId: string;
  readonly documentId: string;
  readonly event: string;
  readonly senderOds: string;
  readonly receiverOds?: string;
  readonly meshMailbox: string;
  readonly messageDefinition: string;
  readonly senderReference: string;
  readonly localExtension: string;
  readonly timestamp: string;
  /**
   * Defects of the real fixture that built equivalents do not have. `engage_jack_smith_mirc.xml`
   * references a receiver and a focus whose `fullUrl`s are not in the Bundle, so its parsed
   * `receiverOds` and `documentId` are undefined: refused (20006 `REFERENCE_UNRESOLVED`) under the
   * default rule setting, accepted with warnings under `unresolvedReferences: 'allow'`.
   */
  readonly fixtureQuirks?: readonly ('receiver-unresolved' | 'focus-unresolved')[];
}

/** The four ITK3 fixtures, as read from their headers. */
export const ITK3_SAMPLE_FACTS: readonly SampleFacts[] = [
  {
    name: 'consultation_report.xml',
    messageId: 'ea7221b8-3cc0-4b11-bc95-585b056b5428',
    bundleId: 'd12dc439-ca5c-4177-bb70-4fece88edab0',
    documentId: '70c35c4a-65f4-4a03-bcf7-d1041ab999fd',
    event: 'ITK007C',
    senderOds: 'GP0001',
    meshMailbox: 'MESHGP0001',
    messageDefinition: 'ITK-GPConnectSendDocument-MessageDefinition-1',
    senderReference: '846ebe66-5ff8-4499-bc57-a112d3d0daa3',
    localExtension: 'SendDocument-ConsultationSummary',
    timestamp: '2018-07-12T10:30:16+00:00',
  },
  {
    // Same Bundle.id, MessageHeader.id and document id as consultation_report.xml, other content.
    name: 'oc_consultation_report.xml',
    messageId: 'ea7221b8-3cc0-4b11-bc95-585b056b5428',
    bundleId: 'd12dc439-ca5c-4177-bb70-4fece88edab0',
    documentId: '70c35c4a-65f4-4a03-bcf7-d1041ab999fd',
    event: 'ITK007C',
    senderOds: 'GP0001',
    meshMailbox: 'MESHGP0001',
    messageDefinition: 'ITK-GPConnectSendDocument-MessageDefinition-1',
    senderReference: '846ebe66-5ff8-4499-bc57-a112d3d0daa3',
    localExtension: 'SendDocument-ConsultationSummary',
    timestamp: '2021-04-29T10:35:00+00:00',
  },
  {
    name: 'engage_hettie_winters_imms.xml',
    messageId: 'cd836dc4-2e34-11eb-adc1-0242ac120002',
    bundleId: 'cd836a72-2e34-11eb-adc1-0242ac120002',
    documentId: 'cd8371de-2e34-11eb-adc1-0242ac120002',
    event: 'ITK009D',
    senderOds: 'X26',
    receiverOds: 'A83627',
    meshMailbox: 'NOROT003',
    messageDefinition: 'ITK-DM-Immunization-MessageDefinition-1',
    senderReference: 'None',
    localExtension: 'None',
    timestamp: '2020-12-01T20:00:00+00:00',
  },
  {
    name: 'engage_jack_smith_mirc.xml',
    messageId: 'c8ecc1ed-ed39-457e-9571-cd9911d26f84',
    bundleId: '716f0081-2794-4662-af76-506a9f9f6914',
    documentId: '2fe7a417-20f8-4b47-a869-6a3dc72c9ff4',
    event: 'ITK013D',
    senderOds: 'FQ123',
    receiverOds: 'A8797979',
    meshMailbox: 'NOROT003',
    messageDefinition: 'ITK-DM-MIRC-MessageDefinition-1',
    senderReference: 'None',
    localExtension: 'None',
    timestamp: '2020-12-10T10:10:16+00:00',
    fixtureQuirks: ['receiver-unresolved', 'focus-unresolved'],
  },
];

/** The legacy ITK 2.x fixture files (wrong protocol: 10009). */
export const LEGACY_FIXTURE_NAMES: readonly string[] = [
  'cleric-itk-ooh-referral-dx09-itk-request.xml',
  'SoapItkOkResponseTemplate.xml',
  'SoapItkErrorResponseTemplate.xml',
];

/**
 * The project root: the nearest folder above this module holding a `package.json`
 * (the working directory when none is found, e.g. inside a bundle).
 */
export function projectRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(path.join(dir, 'package.json'))) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) return process.cwd();
    dir = parent;
  }
}

/**
 * The shared fixture folder: `$ITK3_FIXTURES_DIR`, else `../shared/fixtures/itk3` from the
 * project root. Undefined when it does not exist.
 */
export function fixturesDir(): string | undefined {
  const fromEnv = process.env.ITK3_FIXTURES_DIR;
  const dir =
    fromEnv !== undefined && fromEnv !== ''
      ? path.resolve(fromEnv)
      : path.resolve(projectRoot(), '../shared/fixtures/itk3');
  try {
    return statSync(dir).isDirectory() ? dir : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The sample set: 4 ITK3 + 3 legacy fixtures when the folder exists, else 4 built ITK3
 * equivalents + 1 built legacy SOAP message.
 *
 * @example
 * for (const s of loadSamples()) if (s.kind === 'itk3') parseBundle(s.bytes, s.format);
 */
export function loadSamples(opts: { fixturesDir?: string } = {}): Sample[] {
  const dir = opts.fixturesDir ?? fixturesDir();
  if (dir !== undefined && existsSync(dir)) {
    const read = (name: string, kind: Sample['kind']): Sample => ({
      name,
      bytes: new Uint8Array(readFileSync(path.join(dir, name))),
      format: 'xml',
      source: 'fixture',
      kind,
    });
    return [
      ...ITK3_SAMPLE_FACTS.map((f) => read(f.name, 'itk3')),
      ...LEGACY_FIXTURE_NAMES.map((name) => read(name, 'legacy-itk2')),
    ];
  }
  return [
    ...ITK3_SAMPLE_FACTS.map(
      (facts): Sample => ({
        name: facts.name,
        bytes: buildItk3Message(builtOptions(facts)),
        format: 'xml',
        source: 'built',
        kind: 'itk3',
      }),
    ),
    {
      name: 'legacy-itk2-soap.xml',
      bytes: new TextEncoder().encode(LEGACY_SOAP),
      format: 'xml',
      source: 'built',
      kind: 'legacy-itk2',
    },
  ];
}

function builtOptions(facts: SampleFacts): BuildOptions {
  const isOnlineConsultation = facts.name.startsWith('oc_');
  return {
    format: 'xml',
    event: facts.event,
    senderOds: facts.senderOds,
    ...(facts.receiverOds === undefined ? {} : { receiverOds: facts.receiverOds }),
    meshMailbox: facts.meshMailbox,
    messageId: facts.messageId,
    bundleId: facts.bundleId,
    documentId: facts.documentId,
    acks: { inf: true, bus: true },
    recipientType: 'FA',
    messageDefinition: facts.messageDefinition,
    senderReference: facts.senderReference,
    localExtension: facts.localExtension,
    timestamp: facts.timestamp,
    // The online-consultation variant carries more content under the same ids, like the fixture.
    attachmentBytes: isOnlineConsultation ? 64 * 1024 : facts.event === 'ITK007C' ? 32 * 1024 : 0,
    ...(isOnlineConsultation ? { variant: 'online consultation' } : {}),
  };
}

/** A small ITK 2.x style SOAP + DistributionEnvelope message (fictitious), for the 10009 path. */
const LEGACY_SOAP = `<?xml version="1.0" encoding="UTF-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:wsa="http://www.w3.org/2005/08/addressing">
  <soap:Header>
    <wsa:MessageID>5F1C3D2E-0000-4000-8000-000000000001</wsa:MessageID>
    <wsa:Action>urn:nhs-itk:services:201005:SendNHS111Report-v2-0</wsa:Action>
    <wsa:To>https://receiver.example.invalid/itk</wsa:To>
  </soap:Header>
  <soap:Body>
    <itk:DistributionEnvelope xmlns:itk="urn:nhs-itk:ns:201005">
      <itk:header service="urn:nhs-itk:services:201005:SendNHS111Report-v2-0" trackingid="5F1C3D2E-0000-4000-8000-000000000002">
        <itk:addresslist>
          <itk:address uri="urn:nhs-uk:addressing:ods:X99999"/>
        </itk:addresslist>
        <itk:auditIdentity>
          <itk:id uri="urn:nhs-uk:identity:ods:X88888"/>
        </itk:auditIdentity>
        <itk:manifest count="1">
          <itk:manifestitem id="uuid_5F1C3D2E-0000-4000-8000-000000000003" mimetype="text/xml"/>
        </itk:manifest>
      </itk:header>
      <itk:payloads count="1">
        <itk:payload id="uuid_5F1C3D2E-0000-4000-8000-000000000003">FICTITIOUS TEST PAYLOAD</itk:payload>
      </itk:payloads>
    </itk:DistributionEnvelope>
  </soap:Body>
</soap:Envelope>
`;
