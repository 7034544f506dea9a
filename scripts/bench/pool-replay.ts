/**
 * What the worker pool itself costs (issue 14 item 1), apart from the rest of the pipeline:
 * records the pool's tasks during one real backlog run (small messages, the embedded handlers),
 * then replays exactly those tasks, a stage batch (10) at a time, in this thread
 * (`inThreadCpuWork`, what a stage calls without a pool) and on the pool, rounds alternating.
 * Per round: CPU ms per message of every thread, of the main thread, and of the rest (the workers
 * and V8's background threads), and the messages posted to and answered by the workers.
 *
 *   npx tsx scripts/bench/pool-replay.ts [--modulus 2048|4096] [--messages 400] [--rounds 8]
 *
 * Fresh workers compile the hot code in their own isolates: the pool's figures fall over the first
 * thousands of tasks, so read the last rounds for the steady state and the first for the warm-up.
 */
import './env.js';
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import type { Worker } from 'node:worker_threads';
import { inThreadCpuWork } from '../../lib/adapters/local/cpu-work.js';
import { SoftwareKeyService } from '../../lib/adapters/local/software-keys.js';
import { WorkerPool } from '../../lib/adapters/local/worker-pool.js';
import type { CpuWork } from '../../lib/ports/index.js';
import { createWorld } from '../../lib/testkit/world.js';
import { backlogThroughput } from './embedded.js';
import { keystoreFileFor } from './pool.js';
import { cpuMsSince, summarise, threadCpuMs } from './stats.js';
import { prepareMessages, SIZE_CLASSES } from './workload.js';

type Op = keyof CpuWork;
interface Call {
  op: Op;
  args: unknown[];
}

const { values } = parseArgs({
  options: {
    modulus: { type: 'string', default: '2048' },
    messages: { type: 'string', default: '400' },
    rounds: { type: 'string', default: '8' },
  },
});
const modulus = Number(values.modulus);
const n = Number(values.messages);
const rounds = Number(values.rounds);
if (![2048, 4096].includes(modulus) || !(n > 0) || !(rounds > 0))
  throw new Error('usage: --modulus 2048|4096 --messages N --rounds N');

const now = Date.now();
const world = await createWorld({ now, recipientModulus: modulus });
const small = SIZE_CLASSES.find((c) => c.label === 'small');
if (!small) throw new Error('no small size class');
console.error(`sealing ${n} small messages for RSA-${modulus}…`);
const messages = await prepareMessages(world, small, n, { now, infAck: true });
const keys = new SoftwareKeyService(world.keystore);
const keystore = keystoreFileFor(world);
const pool = await WorkerPool.start({ size: 2, keystoreFile: keystore.file, config: world.config });

try {
  // Record: the pool's port, wrapped for one run (its methods are own properties of `pool.cpu`).
  const port = pool.cpu as unknown as Record<Op, (...args: unknown[]) => Promise<unknown>>;
  const originals = { ...port };
  const calls: Call[] = [];
  for (const op of Object.keys(originals) as Op[]) {
    port[op] = (...args: unknown[]) => {
      calls.push({ op, args: structuredClone(args) });
      return originals[op](...args);
    };
  }
  await backlogThroughput(world, keys, messages, now, pool);
  Object.assign(port, originals);

  // Consecutive tasks of one kind, up to a stage batch, go out together as the stages send them.
  const batches: Call[][] = [];
  for (const call of calls) {
    const last = batches.at(-1);
    if (last && last[0]?.op === call.op && last.length < 10) last.push(call);
    else batches.push([call]);
  }

  const traffic = { posts: 0, replies: 0 };
  for (const worker of pool.workers()) countTraffic(worker, traffic);

  const inThread = inThreadCpuWork(world.config, keys);
  const replay = async (cpu: CpuWork) => {
    traffic.posts = 0;
    traffic.replies = 0;
    const c0 = process.cpuUsage();
    const m0 = threadCpuMs();
    for (const batch of batches) {
      await Promise.all(
        batch.map((c) => (cpu[c.op] as (...args: unknown[]) => Promise<unknown>)(...structuredClone(c.args))),
      );
    }
    const all = cpuMsSince(c0) / n;
    const m1 = threadCpuMs();
    const main = m0 === undefined || m1 === undefined ? Number.NaN : (m1 - m0) / n;
    return { all, main, rest: all - main, posts: traffic.posts / n, replies: traffic.replies / n };
  };

  const perOp = Object.fromEntries(
    [...new Set(calls.map((c) => c.op))].map((op) => [op, calls.filter((c) => c.op === op).length / n]),
  );
  console.log(
    `RSA-${modulus}, ${n} messages: tasks per message ${JSON.stringify(perOp)}, ${batches.length} batches`,
  );
  const figures = { inThread: [] as number[], pool: [] as number[] };
  for (let r = 0; r < rounds; r += 1) {
    const order = r % 2 === 0 ? (['in-thread', 'pool'] as const) : (['pool', 'in-thread'] as const);
    for (const variant of order) {
      const x = await replay(variant === 'pool' ? pool.cpu : inThread);
      (variant === 'pool' ? figures.pool : figures.inThread).push(x.all);
      console.log(
        `round ${r + 1} ${variant.padEnd(9)} CPU ms/msg all ${x.all.toFixed(3)}, main ${x.main.toFixed(2)}, rest ${x.rest.toFixed(2)}` +
          (variant === 'pool'
            ? `; posts ${x.posts.toFixed(2)}, answers ${x.replies.toFixed(2)} per message`
            : ''),
      );
    }
  }
  const late = (v: number[]) => summarise(v.slice(Math.floor(v.length / 2))).median;
  console.log(
    `second half of the rounds, median CPU ms/msg: in thread ${late(figures.inThread).toFixed(3)}, pool ${late(figures.pool).toFixed(3)} (load ${loadavg()[0]?.toFixed(1)})`,
  );
} finally {
  await pool.close();
  keystore.cleanup();
}

/** Counts the messages posted to `worker` and the answers it sends back. */
function countTraffic(worker: Worker, traffic: { posts: number; replies: number }): void {
  const post = worker.postMessage.bind(worker);
  worker.postMessage = (value: unknown, transfer?: Parameters<Worker['postMessage']>[1]) => {
    traffic.posts += 1;
    post(value, transfer);
  };
  worker.on('message', () => {
    traffic.replies += 1;
  });
}
