import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { uuidFrom } from '../../../lib/itk3/ids.js';

describe('uuidFrom', () => {
  it('is the version-5 UUID of SHA-1(namespace ‖ UTF-8 seed), the same for the same seed', () => {
    const namespace = Buffer.from('5d8f6a1e3b2c4e0f9a7b6c5d4e3f2a1b', 'hex');
    for (const seed of ['', 'trace#response#20013', 'é😀', 'x'.repeat(5000)]) {
      const bytes = createHash('sha1').update(namespace).update(seed, 'utf8').digest().subarray(0, 16);
      bytes[6] = ((bytes[6] as number) & 0x0f) | 0x50;
      bytes[8] = ((bytes[8] as number) & 0x3f) | 0x80;
      const hex = bytes.toString('hex');
      const expected = `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
      expect(uuidFrom(seed)).toBe(expected);
      expect(uuidFrom(seed)).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    }
    expect(uuidFrom('a')).not.toBe(uuidFrom('b'));
  });
});
