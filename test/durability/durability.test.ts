/**
 * Durability of the embedded runtime, tried as an operator would, with real processes:
 *
 * - `kill -9` of `itk3 serve` at random points (several seeds), restart on the same `--out`, the
 *   sender resending what it never saw a 202 for: every 202 ends delivered, or rejected as a
 *   duplicate of a message that was delivered; none lost, none delivered twice.
 * - the same for `itk3 process`: the re-run finishes what the killed run left, answers nothing
 *   twice, and prints one line per file; and with files over 8 KiB, killed once forwarded records
 *   refer to their trace's stored JWE (a body part): each file delivered once, no part left over;
 *   and with files over claimCheckBytes (claim-check blobs): no blob left over.
 * - SIGTERM while deliveries wait for a retry: the server exits within its stop bound and the next
 *   start finishes the parked work.
 * - backpressure: over `--max-backlog-messages` a submission gets 503, and is accepted again later.
 * - a full disk (a small tmpfs as `--out`): a clear error or dead letters with their reason, never a
 *   lost 202, and the server starts again on what was left; the same file system read-only: a clear
 *   error at start.
 * The kill -9 and SIGTERM cases run with the CPU worker pool on (`--workers 2`, issue 14).
 */
import '../support/env.js';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SqliteState } from '../../lib/adapters/local/sqlite-state.js';
import { systemClock } from '../../lib/ports/index.js';
import { type DemoWorld, worldPaths } from '../../lib/testkit/world.js';
import { deliveredFile, makeTempDir, removeTempDirs, testWorld } from '../support/world.js';
import {
  freshCredential,
  post,
  prng,
  readState,
  reportOnSignalEnv,
  type Sealed,
  sealMany,
  sleep,
  spawnItk3,
  startServe,
  storedLeftovers,
  type WorldFiles,
  waitFor,
  workerThreadsOf,
  writeWorld,
} from './support.js';

let world: DemoWorld;
let files: WorldFiles;

beforeAll(async () => {
  world = await testWorld();
  files = writeWorld(world, makeTempDir('itk3-durable-world-'));
});
afterAll(removeTempDirs);

/** Every accepted trace is terminal, nothing is queued, and every message was delivered exactly once. */
function accountFor(out: string, accepted: Map<string, Sealed>, messages: readonly Sealed[]): void {
  const state = readState(out);
  try {
    expect(state.queued, 'messages still queued').toBe(0);
    for (const [traceId, m] of accepted) {
      const outcome = state.outcome(traceId);
      expect(outcome, `202 ${traceId} has no outcome`).toBeDefined();
      if (outcome!.status === 'rejected') {
        // Only a resend of a message whose first submission was stored (and so delivered) may be
        // refused, and only as a duplicate.
        expect(outcome).toMatchObject({ itk3Code: '20007', code: 'DUPLICATE_MESSAGE' });
      } else {
        expect(outcome!.status).toBe('delivered');
      }
      expect(state.deliveredPerMessage.get(m.msg.messageId)).toBe(1);
    }
    for (const m of messages) {
      expect(state.deliveredPerMessage.get(m.msg.messageId), `${m.msg.messageId} delivered`).toBe(1);
      const file = deliveredFile(worldPaths(out).delivered('A83627'), m.msg.messageId);
      expect(Buffer.compare(readFileSync(file), Buffer.from(m.msg.bytes))).toBe(0);
    }
  } finally {
    state.close();
  }
}

async function waitUntilFinished(out: string, traces: Iterable<string>, ms = 40_000): Promise<void> {
  const wanted = [...traces];
  await waitFor(
    () => {
      if (!existsSync(join(out, 'state.db'))) return false;
      const state = readState(out);
      try {
        return state.queued === 0 && wanted.every((t) => state.outcome(t) !== undefined);
      } finally {
        state.close();
      }
    },
    ms,
    'every accepted message to finish',
  );
}

describe('the worker pool the kill -9 and SIGTERM runs start', () => {
  it('serve --workers 2 runs two worker threads more than serve --workers 0', async () => {
    const workerThreads = async (workers: string): Promise<number> => {
      const reports = makeTempDir('itk3-report-');
      const server = await startServe(
        files,
        makeTempDir('itk3-workers-'),
        ['--workers', workers],
        reportOnSignalEnv(reports),
      );
      try {
        return await workerThreadsOf(server, reports);
      } finally {
        server.proc.kill('SIGKILL');
        await server.exited;
      }
    };
    // Relative to --workers 0: the runtime may run threads of its own (a log transport).
    expect((await workerThreads('2')) - (await workerThreads('0'))).toBe(2);
  });
});

describe('kill -9 of itk3 serve, restart on the same --out', () => {
  const resumedAtRestart: number[] = [];
  for (const seed of [7, 19, 42]) {
    it(`seed ${seed}: every 202 is accounted for, none lost, none delivered twice`, async () => {
      const random = prng(seed);
      const out = makeTempDir('itk3-serve-crash-');
      const messages = await sealMany(world, 32);
      const accepted = new Map<string, Sealed>();
      const answered = new Set<number>();
      const killAfter = 1 + Math.floor(random() * 14);
      const killDelayMs = Math.floor(random() * 25);

      // With the worker pool on whatever the machine (issue 14): kill -9 takes its threads too.
      let server = await startServe(files, out, ['--workers', '2']);
      let killed = false;
      let next = 0;
      const sender = async () => {
        while (next < messages.length && !killed) {
          const i = next;
          next += 1;
          try {
            const r = await post(server.port, await freshCredential(world), messages[i]!.sealed);
            if (r.status !== 202) continue;
            accepted.set(r.trackingId!, messages[i]!);
            answered.add(i);
            if (answered.size === killAfter) {
              setTimeout(() => {
                killed = true;
                server.proc.kill('SIGKILL');
              }, killDelayMs);
            }
          } catch {
            // The connection died with the server: as far as the sender knows, not accepted.
          }
        }
      };
      await Promise.all([sender(), sender(), sender(), sender()]);
      if (!killed) {
        killed = true;
        server.proc.kill('SIGKILL');
      }
      expect((await server.exited).signal).toBe('SIGKILL');

      // Restart; the sender resends (with a new credential) everything it never saw a 202 for.
      server = await startServe(files, out);
      for (const [i, m] of messages.entries()) {
        if (answered.has(i)) continue;
        const r = await post(server.port, await freshCredential(world), m.sealed);
        expect(r.status).toBe(202);
        accepted.set(r.trackingId!, m);
      }
      await waitUntilFinished(out, accepted.keys());
      server.proc.kill('SIGTERM');
      expect((await server.exited).code).toBe(0);
      accountFor(out, accepted, messages);
      const resumed = /resumed (\d+)/.exec(server.stdout.join('\n'))?.[1];
      resumedAtRestart.push(Number(resumed ?? 0));
      process.stdout.write(
        `seed ${seed}: killed ${killDelayMs} ms after ${killAfter} answers; ${accepted.size} accepted in all; ${resumed ?? 0} queued at restart\n`,
      );
    });
  }
  it('the kills above caught work in flight (the restarts had something to resume)', () => {
    expect(resumedAtRestart.reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
  });
});

/**
 * Rows of the state file's body tables (while a process runs or after it died: WAL readers are
 * fine); none if the process died before it created them.
 */
function bodyRows(out: string): { parts: number; splices: number; referring: number } {
  const state = new SqliteState(join(out, 'state.db'), { clock: systemClock, readonly: true });
  try {
    const count = (table: string) =>
      state.db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(table)
        ? (state.db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n
        : 0;
    const splices = count('message_splices');
    // Splices of a forwarded record around its trace's part (the inbound message's own is bare).
    const referring = splices
      ? (
          state.db.prepare("SELECT count(*) AS n FROM message_splices WHERE template <> ''").get() as {
            n: number;
          }
        ).n
      : 0;
    return { parts: count('body_parts'), splices, referring };
  } finally {
    state.close();
  }
}

/**
 * Kill -9 `itk3 process` over 16 files at a seeded point, run the same command again, and check
 * each file is answered once and delivered once. Returns the body rows the killed run left behind.
 * `onceBodyPartReferred`: kill 0–30 ms after the state file first holds a forwarded record that
 * refers to its trace's body part (a JWE over 8 KiB, stored once), not after some answers.
 */
async function killAndRerunProcess(
  seed: number,
  { attachmentBytes = 0, onceBodyPartReferred = false } = {},
): Promise<{ leftByKill: ReturnType<typeof bodyRows> | undefined; out: string }> {
  const random = prng(seed);
  const dir = makeTempDir('itk3-process-crash-');
  const inbox = join(dir, 'inbox');
  const out = join(dir, 'run');
  mkdirSync(inbox);
  const messages = await sealMany(world, 16, attachmentBytes);
  for (const [i, m] of messages.entries()) {
    const name = `m${String(i).padStart(2, '0')}`;
    writeFileSync(join(inbox, `${name}.jwe`), m.sealed);
    writeFileSync(join(inbox, `${name}.jwt`), await freshCredential(world));
  }
  const args = [
    'process',
    inbox,
    '--config',
    files.config,
    '--keystore',
    files.keystore,
    '--out',
    out,
    '--workers',
    '2',
  ];

  const seededLines = Math.floor(random() * 10);
  const killAfterLines = onceBodyPartReferred ? -1 : seededLines;
  const killDelayMs = Math.floor(random() * (onceBodyPartReferred ? 30 : 50));
  let first!: ReturnType<typeof spawnItk3>;
  const killAt = () => setTimeout(() => first.proc.kill('SIGKILL'), killDelayMs);
  first = spawnItk3(args, () => {
    if (first.stdout.length === killAfterLines) killAt();
  });
  if (onceBodyPartReferred) {
    let exited = false;
    void first.exited.then(() => {
      exited = true;
    });
    const partReferred = () => {
      try {
        return existsSync(join(out, 'state.db')) && bodyRows(out).referring > 0;
      } catch {
        return false; // The file is being created.
      }
    };
    while (!exited && !partReferred()) await sleep(5);
    killAt();
  } else if (killAfterLines === 0) {
    // Kill while the first batch is being processed: once the state file exists.
    await waitFor(() => existsSync(join(out, 'state.db')), 20_000, 'the state file');
    killAt();
  }
  const firstExit = await first.exited;
  const leftByKill =
    firstExit.signal === 'SIGKILL' && existsSync(join(out, 'state.db')) ? bodyRows(out) : undefined;
  const firstLines = first.stdout.map((l) => JSON.parse(l) as { file: string; trackingId: string });

  const second = spawnItk3(args);
  const secondExit = await second.exited;
  expect(secondExit.code, second.stderr.join('')).toBe(0);
  const secondLines = second.stdout.map(
    (l) => JSON.parse(l) as { file: string; trackingId: string; status: string },
  );
  // One line per file, every one delivered.
  expect(secondLines.map((l) => l.file).sort()).toEqual(
    messages.map((_, i) => `m${String(i).padStart(2, '0')}.jwe`),
  );
  expect(secondLines.every((l) => l.status === 'delivered')).toBe(true);
  // What the killed run had reported is reported again with the same trace: not answered anew.
  for (const l of firstLines) {
    expect(secondLines.find((x) => x.file === l.file)?.trackingId).toBe(l.trackingId);
  }
  const state = readState(out);
  try {
    expect(state.audit.filter((e) => e.event === 'rejected')).toEqual([]);
    for (const m of messages) expect(state.deliveredPerMessage.get(m.msg.messageId)).toBe(1);
  } finally {
    state.close();
  }
  if (firstExit.signal !== 'SIGKILL') expect(firstExit.code).toBe(0);
  return { leftByKill, out };
}

describe('kill -9 of itk3 process, then the same command again', () => {
  for (const seed of [3, 29]) {
    it(`seed ${seed}: the re-run finishes the rest, answers nothing twice and prints each file once`, async () => {
      await killAndRerunProcess(seed);
    });
  }
});

describe('kill -9 of itk3 process with spliced bodies in flight', () => {
  // Files whose JWE is over the 8 KiB body-part bound: the inbound message stores it as a body part
  // and the records of the next hops refer to it (session 19, "Bodies stored once").
  const leftByKills: ReturnType<typeof bodyRows>[] = [];
  for (const seed of [5, 11, 23, 37]) {
    it(`seed ${seed}: every file is delivered exactly once and no body part is left`, async () => {
      const { leftByKill, out } = await killAndRerunProcess(seed, {
        attachmentBytes: 12_000,
        onceBodyPartReferred: true,
      });
      if (leftByKill) leftByKills.push(leftByKill);
      process.stdout.write(`seed ${seed}: the kill left ${JSON.stringify(leftByKill ?? 'no state file')}\n`);
      expect(bodyRows(out)).toEqual({ parts: 0, splices: 0, referring: 0 });
    });
  }
  it('the kills above left spliced bodies for the re-run to read back', () => {
    expect(leftByKills.some((left) => left.parts > 0 && left.referring > 0)).toBe(true);
  });
});

describe('kill -9 of itk3 process with claim-check bodies in flight', () => {
  // Bundles with a 600 KB attachment: each sealed file (≈1.1 MB) is over claimCheckBytes, so the
  // JWE, the inner JWS and the Bundle all travel as claim-check blobs.
  it('seed 13: every file is delivered exactly once and no blob is left', async () => {
    const { leftByKill, out } = await killAndRerunProcess(13, { attachmentBytes: 600_000 });
    // The kill came while the run was under way (its state file held work), not after it ended.
    expect(leftByKill).toBeDefined();
    expect(storedLeftovers(out)).toEqual({ integrity: 'ok', blobs: 0, bodyParts: 0 });
  });
});

describe('SIGTERM while deliveries wait for a retry', () => {
  it('exits within the stop bound, and the next start delivers the parked messages', async () => {
    const out = makeTempDir('itk3-sigterm-');
    // A file where the recipient's folder should be: every delivery fails and waits 180 s to retry.
    const blocked = worldPaths(out).delivered('A83627');
    mkdirSync(join(blocked, '..'), { recursive: true });
    writeFileSync(blocked, 'not a folder');
    const messages = await sealMany(world, 3);
    let server = await startServe(files, out, ['--stop-timeout', '3', '--workers', '2']);
    const accepted = new Map<string, Sealed>();
    for (const m of messages) {
      const r = await post(server.port, await freshCredential(world), m.sealed);
      accepted.set(r.trackingId!, m);
    }
    await waitFor(
      () => {
        const state = readState(out);
        const failing = state.audit.filter((e) => e.event === 'transient-failure' && e.stage === 'deliver');
        state.close();
        return failing.length >= messages.length;
      },
      20_000,
      'the deliveries to fail once',
    );
    const stopAt = Date.now();
    server.proc.kill('SIGTERM');
    const exit = await server.exited;
    const took = Date.now() - stopAt;
    expect(exit.code).toBe(0);
    expect(took).toBeLessThan(3_000 + 2_000);

    rmSync(blocked);
    server = await startServe(files, out);
    expect(server.stdout.join('\n')).toMatch(/resumed 3 queued messages/);
    await waitUntilFinished(out, accepted.keys());
    server.proc.kill('SIGTERM');
    expect((await server.exited).code).toBe(0);
    accountFor(out, accepted, messages);
  });
});

describe('backpressure', () => {
  it('answers 503 once the backlog bound is reached, and accepts again once the work is done', async () => {
    const out = makeTempDir('itk3-backlog-');
    const blocked = worldPaths(out).delivered('A83627');
    mkdirSync(join(blocked, '..'), { recursive: true });
    writeFileSync(blocked, 'not a folder');
    const messages = await sealMany(world, 4);
    // The global bound (one sender's share of it: test/security/redteam-fairshare.test.ts).
    let server = await startServe(files, out, [
      '--max-backlog-messages',
      '2',
      '--max-backlog-share',
      '1',
      '--stop-timeout',
      '3',
    ]);
    const first = await post(server.port, await freshCredential(world), messages[0]!.sealed);
    const second = await post(server.port, await freshCredential(world), messages[1]!.sealed);
    expect([first.status, second.status]).toEqual([202, 202]);
    // Both wait at deliver for a retry: the bound is reached.
    const third = await post(server.port, await freshCredential(world), messages[2]!.sealed);
    expect(third.status).toBe(503);
    server.proc.kill('SIGTERM');
    expect((await server.exited).code).toBe(0);

    rmSync(blocked);
    server = await startServe(files, out, ['--max-backlog-messages', '2', '--max-backlog-share', '1']);
    await waitUntilFinished(out, [first.trackingId!, second.trackingId!]);
    const later = await post(server.port, await freshCredential(world), messages[2]!.sealed);
    expect(later.status).toBe(202);
    await waitUntilFinished(out, [later.trackingId!]);
    server.proc.kill('SIGTERM');
    expect((await server.exited).code).toBe(0);
    const accepted = new Map([
      [first.trackingId!, messages[0]!],
      [second.trackingId!, messages[1]!],
      [later.trackingId!, messages[2]!],
    ]);
    accountFor(out, accepted, messages.slice(0, 3));
  });
});

describe('a full disk under --out', () => {
  const mountPoint = makeTempDirIfRoot();
  let mounted = false;
  let skipReason: string | undefined;
  beforeAll(() => {
    if (!mountPoint) {
      skipReason = 'not root: cannot mount a small tmpfs';
      return;
    }
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', mountPoint], { stdio: 'pipe' });
      mounted = true;
    } catch (error) {
      skipReason = `cannot mount a small tmpfs here (${(error as Error).message.split('\n')[0]})`;
    }
    if (skipReason) process.stdout.write(`skipping the full-disk test: ${skipReason}\n`);
  });
  afterAll(() => {
    if (mounted) execFileSync('umount', ['-l', mountPoint!]);
  });

  it('ends in a clear error or dead letters with their reason, loses no 202 and starts again', async (ctx) => {
    if (!mounted) ctx.skip();
    const out = mountPoint!;
    // 150 KB attachments: a handful fills 2 MB (the state file holds the sealed copies too).
    const messages = await sealMany(world, 14, 150_000);
    let server = await startServe(files, out, ['--stop-timeout', '3']);
    const accepted = new Map<string, Sealed>();
    const refused: number[] = [];
    for (const m of messages) {
      try {
        const r = await post(server.port, await freshCredential(world), m.sealed);
        if (r.status === 202) accepted.set(r.trackingId!, m);
        else refused.push(r.status);
      } catch {
        refused.push(0); // the server stopped on the full disk
      }
    }
    // Something must have hit the full disk: refused submissions, or deliveries that failed.
    await sleep(500);
    server.proc.kill('SIGTERM');
    const exit = await server.exited;
    const stderr = server.stderr.join('');
    process.stdout.write(
      `full disk: ${accepted.size} accepted, refused ${JSON.stringify(refused)}, exit ${exit.code}; ${stderr.trim().split('\n').at(-1)}\n`,
    );
    if (exit.code !== 0) expect(stderr).toMatch(/error: .*(disk is full|SQLITE_FULL|I\/O error)/);
    expect(refused.every((s) => s === 503 || s === 0)).toBe(true);

    // Make room and start again on whatever the full disk left.
    execFileSync('mount', ['-o', 'remount,size=64m', out]);
    server = await startServe(files, out);
    await waitUntilFinished(out, accepted.keys());
    server.proc.kill('SIGTERM');
    expect((await server.exited).code).toBe(0);
    const state = readState(out);
    try {
      expect(state.queued).toBe(0);
      for (const [traceId, m] of accepted) {
        const outcome = state.outcome(traceId)!;
        if (outcome.status === 'dead-lettered') {
          // Its reason says why; an operator redrives it once there is room.
          expect(outcome.code).toBe('DELIVERY_UNAVAILABLE');
        } else {
          expect(outcome.status).toBe('delivered');
          expect(state.deliveredPerMessage.get(m.msg.messageId)).toBe(1);
        }
      }
      expect(refused.length + accepted.size).toBe(messages.length);
      expect(refused.length + [...accepted.values()].length).toBeGreaterThan(0);
    } finally {
      state.close();
    }
  });

  it('a read-only --out stops serve with a clear error, and it starts again once writable', async (ctx) => {
    if (!mounted) ctx.skip();
    const out = mountPoint!;
    // The full-disk test above left a state file here; make the file system read-only.
    execFileSync('mount', ['-o', 'remount,ro', out]);
    try {
      const refused = await startServe(files, out).then(
        (s) => {
          s.proc.kill('SIGKILL');
          return undefined;
        },
        (error: Error) => error.message,
      );
      expect(refused).toMatch(/error: .*(read-only|SQLITE_READONLY|SQLITE_CANTOPEN|EROFS)/);
    } finally {
      execFileSync('mount', ['-o', 'remount,rw', out]);
    }
    const server = await startServe(files, out);
    server.proc.kill('SIGTERM');
    const exit = await server.exited;
    expect(exit, server.stderr.join('')).toEqual({ code: 0, signal: null });
  });
});

function makeTempDirIfRoot(): string | undefined {
  if (process.getuid?.() !== 0) return undefined;
  return makeTempDir('itk3-full-disk-');
}
