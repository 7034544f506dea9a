/** The message builder: valid, deterministic, sized on request, fictitious patient data only. */
import { describe, expect, it } from 'vitest';
import { buildItk3Message } from '../../../lib/itk3/builder.js';
import { parseBundle } from '../../../lib/itk3/parse.js';
import { type FhirObject, serialize } from '../../../lib/itk3/serialize.js';
import { validateItk3 } from '../../../lib/itk3/validate.js';
import { arr, build, buildOptions, FORMATS, messageObject, obj, text } from './helpers.js';

const KB = 1024;
const MB = 1024 * 1024;

interface JsonEntry {
  resource: {
    resourceType: string;
    contentType?: string;
    content?: string;
    identifier?: { value: string }[];
  };
}
const documentEntries = (bytes: Uint8Array): JsonEntry[] => {
  const message = JSON.parse(text(bytes)) as {
    entry: { resource: { type?: string; entry?: JsonEntry[] } }[];
  };
  return message.entry.find((e) => e.resource.type === 'document')?.resource.entry ?? [];
};

describe('buildItk3Message', () => {
  describe.each(FORMATS)('%s', (format) => {
    it.each([
      ['ITK007C', undefined, 'ITK-GPConnectSendDocument-MessageDefinition-1'],
      ['ITK009D', 'A83627', 'ITK-DM-Immunization-MessageDefinition-1'],
      ['ITK013D', 'A8797979', 'ITK-DM-MIRC-MessageDefinition-1'],
    ])('builds a valid %s message (receiver %s)', (event, receiverOds, messageDefinition) => {
      const bytes = build({ format, event, receiverOds, messageDefinition });
      const msg = parseBundle(bytes, format);

      expect(validateItk3(msg).warnings).toEqual([]);
      expect(msg.header.event.code).toBe(event);
      expect(msg.header.receiverOds).toBe(receiverOds);
      expect(msg.documentId).toBe(buildOptions().documentId);
      expect(msg.payloadType).toBe('Bundle');
    });

    it.each([
      ['4 KB', 4 * KB],
      ['1 MB', MB],
      ['5 MB', 5 * MB],
    ])('builds a message with a %s attachment that parses and validates', (_label, size) => {
      const bare = build({ format }).byteLength;
      const bytes = build({ format, attachmentBytes: size });

      // Base64 plus the Binary entry and its section reference: a few hundred bytes of markup.
      const base64 = Math.ceil(size / 3) * 4;
      expect(bytes.byteLength - bare - base64).toBeGreaterThan(0);
      expect(bytes.byteLength - bare - base64).toBeLessThan(1_000);
      const msg = parseBundle(bytes, format);
      expect(validateItk3(msg).warnings).toEqual([]);
    });

    it.each([
      ['16 KB', 16 * KB],
      ['1 MB', MB],
      ['5 MB', 5 * MB],
    ])('builds a message of %s in total that parses and validates in time', (_label, size) => {
      const bytes = build({ format, targetBytes: size });

      expect(bytes.byteLength).toBeLessThanOrEqual(size);
      expect(bytes.byteLength).toBeGreaterThan(size - 4);
      const started = performance.now();
      const msg = parseBundle(bytes, format);
      expect(validateItk3(msg).warnings).toEqual([]);
      expect(performance.now() - started).toBeLessThan(5_000);
    });

    it('a dense 5 MB Bundle (many small resources, no attachment) parses within the caps', () => {
      const message = messageObject();
      const documentEntry = arr(message, 'entry').find((e) => obj(e, 'resource').type === 'document');
      const entries = arr(obj(documentEntry, 'resource'), 'entry');
      for (let i = 0; entries.length < 13_000; i += 1) {
        const id = `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`;
        entries.push({
          fullUrl: `urn:uuid:${id}`,
          resource: { resourceType: 'Observation', id, status: 'final', code: { text: 'fictitious' } },
        });
      }
      const bytes = serialize(message as FhirObject, format);
      expect(bytes.byteLength).toBeGreaterThan(4 * MB);
      expect(bytes.byteLength).toBeLessThan(6 * MB);

      const started = performance.now();
      expect(validateItk3(parseBundle(bytes, format)).warnings).toEqual([]);
      expect(performance.now() - started).toBeLessThan(5_000);
    });

    it('is deterministic, and a variant changes the bytes but not the ids', () => {
      const a = build({ format });
      const b = build({ format });
      const c = build({ format, variant: 'online consultation' });

      expect(text(a)).toBe(text(b));
      expect(text(c)).not.toBe(text(a));
      const [pa, pc] = [parseBundle(a, format), parseBundle(c, format)];
      expect([pc.header.id, pc.bundleId, pc.documentId]).toEqual([pa.header.id, pa.bundleId, pa.documentId]);
    });
  });

  it('carries an attachment of exactly the requested size, PDF-like', () => {
    const bytes = build({ format: 'json', attachmentBytes: 10_000 });
    const binary = documentEntries(bytes).find((e) => e.resource.resourceType === 'Binary');
    const content = Buffer.from(binary?.resource.content ?? '', 'base64');

    expect(binary?.resource.contentType).toBe('application/pdf');
    expect(content).toHaveLength(10_000);
    expect(content.subarray(0, 5).toString()).toBe('%PDF-');
    expect(content.subarray(-6).toString()).toBe('%%EOF\n');
  });

  it('puts the Composition first in the document and uses a fictitious test NHS number', () => {
    const entries = documentEntries(build({ format: 'json' }));
    const patient = entries.find((e) => e.resource.resourceType === 'Patient');
    const nhsNumber = patient?.resource.identifier?.[0]?.value ?? '';

    expect(entries[0]?.resource.resourceType).toBe('Composition');
    expect(nhsNumber).toMatch(/^999\d{7}$/);
    // Modulus 11 check digit, so downstream NHS-number checks accept it.
    const digits = [...nhsNumber].map(Number);
    const sum = digits.slice(0, 9).reduce((acc, d, i) => acc + d * (10 - i), 0);
    expect((11 - (sum % 11)) % 11).toBe(digits[9]);
  });

  it('refuses a target size smaller than the message itself', () => {
    expect(() => buildItk3Message(buildOptions({ targetBytes: 100 }))).toThrow(RangeError);
  });
});
