/**
 * The embedded runtime tells `onOutcome` about a delivered trace as soon as deliver's unit of work
 * is committed, with the worker pool's side-by-side rounds as without them. Deliver always runs on
 * its own (its unit commits when it ends); a stop right after it must not swallow the outcomes it
 * committed (the `process` command prints one line per message from these, SIGINT stops the drain).
 */
import '../../support/env.js';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeKeystore } from '../../../lib/adapters/local/keystore.js';
import { WorkerPool } from '../../../lib/adapters/local/worker-pool.js';
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
