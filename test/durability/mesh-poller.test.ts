/**
 * kill -9 of a real MESH poller process in its crash window: after a MESH message's enqueue was
 * committed to the state file and before MESH was told it was acknowledged. The process is held
 * exactly there by the test-only hook ITK3_TEST_MESH_HOLD_BEFORE_ACK=N (lib/cli/mesh.ts: it stops
 * before its Nth acknowledgement and says so on stderr), killed, and the same command started again
 * on the same --out: nothing is lost, nothing is delivered or answered twice, and each MESH message
 * is taken from the inbox (received) once and acknowledged. `mesh poll` runs a second time with
 * 1 MiB Bundles sent in 256 KiB chunks (half of them gzip-compressed), so the held message is a
 * claim-check blob at the kill: none is left once the re-run is done, and the file is intact.
 *
 * Runs against NHS England's MESH sandbox with NHS England's mesh-client as the GP system; skipped
 * with the reason when ITK3_MESH_SANDBOX is not set.
 */
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, expect, it } from 'vitest';
import { HOLD_BEFORE_ACK_ENV } from '../../lib/cli/mesh.js';
import { HttpMeshClient } from '../../lib/mesh/index.js';
import type { DemoWorld } from '../../lib/testkit/world.js';
import {
  describeWithMeshSandbox,
  MAILBOX_PASSWORD,
  MESH_SHARED_KEY,
  partnerReceive,
  partnerSend,
  resetMailbox,
  writeMeshWorld,
} from '../integration/support/mesh.js';
import { buildMessage, makeTempDir, removeTempDirs, testWorld, verifyResponse } from '../support/world.js';
import { type Child, readState, spawnItk3, startServe, storedLeftovers, waitFor } from './support.js';

const MESSAGES = 3;
/** Hold before the second acknowledgement: one message done, one in the window, one untouched. */
const HOLD_AT = 2;

describeWithMeshSandbox('kill -9 of a MESH poller process between enqueue and acknowledge', (url) => {
  let world: DemoWorld;
  let dir: string;

  beforeAll(async () => {
    world = await testWorld();
    dir = makeTempDir('itk3-mesh-kill-');
  });
  /** Every process a test started; whatever a failed test left running is killed after it. */
  const children: Child[] = [];
  afterEach(() => {
    for (const c of children.splice(0))
      if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL');
  });
  afterAll(removeTempDirs);
  beforeEach(async () => {
    for (const m of ['X26ABC1', 'X26ABC2', 'X26ABC3']) await resetMailbox(m);
  });

  const gatewayInbox = async (gateway: string): Promise<string[]> => {
    const client = new HttpMeshClient({
      url,
      mailbox: gateway,
      password: MAILBOX_PASSWORD,
      sharedKey: MESH_SHARED_KEY,
    });
    try {
      return (await client.listInbox()).messageIds;
    } finally {
      client.close();
    }
  };

  /** The outcome status of every MESH message received so far (one audit `received` each). */
  const outcomes = async (out: string): Promise<(string | undefined)[]> => {
    const state = readState(out);
    try {
      return state.audit
        .filter((e) => e.stage === 'mesh' && e.event === 'received')
        .map((e) => state.outcome(e.traceId)?.status);
    } finally {
      state.close();
    }
  };

  /** Per received trace: `delivered`, or `untouched` when nothing but the poller wrote for it. */
  const progress = (out: string): string | undefined => {
    const state = readState(out);
    try {
      const received = state.audit.filter((e) => e.stage === 'mesh' && e.event === 'received');
      const each = received.map((r) => {
        if (state.outcome(r.traceId)?.status === 'delivered') return 'delivered';
        return state.audit.some((e) => e.traceId === r.traceId && e.stage !== 'mesh')
          ? undefined
          : 'untouched';
      });
      return each.every(Boolean) ? each.join(',') : undefined;
    } finally {
      state.close();
    }
  };
  let lastProgress: { value: string; since: number } | undefined;
  const settledFor = async (out: string, ms: number): Promise<boolean> => {
    const value = progress(out);
    if (value === undefined) {
      lastProgress = undefined;
      return false;
    }
    if (lastProgress?.value !== value) lastProgress = { value, since: Date.now() };
    return Date.now() - lastProgress.since >= ms;
  };

  const waitUntil = async (check: () => Promise<boolean>, what: string): Promise<void> => {
    const deadline = Date.now() + 30_000;
    while (!(await check())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };

  /** Wait for the hook's line; the MESH message id it holds. */
  const heldAt = async (child: Child): Promise<string> => {
    let held: string | undefined;
    await waitFor(
      () => {
        held = /holding before acknowledging MESH message (\S+)/.exec(child.stderr.join(''))?.[1];
        return held !== undefined || child.proc.exitCode !== null;
      },
      60_000,
      'the poller to reach the acknowledgement',
    );
    if (!held) throw new Error(`the poller exited before the hook: ${child.stderr.join('')}`);
    return held;
  };

  const runs = [
    { command: 'mesh poll', large: false },
    { command: 'serve --mesh', large: false },
    { command: 'mesh poll', large: true },
  ] as const;
  for (const { command, large } of runs) {
    const sizes = large ? ' with 1 MiB messages sent in 256 KiB chunks (claim check)' : '';
    it(`${command}${sizes}: killed in the window and restarted — nothing lost, nothing twice, acknowledged once`, async () => {
      const name = `${command}${large ? '-large' : ''}`.replace(/\W+/g, '-');
      const files = writeMeshWorld(world, join(dir, name), url);
      const { gp, gateway, recipient } = files.mailboxes;
      const out = join(dir, `run-${name}`);
      // Large: over claimCheckBytes, so each is stored as a claim-check blob before its enqueue;
      // chunked by NHS England's mesh-client, every other one gzip-compressed too.
      const sent = Array.from({ length: MESSAGES }, () =>
        buildMessage('GP0001', { meshMailbox: gp, ...(large ? { targetBytes: 1024 * 1024 } : {}) }),
      );
      const meshIds = sent.map((m, i) =>
        partnerSend({
          mailbox: gp,
          to: gateway,
          body: m.bytes,
          workflowId: 'GPFED_CONSULT_REPORT',
          ...(large ? { maxChunkSize: 256 * 1024, compress: i % 2 === 0 } : {}),
        }),
      );

      const hold = { [HOLD_BEFORE_ACK_ENV]: String(HOLD_AT) };
      const start = (env: Record<string, string> = {}) =>
        command === 'mesh poll'
          ? Promise.resolve(
              spawnItk3(
                ['mesh', 'poll', '--config', files.config, '--keystore', files.keystore, '--out', out],
                undefined,
                env,
              ),
            )
          : startServe(files, out, ['--mesh'], env);

      // 1. The first process enqueues message 1 and acknowledges it, enqueues message 2 and is
      //    killed before acknowledging it.
      const first = await start(hold);
      children.push(first);
      const held = await heldAt(first);
      if (command === 'serve --mesh') {
        // serve may drain beside the held poller (its start-up drain can still be running when the
        // first messages arrive): wait until that work is settled — every received message either
        // delivered or untouched, unchanged for a second — so the kill lands in the poller's window
        // and not inside a MESH send (that outbound window is docs/MESH.md's "What remains").
        await waitUntil(async () => settledFor(out, 1_000), 'the enqueued messages to settle');
      }
      first.proc.kill('SIGKILL');
      expect(await first.exited).toEqual({ code: null, signal: 'SIGKILL' });
      expect(meshIds).toContain(held);
      const killed = readState(out);
      const receivedAtKill = killed.audit.filter((e) => e.stage === 'mesh' && e.event === 'received');
      killed.close();
      expect(receivedAtKill).toHaveLength(HOLD_AT);
      // Large: the held message's body is in the file as its claim-check blob.
      if (large) expect(storedLeftovers(out).blobs).toBeGreaterThan(0);
      // The held message is committed to the queue and still in MESH, unacknowledged.
      expect(receivedAtKill.some((e) => e.detail?.includes(held))).toBe(true);
      const waiting = await gatewayInbox(gateway);
      expect(waiting).toContain(held);
      expect(waiting).toHaveLength(MESSAGES - HOLD_AT + 1);

      // 2. The same command again, without the hook.
      const second = await start();
      children.push(second);
      if (command === 'mesh poll') {
        const exit = await second.exited;
        expect(exit, second.stderr.join('')).toEqual({ code: 0, signal: null });
        const lines = second.stdout.map((l) => JSON.parse(l) as Record<string, unknown>);
        // This pass re-acknowledged the held message (no second enqueue) and took the untouched one.
        const untouched = meshIds.filter((id) => !receivedAtKill.some((e) => e.detail?.includes(id)));
        expect(lines.map((l) => l.meshMessageId).sort()).toEqual([held, ...untouched].sort());
        expect(lines.every((l) => l.status === 'delivered')).toBe(true);
      } else {
        // serve resumes the queued work and polls every second: wait until all is delivered.
        await waitUntil(
          async () =>
            (await outcomes(out)).filter((s) => s === 'delivered').length === MESSAGES &&
            (await gatewayInbox(gateway)).length === 0,
          `serve to finish: ${second.stderr.join('')}`,
        );
        second.proc.kill('SIGTERM');
        expect(await second.exited).toEqual({ code: 0, signal: null });
      }

      // 3. Every message delivered once, answered once, received from MESH once, and MESH is empty.
      expect(await gatewayInbox(gateway)).toEqual([]);
      const state = readState(out);
      try {
        const received = state.audit.filter((e) => e.stage === 'mesh' && e.event === 'received');
        expect(received).toHaveLength(MESSAGES);
        for (const id of meshIds) expect(received.filter((e) => e.detail?.includes(id))).toHaveLength(1);
        for (const e of received) {
          expect(state.outcome(e.traceId)).toMatchObject({ status: 'delivered', itk3Code: '20013' });
        }
        expect([...state.deliveredPerMessage.values()]).toEqual(Array(MESSAGES).fill(1));
        expect(state.queued).toBe(0);
      } finally {
        state.close();
      }
      // Nothing left of the claim checks and bodies, and the file intact.
      expect(storedLeftovers(out)).toEqual({ integrity: 'ok', blobs: 0, bodyParts: 0 });
      const delivered = partnerReceive(recipient);
      expect(delivered).toHaveLength(MESSAGES);
      for (const m of sent)
        expect(delivered.filter((d) => d.body.equals(Buffer.from(m.bytes)))).toHaveLength(1);
      const answers = partnerReceive(gp);
      expect(answers).toHaveLength(MESSAGES);
      const answered = await Promise.all(
        answers.map(
          async (a) => (await verifyResponse(world, a.body.toString('utf8'))).message.header.response,
        ),
      );
      expect(answered.map((r) => r?.identifier).sort()).toEqual(sent.map((m) => m.messageId).sort());
      expect(answered.every((r) => r?.itkCode === '20013')).toBe(true);
    });
  }
});
