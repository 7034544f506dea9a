/**
 * Parser differential (issue 9, class 1): what the gateway accepts must read the same to any
 * reasonable reader as it did to the gateway. Real Bundles (the shared NHS fixtures, and builder
 * messages in XML and JSON) are mutated the way an attacker would — foreign-namespace entries,
 * prefixed and repeated attributes, a second entry under the sender's fullUrl, extra and near-miss
 * ODS identifiers, reordered entries, comments, CDATA, whitespace, a BOM, character references —
 * and each variant is read by the gateway (parse + validate) and by fast-xml-parser (two common
 * configurations) and xml2js (defaults), or by JSON.parse with two naive walks. Every variant the
 * gateway accepts must give the same sender ODS, receiver ODS, event, MessageHeader id and
 * document id in all of them. A second block proves the reported attacks are real (a naive reader
 * sees another organisation) and that the gateway now refuses each with its own code.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { buildItk3Message } from '../../lib/itk3/builder.js';
import { parseBundle } from '../../lib/itk3/parse.js';
import { fixturesDir } from '../../lib/itk3/samples.js';
import { buildOptions } from '../unit/itk3/helpers.js';
import {
  fastXmlRead,
  gatewayRead,
  type HeaderFacts,
  jsonRead,
  jsonReadFirstItems,
  xml2jsRead,
} from './differential-readers.js';

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const FHIR_NS = 'http://hl7.org/fhir';
const ODS_ORG = 'https://fhir.nhs.uk/Id/ods-organization-code';
const ODS_SITE = 'https://fhir.nhs.uk/Id/ods-site-code';
/** Systems an attacker (or a sloppy sender) might put an ODS code under. */
const NEAR_MISS_SYSTEMS = [
  'http://fhir.nhs.uk/Id/ods-organization-code',
  'https://fhir.nhs.uk/Id/ods-organization-code/',
  'https://fhir.nhs.uk/Id/ods-organisation-code',
  'https://FHIR.nhs.uk/Id/ods-organization-code',
  'https://fhir.nhs.uk/Id/ODS-organization-code',
  ' https://fhir.nhs.uk/Id/ods-organization-code',
  'https://fhir.nhs.uk/Id/ods-site-code#',
  'urn:oid:2.16.840.1.113883.2.1.4.3',
  'https://example.org/local-organisation-id',
];
const EVIL_ODS = 'EVIL9';
const EVIL_ID = 'e0e0e0e0-0000-4000-8000-000000000bad';

// ---------------------------------------------------------------------------------------------
// Bases: real fixtures when ../shared is there, builder messages always (the only JSON source).

interface Base {
  name: string;
  format: 'xml' | 'json';
  text: string;
  senderRef: string;
  receiverRef: string | undefined;
  senderOds: string;
  messageId: string;
  /** Policy under which the base itself is accepted (the MIRC fixture's references dangle). */
  policy: 'refuse' | 'allow';
}

function baseOf(name: string, bytes: Uint8Array, format: 'xml' | 'json'): Base {
  const msg = parseBundle(bytes, format);
  const policy = gatewayRead(bytes, format).accepted ? 'refuse' : 'allow';
  return {
    name,
    format,
    text: decoder.decode(bytes),
    senderRef: msg.header.senderRef as string,
    receiverRef: msg.header.receiverRef,
    senderOds: msg.header.senderOds as string,
    messageId: msg.header.id,
    policy,
  };
}

const fixtures = fixturesDir();
if (fixtures === undefined) {
  console.warn('[differential] ../shared/fixtures/itk3 is absent: XML bases are builder messages only');
}
const FIXTURE_NAMES = [
  'consultation_report.xml',
  'engage_hettie_winters_imms.xml',
  'engage_jack_smith_mirc.xml',
];
const built = (format: 'xml' | 'json', receiver: boolean): Base =>
  baseOf(
    `built ${format}${receiver ? '' : ' (no receiver)'}`,
    buildItk3Message(buildOptions({ format, ...(receiver ? {} : { receiverOds: undefined }) })),
    format,
  );
const XML_BASES: Base[] = [
  ...(fixtures === undefined
    ? []
    : FIXTURE_NAMES.map((n) => baseOf(n, new Uint8Array(readFileSync(path.join(fixtures, n))), 'xml'))),
  built('xml', true),
  built('xml', false),
];
const JSON_BASES: Base[] = [built('json', true), built('json', false)];

// ---------------------------------------------------------------------------------------------
// XML mutations: string surgery on the real text, located by top-level entry.

interface Span {
  start: number;
  end: number;
}

/** Spans of the top-level `<entry>…</entry>` elements (nested document entries skipped). */
function topEntries(text: string): Span[] {
  const spans: Span[] = [];
  let depth = 0;
  let start = 0;
  for (const m of text.matchAll(/<(\/?)entry\b[^>]*>/g)) {
    if (m[1] === '') {
      if (depth === 0) start = m.index;
      depth += 1;
    } else {
      depth -= 1;
      if (depth === 0) spans.push({ start, end: m.index + m[0].length });
    }
  }
  return spans;
}

const slice = (text: string, s: Span): string => text.slice(s.start, s.end);
const insertAt = (text: string, at: number, what: string): string =>
  text.slice(0, at) + what + text.slice(at);

function entryWithFullUrl(text: string, fullUrl: string): Span | undefined {
  return topEntries(text).find((s) => slice(text, s).includes(`<fullUrl value="${fullUrl}"/>`));
}

type XmlMutation =
  | { kind: 'foreign-entry'; ns: string; prefixed: boolean }
  | { kind: 'prefixed-attr'; target: 'sender-ods' | 'message-id'; ns: string }
  | { kind: 'duplicate-fullurl'; before: boolean }
  | { kind: 'extra-identifier'; system: string; before: boolean; receiver: boolean }
  | { kind: 'near-miss-system'; system: string; receiver: boolean }
  | { kind: 'reorder'; a: number; b: number }
  | { kind: 'move-header' }
  | { kind: 'comment'; at: number; body: string }
  | { kind: 'cdata'; at: number }
  | { kind: 'whitespace'; at: number; ws: string }
  | { kind: 'bom' }
  | { kind: 'char-ref'; hex: boolean; where: 'sender-ods' | 'sender-ref' }
  | { kind: 'text-node' }
  | { kind: 'narrative'; hostile: boolean }
  | { kind: 'repeat-id' }
  | { kind: 'redeclare-fhir' }
  | { kind: 'amp-in-fullurl' };

const nsArb = fc.constantFrom(
  'urn:x-evil',
  `${FHIR_NS}/`,
  'http://HL7.org/fhir',
  '',
  'http://www.w3.org/1999/xhtml',
);
const xmlMutationArb: fc.Arbitrary<XmlMutation> = fc.oneof(
  fc.record({ kind: fc.constant('foreign-entry' as const), ns: nsArb, prefixed: fc.boolean() }),
  fc.record({
    kind: fc.constant('prefixed-attr' as const),
    target: fc.constantFrom('sender-ods' as const, 'message-id' as const),
    ns: fc.constantFrom(FHIR_NS, 'urn:x-evil'),
  }),
  fc.record({ kind: fc.constant('duplicate-fullurl' as const), before: fc.boolean() }),
  fc.record({
    kind: fc.constant('extra-identifier' as const),
    system: fc.constantFrom(ODS_ORG, ODS_SITE, ...NEAR_MISS_SYSTEMS),
    before: fc.boolean(),
    receiver: fc.boolean(),
  }),
  fc.record({
    kind: fc.constant('near-miss-system' as const),
    system: fc.constantFrom(...NEAR_MISS_SYSTEMS),
    receiver: fc.boolean(),
  }),
  fc.record({ kind: fc.constant('reorder' as const), a: fc.nat(), b: fc.nat() }),
  fc.constant({ kind: 'move-header' as const }),
  fc.record({
    kind: fc.constant('comment' as const),
    at: fc.nat(),
    body: fc.constantFrom(' note ', `<entry><fullUrl value="urn:uuid:${EVIL_ID}"/></entry>`, '&#65; &amp;'),
  }),
  fc.record({ kind: fc.constant('cdata' as const), at: fc.nat() }),
  fc.record({
    kind: fc.constant('whitespace' as const),
    at: fc.nat(),
    ws: fc.constantFrom(' ', '\n\t', '\r\n  '),
  }),
  fc.constant({ kind: 'bom' as const }),
  fc.record({
    kind: fc.constant('char-ref' as const),
    hex: fc.boolean(),
    where: fc.constantFrom('sender-ods' as const, 'sender-ref' as const),
  }),
  fc.constant({ kind: 'text-node' as const }),
  fc.record({ kind: fc.constant('narrative' as const), hostile: fc.boolean() }),
  fc.constant({ kind: 'repeat-id' as const }),
  fc.constant({ kind: 'redeclare-fhir' as const }),
  fc.constant({ kind: 'amp-in-fullurl' as const }),
);

/** The sender (or receiver) Organization entry and the span of its first identifier. */
function orgIdentifier(
  text: string,
  base: Base,
  receiver: boolean,
): { entry: Span; identifier: Span } | undefined {
  const ref = receiver ? base.receiverRef : base.senderRef;
  const entry = ref === undefined ? undefined : entryWithFullUrl(text, ref);
  if (entry === undefined) return undefined;
  const body = slice(text, entry);
  const open = body.indexOf('<identifier>');
  const close = body.indexOf('</identifier>', open);
  if (open < 0 || close < 0) return undefined;
  return {
    entry,
    identifier: { start: entry.start + open, end: entry.start + close + '</identifier>'.length },
  };
}

function mutateXml(text: string, base: Base, m: XmlMutation): string {
  const entries = topEntries(text);
  const header = entries[0];
  if (header === undefined) return text;
  switch (m.kind) {
    case 'foreign-entry': {
      // A copy of the real header naming another organisation, in a namespace the gateway ignored.
      const evilOrg = `urn:uuid:${EVIL_ID.replace('bad', 'b0b')}`;
      const open = m.prefixed ? `<x:entry xmlns:x="${m.ns}">` : `<entry xmlns="${m.ns}">`;
      const close = m.prefixed ? '</x:entry>' : '</entry>';
      const evilHeader = slice(text, header)
        .replace(/^<entry[^>]*>/, open)
        .replace(/<\/entry>$/, close)
        .replace(`value="${base.messageId}"`, `value="${EVIL_ID}"`)
        .replace(`value="${base.senderRef}"`, `value="${evilOrg}"`);
      const evilOrgEntry = `${open}<fullUrl value="${evilOrg}"/><resource><Organization><identifier><system value="${ODS_ORG}"/><value value="${EVIL_ODS}"/></identifier></Organization></resource>${close}`;
      return insertAt(text, header.start, evilHeader + evilOrgEntry);
    }
    case 'prefixed-attr': {
      const target =
        m.target === 'sender-ods' ? `<value value="${base.senderOds}"` : `<id value="${base.messageId}"`;
      const evil = m.target === 'sender-ods' ? EVIL_ODS : EVIL_ID;
      return text.replace(target, `${target} xmlns:p="${m.ns}" p:value="${evil}"`);
    }
    case 'duplicate-fullurl': {
      const org = entryWithFullUrl(text, base.senderRef);
      if (org === undefined) return text;
      const copy = slice(text, org).replace(`value="${base.senderOds}"`, `value="${EVIL_ODS}"`);
      return insertAt(text, m.before ? header.end : (entries[entries.length - 1] as Span).end, copy);
    }
    case 'extra-identifier': {
      const found = orgIdentifier(text, base, m.receiver);
      if (found === undefined) return text;
      const extra = `<identifier><system value="${m.system}"/><value value="${EVIL_ODS}"/></identifier>`;
      return insertAt(text, m.before ? found.identifier.start : found.identifier.end, extra);
    }
    case 'near-miss-system': {
      const found = orgIdentifier(text, base, m.receiver);
      if (found === undefined) return text;
      const identifier = slice(text, found.identifier).replace(
        /<system value="[^"]*"\/>/,
        `<system value="${m.system}"/>`,
      );
      return text.slice(0, found.identifier.start) + identifier + text.slice(found.identifier.end);
    }
    case 'reorder': {
      // Swap two entries after the header: allowed, and must not change any fact.
      if (entries.length < 3) return text;
      const i = 1 + (m.a % (entries.length - 1));
      const j = 1 + (m.b % (entries.length - 1));
      if (i === j) return text;
      const [lo, hi] =
        i < j ? [entries[i] as Span, entries[j] as Span] : [entries[j] as Span, entries[i] as Span];
      return (
        text.slice(0, lo.start) +
        slice(text, hi) +
        text.slice(lo.end, hi.start) +
        slice(text, lo) +
        text.slice(hi.end)
      );
    }
    case 'move-header': {
      const last = entries[entries.length - 1] as Span;
      if (last === header) return text;
      const moved = text.slice(0, header.start) + text.slice(header.end, last.end) + slice(text, header);
      return moved + text.slice(last.end);
    }
    case 'comment':
    case 'whitespace': {
      // After the n-th tag end inside the root (before it would put text outside the document).
      const ends = [...text.matchAll(/>/g)].map((x) => x.index + 1);
      const rootOpen = text.indexOf('<Bundle');
      const inside = ends.filter((e) => e > rootOpen && e < text.lastIndexOf('</Bundle>'));
      const at = inside[m.at % inside.length] as number;
      return insertAt(text, at, m.kind === 'comment' ? `<!--${m.body}-->` : m.ws);
    }
    case 'cdata': {
      const opens = [...text.matchAll(/<(sender|event|identifier|MessageHeader)>/g)];
      const target = opens[m.at % opens.length];
      if (target === undefined) return text;
      return insertAt(text, target.index + target[0].length, `<![CDATA[${EVIL_ODS}]]>`);
    }
    case 'bom':
      return `\uFEFF${text}`;
    case 'char-ref': {
      const value = m.where === 'sender-ods' ? base.senderOds : base.senderRef;
      const code = value.charCodeAt(0);
      const ref = m.hex ? `&#x${code.toString(16)};` : `&#${code};`;
      return text.replace(`value="${value}"`, `value="${ref}${value.slice(1)}"`);
    }
    case 'text-node':
      return text.replace(
        `<value value="${base.senderOds}"/>`,
        `<value value="${base.senderOds}">${EVIL_ODS}</value>`,
      );
    case 'narrative': {
      const body = m.hostile
        ? `<entry><resource><MessageHeader><id value="${EVIL_ID}"/></MessageHeader></resource></entry>`
        : '<p>Sent by <b>the practice</b> &amp; read by you</p>';
      const narrative = `<text><status value="generated"/><div xmlns="http://www.w3.org/1999/xhtml">${body}</div></text>`;
      return text.replace('<MessageHeader>', `<MessageHeader>${narrative}`);
    }
    case 'repeat-id':
      return text.replace(
        `<id value="${base.messageId}"/>`,
        `<id value="${base.messageId}"/><id value="${EVIL_ID}"/>`,
      );
    case 'redeclare-fhir':
      return text.replace('<entry>', `<entry xmlns="${FHIR_NS}">`);
    case 'amp-in-fullurl': {
      const org = entryWithFullUrl(text, base.senderRef);
      if (org === undefined) return text;
      const copy = slice(text, org)
        .replace(`<fullUrl value="${base.senderRef}"/>`, `<fullUrl value="${base.senderRef}&amp;x"/>`)
        .replace(`value="${base.senderOds}"`, `value="${EVIL_ODS}"`);
      return insertAt(text, header.end, copy);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// JSON mutations: on the parsed object (and a few on the text).

type Json = Record<string, unknown>;

type JsonMutation =
  | { kind: 'duplicate-fullurl'; before: boolean }
  | { kind: 'extra-identifier'; system: string; before: boolean; receiver: boolean }
  | { kind: 'near-miss-system'; system: string; receiver: boolean }
  | { kind: 'fhir-comments'; onHeader: boolean }
  | { kind: 'foreign-key'; key: string }
  | { kind: 'reorder'; a: number; b: number }
  | { kind: 'move-header' }
  | { kind: 'fullurl-list' }
  | { kind: 'identifier-object' }
  | { kind: 'primitive-extension' }
  | { kind: 'indent'; by: number }
  | { kind: 'bom' }
  | { kind: 'duplicate-key' }
  | { kind: 'relative-sender' }
  | { kind: 'numeric-ods' }
  | { kind: 'non-string-id'; value: number | boolean | null | Json };

const jsonMutationArb: fc.Arbitrary<JsonMutation> = fc.oneof(
  fc.record({ kind: fc.constant('duplicate-fullurl' as const), before: fc.boolean() }),
  fc.record({
    kind: fc.constant('extra-identifier' as const),
    system: fc.constantFrom(ODS_ORG, ODS_SITE, ...NEAR_MISS_SYSTEMS),
    before: fc.boolean(),
    receiver: fc.boolean(),
  }),
  fc.record({
    kind: fc.constant('near-miss-system' as const),
    system: fc.constantFrom(...NEAR_MISS_SYSTEMS),
    receiver: fc.boolean(),
  }),
  fc.record({ kind: fc.constant('fhir-comments' as const), onHeader: fc.boolean() }),
  fc.record({
    kind: fc.constant('foreign-key' as const),
    key: fc.constantFrom('@id', 'entry ', 'sender_', '$ref', ''),
  }),
  fc.record({ kind: fc.constant('reorder' as const), a: fc.nat(), b: fc.nat() }),
  fc.constant({ kind: 'move-header' as const }),
  fc.constant({ kind: 'fullurl-list' as const }),
  fc.constant({ kind: 'identifier-object' as const }),
  fc.constant({ kind: 'primitive-extension' as const }),
  fc.record({ kind: fc.constant('indent' as const), by: fc.integer({ min: 0, max: 4 }) }),
  fc.constant({ kind: 'bom' as const }),
  fc.constant({ kind: 'duplicate-key' as const }),
  fc.constant({ kind: 'relative-sender' as const }),
  fc.constant({ kind: 'numeric-ods' as const }),
  fc.record({
    kind: fc.constant('non-string-id' as const),
    value: fc.constantFrom<number | boolean | null | Json>(12345, true, null, { value: 'x' }),
  }),
);

interface JsonDoc {
  bundle: Json;
  indent: number;
  bom: boolean;
  duplicateKey: boolean;
}

function entriesOf(bundle: Json): Json[] {
  return bundle.entry as Json[];
}

function orgEntry(doc: JsonDoc, base: Base, receiver: boolean): Json | undefined {
  const ref = receiver ? base.receiverRef : base.senderRef;
  return entriesOf(doc.bundle).find((e) => e.fullUrl === ref);
}

/** The identifier list of the sender's (or receiver's) Organization, when it is still a list. */
function identifiersOf(doc: JsonDoc, base: Base, receiver: boolean): Json[] | undefined {
  const identifiers = (orgEntry(doc, base, receiver)?.resource as Json | undefined)?.identifier;
  return Array.isArray(identifiers) ? (identifiers as Json[]) : undefined;
}

function mutateJson(doc: JsonDoc, base: Base, m: JsonMutation): void {
  const entries = entriesOf(doc.bundle);
  const header = (entries[0] as Json).resource as Json;
  switch (m.kind) {
    case 'duplicate-fullurl': {
      const org = orgEntry(doc, base, false);
      if (org === undefined) return;
      const copy = structuredClone(org);
      (copy.resource as Json).identifier = [{ system: ODS_ORG, value: EVIL_ODS }];
      entries.splice(m.before ? 1 : entries.length, 0, copy);
      return;
    }
    case 'extra-identifier': {
      const identifiers = identifiersOf(doc, base, m.receiver);
      identifiers?.splice(m.before ? 0 : identifiers.length, 0, { system: m.system, value: EVIL_ODS });
      return;
    }
    case 'near-miss-system': {
      const identifiers = identifiersOf(doc, base, m.receiver);
      if (identifiers?.[0]) identifiers[0].system = m.system;
      return;
    }
    case 'fhir-comments':
      (m.onHeader ? header : doc.bundle).fhir_comments = ['a comment'];
      return;
    case 'foreign-key':
      header[m.key] = { reference: 'urn:uuid:ffffffff-0000-4000-8000-000000000000' };
      return;
    case 'reorder': {
      if (entries.length < 3) return;
      const i = 1 + (m.a % (entries.length - 1));
      const j = 1 + (m.b % (entries.length - 1));
      [entries[i], entries[j]] = [entries[j] as Json, entries[i] as Json];
      return;
    }
    case 'move-header':
      entries.push(entries.shift() as Json);
      return;
    case 'fullurl-list': {
      const org = orgEntry(doc, base, false);
      if (org !== undefined) org.fullUrl = [org.fullUrl, 'urn:uuid:ffffffff-0000-4000-8000-000000000001'];
      return;
    }
    case 'identifier-object': {
      const resource = orgEntry(doc, base, false)?.resource as Json | undefined;
      if (resource && Array.isArray(resource.identifier)) resource.identifier = resource.identifier[0];
      return;
    }
    case 'primitive-extension':
      header._id = { extension: [{ url: 'https://example.org/x', valueString: EVIL_ID }] };
      return;
    case 'indent':
      doc.indent = m.by;
      return;
    case 'bom':
      doc.bom = true;
      return;
    case 'duplicate-key':
      doc.duplicateKey = true;
      return;
    case 'relative-sender': {
      const sender = header.sender as Json | undefined;
      if (sender === undefined) return;
      const id = ((orgEntry(doc, base, false)?.resource as Json | undefined)?.id as string) ?? 'x';
      sender.reference = `Organization/${id}`;
      return;
    }
    case 'non-string-id': {
      // The document Bundle's id as a number, boolean, null or object: a reader stringifies it.
      const focus = (header.focus as Json | undefined)?.reference;
      const document = entries.find((e) => e.fullUrl === focus)?.resource as Json | undefined;
      if (document) document.id = m.value;
      return;
    }
    case 'numeric-ods': {
      const identifiers = identifiersOf(doc, base, false);
      if (identifiers?.[0]) identifiers[0].value = 12345;
      return;
    }
  }
}

function renderJson(doc: JsonDoc): string {
  let text = JSON.stringify(doc.bundle, null, doc.indent);
  if (doc.duplicateKey) {
    // JSON.parse keeps the last of two equal names: the gateway must never see the first.
    text = text.replace('"resourceType":"MessageHeader"', `"resourceType":"MessageHeader","id":"${EVIL_ID}"`);
    text = text.replace(
      /"resourceType": "MessageHeader"/,
      `"resourceType": "MessageHeader", "id": "${EVIL_ID}"`,
    );
  }
  return doc.bom ? `\uFEFF${text}` : text;
}

// ---------------------------------------------------------------------------------------------
// The property.

interface Tally {
  accepted: number;
  refused: Map<string, number>;
}

const newTally = (): Tally => ({ accepted: 0, refused: new Map() });

async function expectOneView(
  bytes: Uint8Array,
  format: 'xml' | 'json',
  policy: 'refuse' | 'allow',
  tally: Tally,
): Promise<void> {
  const gateway = gatewayRead(bytes, format, policy);
  if (!gateway.accepted) {
    tally.refused.set(gateway.code, (tally.refused.get(gateway.code) ?? 0) + 1);
    expect(ONE_VIEW_OR_HEADER_CODES).toContain(gateway.code);
    return;
  }
  tally.accepted += 1;
  // What a recipient holds is the delivered bytes, decoded the usual way.
  const text = Buffer.from(bytes).toString('utf8');
  const readers: [string, HeaderFacts][] =
    format === 'xml'
      ? [
          ['fast-xml-parser', fastXmlRead(text)],
          ['fast-xml-parser removeNSPrefix', fastXmlRead(text, { removeNSPrefix: true })],
          ['xml2js', await xml2jsRead(text)],
        ]
      : [
          ['JSON.parse walk', jsonRead(text)],
          ['JSON.parse first items', jsonReadFirstItems(text)],
        ];
  for (const [reader, facts] of readers) expect(facts, reader).toEqual(gateway.facts);
}

/** Codes a mutated message may be refused with: the one-view codes and ordinary header rules. */
const ONE_VIEW_OR_HEADER_CODES = [
  'BUNDLE_BYTE_ORDER_MARK',
  'BUNDLE_FOREIGN_CONTENT',
  'BUNDLE_AMBIGUOUS',
  'DUPLICATE_FULL_URL',
  'ODS_IDENTIFIER_AMBIGUOUS',
  'REFERENCE_UNRESOLVED',
  'ITK3_HEADER_INVALID',
  'BUNDLE_UNREADABLE',
];

describe('differential: every accepted variant reads the same to the gateway and to common parsers', () => {
  it('XML: fixtures and built messages under hostile and benign mutations', async () => {
    const tally = newTally();
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...XML_BASES),
        fc.array(xmlMutationArb, { minLength: 0, maxLength: 3 }),
        async (base, mutations) => {
          let text = base.text;
          for (const m of mutations) text = mutateXml(text, base, m);
          await expectOneView(encoder.encode(text), 'xml', base.policy, tally);
        },
      ),
      { numRuns: 250 },
    );
    // Not vacuous: many variants got through and were compared, many hostile ones were refused.
    expect(tally.accepted).toBeGreaterThan(25);
    for (const code of ['BUNDLE_FOREIGN_CONTENT', 'DUPLICATE_FULL_URL', 'ODS_IDENTIFIER_AMBIGUOUS']) {
      expect(tally.refused.get(code) ?? 0, code).toBeGreaterThan(0);
    }
  });

  it('JSON: built messages under hostile and benign mutations', async () => {
    const tally = newTally();
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...JSON_BASES),
        fc.array(jsonMutationArb, { minLength: 0, maxLength: 3 }),
        async (base, mutations) => {
          const doc: JsonDoc = {
            bundle: JSON.parse(base.text) as Json,
            indent: 0,
            bom: false,
            duplicateKey: false,
          };
          for (const m of mutations) mutateJson(doc, base, m);
          await expectOneView(encoder.encode(renderJson(doc)), 'json', base.policy, tally);
        },
      ),
      { numRuns: 250 },
    );
    expect(tally.accepted).toBeGreaterThan(25);
    for (const code of ['BUNDLE_FOREIGN_CONTENT', 'DUPLICATE_FULL_URL', 'ODS_IDENTIFIER_AMBIGUOUS']) {
      expect(tally.refused.get(code) ?? 0, code).toBeGreaterThan(0);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// The reported attacks, one by one: real (a common reader is fooled) and refused (specific code).

describe('differential: the reported attacks fool a common reader and are refused', () => {
  const base = XML_BASES.find((b) => b.policy === 'refuse' && b.receiverRef !== undefined) as Base;
  const jsonBase = JSON_BASES.find((b) => b.receiverRef !== undefined) as Base;

  const xmlCases: [string, XmlMutation[], string][] = [
    [
      'foreign-namespace entry before the real header',
      [{ kind: 'foreign-entry', ns: 'urn:x-evil', prefixed: false }],
      'BUNDLE_FOREIGN_CONTENT',
    ],
    [
      'prefixed duplicate attribute on the sender ODS code',
      [{ kind: 'prefixed-attr', target: 'sender-ods', ns: FHIR_NS }],
      'BUNDLE_FOREIGN_CONTENT',
    ],
    [
      'second entry with the sender Organization fullUrl',
      [{ kind: 'duplicate-fullurl', before: true }],
      'DUPLICATE_FULL_URL',
    ],
    [
      'second ODS identifier before the real one',
      [{ kind: 'extra-identifier', system: ODS_SITE, before: true, receiver: false }],
      'ODS_IDENTIFIER_AMBIGUOUS',
    ],
    [
      'receiver identifier under a near-miss system',
      [{ kind: 'extra-identifier', system: NEAR_MISS_SYSTEMS[0] as string, before: true, receiver: true }],
      'ODS_IDENTIFIER_AMBIGUOUS',
    ],
  ];

  for (const [attack, mutations, code] of xmlCases) {
    it(`XML: ${attack} → ${code} (20006)`, async () => {
      let text = base.text;
      for (const m of mutations) text = mutateXml(text, base, m);
      const original = gatewayRead(encoder.encode(base.text), 'xml');
      if (!original.accepted) throw new Error('base must be accepted');
      // The attack is real: at least one common reader reads another sender, receiver or id.
      const readings = [
        fastXmlRead(text),
        fastXmlRead(text, { removeNSPrefix: true }),
        await xml2jsRead(text),
      ];
      expect(readings.some((r) => JSON.stringify(r) !== JSON.stringify(original.facts))).toBe(true);
      expect(gatewayRead(encoder.encode(text), 'xml')).toEqual({ accepted: false, code });
    });
  }

  const jsonCases: [string, JsonMutation, string][] = [
    [
      'second entry with the sender Organization fullUrl',
      { kind: 'duplicate-fullurl', before: true },
      'DUPLICATE_FULL_URL',
    ],
    [
      'second ODS identifier before the real one',
      { kind: 'extra-identifier', system: ODS_ORG, before: true, receiver: false },
      'ODS_IDENTIFIER_AMBIGUOUS',
    ],
    [
      'receiver identifier under a near-miss system first',
      { kind: 'extra-identifier', system: NEAR_MISS_SYSTEMS[2] as string, before: true, receiver: true },
      'ODS_IDENTIFIER_AMBIGUOUS',
    ],
  ];
  for (const [attack, mutation, code] of jsonCases) {
    it(`JSON: ${attack} → ${code} (20006)`, () => {
      const doc: JsonDoc = {
        bundle: JSON.parse(jsonBase.text) as Json,
        indent: 0,
        bom: false,
        duplicateKey: false,
      };
      mutateJson(doc, jsonBase, mutation);
      const text = renderJson(doc);
      const original = gatewayRead(encoder.encode(jsonBase.text), 'json');
      if (!original.accepted) throw new Error('base must be accepted');
      const readings = [jsonRead(text), jsonReadFirstItems(text)];
      expect(readings.some((r) => JSON.stringify(r) !== JSON.stringify(original.facts))).toBe(true);
      expect(gatewayRead(encoder.encode(text), 'json')).toEqual({ accepted: false, code });
    });
  }
});
