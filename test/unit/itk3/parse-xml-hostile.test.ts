/** Hostile and malformed XML: every case is refused quickly with a code, never content. */
import { describe, expect, it } from 'vitest';
import { parseBundle } from '../../../lib/itk3/parse.js';
import { build, expectCode, text, utf8 } from './helpers.js';

const FHIR = 'xmlns="http://hl7.org/fhir"';
const valid = (): string => text(build({ format: 'xml' }));
/** The built message with its XML declaration replaced by `prolog`. */
const withProlog = (prolog: string): string => valid().replace(/^<\?xml[^>]*\?>\n/, prolog);

/** Refused as unreadable within `ms` milliseconds. */
function refusedFast(input: Uint8Array | string, ms = 500): void {
  const bytes = typeof input === 'string' ? utf8(input) : input;
  const started = performance.now();
  expectCode(() => parseBundle(bytes, 'xml'), 'BUNDLE_UNREADABLE');
  expect(performance.now() - started).toBeLessThan(ms);
}

describe('parseBundle (XML) refuses hostile input', () => {
  it('accepts the built message as a baseline', () => {
    expect(parseBundle(utf8(valid()), 'xml').header.event.code).toBe('ITK009D');
  });

  it('refuses a "billion laughs" internal entity DOCTYPE', () => {
    const lol = [
      '<!DOCTYPE Bundle [',
      '<!ENTITY lol "lol">',
      ...Array.from({ length: 9 }, (_, i) => {
        const prev = i === 0 ? 'lol' : `lol${i}`;
        return `<!ENTITY lol${i + 1} "${`&${prev};`.repeat(10)}">`;
      }),
      ']>',
    ].join('\n');
    refusedFast(`${lol}\n<Bundle ${FHIR}><id value="&lol9;"/><type value="message"/></Bundle>`);
  });

  it('refuses an external entity (SYSTEM) DOCTYPE', () => {
    refusedFast(
      `<!DOCTYPE Bundle [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><Bundle ${FHIR}><id value="&xxe;"/></Bundle>`,
    );
  });

  it('refuses any DOCTYPE, even without an internal subset', () => {
    refusedFast(withProlog('<!DOCTYPE Bundle>\n'));
  });

  it('refuses an undeclared entity', () => {
    refusedFast(valid().replace('value="NOROT003"', 'value="&mailbox;"'));
  });

  it('accepts the five predefined entities and references to specials, whitespace and non-ASCII', () => {
    const msg = parseBundle(
      utf8(valid().replace('value="NOROT003"', 'value="&lt;&gt;&amp;&quot;&apos;&#60;&#x26;&#10;&#xE9;"')),
      'xml',
    );
    expect(msg.header.sourceEndpoint).toBe(`<>&"'<&\né`);
  });

  it('refuses a reference that spells a plain ASCII character (fast-xml-parser would not decode it)', () => {
    for (const spelt of ['&#65;', '&#x42;', '&#x0000041;', '&#32;', '&#126;']) {
      const error = expectCode(
        () => parseBundle(utf8(valid().replace('value="NOROT003"', `value="NOROT${spelt}"`)), 'xml'),
        'BUNDLE_AMBIGUOUS',
      );
      expect(error.itk3Code).toBe('20006');
    }
  });

  it('refuses processing instructions, before or inside the root', () => {
    refusedFast(withProlog('<?xml version="1.0"?>\n<?xml-stylesheet href="x.xsl"?>\n'));
    refusedFast(valid().replace('<type value="message"/>', '<?php echo 1; ?><type value="message"/>'));
  });

  it('accepts an XML declaration, but not another version or encoding', () => {
    expect(() =>
      parseBundle(utf8(withProlog('<?xml version="1.0" encoding="utf-8"?>\n')), 'xml'),
    ).not.toThrow();
    refusedFast(withProlog('<?xml version="1.1"?>\n'));
    refusedFast(withProlog('<?xml version="1.0" encoding="ISO-8859-1"?>\n'));
  });

  it('refuses a leading UTF-8 BOM: what is delivered must be the signed bytes, read one way', () => {
    const bytes = new Uint8Array([0xef, 0xbb, 0xbf, ...utf8(valid())]);
    expect(expectCode(() => parseBundle(bytes, 'xml'), 'BUNDLE_BYTE_ORDER_MARK').itk3Code).toBe('20006');
  });

  it('refuses nesting deeper than 64 elements, at once, even 100 000 deep', () => {
    refusedFast(`<Bundle ${FHIR}>${'<a>'.repeat(100_000)}${'</a>'.repeat(100_000)}</Bundle>`);
  });

  it('counts depth exactly: 64 levels pass the reader, 65 do not', () => {
    const nest = (levels: number): string =>
      `<Bundle ${FHIR}><type value="message"/>${'<x>'.repeat(levels - 1)}${'</x>'.repeat(levels - 1)}</Bundle>`;
    // 64 levels: readable, then refused only as "not ITK3" material (no MessageHeader etc.).
    expect(parseBundle(utf8(nest(64)), 'xml').messageHeaderCount).toBe(0);
    refusedFast(nest(65));
  });

  it('refuses more elements than the cap, and more attributes on one element than the cap', () => {
    refusedFast(`<Bundle ${FHIR}>${'<a/>'.repeat(600_000)}</Bundle>`, 5_000);
    const attrs = Array.from({ length: 65 }, (_, i) => `a${i}="1"`).join(' ');
    refusedFast(`<Bundle ${FHIR}><x ${attrs}/></Bundle>`);
  });

  it('honours caller limits', () => {
    expectCode(() => parseBundle(utf8(valid()), 'xml', { maxElements: 10 }), 'BUNDLE_UNREADABLE');
    expectCode(() => parseBundle(utf8(valid()), 'xml', { maxBytes: 100 }), 'MESSAGE_TOO_LARGE');
  });

  it('refuses bytes that are not UTF-8', () => {
    const bad = (bytes: number[]): Uint8Array => {
      const head = utf8(`<Bundle ${FHIR}><id value="`);
      const tail = utf8('"/><type value="message"/></Bundle>');
      return new Uint8Array([...head, ...bytes, ...tail]);
    };
    refusedFast(bad([0xc3, 0x28])); // broken two-byte sequence
    refusedFast(bad([0xc0, 0xaf])); // overlong "/"
    refusedFast(bad([0xed, 0xa0, 0x80])); // encoded surrogate
    refusedFast(new Uint8Array([0xfe, 0xff, 0x00, 0x3c])); // UTF-16 BOM
  });

  it('refuses a truncated document, an empty one, two roots and text after the root', () => {
    const full = valid();
    refusedFast(full.slice(0, Math.floor(full.length / 2)));
    refusedFast(full.slice(0, full.lastIndexOf('</Bundle>')));
    refusedFast('');
    refusedFast('   \n');
    refusedFast(`${full}<Bundle ${FHIR}/>`);
    refusedFast(`${full}trailing`);
  });

  it('refuses unbound prefixes, disallowed characters and JSON sent as XML', () => {
    refusedFast(`<Bundle ${FHIR}><p:id value="1"/></Bundle>`);
    refusedFast(`<Bundle ${FHIR}><id value="\u0001"/></Bundle>`);
    refusedFast(`<Bundle ${FHIR}><id value="&#0;"/></Bundle>`);
    refusedFast(text(build({ format: 'json' })));
  });

  it('keeps document content out of error messages', () => {
    const cases = [
      `<Bundle ${FHIR}><SECRETNAME>`,
      `<Bundle ${FHIR}><id value="&SECRETENTITY;"/></Bundle>`,
      `<Bundle ${FHIR}><p:SECRETPREFIX/></Bundle>`,
    ];
    for (const input of cases) {
      const error = expectCode(() => parseBundle(utf8(input), 'xml'), 'BUNDLE_UNREADABLE');
      expect(error.message).not.toMatch(/SECRET/);
      expect(error.cause).toBeUndefined();
    }
  });

  it('answers BUNDLE_NOT_ITK3 for well-formed XML that is not a FHIR message Bundle', () => {
    expectCode(() => parseBundle(utf8('<Bundle><type value="message"/></Bundle>'), 'xml'), 'BUNDLE_NOT_ITK3');
    expectCode(() => parseBundle(utf8(`<Patient ${FHIR}/>`), 'xml'), 'BUNDLE_NOT_ITK3');
    expectCode(
      () =>
        parseBundle(utf8(valid().replace('<type value="message"/>', '<type value="collection"/>')), 'xml'),
      'BUNDLE_NOT_ITK3',
    );
    expectCode(
      () =>
        parseBundle(utf8(`<Bundle ${FHIR}><type value="message"/><type value="message"/></Bundle>`), 'xml'),
      'BUNDLE_NOT_ITK3',
    );
  });
});
