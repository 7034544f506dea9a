/**
 * One view of the message (issue 9, class 1): every construct that a namespace-unaware XML reader
 * or a naive JSON walk would read differently from the gateway is refused with ITK3 20006 and a
 * code of its own, never silently dropped. One test per refusal, XML and JSON where both apply.
 */
import { describe, expect, it } from 'vitest';
import type { RejectionCode } from '../../../lib/errors.js';
import { parseBundle } from '../../../lib/itk3/parse.js';
import { validateItk3 } from '../../../lib/itk3/validate.js';
import {
  arr,
  build,
  expectCode,
  type Mutable,
  messageObject,
  obj,
  parseObject,
  text,
  utf8,
} from './helpers.js';

const XHTML = 'http://www.w3.org/1999/xhtml';
const ODS_ORG = 'https://fhir.nhs.uk/Id/ods-organization-code';
const ODS_SITE = 'https://fhir.nhs.uk/Id/ods-site-code';
const SENDER_URL = 'urn:uuid:1fa4e373-c52a-58a0-bed0-ec316fb404c8';
const RECEIVER_URL = 'urn:uuid:7576d3ae-874f-5dc0-8574-74adc94fb2b5';
const SENDER_ODS_XML = '<value value="X26"/>';

const xml = (): string => text(build({ format: 'xml' }));

/** Parse (and validate) `input` as XML and expect a 20006 refusal with `code`. */
function refusedXml(input: string, code: RejectionCode): string {
  const error = expectCode(() => validateItk3(parseBundle(utf8(input), 'xml')), code);
  expect(error.itk3Code).toBe('20006');
  return error.message;
}

function refusedJson(message: Mutable | string, code: RejectionCode): string {
  const bytes = typeof message === 'string' ? utf8(message) : utf8(JSON.stringify(message));
  const error = expectCode(() => validateItk3(parseBundle(bytes, 'json')), code);
  expect(error.itk3Code).toBe('20006');
  return error.message;
}

/** The top-level entry whose fullUrl is `url`, in a message object. */
function entryAt(message: Mutable, url: string): Mutable {
  const entry = arr(message, 'entry').find((e) => e.fullUrl === url);
  if (entry === undefined) throw new Error(`no entry ${url}`);
  return entry;
}

describe('XML outside FHIR is refused, not dropped (BUNDLE_FOREIGN_CONTENT)', () => {
  it('an entry in a foreign namespace before the real header (the reported attack)', () => {
    const evil =
      '<entry xmlns="urn:x-evil"><resource><MessageHeader><id value="x"/></MessageHeader></resource></entry>';
    refusedXml(xml().replace('<entry>', `${evil}<entry>`), 'BUNDLE_FOREIGN_CONTENT');
  });

  it('any namespace that is not exactly FHIR: other case, trailing slash, none at all', () => {
    for (const ns of ['http://HL7.org/fhir', 'http://hl7.org/fhir/', '']) {
      refusedXml(
        xml().replace('<type value="message"/>', `<type value="message"/><x xmlns="${ns}"/>`),
        'BUNDLE_FOREIGN_CONTENT',
      );
    }
  });

  it('a prefixed element, even one bound to the FHIR namespace', () => {
    const prefixed = '<f:meta xmlns:f="http://hl7.org/fhir"/>';
    expect(
      refusedXml(
        xml().replace('<type value="message"/>', `<type value="message"/>${prefixed}`),
        'BUNDLE_FOREIGN_CONTENT',
      ),
    ).toBe('bundle is refused: XML element has a namespace prefix');
  });

  it('a prefixed attribute, FHIR-bound or not (fast-xml-parser removeNSPrefix reads it as `value`)', () => {
    for (const ns of ['http://hl7.org/fhir', 'urn:x-evil']) {
      const attr = `<value value="X26" xmlns:p="${ns}" p:value="EVIL9"/>`;
      expect(refusedXml(xml().replace(SENDER_ODS_XML, attr), 'BUNDLE_FOREIGN_CONTENT')).toBe(
        'bundle is refused: XML attribute has a namespace prefix',
      );
    }
  });

  it('text or CDATA inside a FHIR element', () => {
    refusedXml(xml().replace(SENDER_ODS_XML, '<value value="X26">EVIL9</value>'), 'BUNDLE_FOREIGN_CONTENT');
    refusedXml(xml().replace('<sender>', '<sender><![CDATA[EVIL9]]>'), 'BUNDLE_FOREIGN_CONTENT');
  });

  it('XHTML anywhere but text/div, and anything but XHTML inside the narrative', () => {
    refusedXml(xml().replace('<sender>', `<sender><div xmlns="${XHTML}"/>`), 'BUNDLE_FOREIGN_CONTENT');
    const fhirInNarrative = `<text><status value="generated"/><div xmlns="${XHTML}"><p><entry xmlns="http://hl7.org/fhir"/></p></div></text>`;
    refusedXml(
      xml().replace('<MessageHeader>', `<MessageHeader>${fhirInNarrative}`),
      'BUNDLE_FOREIGN_CONTENT',
    );
  });

  it('accepts the narrative: XHTML with text, markup, entities and xml:lang inside text/div', () => {
    const narrative = `<text><status value="generated"/><div xmlns="${XHTML}" xml:lang="en"><p>A &amp; B <b>&#233;</b><![CDATA[ raw ]]></p></div></text>`;
    const msg = parseBundle(utf8(xml().replace('<MessageHeader>', `<MessageHeader>${narrative}`)), 'xml');
    expect(msg.header.senderOds).toBe('X26');
    expect(validateItk3(msg).warnings).toEqual([]);
  });

  it('accepts comments anywhere, whitespace between elements and a redundant FHIR xmlns', () => {
    const benign = xml()
      .replace('<entry>', `<!-- <entry xmlns="urn:x"/> -->\n\t<entry xmlns="http://hl7.org/fhir">`)
      .replace(SENDER_ODS_XML, `${SENDER_ODS_XML}<!-- EVIL9 -->`);
    expect(parseBundle(utf8(benign), 'xml').header.senderOds).toBe('X26');
  });

  it('a non-FHIR root is still "not ITK3" (10009), not a one-view refusal', () => {
    expectCode(
      () => parseBundle(utf8('<Envelope xmlns="urn:soap"><x:y xmlns:x="urn:z"/></Envelope>'), 'xml'),
      'BUNDLE_NOT_ITK3',
    );
  });
});

describe('XML a reader could decode differently is refused (BUNDLE_AMBIGUOUS)', () => {
  it('a repeated attribute, before saxes would call it malformed', () => {
    refusedXml(xml().replace(SENDER_ODS_XML, '<value value="X26" value="EVIL9"/>'), 'BUNDLE_AMBIGUOUS');
  });

  it('a reference-like text in a comment or narrative CDATA is not a reference', () => {
    const narrative = `<text><status value="generated"/><div xmlns="${XHTML}"><![CDATA[&#65;]]></div></text>`;
    const source = xml().replace('<MessageHeader>', `<MessageHeader><!-- &#65; -->${narrative}`);
    expect(parseBundle(utf8(source), 'xml').header.senderOds).toBe('X26');
  });

  it('a character reference spelling a plain character in an identity value', () => {
    refusedXml(xml().replace(SENDER_ODS_XML, '<value value="&#88;26"/>'), 'BUNDLE_AMBIGUOUS');
    refusedXml(xml().replaceAll(SENDER_URL, SENDER_URL.replace('urn', '&#x75;rn')), 'BUNDLE_AMBIGUOUS');
  });

  it('a fullUrl or header reference that is not plain ASCII (space, &, quote)', () => {
    const amp = `${SENDER_URL}&amp;x`;
    refusedXml(xml().replaceAll(`value="${SENDER_URL}"`, `value="${amp}"`), 'BUNDLE_AMBIGUOUS');
    refusedXml(xml().replaceAll(`value="${SENDER_URL}"`, `value="${SENDER_URL}&#10;"`), 'BUNDLE_AMBIGUOUS');
  });

  it('a resource wrapper holding two resources', () => {
    refusedXml(xml().replace('</MessageHeader>', '</MessageHeader><Organization/>'), 'BUNDLE_AMBIGUOUS');
  });
});

describe('Bundle identity: fullUrls are unique (bdl-7), references resolve one way only', () => {
  it('XML: a second entry with the sender Organization fullUrl, before or after the real one', () => {
    const source = xml();
    const start = source.indexOf(`<entry>\n    <fullUrl value="${SENDER_URL}"/>`);
    const end = source.indexOf('</entry>', start) + '</entry>'.length;
    const copy = source.slice(start, end).replace('value="X26"', 'value="EVIL9"');
    refusedXml(source.slice(0, start) + copy + source.slice(start), 'DUPLICATE_FULL_URL');
    const rootEnd = source.lastIndexOf('</Bundle>');
    refusedXml(source.slice(0, rootEnd) + copy + source.slice(rootEnd), 'DUPLICATE_FULL_URL');
  });

  it('JSON: the same, and an entry copied under the header fullUrl', () => {
    const message = messageObject();
    const copy = structuredClone(entryAt(message, SENDER_URL));
    arr(obj(copy, 'resource'), 'identifier')[0] = { system: ODS_ORG, value: 'EVIL9' };
    arr(message, 'entry').splice(1, 0, copy);
    refusedJson(message, 'DUPLICATE_FULL_URL');
  });

  it('a relative reference resolves only when fullUrl and type/id name the same single entry', () => {
    const message = messageObject();
    const sender = entryAt(message, SENDER_URL);
    const orgId = obj(sender, 'resource').id as string;
    obj(arr(message, 'entry')[0], 'resource').sender = { reference: `Organization/${orgId}` };
    // fullUrl urn:uuid: the type/id reader finds it, the fullUrl reader does not: unresolved.
    refusedJson(message, 'REFERENCE_UNRESOLVED');
    sender.fullUrl = `https://example.org/fhir/Organization/${orgId}`;
    expect(parseObject(message, 'json').header.senderOds).toBe('X26');
    // A second entry that a suffix-matching reader would take: ambiguous, so unresolved.
    const decoy = structuredClone(sender);
    decoy.fullUrl = `https://evil.example/Organization/${orgId}`;
    obj(decoy, 'resource').id = 'decoy';
    arr(message, 'entry').push(decoy);
    refusedJson(message, 'REFERENCE_UNRESOLVED');
  });
});

describe('header Organizations carry exactly one ODS code (ODS_IDENTIFIER_AMBIGUOUS)', () => {
  const withIdentifiers = (url: string, identifiers: Mutable[]): Mutable => {
    const message = messageObject();
    obj(entryAt(message, url), 'resource').identifier = identifiers;
    return message;
  };

  it('a second ODS identifier, organisation or site code, before or after the real one', () => {
    for (const system of [ODS_ORG, ODS_SITE]) {
      for (const before of [true, false]) {
        const real = { system: ODS_ORG, value: 'X26' };
        const extra = { system, value: 'EVIL9' };
        const message = withIdentifiers(SENDER_URL, before ? [extra, real] : [real, extra]);
        for (const format of ['xml', 'json'] as const) {
          const error = expectCode(() => parseObject(message, format), 'ODS_IDENTIFIER_AMBIGUOUS');
          expect(error.message).toBe('sender Organization has more than one ODS identifier');
        }
      }
    }
  });

  it('near misses of the ODS systems on sender or receiver, refused rather than ignored', () => {
    const nearMisses = [
      'http://fhir.nhs.uk/Id/ods-organization-code',
      'https://fhir.nhs.uk/Id/ods-organization-code/',
      'https://fhir.nhs.uk/Id/ods-organisation-code',
      'https://FHIR.NHS.UK/Id/ods-organization-code',
      'https://fhir.nhs.uk/Id/ods-organization-code ',
      'https://fhir.nhs.uk/Id/ods-site-code?x',
    ];
    for (const [url, ods] of [
      [SENDER_URL, 'X26'],
      [RECEIVER_URL, 'A83627'],
    ] as const) {
      for (const system of nearMisses) {
        const message = withIdentifiers(url, [
          { system: ODS_ORG, value: ods },
          { system, value: 'EVIL9' },
        ]);
        const error = expectCode(() => parseObject(message, 'json'), 'ODS_IDENTIFIER_AMBIGUOUS');
        expect(error.message).toMatch(/Organization has an identifier under a near miss of the ODS systems$/);
      }
    }
  });

  it('an identifier under an unrelated system or none, and an ODS code that is not plain', () => {
    expect(() =>
      parseObject(withIdentifiers(SENDER_URL, [{ system: 'urn:oid:1.2.3', value: 'X26' }]), 'json'),
    ).toThrow('sender Organization has an identifier outside the ODS systems');
    expectCode(
      () => parseObject(withIdentifiers(SENDER_URL, [{ value: 'X26' }]), 'xml'),
      'ODS_IDENTIFIER_AMBIGUOUS',
    );
    expectCode(
      () => parseObject(withIdentifiers(SENDER_URL, [{ system: ODS_ORG, value: 'X26 ' }]), 'xml'),
      'ODS_IDENTIFIER_AMBIGUOUS',
    );
  });

  it('a site code alone is one ODS identifier and reads as the ODS code', () => {
    const message = withIdentifiers(SENDER_URL, [{ system: ODS_SITE, value: 'X26' }]);
    expect(parseObject(message, 'xml').header.senderOds).toBe('X26');
  });
});

describe('JSON a naive walk would read differently is refused', () => {
  it('member names that are not FHIR names: fhir_comments, @id, trailing space, empty', () => {
    for (const name of ['fhir_comments', '@id', 'sender ', '', 'a-b']) {
      const message = messageObject();
      obj(arr(message, 'entry')[0], 'resource')[name] = ['x'];
      expect(refusedJson(message, 'BUNDLE_FOREIGN_CONTENT')).toBe(
        'bundle is refused: JSON member name is not a FHIR element name',
      );
    }
  });

  it('accepts _name members (a primitive element id and extensions)', () => {
    const message = messageObject();
    obj(arr(message, 'entry')[0], 'resource')._id = {
      extension: [{ url: 'https://example.org/x', valueString: 'y' }],
    };
    expect(validateItk3(parseObject(message, 'json')).warnings).toEqual([]);
  });

  it('a repeating element that is not an array: entry, identifier, extension', () => {
    const single = messageObject();
    const resource = obj(entryAt(single, SENDER_URL), 'resource');
    resource.identifier = arr(resource, 'identifier')[0];
    expect(refusedJson(single, 'BUNDLE_AMBIGUOUS')).toBe(
      'bundle is refused: Organization.identifier is not a JSON array',
    );
    const header = messageObject();
    const mh = obj(arr(header, 'entry')[0], 'resource');
    mh.extension = arr(mh, 'extension')[0];
    refusedJson(header, 'BUNDLE_AMBIGUOUS');
  });

  it('an identity value that is not a string (a reader would stringify 12345), and a null member', () => {
    for (const value of [12345, true, { value: 'x' }]) {
      const message = messageObject();
      obj(entryAt(message, 'urn:uuid:7c1e2d3f-4a5b-4c6d-8e9f-0a1b2c3d4e03'), 'resource').id = value;
      expect(refusedJson(message, 'BUNDLE_AMBIGUOUS')).toBe(
        'bundle is refused: a JSON identity value is not a string',
      );
    }
    const withNull = messageObject();
    obj(arr(withNull, 'entry')[0], 'resource').receiver = null;
    expect(refusedJson(withNull, 'BUNDLE_AMBIGUOUS')).toBe('bundle is refused: a JSON member is null');
  });

  it('a 0..1 element given as an array: fullUrl, reference, event.code', () => {
    const message = messageObject();
    const sender = entryAt(message, SENDER_URL);
    sender.fullUrl = [SENDER_URL, 'urn:uuid:ffffffff-0000-4000-8000-000000000000'];
    refusedJson(message, 'ITK3_HEADER_INVALID');
    const event = messageObject();
    obj(obj(arr(event, 'entry')[0], 'resource'), 'event').code = ['ITK009D', 'ITK013D'];
    refusedJson(event, 'ITK3_HEADER_INVALID');
  });
});

describe('byte-order mark', () => {
  it('is refused in XML and JSON: the gateway delivers the signed bytes, so it cannot strip it', () => {
    for (const format of ['xml', 'json'] as const) {
      const bytes = new Uint8Array([0xef, 0xbb, 0xbf, ...build({ format })]);
      expect(expectCode(() => parseBundle(bytes, format), 'BUNDLE_BYTE_ORDER_MARK').itk3Code).toBe('20006');
    }
  });
});

describe('references that do not resolve (rule setting unresolvedReferences)', () => {
  const dangling = (what: 'receiver' | 'focus' | 'sender'): Mutable => {
    const message = messageObject();
    obj(obj(arr(message, 'entry')[0], 'resource'), what).reference =
      'urn:uuid:ffffffff-0000-4000-8000-00000000dead';
    return message;
  };

  it('a dangling receiver or focus is refused by default and a warning under "allow"', () => {
    for (const what of ['receiver', 'focus'] as const) {
      const msg = parseObject(dangling(what), 'xml');
      expect(expectCode(() => validateItk3(msg), 'REFERENCE_UNRESOLVED').message).toMatch(
        `MessageHeader.${what}`,
      );
      expect(validateItk3(msg, { unresolvedReferences: 'allow' }).warnings).toEqual([
        what === 'receiver'
          ? 'MessageHeader.receiver does not resolve to an ODS-coded Organization'
          : 'MessageHeader.focus does not resolve to an entry',
      ]);
    }
  });

  it('a receiver that resolves to an Organization without an ODS code is unresolved too', () => {
    const message = messageObject();
    obj(entryAt(message, RECEIVER_URL), 'resource').identifier = undefined;
    expectCode(() => validateItk3(parseObject(message, 'json')), 'REFERENCE_UNRESOLVED');
  });

  it('a dangling sender is refused whatever the rule says', () => {
    const msg = parseObject(dangling('sender'), 'json');
    for (const unresolvedReferences of ['refuse', 'allow'] as const) {
      expectCode(() => validateItk3(msg, { unresolvedReferences }), 'REFERENCE_UNRESOLVED');
    }
  });
});

describe('cost of the one-view checks', () => {
  it('a JSON Bundle with a two-million-item array is walked without overflowing the stack', () => {
    const message = messageObject();
    obj(arr(message, 'entry')[0], 'resource').meta = { tag: new Array(2_000_000).fill(0) };
    const started = performance.now();
    expect(parseObject(message, 'json').header.senderOds).toBe('X26');
    expect(performance.now() - started).toBeLessThan(5_000);
  });
});
