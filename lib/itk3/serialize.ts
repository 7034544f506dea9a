/**
 * Write FHIR resources built as plain FHIR-JSON-shaped objects to FHIR JSON or FHIR XML.
 *
 * One object model, two writers, so builders cannot make the two formats disagree. XML rules
 * (FHIR STU3 XML): a resource becomes `<Type xmlns="http://hl7.org/fhir">` at the root and
 * `<resource><Type>…</Type></resource>` below; a primitive becomes `<name value="…"/>`; an array
 * repeats the element; `url` of an extension is an attribute; a narrative `div` is our own XHTML
 * and is written as is. Element order is the object's key order, so builders insert keys in
 * FHIR definition order.
 */
import { FHIR_NS } from './constants.js';

/** A FHIR JSON value. */
type FhirValue = string | number | boolean | FhirObject | readonly FhirValue[];
/** A FHIR JSON object (resource or complex element); undefined members are skipped. */
export interface FhirObject {
  readonly [key: string]: FhirValue | undefined;
}

const utf8 = new TextEncoder();

/** Serialise a resource as FHIR JSON (UTF-8 bytes, two-space indent). */
function toFhirJson(resource: FhirObject): Uint8Array {
  return utf8.encode(`${JSON.stringify(resource, null, 2)}\n`);
}

/** Serialise a resource as FHIR XML (UTF-8 bytes, with an XML declaration). */
function toFhirXml(resource: FhirObject): Uint8Array {
  const type = resource.resourceType;
  if (typeof type !== 'string') throw new TypeError('root object has no resourceType');
  const out: string[] = ['<?xml version="1.0" encoding="UTF-8"?>\n'];
  writeResource(out, resource, type, 0, true);
  return utf8.encode(out.join(''));
}

/** Serialise in the requested format. */
export function serialize(resource: FhirObject, format: 'xml' | 'json'): Uint8Array {
  return format === 'xml' ? toFhirXml(resource) : toFhirJson(resource);
}

function writeResource(
  out: string[],
  resource: FhirObject,
  type: string,
  depth: number,
  root: boolean,
): void {
  const pad = indent(depth);
  out.push(`${pad}<${type}${root ? ` xmlns="${FHIR_NS}"` : ''}>\n`);
  writeMembers(out, resource, depth + 1, false);
  out.push(`${pad}</${type}>\n`);
}

/** Two spaces per level, made once per depth (responses are written per acknowledged message). */
const INDENTS: string[] = [];
function indent(depth: number): string {
  let pad = INDENTS[depth];
  if (pad === undefined) {
    pad = '  '.repeat(depth);
    INDENTS[depth] = pad;
  }
  return pad;
}

function writeMembers(out: string[], object: FhirObject, depth: number, isExtension: boolean): void {
  // Object.keys is Object.entries' order without a [name, value] array per member.
  for (const name of Object.keys(object)) {
    const value = object[name];
    if (value === undefined || name === 'resourceType') continue;
    if (isExtension && name === 'url') continue; // written as an attribute
    const items: readonly FhirValue[] = Array.isArray(value) ? value : [value as FhirValue];
    for (const item of items) writeElement(out, name, item, depth);
  }
}

function writeElement(out: string[], name: string, value: FhirValue, depth: number): void {
  const pad = indent(depth);
  if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') {
    if (name === 'div' && typeof value === 'string') {
      out.push(`${pad}${value}\n`);
      return;
    }
    out.push(`${pad}<${name} value="${escapeXmlAttribute(String(value))}"/>\n`);
    return;
  }
  if (Array.isArray(value)) throw new TypeError('nested arrays are not FHIR');
  const object = value as FhirObject;
  const type = object.resourceType;
  if (typeof type === 'string') {
    out.push(`${pad}<${name}>\n`);
    writeResource(out, object, type, depth + 1, false);
    out.push(`${pad}</${name}>\n`);
    return;
  }
  const isExtension = name === 'extension' || name === 'modifierExtension';
  const url = isExtension && typeof object.url === 'string' ? ` url="${escapeXmlAttribute(object.url)}"` : '';
  out.push(`${pad}<${name}${url}>\n`);
  writeMembers(out, object, depth + 1, isExtension);
  out.push(`${pad}</${name}>\n`);
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it looks for.
const NEEDS_ESCAPE = /[&<>"'\u0000-\u001f\ud800-\udfff\ufffe\uffff]/;

/** Values up to this length are checked by {@link shortNeedsEscape}. */
const SHORT_VALUE = 128;

/** {@link NEEDS_ESCAPE} as a loop over UTF-16 code units. */
function shortNeedsEscape(text: string): boolean {
  for (let i = 0; i < text.length; i += 1) {
    const c = text.charCodeAt(i);
    if (
      c < 0x20 ||
      c === 0x26 || // &
      c === 0x3c || // <
      c === 0x3e || // >
      c === 0x22 || // "
      c === 0x27 || // '
      (c >= 0xd800 && c <= 0xdfff) ||
      c >= 0xfffe
    ) {
      return true;
    }
  }
  return false;
}

/**
 * Escape text for an XML attribute value. Whitespace other than space is written as a character
 * reference so attribute-value normalisation keeps it; characters XML 1.0 cannot carry (controls,
 * lone surrogates, U+FFFE/U+FFFF) become U+FFFD.
 */
function escapeXmlAttribute(text: string): string {
  // Fast paths: base64 attachments are megabytes of characters that never need escaping (one regex
  // pass); the many short values of a header are checked by a loop without the regex call.
  if (text.length <= SHORT_VALUE ? !shortNeedsEscape(text) : !NEEDS_ESCAPE.test(text)) return text;
  let out = '';
  for (const ch of text) {
    const cp = ch.codePointAt(0) as number;
    switch (ch) {
      case '&':
        out += '&amp;';
        continue;
      case '<':
        out += '&lt;';
        continue;
      case '>':
        out += '&gt;';
        continue;
      case '"':
        out += '&quot;';
        continue;
      case "'":
        out += '&apos;';
        continue;
      case '\t':
        out += '&#9;';
        continue;
      case '\n':
        out += '&#10;';
        continue;
      case '\r':
        out += '&#13;';
        continue;
    }
    const allowed =
      (cp >= 0x20 && cp <= 0xd7ff) || (cp >= 0xe000 && cp <= 0xfffd) || (cp >= 0x10000 && cp <= 0x10ffff);
    out += allowed ? ch : '\uFFFD';
  }
  return out;
}

/** Escape text for XML character data (used for our own XHTML narratives). */
export function escapeXmlText(text: string): string {
  return escapeXmlAttribute(text);
}
