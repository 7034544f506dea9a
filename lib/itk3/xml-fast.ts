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
/** Names this path handles: ASCII, at most one colon. Anything else goes to saxes. */
const NAME = /[A-Za-z_][A-Za-z0-9._-]*(?::[A-Za-z_][A-Za-z0-9._-]*)?/y;
/** A reference as XML allows it: the five predefined entities or a numeric character reference. */
const REFERENCE = /&(?:(lt|gt|amp|apos|quot)|#([0-9]{1,7})|#x([0-9A-Fa-f]{1,6}));/y;
const PREDEFINED: Readonly<Record<string, string>> = { lt: '<', gt: '>', amp: '&', apos: "'", quot: '"' };

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

/**
 * Decode the references in `text` between `from` and `to`, or return `undefined` if one is not
 * a reference XML allows. With `decode` false it only validates (and returns '').
 */
function references(text: string, from: number, to: number, decode: boolean): string | undefined {
  let out = '';
  let last = from;
  let amp = text.indexOf('&', from);
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
    amp = text.indexOf('&', last);
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

  while (i < n) {
    const lt = text.indexOf('<', i);
    const textEnd = lt < 0 ? n : lt;
    if (textEnd > i && !textOk(text, i, textEnd, stack)) return undefined;
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
    NAME.lastIndex = i;
    const nameMatch = NAME.exec(text);
    if (!nameMatch) return undefined;
    const qname = nameMatch[0];
    if (qname.includes(':')) return undefined; // prefixed element: saxes refuses it
    i = NAME.lastIndex;
    elements += 1;
    if (elements > limits.maxElements || stack.length + 1 > limits.maxDepth) return undefined;

    const parent = stack[stack.length - 1];
    let ns = parent?.ns ?? '';
    let declaredNs: string | undefined;
    const attrs: Record<string, string> = Object.create(null);
    const seen: string[] = [];
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
      NAME.lastIndex = i;
      const attrMatch = NAME.exec(text);
      if (!attrMatch) return undefined;
      const attrName = attrMatch[0];
      i = NAME.lastIndex;
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
      const value = attributeValue(text.slice(i + 1, close));
      if (value === undefined) return undefined;
      i = close + 1;
      if (seen.includes(attrName)) return undefined; // a repeat: saxes path says "ambiguous"
      seen.push(attrName);
      attributes += 1;
      if (seen.length > limits.maxAttributesPerElement || attributes > limits.maxAttributes) return undefined;
      if (attrName === 'xmlns') declaredNs = value;
      else if (attrName.includes(':')) {
        // Only xml:lang (narrative) is handled here; where it may stand is judged below.
        if (attrName !== 'xml:lang') return undefined;
      } else attrs[attrName] = value;
    }
    if (declaredNs !== undefined) ns = declaredNs;

    let kept: XmlElement | undefined;
    if (parent === undefined) {
      if (ns !== FHIR_NS) return undefined; // not FHIR: saxes reads it for the root name
      if (seen.some((a) => a.startsWith('xml:'))) return undefined;
      kept = { name: qname, attrs, children: [] };
      root = kept;
      rootSeen = true;
    } else {
      const inNarrative =
        parent.kept === undefined || (ns === XHTML_NS && qname === 'div' && parent.kept.name === 'text');
      if (inNarrative) {
        if (ns !== XHTML_NS) return undefined;
      } else {
        if (ns !== FHIR_NS || seen.some((a) => a.startsWith('xml:'))) return undefined;
        kept = { name: qname, attrs, children: [] };
        parent.kept?.children.push(kept);
      }
    }
    if (!selfClosing) stack.push({ qname, ns, kept });
  }
  if (!rootSeen || stack.length > 0) return undefined;
  return { rootName: root?.name ?? '', rootNs: FHIR_NS, root };
}

/**
 * The attribute value as XML reads it: literal tab, CR, LF (CRLF as one) become a space, then
 * references are decoded; `undefined` for a reference XML does not allow.
 */
function attributeValue(raw: string): string | undefined {
  const spaced = /[\t\n\r]/.test(raw) ? raw.replace(/\r\n|[\r\n\t]/g, ' ') : raw;
  return spaced.includes('&') ? references(spaced, 0, spaced.length, true) : spaced;
}

/**
 * Text between markup: outside the root only whitespace; inside a FHIR element only whitespace
 * (no references); inside the narrative anything well-formed (valid references, no `]]>`).
 */
function textOk(text: string, from: number, to: number, stack: readonly Open[]): boolean {
  const top = stack[stack.length - 1];
  if (top === undefined || top.kept !== undefined) {
    for (let k = from; k < to; k += 1) if (!isSpace(text.charCodeAt(k))) return false;
    return true;
  }
  const cdataEnd = text.indexOf(']]>', from);
  if (cdataEnd >= 0 && cdataEnd + 3 <= to) return false;
  return references(text, from, to, false) !== undefined;
}
