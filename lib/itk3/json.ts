/**
 * Hardened JSON reading: one cheap iterative pass before `JSON.parse`.
 *
 * `JSON.parse` has no depth limit and silently keeps the last of duplicate member names (FHIR JSON
 * forbids duplicates, and "last wins" lets two readers see two different messages). The pre-scan
 * bounds nesting and value count, and rejects duplicate names (compared after unescaping, so
 * `"a"` and `"\u0061"` collide). It never recurses. The grammar itself is left to `JSON.parse`.
 */

/** Caps that bound time and memory whatever the input. */
export interface JsonLimits {
  /** Maximum nesting of objects and arrays (the outer value is depth 1). */
  readonly maxDepth: number;
  /** Maximum number of objects and arrays in the document. */
  readonly maxContainers: number;
}

/** Thrown for any refusal; the message is ours and static (never document content). */
export class JsonRefusal extends Error {}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const COMMA = 0x2c;

interface Frame {
  readonly keys: Set<string> | undefined; // undefined for arrays
  expectKey: boolean;
}

/** Parse JSON text after the depth/size/duplicate-name pre-scan. Throws {@link JsonRefusal}. */
export function readJson(text: string, limits: JsonLimits): unknown {
  scan(text, limits);
  try {
    return JSON.parse(text) as unknown;
  } catch {
    // V8's message quotes the text around the error: keep none of it.
    throw new JsonRefusal('JSON is not well-formed');
  }
}

function scan(text: string, limits: JsonLimits): void {
  const stack: Frame[] = [];
  let containers = 0;
  const length = text.length;
  let i = 0;
  while (i < length) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      const end = endOfString(text, i);
      const top = stack[stack.length - 1];
      if (top?.keys !== undefined && top.expectKey) {
        const key = decodeKey(text, i, end);
        if (top.keys.has(key)) throw new JsonRefusal('JSON has a duplicate member name');
        top.keys.add(key);
        top.expectKey = false;
      }
      i = end + 1;
      continue;
    }
    if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      containers += 1;
      if (stack.length + 1 > limits.maxDepth) throw new JsonRefusal('JSON nesting too deep');
      if (containers > limits.maxContainers) throw new JsonRefusal('JSON has too many values');
      stack.push({ keys: c === OPEN_BRACE ? new Set<string>() : undefined, expectKey: c === OPEN_BRACE });
    } else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
      if (stack.pop() === undefined) throw new JsonRefusal('JSON is not well-formed');
    } else if (c === COMMA) {
      const top = stack[stack.length - 1];
      if (top?.keys !== undefined) top.expectKey = true;
    }
    i += 1;
  }
  if (stack.length !== 0) throw new JsonRefusal('JSON is not well-formed');
}

/** Index of the closing quote of the string starting at `start`. */
function endOfString(text: string, start: number): number {
  let i = start + 1;
  const length = text.length;
  while (i < length) {
    const c = text.charCodeAt(i);
    if (c === BACKSLASH) i += 2;
    else if (c === QUOTE) return i;
    else i += 1;
  }
  throw new JsonRefusal('JSON is not well-formed');
}

function decodeKey(text: string, start: number, end: number): string {
  const raw = text.slice(start + 1, end);
  if (!raw.includes('\\')) return raw;
  try {
    return JSON.parse(text.slice(start, end + 1)) as string;
  } catch {
    throw new JsonRefusal('JSON is not well-formed');
  }
}
