/**
 * `itk3 serve`: the HTTP front door on 127.0.0.1 feeding the embedded pipeline, with real time
 * (visibility timeouts really wait). `POST /messages` takes `Authorization: Bearer <jwt>` and the
 * compact JWE as the body and answers 202 with a tracking id; `GET /messages/<id>` reports where
 * that message stands.
 *
 * State lives in `<out>/state.db` (docs/DURABILITY.md): a 202 is sent only once the submission is
 * committed there, a start resumes every trace without a terminal outcome, and a stop finishes or
 * parks the work in hand within a bound.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { SqliteState } from '../adapters/local/sqlite-state.js';
import type { LoadedConfig } from '../config/load.js';
import { ingest } from '../ingest.js';
import type { KeyService, StageName } from '../ports/index.js';
import { systemClock } from '../ports/index.js';
import { type BacklogLimits, EmbeddedPipeline, type StageSettings } from '../runtime/embedded.js';
import { reconcileDeliveryFolders } from './ops.js';

export interface ServeOptions {
  config: LoadedConfig;
  keys: KeyService;
  baseDir: string;
  port: number;
  /** Backpressure bounds (defaults: DEFAULT_LIMITS in lib/runtime/embedded.ts). */
  limits?: Partial<BacklogLimits>;
  /** Per-stage overrides (tests shorten visibility timeouts). */
  stages?: Partial<Record<StageName, Partial<StageSettings>>>;
  /** Told when the state file can no longer be written: the server has stopped taking work. */
  onFatal?: (error: Error) => void;
}

export interface RunningServer {
  port: number;
  pipeline: EmbeddedPipeline;
  /** How many queued messages the previous process left unfinished, resumed at start. */
  resumed: number;
  /** Resolves once every accepted message has finished (delivered, rejected or dead-lettered). */
  idle(): Promise<void>;
  /**
   * Graceful stop: no new requests, the running handler invocation finishes, nothing waits for a
   * visibility timeout; whatever is unfinished stays in the state file for the next start. Resolves
   * within `timeoutMs` (then an invocation still running is abandoned: its unit of work was never
   * committed, so it runs again on the next start).
   */
  close(timeoutMs?: number): Promise<void>;
}

export const DEFAULT_STOP_TIMEOUT_MS = 10_000;

export async function startServer(opts: ServeOptions): Promise<RunningServer> {
  const state = new SqliteState(join(opts.baseDir, 'state.db'), { clock: systemClock });
  const pipeline = new EmbeddedPipeline({
    config: opts.config,
    keys: opts.keys,
    baseDir: opts.baseDir,
    clock: systemClock,
    state,
    ...(opts.limits ? { limits: opts.limits } : {}),
    ...(opts.stages ? { stages: opts.stages } : {}),
  });
  state.once.sweep();
  reconcileDeliveryFolders(opts.config, opts.baseDir);
  const resumed = pipeline.resume();
  let fatal: Error | undefined;
  // One drain at a time; a submission during a drain schedules another.
  let draining: Promise<void> = Promise.resolve();
  let again = false;
  let running = false;
  const kick = () => {
    if (fatal || pipeline.stopping) return;
    if (running) {
      again = true;
      return;
    }
    running = true;
    draining = (async () => {
      try {
        do {
          again = false;
          await pipeline.drain();
        } while (again && !pipeline.stopping);
      } catch (error) {
        // The state file cannot be written: stop taking work; nothing half-written was committed.
        fatal = error as Error;
        server.close();
        opts.onFatal?.(fatal);
      } finally {
        running = false;
      }
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
  // Resumed work starts at once, not at the next submission.
  kick();
  let closing: Promise<void> | undefined;
  return {
    port,
    pipeline,
    resumed,
    idle: async () => {
      do await draining;
      while (running);
    },
    close: (timeoutMs = DEFAULT_STOP_TIMEOUT_MS) => {
      closing ??= (async () => {
        const deadline = Date.now() + timeoutMs;
        pipeline.stop();
        // Requests already being read finish (their 202 waits for a commit); idle connections go.
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        const rest = () => new Promise<void>((r) => setTimeout(r, Math.max(0, deadline - Date.now())));
        await Promise.race([Promise.all([closed, draining]), rest()]);
        server.closeAllConnections();
        state.close();
      })();
      return closing;
    },
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
