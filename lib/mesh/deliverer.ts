/**
 * Delivery through MESH: the `mesh` target type. Wraps the runtime's deliverer (folders locally,
 * S3/SQS in AWS) and sends `mesh` targets with the gateway's MESH client.
 *
 * Idempotency: a retried delivery (SQS redelivery, a redrive) must not send twice when the first
 * send reached MESH. Each send is done "at most once across crashes" (lib/mesh/once.ts) under a key
 * made of the sending mailbox, the recipient mailbox and the delivery name (unique per trace and
 * target): once a send is recorded, a retry returns the recorded MESH message id without sending.
 * What remains: a process killed in the instant between MESH accepting the message and the record
 * being written sends it again on retry; the recipient's duplicate check (the same MessageHeader id,
 * the same `Mex-LocalID`) is the backstop, as for the inbound poller.
 *
 * Failures: anything MESH refuses or cannot take now is a {@link TransientError}
 * `MESH_SEND_FAILED` with MESH's reason (status, mailbox), so the record is retried and then
 * dead-lettered with that reason, like any other delivery.
 */
import { randomUUID } from 'node:crypto';
import { TransientError } from '../errors.js';
import type { Deliverer, DeliveryTarget, OnceStore } from '../ports/index.js';
import type { MeshClient } from './client.js';
import { MeshError } from './errors.js';
import { onceAcrossCrashes } from './once.js';

export class MeshDeliverer implements Deliverer {
  readonly #inner: Deliverer;
  readonly #clients: ReadonlyMap<string, MeshClient>;
  readonly #defaultFrom: string;
  readonly #once: OnceStore;

  /**
   * @param clients the gateway's MESH clients by mailbox
   * @param defaultFrom the mailbox deliveries are sent from when a target names none
   */
  constructor(opts: {
    inner: Deliverer;
    clients: ReadonlyMap<string, MeshClient>;
    defaultFrom: string;
    once: OnceStore;
  }) {
    this.#inner = opts.inner;
    this.#clients = opts.clients;
    this.#defaultFrom = opts.defaultFrom;
    this.#once = opts.once;
  }

  async deliver(
    target: DeliveryTarget,
    name: string,
    bytes: Uint8Array,
    contentType: string,
  ): Promise<string> {
    if (target.type !== 'mesh') return this.#inner.deliver(target, name, bytes, contentType);
    const from = target.from ?? this.#defaultFrom;
    if (!target.workflowId) {
      throw new TransientError(
        'MESH_SEND_FAILED',
        `no MESH workflow id for the delivery to ${target.mailbox}`,
      );
    }
    const workflowId = target.workflowId;
    const client = this.#clients.get(from);
    if (!client) {
      throw new TransientError('MESH_SEND_FAILED', `no MESH connection for the gateway mailbox ${from}`);
    }
    let outcome: Awaited<ReturnType<typeof onceAcrossCrashes>>;
    try {
      outcome = await onceAcrossCrashes(
        this.#once,
        `meshsend#${from}#${target.mailbox}#${name}`,
        randomUUID(),
        async () => {
          const sent = await client.send(target.mailbox, bytes, {
            workflowId,
            ...(target.localId ? { localId: target.localId } : {}),
            fileName: name,
            contentType,
          });
          return sent.messageId;
        },
      );
    } catch (error) {
      if (error instanceof TransientError) throw error;
      const reason =
        error instanceof MeshError
          ? `MESH ${error.kind} failure sending to ${target.mailbox}${error.status ? ` (HTTP ${error.status})` : ''}`
          : `cannot record the MESH send to ${target.mailbox}`;
      throw new TransientError('MESH_SEND_FAILED', reason, { cause: error });
    }
    if (outcome.status === 'gave-up') {
      throw new TransientError('MESH_SEND_FAILED', `MESH send to ${target.mailbox} interrupted too often`);
    }
    return `mesh://${target.mailbox}/${outcome.result}`;
  }
}
