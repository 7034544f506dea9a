/**
 * Pre-parse guards shared by every JOSE object the pipeline reads (SECURITY-CORPUS.md rules 1 and 10).
 *
 * `jose` has no size or depth limit, accepts forgiving base64 (whitespace, `=`, non-zero pad bits)
 * and parses the protected header before it checks anything else. These guards run first, on the
 * raw string, so a hostile input costs a bounded amount of work before any JSON or key is touched.
 * They are deliberately independent of the error family: each caller passes a factory that turns a
 * guard failure into its own {@link import('../errors.js').RejectionError} subclass and code.
 */

/** Why a guard failed: the input is over its size cap, or it is not a well-formed compact object. */
export type GuardFailure = 'too-large' | 'malformed';

/** Builds the caller's error for a guard failure. The message never contains input bytes. */
export type GuardErrorFactory = (failure: GuardFailure, message: string) => Error;

/** A decoded JSON object (header or claims set), checked for duplicate members and depth. */
export type JsonObject = Record<string, unknown>;

/** Decoded protected headers above this are refused: ours are a few hundred bytes. */
const DEFAULT_MAX_HEADER_BYTES = 4 * 1024;

/** Nesting depth cap for headers and claims: `itk` and a two-level `act` chain need 3–4. */
const DEFAULT_MAX_JSON_DEPTH = 16;

/** Options for {@link parseCompact}. */
export interface CompactGuardOptions {
  /** Cap on the whole compact string, checked before anything else. */
  maxBytes: number;
  /** Exact number of `.`-separated segments: 3 for JWS/JWT, 5 for JWE. */
  segments: 3 | 5;
  /**
   * Cap on the decoded protected header.
   * @default DEFAULT_MAX_HEADER_BYTES
   */
  maxHeaderBytes?: number;
  /**
   * Cap on JSON nesting depth in the header.
   * @default DEFAULT_MAX_JSON_DEPTH
   */
  maxDepth?: number;
  /** Error factory of the calling stage. */
  fail: GuardErrorFactory;
  /**
   * Indexes of the segments the caller needs as bytes (payload, ciphertext, signature): they are
   * checked by {@link decodeCanonical} and returned in {@link CompactParts.bytes}, so a large
   * segment costs one decode and one encode instead of a regex pass plus the caller's decode.
   * @default none
   */
  decode?: readonly number[];
}

/** The result of {@link parseCompact}: raw segments and the decoded, checked protected header. */
export interface CompactParts {
  /** The segments as received (canonical base64url, not yet decoded except the header). */
  segments: readonly string[];
  /** The protected header as a plain JSON object. */
  header: JsonObject;
  /**
   * The decoded bytes of the segments named in {@link CompactGuardOptions.decode}, by index
   * (`undefined` elsewhere): the unique decoding of each checked segment, never decoded again.
   */
  bytes: readonly (Buffer | undefined)[];
}

const SEGMENT = /^[A-Za-z0-9_-]*$/;
const BASE64URL_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Split and check a compact JWS/JWE, and decode its protected header.
 *
 * Order matters (rule 1): type and length first, then the leading `{` of JSON serialisation
 * (rule 10), then the segment count without splitting a hostile string into millions of pieces,
 * then the alphabet and canonical form of every segment, then the header size, UTF-8 and JSON
 * shape. Only then is `JSON.parse` called.
 *
 * @example
 * ```ts
 * const { segments, header } = parseCompact(token, {
 *   maxBytes: 8192,
 *   segments: 3,
 *   fail: (f, m) => new AuthenticationError(f === 'too-large' ? 'TOKEN_TOO_LARGE' : 'TOKEN_MALFORMED', m),
 * });
 * ```
 */
export function parseCompact(input: unknown, options: CompactGuardOptions): CompactParts {
  const { fail } = options;
  if (typeof input !== 'string') throw fail('malformed', 'not a compact serialisation string');
  if (input.length > options.maxBytes) throw fail('too-large', 'over the size limit');
  if (input.length === 0) throw fail('malformed', 'empty');
  if (input.charCodeAt(0) === 0x7b) throw fail('malformed', 'JSON serialisation is not accepted');

  const segments = splitExact(input, options.segments);
  if (!segments) throw fail('malformed', `expected exactly ${options.segments} segments`);
  const bytes: (Buffer | undefined)[] = new Array(segments.length).fill(undefined);
  for (let index = 0; index < segments.length; index += 1) {
    const segment = segments[index] as string;
    if (options.decode?.includes(index)) {
      const decoded = decodeCanonical(segment);
      if (decoded === undefined) {
        throw fail('malformed', nonCanonicalReason(segment) || 'segment is not canonical base64url');
      }
      bytes[index] = decoded;
      continue;
    }
    const reason = nonCanonicalReason(segment);
    if (reason) throw fail('malformed', reason);
  }

  const header = decodeJsonSegment(segments[0] ?? '', {
    maxBytes: options.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES,
    maxDepth: options.maxDepth ?? DEFAULT_MAX_JSON_DEPTH,
    fail,
    what: 'protected header',
  });
  return { segments, header, bytes };
}

/** Why a segment is not canonical base64url (the alphabet first), or '' when it is. */
function nonCanonicalReason(segment: string): string {
  if (!SEGMENT.test(segment)) return 'segment is not base64url';
  if (!isCanonicalBase64url(segment)) return 'segment is not canonical base64url';
  return '';
}

/** Options for {@link decodeJsonSegment}. */
export interface JsonSegmentOptions {
  /** Cap on the decoded bytes. */
  maxBytes: number;
  /** Cap on nesting depth. @default DEFAULT_MAX_JSON_DEPTH */
  maxDepth?: number;
  fail: GuardErrorFactory;
  /** Name used in error messages ("protected header", "claims set"). */
  what?: string;
}

/**
 * Decode one base64url segment that must hold a JSON object: size cap, strict UTF-8, a
 * duplicate-member and depth scan, then `JSON.parse`. The segment's alphabet must already have
 * been checked ({@link parseCompact} does).
 *
 * Duplicate members are refused because `JSON.parse` keeps the last one while other parsers keep
 * the first (SECURITY-CORPUS.md A9): two readers of one header must never see different values.
 */
export function decodeJsonSegment(segment: string, options: JsonSegmentOptions): JsonObject {
  const { fail } = options;
  const what = options.what ?? 'segment';
  if (segment.length === 0) throw fail('malformed', `${what} is empty`);
  // Decoded size is ⌊len · 3/4⌋: checking the encoded length avoids allocating a hostile buffer.
  if (Math.floor((segment.length * 3) / 4) > options.maxBytes)
    throw fail('malformed', `${what} is too large`);
  const bytes = Buffer.from(segment, 'base64url');
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    throw fail('malformed', `${what} is not UTF-8`);
  }
  const problem = scanJson(text, options.maxDepth ?? DEFAULT_MAX_JSON_DEPTH);
  if (problem) throw fail('malformed', `${what} ${problem}`);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw fail('malformed', `${what} is not JSON`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw fail('malformed', `${what} is not a JSON object`);
  }
  return value as JsonObject;
}

/**
 * Decode a base64url segment to bytes after checking its alphabet and canonical form.
 * Returns `undefined` when the segment is not canonical base64url.
 */
export function decodeSegment(segment: string): Buffer | undefined {
  if (!SEGMENT.test(segment) || !isCanonicalBase64url(segment)) return undefined;
  return Buffer.from(segment, 'base64url');
}

/**
 * The bytes of `segment` when it is canonical base64url, else `undefined`: the same acceptance as
 * {@link decodeSegment} (alphabet, no padding, possible length, zero spare bits), decided by
 * decoding and encoding again. `Buffer`'s encoder writes only the base64url alphabet, no padding
 * and zero spare bits, and decoding a canonical segment is exact, so the round trip gives the
 * segment back exactly when it is canonical (`Buffer`'s forgiving decoder — `+`, `/`, `=`,
 * whitespace, spare bits — can only make the two differ). Two native passes instead of a regex
 * pass plus the decode the caller needs anyway: about half the time on a 100 KB ciphertext.
 */
export function decodeCanonical(segment: string): Buffer | undefined {
  const bytes = Buffer.from(segment, 'base64url');
  return bytes.toString('base64url') === segment ? bytes : undefined;
}

/**
 * True when `segment` (already known to use the base64url alphabet) is the one encoding of its
 * bytes: no impossible length and no set bits in the unused low bits of the last character.
 * `Buffer` and `jose` both ignore those bits, which makes tokens malleable (A10).
 */
export function isCanonicalBase64url(segment: string): boolean {
  const rest = segment.length % 4;
  if (rest === 0) return true;
  if (rest === 1) return false;
  const last = BASE64URL_ALPHABET.indexOf(segment.charAt(segment.length - 1));
  if (last < 0) return false;
  // Two trailing characters carry one byte (4 spare bits); three carry two bytes (2 spare bits).
  const spareMask = rest === 2 ? 0x0f : 0x03;
  return (last & spareMask) === 0;
}

/** Split on `.` only if there are exactly `count` segments; never builds more than `count`. */
function splitExact(input: string, count: number): string[] | undefined {
  const out: string[] = [];
  let start = 0;
  for (;;) {
    const dot = input.indexOf('.', start);
    if (dot < 0) {
      out.push(input.slice(start));
      break;
    }
    if (out.length === count - 1) return undefined;
    out.push(input.slice(start, dot));
    start = dot + 1;
  }
  return out.length === count ? out : undefined;
}

interface Frame {
  object: boolean;
  expectKey: boolean;
  keys: Set<string> | undefined;
}

/**
 * One linear pass over JSON text that tracks containers on an explicit stack (no recursion, so a
 * deep input cannot exhaust the call stack) and records object member names. Returns a problem
 * description, or `undefined`. It does not validate the grammar: `JSON.parse` does that next, and
 * anything this scanner misreads is malformed JSON that `JSON.parse` rejects.
 */
function scanJson(text: string, maxDepth: number): string | undefined {
  const stack: Frame[] = [];
  const n = text.length;
  let i = 0;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === 0x7b || c === 0x5b) {
      // { or [
      if (stack.length >= maxDepth) return 'is nested too deeply';
      const object = c === 0x7b;
      stack.push({ object, expectKey: object, keys: object ? new Set() : undefined });
      i++;
    } else if (c === 0x7d || c === 0x5d) {
      stack.pop();
      i++;
    } else if (c === 0x2c) {
      // , — the next string in an object is a member name
      const top = stack[stack.length - 1];
      if (top?.object) top.expectKey = true;
      i++;
    } else if (c === 0x22) {
      const end = stringEnd(text, i);
      if (end < 0) return 'has an unterminated string';
      const top = stack[stack.length - 1];
      if (top?.object && top.expectKey) {
        let name: unknown;
        if (isPlainJsonString(text, i + 1, end)) {
          // No escape and no control character: the name is the text between the quotes.
          name = text.slice(i + 1, end);
        } else {
          try {
            // Decoding escapes makes "a" and "\u0061" the same name, as JSON.parse sees them.
            name = JSON.parse(text.slice(i, end + 1));
          } catch {
            return 'has an invalid member name';
          }
        }
        if (typeof name !== 'string') return 'has an invalid member name';
        if (top.keys?.has(name)) return 'has a duplicate member';
        top.keys?.add(name);
        top.expectKey = false;
      }
      i = end + 1;
    } else {
      i++;
    }
  }
  return undefined;
}

/**
 * True when the JSON string content between `from` and `to` has no backslash and no control
 * character: then `JSON.parse` of the quoted string is exactly that text, so it need not be called.
 */
function isPlainJsonString(text: string, from: number, to: number): boolean {
  for (let k = from; k < to; k += 1) {
    const c = text.charCodeAt(k);
    if (c === 0x5c || c < 0x20) return false;
  }
  return true;
}

/** Index of the closing quote of the string starting at `start`, or -1. */
function stringEnd(text: string, start: number): number {
  let i = start + 1;
  const n = text.length;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === 0x5c) i += 2;
    else if (c === 0x22) return i;
    else i++;
  }
  return -1;
}
