import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { sha256Hex } from '../../lib/hashing.js';

describe('sha256Hex', () => {
  it('is the SHA-256 of the bytes, or of a string as UTF-8, in lower-case hex', () => {
    const reference = (data: Uint8Array | string) => createHash('sha256').update(data).digest('hex');
    for (const data of [
      '',
      'abc',
      'trace\n20013',
      'é ü 😀 \u2028',
      Buffer.alloc(0),
      Buffer.from([0, 255, 1]),
    ]) {
      expect(sha256Hex(data)).toBe(reference(data));
    }
    const big = new Uint8Array(Buffer.alloc(200_000, 0x41)).subarray(7, 150_007);
    expect(sha256Hex(big)).toBe(reference(big));
    // The FIPS 180-2 example, pinned.
    expect(sha256Hex('abc')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  });
});
