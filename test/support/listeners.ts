/**
 * Real `itk3 serve` listeners for a test file: one world per file, each listener on a random
 * loopback port and closed after its test, the temporary folders removed after the file.
 */
import { afterAll, afterEach, beforeAll } from 'vitest';
import { type RunningServer, type ServeOptions, startServer } from '../../lib/cli/serve.js';
import type { DemoWorld } from '../../lib/testkit/world.js';
import { configWithLimits, keyService, makeTempDir, removeTempDirs, testWorld } from './world.js';

export type ServeForTest = (overrides?: Partial<ServeOptions>) => Promise<RunningServer>;

/**
 * Registers the file's hooks and returns its `serve`. `onWorld` hands the world to the file once it
 * is built; `maxSealedBytes` lowers the size cap (undefined: the world's own config).
 */
export function listenersPerTest(
  onWorld: (world: DemoWorld) => void,
  opts: { dirPrefix: string; maxSealedBytes?: number },
): ServeForTest {
  let world: DemoWorld | undefined;
  const servers: RunningServer[] = [];
  beforeAll(async () => {
    world = await testWorld();
    onWorld(world);
  });
  afterEach(async () => {
    for (const s of servers.splice(0)) await s.close();
  });
  afterAll(removeTempDirs);
  return async (overrides = {}) => {
    if (!world) throw new Error('listenersPerTest: serve is called inside a test, once the world is built');
    const config =
      opts.maxSealedBytes === undefined
        ? world.config
        : configWithLimits(world, { maxSealedBytes: opts.maxSealedBytes });
    const server = await startServer({
      config,
      keys: keyService(world),
      baseDir: makeTempDir(opts.dirPrefix),
      port: 0,
      ...overrides,
    });
    servers.push(server);
    return server;
  };
}
