/** FHIR JSON: same facts as XML; duplicate names, deep nesting and bad bytes refused. */
import { describe, expect, it } from 'vitest';
import { parseBundle } from '../../../lib/itk3/parse.js';
import { build, expectCode, text, utf8 } from './helpers.js';

const valid = (): string => text(build({ format: 'json' }));

function refusedFast(input: string | Uint8Array, ms = 500): void {
  const bytes = typeof input === 'string' ? utf8(input) : input;
  const started = performance.now();
  expectCode(() => parseBundle(bytes, 'json'), 'BUNDLE_UNREADABLE');
  expect(performance.now() - started).toBeLessThan(ms);
}

describe('parseBundle (JSON)', () => {
  it('reads the same facts from JSON as from XML', () => {
    const fromJson = parseBundle(build({ format: 'json' }), 'json');
    const fromXml = parseBundle(build({ format: 'xml' }), 'xml');

    expect(fromJson.format).toBe('json');
    expect({ ...fromJson, format: 'xml' }).toEqual(fromXml);
    expect(fromJson.header.senderOds).toBe('X26');
    expect(fromJson.header.receiverOds).toBe('A83627');
  });

  it('refuses duplicate member names at any level, also when spelt with escapes', () => {
    refusedFast(
      valid().replace('"resourceType": "Bundle",', '"resourceType": "Bundle", "resourceType": "Bundle",'),
    );
    refusedFast(valid().replace('"endpoint": "NOROT003"', '"endpoint": "NOROT003", "endpoint": "X"'));
    refusedFast(valid().replace('"endpoint": "NOROT003"', '"endpoint": "NOROT003", "\\u0065ndpoint": "X"'));
    refusedFast('{"a":1,"b":{"c":1,"c":2}}');
  });

  it('accepts the same name in different objects and braces or quotes inside strings', () => {
    const tricky = valid().replace('"endpoint": "NOROT003"', '"endpoint": "N{\\"[\\\\\\"}]O"');
    expect(parseBundle(utf8(tricky), 'json').header.sourceEndpoint).toBe('N{"[\\"}]O');
  });

  it('refuses nesting deeper than 64, at once, even a million deep', () => {
    refusedFast(`${'['.repeat(1_000_000)}${']'.repeat(1_000_000)}`);
    refusedFast(`{"resourceType":"Bundle","x":${'{"a":'.repeat(70)}1${'}'.repeat(70)}}`);
  });

  it('counts depth exactly: 64 levels pass the reader, 65 do not', () => {
    const nest = (levels: number): string =>
      `{"resourceType":"Bundle","type":"message","x":${'['.repeat(levels - 1)}${']'.repeat(levels - 1)}}`;
    expect(parseBundle(utf8(nest(64)), 'json').entryCount).toBe(0);
    refusedFast(nest(65));
  });

  it('refuses malformed JSON without quoting it', () => {
    for (const input of ['', '{', '{"a":SECRETVALUE}', '{"a":1,}', '[1,2', '{"a":"unterminated', '}{']) {
      const error = expectCode(() => parseBundle(utf8(input), 'json'), 'BUNDLE_UNREADABLE');
      expect(error.message).not.toMatch(/SECRET/);
    }
  });

  it('refuses bytes that are not UTF-8, and a BOM (JSON.parse would refuse what was delivered)', () => {
    const head = utf8('{"resourceType":"Bundle","type":"message","id":"');
    refusedFast(new Uint8Array([...head, 0xff, ...utf8('"}')]));
    const bom = new Uint8Array([0xef, 0xbb, 0xbf, ...utf8(valid())]);
    expectCode(() => parseBundle(bom, 'json'), 'BUNDLE_BYTE_ORDER_MARK');
  });

  it('answers BUNDLE_NOT_ITK3 for JSON that is not a FHIR message Bundle', () => {
    for (const input of [
      'null',
      '[]',
      '"Bundle"',
      '{"resourceType":"Patient"}',
      '{"resourceType":"Bundle","type":"document"}',
      '{"resourceType":"Bundle"}',
    ]) {
      expectCode(() => parseBundle(utf8(input), 'json'), 'BUNDLE_NOT_ITK3');
    }
  });

  it('flags a 0..1 element sent as a JSON array, so no reader can pick another item', () => {
    const listed = valid().replace(
      '"timestamp": "2024-03-01T09:30:00+00:00"',
      '"timestamp": ["2024-03-01T09:30:00+00:00"]',
    );
    expect(parseBundle(utf8(listed), 'json').problems).toContain('MessageHeader.timestamp repeated');
    expectCode(
      () => parseBundle(utf8(valid().replace('"type": "message"', '"type": ["message"]')), 'json'),
      'BUNDLE_NOT_ITK3',
    );
  });

  it('treats wrongly typed members as absent or unreadable, never as a crash', () => {
    const odd = valid()
      .replace('"valueBoolean": true', '"valueBoolean": "true"')
      .replace('"endpoint": "NOROT003"', '"endpoint": 42');
    const msg = parseBundle(utf8(odd), 'json');

    expect(msg.header.handling.problems).toContain('BusAckRequested: unreadable');
    expect(msg.header.sourceEndpoint).toBeUndefined();
  });
});
