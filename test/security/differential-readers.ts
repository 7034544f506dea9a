/**
 * How a typical recipient reads an ITK3 Bundle, for the differential test: parse with a common
 * library, take the first MessageHeader entry, resolve references by `fullUrl`, take the first
 * identifier under an ODS system. Deliberately naive — that is the point: whatever the gateway
 * accepts must read the same to these readers as to the gateway.
 */
import { XMLParser } from 'fast-xml-parser';
import { parseString } from 'xml2js';
import { Itk3ValidationError } from '../../lib/errors.js';
import { type BundleFormat, parseBundle } from '../../lib/itk3/parse.js';
import { type UnresolvedReferencePolicy, validateItk3 } from '../../lib/itk3/validate.js';

/** The facts a recipient acts on. */
export interface HeaderFacts {
  senderOds: string | undefined;
  receiverOds: string | undefined;
  event: string | undefined;
  messageId: string | undefined;
  documentId: string | undefined;
}

const ODS_SYSTEMS = ['https://fhir.nhs.uk/Id/ods-organization-code', 'https://fhir.nhs.uk/Id/ods-site-code'];

/** The gateway's reading (parse + validate), or the code it refused with. */
export function gatewayRead(
  bytes: Uint8Array,
  format: BundleFormat,
  unresolvedReferences: UnresolvedReferencePolicy = 'refuse',
): { accepted: true; facts: HeaderFacts } | { accepted: false; code: string } {
  try {
    const msg = parseBundle(bytes, format);
    validateItk3(msg, { unresolvedReferences });
    return {
      accepted: true,
      facts: {
        senderOds: msg.header.senderOds,
        receiverOds: msg.header.receiverOds,
        event: msg.header.event.code,
        messageId: msg.header.id,
        documentId: msg.documentId,
      },
    };
  } catch (error) {
    if (error instanceof Itk3ValidationError) return { accepted: false, code: error.code };
    throw error;
  }
}

// ---------------------------------------------------------------------------------------------
// A generic naive walk over "element objects", shared by the readers below.

interface Shape {
  /** Child element(s) called `name`, as a list (whatever the library gave). */
  kids(node: unknown, name: string): unknown[];
  /** The primitive value of an element (`value` attribute in XML, the string itself in JSON). */
  value(node: unknown): string | undefined;
  /** The resource inside an entry's `resource`, with its type. */
  resource(entry: unknown): { type: string; node: unknown } | undefined;
}

/**
 * The typical walk. `firstIdentifier`: take an Organization's first identifier whatever its system
 * (a reader that trusts the profile), instead of the first one under an ODS system.
 */
function naiveFacts(bundle: unknown, shape: Shape, firstIdentifier = false): HeaderFacts {
  const first = (node: unknown, name: string): unknown => shape.kids(node, name)[0];
  const str = (node: unknown, ...path: string[]): string | undefined => {
    let current = node;
    for (const name of path) current = first(current, name);
    return current === undefined ? undefined : shape.value(current);
  };
  const entries = shape.kids(bundle, 'entry');
  const headerEntry = entries.find((e) => shape.resource(e)?.type === 'MessageHeader');
  const mh = headerEntry === undefined ? undefined : shape.resource(headerEntry)?.node;
  const resolve = (reference: string | undefined) => {
    if (reference === undefined) return undefined;
    const entry =
      entries.find((e) => str(e, 'fullUrl') === reference) ??
      entries.find((e) => str(e, 'fullUrl')?.endsWith(`/${reference}`) === true);
    return entry === undefined ? undefined : shape.resource(entry);
  };
  const ods = (reference: string | undefined): string | undefined => {
    const org = resolve(reference);
    if (org?.type !== 'Organization') return undefined;
    const identifiers = shape.kids(org.node, 'identifier');
    const identifier = firstIdentifier
      ? identifiers[0]
      : identifiers.find((i) => ODS_SYSTEMS.includes(str(i, 'system') ?? ''));
    return identifier === undefined ? undefined : str(identifier, 'value');
  };
  const focus = resolve(str(mh, 'focus', 'reference'));
  return {
    senderOds: ods(str(mh, 'sender', 'reference')),
    receiverOds: ods(str(mh, 'receiver', 'reference')),
    event: str(mh, 'event', 'code'),
    messageId: str(mh, 'id'),
    documentId: focus?.type === 'Bundle' ? str(focus.node, 'id') : undefined,
  };
}

const asList = (value: unknown): unknown[] =>
  value === undefined || value === null ? [] : Array.isArray(value) ? value : [value];

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

// ---------------------------------------------------------------------------------------------
// XML readers.

/** fast-xml-parser shape: attributes as `@_name`, repeated elements as arrays, single ones not. */
const fastXmlShape: Shape = {
  kids: (node, name) => (isRecord(node) ? asList(node[name]) : []),
  value: (node) => {
    if (!isRecord(node)) return undefined;
    const value = node['@_value'];
    return value === undefined ? undefined : String(value);
  },
  resource: (entry) => {
    const resource = isRecord(entry) ? asList(entry.resource)[0] : undefined;
    if (!isRecord(resource)) return undefined;
    const type = Object.keys(resource).find((k) => !k.startsWith('@_') && k !== '#text');
    return type === undefined ? undefined : { type, node: asList(resource[type])[0] };
  },
};

/** fast-xml-parser as most recipients configure it: attributes kept, everything else default. */
export function fastXmlRead(text: string, opts: { removeNSPrefix?: boolean } = {}): HeaderFacts {
  const parser = new XMLParser({
    ignoreAttributes: false,
    parseAttributeValue: false,
    ...(opts.removeNSPrefix ? { removeNSPrefix: true } : {}),
  });
  const doc = parser.parse(text) as Record<string, unknown>;
  return naiveFacts(asList(doc.Bundle)[0], fastXmlShape);
}

/** xml2js shape: every child element is an array, attributes under `$`, text under `_`. */
const xml2jsShape: Shape = {
  kids: (node, name) => (isRecord(node) ? asList(node[name]) : []),
  value: (node) => {
    if (!isRecord(node) || !isRecord(node.$)) return undefined;
    const value = node.$.value;
    return typeof value === 'string' ? value : undefined;
  },
  resource: (entry) => {
    const resource = isRecord(entry) ? asList(entry.resource)[0] : undefined;
    if (!isRecord(resource)) return undefined;
    const type = Object.keys(resource).find((k) => k !== '$' && k !== '_');
    return type === undefined ? undefined : { type, node: asList(resource[type])[0] };
  },
};

/** xml2js with its defaults (explicitArray, attributes under `$`); first identifier wins. */
export function xml2jsRead(text: string): Promise<HeaderFacts> {
  return new Promise((resolve, reject) => {
    parseString(text, (error: Error | null, doc: Record<string, unknown>) => {
      if (error) reject(error);
      else resolve(naiveFacts(isRecord(doc) ? doc.Bundle : undefined, xml2jsShape, true));
    });
  });
}

// ---------------------------------------------------------------------------------------------
// JSON reader.

const jsonShape: Shape = {
  kids: (node, name) => (isRecord(node) ? asList(node[name]) : []),
  value: (node) => (typeof node === 'string' || typeof node === 'number' ? String(node) : undefined),
  resource: (entry) => {
    const resource = isRecord(entry) ? entry.resource : undefined;
    if (!isRecord(resource) || typeof resource.resourceType !== 'string') return undefined;
    return { type: resource.resourceType, node: resource };
  },
};

/** `JSON.parse` and a walk by member names, as a recipient writes in a few lines. */
export function jsonRead(text: string): HeaderFacts {
  return naiveFacts(JSON.parse(text) as unknown, jsonShape);
}

/** A second JSON reading: the first identifier whatever its system, `entry[0]` as the header. */
export function jsonReadFirstItems(text: string): HeaderFacts {
  const bundle = JSON.parse(text) as Record<string, unknown>;
  const entries = asList(bundle.entry) as Record<string, Record<string, unknown>>[];
  const mh = entries[0]?.resource ?? {};
  const byUrl = (reference: unknown) => entries.find((e) => e.fullUrl === reference)?.resource;
  const refOf = (name: string) => (mh[name] as { reference?: unknown } | undefined)?.reference;
  const firstIdentifier = (org: Record<string, unknown> | undefined) => {
    if (org?.resourceType !== 'Organization') return undefined;
    const identifier = asList(org.identifier)[0] as { value?: unknown } | undefined;
    return typeof identifier?.value === 'string' ? identifier.value : undefined;
  };
  const focus = byUrl(refOf('focus'));
  return {
    senderOds: firstIdentifier(byUrl(refOf('sender'))),
    receiverOds: firstIdentifier(byUrl(refOf('receiver'))),
    event: (mh.event as { code?: string } | undefined)?.code,
    messageId: mh.id as string | undefined,
    documentId: focus?.resourceType === 'Bundle' ? (focus.id as string | undefined) : undefined,
  };
}
