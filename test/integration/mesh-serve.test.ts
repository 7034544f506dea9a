/**
 * `itk3 serve --mesh` as a real process against NHS England's MESH sandbox: NHS England's
 * mesh-client sends the consultation report from the GP's mailbox, the running server's poller
 * takes it, the recipient's mailbox gets it byte-identical and the GP the signed ITK008M 20013;
 * then SIGTERM stops the server cleanly (exit 0, within the stop bound, nothing left queued).
 */
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, expect, it } from 'vitest';
import { consultationReportFrom } from '../../lib/cli/demo-mesh.js';
import { parseBundle } from '../../lib/itk3/index.js';
import type { DemoWorld } from '../../lib/testkit/world.js';
import { readState, startServe, waitFor } from '../durability/support.js';
import { makeTempDir, removeTempDirs, testWorld, verifyResponse } from '../support/world.js';
import {
  describeWithMeshSandbox,
  partnerReceive,
  partnerSend,
  resetMailbox,
  writeMeshWorld,
} from './support/mesh.js';

describeWithMeshSandbox('itk3 serve --mesh as a process on the sandbox', (url) => {
  let world: DemoWorld;
  let dir: string;

  beforeAll(async () => {
    world = await testWorld();
    dir = makeTempDir('itk3-mesh-serve-');
  });
  afterAll(removeTempDirs);
  beforeEach(async () => {
    for (const m of ['X26ABC1', 'X26ABC2', 'X26ABC3']) await resetMailbox(m);
  });

  it('polls, delivers byte-identical, answers 20013 through MESH, and stops cleanly on SIGTERM', async () => {
    const files = writeMeshWorld(world, join(dir, 'world'), url);
    const { gp, gateway, recipient } = files.mailboxes;
    const out = join(dir, 'run');
    const server = await startServe(files, out, ['--mesh', '--stop-timeout', '5']);
    try {
      await waitFor(
        () => server.stdout.some((l) => l.includes(`polling MESH mailboxes ${gateway} every 1 s`)),
        5_000,
        'serve to say it polls MESH',
      );
      const report = consultationReportFrom(gp);
      partnerSend({ mailbox: gp, to: gateway, body: report.bytes, workflowId: 'GPFED_CONSULT_REPORT' });

      let delivered: ReturnType<typeof partnerReceive> = [];
      await waitFor(
        () => {
          delivered = [...delivered, ...partnerReceive(recipient)];
          return delivered.length > 0;
        },
        30_000,
        'the delivery in the recipient mailbox',
      );
      expect(delivered).toHaveLength(1);
      expect(delivered[0]!.body.equals(report.bytes)).toBe(true);
      expect(delivered[0]).toMatchObject({ sender: gateway, workflow_id: 'GPFED_CONSULT_REPORT' });
      const trackingId = delivered[0]!.local_id!;

      let answers: ReturnType<typeof partnerReceive> = [];
      await waitFor(
        () => {
          answers = [...answers, ...partnerReceive(gp)];
          return answers.length > 0;
        },
        30_000,
        'the ITK008M in the GP mailbox',
      );
      expect(answers).toHaveLength(1);
      expect(answers[0]).toMatchObject({ workflow_id: 'GPFED_CONSULT_REPORT_ACK', local_id: trackingId });
      const { message } = await verifyResponse(world, answers[0]!.body.toString('utf8'));
      expect(message.header.response).toMatchObject({
        identifier: parseBundle(report.bytes, 'xml').header.id,
        itkCode: '20013',
      });
    } finally {
      const stopAsked = Date.now();
      server.proc.kill('SIGTERM');
      const exit = await server.exited;
      expect(exit, server.stderr.join('')).toEqual({ code: 0, signal: null });
      expect(Date.now() - stopAsked).toBeLessThan(7_000);
    }
    const stderr = server.stderr.join('');
    expect(stderr).toContain('stopping:');
    expect(stderr).not.toMatch(/error:|mesh: (pass|poll)/);
    const state = readState(out);
    try {
      expect(state.queued).toBe(0);
      const received = state.audit.filter((e) => e.stage === 'mesh' && e.event === 'received');
      expect(received).toHaveLength(1);
      expect(state.outcome(received[0]!.traceId)).toMatchObject({ status: 'delivered', itk3Code: '20013' });
    } finally {
      state.close();
    }
  });
});
