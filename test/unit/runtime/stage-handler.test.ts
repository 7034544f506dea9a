/**
 * The handler composer and its ports middleware: a stage value plus a ports provider is the whole
 * handler. The provider runs once per container, a failed cold start does not poison the container,
 * and each deployed stage builds only the ports it uses.
 */
import '../../support/env.js';
import type { Context } from 'aws-lambda';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { awsPortsForAuthenticate } from '../../../functions/authenticate.js';
import { awsPortsForAuthorise } from '../../../functions/authorise.js';
import { awsPortsForDecrypt } from '../../../functions/decrypt.js';
import { awsPortsForDeliver } from '../../../functions/deliver.js';
import { awsPortsForVerify } from '../../../functions/verify.js';
import { resetConfigCache } from '../../../lib/config/source.js';
import { ConfigError } from '../../../lib/errors.js';
import { ENV } from '../../../lib/infra/definitions.js';
import { systemClock } from '../../../lib/ports/index.js';
import { lambdaContext } from '../../../lib/runtime/lambda-context.js';
import type { RuntimeBinding } from '../../../lib/runtime/ports-middleware.js';
import { composeStageHandler } from '../../../lib/runtime/stage-handler.js';
import { authenticate } from '../../../lib/stages/authenticate.js';
import type { DemoWorld } from '../../../lib/testkit/world.js';
import { sqsEvent, sqsRecord, stageContext } from '../../support/records.js';
import { makeTempDir, removeTempDirs, testWorld } from '../../support/world.js';

let world: DemoWorld;

beforeAll(async () => {
  world = await testWorld();
});

afterEach(() => {
  delete process.env[ENV.configJson];
  delete process.env[ENV.configFile];
  resetConfigCache();
  removeTempDirs();
});

/** An inbound message with no credential: authenticate refuses it, unanswered, with one audit entry. */
function anonymousEvent(now: number) {
  return sqsEvent([sqsRecord('not-a-jwe', { sentAt: now })]);
}

describe('composeStageHandler', () => {
  it('runs the stage with the provider’s ports, building them once per container', async () => {
    const ctx = stageContext(world, { baseDir: makeTempDir() });
    let built = 0;
    const handler = composeStageHandler(authenticate, () => {
      built += 1;
      return { ports: ctx.ports, config: ctx.config };
    });

    for (let i = 0; i < 2; i += 1) {
      const response = await handler(anonymousEvent(ctx.clock.now()), lambdaContext('authenticate'));
      expect(response).toEqual({ batchItemFailures: [] });
    }
    expect(built).toBe(1);
    // Both refusals went through the batch step onto this provider's audit log.
    expect(ctx.audit.all().map((e) => [e.stage, e.event, e.code])).toEqual([
      ['authenticate', 'rejected', 'TOKEN_MISSING'],
      ['authenticate', 'rejected', 'TOKEN_MISSING'],
    ]);
  });

  it('a provider that fails is asked again on the next invocation, and then remembered', async () => {
    const ctx = stageContext(world, { baseDir: makeTempDir() });
    let calls = 0;
    const handler = composeStageHandler(authenticate, async (): Promise<RuntimeBinding> => {
      calls += 1;
      if (calls === 1) throw new ConfigError(['cold start without configuration']);
      return { ports: ctx.ports, config: ctx.config };
    });
    const context = (): Context => lambdaContext('authenticate');

    await expect(handler(anonymousEvent(ctx.clock.now()), context())).rejects.toBeInstanceOf(ConfigError);
    expect(await handler(anonymousEvent(ctx.clock.now()), context())).toEqual({ batchItemFailures: [] });
    expect(await handler(anonymousEvent(ctx.clock.now()), context())).toEqual({ batchItemFailures: [] });
    expect(calls).toBe(2);
  });
});

describe('AWS ports per stage (functions/<stage>.ts)', () => {
  it('without configuration each provider fails with a ConfigError', () => {
    for (const provide of [awsPortsForAuthenticate, awsPortsForAuthorise, awsPortsForVerify]) {
      expect(() => provide()).toThrow(ConfigError);
    }
  });

  it('each stage builds only the ports it uses', () => {
    process.env[ENV.configJson] = JSON.stringify(world.configDoc);
    const batch = ['audit', 'blobs', 'clock', 'once', 'queues'];
    const portsOf = (binding: { ports: object }) => Object.keys(binding.ports).sort();

    expect(portsOf(awsPortsForAuthorise())).toEqual(batch);
    expect(portsOf(awsPortsForVerify())).toEqual(batch);
    expect(portsOf(awsPortsForAuthenticate())).toEqual([...batch, 'keys'].sort());
    expect(portsOf(awsPortsForDecrypt())).toEqual([...batch, 'keys'].sort());
    expect(portsOf(awsPortsForDeliver())).toEqual([...batch, 'deliverer', 'keys'].sort());

    const { config, ports } = awsPortsForDeliver();
    expect(config.doc.gatewayOds).toBe(world.config.doc.gatewayOds);
    expect(ports.clock).toBe(systemClock);
  });
});
