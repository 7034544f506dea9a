import { describe, expect, it } from 'vitest';
import { bearerCredential } from '../../lib/ingest.js';

describe('bearerCredential — the front doors’ one Authorization parser', () => {
  const jwt = 'eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJ4In0.c2ln';

  it('matches the scheme name case-insensitively (RFC 7235 §2.1), as every HTTP client may spell it', () => {
    for (const scheme of ['Bearer', 'bearer', 'BEARER', 'bEaReR']) {
      expect(bearerCredential(`${scheme} ${jwt}`)).toBe(jwt);
    }
    expect(bearerCredential(`Bearer  ${jwt}`)).toBe(jwt);
  });

  it('refuses anything that is not one compact JWT after the scheme', () => {
    for (const value of [
      undefined,
      '',
      jwt,
      `Basic ${jwt}`,
      `Bearer`,
      `Bearer ${jwt} extra`,
      `Bearer ${jwt}=`,
    ]) {
      expect(bearerCredential(value)).toBeUndefined();
    }
  });
});
