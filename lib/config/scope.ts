/**
 * Issuer scope: the organisations a trusted issuer may speak for.
 *
 * An issuer's `organisations` list holds exact ODS codes (`GP0001`) and prefix patterns (`FA*`: every
 * code that starts with `FA`). A pattern is one to nine upper-case letters or digits followed by a
 * single `*` at the end; there is no wildcard elsewhere, no character class and no "any": a bare `*`
 * is refused, so trusting an issuer for every organisation cannot happen by accident.
 */

/** An exact ODS code (3–10 upper-case letters or digits) or a prefix of one (1–9) followed by `*`. */
export const SCOPE_ENTRY_PATTERN = /^(?:[A-Z0-9]{3,10}|[A-Z0-9]{1,9}\*)$/;

/** Why `entry` is not a scope entry, or undefined when it is one. */
export function scopeEntryProblem(entry: string): string | undefined {
  if (entry === '*') {
    return 'a bare "*" (any organisation) is not accepted: list the ODS codes or prefixes (such as "FA*") this issuer speaks for';
  }
  if (SCOPE_ENTRY_PATTERN.test(entry)) return undefined;
  return 'an ODS code (3–10 upper-case letters or digits) or a prefix pattern such as "FA*" (1–9 of them, then one "*" at the end)';
}

/** Whether one scope entry covers the ODS code `ods`. */
function entryCovers(entry: string, ods: string): boolean {
  return entry.endsWith('*') ? ods.startsWith(entry.slice(0, -1)) : entry === ods;
}

/** Whether a scope (an issuer's `organisations`) covers the ODS code `ods`. */
export function scopeCovers(scope: readonly string[], ods: string): boolean {
  return scope.some((entry) => entryCovers(entry, ods));
}

/**
 * The organisations two scope entries both cover, described: the shorter prefix or the exact code
 * both include (`"FA*"`, `"FA123"`), or undefined when they are disjoint.
 */
export function entriesOverlap(a: string, b: string): string | undefined {
  const aPrefix = a.endsWith('*');
  const bPrefix = b.endsWith('*');
  if (!aPrefix && !bPrefix) return a === b ? a : undefined;
  if (aPrefix && !bPrefix) return entryCovers(a, b) ? b : undefined;
  if (!aPrefix && bPrefix) return entryCovers(b, a) ? a : undefined;
  // Two prefixes overlap when one extends the other; the longer one is what both cover.
  const [shorter, longer] = a.length <= b.length ? [a, b] : [b, a];
  return longer.startsWith(shorter.slice(0, -1)) ? longer : undefined;
}
