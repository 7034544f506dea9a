/**
 * A fast path for {@link import('./xml.js').readXml}: one hand-written pass over the narrow XML
 * subset a FHIR Bundle uses (PERFORMANCE.md, issue 14: the saxes pass was 30 % of the CPU of a
 * 63 KB message).
 *
 * It never refuses anything. It returns the tree only when it is certain that the strict saxes
 * reader would accept the document and build the same tree; on anything else — a DOCTYPE, a
 * processing instruction, CDATA, a prefix other than `xml:` in the narrative, a namespace
 * declaration with a prefix, text or a reference inside a FHIR element, a repeated attribute, a
 * name outside ASCII, a cap reached, a document that is not well-formed, a non-FHIR root — it
 * returns `undefined`, and the caller reads the document again with saxes, which refuses or
 * accepts it with exactly the codes and messages it always had. So every refusal rule stays in
 * one place (`xml.ts`); this file only has to be right about what it accepts.
 */
import { FHIR_NS } from './constants.js';
import type { XmlDocument, XmlElement, XmlLimits } from './xml.js';

const XHTML_NS = 'http://www.w3.org/1999/xhtml';

/**
 * Characters XML 1.0 forbids anywhere and surrogates that are not a pair; also C1 controls and
 * U+2028, which saxes treats specially (XML 1.1 line ends): those documents go to saxes.
 */
const INVALID_CHAR =
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it looks for.
  /[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F\u2028\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
/** The XML declaration as encoders write it: version 1.0, optional encoding and standalone. */
const XML_DECL =
  /^<\?xml[ \t\r\n]+version[ \t\r\n]*=[ \t\r\n]*(["'])1\.0\1(?:[ \t\r\n]+encoding[ \t\r\n]*=[ \t\r\n]*(["'])([A-Za-z][A-Za-z0-9._-]*)\2)?(?:[ \t\r\n]+standalone[ \t\r\n]*=[ \t\r\n]*(["'])(?:yes|no)\4)?[ \t\r\n]*\?>/;
/** A reference as XML allows it: the five predefined entities or a numeric character reference. */
const REFERENCE = /&(?:(lt|gt|amp|apos|quot)|#([0-9]{1,7})|#x([0-9A-Fa-f]{1,6}));/y;
/** What makes an attribute value need more than a slice: a whitespace control or a reference. */
const VALUE_SPECIAL = /[\t\n\r&]/g;
const PREDEFINED: Readonly<Record<string, string>> = { lt: '<', gt: '>', amp: '&', apos: "'", quot: '"' };

/**
 * The attributes of every element that has none: one frozen, prototype-less object (as saxes'
 * are), not a dictionary-mode object per element (≈ 190 bytes each).
 */
const NO_ATTRIBUTES: Readonly<Record<string, string>> = Object.freeze(Object.create(null));

/** One open element: the kept FHIR element, or narrative XHTML (checked, then dropped). */
interface Open {
  qname: string;
  /** Default namespace in scope for its children. */
  ns: string;
  kept: XmlElement | undefined;
}

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x09 || c === 0x0d;
}

/** `[A-Za-z_]` */
function isNameStart(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || c === 0x5f;
}

/** `[A-Za-z0-9._-]` */
function isNameChar(c: number): boolean {
  return isNameStart(c) || (c >= 0x30 && c <= 0x39) || c === 0x2e || c === 0x2d;
}

/**
 * End of the name without a colon (`[A-Za-z_][A-Za-z0-9._-]*`) that starts at `at`, or -1 when
 * none does. Names this path handles are ASCII with at most one colon; anything else goes to
 * saxes. Loops rather than a sticky regex: no match array per element and attribute.
 */
function localNameEnd(text: string, at: number): number {
  if (!isNameStart(text.charCodeAt(at))) return -1;
  let end = at + 1;
  while (isNameChar(text.charCodeAt(end))) end += 1;
  return end;
}

/** {@link localNameEnd} for a name that may carry one prefix (`prefix:local`). */
function nameEnd(text: string, at: number): number {
  const end = localNameEnd(text, at);
  if (end < 0 || text.charCodeAt(end) !== 0x3a) return end;
  const local = localNameEnd(text, end + 1);
  return local < 0 ? end : local;
}

function isXmlChar(code: number): boolean {
  return (
    code === 0x09 ||
    code === 0x0a ||
    code === 0x0d ||
    (code >= 0x20 && code <= 0xd7ff) ||
    (code >= 0xe000 && code <= 0xfffd) ||
    (code >= 0x10000 && code <= 0x10ffff)
  );
}

/** The first index of a fixed string at or after a position. */
type NextIndex = (from: number) => number;

/**
 * `text.indexOf(needle, from)` that remembers its last answer. The pass calls it with positions
 * that only grow, and an unbounded `indexOf` from every narrative text run rescanned the rest of
 * the document each time (quadratic in the narrative's size); remembered, each needle is found
 * once per occurrence. A smaller `from` than before simply searches again.
 */
function nextIndexOf(text: string, needle: string): NextIndex {
  let searchedFrom = Number.POSITIVE_INFINITY;
  let found = -1;
  return (from) => {
    // `found` is the first occurrence at or after `searchedFrom`, so also the first at or after
    // any `from` between the two; -1 means there is none after `searchedFrom`.
    if (from < searchedFrom || (found >= 0 && found < from)) {
      found = text.indexOf(needle, from);
      searchedFrom = from;
    }
    return found;
  };
}

/**
 * Decode the references in `text` between `from` and `to`, or return `undefined` if one is not
 * a reference XML allows. With `decode` false it only validates (and returns '').
 */
function references(
  text: string,
  from: number,
  to: number,
  decode: boolean,
  nextAmp: NextIndex = (at) => text.indexOf('&', at),
): string | undefined {
  let out = '';
  let last = from;
  let amp = nextAmp(from);
  while (amp >= 0 && amp < to) {
    REFERENCE.lastIndex = amp;
    const m = REFERENCE.exec(text);
    if (!m || REFERENCE.lastIndex > to) return undefined;
    let value: string;
    if (m[1] !== undefined) value = PREDEFINED[m[1]] as string;
    else {
      const code = m[2] !== undefined ? Number.parseInt(m[2], 10) : Number.parseInt(m[3] as string, 16);
      if (!isXmlChar(code)) return undefined;
      value = String.fromCodePoint(code);
    }
    if (decode) out += text.slice(last, amp) + value;
    last = REFERENCE.lastIndex;
    amp = nextAmp(last);
  }
  return decode ? out + text.slice(last, to) : '';
}

/**
 * Read `text` if it is a FHIR document in the subset described above; `undefined` means "not
 * judged here" (never "refused").
 */
export function readXmlFast(text: string, limits: XmlLimits): XmlDocument | undefined {
  if (INVALID_CHAR.test(text)) return undefined;
  const n = text.length;
  let i = 0;
  const decl = XML_DECL.exec(text);
  if (decl) {
    if (decl[3] !== undefined && decl[3].toLowerCase() !== 'utf-8') return undefined;
    i = decl[0].length;
  }
  const stack: Open[] = [];
  let root: XmlElement | undefined;
  let rootSeen = false;
  let elements = 0;
  let attributes = 0;
  const narrative: NarrativeSearch = { amp: nextIndexOf(text, '&'), cdataEnd: nextIndexOf(text, ']]>') };

  while (i < n) {
    const lt = text.indexOf('<', i);
    const textEnd = lt < 0 ? n : lt;
    if (textEnd > i && !textOk(text, i, textEnd, stack, narrative)) return undefined;
    if (lt < 0) break;
    i = lt + 1;
    const c = text.charCodeAt(i);
    if (c === 0x21) {
      // <!-- comment --> only; DOCTYPE and CDATA are saxes' to judge.
      if (!text.startsWith('!--', i)) return undefined;
      const end = text.indexOf('--', i + 3);
      if (end < 0 || text.charCodeAt(end + 2) !== 0x3e) return undefined;
      i = end + 3;
      continue;
    }
    if (c === 0x3f) return undefined; // a processing instruction
    if (c === 0x2f) {
      // </name S? >
      const open = stack.pop();
      if (!open || !text.startsWith(open.qname, i + 1)) return undefined;
      let j = i + 1 + open.qname.length;
      while (j < n && isSpace(text.charCodeAt(j))) j += 1;
      if (text.charCodeAt(j) !== 0x3e) return undefined;
      i = j + 1;
      continue;
    }
    // <name (S attr)* S? /?>
    if (rootSeen && stack.length === 0) return undefined; // a second root
    const qnameEnd = localNameEnd(text, i);
    if (qnameEnd < 0) return undefined;
    // A prefixed element (saxes refuses it), or a colon no name follows (not well-formed).
    if (text.charCodeAt(qnameEnd) === 0x3a) return undefined;
    const qname = text.slice(i, qnameEnd);
    i = qnameEnd;
    elements += 1;
    if (elements > limits.maxElements || stack.length + 1 > limits.maxDepth) return undefined;

    const parent = stack[stack.length - 1];
    let ns = parent?.ns ?? '';
    let declaredNs: string | undefined;
    // Made on the first unprefixed attribute: most elements have none, and share NO_ATTRIBUTES.
    let attrs: Record<string, string> | undefined;
    let attributesHere = 0;
    // `xml:lang` is the one `xml:` attribute this path reads; where it may stand is judged below.
    let xmlLang = false;
    let selfClosing = false;
    for (;;) {
      const before = i;
      while (i < n && isSpace(text.charCodeAt(i))) i += 1;
      const ch = text.charCodeAt(i);
      if (ch === 0x3e) {
        i += 1;
        break;
      }
      if (ch === 0x2f) {
        if (text.charCodeAt(i + 1) !== 0x3e) return undefined;
        selfClosing = true;
        i += 2;
        break;
      }
      if (i === before) return undefined; // attributes must be separated by whitespace
      const attrNameEnd = nameEnd(text, i);
      if (attrNameEnd < 0) return undefined;
      const attrName = text.slice(i, attrNameEnd);
      i = attrNameEnd;
      while (i < n && isSpace(text.charCodeAt(i))) i += 1;
      if (text.charCodeAt(i) !== 0x3d) return undefined;
      i += 1;
      while (i < n && isSpace(text.charCodeAt(i))) i += 1;
      const quote = text.charCodeAt(i);
      if (quote !== 0x22 && quote !== 0x27) return undefined;
      const close = text.indexOf(quote === 0x22 ? '"' : "'", i + 1);
      if (close < 0) return undefined;
      const lessThan = text.indexOf('<', i + 1);
      if (lessThan >= 0 && lessThan < close) return undefined;
      const value = attributeValue(text, i + 1, close);
      if (value === undefined) return undefined;
      i = close + 1;
      attributesHere += 1;
      attributes += 1;
      if (attributesHere > limits.maxAttributesPerElement || attributes > limits.maxAttributes)
        return undefined;
      // A repeated attribute is left to saxes (it says "ambiguous"): every name this path keeps is
      // remembered in one place (xmlns, xml:lang, or attrs), so a repeat is found there.
      if (attrName === 'xmlns') {
        if (declaredNs !== undefined) return undefined;
        declaredNs = value;
      } else if (attrName.includes(':')) {
        // Only xml:lang (narrative) is handled here; where it may stand is judged below.
        if (attrName !== 'xml:lang' || xmlLang) return undefined;
        xmlLang = true;
      } else {
        attrs ??= Object.create(null) as Record<string, string>;
        if (Object.hasOwn(attrs, attrName)) return undefined;
        attrs[attrName] = value;
      }
    }
    // The two namespaces compared below, as the constants themselves: equal strings either way,
    // and every later comparison of this element's children is then by reference.
    if (declaredNs !== undefined) {
      ns = declaredNs === FHIR_NS ? FHIR_NS : declaredNs === XHTML_NS ? XHTML_NS : declaredNs;
    }

    let kept: XmlElement | undefined;
    if (parent === undefined) {
      if (ns !== FHIR_NS) return undefined; // not FHIR: saxes reads it for the root name
      if (xmlLang) return undefined;
      kept = { name: qname, attrs: attrs ?? NO_ATTRIBUTES, children: [] };
      root = kept;
      rootSeen = true;
    } else {
      const inNarrative =
        parent.kept === undefined || (ns === XHTML_NS && qname === 'div' && parent.kept.name === 'text');
      if (inNarrative) {
        if (ns !== XHTML_NS) return undefined;
      } else {
        if (ns !== FHIR_NS || xmlLang) return undefined;
        kept = { name: qname, attrs: attrs ?? NO_ATTRIBUTES, children: [] };
        parent.kept?.children.push(kept);
      }
    }
    if (!selfClosing) stack.push({ qname, ns, kept });
  }
  if (!rootSeen || stack.length > 0) return undefined;
  return { rootName: root?.name ?? '', rootNs: FHIR_NS, root };
}

/**
 * The attribute value between `from` and `to` as XML reads it: literal tab, CR, LF (CRLF as one)
 * become a space, then references are decoded; `undefined` for a reference XML does not allow.
 */
function attributeValue(text: string, from: number, to: number): string | undefined {
  // Most values (codes, ids, references) have neither whitespace controls nor references: the
  // search runs on from the value into the document and stops at the next one, usually the line end.
  VALUE_SPECIAL.lastIndex = from;
  const raw = text.slice(from, to);
  if (!VALUE_SPECIAL.test(text) || VALUE_SPECIAL.lastIndex > to) return raw;
  const spaced = /[\t\n\r]/.test(raw) ? raw.replace(/\r\n|[\r\n\t]/g, ' ') : raw;
  return spaced.includes('&') ? references(spaced, 0, spaced.length, true) : spaced;
}

/** Forward searches over the whole document for the narrative's text runs. */
interface NarrativeSearch {
  amp: NextIndex;
  cdataEnd: NextIndex;
}

/**
 * Text between markup: outside the root only whitespace; inside a FHIR element only whitespace
 * (no references); inside the narrative anything well-formed (valid references, no `]]>`).
 */
function textOk(
  text: string,
  from: number,
  to: number,
  stack: readonly Open[],
  search: NarrativeSearch,
): boolean {
  const top = stack[stack.length - 1];
  if (top === undefined || top.kept !== undefined) {
    for (let k = from; k < to; k += 1) if (!isSpace(text.charCodeAt(k))) return false;
    return true;
  }
  const cdataEnd = search.cdataEnd(from);
  if (cdataEnd >= 0 && cdataEnd + 3 <= to) return false;
  return references(text, from, to, false, search.amp) !== undefined;
}
