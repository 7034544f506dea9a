/**
 * MESH held in memory for the pipeline tests: mailboxes that send to each other, implementing the
 * project's MESH port (lib/mesh/client.ts). It stands in for the network only; the poller, the
 * deliverer and every stage are the real ones. NHS England's sandbox is used by the integration
 * suites (test/integration/mesh-*.test.ts).
 */
import { randomUUID } from 'node:crypto';
import {
  type MeshClient,
  type MeshDownloadedMessage,
  MeshError,
  type MeshSendOptions,
  type MeshTracking,
} from '../../lib/mesh/index.js';

export class MemoryMeshNetwork {
  readonly inboxes = new Map<string, Map<string, MeshDownloadedMessage>>();
  /** Sends that fail before reaching MESH (transient), counted down. */
  failSends = 0;
  sends = 0;

  client(mailbox: string): MeshClient {
    return new MemoryMeshClient(this, mailbox);
  }

  inbox(mailbox: string): Map<string, MeshDownloadedMessage> {
    let box = this.inboxes.get(mailbox);
    if (!box) {
      box = new Map();
      this.inboxes.set(mailbox, box);
    }
    return box;
  }

  /** What a partner system would do: put a message from `from` into `to`'s inbox. */
  deliver(from: string, to: string, body: Uint8Array, opts: MeshSendOptions): string {
    const messageId = `${Date.now()}${randomUUID().slice(0, 8).toUpperCase()}`;
    this.inbox(to).set(messageId, {
      messageId,
      messageType: 'DATA',
      from,
      to,
      workflowId: opts.workflowId,
      localId: opts.localId,
      subject: opts.subject,
      fileName: opts.fileName,
      contentType: opts.contentType,
      totalChunks: 1,
      body,
      wasCompressed: false,
      report: undefined,
    });
    return messageId;
  }

  /** Take everything from a mailbox (the partner receiving). */
  drainInbox(mailbox: string): MeshDownloadedMessage[] {
    const box = this.inbox(mailbox);
    const all = [...box.values()];
    box.clear();
    return all;
  }
}

class MemoryMeshClient implements MeshClient {
  constructor(
    private readonly net: MemoryMeshNetwork,
    readonly mailbox: string,
  ) {}
  async handshake(): Promise<void> {}
  async listInbox() {
    const ids = [...this.net.inbox(this.mailbox).keys()];
    return { messageIds: ids, next: undefined, approxInboxCount: ids.length };
  }
  async listInboxRich() {
    return { messages: [], next: undefined };
  }
  async download(messageId: string): Promise<MeshDownloadedMessage> {
    const m = this.net.inbox(this.mailbox).get(messageId);
    if (!m) throw new MeshError('permanent', 'gone', { status: 410 });
    return m;
  }
  async acknowledge(messageId: string): Promise<void> {
    this.net.inbox(this.mailbox).delete(messageId);
  }
  async send(to: string, body: Uint8Array, opts: MeshSendOptions): Promise<{ messageId: string }> {
    if (this.net.failSends > 0) {
      this.net.failSends -= 1;
      throw new MeshError('transient', 'MESH POST failed: ECONNRESET');
    }
    this.net.sends += 1;
    return { messageId: this.net.deliver(this.mailbox, to, body, opts) };
  }
  async track(): Promise<MeshTracking> {
    throw new Error('not used');
  }
  close(): void {}
}
