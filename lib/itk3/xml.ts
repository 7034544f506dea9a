/**
 * Hardened XML reading: a strict SAX parse (saxes) into a small element tree.
 *
 * Refused, whatever the content: a DOCTYPE (so no entity can ever be declared, hence no "billion
 * laughs" and no external entity), entities other than the five predefined ones and numeric
 * references (saxes fails on any other), processing instructions other than the XML declaration,
 * an encoding other than UTF-8, nesting, element and attribute counts above fixed caps.
 *
 * One view of the message: when the root is FHIR, everything a namespace-unaware reader
 * (fast-xml-parser, xml2js with defaults) would see differently from this reader is refused, not
 * dropped — an element outside the FHIR namespace (except the XHTML of `text/div`), a prefixed
 * element, a prefixed attribute (namespace declarations aside; `xml:*` inside the narrative), a
 * repeated attribute, text or CDATA inside a FHIR element, and a numeric character reference to a
 * printable ASCII character (common readers leave `&#65;` undecoded). Only FHIR elements are kept
 * (name, unprefixed attributes, children); narrative XHTML and text are checked but dropped.
 */
import { SaxesParser } from 'saxes';
import { FHIR_NS } from './constants.js';
import { readXmlFast } from './xml-fast.js';

/** Namespace of the narrative `div` (FHIR Narrative.div). */
const XHTML_NS = 'http://www.w3.org/1999/xhtml';
/** Namespace bound to the `xml` prefix (`xml:lang`). */
const XML_NS = 'http://www.w3.org/XML/1998/namespace';

/** One kept element. `attrs` holds unprefixed attributes only (`value`, `url`, `id`). */
export interface XmlElement {
  readonly name: string;
  readonly attrs: Readonly<Record<string, string>>;
  readonly children: XmlElement[];
}

/** Caps that bound time and memory whatever the input. */
export interface XmlLimits {
  /** Maximum element nesting depth (the root is depth 1). */
  readonly maxDepth: number;
  /** Maximum number of elements in the document. */
  readonly maxElements: number;
  /** Maximum number of attributes in the document. */
  readonly maxAttributes: number;
  /** Maximum number of attributes on one element. */
  readonly maxAttributesPerElement: number;
}

/** What the reader found: the root's name and namespace, and the FHIR tree when the root is FHIR. */
export interface XmlDocument {
  readonly rootName: string;
  readonly rootNs: string;
  /** Undefined when the root element is not in the FHIR namespace. */
  readonly root: XmlElement | undefined;
}

/** Why a readable FHIR document is refused: it could be read two ways. */
export type XmlAmbiguityKind = 'foreign-content' | 'ambiguous';

/** Thrown for any refusal; the message is ours and static (never document content). */
export class XmlRefusal extends Error {}

/**
 * Well-formed XML with a FHIR root that a namespace-unaware reader would read differently:
 * `foreign-content` (namespaces, prefixes, text, CDATA) or `ambiguous` (repeated attribute,
 * obfuscating character reference). The caller maps it to ITK3 20006, not "unreadable".
 */
export class XmlAmbiguity extends XmlRefusal {
  constructor(
    readonly kind: XmlAmbiguityKind,
    message: string,
  ) {
    super(message);
  }
}

/** What an open element is: kept FHIR, narrative XHTML, or anything under a non-FHIR root. */
type Frame = XmlElement | 'xhtml' | 'foreign';

/**
 * Parse an XML string under the given caps. Throws {@link XmlRefusal} on anything refused or not
 * well-formed; the caller maps that to an ITK3 code.
 */
export function readXml(text: string, limits: XmlLimits, fastPath = true): XmlDocument {
  // The common, plain FHIR document in one fast pass; anything it does not vouch for is read by
  // saxes, which alone refuses (xml-fast.ts). `fastPath` false is for the differential tests.
  const doc = (fastPath ? readXmlFast(text, limits) : undefined) ?? readXmlSaxes(text, limits);
  if (doc.root !== undefined) refuseObfuscatingReferences(text);
  return doc;
}

/**
 * The saxes reader with every refusal rule of this file except the character-reference check,
 * which {@link readXml} runs after either reader. Exported for the fast path's differential test.
 */
export function readXmlSaxes(text: string, limits: XmlLimits): XmlDocument {
  const parser = new SaxesParser({ xmlns: true, position: false });
  const stack: Frame[] = [];
  // Qualified names of the attributes of the element being opened (a repeat is refused).
  let attributeNames = new Set<string>();
  let depth = 0;
  let elements = 0;
  let attributes = 0;
  let attributesHere = 0;
  let rootName = '';
  let rootNs = '';
  let root: XmlElement | undefined;

  parser.on('xmldecl', (decl) => {
    if (decl.version !== '1.0') throw new XmlRefusal('XML version is not 1.0');
    if (decl.encoding !== undefined && decl.encoding.toLowerCase() !== 'utf-8') {
      throw new XmlRefusal('XML encoding is not UTF-8');
    }
  });
  parser.on('doctype', () => {
    throw new XmlRefusal('XML has a DOCTYPE');
  });
  parser.on('processinginstruction', () => {
    throw new XmlRefusal('XML has a processing instruction');
  });
  parser.on('opentagstart', () => {
    depth += 1;
    elements += 1;
    attributesHere = 0;
    attributeNames = new Set<string>();
    if (depth > limits.maxDepth) throw new XmlRefusal('XML nesting too deep');
    if (elements > limits.maxElements) throw new XmlRefusal('XML has too many elements');
  });
  parser.on('attribute', (attr) => {
    // Checked here, before saxes' own duplicate check, so a repeat is "ambiguous", not unreadable.
    if (attributeNames.has(attr.name)) {
      throw new XmlAmbiguity('ambiguous', 'XML element repeats an attribute');
    }
    attributeNames.add(attr.name);
    attributes += 1;
    attributesHere += 1;
    if (attributesHere > limits.maxAttributesPerElement) {
      throw new XmlRefusal('XML element has too many attributes');
    }
    if (attributes > limits.maxAttributes) throw new XmlRefusal('XML has too many attributes');
  });
  parser.on('opentag', (tag) => {
    const parent = stack[stack.length - 1];
    if (parent === undefined) {
      rootName = tag.local;
      rootNs = tag.uri;
      // A non-FHIR root is not ITK3 at all (10009): read on, judge nothing.
      if (tag.uri !== FHIR_NS) {
        stack.push('foreign');
        return;
      }
    } else if (parent === 'foreign') {
      stack.push('foreign');
      return;
    }
    if (tag.prefix !== '') throw new XmlAmbiguity('foreign-content', 'XML element has a namespace prefix');
    const inNarrative =
      parent === 'xhtml' ||
      (parent !== undefined && tag.uri === XHTML_NS && tag.local === 'div' && parent.name === 'text');
    if (!inNarrative && tag.uri !== FHIR_NS) {
      throw new XmlAmbiguity('foreign-content', 'XML element is outside the FHIR namespace');
    }
    if (inNarrative && tag.uri !== XHTML_NS) {
      throw new XmlAmbiguity('foreign-content', 'XML narrative holds an element outside XHTML');
    }
    const byName = new Set<string>();
    const attrs: Record<string, string> = Object.create(null);
    for (const attr of Object.values(tag.attributes)) {
      const declaration = attr.prefix === 'xmlns' || (attr.prefix === '' && attr.local === 'xmlns');
      if (declaration) continue;
      if (attr.prefix !== '' && !(inNarrative && attr.uri === XML_NS)) {
        throw new XmlAmbiguity('foreign-content', 'XML attribute has a namespace prefix');
      }
      const expanded = `{${attr.uri}}${attr.local}`;
      if (byName.has(expanded)) throw new XmlAmbiguity('ambiguous', 'XML element repeats an attribute');
      byName.add(expanded);
      if (attr.prefix === '') attrs[attr.local] = attr.value;
    }
    if (inNarrative) {
      stack.push('xhtml');
      return;
    }
    const element: XmlElement = { name: tag.local, attrs, children: [] };
    if (parent === undefined) root = element;
    else if (typeof parent === 'object') parent.children.push(element);
    stack.push(element);
  });
  // FHIR elements carry values in attributes only: text a reader could take for a value is refused.
  parser.on('text', (content) => {
    const top = stack[stack.length - 1];
    if (typeof top === 'object' && !/^[ \t\r\n]*$/.test(content)) {
      throw new XmlAmbiguity('foreign-content', 'XML FHIR element holds text');
    }
  });
  parser.on('cdata', () => {
    const top = stack[stack.length - 1];
    if (typeof top === 'object') throw new XmlAmbiguity('foreign-content', 'XML FHIR element holds CDATA');
  });
  parser.on('closetag', () => {
    stack.pop();
    depth -= 1;
  });

  try {
    parser.write(text).close();
  } catch (error) {
    if (error instanceof XmlRefusal) throw error;
    // saxes messages may quote names from the document: keep none of it.
    throw new XmlRefusal('XML is not well-formed');
  }
  if (rootName === '') throw new XmlRefusal('XML has no root element');
  return { rootName, rootNs, root };
}

/** Characters that may be written as a numeric reference: the five XML specials. */
const ESCAPABLE_ASCII = new Set(['"', '&', "'", '<', '>'].map((c) => c.charCodeAt(0)));

/**
 * Refuse `&#65;`-style references to printable ASCII (space included) other than the five XML
 * specials: no encoder needs them, and readers that do not decode numeric references (such as
 * fast-xml-parser by default) would see another value. References to whitespace controls and to
 * non-ASCII characters stay allowed; values the header walk compares are checked to be plain ASCII
 * by the caller, so those can never differ between readers.
 */
function refuseObfuscatingReferences(text: string): void {
  // No `&#` anywhere, no numeric reference: most documents, and the copy below is then not made.
  // (Removing comments cannot join an `&` to a `#`: the document is well-formed, so an `&` always
  // starts a reference where it stands.)
  if (!text.includes('&#')) return;
  // Comments and CDATA hold no references (the document is known well-formed here).
  const markup = text.replace(/<!--[\s\S]*?-->|<!\[CDATA\[[\s\S]*?\]\]>/g, '');
  for (const match of markup.matchAll(/&#(x[0-9A-Fa-f]+|[0-9]+);/g)) {
    const digits = match[1] as string;
    const code = digits.startsWith('x') ? Number.parseInt(digits.slice(1), 16) : Number.parseInt(digits, 10);
    if (code >= 0x20 && code <= 0x7e && !ESCAPABLE_ASCII.has(code)) {
      throw new XmlAmbiguity('ambiguous', 'XML spells a plain character as a character reference');
    }
  }
}
