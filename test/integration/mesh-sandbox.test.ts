/**
 * The project's MESH client and poller against NHS England's MESH sandbox (AUTH_MODE=full: the real
 * NHSMESH HMAC check), with NHS England's Python mesh-client as the GP system at the other end.
 *
 * The poller writes into the embedded pipeline's real inbound queue (its `ports.queues`) and stores;
 * the pipeline is not drained here: which ITK3 checks apply to MESH messages is a later change
 * (issue 12, item 3). One suite, run in order: the tests share the sandbox's mailboxes.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, expect, it } from 'vitest';
import { loadSamples } from '../../lib/itk3/samples.js';
import { HttpMeshClient, MeshAuthError, type MeshPollerPorts, pollMailbox } from '../../lib/mesh/index.js';
import type { EmbeddedPipeline } from '../../lib/runtime/embedded.js';
import { embeddedPipeline, makeTempDir, removeTempDirs, testWorld } from '../support/world.js';
import {
  describeWithMeshSandbox,
  injectReport,
  MAILBOX,
  MAILBOX_PASSWORD,
  MESH_SHARED_KEY,
  partnerReceive,
  partnerSend,
  resetMailbox,
  sandboxScript,
} from './support/mesh.js';

/** MESH workflow per ITK3 event (ITK3.md §3). */
const WORKFLOW: Record<string, string> = {
  ITK007C: 'GPFED_CONSULT_REPORT',
  ITK009D: 'DIGMED_FLU_VAC',
  ITK013D: 'DIGMED_MINOR_ILLNESS_PEM',
};

const samples = loadSamples().filter((s) => s.kind === 'itk3');

describeWithMeshSandbox(
  'MESH: the project client and poller against the MESH sandbox and mesh-client',
  (url) => {
    let pipeline: EmbeddedPipeline;
    let gateway: HttpMeshClient;
    let ports: MeshPollerPorts;
    let claimCheckBytes: number;

    const connect = (mailbox: string, sharedKey = MESH_SHARED_KEY) =>
      new HttpMeshClient({ url, mailbox, password: MAILBOX_PASSWORD, sharedKey });

    /** The inbound queue's messages that came from MESH, by MESH message id. */
    const enqueuedFromMesh = () =>
      pipeline.queues.authenticate
        .peekAll()
        .filter((m) => m.attributes.Transport === 'mesh')
        .map((m) => ({ meshId: m.attributes['Mex-MessageID']!, body: m.body, attributes: m.attributes }));

    beforeAll(async () => {
      const world = await testWorld();
      pipeline = embeddedPipeline(world, { baseDir: makeTempDir('itk3-mesh-') });
      ports = pipeline.ports;
      claimCheckBytes = pipeline.config.doc.limits.claimCheckBytes;
      gateway = connect(MAILBOX.gateway);
    });
    afterAll(() => {
      gateway.close();
      removeTempDirs();
    });
    // Acknowledge whatever earlier runs left (the file store keeps messages across sandbox restarts,
    // and an admin reset clears only its memory), then reset.
    beforeEach(async () => {
      for (const mailbox of [MAILBOX.gateway, MAILBOX.gp]) {
        const client = connect(mailbox);
        for (const id of (await client.listInbox()).messageIds) await client.acknowledge(id);
        client.close();
        await resetMailbox(mailbox);
      }
    });

    it('handshakes with the real HMAC check, and a wrong shared secret gets the clear credentials error', async () => {
      await gateway.handshake();
      const wrong = connect(MAILBOX.gateway, 'not-the-shared-key');
      const error = await wrong.handshake().catch((e) => e);
      wrong.close();
      expect(error).toBeInstanceOf(MeshAuthError);
      expect((error as Error).message).toBe(
        `MESH rejected the mailbox credentials for ${MAILBOX.gateway} (HTTP 403): check mailbox id, password and shared key`,
      );
      expect(`${(error as Error).message}${(error as Error).stack}`).not.toMatch(
        /not-the-shared-key|NHSMESH/,
      );
    });

    it('the GP sends every ITK3 sample with mesh-client; the poller enqueues each byte-identical, then acknowledges', async () => {
      const sent = new Map<string, Uint8Array>();
      for (const sample of samples) {
        const meshId = partnerSend({
          mailbox: MAILBOX.gp,
          to: MAILBOX.gateway,
          body: sample.bytes,
          workflowId: WORKFLOW[sampleEvent(sample.bytes)] ?? 'GPFED_CONSULT_REPORT',
          localId: `gp-${sample.name}`,
          filename: sample.name,
          contentType: sample.format === 'xml' ? 'application/fhir+xml' : 'application/fhir+json',
        });
        sent.set(meshId, sample.bytes);
      }
      const before = enqueuedFromMesh().length;
      await gateway.handshake();
      const listed = await gateway.listInbox();
      expect(new Set(listed.messageIds)).toEqual(new Set(sent.keys()));
      const rich = await gateway.listInboxRich();
      expect(new Set(rich.messages.map((m) => m.messageId))).toEqual(new Set(sent.keys()));
      for (const m of rich.messages) {
        expect(m).toMatchObject({
          messageType: 'DATA',
          from: MAILBOX.gp,
          to: MAILBOX.gateway,
          status: 'accepted',
        });
        expect(m.localId).toMatch(/^gp-/);
      }

      const summary = await pollMailbox(gateway, ports, { claimCheckBytes });
      expect(summary.stopped).toBeUndefined();
      expect(new Set(summary.enqueued.map((e) => e.meshMessageId))).toEqual(new Set(sent.keys()));
      const enqueued = enqueuedFromMesh().slice(before);
      expect(enqueued).toHaveLength(sent.size);
      for (const m of enqueued) {
        expect(Buffer.from(m.body, 'utf8').equals(Buffer.from(sent.get(m.meshId)!))).toBe(true);
        expect(m.attributes).toMatchObject({
          'Mex-From': MAILBOX.gp,
          'Mex-To': MAILBOX.gateway,
          Transport: 'mesh',
        });
        expect(m.attributes['Mex-LocalID']).toMatch(/^gp-/);
        expect(m.attributes['Mex-WorkflowID']).toMatch(/^(GPFED|DIGMED)_/);
      }
      expect((await gateway.listInbox()).messageIds).toEqual([]);
      expect((await gateway.listInboxRich()).messages).toEqual([]);
      const history = await gateway.listInboxRich({ includeAcknowledged: true });
      expect(history.messages.filter((m) => sent.has(m.messageId)).map((m) => m.status)).toEqual(
        [...sent.keys()].map(() => 'acknowledged'),
      );
    });

    it('a chunked message and a compressed one (mesh-client chunk size and compress options) arrive byte-identical', async () => {
      const report = samples.find((s) => s.name === 'consultation_report.xml') ?? samples[0]!;
      const chunked = partnerSend({
        mailbox: MAILBOX.gp,
        to: MAILBOX.gateway,
        body: report.bytes,
        workflowId: 'GPFED_CONSULT_REPORT',
        maxChunkSize: 16 * 1024,
      });
      const compressed = partnerSend({
        mailbox: MAILBOX.gp,
        to: MAILBOX.gateway,
        body: report.bytes,
        workflowId: 'GPFED_CONSULT_REPORT',
        compress: true,
      });
      const both = partnerSend({
        mailbox: MAILBOX.gp,
        to: MAILBOX.gateway,
        body: report.bytes,
        workflowId: 'GPFED_CONSULT_REPORT',
        maxChunkSize: 16 * 1024,
        compress: true,
      });
      const c = await gateway.download(chunked);
      expect(c.totalChunks).toBe(Math.ceil(report.bytes.byteLength / (16 * 1024)));
      expect(Buffer.from(c.body).equals(Buffer.from(report.bytes))).toBe(true);
      const z = await gateway.download(compressed);
      expect(z.wasCompressed).toBe(true);
      expect(Buffer.from(z.body).equals(Buffer.from(report.bytes))).toBe(true);
      const cz = await gateway.download(both);
      expect([cz.totalChunks > 1, cz.wasCompressed]).toEqual([true, true]);
      expect(Buffer.from(cz.body).equals(Buffer.from(report.bytes))).toBe(true);

      const summary = await pollMailbox(gateway, ports, { claimCheckBytes });
      expect(summary.enqueued).toHaveLength(3);
      const bodies = enqueuedFromMesh().filter((m) => [chunked, compressed, both].includes(m.meshId));
      expect(bodies).toHaveLength(3);
      for (const m of bodies)
        expect(Buffer.from(m.body, 'utf8').equals(Buffer.from(report.bytes))).toBe(true);
    });

    it('a download over the size cap is refused while decompressing, and the message stays in MESH', async () => {
      const big = Buffer.from(`<Bundle>${' '.repeat(2_000_000)}</Bundle>`);
      const meshId = partnerSend({
        mailbox: MAILBOX.gp,
        to: MAILBOX.gateway,
        body: big,
        workflowId: 'GPFED_CONSULT_REPORT',
        compress: true,
      });
      const summary = await pollMailbox(gateway, ports, { maxMessageBytes: 1_000_000, claimCheckBytes });
      expect(summary.refused).toEqual([
        { meshMessageId: meshId, reason: expect.stringMatching(/1000000-byte limit/) },
      ]);
      expect((await gateway.listInbox()).messageIds).toEqual([meshId]);
    });

    it('sends with the project client (chunked, compressed); mesh-client receives it byte-identical; tracking sees it', async () => {
      const body = samples[0]!.bytes;
      const localId = randomUUID();
      const { messageId } = await gateway.send(MAILBOX.gp, body, {
        workflowId: 'GPFED_CONSULT_REPORT_ACK',
        localId,
        fileName: 'response.xml',
        contentType: 'application/fhir+xml',
        chunkSizeBytes: 8 * 1024,
        compress: true,
      });
      const tracking = await gateway.track(messageId);
      expect(tracking).toMatchObject({
        messageId,
        recipient: MAILBOX.gp,
        workflowId: 'GPFED_CONSULT_REPORT_ACK',
      });
      const received = partnerReceive(MAILBOX.gp);
      expect(received).toHaveLength(1);
      expect(received[0]).toMatchObject({
        message_id: messageId,
        sender: MAILBOX.gateway,
        workflow_id: 'GPFED_CONSULT_REPORT_ACK',
        local_id: localId,
      });
      expect(received[0]!.body.equals(Buffer.from(body))).toBe(true);
    });

    it('records a MESH REPORT in the audit trail and acknowledges it, never enqueueing it', async () => {
      const trace = randomUUID();
      const reportId = await injectReport({
        mailbox: MAILBOX.gateway,
        code: '14',
        description: 'Message not collected by recipient after 5 days',
        workflowId: 'GPFED_CONSULT_REPORT_ACK',
        localId: trace,
        linkedMessageId: '20261201000000000000_ABCDEF',
      });
      const before = enqueuedFromMesh().length;
      const summary = await pollMailbox(gateway, ports, { claimCheckBytes });
      expect(summary.reports).toEqual([{ meshMessageId: reportId, traceId: trace, statusCode: '14' }]);
      expect(enqueuedFromMesh().length).toBe(before);
      const [entry] = await ports.audit.byTrace(trace);
      expect(entry).toMatchObject({ stage: 'mesh', event: 'mesh-report', code: 'MESH_14' });
      expect(entry!.detail).toContain('20261201000000000000_ABCDEF');
      expect((await gateway.listInbox()).messageIds).toEqual([]);
    });

    it('the sandbox stopped mid-poll and restarted: nothing lost, nothing enqueued twice', async () => {
      const ids = samples.slice(0, 3).map((s, i) =>
        partnerSend({
          mailbox: MAILBOX.gp,
          to: MAILBOX.gateway,
          body: s.bytes,
          workflowId: 'GPFED_CONSULT_REPORT',
          localId: `restart-${i}`,
        }),
      );
      let enqueues = 0;
      const stopping: MeshPollerPorts = {
        ...ports,
        queues: {
          sendInbound: async (body, attributes) => {
            const traceId = await ports.queues.sendInbound(body, attributes);
            enqueues += 1;
            // MESH goes away after the second message reached the queue, before its acknowledgement.
            if (enqueues === 2) sandboxScript('stop');
            return traceId;
          },
        },
      };
      let first: Awaited<ReturnType<typeof pollMailbox>>;
      try {
        first = await pollMailbox(gateway, stopping, { claimCheckBytes });
      } finally {
        sandboxScript('start');
      }
      expect(first.stopped?.reason).toBe('transient-failure');
      // The first was enqueued and acknowledged; the second enqueued, not acknowledged; the third untouched.
      expect(first.enqueued.map((e) => e.meshMessageId)).toEqual([ids[0]]);
      const afterRestart = (await gateway.listInbox()).messageIds;
      expect(afterRestart).toEqual(expect.arrayContaining([ids[1], ids[2]])); // kept on disk
      expect(afterRestart).not.toContain(ids[0]);

      const second = await pollMailbox(gateway, ports, { claimCheckBytes });
      expect(second.stopped).toBeUndefined();
      expect(second.reacknowledged.map((e) => e.meshMessageId)).toEqual([ids[1]]);
      expect(second.enqueued.map((e) => e.meshMessageId)).toContain(ids[2]);
      expect((await gateway.listInbox()).messageIds).toEqual([]);
      const counts = new Map<string, number>();
      for (const m of enqueuedFromMesh()) counts.set(m.meshId, (counts.get(m.meshId) ?? 0) + 1);
      for (const id of ids) expect([id, counts.get(id)]).toEqual([id, 1]);
    }, 120_000);
  },
);

/** The event code in a sample's MessageHeader (its first `ITK0..` code). */
function sampleEvent(bytes: Uint8Array): string {
  return /ITK0\d\d[A-Z]/.exec(Buffer.from(bytes).toString('utf8'))?.[0] ?? 'ITK007C';
}
