/**
 * Real processes for the durability tests: `node bin/itk3.js serve|process` spawned on a world
 * written to disk, messages sealed and credentialed by the test world, and the state file read
 * back to account for every message.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join, resolve } from 'node:path';
import { writeKeystore } from '../../lib/adapters/local/keystore.js';
import { SqliteState } from '../../lib/adapters/local/sqlite-state.js';
import type { AuditEntry } from '../../lib/ports/index.js';
import { systemClock } from '../../lib/ports/index.js';
import type { StoredOutcome } from '../../lib/runtime/state.js';
import type { DemoWorld } from '../../lib/testkit/world.js';
import { type BuiltMessage, buildMessage, credentialFor, sealAs } from '../support/world.js';

const REPO = resolve(import.meta.dirname, '../..');
const BIN = join(REPO, 'bin/itk3.js');

/** A small deterministic PRNG (mulberry32), so a failing seed can be replayed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface WorldFiles {
  keystore: string;
  config: string;
}

export function writeWorld(world: DemoWorld, dir: string, configDoc: unknown = world.configDoc): WorldFiles {
  mkdirSync(dir, { recursive: true });
  const keystore = join(dir, 'keystore.json');
  const config = join(dir, 'config.json');
  writeKeystore(keystore, world.keystore);
  writeFileSync(config, `${JSON.stringify(configDoc, null, 2)}\n`);
  return { keystore, config };
}

export interface Sealed {
  msg: BuiltMessage;
  sealed: string;
}

export async function sealMany(world: DemoWorld, n: number, attachmentBytes = 0): Promise<Sealed[]> {
  const out: Sealed[] = [];
  for (let i = 0; i < n; i += 1) {
    const msg = buildMessage('X26', attachmentBytes > 0 ? { attachmentBytes } : {});
    out.push({ msg, sealed: await sealAs(world, 'X26', msg) });
  }
  return out;
}

export interface Child {
  proc: ChildProcess;
  stdout: string[];
  stderr: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export function spawnItk3(
  args: string[],
  onLine?: (line: string) => void,
  env: Record<string, string> = {},
): Child {
  const proc = spawn(process.execPath, [BIN, ...args], {
    cwd: REPO,
    env: { ...process.env, ITK3_LOG_LEVEL: 'SILENT', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const child: Child = {
    proc,
    stdout: [],
    stderr: [],
    exited: new Promise((done) => proc.on('exit', (code, signal) => done({ code, signal }))),
  };
  let buffered = '';
  proc.stdout!.on('data', (chunk: Buffer) => {
    buffered += chunk.toString('utf8');
    const lines = buffered.split('\n');
    buffered = lines.pop() ?? '';
    for (const line of lines) {
      child.stdout.push(line);
      onLine?.(line);
    }
  });
  proc.stderr!.on('data', (chunk: Buffer) => child.stderr.push(chunk.toString('utf8')));
  return child;
}

export interface Server extends Child {
  port: number;
}

/** Start `itk3 serve` on a free port and wait for it to listen. */
export async function startServe(
  files: WorldFiles,
  out: string,
  extra: string[] = [],
  env: Record<string, string> = {},
): Promise<Server> {
  let listening: (port: number) => void = () => undefined;
  const port = new Promise<number>((done) => {
    listening = done;
  });
  const child = spawnItk3(
    ['serve', '--config', files.config, '--keystore', files.keystore, '--port', '0', '--out', out, ...extra],
    (line) => {
      const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(line);
      if (m) listening(Number(m[1]));
    },
    env,
  );
  const started = await Promise.race([
    port,
    child.exited.then((e) => {
      throw new Error(`serve exited before listening (${e.code ?? e.signal}): ${child.stderr.join('')}`);
    }),
  ]);
  return { ...child, port: started };
}

export async function post(
  port: number,
  credential: string,
  sealed: string,
): Promise<{ status: number; trackingId?: string; retryAfter?: string | null }> {
  const response = await fetch(`http://127.0.0.1:${port}/messages`, {
    method: 'POST',
    headers: { authorization: `Bearer ${credential}` },
    body: sealed,
  });
  const body = (await response.json()) as { trackingId?: string };
  return {
    status: response.status,
    ...(body.trackingId ? { trackingId: body.trackingId } : {}),
    retryAfter: response.headers.get('retry-after'),
  };
}

export function freshCredential(world: DemoWorld): Promise<string> {
  return credentialFor(world, 'X26', Date.now());
}

/** What the state file says once the processes are gone (or while one runs: WAL readers are fine). */
export function readState(out: string): {
  outcome(traceId: string): StoredOutcome | undefined;
  audit: AuditEntry[];
  queued: number;
  deliveredPerMessage: Map<string, number>;
  close(): void;
} {
  const state = new SqliteState(join(out, 'state.db'), { clock: systemClock, readonly: true });
  const audit = state.audit.all();
  const deliveredPerMessage = new Map<string, number>();
  for (const e of audit) {
    if (e.event === 'delivered' && e.messageId)
      deliveredPerMessage.set(e.messageId, (deliveredPerMessage.get(e.messageId) ?? 0) + 1);
  }
  const queued = (
    state.db.prepare('SELECT count(*) AS n FROM messages WHERE dead_at IS NULL').get() as { n: number }
  ).n;
  return {
    outcome: (t) => state.storedOutcome(t),
    audit,
    queued,
    deliveredPerMessage,
    close: () => state.close(),
  };
}

/** What a drained state file still stores of claim checks and shared bodies, and its integrity. */
export function storedLeftovers(out: string): { integrity: unknown; blobs: number; bodyParts: number } {
  const state = new SqliteState(join(out, 'state.db'), { clock: systemClock, readonly: true });
  try {
    const count = (table: string) =>
      (state.db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n;
    return {
      integrity: state.db.pragma('integrity_check', { simple: true }),
      blobs: count('blobs'),
      bodyParts: count('body_parts'),
    };
  } finally {
    state.close();
  }
}

/**
 * How many worker threads a running `itk3 serve` has, read from a Node diagnostic report: start it
 * with {@link reportOnSignalEnv}'s environment, and this asks for the report with SIGUSR2.
 */
export async function workerThreadsOf(server: Server, reportDir: string): Promise<number> {
  server.proc.kill('SIGUSR2');
  let workers: number | undefined;
  await waitFor(
    () => {
      const [file] = readdirSync(reportDir).filter((f) => f.includes(`.${server.proc.pid}.`));
      try {
        if (file)
          workers = (JSON.parse(readFileSync(join(reportDir, file), 'utf8')) as Report).workers.length;
      } catch {
        // Still being written.
      }
      return workers !== undefined;
    },
    10_000,
    'the diagnostic report',
  );
  return workers!;
}
interface Report {
  workers: unknown[];
}

/** The environment that makes a child write a diagnostic report into `reportDir` on SIGUSR2. */
export function reportOnSignalEnv(reportDir: string): Record<string, string> {
  const options = `${process.env.NODE_OPTIONS ?? ''} --report-on-signal --report-directory=${reportDir}`;
  return { NODE_OPTIONS: options.trim() };
}

/** Poll until `check` holds or `ms` pass. */
export async function waitFor(check: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * POST `sealed` in `chunks` pieces, calling `onProgress` with the fraction sent after each one, as
 * a sender on a slow link would. Rejects if the connection dies (the server was killed).
 */
export function postInChunks(
  port: number,
  credential: string,
  sealed: string,
  chunks: number,
  onProgress: (sent: number) => void,
): Promise<{ status: number; trackingId?: string }> {
  const body = Buffer.from(sealed, 'utf8');
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: '/messages',
        headers: { authorization: `Bearer ${credential}`, 'content-length': body.length },
      },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (c: Buffer) => parts.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const parsed = JSON.parse(Buffer.concat(parts).toString('utf8')) as { trackingId?: string };
          resolve({
            status: res.statusCode ?? 0,
            ...(parsed.trackingId ? { trackingId: parsed.trackingId } : {}),
          });
        });
      },
    );
    req.on('error', reject);
    const size = Math.ceil(body.length / chunks);
    let offset = 0;
    const next = () => {
      if (offset >= body.length) {
        req.end();
        return;
      }
      const piece = body.subarray(offset, offset + size);
      offset += piece.length;
      req.write(piece, () => {
        onProgress(offset / body.length);
        setTimeout(next, 5);
      });
    };
    next();
  });
}

/** Peak resident set size of a running process, in bytes (Linux `/proc/<pid>/status` VmHWM). */
export function peakRss(pid: number): number {
  const kib = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  if (!kib) throw new Error(`no VmHWM for process ${pid}`);
  return Number(kib) * 1024;
}

/**
 * POST `sealed`, sending the headers and the first `headBytes` of the body, then waiting up to
 * `pauseMs` for an answer before sending the rest. `early` says the answer came before the body
 * was sent whole: the server answered without reading it. A connection the server closed before
 * the body was sent whole resolves as status 0, early (a server that answers early and closes can
 * reset the connection before this side has read the answer); after that, it rejects.
 */
export function postWithPause(
  port: number,
  credential: string,
  sealed: string,
  headBytes: number,
  pauseMs: number,
): Promise<{ status: number; trackingId?: string; retryAfter?: string; early: boolean }> {
  const body = Buffer.from(sealed, 'utf8');
  return new Promise((resolve, reject) => {
    let sentWhole = false;
    const req = request(
      {
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: '/messages',
        headers: { authorization: `Bearer ${credential}`, 'content-length': body.length },
      },
      (res) => {
        const early = !sentWhole;
        const parts: Buffer[] = [];
        res.on('data', (c: Buffer) => parts.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const parsed = JSON.parse(Buffer.concat(parts).toString('utf8')) as { trackingId?: string };
          const retryAfter = res.headers['retry-after'];
          resolve({
            status: res.statusCode ?? 0,
            ...(parsed.trackingId ? { trackingId: parsed.trackingId } : {}),
            ...(typeof retryAfter === 'string' ? { retryAfter } : {}),
            early,
          });
          if (early) req.destroy(); // the rest is not wanted
        });
      },
    );
    req.on('error', (error) => {
      if (sentWhole) reject(error);
      else resolve({ status: 0, early: true }); // after an early answer, settled already
    });
    req.write(body.subarray(0, headBytes));
    setTimeout(() => {
      if (req.destroyed) return;
      sentWhole = true;
      req.end(body.subarray(headBytes));
    }, pauseMs);
  });
}

/**
 * POST `sealed` with `Expect: 100-continue`, as curl does with a large body: the body is sent only
 * once the server answers 100 Continue. `bodySent` says whether it was.
 */
export function postExpectingContinue(
  port: number,
  credential: string,
  sealed: string,
): Promise<{ status: number; trackingId?: string; retryAfter?: string; bodySent: boolean }> {
  const body = Buffer.from(sealed, 'utf8');
  return new Promise((resolve, reject) => {
    let bodySent = false;
    const req = request({
      host: '127.0.0.1',
      port,
      method: 'POST',
      path: '/messages',
      headers: {
        authorization: `Bearer ${credential}`,
        'content-length': body.length,
        expect: '100-continue',
      },
    });
    req.on('continue', () => {
      bodySent = true;
      req.end(body);
    });
    req.on('response', (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const parsed = JSON.parse(Buffer.concat(parts).toString('utf8')) as { trackingId?: string };
        const retryAfter = res.headers['retry-after'];
        resolve({
          status: res.statusCode ?? 0,
          ...(parsed.trackingId ? { trackingId: parsed.trackingId } : {}),
          ...(typeof retryAfter === 'string' ? { retryAfter } : {}),
          bodySent,
        });
        if (!bodySent) req.destroy();
      });
    });
    req.on('error', reject);
    req.flushHeaders();
  });
}
