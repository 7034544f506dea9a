/**
 * The tracking id a 202 gave is inside every signed ITK3 response (the JWS protected header), so a
 * sender can match a response to its submission even for an early rejection, whatever the file is
 * called where it lands (issue 13, integrator friction).
 */
import '../../support/env.js';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DemoWorld } from '../../../lib/testkit/world.js';
import { worldPaths } from '../../../lib/testkit/world.js';
import {
  buildMessage,
  credentialFor,
  embeddedPipeline,
  filesIn,
  makeTempDir,
  removeTempDirs,
  sealAs,
  submitMessage,
  testWorld,
  verifyResponse,
} from '../../support/world.js';

let world: DemoWorld;
beforeAll(async () => {
  world = await testWorld();
});
afterAll(removeTempDirs);

describe('the tracking id in the signed response', () => {
  it('a 20013 and an authorise-stage rejection both carry the 202 tracking id, signed', async () => {
    const baseDir = makeTempDir();
    const pipeline = embeddedPipeline(world, { baseDir });
    const delivered = await submitMessage(pipeline, world, 'X26', buildMessage('X26'));
    // Addressed to a recipient no rule lets X26 send to: rejected at authorise, answered 20012.
    const refused = await pipeline.submit(
      await credentialFor(world, 'X26', pipeline.clock.now()),
      await sealAs(world, 'X26', buildMessage('X26', { event: 'ITK013D' })),
    );
    if (refused.status !== 202) throw new Error('front door refused the message');
    await pipeline.drain();

    const folder = worldPaths(baseDir).responses('X26');
    const seen = new Map<string, string>();
    for (const file of filesIn(folder)) {
      const { header, message } = await verifyResponse(world, readFileSync(join(folder, file), 'utf8'));
      seen.set(String(header.trackingId), message.header.response?.code ?? '');
    }
    expect(seen.get(delivered)).toBe('ok');
    expect(seen.get(refused.trackingId)).toBe('fatal-error');
  });
});
