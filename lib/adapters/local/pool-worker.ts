/**
 * One worker of the embedded runtime's CPU pool (lib/adapters/local/worker-pool.ts).
 *
 * It reads the private keys itself from the keystore file it is given (no key material is posted
 * to it), holds its own `KeyObject`s — one key handle per worker, so RSA operations on different
 * workers never queue behind one handle — and rebuilds the configuration's indexes from the
 * document. It answers the pool's tasks with the same code the stages run in process
 * (lib/adapters/local/cpu-work.ts, lib/adapters/local/software-keys.ts). It never logs: errors go back to
 * the pool as class, code and message (messages are the pipeline's own terse ones).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { loadConfig } from '../../config/load.js';
import { ConfigError, PipelineError, RejectionError } from '../../errors.js';
import { inThreadCpuWork } from './cpu-work.js';
import { readKeystore } from './keystore.js';
import { SoftwareKeyService } from './software-keys.js';
import type { PoolReply, PoolTask, PoolWorkerData, SerializedError, TaskReply } from './worker-pool.js';

const port = parentPort;
if (!port) throw new Error('pool-worker runs only as a worker thread');
const data = workerData as PoolWorkerData;

let cpu: ReturnType<typeof inThreadCpuWork>;
try {
  // The worker's own key handles: the recipient key (openSealed) and the response key (signResponse).
  cpu = inThreadCpuWork(loadConfig(data.configDoc), new SoftwareKeyService(readKeystore(data.keystoreFile)));
  port.postMessage({ ready: true } satisfies PoolReply);
} catch (error) {
  // readKeystore and loadConfig list their problems as ConfigError issues that name files and
  // problems, never keys: pass those on (a ConfigError's first line is only "configuration is
  // invalid (N problems):"). Anything else: the first line of its message.
  const reason =
    error instanceof ConfigError
      ? error.issues.join('; ')
      : error instanceof Error
        ? (error.message.split('\n')[0] ?? error.name)
        : 'unknown failure';
  port.postMessage({ startupError: reason } satisfies PoolReply);
  process.exit(1);
}

/**
 * Tasks that take milliseconds (the recipient key's private-key RSA operation: 1 ms at 2048 bits,
 * 5 at 4096; an ECDH recipient key is quicker but goes the same way); the others take tenths of one.
 */
const SLOW_OPS: ReadonlySet<PoolTask['op']> = new Set(['openSealed']);
/** Slow answers that end within this long of the last one sent share one message back (one wake-up). */
const SLOW_REPLY_GATHER_MS = 1;

interface Answer {
  reply: TaskReply;
  transfer: ArrayBuffer[];
}

/**
 * The pool posts the tasks of one turn together. The quick ones are answered first, together; the
 * slow ones after, each sent as soon as a millisecond's worth is done. The main thread then carries
 * on with a batch's quick records (and each decrypted one) while the slow keys run, instead of
 * waiting for the whole batch.
 */
port.on('message', (tasks: PoolTask[]) => {
  void answer(tasks);
});

async function answer(tasks: PoolTask[]): Promise<void> {
  const quick = tasks.filter((t) => !SLOW_OPS.has(t.op));
  const slow = tasks.filter((t) => SLOW_OPS.has(t.op));
  if (quick.length > 0) send(await Promise.all(quick.map(settle)));
  let held: Answer[] = [];
  let since = performance.now();
  for (const [i, task] of slow.entries()) {
    held.push(await settle(task));
    const now = performance.now();
    if (i === slow.length - 1 || now - since >= SLOW_REPLY_GATHER_MS) {
      send(held);
      held = [];
      since = now;
    }
  }
}

function settle(task: PoolTask): Promise<Answer> {
  return run(task).then(
    ({ value, transfer }) => ({ reply: { id: task.id, ok: true, value } as TaskReply, transfer }),
    (error: unknown) => ({
      reply: { id: task.id, ok: false, error: serialize(error) } as TaskReply,
      transfer: [],
    }),
  );
}

function send(answers: Answer[]): void {
  port?.postMessage(
    answers.map((a) => a.reply),
    answers.flatMap((a) => a.transfer),
  );
}

async function run(task: PoolTask): Promise<{ value: unknown; transfer: ArrayBuffer[] }> {
  switch (task.op) {
    case 'verifyCredential':
      return { value: await cpu.verifyCredential(task.token, task.receivedAtMs), transfer: [] };
    case 'openSealed':
      return { value: await cpu.openSealed(task.compact, task.authorisedKid), transfer: [] };
    case 'verifySignedContent':
      return { value: await cpu.verifySignedContent(task.input), transfer: [] };
    case 'signResponse':
      return { value: await cpu.signResponse(task.spec), transfer: [] };
    case 'parseBundle':
      return { value: await cpu.parseBundle(task.payload, task.format), transfer: [] };
  }
}

function serialize(error: unknown): SerializedError {
  if (error instanceof PipelineError) {
    const cause = (error as { cause?: unknown }).cause;
    return {
      className: error.constructor.name,
      code: error.code,
      message: error.message,
      // Plain-data causes (jose's code and claim, kept for explain and tests) cross as they are.
      ...(isPlainData(cause) ? { cause } : {}),
      ...(error instanceof RejectionError && error.responseHints
        ? { responseHints: error.responseHints }
        : {}),
    };
  }
  // Not one of ours: its name only (a message of a library's error could quote input).
  return { className: 'Error', message: `unexpected ${error instanceof Error ? error.name : 'failure'}` };
}

function isPlainData(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Object.getPrototypeOf(value) !== Object.prototype) {
    return false;
  }
  return Object.values(value).every((v) => v === null || ['string', 'number', 'boolean'].includes(typeof v));
}
