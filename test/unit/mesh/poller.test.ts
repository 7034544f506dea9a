/**
 * The poller's guarantees on the real local stores (once-store, blob store, audit log) and the
 * embedded runtime's in-memory inbound queue, with a scripted mailbox standing in for MESH (the
 * HTTP adapter against NHS England's sandbox is test/integration/mesh-sandbox.test.ts):
 * acknowledge only after the enqueue, a crash at any point neither loses a message nor enqueues it
 * twice (the enqueue→record instant aside), REPORTs go to the audit and never to the queue, claim
 * checks above the limit, bounded passes.
 */
import { randomUUID } from 'node:crypto';
import { beforeEach, describe, expect, it } from 'vitest';
import {
  MemoryAuditLog,
  MemoryBlobStore,
  MemoryOnceStore,
} from '../../../lib/adapters/local/memory-stores.js';
import {
  type MeshClient,
  type MeshDownloadedMessage,
  MeshError,
  type MeshPollerPorts,
  MeshTooLargeError,
  pollMailbox,
} from '../../../lib/mesh/index.js';
import type { QueueSender } from '../../../lib/ports/index.js';
import { VirtualClock } from '../../../lib/runtime/embedded.js';
import { MemoryQueue } from '../../../lib/runtime/memory-queue.js';

/** A mailbox held in memory, with the faults a real one shows. */
class ScriptedMailbox implements MeshClient {
  readonly mailbox = 'X26ABC2';
  readonly inbox = new Map<string, MeshDownloadedMessage>();
  readonly acknowledged: string[] = [];
  failAcks = 0;
  downloads = 0;

  add(body: string, extra: Partial<MeshDownloadedMessage> = {}): string {
    const messageId = `2026120308${String(this.inbox.size).padStart(4, '0')}_ABCDEF`;
    this.inbox.set(messageId, {
      messageId,
      messageType: 'DATA',
      from: 'X26ABC1',
      to: this.mailbox,
      workflowId: 'GPFED_CONSULT_REPORT',
      localId: `local-${this.inbox.size}`,
      subject: undefined,
      fileName: 'report.xml',
      contentType: 'application/fhir+xml',
      totalChunks: 1,
      body: new TextEncoder().encode(body),
      wasCompressed: false,
      report: undefined,
      ...extra,
    });
    return messageId;
  }

  async handshake(): Promise<void> {}
  async listInbox(opts: { maxResults?: number; continueFrom?: string } = {}) {
    // As MESH does: the continuation names the last id returned; if it is gone, start again.
    const ids = [...this.inbox.keys()];
    const after = opts.continueFrom ? ids.indexOf(opts.continueFrom) : -1;
    const rest = ids.slice(after + 1);
    const size = opts.maxResults ?? 500;
    const page = rest.slice(0, size);
    const next = rest.length > size ? page.at(-1) : undefined;
    return { messageIds: page, next, approxInboxCount: ids.length };
  }
  async listInboxRich() {
    const messages = [...this.inbox.values()].map((m) => ({
      messageId: m.messageId,
      messageType: m.messageType,
      from: m.from,
      to: m.to,
      workflowId: m.workflowId,
      localId: m.localId,
      totalChunks: m.totalChunks,
      status: 'accepted',
      statusCode: m.report?.statusCode,
      sentDate: undefined,
    }));
    return { messages, next: undefined };
  }
  async download(messageId: string, opts: { maxBytes?: number } = {}): Promise<MeshDownloadedMessage> {
    this.downloads += 1;
    const m = this.inbox.get(messageId);
    if (!m) throw new MeshError('permanent', 'gone', { status: 410 });
    if (opts.maxBytes !== undefined && m.body.byteLength > opts.maxBytes) {
      throw new MeshTooLargeError(`MESH message ${messageId} is over the ${opts.maxBytes}-byte limit`);
    }
    return m;
  }
  async acknowledge(messageId: string): Promise<void> {
    if (this.failAcks > 0) {
      this.failAcks -= 1;
      throw new MeshError('transient', 'MESH PUT 127.0.0.1 failed: ECONNREFUSED');
    }
    this.inbox.delete(messageId);
    this.acknowledged.push(messageId);
  }
  async send(): Promise<{ messageId: string }> {
    throw new Error('not used');
  }
  async track(): Promise<never> {
    throw new Error('not used');
  }
  close(): void {}
}

let mesh: ScriptedMailbox;
let queue: MemoryQueue;
let ports: MeshPollerPorts & { once: MemoryOnceStore; audit: MemoryAuditLog; blobs: MemoryBlobStore };
let failSends: number;

beforeEach(() => {
  mesh = new ScriptedMailbox();
  const clock = new VirtualClock(Date.parse('2026-12-03T08:00:00Z'));
  queue = new MemoryQueue({ name: 'inbound', visibilityTimeoutSeconds: 30 }, clock);
  failSends = 0;
  const queues: Pick<QueueSender, 'sendInbound'> = {
    sendInbound: async (body, attributes) => {
      if (failSends > 0) {
        failSends -= 1;
        throw new Error('SQS unavailable');
      }
      return queue.send(body, { ...attributes });
    },
  };
  ports = {
    queues,
    once: new MemoryOnceStore(clock),
    blobs: new MemoryBlobStore(),
    audit: new MemoryAuditLog(),
    clock,
  };
});

describe('pollMailbox', () => {
  it('enqueues each message with its MESH attributes, then acknowledges it', async () => {
    const a = mesh.add('<Bundle xmlns="http://hl7.org/fhir"><id value="a"/></Bundle>');
    const b = mesh.add('{"resourceType":"Bundle"}', {
      contentType: 'application/fhir+json',
      subject: 'x\u0000y',
    });
    const summary = await pollMailbox(mesh, ports);
    expect(summary.enqueued.map((e) => e.meshMessageId)).toEqual([a, b]);
    expect(mesh.acknowledged).toEqual([a, b]);
    const messages = queue.peekAll();
    expect(messages.map((m) => m.body)).toEqual([
      '<Bundle xmlns="http://hl7.org/fhir"><id value="a"/></Bundle>',
      '{"resourceType":"Bundle"}',
    ]);
    expect(messages[0]!.attributes).toEqual({
      Transport: 'mesh',
      'Mex-Body-Encoding': 'utf-8',
      'Mex-From': 'X26ABC1',
      'Mex-To': 'X26ABC2',
      'Mex-WorkflowID': 'GPFED_CONSULT_REPORT',
      'Mex-MessageID': a,
      'Mex-LocalID': 'local-0',
      'Mex-FileName': 'report.xml',
      'Content-Type': 'application/fhir+xml',
    });
    expect(messages[1]!.attributes['Mex-Subject']).toBe('xy');
    // The trace links back to the MESH message.
    const trail = await ports.audit.byTrace(summary.enqueued[0]!.traceId);
    expect(trail).toMatchObject([{ stage: 'mesh', event: 'received' }]);
    expect(trail[0]!.detail).toContain(a);
  });

  it('spends nothing on a message from an unregistered mailbox: no signature, no blob, no enqueue', async () => {
    let signatures = 0;
    const guarded: MeshPollerPorts = {
      ...ports,
      attest: async () => {
        signatures += 1;
        return 'attestation';
      },
      knownSender: (from) => from === 'X26ABC1',
    };
    const stranger = mesh.add('x'.repeat(300_000), { from: 'X26ABC9' });
    const known = mesh.add('<Bundle xmlns="http://hl7.org/fhir"/>');
    const first = await pollMailbox(mesh, guarded, { claimCheckBytes: 1024 });
    expect(first.enqueued.map((e) => e.meshMessageId)).toEqual([known]);
    expect(first.refused).toEqual([{ meshMessageId: stranger, reason: 'sending mailbox is not registered' }]);
    expect(signatures).toBe(1);
    expect(queue.peekAll()).toHaveLength(1);
    expect(ports.blobs.size).toBe(0);
    // Acknowledged (MESH would otherwise redeliver it for 5 days) and audited once, without its body.
    expect(mesh.acknowledged).toContain(stranger);
    const refusal = ports.audit.all().filter((e) => e.event === 'mesh-refused');
    expect(refusal).toMatchObject([{ code: 'MESH_MAILBOX_UNKNOWN' }]);
    expect(JSON.stringify(refusal)).not.toContain('xxxx');
  });

  it('acknowledges without enqueueing again when an earlier pass died between enqueue and acknowledge', async () => {
    const a = mesh.add('<Bundle/>');
    mesh.failAcks = 1; // MESH goes away right after the enqueue
    const first = await pollMailbox(mesh, ports);
    expect(first.stopped?.reason).toBe('transient-failure');
    expect(queue.depth).toBe(1);
    expect(mesh.inbox.has(a)).toBe(true);

    const second = await pollMailbox(mesh, ports);
    expect(second.enqueued).toEqual([]);
    expect(second.reacknowledged).toEqual([
      { meshMessageId: a, traceId: first.enqueued[0]?.traceId ?? queue.peekAll()[0]!.messageId },
    ]);
    expect(queue.depth).toBe(1);
    expect(mesh.inbox.size).toBe(0);
  });

  it('loses nothing when the queue fails: no acknowledgement, and the next pass enqueues it once', async () => {
    const a = mesh.add('<Bundle/>');
    failSends = 1;
    const first = await pollMailbox(mesh, ports);
    expect(first.stopped).toMatchObject({ reason: 'transient-failure' });
    expect(first.stopped?.detail).toMatch(/queue or stores failed/);
    expect(mesh.acknowledged).toEqual([]);
    expect(queue.depth).toBe(0);

    const second = await pollMailbox(mesh, ports);
    expect(second.enqueued.map((e) => e.meshMessageId)).toEqual([a]);
    expect(queue.depth).toBe(1);
    expect(await pollMailbox(mesh, ports)).toMatchObject({ enqueued: [], reacknowledged: [] });
  });

  it('survives a crash after claiming but before enqueueing: the message is enqueued by the next pass', async () => {
    const a = mesh.add('<Bundle/>');
    // What a process that died right after its claim leaves behind.
    await ports.once.putIfAbsent(`mesh#X26ABC2#${a}#try#1`, randomUUID(), 3600);
    const summary = await pollMailbox(mesh, ports);
    expect(summary.enqueued.map((e) => e.meshMessageId)).toEqual([a]);
    expect(queue.depth).toBe(1);
  });

  it('records REPORTs in the audit trail, acknowledges them and never enqueues them', async () => {
    const traceOfOurs = randomUUID();
    const r = mesh.add('', {
      messageType: 'REPORT',
      from: undefined,
      localId: traceOfOurs,
      workflowId: 'GPFED_CONSULT_REPORT_ACK',
      report: {
        linkedMessageId: '20261201000000000000_AAAAAA',
        statusCode: '14',
        statusEvent: 'TRANSFER',
        statusDescription: 'Message not collected by recipient after 5 days',
        statusSuccess: 'ERROR',
      },
    });
    const summary = await pollMailbox(mesh, ports);
    expect(summary.reports).toEqual([{ meshMessageId: r, traceId: traceOfOurs, statusCode: '14' }]);
    expect(queue.depth).toBe(0);
    expect(mesh.acknowledged).toEqual([r]);
    const [entry] = await ports.audit.byTrace(traceOfOurs);
    expect(entry).toMatchObject({ stage: 'mesh', event: 'mesh-report', code: 'MESH_14' });
    expect(entry!.detail).toContain('on MESH message 20261201000000000000_AAAAAA');
    expect(entry!.detail).toContain('14 Message not collected by recipient after 5 days');
  });

  it('gives a REPORT about a message that is not ours its own trace', async () => {
    const r = mesh.add('', { messageType: 'REPORT', localId: 'their-local-id', report: undefined });
    const summary = await pollMailbox(mesh, ports);
    expect(summary.reports[0]!.traceId).toBe(`mesh-report-${r}`);
    expect(await ports.audit.byTrace(`mesh-report-${r}`)).toHaveLength(1);
  });

  it('puts bodies above the claim-check size in the blob store and queues a reference', async () => {
    const big = `<Bundle>${'x'.repeat(300_000)}</Bundle>`;
    mesh.add(big);
    await pollMailbox(mesh, ports, { claimCheckBytes: 196_608 });
    const [m] = queue.peekAll();
    const { claimCheck } = JSON.parse(m!.body) as {
      claimCheck: { key: string; bytes: number; sha256: string };
    };
    expect(claimCheck.key).toMatch(/^claim-check\/mesh-[0-9a-f]{32}\/mesh-body$/);
    expect(claimCheck.bytes).toBe(big.length);
    expect(Buffer.from(await ports.blobs.get(claimCheck.key)).toString()).toBe(big);
  });

  it('carries non-UTF-8 bodies as base64, byte for byte', async () => {
    const bytes = new Uint8Array([0xff, 0xfe, 0x00, 0x80]);
    mesh.add('', { body: bytes });
    await pollMailbox(mesh, ports);
    const [m] = queue.peekAll();
    expect(m!.attributes['Mex-Body-Encoding']).toBe('base64');
    expect(Buffer.from(m!.body, 'base64')).toEqual(Buffer.from(bytes));
  });

  it('leaves a message over the size cap in MESH and audits it once', async () => {
    const big = mesh.add('x'.repeat(2_000));
    const small = mesh.add('<Bundle/>');
    const opts = { maxMessageBytes: 1_000, maxBytesPerPass: 10_000 };
    const first = await pollMailbox(mesh, ports, opts);
    expect(first.refused).toEqual([
      { meshMessageId: big, reason: expect.stringMatching(/over the 1000-byte limit/) },
    ]);
    expect(first.enqueued.map((e) => e.meshMessageId)).toEqual([small]);
    await pollMailbox(mesh, ports, opts);
    expect(mesh.inbox.has(big)).toBe(true);
    const refusals = ports.audit.all().filter((e) => e.event === 'mesh-refused');
    expect(refusals).toHaveLength(1);
    expect(refusals[0]).toMatchObject({ code: 'MESH_MESSAGE_TOO_LARGE' });
  });

  it('stops a pass at the message limit and at the byte budget, and the next pass carries on', async () => {
    for (let i = 0; i < 5; i += 1) mesh.add(`<Bundle>${i}${'y'.repeat(400)}</Bundle>`);
    const byCount = await pollMailbox(mesh, ports, { maxMessages: 2 });
    expect([byCount.enqueued.length, byCount.stopped?.reason]).toEqual([2, 'max-messages']);
    const byBytes = await pollMailbox(mesh, ports, { maxMessageBytes: 500, maxBytesPerPass: 1_000 });
    expect([byBytes.enqueued.length, byBytes.stopped?.reason]).toEqual([2, 'max-bytes']);
    const rest = await pollMailbox(mesh, ports);
    expect(rest.enqueued.length).toBe(1);
    expect(rest.stopped).toBeUndefined();
    expect(queue.depth).toBe(5);
  });

  it('follows inbox pages while acknowledging, and ends with messages it leaves behind', async () => {
    for (let i = 0; i < 25; i += 1) mesh.add(i % 7 === 3 ? 'z'.repeat(5_000) : `<Bundle>${i}</Bundle>`);
    const summary = await pollMailbox(mesh, ports, {
      pageSize: 10,
      maxMessageBytes: 1_000,
      maxBytesPerPass: 1_000_000,
    });
    expect(summary.enqueued).toHaveLength(21);
    expect(summary.refused).toHaveLength(4);
    expect(mesh.inbox.size).toBe(4);
    expect(queue.depth).toBe(21);
  });

  it('refuses options that would starve large messages, naming the rule', async () => {
    await expect(
      pollMailbox(mesh, ports, { maxMessageBytes: 10_000, maxBytesPerPass: 1_000 }),
    ).rejects.toThrow(/maxBytesPerPass must be at least maxMessageBytes/);
  });
});
