/**
 * Capture everything a run writes (process.stdout / process.stderr writes — where Powertools' own
 * Console writes — and the console methods) and scan it for what must never be logged: message
 * bytes, tokens and envelope segments, key material and NHS numbers. Findings are reported by kind
 * and position only, never with the matched text.
 */
import { vi } from 'vitest';

export interface Capture {
  /** Everything written so far, split into lines. */
  lines(): string[];
  stop(): void;
}

/** Start capturing. Writes are swallowed (not passed through) so the test output stays clean. */
export function captureOutput(): Capture {
  const chunks: string[] = [];
  const take = (chunk: unknown): void => {
    chunks.push(typeof chunk === 'string' ? chunk : Buffer.from(chunk as Uint8Array).toString('utf8'));
  };
  const spies = [
    vi.spyOn(process.stdout, 'write').mockImplementation((chunk: unknown) => {
      take(chunk);
      return true;
    }),
    vi.spyOn(process.stderr, 'write').mockImplementation((chunk: unknown) => {
      take(chunk);
      return true;
    }),
    ...(['log', 'info', 'warn', 'error', 'debug', 'trace'] as const).map((method) =>
      vi.spyOn(console, method).mockImplementation((...args: unknown[]) => {
        take(`${args.map((a) => (typeof a === 'string' ? a : JSON.stringify(a))).join(' ')}\n`);
      }),
    ),
  ];
  return {
    lines: () =>
      chunks
        .join('')
        .split('\n')
        .filter((l) => l.trim().length > 0),
    stop: () => {
      for (const spy of spies) spy.mockRestore();
    },
  };
}

/** What must not appear. */
export interface Secrets {
  /** Plaintext Bundles. */
  bundles: Uint8Array[];
  /** Credentials, sealed messages, inner JWS, and private key members (base64url). */
  envelopes: string[];
}

type LeakKind = 'bundle-bytes' | 'token-or-envelope' | 'jwk-private-member' | 'pem' | 'nhs-number';

export interface Leak {
  kind: LeakKind;
  /** Index of the offending line in the scanned list. */
  line: number;
}

const WINDOW = 41; // "no substring of any Bundle longer than 40 chars"
const B64URL_RUN = /[A-Za-z0-9_-]{40,}/g;
// Not next to letters either: a 10-digit run inside a UUID's hex group would pass the modulus-11
// check about one time in eleven and make the scan flaky.
const TEN_DIGITS = /(?<![0-9A-Za-z])([0-9]{10}|[0-9]{3} [0-9]{3} [0-9]{4})(?![0-9A-Za-z])/g;

/** NHS number check digit (modulus 11, weights 10..2). */
function isNhsNumber(candidate: string): boolean {
  const digits = candidate.replace(/ /g, '');
  if (!/^[0-9]{10}$/.test(digits)) return false;
  let sum = 0;
  for (let i = 0; i < 9; i += 1) sum += Number(digits[i]) * (10 - i);
  const check = 11 - (sum % 11);
  if (check === 10) return false;
  return (check === 11 ? 0 : check) === Number(digits[9]);
}

/** The line and every string value inside it when it is JSON (so escaped content is seen too). */
function textsOf(line: string): string[] {
  const out = [line];
  const trimmed = line.trim();
  if (trimmed.startsWith('{') || trimmed.startsWith('[')) {
    try {
      const walk = (v: unknown): void => {
        if (typeof v === 'string') out.push(v);
        else if (Array.isArray(v)) v.forEach(walk);
        else if (v && typeof v === 'object') Object.values(v).forEach(walk);
      };
      walk(JSON.parse(trimmed));
    } catch {
      // not JSON: the raw line is scanned
    }
  }
  return out;
}

/** Scan `lines` for leaks of `secrets`. */
export function scanForLeaks(lines: readonly string[], secrets: Secrets): Leak[] {
  const leaks: Leak[] = [];
  const haystack = secrets.envelopes.join('\n');

  // Every 41-character window of every text, mapped to its line, then probed with the Bundles.
  const windows = new Map<string, number>();
  for (const [i, line] of lines.entries()) {
    for (const text of textsOf(line)) {
      for (let at = 0; at + WINDOW <= text.length; at += 1) windows.set(text.slice(at, at + WINDOW), i);
      for (const run of text.match(B64URL_RUN) ?? []) {
        if (haystack.includes(run)) leaks.push({ kind: 'token-or-envelope', line: i });
      }
      if (/"d"\s*:/.test(text)) leaks.push({ kind: 'jwk-private-member', line: i });
      if (/-----BEGIN [A-Z ]*KEY-----/.test(text)) leaks.push({ kind: 'pem', line: i });
      for (const m of text.matchAll(TEN_DIGITS))
        if (isNhsNumber(m[1] ?? '')) leaks.push({ kind: 'nhs-number', line: i });
    }
  }
  const decoder = new TextDecoder();
  for (const bundle of secrets.bundles) {
    const text = decoder.decode(bundle);
    for (let at = 0; at + WINDOW <= text.length; at += 1) {
      const line = windows.get(text.slice(at, at + WINDOW));
      if (line !== undefined) {
        leaks.push({ kind: 'bundle-bytes', line });
        break;
      }
    }
  }
  return leaks;
}

/** NHS numbers that occur in a text (used to prove the detector sees the ones in the Bundles). */
export function nhsNumbersIn(text: string): string[] {
  return [...text.matchAll(TEN_DIGITS)].map((m) => m[1] ?? '').filter(isNhsNumber);
}

/** Leaks summarised by kind (safe to print). */
export function leakSummary(leaks: readonly Leak[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const l of leaks) out[l.kind] = (out[l.kind] ?? 0) + 1;
  return out;
}
