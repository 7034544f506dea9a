/**
 * A pool of worker threads for the embedded runtime's CPU-heavy work, one task per record per
 * stage: credential verification (authenticate), opening the sealed message — parse, RSA-OAEP
 * unwrap or ECDH, AES-GCM — (decrypt), the inner signature with every pure check of verify, and
 * building and signing the ITK008M (deliver). With these on workers, a batch's records (processed
 * concurrently) and the stages run side by side use every core.
 *
 * - **Keys**: each worker reads the keystore file itself and holds its own key handles (one per
 *   worker: one shared handle would serialise the RSA operations). Only what the stages need comes
 *   back (the inner JWS text, the verified Bundle's facts, the signed response), never a key.
 * - **Ports**: {@link WorkerPool.cpu} is the stages' {@link CpuWork} port: the stages' own
 *   functions (cpu-work.ts), so results and errors are those of the in-process path (same
 *   classes, codes, messages and response hints). The key-service port itself stays in-process.
 * - **Hand-off**: the tasks of one turn of the event loop go to a worker as one message; it
 *   answers the quick ones together, then each slow key operation as it ends (pool-worker.ts).
 * - **Crash**: a worker that dies fails its tasks in flight with a {@link TransientError} (the
 *   record is retried, as for any transient failure) and is replaced.
 * - **Shutdown**: {@link WorkerPool.close} lets tasks in flight finish (bounded), then terminates
 *   every worker. An idle worker never keeps the process alive.
 * - Nothing here logs; message bytes, tokens and keys are only ever posted between threads.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { LoadedConfig } from '../../config/load.js';
import type { PipelineConfig } from '../../config/schema.js';
import type { VerifiedCredential } from '../../envelope/token.js';
import {
  AuthenticationError,
  AuthorisationError,
  DecryptionError,
  EnvelopeError,
  Itk3ValidationError,
  type RejectionCode,
  RejectionError,
  SignatureError,
  type TransientCode,
  TransientError,
} from '../../errors.js';
import type { BundleFormat, Itk3Message } from '../../itk3/parse.js';
import type { CpuWork } from '../../ports/index.js';
import type { ResponseSpec } from '../../stages/deliver.js';
import type { BundleContent, SignedContentInput } from '../../stages/verify.js';

/** What a worker is started with: where to read its keys, and the configuration document. */
export interface PoolWorkerData {
  keystoreFile: string;
  configDoc: PipelineConfig;
}

/** A task for a worker; `id` pairs it with its reply. */
export type PoolTask = { id: number } & (
  | { op: 'verifyCredential'; token: string; receivedAtMs: number }
  | { op: 'openSealed'; compact: string; authorisedKid: string }
  | { op: 'verifySignedContent'; input: SignedContentInput }
  | { op: 'signResponse'; spec: ResponseSpec }
  | { op: 'parseBundle'; payload: Uint8Array; format: BundleFormat }
);

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
type TaskInput = DistributiveOmit<PoolTask, 'id'>;

/** An error as it crosses from a worker: enough to rebuild the same class, code and message. */
export interface SerializedError {
  className: string;
  code?: string;
  message: string;
  cause?: Record<string, unknown>;
  responseHints?: RejectionError['responseHints'];
}

/** A worker's answer to one task; answers come back in arrays (quick ones together, slow ones as they end). */
export type TaskReply =
  | { id: number; ok: true; value: unknown }
  | { id: number; ok: false; error: SerializedError };

export type PoolReply = { ready: true } | { startupError: string };

export interface WorkerPoolOptions {
  /** Number of workers, at least 1 (see {@link workerCount}). */
  size: number;
  /** The keystore file each worker reads its private keys from. */
  keystoreFile: string;
  /** The configuration the stages use: workers verify against the same document. */
  config: LoadedConfig;
}

/** How long {@link WorkerPool.close} lets tasks in flight finish before terminating workers. */
const DEFAULT_CLOSE_TIMEOUT_MS = 10_000;
/** A worker that dies this often within {@link RESTART_WINDOW_MS} is not restarted again. */
const MAX_RESTARTS = 5;
const RESTART_WINDOW_MS = 10_000;

/**
 * Workers for `requested` (a `--workers` value): undefined means one per core this process may use
 * (`os.availableParallelism()`); 0 or 1 means no pool (the work stays in the calling thread, where
 * one worker would only add hand-offs).
 */
export function workerCount(requested?: number): number {
  const n = requested ?? availableParallelism();
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError('the worker count must be a whole number ≥ 0');
  return n <= 1 ? 0 : n;
}

interface Pending {
  resolve(value: unknown): void;
  reject(error: Error): void;
  op: PoolTask['op'];
}

interface Slot {
  worker: Worker;
  inFlight: Map<number, Pending>;
  /** When this slot's workers died (recent ones only), to stop restarting a crash loop. */
  restarts: number[];
  dead: boolean;
  /** Tasks of this turn of the event loop, posted together (one message, one wake-up). */
  outbox: PoolTask[];
  outboxTransfer: ArrayBuffer[];
}

const ENTRY = new URL(`./pool-worker.${import.meta.url.endsWith('.ts') ? 'ts' : 'js'}`, import.meta.url);

/**
 * The worker bootstrap: sources run through tsx (as bin/itk3.js does), so a `.ts` entry registers it
 * in the worker first; a built `.js` entry is imported as it is.
 */
const BOOTSTRAP = `
const { workerData } = require('node:worker_threads');
(async () => {
  if (workerData.tsx) (await import(workerData.tsx)).register();
  await import(workerData.entry);
})().catch((error) => {
  const { parentPort } = require('node:worker_threads');
  parentPort.postMessage({ startupError: 'cannot load the worker: ' + (error && error.name) });
  process.exit(1);
});
`;

export class WorkerPool {
  readonly size: number;
  readonly #slots: Slot[] = [];
  readonly #data: PoolWorkerData & { entry: string; tsx?: string };
  #nextId = 1;
  #nextSlot = 0;
  #closing = false;
  #closed: Promise<void> | undefined;

  private constructor(opts: WorkerPoolOptions) {
    if (!Number.isSafeInteger(opts.size) || opts.size < 1)
      throw new RangeError('a pool needs at least 1 worker');
    this.size = opts.size;
    this.#data = {
      keystoreFile: opts.keystoreFile,
      configDoc: opts.config.doc,
      entry: ENTRY.href,
      ...(ENTRY.pathname.endsWith('.ts') ? { tsx: import.meta.resolve('tsx/esm/api') } : {}),
    };
  }

  /** Start `size` workers; resolves once each has read its keys and configuration. */
  static async start(opts: WorkerPoolOptions): Promise<WorkerPool> {
    const pool = new WorkerPool(opts);
    const started = Array.from({ length: pool.size }, () => pool.#spawn());
    const outcomes = await Promise.allSettled(started.map((s) => s.ready));
    const failure = outcomes.find((o) => o.status === 'rejected');
    pool.#slots.push(...started.map((s) => s.slot));
    if (failure) {
      await pool.close({ timeoutMs: 0 });
      throw (failure as PromiseRejectedResult).reason;
    }
    return pool;
  }

  /** The stages' CPU-heavy pure steps, on the workers. */
  readonly cpu: CpuWork = {
    verifyCredential: async (token, receivedAtMs) =>
      (await this.#run({ op: 'verifyCredential', token, receivedAtMs })) as VerifiedCredential,
    openSealed: async (compact, authorisedKid) =>
      (await this.#run({ op: 'openSealed', compact, authorisedKid })) as string,
    verifySignedContent: async (input) =>
      (await this.#run({ op: 'verifySignedContent', input })) as BundleContent,
    signResponse: async (spec) => (await this.#run({ op: 'signResponse', spec })) as string,
    parseBundle: async (payload, format) =>
      (await this.#run({ op: 'parseBundle', payload: transferableCopy(payload), format })) as Itk3Message,
  };

  /** The live worker threads (a test stops one to see the pool recover). */
  workers(): readonly Worker[] {
    return this.#slots.map((s) => s.worker);
  }

  /** Tasks posted and not yet answered, over every worker. */
  get inFlight(): number {
    return this.#slots.reduce((n, s) => n + s.inFlight.size, 0);
  }

  /**
   * Stop: no new tasks; tasks in flight get up to `timeoutMs` to finish, then every worker is
   * terminated (what is still in flight then fails transiently). Idempotent.
   */
  close(opts: { timeoutMs?: number } = {}): Promise<void> {
    this.#closing = true;
    this.#closed ??= (async () => {
      const deadline = Date.now() + (opts.timeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS);
      while (this.inFlight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
      await Promise.all(this.#slots.map((s) => s.worker.terminate()));
    })();
    return this.#closed;
  }

  #run(task: TaskInput): Promise<unknown> {
    if (this.#closing) return Promise.reject(unavailable(task.op, 'the worker pool is closed'));
    const slot = this.#pick();
    if (!slot) return Promise.reject(unavailable(task.op, 'every pool worker keeps stopping'));
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      slot.inFlight.set(id, { resolve, reject, op: task.op });
      slot.worker.ref(); // a task in flight keeps the process alive until it is answered
      // A batch's records post their tasks in the same turn: one message per worker per turn.
      if (slot.outbox.length === 0) setImmediate(() => this.#flush(slot));
      slot.outbox.push({ ...task, id } as PoolTask);
      slot.outboxTransfer.push(...taskTransfer(task));
    });
  }

  #flush(slot: Slot): void {
    const tasks = slot.outbox;
    const transfer = slot.outboxTransfer;
    slot.outbox = [];
    slot.outboxTransfer = [];
    // A worker that died meanwhile has failed these tasks already (its exit did the accounting).
    if (tasks.length > 0 && slot.worker.threadId !== -1) slot.worker.postMessage(tasks, transfer);
  }

  /** The least busy live worker; ties go round the pool. */
  #pick(): Slot | undefined {
    let best: Slot | undefined;
    for (let i = 0; i < this.#slots.length; i += 1) {
      const slot = this.#slots[(this.#nextSlot + i) % this.#slots.length] as Slot;
      if (!slot.dead && (!best || slot.inFlight.size < best.inFlight.size)) best = slot;
    }
    this.#nextSlot = (this.#nextSlot + 1) % this.#slots.length;
    return best;
  }

  #spawn(restarts: number[] = []): { slot: Slot; ready: Promise<void> } {
    const worker = new Worker(BOOTSTRAP, { eval: true, workerData: this.#data });
    const slot: Slot = { worker, inFlight: new Map(), restarts, dead: false, outbox: [], outboxTransfer: [] };
    let started = false;
    const ready = new Promise<void>((resolve, reject) => {
      worker.on('message', (reply: PoolReply | TaskReply[]) => {
        if (Array.isArray(reply)) {
          for (const r of reply) this.#settle(slot, r);
        } else if ('ready' in reply) {
          started = true;
          resolve();
        } else if ('startupError' in reply) {
          reject(new Error(`a pool worker could not start: ${reply.startupError}`));
        }
      });
      // An uncaught error ends the worker: 'exit' follows and does the accounting.
      worker.on('error', () => undefined);
      worker.on('exit', () => {
        if (!started) reject(new Error('a pool worker stopped while starting'));
        this.#onExit(slot);
      });
    });
    // A replacement's failure to start is handled by its own exit; nobody else awaits it.
    ready.catch(() => undefined);
    // Starting, a worker keeps the process alive (someone awaits it); idle, it must not. Settled
    // once the listeners are on (adding one refs the worker again).
    void ready.then(
      () => slot.inFlight.size === 0 && worker.unref(),
      () => undefined,
    );
    return { slot, ready };
  }

  #settle(slot: Slot, reply: TaskReply): void {
    const pending = slot.inFlight.get(reply.id);
    if (!pending) return;
    slot.inFlight.delete(reply.id);
    if (slot.inFlight.size === 0) slot.worker.unref();
    if (reply.ok) pending.resolve(reply.value);
    else pending.reject(rebuild(reply.error));
  }

  /** A worker ended: fail what it held, and put a new one in its place unless closing. */
  #onExit(slot: Slot): void {
    const lost = [...slot.inFlight.values()];
    slot.inFlight.clear();
    for (const p of lost) p.reject(unavailable(p.op, 'the worker running this task stopped'));
    const index = this.#slots.indexOf(slot);
    if (this.#closing || index < 0) return;
    const now = Date.now();
    const recent = [...slot.restarts.filter((t) => now - t < RESTART_WINDOW_MS), now];
    // Crashing in a loop: leave the slot dead. With no live worker, tasks fail transiently
    // (retried, then dead-lettered with their reason) instead of the pool spinning here.
    if (recent.length > MAX_RESTARTS) slot.dead = true;
    else this.#slots[index] = this.#spawn(recent).slot;
  }
}

/** The failure a task gets when its worker is gone: transient, so the record is retried. */
function unavailable(op: PoolTask['op'], message: string): TransientError {
  const code: TransientCode =
    op === 'openSealed' || op === 'signResponse' ? 'KEY_SERVICE_UNAVAILABLE' : 'UNEXPECTED';
  return new TransientError(code, message);
}

const REJECTIONS: Record<
  string,
  new (
    code: RejectionCode,
    message: string,
    o?: { cause?: unknown },
  ) => RejectionError
> = {
  AuthenticationError,
  AuthorisationError,
  EnvelopeError,
  SignatureError,
  Itk3ValidationError,
  RejectionError,
};

/** The worker's error as the in-process path would have thrown it. */
function rebuild(e: SerializedError): Error {
  const options = e.cause ? { cause: e.cause } : undefined;
  if (e.className === 'DecryptionError') return new DecryptionError(options);
  const Rejection = REJECTIONS[e.className];
  if (Rejection && e.code) {
    const error = new Rejection(e.code as RejectionCode, e.message, options);
    if (e.responseHints) error.responseHints = e.responseHints;
    return error;
  }
  if (e.className === 'TransientError' && e.code) {
    return new TransientError(e.code as TransientCode, e.message, options);
  }
  return new Error(e.message);
}

/**
 * An exactly-sized copy whose buffer can be transferred: posting it moves only its own bytes and
 * leaves the caller's (possibly a pooled Buffer's) alone.
 */
function transferableCopy(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(bytes);
}

function taskTransfer(task: TaskInput): ArrayBuffer[] {
  if (task.op === 'parseBundle') return [task.payload.buffer as ArrayBuffer];
  return [];
}
