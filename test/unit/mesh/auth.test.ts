/**
 * The NHSMESH token against vectors computed independently (Python's hmac, see the comments), a
 * fresh nonce on every request, and the clock-skew rule.
 */
import { describe, expect, it } from 'vitest';
import {
  MESH_MAX_SKEW_MINUTES,
  MeshClockSkewError,
  MeshTokenSource,
  meshAuthorization,
  meshTimestamp,
  Secret,
} from '../../../lib/mesh/index.js';

const TOKEN = /^NHSMESH ([A-Z0-9]+):([0-9a-f-]{36}):(\d+):(\d{12}):([0-9a-f]{64})$/;

describe('NHSMESH authorization header', () => {
  it('matches a vector computed with Python hmac', () => {
    // python3 -c "import hmac,hashlib; print(hmac.new(b'TestKey',
    //   b'X26ABC1:4f8d1c2e-7b1a-4c3e-9d2f-0a1b2c3d4e5f:0:password:202612030815', hashlib.sha256).hexdigest())"
    expect(
      meshAuthorization({
        mailbox: 'x26abc1',
        password: 'password',
        sharedKey: 'TestKey',
        nonce: '4f8d1c2e-7b1a-4c3e-9d2f-0a1b2c3d4e5f',
        nonceCount: 0,
        timestamp: '202612030815',
      }),
    ).toBe(
      'NHSMESH X26ABC1:4f8d1c2e-7b1a-4c3e-9d2f-0a1b2c3d4e5f:0:202612030815:0f6dff076192d55e2a89eef050af3021bdce206df455ef274672280c9b74429b',
    );
  });

  it('puts the nonce count in both the public part and the HMAC input', () => {
    // python3 -c "import hmac,hashlib; print(hmac.new(b'BackBone',
    //   b'MAILBOX01:2c001608-5f09-4840-9611-bea43e666a30:1:secret-pw:201511201038', hashlib.sha256).hexdigest())"
    expect(
      meshAuthorization({
        mailbox: 'MAILBOX01',
        password: 'secret-pw',
        sharedKey: 'BackBone',
        nonce: '2c001608-5f09-4840-9611-bea43e666a30',
        nonceCount: 1,
        timestamp: '201511201038',
      }),
    ).toBe(
      'NHSMESH MAILBOX01:2c001608-5f09-4840-9611-bea43e666a30:1:201511201038:b977811f7e0a39adb390052f36595da4e2fd84499ff107d9f3a1a05f4e96bda8',
    );
  });

  it('formats the timestamp as UTC yyyyMMddHHmm', () => {
    expect(meshTimestamp(new Date('2026-12-03T08:15:59.999Z'))).toBe('202612030815');
    expect(meshTimestamp(new Date('2027-01-01T00:00:00Z'))).toBe('202701010000');
  });

  it('gives every request a fresh nonce and never shows the secrets', () => {
    const source = new MeshTokenSource(
      'X26ABC1',
      new Secret('pw-do-not-leak'),
      new Secret('key-do-not-leak'),
    );
    const tokens = Array.from({ length: 50 }, () => source.next());
    const nonces = tokens.map((t) => TOKEN.exec(t)?.[2]);
    expect(nonces.every((n) => n !== undefined)).toBe(true);
    expect(new Set(nonces).size).toBe(50);
    for (const t of tokens) {
      expect(t).not.toContain('pw-do-not-leak');
      expect(t).not.toContain('key-do-not-leak');
    }
  });

  it('refuses to make tokens when the clock is beyond MESH’s 2-hour rule, and accepts an hour off', () => {
    let now = Date.parse('2026-12-03T08:00:00Z');
    const source = new MeshTokenSource('X26ABC1', new Secret('p'), new Secret('k'), () => now);
    source.observeServerDate('Thu, 03 Dec 2026 09:00:00 GMT'); // server 1 h ahead
    expect(source.next()).toMatch(TOKEN);
    source.observeServerDate('Thu, 03 Dec 2026 10:30:00 GMT'); // 2 h 30 ahead
    expect(() => source.next()).toThrow(MeshClockSkewError);
    expect(() => source.next()).toThrow(/150 minutes away from MESH's .* more than 120 minutes/);
    now += 150 * 60_000; // the local clock was fixed
    source.observeServerDate('Thu, 03 Dec 2026 10:30:00 GMT');
    expect(source.next()).toMatch(TOKEN);
    expect(MESH_MAX_SKEW_MINUTES).toBe(120);
  });
});
