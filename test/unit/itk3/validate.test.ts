/** Header rules (ITK3.md §2, §8): each violation of a valid built message maps to its code. */
import { describe, expect, it } from 'vitest';
import { ERROR_CATALOGUE, type RejectionCode } from '../../../lib/errors.js';
import { validateItk3 } from '../../../lib/itk3/validate.js';
import {
  arr,
  expectCode,
  FORMATS,
  handlingOf,
  headerOf,
  type Mutable,
  messageObject,
  obj,
  parseObject,
} from './helpers.js';

const handlingKey = (message: Mutable, key: string): Mutable => {
  const found = handlingOf(message).find((e) => e.url === key);
  if (found === undefined) throw new Error(`no ${key}`);
  return found;
};
const removeHandlingKey = (message: Mutable, key: string): void => {
  const list = handlingOf(message);
  list.splice(
    list.findIndex((e) => e.url === key),
    1,
  );
};

/** [what, mutation, expected code] */
const VIOLATIONS: [string, (m: Mutable) => void, RejectionCode][] = [
  [
    'first entry is not the MessageHeader',
    (m) => {
      const entries = arr(m, 'entry');
      entries.push(entries.shift() as Mutable);
    },
    'ITK3_HEADER_INVALID',
  ],
  ['no MessageHeader at all', (m) => void arr(m, 'entry').shift(), 'ITK3_HEADER_INVALID'],
  [
    'two MessageHeaders',
    (m) => {
      const entries = arr(m, 'entry');
      const copy = structuredClone(entries[0] as Mutable);
      copy.fullUrl = 'urn:uuid:5d0a3f6e-8b1c-4e2d-9f3a-7c6b5a4d3e21';
      entries.push(copy);
    },
    'ITK3_HEADER_INVALID',
  ],
  [
    'Bundle.signature present',
    (m) => {
      m.signature = { type: [] };
    },
    'ITK3_HEADER_INVALID',
  ],
  ['Bundle.identifier missing', (m) => void delete m.identifier, 'ITK3_HEADER_INVALID'],
  [
    'Bundle.total present',
    (m) => {
      m.total = 4;
    },
    'ITK3_HEADER_INVALID',
  ],
  [
    'entry.request present',
    (m) => {
      (arr(m, 'entry')[1] as Mutable).request = { method: 'POST', url: 'Organization' };
    },
    'ITK3_HEADER_INVALID',
  ],
  ['MessageHeader.id missing', (m) => void delete headerOf(m).id, 'ITK3_HEADER_INVALID'],
  [
    'MessageHeader.id not a FHIR id',
    (m) => {
      headerOf(m).id = 'not an id!';
    },
    'ITK3_HEADER_INVALID',
  ],
  [
    'destination present',
    (m) => {
      headerOf(m).destination = [{ endpoint: 'X' }];
    },
    'ITK3_HEADER_INVALID',
  ],
  [
    'enterer present',
    (m) => {
      headerOf(m).enterer = { reference: 'x' };
    },
    'ITK3_HEADER_INVALID',
  ],
  [
    'event system wrong',
    (m) => {
      obj(headerOf(m), 'event').system = 'https://fhir.nhs.uk/STU3/CodeSystem/ITK-MessageEvent-1';
    },
    'ITK3_HEADER_INVALID',
  ],
  ['event code missing', (m) => void delete obj(headerOf(m), 'event').code, 'ITK3_HEADER_INVALID'],
  ['event display missing', (m) => void delete obj(headerOf(m), 'event').display, 'ITK3_HEADER_INVALID'],
  ['sender missing', (m) => void delete headerOf(m).sender, 'ITK3_HEADER_INVALID'],
  ['timestamp missing', (m) => void delete headerOf(m).timestamp, 'ITK3_HEADER_INVALID'],
  [
    'timestamp not an instant',
    (m) => {
      headerOf(m).timestamp = '2024-03-01';
    },
    'ITK3_HEADER_INVALID',
  ],
  [
    'source.endpoint missing',
    (m) => {
      headerOf(m).source = {};
    },
    'ITK3_HEADER_INVALID',
  ],
  [
    'source.software present',
    (m) => {
      obj(headerOf(m), 'source').software = 'EHR';
    },
    'ITK3_HEADER_INVALID',
  ],
  ['focus missing', (m) => void delete headerOf(m).focus, 'ITK3_HEADER_INVALID'],
  [
    'response on a non-response event',
    (m) => {
      headerOf(m).response = { identifier: 'abc', code: 'ok' };
    },
    'ITK3_HEADER_INVALID',
  ],
  ['handling extension missing', (m) => void delete headerOf(m).extension, 'HANDLING_SPEC_INVALID'],
  [
    'handling extension twice',
    (m) => {
      const list = arr(headerOf(m), 'extension');
      list.push(structuredClone(list[0] as Mutable));
    },
    'HANDLING_SPEC_INVALID',
  ],
  [
    'unknown handling key',
    (m) => void handlingOf(m).push({ url: 'Urgency', valueString: 'high' }),
    'HANDLING_SPEC_INVALID',
  ],
  [
    'LocalExtension without a value',
    (m) => void delete handlingKey(m, 'LocalExtension').valueString,
    'HANDLING_SPEC_INVALID',
  ],
  ['InfAckRequested missing', (m) => removeHandlingKey(m, 'InfAckRequested'), 'INF_ACK_INVALID'],
  [
    'InfAckRequested as a string',
    (m) => {
      const key = handlingKey(m, 'InfAckRequested');
      delete key.valueBoolean;
      key.valueString = 'true';
    },
    'INF_ACK_INVALID',
  ],
  [
    'InfAckRequested repeated',
    (m) => void handlingOf(m).push({ url: 'InfAckRequested', valueBoolean: false }),
    'INF_ACK_INVALID',
  ],
  ['BusAckRequested missing', (m) => removeHandlingKey(m, 'BusAckRequested'), 'BUS_ACK_INVALID'],
  [
    'BusAckRequested not a boolean',
    (m) => {
      handlingKey(m, 'BusAckRequested').valueBoolean = 'yes';
    },
    'BUS_ACK_INVALID',
  ],
  [
    'MessageDefinition missing',
    (m) => removeHandlingKey(m, 'MessageDefinition'),
    'MESSAGE_DEFINITION_UNSUPPORTED',
  ],
  [
    'MessageDefinition without a reference',
    (m) => {
      handlingKey(m, 'MessageDefinition').valueReference = { display: 'x' };
    },
    'MESSAGE_DEFINITION_UNSUPPORTED',
  ],
  [
    'MessageDefinition a placeholder',
    (m) => {
      handlingKey(m, 'MessageDefinition').valueReference = { reference: 'TBC' };
    },
    'MESSAGE_DEFINITION_UNSUPPORTED',
  ],
  [
    'MessageDefinition with a leading space',
    (m) => {
      handlingKey(m, 'MessageDefinition').valueReference = {
        reference: ' https://fhir.nhs.uk/STU3/MessageDefinition/ITK-DM-Immunization-MessageDefinition-1',
      };
    },
    'MESSAGE_DEFINITION_UNSUPPORTED',
  ],
  [
    'SenderReference longer than 255',
    (m) => {
      handlingKey(m, 'SenderReference').valueString = 'r'.repeat(256);
    },
    'SENDER_REFERENCE_INVALID',
  ],
  [
    'SenderReference not a string',
    (m) => {
      const key = handlingKey(m, 'SenderReference');
      delete key.valueString;
      key.valueBoolean = true;
    },
    'SENDER_REFERENCE_INVALID',
  ],
  ['RecipientType missing', (m) => removeHandlingKey(m, 'RecipientType'), 'RECIPIENT_TYPE_INVALID'],
  [
    'RecipientType not FA/FI',
    (m) => {
      obj(handlingKey(m, 'RecipientType'), 'valueCoding').code = 'FX';
    },
    'RECIPIENT_TYPE_INVALID',
  ],
  [
    'RecipientType in another system',
    (m) => {
      obj(handlingKey(m, 'RecipientType'), 'valueCoding').system = 'http://example.org/rt';
    },
    'RECIPIENT_TYPE_INVALID',
  ],
];

describe('validateItk3', () => {
  it.each(FORMATS)('accepts a valid built message (%s) with no warnings', (format) => {
    expect(validateItk3(parseObject(messageObject(), format))).toEqual({ warnings: [] });
  });

  describe.each(FORMATS)('%s', (format) => {
    it.each(VIOLATIONS)('%s → %s', (_what, mutate, code) => {
      const message = messageObject();
      mutate(message);

      const error = expectCode(() => validateItk3(parseObject(message, format)), code);
      expect(error.itk3Code).toBe(ERROR_CATALOGUE[code]);
    });
  });

  it.each(FORMATS)('accepts a 255-character SenderReference (%s)', (format) => {
    const message = messageObject({ senderReference: 'r'.repeat(255) });
    expect(() => validateItk3(parseObject(message, format))).not.toThrow();
  });

  it.each(FORMATS)('accepts the -Instance- MessageDefinition URL with a warning (%s)', (format) => {
    const message = messageObject({ messageDefinition: 'ITK-DM-Immunization-MessageDefinition-Instance-1' });
    const msg = parseObject(message, format);

    expect(msg.messageDefinitionName).toBe('ITK-DM-Immunization-MessageDefinition-1');
    expect(validateItk3(msg).warnings).toEqual(['MessageDefinition uses the -Instance- URL variant']);
  });

  it.each(FORMATS)('accepts the legacy Priority key with a warning (%s)', (format) => {
    const message = messageObject();
    handlingOf(message).push({
      url: 'Priority',
      valueCoding: { system: 'https://fhir.nhs.uk/STU3/CodeSystem/ITK-Priority-1', code: 'normal' },
    });
    const msg = parseObject(message, format);

    expect(msg.header.handling.priority).toBe('normal');
    expect(validateItk3(msg).warnings).toEqual(['legacy Priority key present']);
  });

  it.each(FORMATS)(
    'accepts pre-2.5.0 senders without SenderReference/LocalExtension, warned (%s)',
    (format) => {
      const message = messageObject();
      removeHandlingKey(message, 'SenderReference');
      removeHandlingKey(message, 'LocalExtension');

      expect(validateItk3(parseObject(message, format)).warnings).toEqual([
        'SenderReference is missing (pre-2.5.0 sender)',
        'LocalExtension is missing (pre-2.5.0 sender)',
      ]);
    },
  );

  it('warns when the MessageDefinition is not the usual one for the event, or not under fhir.nhs.uk', () => {
    const message = messageObject({ messageDefinition: 'ITK-DM-MIRC-MessageDefinition-1' });
    expect(validateItk3(parseObject(message, 'xml')).warnings).toEqual([
      'MessageDefinition is not the one usual for this event',
    ]);

    const elsewhere = messageObject();
    handlingKey(elsewhere, 'MessageDefinition').valueReference = {
      reference: 'https://example.org/fhir/MessageDefinition/ITK-DM-Immunization-MessageDefinition-1',
    };
    expect(validateItk3(parseObject(elsewhere, 'xml')).warnings).toEqual([
      'MessageDefinition is not under fhir.nhs.uk',
    ]);
  });

  it('accepts FI, false ack flags and no receiver', () => {
    const message = messageObject({
      recipientType: 'FI',
      acks: { inf: false, bus: false },
      receiverOds: undefined,
    });
    const msg = parseObject(message, 'json');

    expect(validateItk3(msg).warnings).toEqual([]);
    expect(msg.header.handling).toMatchObject({
      recipientType: 'FI',
      infAckRequested: false,
      busAckRequested: false,
    });
    expect(msg.header.receiverRef).toBeUndefined();
  });

  it('resolves relative Type/id references as well as fullUrls', () => {
    const message = messageObject();
    const entry = arr(message, 'entry')[1] as Mutable;
    const orgId = obj(entry, 'resource').id as string;
    obj(headerOf(message), 'sender').reference = `Organization/${orgId}`;
    entry.fullUrl = `https://example.org/fhir/Organization/${orgId}`;

    expect(parseObject(message, 'xml').header.senderOds).toBe('X26');
  });

  it('keeps message content out of error messages', () => {
    const message = messageObject();
    obj(headerOf(message), 'event').code = 'SECRET-CONTENT';
    handlingKey(message, 'SenderReference').valueString = `SECRET${'x'.repeat(300)}`;

    for (const format of FORMATS) {
      const first = expectCode(() => validateItk3(parseObject(message, format)), 'SENDER_REFERENCE_INVALID');
      expect(first.message).not.toMatch(/SECRET/);
    }
    handlingKey(message, 'SenderReference').valueString = 'None';
    const second = expectCode(() => validateItk3(parseObject(message, 'xml')), 'ITK3_HEADER_INVALID');
    expect(second.message).not.toMatch(/SECRET/);
  });
});
