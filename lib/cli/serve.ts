/**
 * `itk3 serve`: the HTTP front door on 127.0.0.1 feeding the embedded pipeline, with real time
 * (visibility timeouts really wait). `POST /messages` takes `Authorization: Bearer <jwt>` and the
 * compact JWE as the body and answers 202 with a tracking id; `GET /messages/<id>` reports where
 * that message stands.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { LoadedConfig } from '../config/load.js';
import { ingest } from '../ingest.js';
import { saveDeadLetters } from '../ops/dead-letters.js';
import type { KeyService } from '../ports/index.js';
import { systemClock } from '../ports/index.js';
import { EmbeddedPipeline } from '../runtime/embedded.js';

export interface ServeOptions {
  config: LoadedConfig;
  keys: KeyService;
  baseDir: string;
  port: number;
}

export interface RunningServer {
  port: number;
  pipeline: EmbeddedPipeline;
  /** Resolves once every accepted message has finished (delivered, rejected or dead-lettered). */
  idle(): Promise<void>;
  close(): Promise<void>;
}

export async function startServer(opts: ServeOptions): Promise<RunningServer> {
  const pipeline = new EmbeddedPipeline({
    config: opts.config,
    keys: opts.keys,
    baseDir: opts.baseDir,
    clock: systemClock,
    auditFile: join(opts.baseDir, 'audit.jsonl'),
    onceFile: join(opts.baseDir, 'once.jsonl'),
  });
  // One drain at a time; a submission during a drain schedules another.
  let draining: Promise<void> = Promise.resolve();
  let again = false;
  let running = false;
  const kick = () => {
    if (running) {
      again = true;
      return;
    }
    running = true;
    draining = (async () => {
      do {
        again = false;
        await pipeline.drain();
        saveDeadLetters(opts.baseDir, pipeline);
      } while (again);
      running = false;
    })();
  };

  const server = createServer((req, res) => {
    handle(req, res).catch(() => send(res, 500, { error: 'INTERNAL', message: 'unexpected error' }));
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    if (req.method === 'POST' && url.pathname === '/messages') {
      const body = await readBody(req, opts.config.doc.limits.maxSealedBytes);
      if (body === undefined)
        return send(res, 413, {
          error: 'MESSAGE_TOO_LARGE',
          message: 'sealed message exceeds the size limit',
        });
      const result = await ingest(
        { authorization: req.headers.authorization, body, receivedAt: Date.now(), source: 'http' },
        pipeline.ports,
        opts.config,
      );
      if (result.status === 202) {
        kick();
        return send(res, 202, { trackingId: result.trackingId });
      }
      return send(res, result.status, { error: result.error, message: result.message });
    }
    const match = /^\/messages\/([A-Za-z0-9-]{1,64})$/.exec(url.pathname);
    if (req.method === 'GET' && match) {
      const outcome = await pipeline.outcome(match[1]!);
      const known = (await pipeline.audit.byTrace(match[1]!)).length > 0;
      return known
        ? send(res, 200, outcome)
        : send(res, 404, { error: 'NOT_FOUND', message: 'unknown tracking id' });
    }
    return send(res, 404, { error: 'NOT_FOUND', message: 'POST /messages or GET /messages/<trackingId>' });
  }

  await new Promise<void>((resolve) => server.listen(opts.port, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    pipeline,
    idle: async () => {
      do await draining;
      while (running);
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }).then(() => draining),
  };
}

function send(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

/** Read a body up to `max` bytes; undefined when larger (the rest is not buffered). */
function readBody(req: IncomingMessage, max: number): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > max) {
        over = true;
        chunks.length = 0;
        return;
      }
      if (!over) chunks.push(chunk);
    });
    req.on('end', () => resolve(over ? undefined : Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}
