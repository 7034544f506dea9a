/**
 * The composition root of a handler invocation: the embedded runtime's ports travel on the Lambda
 * context; without them the handler is in AWS (or emulator mode) and builds its binding from the
 * environment once — and a failed cold start does not poison the container.
 */
import type { Context } from 'aws-lambda';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { resetConfigCache } from '../../../lib/config/source.js';
import { ConfigError } from '../../../lib/errors.js';
import { ENV } from '../../../lib/infra/definitions.js';
import { systemClock } from '../../../lib/ports/index.js';
import { bindingFor, EMBEDDED_BINDING, type EmbeddedContext } from '../../../lib/runtime/binding.js';
import type { DemoWorld } from '../../../lib/testkit/world.js';
import { embeddedPipeline, makeTempDir, testWorld } from '../../support/world.js';

let world: DemoWorld;

beforeAll(async () => {
  world = await testWorld();
});

afterEach(() => {
  delete process.env[ENV.configJson];
  delete process.env[ENV.configFile];
  resetConfigCache();
});

const bareContext = { functionName: 'itk3-verify' } as Context;

describe('bindingFor', () => {
  it('returns the embedded runtime’s ports and configuration from the context', async () => {
    const pipeline = embeddedPipeline(world, { baseDir: makeTempDir() });
    const context: EmbeddedContext = {
      ...bareContext,
      [EMBEDDED_BINDING]: { ports: pipeline.ports, config: pipeline.config },
    };
    const binding = await bindingFor(context);
    expect(binding.ports).toBe(pipeline.ports);
    expect(binding.config).toBe(pipeline.config);
  });

  it('without an embedded binding and with no configuration, fails with a ConfigError — and recovers', async () => {
    await expect(bindingFor(bareContext)).rejects.toBeInstanceOf(ConfigError);

    // The failed cold start is forgotten: once configuration is there, the next invocation binds.
    process.env[ENV.configJson] = JSON.stringify(world.configDoc);
    const binding = await bindingFor(bareContext);
    expect(binding.config.doc.gatewayOds).toBe(world.config.doc.gatewayOds);
    expect(binding.ports.clock).toBe(systemClock);
    expect(Object.keys(binding.ports).sort()).toEqual(
      ['audit', 'blobs', 'clock', 'deliverer', 'keys', 'once', 'queues'].sort(),
    );
    // Bound once per container.
    expect(await bindingFor(bareContext)).toBe(binding);
  });
});
