/**
 * Red-team pass on `itk3 serve` from outside (session 20): raw HTTP against a real listener on
 * 127.0.0.1, real credentials and sealed messages. What it adds to test/unit/cli/serve.test.ts:
 *
 * - one view of the request: repeated single-use headers, absolute-form targets, content codings,
 *   trailers, a byte-order mark or Unicode spaces around the body — each was accepted by serve
 *   (Node keeps the first copy, `String.trim` ate the BOM) while another reader would see the
 *   request differently; now refused with its own error. What Node's parser already refuses
 *   (CL + TE, two lengths, NUL, giant headers, smuggling shapes) is listed so the coverage shows.
 * - overload is answered, not absorbed: bodies still being read count against the backlog bound,
 *   so concurrent uploads cannot each pass the check and pile up in memory.
 * - nothing for free before authentication: a flood of bad credentials costs no key operation, no
 *   audit entry, no queue or state growth, and no body bytes are read.
 */
import '../support/env.js';
import { existsSync, statSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import type { RunningServer } from '../../lib/cli/serve.js';
import { mintToken } from '../../lib/envelope/token.js';
import { ingest } from '../../lib/ingest.js';
import type { DemoWorld } from '../../lib/testkit/world.js';
import { listenersPerTest } from '../support/listeners.js';
import { buildMessage, configWithLimits, credentialFor, makeTempDir, sealAs } from '../support/world.js';
import { CountingKeys } from './support.js';

const MAX_SEALED = 256 * 1024;

let world: DemoWorld;
const serve = listenersPerTest(
  (w) => {
    world = w;
  },
  { dirPrefix: 'itk3-redteam-', maxSealedBytes: MAX_SEALED },
);

interface RawAnswer {
  /** Status of the first response, or undefined when the server closed without one. */
  status: string | undefined;
  /** Everything the server sent. */
  text: string;
}

/** Send `data` on a fresh connection, half-close, and collect what comes back until the close. */
function rawExchange(server: RunningServer, data: string | Buffer): Promise<RawAnswer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const socket = connect(server.port, '127.0.0.1', () => socket.end(data));
    const timer = setTimeout(() => socket.destroy(), 5_000);
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', () => undefined); // reset once the server drops us: expected
    socket.on('close', () => {
      clearTimeout(timer);
      const text = Buffer.concat(chunks).toString('latin1');
      resolve({ status: /^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1], text });
    });
  });
}

/** The JSON error code of the first response, if it has one. */
const errorOf = (text: string) => /"error":"([A-Z_]+)"/.exec(text)?.[1];

/** A marker placed in attacker-controlled parts of requests: no answer may echo it. */
const MARKER = 'rtmarker<script>';

type Parts = { host: string; credential: string; sealed: string };

/** A request with a body given as bytes (so non-UTF-8 bytes and a BOM go out exactly). */
function withBody(head: string, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`${head}Content-Length: ${body.length}\r\n\r\n`, 'latin1'), body]);
}

interface ShapeCase {
  id: string;
  what: string;
  request: (p: Parts) => string | Buffer;
  /** Expected status and, when the gateway (not Node's parser) answers, its error code. */
  status: string;
  error?: string;
  /** Refused by Node's HTTP parser before serve sees the request (coverage, not a fix). */
  byNode?: true;
}

const post = (p: Parts, extra = '') =>
  `POST /messages HTTP/1.1\r\nHost: ${p.host}\r\nAuthorization: Bearer ${p.credential}\r\n${extra}`;

const SHAPES: ShapeCase[] = [
  {
    id: 'control',
    what: 'the same request, correctly formed',
    request: (p) => withBody(post(p), Buffer.from(p.sealed)),
    status: '202',
  },
  {
    id: 'control.trailing-newline',
    what: 'a file’s trailing CRLF after the JWE (curl --data-binary @file)',
    request: (p) => withBody(post(p), Buffer.from(`${p.sealed}\r\n`)),
    status: '202',
  },
  {
    id: 'control.identity-coding',
    what: 'Content-Encoding: identity',
    request: (p) => withBody(post(p, 'Content-Encoding: identity\r\n'), Buffer.from(p.sealed)),
    status: '202',
  },
  {
    id: 'control.lower-case-scheme',
    what: 'Authorization: bearer … (the scheme is case-insensitive, as at the ingest function)',
    request: (p) =>
      withBody(
        `POST /messages HTTP/1.1\r\nHost: ${p.host}\r\nAuthorization: bearer ${p.credential}\r\n`,
        Buffer.from(p.sealed),
      ),
    status: '202',
  },
  {
    id: 'auth.repeated.valid-first',
    what: 'two Authorization headers, the valid credential first (Node keeps the first)',
    request: (p) => withBody(post(p, `Authorization: Bearer ${MARKER}\r\n`), Buffer.from(p.sealed)),
    status: '400',
    error: 'HEADER_REPEATED',
  },
  {
    id: 'auth.repeated.valid-last',
    what: 'two Authorization headers, the valid credential last (what a proxy may check)',
    request: (p) =>
      withBody(
        `POST /messages HTTP/1.1\r\nHost: ${p.host}\r\nAuthorization: Bearer a.b.c\r\nAuthorization: Bearer ${p.credential}\r\n`,
        Buffer.from(p.sealed),
      ),
    status: '400',
    error: 'HEADER_REPEATED',
  },
  {
    id: 'host.repeated',
    what: 'two Host headers, the allowed one first',
    request: (p) => withBody(post(p, `Host: ${MARKER}.example\r\n`), Buffer.from(p.sealed)),
    status: '400',
    error: 'HEADER_REPEATED',
  },
  {
    id: 'content-type.repeated',
    what: 'two Content-Type headers',
    request: (p) =>
      withBody(
        post(p, 'Content-Type: text/plain\r\nContent-Type: application/json\r\n'),
        Buffer.from(p.sealed),
      ),
    status: '400',
    error: 'HEADER_REPEATED',
  },
  {
    id: 'target.absolute-form',
    what: 'absolute-form target naming another authority than the allowed Host',
    request: (p) =>
      withBody(
        `POST http://elsewhere.example/messages HTTP/1.1\r\nHost: ${p.host}\r\nAuthorization: Bearer ${p.credential}\r\n`,
        Buffer.from(p.sealed),
      ),
    status: '400',
    error: 'REQUEST_TARGET_NOT_ORIGIN_FORM',
  },
  {
    id: 'coding.gzip-label-plain-body',
    what: 'Content-Encoding: gzip over a plain JWE (read raw here, inflated elsewhere)',
    request: (p) => withBody(post(p, 'Content-Encoding: gzip\r\n'), Buffer.from(p.sealed)),
    status: '415',
    error: 'CONTENT_ENCODING_NOT_ACCEPTED',
  },
  {
    id: 'coding.gzip-bomb',
    what: 'a gzip bomb (4 MB of zeros in a few KB), labelled gzip',
    request: (p) => withBody(post(p, 'Content-Encoding: gzip\r\n'), gzipSync(Buffer.alloc(4 * 1024 * 1024))),
    status: '415',
    error: 'CONTENT_ENCODING_NOT_ACCEPTED',
  },
  {
    id: 'coding.unknown',
    what: `Content-Encoding: ${MARKER}`,
    request: (p) => withBody(post(p, `Content-Encoding: ${MARKER}\r\n`), Buffer.from(p.sealed)),
    status: '415',
    error: 'CONTENT_ENCODING_NOT_ACCEPTED',
  },
  {
    id: 'trailer.authorization',
    what: 'a chunked body whose trailer carries a second Authorization',
    request: (p) =>
      `${post(p, 'Transfer-Encoding: chunked\r\n')}\r\n${p.sealed.length.toString(16)}\r\n${p.sealed}\r\n0\r\nAuthorization: Bearer a.b.c\r\n\r\n`,
    status: '400',
    error: 'TRAILERS_NOT_ACCEPTED',
  },
  {
    id: 'body.bom',
    what: 'a UTF-8 byte-order mark before the JWE (String.trim removed it)',
    request: (p) =>
      withBody(post(p), Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(p.sealed)])),
    status: '400',
    error: 'ENVELOPE_MALFORMED',
  },
  {
    id: 'body.unicode-space',
    what: 'NBSP and U+2028 after the JWE (String.trim removed them)',
    request: (p) => withBody(post(p), Buffer.from(`${p.sealed}\u00a0\u2028`, 'utf8')),
    status: '400',
    error: 'ENVELOPE_MALFORMED',
  },
  {
    id: 'body.not-utf8',
    what: 'a byte that is not UTF-8 inside the JWE',
    request: (p) => {
      const body = Buffer.from(p.sealed);
      body[10] = 0xff;
      return withBody(post(p), body);
    },
    status: '400',
    error: 'ENVELOPE_MALFORMED',
  },
  {
    id: 'body.nul',
    what: 'a NUL byte after the JWE',
    request: (p) => withBody(post(p), Buffer.concat([Buffer.from(p.sealed), Buffer.from([0])])),
    status: '400',
    error: 'ENVELOPE_MALFORMED',
  },
  {
    id: 'method.put',
    what: 'PUT /messages',
    request: (p) => withBody(`PUT /messages HTTP/1.1\r\nHost: ${p.host}\r\n`, Buffer.from(p.sealed)),
    status: '404',
    error: 'NOT_FOUND',
  },
  {
    id: 'path.trailing-slash',
    what: 'POST /messages/ (another path)',
    request: (p) => withBody(post(p).replace('/messages ', '/messages/ '), Buffer.from(p.sealed)),
    status: '404',
    error: 'NOT_FOUND',
  },
  {
    id: 'path.marker',
    what: `GET /messages/${MARKER} (the path is not echoed)`,
    request: (p) => `GET /messages/${encodeURIComponent(MARKER)} HTTP/1.1\r\nHost: ${p.host}\r\n\r\n`,
    status: '404',
    error: 'NOT_FOUND',
  },
  {
    id: 'path.dot-segment',
    what: 'POST /console/../messages (the URL parser makes it /messages; a proxy may not)',
    request: (p) => withBody(post(p).replace('/messages ', '/console/../messages '), Buffer.from(p.sealed)),
    status: '400',
    error: 'REQUEST_TARGET_NOT_NORMALISED',
  },
  {
    id: 'path.encoded-dot-segment',
    what: 'POST /x/%2e%2e/messages',
    request: (p) => withBody(post(p).replace('/messages ', '/x/%2e%2e/messages '), Buffer.from(p.sealed)),
    status: '400',
    error: 'REQUEST_TARGET_NOT_NORMALISED',
  },
  {
    id: 'path.backslash',
    what: 'POST /x\\..\\messages (backslashes are slashes to the URL parser)',
    request: (p) => withBody(post(p).replace('/messages ', '/x\\..\\messages '), Buffer.from(p.sealed)),
    status: '400',
    error: 'REQUEST_TARGET_NOT_NORMALISED',
  },
  {
    id: 'path.double-slash',
    what: 'POST //messages (an authority to the URL parser)',
    request: (p) => withBody(post(p).replace('/messages ', '//messages '), Buffer.from(p.sealed)),
    status: '400',
    error: 'REQUEST_TARGET_NOT_NORMALISED',
  },
  {
    id: 'path.percent-encoded-letter',
    what: 'POST /%6Dessages (not decoded: another path)',
    request: (p) => withBody(post(p).replace('/messages ', '/%6Dessages '), Buffer.from(p.sealed)),
    status: '404',
    error: 'NOT_FOUND',
  },
  {
    id: 'method.trace',
    what: 'TRACE /messages with a marker header (nothing reflected)',
    request: (p) => `TRACE /messages HTTP/1.1\r\nHost: ${p.host}\r\nX-Probe: ${MARKER}\r\n\r\n`,
    status: '404',
    error: 'NOT_FOUND',
  },
  {
    id: 'header.latin1-credential',
    what: 'a credential followed by a byte that is not ASCII',
    request: (p) =>
      withBody(
        `POST /messages HTTP/1.1\r\nHost: ${p.host}\r\nAuthorization: Bearer ${p.credential}\xff\r\n`,
        Buffer.from(p.sealed),
      ),
    status: '401',
    error: 'UNAUTHENTICATED',
  },
  {
    id: 'host.not-ascii',
    what: 'the allowed Host with a byte that is not ASCII',
    request: (p) =>
      withBody(
        `POST /messages HTTP/1.1\r\nHost: ${p.host}\xe9\r\nAuthorization: Bearer ${p.credential}\r\n`,
        Buffer.from(p.sealed),
      ),
    status: '421',
    error: 'MISDIRECTED',
  },
  {
    id: 'smuggle.cl-and-te',
    what: 'Content-Length and Transfer-Encoding: chunked together',
    request: (p) =>
      `${post(p, 'Content-Length: 5\r\nTransfer-Encoding: chunked\r\n')}\r\n${p.sealed.length.toString(16)}\r\n${p.sealed}\r\n0\r\n\r\n`,
    status: '400',
    byNode: true,
  },
  {
    id: 'smuggle.two-lengths',
    what: 'two different Content-Length headers',
    request: (p) =>
      `${post(p, `Content-Length: ${p.sealed.length}\r\nContent-Length: ${p.sealed.length + 1}\r\n`)}\r\n${p.sealed}`,
    status: '400',
    byNode: true,
  },
  {
    id: 'smuggle.te-obfuscated',
    what: 'Transfer-Encoding: chunked, identity',
    request: (p) =>
      `${post(p, 'Transfer-Encoding: chunked, identity\r\n')}\r\n${p.sealed.length.toString(16)}\r\n${p.sealed}\r\n0\r\n\r\n`,
    status: '400',
    byNode: true,
  },
  {
    id: 'smuggle.te-space',
    what: 'Transfer-Encoding with a space before the colon',
    request: (p) =>
      `${post(p, 'Transfer-Encoding : chunked\r\n')}\r\n${p.sealed.length.toString(16)}\r\n${p.sealed}\r\n0\r\n\r\n`,
    status: '400',
    byNode: true,
  },
  {
    id: 'header.nul',
    what: 'a NUL byte in a header value',
    request: (p) => withBody(post(p, 'X-Probe: a\0b\r\n'), Buffer.from(p.sealed)),
    status: '400',
    byNode: true,
  },
  {
    id: 'header.obs-fold',
    what: 'an obsolete line folding continuing Authorization',
    request: (p) =>
      withBody(
        `POST /messages HTTP/1.1\r\nHost: ${p.host}\r\nAuthorization: Bearer\r\n ${p.credential}\r\n`,
        Buffer.from(p.sealed),
      ),
    status: '400',
    byNode: true,
  },
  {
    id: 'header.giant',
    what: 'a 70 KB header',
    request: (p) => withBody(post(p, `X-Big: ${'a'.repeat(70_000)}\r\n`), Buffer.from(p.sealed)),
    status: '431',
    byNode: true,
  },
  {
    id: 'method.lower-case',
    what: 'post /messages',
    request: (p) => withBody(post(p).replace('POST', 'post'), Buffer.from(p.sealed)),
    status: '400',
    byNode: true,
  },
  {
    id: 'host.missing-http10',
    what: 'HTTP/1.0 without Host',
    request: (p) =>
      withBody(`POST /messages HTTP/1.0\r\nAuthorization: Bearer ${p.credential}\r\n`, Buffer.from(p.sealed)),
    status: '421',
    error: 'MISDIRECTED',
  },
];

describe('red team: one view of the HTTP request', () => {
  it.each(SHAPES.map((c) => [c.id, c] as const))('%s', async (_id, shape) => {
    const server = await serve();
    const parts: Parts = {
      host: `127.0.0.1:${server.port}`,
      credential: await credentialFor(world, 'X26', Date.now()),
      sealed: await sealAs(world, 'X26', buildMessage('X26')),
    };
    const answer = await rawExchange(server, shape.request(parts));
    expect(answer.status, shape.what).toBe(shape.status);
    if (shape.error) expect(errorOf(answer.text), shape.what).toBe(shape.error);
    // No answer reflects what the attacker sent.
    expect(answer.text).not.toContain('rtmarker');
    if (shape.status === '202') {
      expect(server.pipeline.backlog().messages + (await server.pipeline.audit.all()).length).toBeGreaterThan(
        0,
      );
      await server.idle();
    } else {
      // Refused: nothing was queued and nothing was audited for it.
      expect(server.pipeline.backlog()).toEqual({ messages: 0, bytes: 0 });
      expect(server.pipeline.audit.all()).toEqual([]);
    }
  });

  it('a request smuggled behind an accepted one is answered as its own request, never merged', async () => {
    const server = await serve();
    const credential = await credentialFor(world, 'X26', Date.now());
    const sealed = await sealAs(world, 'X26', buildMessage('X26'));
    const host = `127.0.0.1:${server.port}`;
    const answer = await rawExchange(
      server,
      `POST /messages HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer ${credential}\r\nContent-Length: ${sealed.length}\r\n\r\n${sealed}` +
        `POST /messages HTTP/1.1\r\nHost: ${host}\r\nContent-Length: ${sealed.length}\r\n\r\n${sealed}`,
    );
    const statuses = [...answer.text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1]);
    expect(statuses).toEqual(['202', '401']);
    await server.idle();
    expect(server.pipeline.audit.traces()).toHaveLength(1);
  });
});

describe('red team: the ingest function (AWS HTTP API) reads the body as sent too', () => {
  it.each([
    ['gzip', 415],
    ['GZIP', 415],
    ['br', 415],
    ['', 415],
    ['identity', 202],
    [undefined, 202],
  ] as const)('Content-Encoding %j → %i', async (contentEncoding, status) => {
    const server = await serve();
    const config = configWithLimits(world, { maxSealedBytes: MAX_SEALED });
    const result = await ingest(
      {
        authorization: `Bearer ${await credentialFor(world, 'X26', Date.now())}`,
        body: await sealAs(world, 'X26', buildMessage('X26')),
        receivedAt: Date.now(),
        source: 'http',
        ...(contentEncoding === undefined ? {} : { contentEncoding }),
      },
      server.pipeline.ports,
      config,
    );
    expect(result.status).toBe(status);
    if (status === 415) {
      expect(result).toMatchObject({ error: 'CONTENT_ENCODING_NOT_ACCEPTED' });
      expect(server.pipeline.backlog().messages).toBe(0);
    }
  });
});

describe('red team: a spent credential at the door', () => {
  /** Shaped like a compact JWE (passes the door's shape check), meaningless inside. */
  const garbage = `eyJhbGciOiJ4In0.${'A'.repeat(64 * 1024)}.AAAA.AAAA.AAAA`;

  async function postWith(server: RunningServer, credential: string, body: string) {
    return rawExchange(
      server,
      `POST /messages HTTP/1.1\r\nHost: 127.0.0.1:${server.port}\r\nAuthorization: Bearer ${credential}\r\n` +
        `Content-Length: ${body.length}\r\n\r\n${body}`,
    );
  }

  it('a captured credential replayed with another body is the 401 of any refusal, and nothing is stored', async () => {
    const server = await serve();
    const credential = await credentialFor(world, 'X26', Date.now());
    const sealed = await sealAs(world, 'X26', buildMessage('X26'));
    expect((await postWith(server, credential, sealed)).status).toBe('202');
    await server.idle();
    const backlogAfterFirst = server.pipeline.backlog();
    const tracesAfterFirst = server.pipeline.audit.traces().length;
    const unauthenticated = await postWith(server, 'a.b.c', sealed);

    for (const body of [garbage, sealed]) {
      const replay = await postWith(server, credential, body);
      expect(replay.status).toBe('401');
      expect(replay.text.replace(/^Date: .*$/im, '')).toBe(unauthenticated.text.replace(/^Date: .*$/im, ''));
    }
    // Neither replay was queued or audited: no body stored for authenticate to refuse later.
    expect(server.pipeline.backlog()).toEqual(backlogAfterFirst);
    expect(server.pipeline.audit.traces()).toHaveLength(tracesAfterFirst);
  });

  it('a credential whose submission was not accepted (503, 400) is not spent', async () => {
    const server = await serve({ limits: { maxBacklogMessages: 1 } });
    server.pipeline.submitRaw('a.b.c.d.e');
    const credential = await credentialFor(world, 'X26', Date.now());
    const sealed = await sealAs(world, 'X26', buildMessage('X26'));
    expect((await postWith(server, credential, sealed)).status).toBe('503');
    await server.pipeline.drain();
    expect((await postWith(server, credential, 'not a jwe')).status).toBe('400');
    expect((await postWith(server, credential, sealed)).status).toBe('202');
    await server.idle();
  });
});

describe('red team: Expect: 100-continue', () => {
  it('an unauthenticated request is not invited to send its body: 401 and no 100 Continue', async () => {
    const server = await serve();
    const answer = await rawExchange(
      server,
      `POST /messages HTTP/1.1\r\nHost: 127.0.0.1:${server.port}\r\nAuthorization: Bearer a.b.c\r\n` +
        `Expect: 100-continue\r\nContent-Length: ${64 * 1024}\r\n\r\n`,
    );
    expect(answer.status).toBe('401');
    expect(answer.text).not.toContain('100 Continue');
  });

  it('an authenticated one gets 100 Continue, sends its body and is accepted', async () => {
    const server = await serve();
    const credential = await credentialFor(world, 'X26', Date.now());
    const sealed = await sealAs(world, 'X26', buildMessage('X26'));
    const text = await new Promise<string>((resolve) => {
      let received = '';
      const socket = connect(server.port, '127.0.0.1', () =>
        socket.write(
          `POST /messages HTTP/1.1\r\nHost: 127.0.0.1:${server.port}\r\nAuthorization: Bearer ${credential}\r\n` +
            `Expect: 100-continue\r\nConnection: close\r\nContent-Length: ${sealed.length}\r\n\r\n`,
        ),
      );
      socket.on('data', (c: Buffer) => {
        received += c.toString('latin1');
        // The body goes only once the server asked for it.
        if (received.startsWith('HTTP/1.1 100') && !socket.writableEnded) socket.end(sealed);
      });
      socket.on('close', () => resolve(received));
    });
    expect(text).toMatch(/^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 202 /);
    await server.idle();
  });
});

/** Open a connection, send the headers and part of a declared body, and keep it open. */
function holdUpload(server: RunningServer, head: string, firstBodyBytes: Buffer): Promise<Socket> {
  return new Promise((resolve) => {
    const socket = connect(server.port, '127.0.0.1', () => {
      socket.write(head);
      socket.write(firstBodyBytes, () => resolve(socket));
    });
    socket.on('error', () => undefined);
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('red team: bodies being read count against the backlog bound', () => {
  it('concurrent slow uploads cannot each pass the check: the next one is 503 before any is queued', async () => {
    const server = await serve({
      // The global bound (one sender's share of it: test/security/redteam-fairshare.test.ts).
      limits: {
        maxBacklogBytes: 300 * 1024,
        maxBacklogMessages: 100,
        requestTimeoutMs: 20_000,
        backlogShare: 1,
      },
    });
    const host = `127.0.0.1:${server.port}`;
    // Each upload with its own credential (a spent one would be refused at the door).
    const authorised = async () =>
      `POST /messages HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer ${await credentialFor(world, 'X26', Date.now())}\r\n`;
    // One upload declaring 100 KB and one chunked (reserved at the 256 KB size limit), both stalled.
    const held = await Promise.all([
      holdUpload(server, `${await authorised()}Content-Length: ${100 * 1024}\r\n\r\n`, Buffer.from('eyJ')),
      holdUpload(
        server,
        `${await authorised()}Transfer-Encoding: chunked\r\n\r\n`,
        Buffer.from('3\r\neyJ\r\n'),
      ),
    ]);
    await sleep(100); // both authenticated and reading
    expect(server.pipeline.backlog()).toEqual({ messages: 0, bytes: 0 });

    const sealed = await sealAs(world, 'X26', buildMessage('X26'));
    const busy = await rawExchange(
      server,
      `POST /messages HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer ${await credentialFor(world, 'X26', Date.now())}\r\nContent-Length: ${sealed.length}\r\n\r\n${sealed}`,
    );
    expect(busy.status).toBe('503');
    expect(errorOf(busy.text)).toBe('BACKLOG_FULL');
    expect(busy.text.toLowerCase()).toContain('retry-after: 5');

    // The stalled uploads go away: their reservations are released and the door opens again.
    for (const socket of held) socket.destroy();
    await sleep(100);
    const accepted = await rawExchange(
      server,
      `POST /messages HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer ${await credentialFor(world, 'X26', Date.now())}\r\nContent-Length: ${sealed.length}\r\n\r\n${sealed}`,
    );
    expect(accepted.status).toBe('202');
    await server.idle();
  });

  it('counts uploads in progress against the message bound too', async () => {
    const server = await serve({
      limits: { maxBacklogMessages: 2, requestTimeoutMs: 20_000, backlogShare: 1 },
    });
    const host = `127.0.0.1:${server.port}`;
    const head = async () =>
      `POST /messages HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer ${await credentialFor(world, 'X26', Date.now())}\r\nContent-Length: 1000\r\n\r\n`;
    const held = await Promise.all([
      holdUpload(server, await head(), Buffer.from('eyJ')),
      holdUpload(server, await head(), Buffer.from('eyJ')),
    ]);
    await sleep(100);
    const sealed = await sealAs(world, 'X26', buildMessage('X26'));
    const busy = await rawExchange(
      server,
      `POST /messages HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer ${await credentialFor(world, 'X26', Date.now())}\r\nContent-Length: ${sealed.length}\r\n\r\n${sealed}`,
    );
    expect(busy.status).toBe('503');
    for (const socket of held) socket.destroy();
  });
});

describe('red team: nothing for free before authentication', () => {
  it('300 bad credentials with declared 64 KB bodies: no key operation, no audit, no queue, no body read', async () => {
    const keys = new CountingKeys(world.keystore);
    const baseDir = makeTempDir('itk3-redteam-');
    const server = await serve({ keys, baseDir });
    const host = `127.0.0.1:${server.port}`;
    const now = Date.now();
    const issuer = world.senders.X26.issuer;
    const base = {
      key: issuer.key.privateJwk,
      kid: issuer.key.kid,
      alg: issuer.key.alg as 'PS256',
      iss: issuer.iss,
      sub: world.senders.X26.client,
      aud: world.config.doc.audience,
      organisation: 'X26',
      organisationClaim: issuer.organisationClaim,
      nowMs: now,
    };
    const bad = [
      undefined,
      'a.b.c',
      `${'A'.repeat(9_000)}.b.c`,
      await mintToken({ ...base, kid: 'no-such-kid' }),
      await mintToken({ ...base, key: world.senders.FQ123.key.privateJwk }),
      await mintToken({ ...base, aud: 'https://elsewhere.example' }),
      await mintToken({ ...base, organisation: 'GP0001' }), // outside the federation's scope
      await mintToken({ ...base, sub: 'not-a-registered-client' }),
      await credentialFor(world, 'X26', now - 3_600_000),
      await credentialFor(world, 'X26', now, { actors: ['a', 'b', 'c'] }), // chain too deep
    ];
    // The state file and its write-ahead log (WAL mode: writes land in the log first).
    const stateBytes = () =>
      ['state.db', 'state.db-wal'].map((f) =>
        existsSync(join(baseDir, f)) ? statSync(join(baseDir, f)).size : 0,
      );
    const stateBefore = stateBytes();
    const cpuBefore = process.cpuUsage();
    const started = Date.now();
    const answers: RawAnswer[] = [];
    for (let round = 0; round < 30; round += 1) {
      answers.push(
        ...(await Promise.all(
          bad.map((credential) =>
            // Headers only: the declared body is never sent, and the 401 must not wait for it.
            rawExchange(
              server,
              `POST /messages HTTP/1.1\r\nHost: ${host}\r\n` +
                (credential ? `Authorization: Bearer ${credential}\r\n` : '') +
                `Content-Length: ${64 * 1024}\r\n\r\n`,
            ),
          ),
        )),
      );
    }
    const elapsed = Date.now() - started;
    const cpu = process.cpuUsage(cpuBefore);
    expect(answers).toHaveLength(300);
    const statuses = new Set(answers.map((a) => a.status));
    expect(statuses).toEqual(new Set(['401']));
    // One answer for every reason.
    expect(new Set(answers.map((a) => a.text.replace(/^Date: .*$/im, '')))).toHaveProperty('size', 1);
    expect(keys.unwraps).toBe(0);
    expect(keys.signs).toBe(0);
    expect(server.pipeline.audit.all()).toEqual([]);
    expect(server.pipeline.backlog()).toEqual({ messages: 0, bytes: 0 });
    // Nothing was written to the state file or its log for them.
    expect(stateBytes()).toEqual(stateBefore);
    // A refusal costs a header parse and at most one public-key signature check: well under 10 ms
    // of CPU each even on a shared 2-core machine (the whole loop, client side included).
    expect((cpu.user + cpu.system) / 1000 / 300).toBeLessThan(10);
    expect(elapsed).toBeLessThan(30_000);
  });
});

/**
 * Send the headers, then the body in small writes spaced out (so the answer comes while the body
 * is still going out), reading nothing until the server closes. Returns what came back and the
 * socket error, if any (ECONNRESET/EPIPE when the server cut the upload).
 */
function uploadWithoutReading(
  server: RunningServer,
  head: string,
  body: Buffer,
  opts: { chunk?: number; gapMs?: number; endless?: boolean } = {},
): Promise<{ text: string; error: string | undefined; ms: number }> {
  const chunk = opts.chunk ?? 16 * 1024;
  const gapMs = opts.gapMs ?? 20;
  const started = Date.now();
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let error: string | undefined;
    let stopped = false;
    const socket = connect(server.port, '127.0.0.1', async () => {
      // Like most HTTP clients without 100-continue: nothing is read until the body is sent.
      socket.pause();
      socket.write(head);
      for (let at = 0; !stopped && (opts.endless || at < body.length); at += chunk) {
        const piece = opts.endless ? body.subarray(0, chunk) : body.subarray(at, at + chunk);
        socket.write(
          opts.endless ? `${piece.length.toString(16)}\r\n${piece.toString('latin1')}\r\n` : piece,
        );
        await sleep(gapMs);
        if (Date.now() - started > 8_000) break; // bounded: the server must have cut it long before
      }
      socket.resume();
    });
    const timer = setTimeout(() => socket.destroy(), 10_000);
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', (e: NodeJS.ErrnoException) => {
      error ??= e.code ?? e.message;
    });
    socket.on('close', () => {
      stopped = true;
      clearTimeout(timer);
      resolve({ text: Buffer.concat(chunks).toString('latin1'), error, ms: Date.now() - started });
    });
  });
}

describe('red team: a refusal reaches a sender that uploads before it reads', () => {
  it('a bad credential with a 200 KB body sent in full: the 401 is read, the connection ends without a reset', async () => {
    const server = await serve();
    const host = `127.0.0.1:${server.port}`;
    const body = Buffer.alloc(200 * 1024, 'e');
    for (let i = 0; i < 3; i++) {
      const answer = await uploadWithoutReading(
        server,
        `POST /messages HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer not.a.credential\r\nContent-Length: ${body.length}\r\n\r\n`,
        body,
      );
      expect(answer.error).toBeUndefined();
      expect(answer.text).toMatch(/^HTTP\/1\.1 401 /);
      expect(errorOf(answer.text)).toBe('UNAUTHENTICATED');
    }
    expect(server.pipeline.audit.traces()).toHaveLength(0);
  });

  it('an endless chunked body after the refusal is cut within the linger bounds (256 KiB, 2 s)', async () => {
    const server = await serve();
    const host = `127.0.0.1:${server.port}`;
    const answer = await uploadWithoutReading(
      server,
      `POST /messages HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer not.a.credential\r\nTransfer-Encoding: chunked\r\n\r\n`,
      Buffer.alloc(8 * 1024, 'e'),
      { chunk: 8 * 1024, gapMs: 2, endless: true },
    );
    // Cut, not drained for ever: the sender sees the reset (it never read the 401 it was sent).
    expect(answer.error).toBeDefined();
    expect(answer.ms).toBeLessThan(6_000);
  });
});
