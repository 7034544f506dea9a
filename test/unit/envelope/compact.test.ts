import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  decodeCanonical,
  decodeJsonSegment,
  decodeSegment,
  type GuardFailure,
  isCanonicalBase64url,
  parseCompact,
} from '../../../lib/envelope/compact.js';
import { b64u } from './helpers.js';

class GuardTestError extends Error {
  constructor(
    readonly failure: GuardFailure,
    message: string,
  ) {
    super(message);
  }
}
const fail = (failure: GuardFailure, message: string) => new GuardTestError(failure, message);

function failureOf(action: () => unknown): GuardFailure | 'none' {
  try {
    action();
    return 'none';
  } catch (error) {
    expect(error).toBeInstanceOf(GuardTestError);
    return (error as GuardTestError).failure;
  }
}

function refusalOf(action: () => unknown): { failure: GuardFailure | 'none'; message?: string } {
  try {
    action();
    return { failure: 'none' };
  } catch (error) {
    expect(error).toBeInstanceOf(GuardTestError);
    return { failure: (error as GuardTestError).failure, message: (error as Error).message };
  }
}

const decode = (json: string, maxDepth?: number) =>
  decodeJsonSegment(b64u(json), { maxBytes: 4096, fail, ...(maxDepth ? { maxDepth } : {}) });
const parse = (input: unknown, segments: 3 | 5 = 3, maxBytes = 10_000) =>
  parseCompact(input, { maxBytes, segments, fail });

describe('parseCompact', () => {
  const header = b64u('{"alg":"ES256"}');

  it('returns the segments and the decoded header', () => {
    expect(parse(`${header}.cGF5.c2ln`)).toEqual({
      segments: [header, 'cGF5', 'c2ln'],
      header: { alg: 'ES256' },
      bytes: [undefined, undefined, undefined],
    });
    expect(parse(`${header}.AA.AAA.AAAA.AQ`, 5).segments).toHaveLength(5);
  });

  it('returns the segments it is asked to decode as their checked bytes, and refuses them alike', () => {
    const parts = parseCompact(`${header}.cGF5.c2ln`, {
      maxBytes: 10_000,
      segments: 3,
      fail,
      decode: [1, 2],
    });
    expect(parts.bytes.map((b) => b?.toString('latin1'))).toEqual([undefined, 'pay', 'sig']);
    for (const input of [
      `${header}.cGF5=.c2ln`,
      `${header}.cGF5.c2l+`,
      `${header}.cGF.c2ln`,
      `${header}.c.c2ln`,
    ]) {
      const withDecode = () => parseCompact(input, { maxBytes: 10_000, segments: 3, fail, decode: [1, 2] });
      // The same refusal, with the same message, as the alphabet and canonical checks give.
      expect(refusalOf(withDecode), input).toEqual(refusalOf(() => parse(input)));
      expect(refusalOf(withDecode).failure).toBe('malformed');
    }
  });

  it('checks the size before anything else, and uses the caller error factory', () => {
    expect(failureOf(() => parse('x'.repeat(101), 3, 100))).toBe('too-large');
    expect(failureOf(() => parse(`{${'x'.repeat(200)}`, 3, 100))).toBe('too-large');
    expect(failureOf(() => parse(42))).toBe('malformed');
    expect(failureOf(() => parse(''))).toBe('malformed');
  });

  it('refuses JSON serialisation, wrong segment counts and characters outside base64url', () => {
    for (const input of [
      `{"protected":"${header}"}`,
      `${header}.a`,
      `${header}.a.b.c`,
      `${header}.a.b.c.d.e`,
      `${header}.a=.b`,
      `${header}.a .b`,
      `${header}.a\t.b`,
      `${header}.a+.b`,
      `${header}.a/.b`,
      `${header}.ä.b`,
    ]) {
      expect(
        failureOf(() => parse(input)),
        input,
      ).toBe('malformed');
    }
    expect(failureOf(() => parse(`${header}.a.b.c`, 5))).toBe('malformed');
  });

  it('refuses an oversize header even when the whole input is within its cap', () => {
    const big = b64u(`{"alg":"${'x'.repeat(5000)}"}`);
    expect(failureOf(() => parse(`${big}.a.b`, 3, 100_000))).toBe('malformed');
  });
});

describe('isCanonicalBase64url / decodeSegment', () => {
  it('accepts what Buffer encodes, for any bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        const text = Buffer.from(bytes).toString('base64url');
        expect(isCanonicalBase64url(text)).toBe(true);
        expect(Buffer.from(decodeSegment(text) ?? []).equals(Buffer.from(bytes))).toBe(true);
      }),
    );
  });

  it('refuses impossible lengths and set spare bits (A10)', () => {
    expect(isCanonicalBase64url('A')).toBe(false);
    expect(isCanonicalBase64url('AAAAA')).toBe(false);
    expect(isCanonicalBase64url('AB')).toBe(false); // 'B' sets a spare bit of a 1-byte tail
    expect(isCanonicalBase64url('AQ')).toBe(true);
    expect(isCanonicalBase64url('AAB')).toBe(false);
    expect(isCanonicalBase64url('AAE')).toBe(true);
    expect(decodeSegment('AB')).toBeUndefined();
    expect(decodeSegment('A=')).toBeUndefined();
  });
});

describe('decodeCanonical', () => {
  const accepts = (text: string) => /^[A-Za-z0-9_-]*$/.test(text) && isCanonicalBase64url(text);

  it('accepts exactly what the alphabet and canonical checks accept, with the same bytes', () => {
    // Strings near base64url: its alphabet plus what Buffer's decoder forgives or skips.
    const near = fc.string({
      unit: fc.constantFrom(...'AQgw_-zZ09+/= \t\nä.'.split(''), 'B', 'E', 'A'),
      maxLength: 24,
    });
    fc.assert(
      fc.property(fc.oneof(near, fc.string({ maxLength: 12 })), (text) => {
        const bytes = decodeCanonical(text);
        expect(bytes !== undefined, JSON.stringify(text)).toBe(accepts(text));
        if (bytes) expect(bytes.equals(decodeSegment(text) ?? Buffer.alloc(1))).toBe(true);
      }),
      { numRuns: 5000 },
    );
  });

  it('refuses padding, whitespace, + and /, impossible lengths and set spare bits (A10)', () => {
    for (const text of ['AQ==', 'AQ=', 'A Q', 'A+', 'A/', 'A', 'AAAAA', 'AB', 'AAB', 'AQ\n', '\u00c4Q']) {
      expect(decodeCanonical(text), JSON.stringify(text)).toBeUndefined();
    }
    expect(decodeCanonical('')?.length).toBe(0);
    expect(decodeCanonical('AQ')).toEqual(Buffer.from([1]));
    expect(decodeCanonical('_-8')).toEqual(Buffer.from([0xff, 0xef]));
  });
});

describe('decodeJsonSegment', () => {
  it('decodes any JSON object JSON.stringify makes (no false duplicate or depth alarms)', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.string(), fc.jsonValue({ maxDepth: 4 })), (obj) => {
        const json = JSON.stringify(obj);
        if (Buffer.byteLength(json) > 3000) return;
        expect(decode(json)).toEqual(JSON.parse(json));
      }),
    );
  });

  it('refuses duplicate members at any level, also when spelled with escapes (A9)', () => {
    expect(failureOf(() => decode('{"a":1,"a":2}'))).toBe('malformed');
    expect(failureOf(() => decode('{"a":1,"\\u0061":2}'))).toBe('malformed');
    expect(failureOf(() => decode('{"x":{"b":1,"b":1}}'))).toBe('malformed');
    expect(failureOf(() => decode('{"x":[{"b":1},{"b":1,"b":2}]}'))).toBe('malformed');
    expect(failureOf(() => decode('{"__proto__":1,"__proto__":2}'))).toBe('malformed');
  });

  it('allows the same name in different objects and structural characters inside strings', () => {
    expect(decode('{"a":{"a":{"a":1}},"b":[{"a":1},{"a":2}]}')).toEqual({
      a: { a: { a: 1 } },
      b: [{ a: 1 }, { a: 2 }],
    });
    expect(decode('{"s":"{\\"a\\":1,\\"a\\":2}","t":"]]]}}}","u":"\\\\"}')).toEqual({
      s: '{"a":1,"a":2}',
      t: ']]]}}}',
      u: '\\',
    });
  });

  it('refuses deep nesting without recursion, non-objects, bad JSON and bad UTF-8 (A13, A29)', () => {
    expect(failureOf(() => decode(`{"a":${'['.repeat(17)}${']'.repeat(17)}}`))).toBe('malformed');
    expect(failureOf(() => decode('{"a":[[1]]}', 2))).toBe('malformed');
    expect(decode('{"a":[1]}', 2)).toEqual({ a: [1] });
    for (const json of [
      '[]',
      'null',
      '1',
      '"s"',
      '{"a":1',
      '{"a":1}x',
      '{"a":"unterminated}',
      '\ufeff{}',
      '',
    ]) {
      expect(
        failureOf(() => decode(json)),
        JSON.stringify(json),
      ).toBe('malformed');
    }
    const badUtf8 = Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]).toString('base64url');
    expect(failureOf(() => decodeJsonSegment(badUtf8, { maxBytes: 100, fail }))).toBe('malformed');
  });

  it('handles a megabyte of brackets quickly', () => {
    const started = performance.now();
    const hostile = b64u(`{"a":${'['.repeat(1_000_000)}`);
    expect(failureOf(() => decodeJsonSegment(hostile, { maxBytes: 2_000_000, fail }))).toBe('malformed');
    expect(performance.now() - started).toBeLessThan(1000);
  });
});
