/** Sample loading: built equivalents when there are no fixtures, folder resolution. */
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Itk3ValidationError } from '../../../lib/errors.js';
import { parseBundle } from '../../../lib/itk3/parse.js';
import { fixturesDir, ITK3_SAMPLE_FACTS, loadSamples, projectRoot } from '../../../lib/itk3/samples.js';
import { validateItk3 } from '../../../lib/itk3/validate.js';

const NO_FIXTURES = path.join(tmpdir(), 'itk3-no-such-fixture-folder');
const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

describe('loadSamples without fixtures', () => {
  const samples = loadSamples({ fixturesDir: NO_FIXTURES });

  it('returns 4 built ITK3 messages and 1 built legacy message', () => {
    expect(samples.map((s) => [s.name, s.kind, s.source, s.format])).toEqual([
      ...ITK3_SAMPLE_FACTS.map((f) => [f.name, 'itk3', 'built', 'xml']),
      ['legacy-itk2-soap.xml', 'legacy-itk2', 'built', 'xml'],
    ]);
  });

  it.each(ITK3_SAMPLE_FACTS.map((f) => [f.name, f] as const))(
    '%s has the facts of the fixture',
    (name, facts) => {
      const sample = samples.find((s) => s.name === name);
      const msg = parseBundle(sample?.bytes ?? new Uint8Array(), 'xml');

      expect(validateItk3(msg).warnings).toEqual([]);
      expect({
        messageId: msg.header.id,
        bundleId: msg.bundleId,
        documentId: msg.documentId,
        event: msg.header.event.code,
        senderOds: msg.header.senderOds,
        receiverOds: msg.header.receiverOds,
        meshMailbox: msg.header.sourceEndpoint,
        messageDefinition: msg.messageDefinitionName,
        senderReference: msg.header.handling.senderReference,
        localExtension: msg.header.handling.localExtension,
        timestamp: msg.header.timestamp,
      }).toEqual({
        messageId: facts.messageId,
        bundleId: facts.bundleId,
        documentId: facts.documentId,
        event: facts.event,
        senderOds: facts.senderOds,
        receiverOds: facts.receiverOds,
        meshMailbox: facts.meshMailbox,
        messageDefinition: facts.messageDefinition,
        senderReference: facts.senderReference,
        localExtension: facts.localExtension,
        timestamp: facts.timestamp,
      });
    },
  );

  it('built oc/consultation pair shares MessageHeader id and document id with different bytes', () => {
    const [a, b] = ['consultation_report.xml', 'oc_consultation_report.xml'].map((name) => {
      const sample = samples.find((s) => s.name === name);
      if (sample === undefined) throw new Error(name);
      return sample.bytes;
    }) as [Uint8Array, Uint8Array];
    const [pa, pb] = [parseBundle(a, 'xml'), parseBundle(b, 'xml')];

    expect(pb.header.id).toBe(pa.header.id);
    expect(pb.documentId).toBe(pa.documentId);
    expect(sha256(a)).not.toBe(sha256(b));
  });

  it('the built legacy message is refused with 10009', () => {
    const legacy = samples.find((s) => s.kind === 'legacy-itk2');
    let thrown: unknown;
    try {
      parseBundle(legacy?.bytes ?? new Uint8Array(), 'xml');
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(Itk3ValidationError);
    expect((thrown as Itk3ValidationError).itk3Code).toBe('10009');
  });
});

describe('fixturesDir / projectRoot', () => {
  const saved = process.env.ITK3_FIXTURES_DIR;
  afterEach(() => {
    if (saved === undefined) delete process.env.ITK3_FIXTURES_DIR;
    else process.env.ITK3_FIXTURES_DIR = saved;
  });

  it('projectRoot is the folder holding this package.json', () => {
    const pkg = JSON.parse(readFileSync(path.join(projectRoot(), 'package.json'), 'utf8')) as {
      name: string;
    };
    expect(pkg.name).toBe('itk3-secure-pipeline');
  });

  it('ITK3_FIXTURES_DIR overrides the folder; a missing folder gives undefined', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'itk3-fixtures-'));
    try {
      process.env.ITK3_FIXTURES_DIR = dir;
      expect(fixturesDir()).toBe(dir);
      process.env.ITK3_FIXTURES_DIR = NO_FIXTURES;
      expect(fixturesDir()).toBeUndefined();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('defaults to ../shared/fixtures/itk3 from the project root', () => {
    delete process.env.ITK3_FIXTURES_DIR;
    const expected = path.resolve(projectRoot(), '../shared/fixtures/itk3');
    expect([expected, undefined]).toContain(fixturesDir());
  });
});
