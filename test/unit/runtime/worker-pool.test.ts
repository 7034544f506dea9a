/**
 * The embedded runtime's worker pool (lib/adapters/local/worker-pool.ts), with real keys, real
 * fixtures and real worker threads: every task gives what the in-process path gives (value, or
 * error class, code, message and cause); a worker stopped mid-task fails that task transiently and
 * is replaced; a pipeline whose worker dies mid-decrypt retries the record and delivers it; close
 * lets work finish and leaves no thread behind; an idle pool never keeps a process alive.
 */
import '../../support/env.js';
import { execFile } from 'node:child_process';
import { createPublicKey, randomUUID, verify } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inThreadCpuWork } from '../../../lib/adapters/local/cpu-work.js';
import { writeKeystore } from '../../../lib/adapters/local/keystore.js';
import { SoftwareKeyService } from '../../../lib/adapters/local/software-keys.js';
import { WorkerPool, workerCount } from '../../../lib/adapters/local/worker-pool.js';
import { parseSealed } from '../../../lib/envelope/jwe.js';
import { TransientError } from '../../../lib/errors.js';
import { fixturesDir } from '../../../lib/itk3/index.js';
import { authorise } from '../../../lib/policy/index.js';
import type { CpuWork } from '../../../lib/ports/index.js';
import { createWorld, type DemoWorld } from '../../../lib/testkit/world.js';
import {
  buildMessage,
  credentialFor,
  embeddedPipeline,
  makeTempDir,
  removeTempDirs,
  sealAs,
  signAs,
  submitMessage,
  testWorld,
} from '../../support/world.js';

let world: DemoWorld;
let keystoreFile: string;
let pool: WorkerPool;
let local: SoftwareKeyService;
let inThread: CpuWork;

beforeAll(async () => {
  world = await testWorld();
  keystoreFile = join(makeTempDir('itk3-pool-'), 'keystore.json');
  writeKeystore(keystoreFile, world.keystore);
  pool = await WorkerPool.start({ size: 2, keystoreFile, config: world.config });
  local = new SoftwareKeyService(world.keystore);
  inThread = inThreadCpuWork(world.config, local);
});

afterAll(async () => {
  await pool?.close();
  removeTempDirs();
});

/** A task's outcome as comparable data: the value, or the error's class, code, message and cause. */
async function settle(promise: Promise<unknown>): Promise<unknown> {
  try {
    return { value: comparable(await promise) };
  } catch (error) {
    const e = error as Error & { code?: string; cause?: unknown; responseHints?: unknown };
    return {
      error: {
        class: e.constructor.name,
        code: e.code,
        message: e.message,
        cause: e.cause,
        responseHints: e.responseHints,
      },
    };
  }
}

/** Byte arrays as hex (a Buffer and a Uint8Array with the same bytes compare equal). */
function comparable(value: unknown): unknown {
  if (value instanceof Uint8Array) return Buffer.from(value).toString('hex');
  if (Array.isArray(value)) return value.map(comparable);
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, comparable(v)]));
  }
  return value;
}

/** The policy rule authorise matches for a GP0001 message: what verify is given with its record. */
async function ruleFor(msg: ReturnType<typeof buildMessage>): Promise<string> {
  const now = Date.now();
  const c = await inThread.verifyCredential(await credentialFor(world, 'GP0001', now), now);
  const principal = {
    issuer: c.issuerId,
    iss: c.iss,
    subject: c.subject,
    organisation: c.organisation,
    actors: c.actors,
    roles: c.roles,
    jti: c.jti,
  };
  const sealed = parseSealed(await sealAs(world, 'GP0001', msg), world.config.doc.limits);
  return authorise({ principal, routing: msg.routing, kid: sealed.kid, receivedAt: now }, world.config)
    .ruleId;
}

/** The same call on the pool and in this thread must end the same way. */
async function expectSame(call: (cpu: CpuWork) => Promise<unknown>): Promise<unknown> {
  const [pooled, here] = await Promise.all([settle(call(pool.cpu)), settle(call(inThread))]);
  expect(pooled).toEqual(here);
  return pooled;
}

describe('worker pool: the same results as the in-process path', () => {
  it('workerCount: 0 and 1 mean no pool, the default is one worker per usable core', () => {
    expect(workerCount(0)).toBe(0);
    expect(workerCount(1)).toBe(0);
    expect(workerCount(3)).toBe(3);
    expect(workerCount()).toBe(availableParallelism() > 1 ? availableParallelism() : 0);
    expect(() => workerCount(-1)).toThrow(RangeError);
  });

  it('credential verify: the same principal, and the same error for expired, foreign and broken tokens', async () => {
    const now = Date.now();
    const good = await credentialFor(world, 'GP0001', now);
    const verified = (await expectSame((cpu) => cpu.verifyCredential(good, now))) as { value?: unknown };
    expect(verified.value).toMatchObject({ organisation: 'GP0001' });
    const failures = (await Promise.all([
      expectSame((cpu) => cpu.verifyCredential(good, now + 3_600_000)), // expired at receipt
      expectSame((cpu) => cpu.verifyCredential(`${good.slice(0, -4)}AAAA`, now)), // signature
      expectSame((cpu) => cpu.verifyCredential('not-a-token', now)),
      expectSame((cpu) => cpu.verifyCredential('', now)),
    ])) as { error?: { class: string; code: string } }[];
    expect(failures.map((f) => f.error?.class)).toEqual([
      'AuthenticationError',
      'AuthenticationError',
      'AuthenticationError',
      'AuthenticationError',
    ]);
    expect(failures[0]?.error?.code).toBe('TOKEN_EXPIRED');
  });

  it('open sealed: the same inner JWS, the same refusal for another kid, a tampered or broken envelope', async () => {
    const msg = buildMessage('GP0001');
    const compact = await sealAs(world, 'GP0001', msg);
    const { kid } = parseSealed(compact, world.config.doc.limits);
    const opened = (await expectSame((cpu) => cpu.openSealed(compact, kid))) as { value?: string };
    // The inner compact JWS, as text.
    expect(opened.value).toMatch(/^eyJ[\w-]*\.[\w-]+\.[\w-]+$/);
    const [header, key, iv, ciphertext, tag] = compact.split('.') as [string, string, string, string, string];
    const flipped = `${ciphertext.slice(0, 10)}${ciphertext[10] === 'A' ? 'B' : 'A'}${ciphertext.slice(11)}`;
    const refusals = (await Promise.all([
      expectSame((cpu) => cpu.openSealed(compact, 'another-kid')),
      expectSame((cpu) => cpu.openSealed([header, key, iv, flipped, tag].join('.'), kid)),
      expectSame((cpu) => cpu.openSealed('a.b.c', kid)),
    ])) as { error?: { class: string; code: string } }[];
    expect(refusals.map((r) => [r.error?.class, r.error?.code])).toEqual([
      ['EnvelopeError', 'ENVELOPE_KEY_UNKNOWN'],
      ['DecryptionError', 'DECRYPT_FAILED'],
      ['EnvelopeError', 'ENVELOPE_MALFORMED'],
    ]);
  });

  it('signed content: the same verified facts, the same refusal (and response hints) for every failing check', async () => {
    const msg = buildMessage('GP0001');
    const jws = await signAs(world, 'GP0001', msg);
    const input = { compact: jws, organisation: 'GP0001', routing: msg.routing, ruleId: await ruleFor(msg) };
    const verified = (await expectSame((cpu) => cpu.verifySignedContent(input))) as {
      value?: { messageId: string; bundleText: string; sha256: string };
    };
    expect(verified.value?.messageId).toBe(msg.messageId);
    expect(verified.value?.bundleText).toBe(Buffer.from(msg.bytes).toString('utf8'));
    // A MessageHeader that contradicts the signed routing header: refused after the Bundle is read.
    const contradicted = { ...msg, routing: { ...msg.routing, id: randomUUID() } };
    const contradictedJws = await signAs(world, 'GP0001', contradicted);
    const refusals = (await Promise.all([
      expectSame((cpu) => cpu.verifySignedContent({ ...input, organisation: 'X26' })),
      expectSame((cpu) => cpu.verifySignedContent({ ...input, compact: `${jws.slice(0, -6)}AAAAAA` })),
      expectSame((cpu) => cpu.verifySignedContent({ ...input, compact: 'a.b' })),
      expectSame((cpu) =>
        cpu.verifySignedContent({ ...input, routing: { ...msg.routing, id: randomUUID() } }),
      ),
      expectSame((cpu) =>
        cpu.verifySignedContent({ ...input, compact: contradictedJws, routing: contradicted.routing }),
      ),
    ])) as { error?: { code: string; responseHints?: { originalMessageId?: string } } }[];
    expect(refusals.map((r) => r.error?.code)).toEqual([
      'SIGNATURE_KEY_NOT_SENDERS',
      'SIGNATURE_INVALID',
      'SIGNATURE_MALFORMED',
      'BINDING_MISMATCH',
      'HEADER_CONTRADICTS_ENVELOPE',
    ]);
    expect(refusals[4]?.error?.responseHints?.originalMessageId).toBe(msg.messageId);
  });

  it('response: the same ITK008M and signed header, a signature the response key verifies', async () => {
    const msg = buildMessage('GP0001');
    const spec = {
      response: {
        format: 'xml' as const,
        code: '20013',
        originalMessageId: msg.messageId,
        responderOds: world.config.doc.gatewayOds,
        recipientOds: 'GP0001',
        messageId: randomUUID(),
        bundleId: randomUUID(),
        timestamp: new Date().toISOString(),
      },
      routing: { from: world.config.doc.gatewayOds, to: 'GP0001', event: 'ITK008M', id: randomUUID() },
      trackingId: randomUUID(),
    };
    const [pooled, here] = await Promise.all([pool.cpu.signResponse(spec), inThread.signResponse(spec)]);
    const [pooledHeader, pooledPayload, pooledSignature] = pooled.split('.') as [string, string, string];
    const [hereHeader, herePayload] = here.split('.');
    // ES256 signatures are randomised: everything signed is identical, and the signature verifies.
    expect([pooledHeader, pooledPayload]).toEqual([hereHeader, herePayload]);
    const kid = world.config.doc.responseSigning.kid;
    const publicKey = createPublicKey({
      key: Buffer.from(await local.publicKeySpki(kid)),
      format: 'der',
      type: 'spki',
    });
    const signedBytes = Buffer.from(`${pooledHeader}.${pooledPayload}`, 'ascii');
    const signature = Buffer.from(pooledSignature, 'base64url');
    expect(verify('sha256', signedBytes, { key: publicKey, dsaEncoding: 'ieee-p1363' }, signature)).toBe(
      true,
    );
    expect(JSON.parse(Buffer.from(pooledHeader, 'base64url').toString('utf8'))).toMatchObject({
      alg: 'ES256',
      kid,
      itk: spec.routing,
      trackingId: spec.trackingId,
    });
  });

  it('Bundle parse: every shared ITK3 fixture reads identically (or is refused identically)', async (ctx) => {
    const dir = fixturesDir();
    if (!dir) {
      ctx.skip();
      return;
    }
    const files = readdirSync(dir).filter((f) => f.endsWith('.xml'));
    expect(files.length).toBeGreaterThanOrEqual(5);
    const outcomes = await Promise.all(
      files.map((f) =>
        expectSame((cpu) => cpu.parseBundle(new Uint8Array(readFileSync(join(dir, f))), 'xml')),
      ),
    );
    expect(outcomes.filter((o) => (o as { value?: unknown }).value !== undefined).length).toBeGreaterThan(2);
    // Built JSON and hostile shapes too: a byte-order mark, not UTF-8, not a Bundle.
    const json = buildMessage('GP0001', { format: 'json' }).bytes;
    await expectSame((cpu) => cpu.parseBundle(json, 'json'));
    await expectSame((cpu) => cpu.parseBundle(new Uint8Array([0xef, 0xbb, 0xbf, 0x3c]), 'xml'));
    await expectSame((cpu) => cpu.parseBundle(new Uint8Array([0x3c, 0xff, 0xfe]), 'xml'));
    await expectSame((cpu) =>
      cpu.parseBundle(new TextEncoder().encode('<Patient xmlns="http://hl7.org/fhir"/>'), 'xml'),
    );
  });
});

describe('worker pool: answers', () => {
  it("a batch's quick tasks come back before its slow key operations end", async () => {
    const solo = await WorkerPool.start({ size: 1, keystoreFile, config: world.config });
    try {
      const msg = buildMessage('GP0001');
      const compact = await sealAs(world, 'GP0001', msg);
      const { kid } = parseSealed(compact, world.config.doc.limits);
      // Posted in one turn to the one worker: three RSA decrypts, then a Bundle read.
      const slow = [1, 2, 3].map(() => solo.cpu.openSealed(compact, kid));
      const quick = solo.cpu.parseBundle(msg.bytes, 'xml');
      let slowDone = 0;
      for (const s of slow) void s.then(() => (slowDone += 1));
      expect((await quick).header.id).toBe(msg.messageId);
      expect(slowDone).toBe(0);
      expect(await Promise.all(slow)).toEqual([0, 0, 0].map(() => expect.stringMatching(/^eyJ/)));
      expect(slowDone).toBe(3);
    } finally {
      await solo.close();
    }
  });
});

describe('worker pool: ECDH-ES recipient keys', () => {
  it('opens a message sealed to an EC recipient key as the stage does in-thread', async () => {
    const ecWorld = await createWorld({ recipientAlg: 'ECDH-ES+A256KW' });
    const file = join(makeTempDir('itk3-pool-ec-'), 'keystore.json');
    writeKeystore(file, ecWorld.keystore);
    const ecPool = await WorkerPool.start({ size: 1, keystoreFile: file, config: ecWorld.config });
    try {
      const ecInThread = inThreadCpuWork(ecWorld.config, new SoftwareKeyService(ecWorld.keystore));
      const compact = await sealAs(ecWorld, 'GP0001', buildMessage('GP0001'));
      const sealed = parseSealed(compact, ecWorld.config.doc.limits);
      expect(sealed.epk).toBeDefined();
      const pooled = await ecPool.cpu.openSealed(compact, sealed.kid);
      expect(pooled).toMatch(/^eyJ/);
      expect(pooled).toBe(await ecInThread.openSealed(compact, sealed.kid));
    } finally {
      await ecPool.close();
    }
  });
});

describe('worker pool: a worker that dies', () => {
  it('fails the task it was running transiently, and the next task runs on a replacement', async () => {
    const solo = await WorkerPool.start({ size: 1, keystoreFile, config: world.config });
    try {
      const first = solo.workers()[0]!;
      const exited = new Promise((resolve) => first.once('exit', resolve));
      const big = buildMessage('GP0001', { targetBytes: 2_000_000 }).bytes;
      const running = solo.cpu.parseBundle(big, 'xml');
      const sealed = await sealAs(world, 'GP0001', buildMessage('GP0001'));
      const keyTask = solo.cpu.openSealed(sealed, parseSealed(sealed, world.config.doc.limits).kid);
      expect(solo.inFlight).toBe(2);
      await first.terminate();
      await exited;
      const failed = await running.catch((e: unknown) => e);
      expect(failed).toBeInstanceOf(TransientError);
      expect((failed as TransientError).code).toBe('UNEXPECTED');
      // A key task lost with its worker reads as an unavailable key service (KMS throttling alike).
      const keyFailed = await keyTask.catch((e: unknown) => e);
      expect((keyFailed as TransientError).code).toBe('KEY_SERVICE_UNAVAILABLE');
      expect(solo.workers()[0]).not.toBe(first);
      const msg = buildMessage('GP0001');
      const parsed = await solo.cpu.parseBundle(msg.bytes, 'xml');
      expect(parsed.header.id).toBe(msg.messageId);
      expect(solo.inFlight).toBe(0);
    } finally {
      await solo.close();
    }
  });

  it('a worker that keeps dying is not restarted in a loop: its tasks then fail transiently', async () => {
    const solo = await WorkerPool.start({ size: 1, keystoreFile, config: world.config });
    try {
      for (let death = 0; death < 6; death += 1) {
        const worker = solo.workers()[0]!;
        const exited = new Promise((resolve) => worker.once('exit', resolve));
        await worker.terminate();
        await exited;
      }
      const refused = await solo.cpu
        .parseBundle(buildMessage('GP0001').bytes, 'xml')
        .catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(TransientError);
      expect((refused as TransientError).message).toMatch(/keeps stopping/);
    } finally {
      await solo.close();
    }
  });

  it('in a pipeline: the record in decrypt fails transiently, is retried and delivered, audited once each', async () => {
    const solo = await WorkerPool.start({ size: 1, keystoreFile, config: world.config });
    try {
      let killed = false;
      const pipeline = embeddedPipeline(world, {
        baseDir: makeTempDir('itk3-pool-crash-'),
        pool: solo,
        ports: {
          // The worker is stopped right after the first decrypt task is posted to it.
          cpu: {
            ...solo.cpu,
            openSealed: (compact, kid) => {
              const result = solo.cpu.openSealed(compact, kid);
              if (!killed) {
                killed = true;
                void solo.workers()[0]!.terminate();
              }
              return result;
            },
          },
        },
      });
      const traces = [
        await submitMessage(pipeline, world, 'GP0001', buildMessage('GP0001')),
        await submitMessage(pipeline, world, 'X26', buildMessage('X26')),
      ];
      await pipeline.drain();
      expect(killed).toBe(true);
      for (const trace of traces) expect((await pipeline.outcome(trace)).status).toBe('delivered');
      const failures = pipeline.audit.all().filter((e) => e.event === 'transient-failure');
      expect(failures.length).toBeGreaterThanOrEqual(1);
      expect(failures.every((e) => e.stage === 'decrypt' && e.code === 'KEY_SERVICE_UNAVAILABLE')).toBe(true);
      expect(pipeline.audit.all().filter((e) => e.event === 'delivered')).toHaveLength(2);
    } finally {
      await solo.close();
    }
  });
});

describe('worker pool: shutdown', () => {
  it('close lets tasks in flight finish, then stops every worker; later tasks fail transiently', async () => {
    const closing = await WorkerPool.start({ size: 2, keystoreFile, config: world.config });
    const threads = closing.workers();
    const exits = threads.map((w) => new Promise((resolve) => w.once('exit', resolve)));
    const msg = buildMessage('GP0001');
    const inFlight = closing.cpu.parseBundle(msg.bytes, 'xml');
    const closed = closing.close();
    expect((await inFlight).header.id).toBe(msg.messageId);
    await closed;
    await Promise.all(exits);
    expect(threads.every((w) => w.threadId === -1)).toBe(true);
    const late = await closing.cpu.parseBundle(msg.bytes, 'xml').catch((e: unknown) => e);
    expect(late).toBeInstanceOf(TransientError);
    await closing.close(); // idempotent
  });

  it('a pool left open and idle does not keep its process alive', async () => {
    const script = join(import.meta.dirname, '../../support/pool-left-open.ts');
    const run = promisify(execFile);
    const t0 = Date.now();
    const { stdout } = await run(process.execPath, ['--import', 'tsx', script, keystoreFile], {
      cwd: join(import.meta.dirname, '../../..'),
      timeout: 60_000,
      env: { ...process.env, ITK3_TEST_CONFIG: JSON.stringify(world.configDoc) },
    });
    expect(stdout.trim()).toBe('parsed; pool left open');
    expect(Date.now() - t0).toBeLessThan(60_000);
  });

  it('a keystore the workers cannot read stops the start with a clear error', async () => {
    const missing = join(makeTempDir('itk3-pool-missing-'), 'keystore.json');
    // The reason itself, not only the ConfigError's "configuration is invalid (1 problem):" line.
    await expect(WorkerPool.start({ size: 2, keystoreFile: missing, config: world.config })).rejects.toThrow(
      /pool worker could not start: cannot read keystore file .*keystore\.json: ENOENT/,
    );
  });

  it('a keystore that is not JSON: the reason is given, and no byte of the file is quoted', async () => {
    const file = join(makeTempDir('itk3-pool-garbled-'), 'keystore.json');
    const d = (world.keystore.keys[0]!.privateJwk as { d: string }).d;
    writeFileSync(file, `{"keys": [{"d": "${d}"`, { mode: 0o600 });
    const error = await WorkerPool.start({ size: 1, keystoreFile: file, config: world.config }).catch(
      (e: unknown) => e as Error,
    );
    expect((error as Error).message).toMatch(
      /pool worker could not start: keystore file .* is not valid JSON/,
    );
    expect((error as Error).message).not.toContain(d.slice(0, 16));
  });
});
