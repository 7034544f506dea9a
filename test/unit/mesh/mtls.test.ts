/**
 * Mutual TLS for real: an HTTPS server that demands a client certificate from its CA (as MESH
 * does), certificates made with openssl for this run. The client presents the configured
 * certificate and trusts only the configured CA; without a certificate, or against a server from
 * another CA, or presenting a certificate the server does not trust, it fails without a secret in the
 * error.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { inspect } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HttpMeshClient, MeshError } from '../../../lib/mesh/index.js';
import { makeTempDir, removeTempDirs } from '../../support/world.js';

function hasOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const OPENSSL = hasOpenssl();
if (!OPENSSL)
  console.warn('SKIPPED suite "MESH mutual TLS": openssl is not installed (it makes the test certificates)');

interface Pki {
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  otherCa: string;
  strangerCert: string;
  strangerKey: string;
}

/** A CA, a server certificate for 127.0.0.1 and a client certificate for a mailbox, plus an unrelated CA. */
function makePki(dir: string): Pki {
  const ossl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  ossl(
    'req',
    '-x509',
    ...ec,
    '-keyout',
    'ca.key',
    '-out',
    'ca.crt',
    '-days',
    '1',
    '-subj',
    '/CN=itk3 test MESH CA',
  );
  ossl(
    'req',
    '-x509',
    ...ec,
    '-keyout',
    'other.key',
    '-out',
    'other.crt',
    '-days',
    '1',
    '-subj',
    '/CN=other CA',
  );
  writeFileSync(join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1\n');
  ossl('req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1');
  ossl(
    'x509',
    '-req',
    '-in',
    'server.csr',
    '-CA',
    'ca.crt',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-out',
    'server.crt',
    '-days',
    '1',
    '-extfile',
    'server.ext',
  );
  ossl(
    'req',
    ...ec,
    '-keyout',
    'client.key',
    '-out',
    'client.csr',
    '-subj',
    '/CN=x26abc2.X26.api.mesh-client.nhs.uk',
  );
  ossl(
    'x509',
    '-req',
    '-in',
    'client.csr',
    '-CA',
    'ca.crt',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-out',
    'client.crt',
    '-days',
    '1',
  );
  ossl('req', ...ec, '-keyout', 'stranger.key', '-out', 'stranger.csr', '-subj', '/CN=stranger');
  ossl(
    'x509',
    '-req',
    '-in',
    'stranger.csr',
    '-CA',
    'other.crt',
    '-CAkey',
    'other.key',
    '-CAcreateserial',
    '-out',
    'stranger.crt',
    '-days',
    '1',
  );
  const read = (f: string) => readFileSync(join(dir, f), 'utf8');
  return {
    ca: read('ca.crt'),
    serverCert: read('server.crt'),
    serverKey: read('server.key'),
    clientCert: read('client.crt'),
    clientKey: read('client.key'),
    otherCa: read('other.crt'),
    strangerCert: read('stranger.crt'),
    strangerKey: read('stranger.key'),
  };
}

describe.skipIf(!OPENSSL)('MESH mutual TLS', () => {
  let pki: Pki;
  let server: Server;
  let url: string;
  const peers: string[] = [];

  beforeAll(async () => {
    pki = makePki(makeTempDir('itk3-mtls-'));
    server = createServer(
      { cert: pki.serverCert, key: pki.serverKey, ca: pki.ca, requestCert: true, rejectUnauthorized: true },
      (req, res) => {
        peers.push(String((req.socket as TLSSocket).getPeerCertificate().subject?.CN));
        res.end();
      },
    );
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    removeTempDirs();
  });

  const options = (tls: Record<string, string> | undefined) => ({
    url,
    mailbox: 'X26ABC2',
    password: 'pw-SECRET-1',
    sharedKey: 'shared-SECRET-2',
    ...(tls ? { tls } : {}),
  });

  it('presents the client certificate and trusts the configured CA', async () => {
    const client = new HttpMeshClient(options({ cert: pki.clientCert, key: pki.clientKey, ca: pki.ca }));
    await client.handshake();
    client.close();
    expect(peers.at(-1)).toBe('x26abc2.X26.api.mesh-client.nhs.uk');
  });

  it('is turned away by the server when its certificate is not from the server’s CA', async () => {
    const client = new HttpMeshClient(options({ cert: pki.strangerCert, key: pki.strangerKey, ca: pki.ca }));
    const error = await client.handshake().catch((e) => e);
    client.close();
    expect(error).toBeInstanceOf(MeshError);
    expect((error as Error).message).toMatch(/MESH POST 127\.0\.0\.1:\d+ failed/);
    expect(peers).not.toContain('stranger');
  });

  it('fails clearly with a certificate that does not match its key, without a secret in the error', async () => {
    const client = new HttpMeshClient(options({ cert: pki.otherCa, key: pki.clientKey, ca: pki.ca }));
    const error = await client.handshake().catch((e) => e);
    client.close();
    expect(error).toBeInstanceOf(MeshError);
    expect((error as MeshError).kind).toBe('permanent');
    expect((error as Error).message).toMatch(/check the TLS certificate, key and CA/);
    const text = `${(error as Error).message}\n${inspect(error, { depth: 10 })}`;
    expect(text).not.toContain('pw-SECRET-1');
    expect(text).not.toContain('shared-SECRET-2');
    expect(text).not.toContain(pki.clientKey.split('\n')[1]!);
  });

  it('refuses a server whose certificate is not from the configured CA', async () => {
    const client = new HttpMeshClient(options({ cert: pki.clientCert, key: pki.clientKey, ca: pki.otherCa }));
    const error = await client.handshake().catch((e) => e);
    client.close();
    expect(error).toBeInstanceOf(MeshError);
    expect((error as MeshError).kind).toBe('permanent');
    expect((error as Error).message).toMatch(/check the TLS certificate, key and CA/);
  });
});
