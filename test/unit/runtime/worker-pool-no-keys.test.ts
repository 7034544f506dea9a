/**
 * The worker pool never hands key material to a worker: each worker is started with the keystore
 * file's path and the configuration document, and reads its private keys itself. This file watches
 * everything that crosses to a worker (its workerData and every posted task) while real tasks run —
 * an RSA-OAEP unwrap, a credential check, an inner signature, a Bundle — and looks for any private
 * key member (`d`, `p`, `q`, `dp`, `dq`, `qi`) of the keystore in it.
 */
import '../../support/env.js';
import { join } from 'node:path';
import type { WorkerOptions } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { writeKeystore } from '../../../lib/adapters/local/keystore.js';
import { WorkerPool } from '../../../lib/adapters/local/worker-pool.js';
import { parseSealed } from '../../../lib/envelope/jwe.js';
import type { DemoWorld } from '../../../lib/testkit/world.js';
import {
  buildMessage,
  credentialFor,
  makeTempDir,
  removeTempDirs,
  sealAs,
  signAs,
  testWorld,
} from '../../support/world.js';

/** What the pool gave each worker it started, and every message it posted to one. */
const crossed = vi.hoisted(() => ({ workerData: [] as unknown[], posted: [] as unknown[] }));

vi.mock('node:worker_threads', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:worker_threads')>();
  class WatchedWorker extends real.Worker {
    constructor(filename: string | URL, options?: WorkerOptions) {
      super(filename, options);
      crossed.workerData.push(options?.workerData);
    }
    override postMessage(
      value: unknown,
      transferList?: readonly import('node:worker_threads').Transferable[],
    ) {
      // Recorded before the transfer detaches its buffers.
      crossed.posted.push(structuredClone(value));
      super.postMessage(value, transferList);
    }
  }
  return { ...real, Worker: WatchedWorker };
});

let world: DemoWorld;
let pool: WorkerPool;

beforeAll(async () => {
  world = await testWorld();
  const keystoreFile = join(makeTempDir('itk3-pool-nokeys-'), 'keystore.json');
  writeKeystore(keystoreFile, world.keystore);
  pool = await WorkerPool.start({ size: 2, keystoreFile, config: world.config });
});

afterAll(async () => {
  await pool?.close();
  removeTempDirs();
});

/** Every string in a value, byte arrays as base64url (the encoding of JWK members). */
function strings(value: unknown, out: string[] = []): string[] {
  if (typeof value === 'string') out.push(value);
  else if (value instanceof Uint8Array) out.push(Buffer.from(value).toString('base64url'));
  else if (Array.isArray(value)) for (const v of value) strings(v, out);
  else if (value && typeof value === 'object') for (const v of Object.values(value)) strings(v, out);
  return out;
}

describe('worker pool: no key material crosses to a worker', () => {
  it('workerData and every posted task hold no private key member of the keystore', async () => {
    const msg = buildMessage('GP0001');
    const now = Date.now();
    await pool.cpu.verifyCredential(await credentialFor(world, 'GP0001', now), now);
    const compact = await sealAs(world, 'GP0001', msg);
    await pool.cpu.openSealed(compact, parseSealed(compact, world.config.doc.limits).kid);
    await pool.cpu.verifySignedContent({
      compact: await signAs(world, 'GP0001', msg),
      organisation: 'GP0001',
      routing: msg.routing,
      ruleId: 'any',
    });
    await pool.cpu.parseBundle(msg.bytes, 'xml');

    // The watch saw what it should: two workers started, the four tasks posted.
    expect(crossed.workerData).toHaveLength(2);
    const ops = (crossed.posted.flat() as { op?: string }[]).map((t) => t.op);
    expect(ops).toEqual(
      expect.arrayContaining(['verifyCredential', 'openSealed', 'verifySignedContent', 'parseBundle']),
    );
    for (const data of crossed.workerData) {
      expect(Object.keys(data as object).sort()).toEqual(['configDoc', 'entry', 'keystoreFile', 'tsx']);
    }

    const secrets = world.keystore.keys.flatMap((entry) =>
      Object.entries(entry.privateJwk)
        .filter(([member]) => ['d', 'p', 'q', 'dp', 'dq', 'qi'].includes(member))
        .map(([, value]) => String(value)),
    );
    expect(secrets.length).toBeGreaterThan(0);
    const sent = strings([crossed.workerData, crossed.posted]).join('\n');
    for (const secret of secrets) expect(sent).not.toContain(secret.slice(0, 24));
  });
});
