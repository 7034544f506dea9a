/**
 * The embedded runtime tells `onOutcome` about a delivered trace as soon as deliver's unit of work
 * is committed, with the worker pool's side-by-side rounds as without them. Deliver always runs on
 * its own (its unit commits when it ends); a stop right after it must not swallow the outcomes it
 * committed (the `process` command prints one line per message from these, SIGINT stops the drain).
 * And every receive of a side-by-side round is committed on its own before any of the round's
 * handlers runs: a crash during the round still counts each attempt, so a message that kills the
 * process every time ends in the DLQ instead of looping.
 */
import '../../support/env.js';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeKeystore } from '../../../lib/adapters/local/keystore.js';
import { SqliteState } from '../../../lib/adapters/local/sqlite-state.js';
import { WorkerPool } from '../../../lib/adapters/local/worker-pool.js';
import { VirtualClock } from '../../../lib/runtime/embedded.js';
import type { StoredOutcome } from '../../../lib/runtime/state.js';
import type { DemoWorld } from '../../../lib/testkit/world.js';
import {
  buildMessage,
  embeddedPipeline,
  makeTempDir,
  removeTempDirs,
  submitMessage,
  testWorld,
} from '../../support/world.js';

let world: DemoWorld;
let pool: WorkerPool;

beforeAll(async () => {
  world = await testWorld();
  const keystoreFile = join(makeTempDir('itk3-sbs-'), 'keystore.json');
  writeKeystore(keystoreFile, world.keystore);
  pool = await WorkerPool.start({ size: 2, keystoreFile, config: world.config });
});

afterAll(async () => {
  await pool?.close();
  removeTempDirs();
});

describe('embedded runtime: outcomes are told once committed, side by side or not', () => {
  for (const sideBySide of [true, false]) {
    it(`a stop right after deliver still tells its delivered outcome (sideBySide: ${sideBySide})`, async () => {
      const pipeline = embeddedPipeline(world, {
        baseDir: makeTempDir('itk3-sbs-run-'),
        pool,
        sideBySide,
        // Stop the drain as soon as deliver's invocation has ended (as SIGINT would then).
        handlers: (defaults) => ({
          ...defaults,
          deliver: async (event, context) => {
            const response = await defaults.deliver(event, context);
            pipeline.stop();
            return response;
          },
        }),
      });
      const told: StoredOutcome[] = [];
      pipeline.onOutcome = (o) => told.push(o);
      const trace = await submitMessage(pipeline, world, 'GP0001', buildMessage('GP0001'));
      await pipeline.drain();
      expect(pipeline.invocations.deliver).toBe(1);
      expect((await pipeline.outcome(trace)).status).toBe('delivered');
      expect(told).toEqual([expect.objectContaining({ traceId: trace, status: 'delivered' })]);
    });
  }
});

describe('embedded runtime: a side-by-side round commits every receive before its handlers run', () => {
  it('while authorise runs, the receive of the batch authenticate got in the same round is already committed', async () => {
    const baseDir = makeTempDir('itk3-sbs-receive-');
    const file = join(baseDir, 'state.db');
    const clock = new VirtualClock();
    const state = new SqliteState(file, { clock });
    let second: string | undefined;
    let committedReceives: number | undefined;
    const pipeline = embeddedPipeline(world, {
      baseDir,
      clock,
      state,
      pool,
      handlers: (defaults) => ({
        ...defaults,
        authorise: async (event, context) => {
          if (second && committedReceives === undefined) {
            // Let the round go on (it would receive authenticate's batch now), then look at the
            // file as a crash would leave it: only what is committed.
            await new Promise((resolve) => setImmediate(resolve));
            const reader = new Database(file, { readonly: true });
            try {
              const row = reader
                .prepare('SELECT receive_count FROM messages WHERE trace_id = ? ORDER BY seq LIMIT 1')
                .get(second) as { receive_count: number } | undefined;
              committedReceives = row?.receive_count;
            } finally {
              reader.close();
            }
          }
          return defaults.authorise(event, context);
        },
      }),
    });
    try {
      const first = await submitMessage(pipeline, world, 'GP0001', buildMessage('GP0001'));
      await pipeline.drain({ maxRounds: 1 }); // authenticate: the first message now waits in authorise
      second = await submitMessage(pipeline, world, 'X26', buildMessage('X26'));
      await pipeline.drain(); // one round runs authorise (first) and authenticate (second) side by side
      expect(committedReceives).toBe(1);
      for (const trace of [first, second]) expect((await pipeline.outcome(trace)).status).toBe('delivered');
    } finally {
      state.close();
    }
  });
});
