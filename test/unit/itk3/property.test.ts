/**
 * Property: whatever happens to the bytes of a valid message (byte flips, truncation, hostile
 * snippets spliced in), parse + validate either succeed or throw an Itk3ValidationError —
 * never an unclassified error, which the pipeline would treat as transient and retry.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Itk3ValidationError } from '../../../lib/errors.js';
import { parseBundle } from '../../../lib/itk3/parse.js';
import { validateItk3 } from '../../../lib/itk3/validate.js';
import { build, FORMATS, utf8 } from './helpers.js';

function classified(bytes: Uint8Array, format: 'xml' | 'json'): boolean {
  try {
    validateItk3(parseBundle(bytes, format));
    return true;
  } catch (error) {
    return error instanceof Itk3ValidationError;
  }
}

const SNIPPETS = [
  '<!DOCTYPE x [<!ENTITY a "b">]>',
  '&a;',
  '&#0;',
  '<?pi x?>',
  '<![CDATA[x]]>',
  '<x>',
  '</x>',
  '"',
  '{',
  '}',
  '[',
  ']',
  ',"type":"message"',
  '\\u0000',
  '\uFFFF',
  '\uD800',
];

describe.each(FORMATS)('mutated %s messages only ever fail with an Itk3ValidationError', (format) => {
  const valid = build({ format, attachmentBytes: 256 });

  it('random byte overwrites', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(valid.length - 1), fc.integer({ min: 0, max: 255 })), {
          minLength: 1,
          maxLength: 8,
        }),
        (edits) => {
          const bytes = valid.slice();
          for (const [at, value] of edits) bytes[at] = value;
          return classified(bytes, format);
        },
      ),
      { numRuns: 400 },
    );
  });

  it('truncation at any length', () => {
    fc.assert(
      fc.property(fc.nat(valid.length), (length) => classified(valid.slice(0, length), format)),
      { numRuns: 300 },
    );
  });

  it('hostile snippets spliced in anywhere', () => {
    fc.assert(
      fc.property(
        fc.nat(valid.length),
        fc.constantFrom(...SNIPPETS),
        fc.nat(valid.length),
        (at, snippet, cut) => {
          const spliced = new Uint8Array([
            ...valid.subarray(0, at),
            ...utf8(snippet),
            ...valid.subarray(Math.max(at, cut)),
          ]);
          return classified(spliced, format);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('arbitrary bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), (bytes) => classified(bytes, format)),
      { numRuns: 300 },
    );
  });

  it('the unmutated message passes', () => {
    expect(classified(valid, format)).toBe(true);
    expect(() => validateItk3(parseBundle(valid, format))).not.toThrow();
  });
});
