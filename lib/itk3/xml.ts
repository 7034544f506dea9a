/**
 * Hardened XML reading: a strict SAX parse (saxes) into a small element tree.
 *
 * Refused, whatever the content: a DOCTYPE (so no entity can ever be declared, hence no "billion
 * laughs" and no external entity), entities other than the five predefined ones and numeric
 * references (saxes fails on any other), processing instructions other than the XML declaration,
 * an encoding other than UTF-8, nesting, element and attribute counts above fixed caps. Only
 * FHIR-namespace elements are kept (name, unprefixed attributes, children); narrative XHTML and
 * text are counted but dropped, since the header walk never needs them.
 */
import { SaxesParser } from 'saxes';
import { FHIR_NS } from './constants.js';

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

/** Thrown for any refusal; the message is ours and static (never document content). */
export class XmlRefusal extends Error {}

/**
 * Parse an XML string under the given caps. Throws {@link XmlRefusal} on anything refused or not
 * well-formed; the caller maps that to an ITK3 code.
 */
export function readXml(text: string, limits: XmlLimits): XmlDocument {
  const parser = new SaxesParser({ xmlns: true, position: false });
  // null marks an element that is counted but not kept (non-FHIR namespace, or below one).
  const stack: (XmlElement | null)[] = [];
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
    if (depth > limits.maxDepth) throw new XmlRefusal('XML nesting too deep');
    if (elements > limits.maxElements) throw new XmlRefusal('XML has too many elements');
  });
  parser.on('attribute', () => {
    attributes += 1;
    attributesHere += 1;
    if (attributesHere > limits.maxAttributesPerElement) {
      throw new XmlRefusal('XML element has too many attributes');
    }
    if (attributes > limits.maxAttributes) throw new XmlRefusal('XML has too many attributes');
  });
  parser.on('opentag', (tag) => {
    const parent = stack.length === 0 ? undefined : stack[stack.length - 1];
    const isRoot = stack.length === 0;
    if (isRoot) {
      rootName = tag.local;
      rootNs = tag.uri;
    }
    // Keep an element only when it is FHIR and its parent was kept (or it is the root).
    if (tag.uri !== FHIR_NS || (!isRoot && (parent === null || parent === undefined))) {
      stack.push(null);
      return;
    }
    const attrs: Record<string, string> = Object.create(null);
    for (const attr of Object.values(tag.attributes)) {
      if (attr.prefix === '' && attr.local !== 'xmlns') attrs[attr.local] = attr.value;
    }
    const element: XmlElement = { name: tag.local, attrs, children: [] };
    if (isRoot) root = element;
    else parent?.children.push(element);
    stack.push(element);
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
