/**
 * End to end with ECDH-ES+A256KW recipients: a world whose recipients publish P-256 keys, messages
 * sealed by `seal` from the published JWK (the alg follows the key), through the embedded pipeline
 * and the real handlers; a tampered one ends in the uniform DECRYPT_FAILED.
 */
import '../support/env.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recipientKeyFor } from '../../lib/testkit/scenario.js';
import { createWorld, type DemoWorld } from '../../lib/testkit/world.js';
import {
  buildMessage,
  credentialFor,
  embeddedPipeline,
  filesBelow,
  makeTempDir,
  removeTempDirs,
  sealAs,
  submitMessage,
} from '../support/world.js';

let world: DemoWorld;

beforeAll(async () => {
  world = await createWorld({ recipientAlg: 'ECDH-ES+A256KW' });
});
afterAll(removeTempDirs);

function headerOf(compact: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(compact.split('.')[0] ?? '', 'base64url').toString('utf8'));
}

describe('embedded pipeline with ECDH-ES+A256KW recipient keys', () => {
  it('publishes P-256 encryption keys and delivers messages sealed to them', async () => {
    const published = recipientKeyFor(world, 'A83627');
    expect(published.key).toMatchObject({ kty: 'EC', crv: 'P-256', alg: 'ECDH-ES+A256KW', use: 'enc' });
    const baseDir = makeTempDir('itk3-ecdh-');
    const pipeline = embeddedPipeline(world, { baseDir });
    const messages = [buildMessage('GP0001'), buildMessage('X26'), buildMessage('FQ123')];
    const sealed = await sealAs(world, 'GP0001', messages[0]!);
    expect(headerOf(sealed)).toMatchObject({ alg: 'ECDH-ES+A256KW', enc: 'A256GCM' });
    const traces = [
      await submitMessage(pipeline, world, 'GP0001', messages[0]!),
      await submitMessage(pipeline, world, 'X26', messages[1]!),
      await submitMessage(pipeline, world, 'FQ123', messages[2]!),
    ];
    await pipeline.drain();
    for (const trace of traces) expect(await pipeline.outcome(trace)).toMatchObject({ status: 'delivered' });
    expect(filesBelow(baseDir).length).toBeGreaterThan(0);
  });

  it('rejects a message whose wrapped key was tampered with: decrypt, 10009, DECRYPT_FAILED', async () => {
    const pipeline = embeddedPipeline(world, { baseDir: makeTempDir('itk3-ecdh-') });
    const msg = buildMessage('GP0001');
    const parts = (await sealAs(world, 'GP0001', msg)).split('.');
    const wrapped = Buffer.from(parts[1] ?? '', 'base64url');
    wrapped[5] = (wrapped[5] ?? 0) ^ 1;
    parts[1] = wrapped.toString('base64url');
    const result = await pipeline.submit(
      await credentialFor(world, 'GP0001', pipeline.clock.now()),
      parts.join('.'),
    );
    if (result.status !== 202) throw new Error(`front door refused the message: ${result.error}`);
    await pipeline.drain();
    expect(await pipeline.outcome(result.trackingId)).toMatchObject({
      status: 'rejected',
      stage: 'decrypt',
      itk3Code: '10009',
      code: 'DECRYPT_FAILED',
    });
  });
});
