/**
 * The embedded runtime's MESH side, kept thin and outside the runtime itself: it needs only the
 * pipeline's ports. `attachMesh` routes `mesh` delivery targets (recipients, and ITK3 responses to
 * MESH senders) through the gateway's MESH clients, and `poll()` runs one pass of the inbound poller
 * over every gateway mailbox, with the attestation the authenticate stage requires.
 */
import type { LoadedConfig } from '../config/load.js';
import { meshMailboxKnown } from '../policy/mesh.js';
import type { Ports } from '../ports/index.js';
import type { MeshClient } from './client.js';
import { meshAttester, sendingMailbox } from './connect.js';
import { MeshDeliverer } from './deliverer.js';
import { type MeshPollSummary, pollMailbox } from './poller.js';

export interface MeshGateway {
  readonly clients: ReadonlyMap<string, MeshClient>;
  /** One pass over every gateway mailbox; the messages are on the inbound queue when it resolves. */
  poll(): Promise<MeshPollSummary[]>;
  close(): void;
}

export function attachMesh(
  pipeline: { ports: Ports; config: LoadedConfig },
  clients: ReadonlyMap<string, MeshClient>,
): MeshGateway {
  const { ports, config } = pipeline;
  const mesh = config.doc.mesh;
  if (!mesh) throw new Error('attachMesh: the configuration has no "mesh" section');
  ports.deliverer = new MeshDeliverer({
    inner: ports.deliverer,
    clients,
    defaultFrom: sendingMailbox(config),
    once: ports.once,
  });
  const attest = meshAttester(config, ports.keys);
  const shaken = new Set<string>();
  return {
    clients,
    async poll() {
      const summaries: MeshPollSummary[] = [];
      for (const client of clients.values()) {
        if (!shaken.has(client.mailbox)) {
          await client.handshake();
          shaken.add(client.mailbox);
        }
        summaries.push(
          await pollMailbox(
            client,
            {
              queues: ports.queues,
              once: ports.once,
              blobs: ports.blobs,
              audit: ports.audit,
              clock: ports.clock,
              attest,
              knownSender: (from) => meshMailboxKnown(config, from),
            },
            { maxMessages: mesh.maxMessagesPerPass, claimCheckBytes: config.doc.limits.claimCheckBytes },
          ),
        );
      }
      return summaries;
    },
    close() {
      for (const client of clients.values()) client.close();
    },
  };
}
