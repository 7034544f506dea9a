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

/** Serialise a resource as FHIR JSON (UTF-8 bytes, two-space indent). */
function toFhirJson(resource: FhirObject): Uint8Array {
  return new TextEncoder().encode(`${JSON.stringify(resource, null, 2)}\n`);
}

/** Serialise a resource as FHIR XML (UTF-8 bytes, with an XML declaration). */
function toFhirXml(resource: FhirObject): Uint8Array {
  const type = resource.resourceType;
  if (typeof type !== 'string') throw new TypeError('root object has no resourceType');
  const out: string[] = ['<?xml version="1.0" encoding="UTF-8"?>\n'];
  writeResource(out, resource, type, 0, true);
  return new TextEncoder().encode(out.join(''));
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
  const pad = '  '.repeat(depth);
  out.push(`${pad}<${type}${root ? ` xmlns="${FHIR_NS}"` : ''}>\n`);
  writeMembers(out, resource, depth + 1, false);
  out.push(`${pad}</${type}>\n`);
}

function writeMembers(out: string[], object: FhirObject, depth: number, isExtension: boolean): void {
  for (const [name, value] of Object.entries(object)) {
    if (value === undefined || name === 'resourceType') continue;
    if (isExtension && name === 'url') continue; // written as an attribute
    const items: readonly FhirValue[] = Array.isArray(value) ? value : [value as FhirValue];
    for (const item of items) writeElement(out, name, item, depth);
  }
}

function writeElement(out: string[], name: string, value: FhirValue, depth: number): void {
  const pad = '  '.repeat(depth);
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

/**
 * Escape text for an XML attribute value. Whitespace other than space is written as a character
 * reference so attribute-value normalisation keeps it; characters XML 1.0 cannot carry (controls,
 * lone surrogates, U+FFFE/U+FFFF) become U+FFFD.
 */
function escapeXmlAttribute(text: string): string {
  // Fast path: base64 attachments are megabytes of characters that never need escaping.
  if (!NEEDS_ESCAPE.test(text)) return text;
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
