/** ITK008M responses: structure per ITK3.md §5, round trip through our own parser and validator. */
import { describe, expect, it } from 'vitest';
import { ERROR_CATALOGUE } from '../../../lib/errors.js';
import { UNREADABLE_ID } from '../../../lib/itk3/constants.js';
import { parseBundle } from '../../../lib/itk3/parse.js';
import { buildResponse, RESPONSE_CODES, type ResponseOptions } from '../../../lib/itk3/response.js';
import { validateItk3 } from '../../../lib/itk3/validate.js';
import { FORMATS, text } from './helpers.js';

const options = (overrides: Partial<ResponseOptions> = {}): ResponseOptions => ({
  format: 'xml',
  code: '20013',
  originalMessageId: 'cd836dc4-2e34-11eb-adc1-0242ac120002',
  responderOds: 'A83627',
  responderMailbox: 'A83627OT01',
  recipientOds: 'X26',
  senderReference: 'c3b1f0de-5a61-4b7e-9f2e-6d8c7b9a0e04',
  messageId: '9e0d7c6b-5a49-4382-b716-f5e4d3c2b105',
  bundleId: '1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c06',
  timestamp: '2024-03-01T09:31:00+00:00',
  ...overrides,
});

/** [code, response.code, severity, issue.code] per ITK3.md §5.1 */
const MAPPING: [string, string, string, string][] = [
  ['20013', 'ok', 'information', 'informational'],
  ['20012', 'fatal-error', 'fatal', 'security'],
  ['10009', 'fatal-error', 'fatal', 'processing'],
  ['10002', 'fatal-error', 'fatal', 'processing'],
  ['20006', 'fatal-error', 'fatal', 'invalid'],
  ['20007', 'fatal-error', 'fatal', 'duplicate'],
  ['20008', 'fatal-error', 'fatal', 'duplicate'],
  ['20002', 'fatal-error', 'fatal', 'not-found'],
  ['20015', 'fatal-error', 'fatal', 'too-long'],
];

describe('buildResponse', () => {
  describe.each(FORMATS)('%s', (format) => {
    it.each(MAPPING)('code %s round-trips as %s / %s / %s', (code, responseCode, severity, issueType) => {
      const { bytes, messageId } = buildResponse(options({ format, code }));
      const msg = parseBundle(bytes, format);

      expect(validateItk3(msg)).toEqual({ warnings: [] });
      expect(messageId).toBe('9e0d7c6b-5a49-4382-b716-f5e4d3c2b105');
      expect(msg.header.id).toBe(messageId);
      expect(msg.bundleId).toBe('1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c06');
      expect(msg.header.event).toEqual({
        system: 'https://fhir.nhs.uk/STU3/CodeSystem/ITK-MessageEvent-2',
        code: 'ITK008M',
        display: 'ITK Response',
      });
      expect(msg.messageDefinitionName).toBe('ITK-Response-MessageDefinition-1');
      expect(msg.header.handling).toEqual({
        busAckRequested: false,
        infAckRequested: false,
        recipientType: 'FA',
        messageDefinition: 'https://fhir.nhs.uk/STU3/MessageDefinition/ITK-Response-MessageDefinition-1',
        senderReference: 'c3b1f0de-5a61-4b7e-9f2e-6d8c7b9a0e04',
        localExtension: 'None',
        problems: [],
      });
      expect(msg.header.response).toEqual({
        identifier: 'cd836dc4-2e34-11eb-adc1-0242ac120002',
        code: responseCode,
        itkCode: code,
        severity,
        issueType,
        issueCount: 1,
      });
      expect(msg.header.senderOds).toBe('A83627');
      expect(msg.header.receiverOds).toBe('X26');
      expect(msg.header.sourceEndpoint).toBe('A83627OT01');
      expect(msg.payloadType).toBe('OperationOutcome');
      expect(msg.documentId).toBeUndefined();
    });

    it('answers an unreadable original with UNREADABLE-IN-ORIGINAL-MESSAGE, no receiver, SenderReference None', () => {
      const { bytes } = buildResponse(
        options({
          format,
          code: '10009',
          originalMessageId: undefined,
          recipientOds: undefined,
          senderReference: undefined,
        }),
      );
      const msg = parseBundle(bytes, format);

      expect(validateItk3(msg).warnings).toEqual([]);
      expect(msg.header.response?.identifier).toBe(UNREADABLE_ID);
      expect(msg.header.receiverRef).toBeUndefined();
      expect(msg.header.handling.senderReference).toBe('None');
    });

    it('never echoes an original id or SenderReference that would make the response invalid', () => {
      const { bytes } = buildResponse(
        options({
          format,
          code: '20006',
          originalMessageId: 'not a <valid> id',
          senderReference: 'x'.repeat(256),
        }),
      );
      const msg = parseBundle(bytes, format);

      expect(validateItk3(msg).warnings).toEqual([]);
      expect(msg.header.response?.identifier).toBe(UNREADABLE_ID);
      expect(msg.header.handling.senderReference).toBe('None');
    });

    it('escapes diagnostics and SenderReference, replaces what the format cannot carry, cuts at 250', () => {
      const tricky = `a<b>&c"d'e\tf\ng\u0001h ]]> </diagnostics>`;
      const { bytes } = buildResponse(
        options({ format, code: '20009', diagnostics: tricky, senderReference: '<&>"ref' }),
      );
      const msg = parseBundle(bytes, format);

      expect(validateItk3(msg).warnings).toEqual([]);
      expect(msg.header.handling.senderReference).toBe('<&>"ref');
      const expected = format === 'xml' ? tricky.replace('\u0001', '\uFFFD') : tricky;
      expect(msg.header.response?.diagnostics).toBe(expected);

      const long = buildResponse(options({ format, code: '20009', diagnostics: 'd'.repeat(1000) }));
      expect(parseBundle(long.bytes, format).header.response?.diagnostics).toHaveLength(250);
    });

    it('is deterministic: the same options give the same bytes', () => {
      expect(text(buildResponse(options({ format })).bytes)).toBe(
        text(buildResponse(options({ format })).bytes),
      );
    });

    it('falls back to the ODS code as source.endpoint when no mailbox is given', () => {
      const msg = parseBundle(buildResponse(options({ format, responderMailbox: undefined })).bytes, format);
      expect(msg.header.sourceEndpoint).toBe('A83627');
      expect(() => validateItk3(msg)).not.toThrow();
    });
  });

  it('has a display and a mapping for every code in the error catalogue, and for 20013', () => {
    const codes = new Set<string>([...Object.values(ERROR_CATALOGUE), '20013']);
    for (const code of codes) {
      expect(RESPONSE_CODES[code]?.display, code).toMatch(/\S/);
      expect(() => buildResponse(options({ code }))).not.toThrow();
    }
  });

  it('refuses a code it does not know', () => {
    expect(() => buildResponse(options({ code: '99999' }))).toThrow(RangeError);
    expect(() => buildResponse(options({ code: 'toString' }))).toThrow(RangeError);
  });

  it('writes the code, display and system into OperationOutcome.issue.details.coding', () => {
    const json = JSON.parse(text(buildResponse(options({ format: 'json', code: '20012' })).bytes)) as {
      entry: { resource: { resourceType: string; issue?: { details: { coding: unknown[] } }[] } }[];
    };
    const outcome = json.entry.find((e) => e.resource.resourceType === 'OperationOutcome');

    expect(outcome?.resource.issue).toHaveLength(1);
    expect(outcome?.resource.issue?.[0]?.details.coding).toEqual([
      {
        system: 'https://fhir.nhs.uk/STU3/CodeSystem/ITK-ResponseCodes-1',
        code: '20012',
        display: 'Unauthorised Sender',
      },
    ]);
  });
});
