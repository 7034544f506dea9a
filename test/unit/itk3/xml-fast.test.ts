/**
 * The XML fast path may only ever accept what the saxes reader accepts, with the same tree: on the
 * real fixtures, on hand-written edge cases, and on thousands of seeded mutations of a message.
 * (Refusals are not its business: it hands every doubtful document to saxes.)
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { describe, expect, it } from 'vitest';
import { fixturesDir, ITK3_SAMPLE_FACTS } from '../../../lib/itk3/samples.js';
import { readXml, readXmlSaxes, type XmlDocument, type XmlLimits } from '../../../lib/itk3/xml.js';
import { readXmlFast } from '../../../lib/itk3/xml-fast.js';
import { build, text } from './helpers.js';

const LIMITS: XmlLimits = {
  maxDepth: 64,
  maxElements: 100_000,
  maxAttributes: 200_000,
  maxAttributesPerElement: 32,
};
const FHIR = 'xmlns="http://hl7.org/fhir"';
const XHTML = 'xmlns="http://www.w3.org/1999/xhtml"';

function strict(doc: string): XmlDocument | 'refused' {
  try {
    return readXml(doc, LIMITS, false);
  } catch {
    return 'refused';
  }
}

/** What a reader makes of a document: its tree, or its refusal (class, kind and message). */
function outcome(read: () => XmlDocument): unknown {
  try {
    return { tree: read() };
  } catch (error) {
    const e = error as Error & { kind?: string };
    return { refused: e.constructor.name, kind: e.kind, message: e.message };
  }
}

/**
 * `readXml` with and without the fast path must give the same tree or the same refusal, and
 * whatever the fast path accepts saxes reads as the same tree. Returns whether the fast path
 * judged the document itself.
 */
function agree(doc: string, limits: XmlLimits = LIMITS): 'bail' | 'same' {
  expect(outcome(() => readXml(doc, limits))).toEqual(outcome(() => readXml(doc, limits, false)));
  const fast = readXmlFast(doc, limits);
  if (fast === undefined) return 'bail';
  expect(isDeepStrictEqual(fast, readXmlSaxes(doc, limits))).toBe(true);
  return 'same';
}

const fixtures = (() => {
  const dir = fixturesDir();
  return dir === undefined
    ? []
    : ITK3_SAMPLE_FACTS.map((f) => ({ name: f.name, doc: readFileSync(join(dir, f.name), 'utf8') }));
})();

describe('readXmlFast', () => {
  it.skipIf(fixtures.length === 0)('reads every ITK3 fixture exactly as saxes does (no fallback)', () => {
    for (const f of fixtures) expect(agree(f.doc), f.name).toBe('same');
  });

  it('reads the built XML message exactly as saxes does', () => {
    expect(agree(text(build({ format: 'xml' })))).toBe('same');
  });

  it('normalises literal whitespace and decodes references in attribute values like saxes', () => {
    const doc = `<Bundle ${FHIR}><id value="a\r\nb\rc\nd\te &#10;&#x9;&amp;&lt;&gt;&quot;&apos; &#233;"/></Bundle>`;
    expect(agree(doc)).toBe('same');
    expect(readXmlFast(doc, LIMITS)?.root?.children[0]?.attrs.value).toBe('a b c d e \n\t&<>"\' é');
  });

  it('accepts comments, a standalone declaration, single quotes and a narrative with xml:lang', () => {
    const doc = [
      `<?xml version='1.0' encoding='utf-8' standalone="yes"?>`,
      '<!-- before -->',
      `<Bundle ${FHIR}><!-- inside --><text><div ${XHTML} xml:lang="en"><p class='x'>a &amp; b &#169; &gt;</p><br/></div></text></Bundle>`,
      '<!-- after -->',
    ].join('\n');
    expect(agree(doc)).toBe('same');
  });

  it('reads plain values, later references and several narrative runs exactly as saxes does', () => {
    // Each value's search for a whitespace control or `&` runs on past its closing quote; the
    // narrative's `&` and `]]>` searches are remembered across text runs (xml-fast.ts).
    const doc = [
      `<Bundle ${FHIR}>`,
      '<id value="a" url="b&amp;c"/>',
      `<text><div ${XHTML}>one <b>two</b> three &amp; four<br/>five</div></text>`,
      `<meta xmlns="http://hl7.org/fhir"><tag value="x	y"/></meta>`,
      `<text><div ${XHTML}>six &#233; <i>seven</i> eight]] &gt;</div></text>`,
      '</Bundle>',
    ].join('\n');
    expect(agree(doc)).toBe('same');
    const children = readXmlFast(doc, LIMITS)?.root?.children ?? [];
    expect(children[0]?.attrs).toEqual({ value: 'a', url: 'b&c' });
    expect(children[2]?.children[0]?.attrs.value).toBe('x y');
    // A `]]>` in a later narrative run is still found after earlier runs had none.
    const late = doc.replace('eight]] &gt;', 'eight ]]>');
    expect(readXmlFast(late, LIMITS)).toBeUndefined();
    expect(agree(late)).toBe('bail');
  });

  it.each([
    ['a DOCTYPE', `<!DOCTYPE Bundle><Bundle ${FHIR}/>`],
    ['a processing instruction', `<Bundle ${FHIR}><?pi x?></Bundle>`],
    ['CDATA', `<Bundle ${FHIR}><![CDATA[x]]></Bundle>`],
    ['text in a FHIR element', `<Bundle ${FHIR}>x</Bundle>`],
    ['a reference in FHIR element text', `<Bundle ${FHIR}>&#10;</Bundle>`],
    ['a prefixed element', `<f:Bundle xmlns:f="http://hl7.org/fhir"/>`],
    ['a prefixed attribute', `<Bundle ${FHIR} xmlns:x="urn:x" x:a="1"/>`],
    ['xml:lang outside the narrative', `<Bundle ${FHIR} xml:lang="en"/>`],
    ['a repeated attribute', `<Bundle ${FHIR}><id value="1" value="2"/></Bundle>`],
    ['a foreign element', `<Bundle ${FHIR}><x xmlns="urn:x"/></Bundle>`],
    ['a non-FHIR root', '<Envelope xmlns="urn:soap"/>'],
    ['an unknown entity', `<Bundle ${FHIR}><id value="&nbsp;"/></Bundle>`],
    ['a reference to a forbidden character', `<Bundle ${FHIR}><id value="&#0;"/></Bundle>`],
    ['a raw control character', `<Bundle ${FHIR}><id value="\u0001"/></Bundle>`],
    ['a lone surrogate', `<Bundle ${FHIR}><id value="\uD800"/></Bundle>`],
    ['a byte-order mark', `\uFEFF<Bundle ${FHIR}/>`],
    ['an encoding other than UTF-8', `<?xml version="1.0" encoding="ISO-8859-1"?><Bundle ${FHIR}/>`],
    ['XML 1.1', `<?xml version="1.1"?><Bundle ${FHIR}/>`],
    ['a mismatched end tag', `<Bundle ${FHIR}><id></idx></Bundle>`],
    ['an unclosed root', `<Bundle ${FHIR}><id/>`],
    ['two roots', `<Bundle ${FHIR}/><Bundle ${FHIR}/>`],
    ['"]]>" in narrative text', `<Bundle ${FHIR}><text><div ${XHTML}>]]></div></text></Bundle>`],
    ['a double dash in a comment', `<Bundle ${FHIR}><!-- a -- b --></Bundle>`],
    ['a non-ASCII element name', `<Bundle ${FHIR}><idé value="1"/></Bundle>`],
    ['"<" in an attribute value', `<Bundle ${FHIR}><id value="<"/></Bundle>`],
    ['attributes without whitespace between them', `<Bundle ${FHIR}><id a="1"b="2"/></Bundle>`],
    ['a colon after an element name', `<Bundle ${FHIR}><id: value="1"/></Bundle>`],
    ['xml:lang on a FHIR element', `<Bundle ${FHIR}><id xml:lang="en" value="1"/></Bundle>`],
  ])('leaves %s to saxes', (_what, doc) => {
    expect(readXmlFast(doc, LIMITS)).toBeUndefined();
  });

  it('leaves documents over a cap to saxes', () => {
    const doc = `<Bundle ${FHIR}><a><b><c/></b></a></Bundle>`;
    expect(readXmlFast(doc, { ...LIMITS, maxDepth: 3 })).toBeUndefined();
    expect(readXmlFast(doc, { ...LIMITS, maxElements: 3 })).toBeUndefined();
    expect(readXmlFast(`<Bundle ${FHIR} a="1"/>`, { ...LIMITS, maxAttributesPerElement: 1 })).toBeUndefined();
    expect(readXmlFast(`<Bundle ${FHIR} a="1"/>`, { ...LIMITS, maxAttributes: 1 })).toBeUndefined();
    expect(agree(doc, { ...LIMITS, maxDepth: 4, maxElements: 4 })).toBe('same');
  });

  it('never accepts what saxes refuses, nor reads differently, over 2 000 seeded mutations of a message', () => {
    // The built message (7 KB, with a narrative): small enough for many mutations per second.
    const base = text(build({ format: 'xml' }));
    // Deterministic PRNG (mulberry32) so a failure reproduces.
    let seed = 0x1f2e3d4c;
    const random = () => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    const pieces = [
      '<',
      '>',
      '/',
      '"',
      "'",
      '&',
      ';',
      '=',
      ' ',
      '\r',
      '\n',
      '\t',
      ':',
      '!',
      '?',
      '-',
      ']',
      'x',
      'é',
      '&#65;',
      '&amp;',
      '&#x0;',
      '<!--',
      '-->',
      'xmlns="urn:x"',
      'xml:lang="en"',
      '\u0000',
      '\uD800',
    ];
    let same = 0;
    let refusedByBoth = 0;
    for (let k = 0; k < 2000; k += 1) {
      let doc = base;
      for (let m = 0, edits = 1 + Math.floor(random() * 3); m < edits; m += 1) {
        const at = Math.floor(random() * doc.length);
        const op = random();
        if (op < 0.4) doc = doc.slice(0, at) + doc.slice(at + 1 + Math.floor(random() * 4));
        else
          doc = doc.slice(0, at) + (pieces[Math.floor(random() * pieces.length)] as string) + doc.slice(at);
      }
      if (agree(doc) === 'same') same += 1;
      else if (strict(doc) === 'refused') refusedByBoth += 1;
    }
    // The property is in agree(); these show the mutations exercised both sides.
    expect(same).toBeGreaterThan(100);
    expect(refusedByBoth).toBeGreaterThan(100);
  });
});
