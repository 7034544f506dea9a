/**
 * Read an ITK3 message Bundle (FHIR STU3, XML or JSON) into the few facts the pipeline uses.
 *
 * Reading is hardened (see `xml.ts`, `json.ts`) and bounded; anything unreadable throws
 * `BUNDLE_UNREADABLE`, anything readable that is not a FHIR `Bundle` of type `message` throws
 * `BUNDLE_NOT_ITK3` (both ITK3 10009). Everything else is reported, not judged: header rules live
 * in `validate.ts`, so a bad header still yields the ids needed to answer the sender.
 *
 * The exception is anything another reasonable reader would read differently (one view of the
 * message, ITK3 20006): a byte-order mark, content outside FHIR (see `xml.ts`), JSON member names
 * that are not FHIR names, a repeating element that is not a JSON array, duplicate `fullUrl`s
 * (bdl-7), identity values (fullUrls, references, resource ids, ODS codes) that are not plain ASCII,
 * and a header Organization whose identifiers are not exactly one ODS code. These throw here:
 * there is no single reading of such a message to report on.
 */
import { Itk3ValidationError, type RejectionCode } from '../errors.js';
import {
  HANDLING_EXTENSION_URL,
  ODS_ORGANIZATION_SYSTEM,
  ODS_SITE_SYSTEM,
  RECIPIENT_TYPE_SYSTEM,
  RESPONSE_CODE_SYSTEM,
} from './constants.js';
import { JsonRefusal, readJson } from './json.js';
import { type FhirNode, jsonNode, xmlNode } from './node.js';
import { readXml, XmlAmbiguity, XmlRefusal } from './xml.js';

/** Wire format of a Bundle. */
export type BundleFormat = 'xml' | 'json';

/** Handling-specification values as read (ITK3.md §2.2). */
interface Itk3Handling {
  /** `BusAckRequested`; undefined when missing or unreadable (see `problems`). */
  busAckRequested?: boolean;
  /** `InfAckRequested`; undefined when missing or unreadable (see `problems`). */
  infAckRequested?: boolean;
  /** `RecipientType` code, when the coding had a code. */
  recipientType?: string;
  /** `MessageDefinition` reference URL, as sent. */
  messageDefinition?: string;
  /** `SenderReference` (`None` when unused). */
  senderReference?: string;
  /** `LocalExtension` as a string (`None` when unused). */
  localExtension?: string;
  /** Legacy `Priority` key (removed in 2.5.0-beta), when an old sender still sends it. */
  priority?: string;
  /**
   * Problems found while reading the extension, each `"<Key>: <what>"` where Key is a handling key
   * or `handling` for the extension as a whole. Static text only, never message content.
   */
  problems: string[];
}

/** `MessageHeader.response` of an ITK008M response message. */
interface Itk3ResponseInfo {
  identifier?: string;
  code?: string;
  /** ITK response code from the referenced OperationOutcome's `issue.details.coding`. */
  itkCode?: string;
  severity?: string;
  issueType?: string;
  /** `issue.diagnostics` (short, non-identifying detail). */
  diagnostics?: string;
  /** Number of `issue` entries in the referenced OperationOutcome (ITK3 requires exactly one). */
  issueCount: number;
}

/** The MessageHeader facts (ITK3.md §2.1). Empty strings stand for "absent" where a value is required. */
interface Itk3Header {
  /** `MessageHeader.id`; `''` when absent. */
  id: string;
  event: { system: string; code: string; display: string };
  handling: Itk3Handling;
  /** `sender.reference` as sent. */
  senderRef?: string;
  /** `receiver.reference` as sent. */
  receiverRef?: string;
  /** ODS code of the Organization entry that `sender` references. */
  senderOds?: string;
  /** ODS code of the Organization entry that `receiver` references. */
  receiverOds?: string;
  /** `source.endpoint`: the sender's MESH mailbox. */
  sourceEndpoint?: string;
  timestamp?: string;
  focusReference?: string;
  hasDestination: boolean;
  response?: Itk3ResponseInfo;
}

/** What {@link parseBundle} returns. */
export interface Itk3Message {
  format: BundleFormat;
  /** Outer `Bundle.id`; `''` when absent. */
  bundleId: string;
  /** Outer `Bundle.identifier.value`. */
  bundleIdentifier?: string;
  header: Itk3Header;
  /** Number of top-level entries. */
  entryCount: number;
  firstEntryIsMessageHeader: boolean;
  /** Number of top-level MessageHeader entries (ITK3 allows exactly one). */
  messageHeaderCount: number;
  /** `Bundle.signature` present (forbidden by every ITK Bundle profile). */
  hasSignature: boolean;
  /** Resource type of the entry `focus` references, when it resolves. */
  payloadType?: string;
  /** `Bundle.id` of the payload Bundle referenced by `focus` (the 20008 duplicate key). */
  documentId?: string;
  /** MessageDefinition name (last URL segment, `-Instance` variants normalised away). */
  messageDefinitionName?: string;
  /** Elements the ITK profiles set to 0..0 that are present, e.g. `Bundle.total`. */
  forbiddenElements: string[];
  /** Structure problems outside the handling extension, e.g. `MessageHeader.event repeated`. */
  problems: string[];
}

/** Caps for {@link parseBundle}. Defaults fit a 5 MB (and much larger) Bundle with room to spare. */
export interface ParseLimits {
  /** Hard byte cap before any decoding (above it: MESSAGE_TOO_LARGE). */
  maxBytes: number;
  maxDepth: number;
  /** XML elements / JSON objects and arrays. */
  maxElements: number;
  maxAttributes: number;
  maxAttributesPerElement: number;
}

/**
 * Default caps: 100 MiB (one MESH request), depth 64, 500 000 elements, 1 000 000 attributes.
 * Real FHIR XML runs at about 50 bytes per element, so a dense 5 MB Bundle has ~100 000.
 */
const DEFAULT_PARSE_LIMITS: Readonly<ParseLimits> = Object.freeze({
  maxBytes: 100 * 1024 * 1024,
  maxDepth: 64,
  maxElements: 500_000,
  maxAttributes: 1_000_000,
  maxAttributesPerElement: 64,
});

/**
 * Parse ITK3 message Bundle bytes.
 *
 * @example
 * const msg = parseBundle(bytes, 'xml');
 * const { warnings } = validateItk3(msg);
 * console.log(msg.header.id, msg.header.event.code, msg.header.senderOds);
 *
 * @throws Itk3ValidationError `BUNDLE_UNREADABLE` (not UTF-8, not well-formed, refused construct,
 *   over a cap), `BUNDLE_NOT_ITK3` (not a FHIR Bundle of type message), `MESSAGE_TOO_LARGE`.
 */
export function parseBundle(
  bytes: Uint8Array,
  format: BundleFormat,
  limits: Partial<ParseLimits> = {},
): Itk3Message {
  const caps: ParseLimits = { ...DEFAULT_PARSE_LIMITS, ...limits };
  if (bytes.byteLength > caps.maxBytes) {
    throw new Itk3ValidationError('MESSAGE_TOO_LARGE', 'bundle exceeds the size limit');
  }
  // Delivery is byte for byte: a BOM that readers treat differently (JSON.parse refuses it) is refused.
  if (bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) {
    throw new Itk3ValidationError('BUNDLE_BYTE_ORDER_MARK', 'bundle starts with a byte-order mark');
  }
  const text = decodeUtf8(bytes);
  if (format === 'xml') return parseXml(text, caps);
  if (format === 'json') return parseJson(text, caps);
  throw new Itk3ValidationError('BUNDLE_UNREADABLE', 'bundle format is not supported');
}

function decodeUtf8(bytes: Uint8Array): string {
  try {
    // fatal: invalid sequences throw instead of becoming U+FFFD. A BOM was refused before.
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw new Itk3ValidationError('BUNDLE_UNREADABLE', 'bundle is not valid UTF-8');
  }
}

function parseXml(text: string, caps: ParseLimits): Itk3Message {
  let doc: ReturnType<typeof readXml>;
  try {
    doc = readXml(text, {
      maxDepth: caps.maxDepth,
      maxElements: caps.maxElements,
      maxAttributes: caps.maxAttributes,
      maxAttributesPerElement: caps.maxAttributesPerElement,
    });
  } catch (error) {
    if (error instanceof XmlAmbiguity) {
      const code = error.kind === 'foreign-content' ? 'BUNDLE_FOREIGN_CONTENT' : 'BUNDLE_AMBIGUOUS';
      throw new Itk3ValidationError(code, `bundle is refused: ${error.message}`);
    }
    throw unreadable(error instanceof XmlRefusal ? error.message : 'XML could not be read');
  }
  if (doc.root === undefined || doc.rootName !== 'Bundle') throw notItk3();
  return extract(xmlNode(doc.root), 'xml');
}

function parseJson(text: string, caps: ParseLimits): Itk3Message {
  let value: unknown;
  try {
    value = readJson(text, { maxDepth: caps.maxDepth, maxContainers: caps.maxElements });
  } catch (error) {
    throw unreadable(error instanceof JsonRefusal ? error.message : 'JSON could not be read');
  }
  const root = jsonNode(value).resource();
  if (root === undefined || root.type !== 'Bundle') throw notItk3();
  refuseNonFhirJson(value);
  return extract(root.node, 'json');
}

/**
 * The string value of a primitive the header walk reads (ids, fullUrls, references, event, ODS
 * identifiers). In JSON a present member that is not a string is refused: the gateway would read
 * nothing where a reader that stringifies (`String(123)`) reads a value.
 */
function stringValue(node: FhirNode | undefined): string | undefined {
  if (node === undefined) return undefined;
  const value = node.str();
  if (value === undefined && node.format === 'json') {
    refuse('BUNDLE_AMBIGUOUS', 'bundle is refused: a JSON identity value is not a string');
  }
  return value;
}

/** A FHIR JSON member name: an element name, or `_name` for a primitive's id and extensions. */
const FHIR_MEMBER_NAME = /^_?[A-Za-z][A-Za-z0-9]*$/;

/**
 * Refuse member names no FHIR element has (`fhir_comments`, `@id`, `entry `, …) and members that are
 * `null` (FHIR JSON has none outside arrays): the gateway would ignore them and another reader might
 * not. Iterative, so depth is bounded by the reader's caps only.
 */
function refuseNonFhirJson(value: unknown): void {
  const pending: unknown[] = [value];
  while (pending.length > 0) {
    const current = pending.pop();
    if (Array.isArray(current)) {
      // One by one: spreading a million-item array would overflow the argument stack.
      for (const item of current) pending.push(item);
    } else if (typeof current === 'object' && current !== null) {
      for (const [name, member] of Object.entries(current)) {
        if (!FHIR_MEMBER_NAME.test(name)) {
          refuse('BUNDLE_FOREIGN_CONTENT', 'bundle is refused: JSON member name is not a FHIR element name');
        }
        if (member === null) refuse('BUNDLE_AMBIGUOUS', 'bundle is refused: a JSON member is null');
        pending.push(member);
      }
    }
  }
}

function refuse(code: RejectionCode, reason: string): never {
  throw new Itk3ValidationError(code, reason);
}

function unreadable(reason: string): Itk3ValidationError {
  return new Itk3ValidationError('BUNDLE_UNREADABLE', `bundle is unreadable: ${reason}`);
}

function notItk3(): Itk3ValidationError {
  return new Itk3ValidationError('BUNDLE_NOT_ITK3', 'document is not an FHIR Bundle of type message');
}

/**
 * Reader of a 0..1 element: the first occurrence, and a problem noted when it repeats (XML) or
 * comes as a list (JSON), so two readers can never pick different values.
 */
function singleReader(problems: string[]) {
  return (node: FhirNode, name: string, where: string): FhirNode | undefined => {
    const found = node.children(name);
    if (found.length > 1 || node.isList(name)) problems.push(`${where}.${name} repeated`);
    return found[0];
  };
}

interface Entry {
  fullUrl: string | undefined;
  type: string | undefined;
  /** The resource's `id`. */
  id: string | undefined;
  node: FhirNode | undefined;
}

/**
 * Printable ASCII with no space and none of `"&'<>`: such a value reads the same in every XML
 * reader (no entity or character reference can be in it) and in every JSON reader.
 */
const PLAIN = /^[!#-%(-;=?-~]+$/;
/** FHIR `id` datatype. */
const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;

/**
 * The members of a repeating element. JSON must give it as an array: a lone object would be one
 * entry here and nothing (or a crash) for a reader that iterates the array.
 */
function listOf(node: FhirNode, name: string, where: string): FhirNode[] {
  const found = node.children(name);
  if (found.length > 0 && node.format === 'json' && !node.isList(name)) {
    refuse('BUNDLE_AMBIGUOUS', `bundle is refused: ${where}.${name} is not a JSON array`);
  }
  return found;
}

function extract(bundle: FhirNode, format: BundleFormat): Itk3Message {
  const problems: string[] = [];
  const single = singleReader(problems);

  const types = bundle.children('type');
  if (types.length !== 1 || bundle.isList('type') || types[0]?.str() !== 'message') throw notItk3();

  const bundleId = single(bundle, 'id', 'Bundle')?.str() ?? '';
  const bundleIdentifier = single(bundle, 'identifier', 'Bundle')?.first('value')?.str();

  const forbiddenElements: string[] = [];
  for (const name of ['total', 'link']) {
    if (bundle.children(name).length > 0) forbiddenElements.push(`Bundle.${name}`);
  }

  const fullUrls = new Set<string>();
  const entries: Entry[] = listOf(bundle, 'entry', 'Bundle').map((entry) => {
    for (const name of ['request', 'response', 'search']) {
      const label = `Bundle.entry.${name}`;
      if (entry.children(name).length > 0 && !forbiddenElements.includes(label)) {
        forbiddenElements.push(label);
      }
    }
    const resources = entry.children('resource');
    if (resources.length > 1 || entry.isList('resource')) problems.push('Bundle.entry.resource repeated');
    const resource = resources[0]?.resource();
    if (resources[0] !== undefined && resource === undefined) {
      refuse(
        'BUNDLE_AMBIGUOUS',
        'bundle is refused: Bundle.entry.resource does not hold exactly one resource',
      );
    }
    const fullUrl = stringValue(single(entry, 'fullUrl', 'Bundle.entry'));
    if (fullUrl !== undefined) {
      if (!PLAIN.test(fullUrl)) refuse('BUNDLE_AMBIGUOUS', 'bundle is refused: a fullUrl is not plain ASCII');
      // FHIR bdl-7: a fullUrl names one entry, so no two readers can resolve a reference apart.
      if (fullUrls.has(fullUrl)) {
        refuse('DUPLICATE_FULL_URL', 'bundle is refused: two entries share a fullUrl');
      }
      fullUrls.add(fullUrl);
    }
    const id = resource === undefined ? undefined : stringValue(single(resource.node, 'id', resource.type));
    // MessageHeader.id has its own rule (validate.ts); every other id must be one a reader cannot misread.
    if (id !== undefined && resource?.type !== 'MessageHeader' && !FHIR_ID.test(id)) {
      refuse('BUNDLE_AMBIGUOUS', 'bundle is refused: an entry resource id is not a FHIR id');
    }
    return { fullUrl, type: resource?.type, id, node: resource?.node };
  });

  const headers = entries.filter((e) => e.type === 'MessageHeader');
  const headerNode = headers[0]?.node;
  const header = readHeader(headerNode, entries, problems, forbiddenElements);

  const focus = resolve(entries, header.focusReference);
  const documentId = focus?.type === 'Bundle' ? focus.id : undefined;

  return {
    format,
    bundleId,
    ...(bundleIdentifier === undefined ? {} : { bundleIdentifier }),
    header,
    entryCount: entries.length,
    firstEntryIsMessageHeader: entries[0]?.type === 'MessageHeader',
    messageHeaderCount: headers.length,
    hasSignature: bundle.children('signature').length > 0,
    ...(focus?.type === undefined ? {} : { payloadType: focus.type }),
    ...(documentId === undefined ? {} : { documentId }),
    ...optional('messageDefinitionName', messageDefinitionName(header.handling.messageDefinition)),
    forbiddenElements,
    problems,
  };
}

function readHeader(
  mh: FhirNode | undefined,
  entries: Entry[],
  problems: string[],
  forbiddenElements: string[],
): Itk3Header {
  if (mh === undefined) {
    return {
      id: '',
      event: { system: '', code: '', display: '' },
      handling: { problems: ['handling: extension missing'] },
      hasDestination: false,
    };
  }
  const single = singleReader(problems);

  const id = stringValue(single(mh, 'id', 'MessageHeader')) ?? '';
  const event = single(mh, 'event', 'MessageHeader');
  const reference = (name: string): string | undefined => {
    const element = single(mh, name, 'MessageHeader');
    const value = element === undefined ? undefined : stringValue(single(element, 'reference', name));
    if (value !== undefined && !PLAIN.test(value)) {
      refuse('BUNDLE_AMBIGUOUS', `bundle is refused: MessageHeader.${name} reference is not plain ASCII`);
    }
    return value;
  };
  const senderRef = reference('sender');
  const receiverRef = reference('receiver');
  const timestamp = single(mh, 'timestamp', 'MessageHeader')?.str();
  const source = single(mh, 'source', 'MessageHeader');
  const sourceEndpoint = source === undefined ? undefined : single(source, 'endpoint', 'source')?.str();
  const focusReference = reference('focus');

  for (const name of ['enterer', 'author', 'responsible', 'reason']) {
    if (mh.children(name).length > 0) forbiddenElements.push(`MessageHeader.${name}`);
  }
  if (source !== undefined) {
    for (const name of ['name', 'software', 'version', 'contact']) {
      if (source.children(name).length > 0) forbiddenElements.push(`MessageHeader.source.${name}`);
    }
  }

  const senderOds = headerOds(resolve(entries, senderRef), 'sender', single);
  const receiverOds = headerOds(resolve(entries, receiverRef), 'receiver', single);
  const responseNode = single(mh, 'response', 'MessageHeader');

  return {
    id,
    event: {
      system: (event && stringValue(single(event, 'system', 'event'))) ?? '',
      code: (event && stringValue(single(event, 'code', 'event'))) ?? '',
      display: (event && stringValue(single(event, 'display', 'event'))) ?? '',
    },
    handling: readHandling(mh),
    ...optional('senderRef', senderRef),
    ...optional('receiverRef', receiverRef),
    ...optional('senderOds', senderOds),
    ...optional('receiverOds', receiverOds),
    ...optional('sourceEndpoint', sourceEndpoint),
    ...optional('timestamp', timestamp),
    ...optional('focusReference', focusReference),
    hasDestination: mh.children('destination').length > 0,
    ...(responseNode === undefined ? {} : { response: readResponse(responseNode, entries) }),
  };
}

/** Handling keys and their expected value[x] element. */
const HANDLING_KEYS = {
  BusAckRequested: 'valueBoolean',
  InfAckRequested: 'valueBoolean',
  RecipientType: 'valueCoding',
  MessageDefinition: 'valueReference',
  SenderReference: 'valueString',
  LocalExtension: undefined, // value[x]: any
  Priority: undefined, // legacy, any
} as const;

type HandlingKey = keyof typeof HANDLING_KEYS;

/** Keys every sender must give (SenderReference/LocalExtension only since 2.5.0-beta: warned). */
const MANDATORY_KEYS: readonly HandlingKey[] = [
  'BusAckRequested',
  'InfAckRequested',
  'RecipientType',
  'MessageDefinition',
];

function isHandlingKey(url: string): url is HandlingKey {
  return Object.hasOwn(HANDLING_KEYS, url);
}

function readHandling(mh: FhirNode): Itk3Handling {
  const handling: Itk3Handling = { problems: [] };
  const problem = (key: string, what: string): void => {
    handling.problems.push(`${key}: ${what}`);
  };
  const extensions = listOf(mh, 'extension', 'MessageHeader').filter(
    (e) => e.attr('url') === HANDLING_EXTENSION_URL,
  );
  if (extensions.length === 0) {
    problem('handling', 'extension missing');
    return handling;
  }
  if (extensions.length > 1) problem('handling', 'extension repeated');
  const extension = extensions[0] as FhirNode;

  const seen = new Set<HandlingKey>();
  for (const sub of listOf(extension, 'extension', 'handling')) {
    const url = sub.attr('url');
    if (url === undefined || !isHandlingKey(url)) {
      problem('handling', 'unknown key');
      continue;
    }
    if (seen.has(url)) {
      problem(url, 'repeated');
      continue;
    }
    seen.add(url);
    const valueNames = sub.names().filter((n) => n.startsWith('value'));
    const expected = HANDLING_KEYS[url];
    if (valueNames.length !== 1 || (expected !== undefined && valueNames[0] !== expected)) {
      problem(url, 'unreadable');
      continue;
    }
    const value = sub.first(valueNames[0] as string) as FhirNode;
    switch (url) {
      case 'BusAckRequested':
      case 'InfAckRequested': {
        const flag = value.bool();
        if (flag === undefined) problem(url, 'unreadable');
        else if (url === 'BusAckRequested') handling.busAckRequested = flag;
        else handling.infAckRequested = flag;
        break;
      }
      case 'RecipientType': {
        const code = value.first('code')?.str();
        if (code === undefined) problem(url, 'unreadable');
        else handling.recipientType = code;
        if (value.first('system')?.str() !== RECIPIENT_TYPE_SYSTEM) problem(url, 'wrong system');
        break;
      }
      case 'MessageDefinition': {
        const reference = value.first('reference')?.str();
        if (reference === undefined) problem(url, 'unreadable');
        else handling.messageDefinition = reference;
        break;
      }
      case 'SenderReference': {
        const text = value.str();
        if (text === undefined) problem(url, 'unreadable');
        else handling.senderReference = text;
        break;
      }
      case 'LocalExtension':
      case 'Priority': {
        // value[x] of any type: keep a string form when there is one.
        const text = value.str() ?? value.first('code')?.str() ?? value.first('value')?.str();
        if (text === undefined) problem(url, 'unreadable');
        else if (url === 'LocalExtension') handling.localExtension = text;
        else handling.priority = text;
        break;
      }
    }
  }
  for (const key of MANDATORY_KEYS) if (!seen.has(key)) problem(key, 'missing');
  return handling;
}

function readResponse(response: FhirNode, entries: Entry[]): Itk3ResponseInfo {
  const identifier = response.first('identifier')?.str();
  const code = response.first('code')?.str();
  const details = resolve(entries, response.first('details')?.first('reference')?.str());
  const info: Itk3ResponseInfo = {
    ...optional('identifier', identifier),
    ...optional('code', code),
    issueCount: 0,
  };
  if (details?.type !== 'OperationOutcome' || details.node === undefined) return info;
  const issues = details.node.children('issue');
  info.issueCount = issues.length;
  const issue = issues[0];
  if (issue === undefined) return info;
  const coding = issue
    .first('details')
    ?.children('coding')
    .find((c) => c.first('system')?.str() === RESPONSE_CODE_SYSTEM);
  return {
    ...info,
    ...optional('itkCode', coding?.first('code')?.str()),
    ...optional('severity', issue.first('severity')?.str()),
    ...optional('issueType', issue.first('code')?.str()),
    ...optional('diagnostics', issue.first('diagnostics')?.str()),
  };
}

/**
 * Find the entry a reference points at: the one entry whose `fullUrl` is the reference (fullUrls
 * are unique), else, for a relative `Type/id`, the one entry whose fullUrl ends in `/Type/id` and
 * whose resource is that type and id. Anything less certain resolves to nothing, so a reader
 * matching on fullUrl alone and one matching on type and id can never pick different entries.
 */
function resolve(entries: Entry[], reference: string | undefined): Entry | undefined {
  if (reference === undefined || reference === '') return undefined;
  const exact = entries.find((e) => e.fullUrl === reference);
  if (exact !== undefined) return exact;
  const relative = /^([A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})$/.exec(reference);
  if (relative === null) return undefined;
  const [, type, id] = relative;
  const byUrl = (e: Entry): boolean => e.fullUrl?.endsWith(`/${reference}`) === true;
  const byIdentity = (e: Entry): boolean => e.type === type && e.id === id;
  const candidates = entries.filter((e) => byUrl(e) || byIdentity(e));
  const only = candidates.length === 1 ? candidates[0] : undefined;
  return only !== undefined && byUrl(only) && byIdentity(only) ? only : undefined;
}

/** True for a system that looks like an ODS system without being one (for the refusal's wording). */
function resemblesOds(system: string | undefined): boolean {
  return system !== undefined && /(^|[^a-z])ods([^a-z]|$)/i.test(system);
}

/**
 * ODS code of a header Organization (the entry `sender` or `receiver` resolves to). Such an
 * Organization carries ODS codes only (ITK3.md §2): exactly one identifier under
 * `ods-organization-code` or `ods-site-code`. A second ODS identifier, or any identifier under
 * another system (a near miss such as `http://…`, a trailing slash, other case or spelling
 * included), is refused rather than skipped: readers that take "the first identifier" or match
 * systems loosely would read another organisation.
 */
function headerOds(
  entry: Entry | undefined,
  role: 'sender' | 'receiver',
  single: ReturnType<typeof singleReader>,
): string | undefined {
  if (entry?.type !== 'Organization' || entry.node === undefined) return undefined;
  const codes: string[] = [];
  for (const identifier of listOf(entry.node, 'identifier', 'Organization')) {
    const system = stringValue(single(identifier, 'system', 'identifier'));
    if (system !== ODS_ORGANIZATION_SYSTEM && system !== ODS_SITE_SYSTEM) {
      refuse(
        'ODS_IDENTIFIER_AMBIGUOUS',
        resemblesOds(system)
          ? `${role} Organization has an identifier under a near miss of the ODS systems`
          : `${role} Organization has an identifier outside the ODS systems`,
      );
    }
    const value = stringValue(single(identifier, 'value', 'identifier'));
    if (value === undefined || !PLAIN.test(value)) {
      refuse('ODS_IDENTIFIER_AMBIGUOUS', `${role} Organization has an ODS identifier without a plain value`);
    }
    codes.push(value);
  }
  if (codes.length > 1) {
    refuse('ODS_IDENTIFIER_AMBIGUOUS', `${role} Organization has more than one ODS identifier`);
  }
  return codes[0];
}

/** Last URL segment, `…-MessageDefinition-Instance-N` normalised to `…-MessageDefinition-N`. */
function messageDefinitionName(url: string | undefined): string | undefined {
  if (url === undefined) return undefined;
  const segment = url.trim().split(/[?#]/, 1)[0]?.split('/').pop();
  if (segment === undefined || segment === '') return undefined;
  return segment.replace(/-MessageDefinition-Instance-(\d+)$/, '-MessageDefinition-$1');
}

function optional<K extends string, V>(key: K, value: V | undefined): { [P in K]?: V } {
  return (value === undefined ? {} : { [key]: value }) as { [P in K]?: V };
}
