/**
 * Fixed URLs, systems and tables of ITK3 (ITK3.md §2–§5). One place, so the parser, the validator
 * and the builders cannot drift apart.
 */

/** FHIR XML namespace; every FHIR element must be in it. */
export const FHIR_NS = 'http://hl7.org/fhir';

/** URL of the ITK3 handling-specification extension on MessageHeader. */
export const HANDLING_EXTENSION_URL =
  'https://fhir.nhs.uk/STU3/StructureDefinition/Extension-ITK-MessageHandling-2';

/** The one allowed `MessageHeader.event.system`. */
export const EVENT_SYSTEM = 'https://fhir.nhs.uk/STU3/CodeSystem/ITK-MessageEvent-2';

/** The one allowed `RecipientType.valueCoding.system`. */
export const RECIPIENT_TYPE_SYSTEM = 'https://fhir.nhs.uk/STU3/CodeSystem/ITK-RecipientType-1';

/** System of `OperationOutcome.issue.details.coding` in a response. */
export const RESPONSE_CODE_SYSTEM = 'https://fhir.nhs.uk/STU3/CodeSystem/ITK-ResponseCodes-1';

/** Where NHS MessageDefinitions live. */
export const MESSAGE_DEFINITION_BASE = 'https://fhir.nhs.uk/STU3/MessageDefinition/';

/** ODS organisation code identifier system (preferred). */
export const ODS_ORGANIZATION_SYSTEM = 'https://fhir.nhs.uk/Id/ods-organization-code';
/** ODS site code identifier system (accepted when no organisation code is given). */
export const ODS_SITE_SYSTEM = 'https://fhir.nhs.uk/Id/ods-site-code';

/** Identifier system for UUID identifiers. */
export const RFC4122_SYSTEM = 'https://tools.ietf.org/html/rfc4122';

/** NHS number identifier system. */
export const NHS_NUMBER_SYSTEM = 'https://fhir.nhs.uk/Id/nhs-number';

/** Literal for an original message id that could not be read (ITK3.md §5.2). */
export const UNREADABLE_ID = 'UNREADABLE-IN-ORIGINAL-MESSAGE';

/** Literal for an unused `SenderReference` / `LocalExtension` (since 2.5.0-beta). */
export const NONE = 'None';

/** The response event and its MessageDefinition. */
export const RESPONSE_EVENT = 'ITK008M';
export const RESPONSE_MESSAGE_DEFINITION = 'ITK-Response-MessageDefinition-1';

/** Profiles the builders stamp on what they produce. */
export const PROFILES = {
  messageBundle: 'https://fhir.nhs.uk/STU3/StructureDefinition/ITK-Message-Bundle-1',
  messageHeader: 'https://fhir.nhs.uk/STU3/StructureDefinition/ITK-MessageHeader-2',
  headerOrganization: 'https://fhir.nhs.uk/STU3/StructureDefinition/CareConnect-ITK-Header-Organization-1',
  documentBundle: 'https://fhir.nhs.uk/STU3/StructureDefinition/ITK-Document-Bundle-1',
  responseOutcome: 'https://fhir.nhs.uk/STU3/StructureDefinition/ITK-Response-OperationOutcome-1',
  composition: 'https://fhir.hl7.org.uk/STU3/StructureDefinition/CareConnect-Composition-1',
  patient: 'https://fhir.hl7.org.uk/STU3/StructureDefinition/CareConnect-ITK-Patient-1',
  organization: 'https://fhir.hl7.org.uk/STU3/StructureDefinition/CareConnect-Organization-1',
  binary: 'https://fhir.nhs.uk/STU3/StructureDefinition/ITK-Attachment-Binary-1',
} as const;

/** An ITK3 event: display text and the MessageDefinition it travels with (ITK3.md §3). */
export interface EventInfo {
  readonly display: string;
  readonly messageDefinition?: string;
}

/**
 * Known event codes. Displays of ITK007C/ITK009D/ITK013D are those the public samples carry;
 * the others follow CodeSystem `ITK-MessageEvent-2`.
 */
export const EVENTS: Readonly<Record<string, EventInfo>> = {
  ITK003D: { display: 'ITK eDischarge', messageDefinition: 'ITK-eDischarge-MessageDefinition-4' },
  ITK004D: {
    display: 'ITK Mental Health eDischarge',
    messageDefinition: 'ITK-MH-eDischarge-MessageDefinition-4',
  },
  ITK005D: {
    display: 'ITK Emergency Care eDischarge',
    messageDefinition: 'ITK-EC-eDischarge-MessageDefinition-4',
  },
  ITK006D: { display: 'ITK Outpatient Letter', messageDefinition: 'ITK-OPL-MessageDefinition-4' },
  ITK007C: {
    display: 'ITK GP Connect Send Document',
    messageDefinition: 'ITK-GPConnectSendDocument-MessageDefinition-1',
  },
  ITK008M: { display: 'ITK Response', messageDefinition: RESPONSE_MESSAGE_DEFINITION },
  ITK009D: {
    display: 'ITK Digital Medicine Immunization Document',
    messageDefinition: 'ITK-DM-Immunization-MessageDefinition-1',
  },
  ITK010D: {
    display: 'ITK Digital Medicine Emergency Supply Document',
    messageDefinition: 'ITK-DM-EmergencySupply-MessageDefinition-1',
  },
  ITK011M: { display: 'ITK Events Management Service', messageDefinition: 'ITK-EMS-MessageDefinition-1' },
  ITK012M: { display: 'ITK National Pathology' },
  ITK013D: {
    display: 'ITK Digital Medicine Minor Illness Referral Consultation Document',
    messageDefinition: 'ITK-DM-MIRC-MessageDefinition-1',
  },
  ITK014M: { display: 'ITK GP Connect Update Record' },
};
