/**
 * Connection options: mutual TLS required for any non-loopback host, plain HTTP only to loopback,
 * and the secrets never printed by validation errors, inspection or JSON.
 */
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { isLoopbackHost, MeshConfigError, meshConnection } from '../../../lib/mesh/index.js';

const SECRETS = { password: 'pw-SECRET-1', sharedKey: 'shared-SECRET-2' };
const PEM_KEY = '-----BEGIN PRIVATE KEY-----\nkey-SECRET-3\n-----END PRIVATE KEY-----\n';
const PEM_CERT = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';
const base = { mailbox: 'X26ABC1', ...SECRETS };

function expectNoSecrets(text: string): void {
  for (const s of ['pw-SECRET-1', 'shared-SECRET-2', 'key-SECRET-3']) expect(text).not.toContain(s);
}

describe('MESH connection options', () => {
  it.each(['127.0.0.1', '127.10.20.30', 'localhost', '[::1]'])(
    'allows plain HTTP to loopback host %s',
    (host) => {
      expect(meshConnection({ ...base, url: `http://${host}:47701` }).url.protocol).toBe('http:');
    },
  );

  it.each([
    ['http://msg.intspineservices.nhs.uk', /refusing to send MESH credentials over plain HTTP/],
    ['http://10.0.0.5:8080', /refusing to send MESH credentials over plain HTTP/],
    ['http://128.0.0.1', /refusing to send MESH credentials over plain HTTP/],
    ['https://msg.intspineservices.nhs.uk', /needs mutual TLS: set tls.cert and tls.key/],
  ])('refuses %s without TLS', (url, message) => {
    expect(() => meshConnection({ ...base, url })).toThrow(MeshConfigError);
    expect(() => meshConnection({ ...base, url })).toThrow(message);
  });

  it('accepts https with a client certificate, key and CA', () => {
    const c = meshConnection({
      ...base,
      url: 'https://msg.intspineservices.nhs.uk',
      tls: { cert: PEM_CERT, key: PEM_KEY, ca: PEM_CERT },
    });
    expect(c.tls?.cert).toBe(PEM_CERT);
    expect(c.mailbox).toBe('X26ABC1');
    expectNoSecrets(inspect(c, { depth: 10 }));
    expectNoSecrets(JSON.stringify(c));
    expectNoSecrets(String(c.password) + String(c.sharedKey) + String(c.tls?.key));
  });

  it('names the bad fields, never their values', () => {
    let error: unknown;
    try {
      meshConnection({
        ...base,
        url: 'https://msg.intspineservices.nhs.uk/some/path',
        mailbox: 'X26 ABC1',
        tls: { cert: 'not pem', key: 'key-SECRET-3' },
      });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(MeshConfigError);
    const text = `${(error as Error).message}\n${(error as Error).stack}\n${inspect(error)}`;
    expect(text).toMatch(/mailbox: a MESH mailbox id is letters and digits/);
    expect(text).toMatch(/tls.cert: must be PEM text/);
    expect(text).toMatch(/tls.key: must be PEM text/);
    expectNoSecrets(text);
  });

  it('refuses a URL with a path or embedded credentials', () => {
    expect(() => meshConnection({ ...base, url: 'http://127.0.0.1:1/messageexchange' })).toThrow(
      /scheme:\/\/host/,
    );
    expect(() => meshConnection({ ...base, url: 'http://u:pw-SECRET-1@127.0.0.1:1' })).toThrow(
      /scheme:\/\/host/,
    );
  });

  it('knows loopback', () => {
    expect(isLoopbackHost('127.0.0.1')).toBe(true);
    expect(isLoopbackHost('[::1]')).toBe(true);
    expect(isLoopbackHost('localhost')).toBe(true);
    expect(isLoopbackHost('127.0.0.1.nip.io')).toBe(false);
    expect(isLoopbackHost('::ffff:10.0.0.1')).toBe(false);
    expect(isLoopbackHost('example.com')).toBe(false);
  });
});
