/**
 * The HTTP adapter against a real loopback HTTP server playing MESH's failure modes: typed errors
 * (auth, transient, permanent), size caps checked before reading a body (Content-Length) and while
 * reading and decompressing it, and no secret in any error, however it is printed.
 */
import { createHmac } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { inspect } from 'node:util';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HttpMeshClient, MeshAuthError, MeshError, MeshTooLargeError } from '../../../lib/mesh/index.js';

const PASSWORD = 'pw-SECRET-1';
const SHARED = 'shared-SECRET-2';

type Handler = (req: IncomingMessage, res: ServerResponse) => void;
let handler: Handler = (_req, res) => res.end();
let server: Server;
let url: string;
const seenAuth: string[] = [];

beforeAll(async () => {
  server = createServer((req, res) => {
    seenAuth.push(String(req.headers.authorization));
    handler(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

function client(extra: Record<string, unknown> = {}): HttpMeshClient {
  return new HttpMeshClient({ url, mailbox: 'x26abc2', password: PASSWORD, sharedKey: SHARED, ...extra });
}

function printed(error: unknown): string {
  const e = error as Error;
  return `${e.message}\n${e.stack}\n${inspect(e, { depth: 10 })}\n${JSON.stringify(e)}`;
}

function expectNoSecrets(text: string): void {
  expect(text).not.toContain(PASSWORD);
  expect(text).not.toContain(SHARED);
  expect(text).not.toContain('NHSMESH');
}

describe('HttpMeshClient', () => {
  it('sends a token the server can verify with the shared key, fresh on every request', async () => {
    seenAuth.length = 0;
    handler = (req, res) => {
      const [, body] = String(req.headers.authorization).split(' ');
      const [mailbox, nonce, count, ts, hash] = (body ?? '').split(':');
      const expected = createHmac('sha256', SHARED)
        .update(`${mailbox}:${nonce}:${count}:${PASSWORD}:${ts}`)
        .digest('hex');
      res.statusCode = mailbox === 'X26ABC2' && hash === expected ? 200 : 403;
      res.end();
    };
    const c = client();
    await c.handshake();
    await c.handshake();
    c.close();
    expect(seenAuth).toHaveLength(2);
    expect(seenAuth[0]).not.toBe(seenAuth[1]);
  });

  it('reports 403 as a clear credentials error without any secret', async () => {
    handler = (_req, res) => {
      res.statusCode = 403;
      res.end('{"detail":"invalid auth token"}');
    };
    const c = client();
    const error = await c.handshake().catch((e) => e);
    c.close();
    expect(error).toBeInstanceOf(MeshAuthError);
    expect((error as MeshError).kind).toBe('auth');
    expect((error as Error).message).toBe(
      'MESH rejected the mailbox credentials for X26ABC2 (HTTP 403): check mailbox id, password and shared key',
    );
    expectNoSecrets(printed(error));
  });

  it('tells transient from permanent', async () => {
    const c = client();
    for (const [status, kind] of [
      [503, 'transient'],
      [500, 'transient'],
      [429, 'transient'],
      [400, 'permanent'],
      [404, 'permanent'],
    ] as const) {
      handler = (_req, res) => {
        res.statusCode = status;
        res.end();
      };
      const error = await c.acknowledge('20200601122152994285_D59900').catch((e) => e);
      expect(error).toBeInstanceOf(MeshError);
      expect([status, (error as MeshError).kind]).toEqual([status, kind]);
      expectNoSecrets(printed(error));
    }
    c.close();
  });

  it('reports connection refused and timeouts as transient, without secrets', async () => {
    const refused = new HttpMeshClient({
      url: 'http://127.0.0.1:9',
      mailbox: 'X26ABC2',
      password: PASSWORD,
      sharedKey: SHARED,
    });
    const error = await refused.handshake().catch((e) => e);
    refused.close();
    expect((error as MeshError).kind).toBe('transient');
    expect((error as Error).message).toMatch(/ECONNREFUSED/);
    expectNoSecrets(printed(error));

    handler = () => {}; // never answers
    const slow = client({ timeoutMs: 200 });
    const timeout = await slow.handshake().catch((e) => e);
    slow.close();
    expect((timeout as MeshError).kind).toBe('transient');
    expect((timeout as Error).message).toMatch(/ETIMEDOUT/);
  });

  it('refuses a body whose Content-Length is over the cap before reading it', async () => {
    let written = 0;
    handler = (_req, res) => {
      res.writeHead(200, { 'Content-Length': String(50_000_000), 'Mex-Chunk-Range': '1:1' });
      // Writes slowly: the client must give up on the header, not after reading.
      const timer = setInterval(() => {
        written += 1024;
        if (!res.write(Buffer.alloc(1024)) || written > 50_000_000) clearInterval(timer);
      }, 5);
      res.on('close', () => clearInterval(timer));
    };
    const c = client();
    const error = await c.download('MSG1', { maxBytes: 1_000_000 }).catch((e) => e);
    c.close();
    expect(error).toBeInstanceOf(MeshTooLargeError);
    expect((error as Error).message).toMatch(/chunk 1 is 50000000 bytes, over the 1000000-byte limit/);
    expect(written).toBeLessThan(1_000_000);
  });

  it('refuses a gzip body that expands past the cap while decompressing it', async () => {
    const bomb = gzipSync(Buffer.alloc(20_000_000));
    handler = (_req, res) => {
      res.writeHead(200, {
        'Content-Length': String(bomb.length),
        'Content-Encoding': 'gzip',
        'Mex-Chunk-Range': '1:1',
        'Mex-MessageType': 'DATA',
      });
      res.end(bomb);
    };
    const c = client();
    const error = await c.download('MSG1', { maxBytes: 1_000_000 }).catch((e) => e);
    c.close();
    expect(error).toBeInstanceOf(MeshTooLargeError);
    expect((error as Error).message).toMatch(/decompresses to more than the 1000000-byte limit/);
  });

  it('joins chunks 2..n and counts the cap across all of them', async () => {
    const parts = [Buffer.from('<Bundle>'), Buffer.from('<id/>'), Buffer.from('</Bundle>')];
    handler = (req, res) => {
      const n = Number(/\/inbox\/MSG1(?:\/(\d+))?$/.exec(req.url ?? '')?.[1] ?? '1');
      const body = n === 2 ? gzipSync(parts[1]!) : parts[n - 1]!;
      res.writeHead(n < 3 ? 206 : 200, {
        'Mex-Chunk-Range': `${n}:3`,
        'Mex-From': 'X26ABC1',
        'Mex-To': 'X26ABC2',
        'Mex-WorkflowID': 'GPFED_CONSULT_REPORT',
        ...(n === 2 ? { 'Content-Encoding': 'gzip' } : {}),
      });
      res.end(body);
    };
    const c = client();
    const m = await c.download('MSG1');
    expect(Buffer.from(m.body).toString()).toBe('<Bundle><id/></Bundle>');
    expect([m.totalChunks, m.wasCompressed, m.from, m.workflowId]).toEqual([
      3,
      true,
      'X26ABC1',
      'GPFED_CONSULT_REPORT',
    ]);
    await expect(c.download('MSG1', { maxBytes: 15 })).rejects.toBeInstanceOf(MeshTooLargeError);
    c.close();
  });

  it('refuses an inbox continuation that points at another server', async () => {
    handler = (_req, res) => {
      res.setHeader('Content-Type', 'application/vnd.mesh.v2+json');
      res.end(
        JSON.stringify({
          messages: [],
          links: { next: 'https://evil.example/messageexchange/X26ABC2/inbox?continue_from=x' },
        }),
      );
    };
    const c = client();
    await expect(c.listInbox()).rejects.toThrow(/continuation points elsewhere/);
    c.close();
  });
});
