/**
 * What the benchmark sends: ITK009D immunisation messages from X26 to A83627 (the demo world's
 * federated sender: PS256 credential from the pharmacy federation, RS512 inner signature, RSA-4096
 * recipient key), in three size classes. Sealing and token minting happen here, before any timed
 * section. Message bytes and tokens are never printed.
 */
import { randomUUID } from 'node:crypto';
import { freshImmunisation, sealFor, tokenFor } from '../../lib/testkit/scenario.js';
import type { DemoWorld } from '../../lib/testkit/world.js';

export interface SizeClass {
  /** Label in the table and report. */
  label: 'small' | '1MB' | '5MB';
  /** Bundle size to aim for; `undefined` = the smallest complete message the builder makes. */
  targetBytes: number | undefined;
}

/**
 * The 4 KB class: a complete ITK3 message (header, organisations, document Bundle) is never
 * that small — the builder's smallest is ≈ 7.1 KiB and the NHS samples are 20–123 KB — so the small
 * class is the smallest valid message. 1 MB and 5 MB are decimal, under the 5 242 880-byte cap.
 */
export const SIZE_CLASSES: readonly SizeClass[] = [
  { label: 'small', targetBytes: undefined },
  { label: '1MB', targetBytes: 1_000_000 },
  { label: '5MB', targetBytes: 5_000_000 },
];

export interface PreparedMessage {
  messageId: string;
  credential: string;
  sealed: string;
  bundleBytes: number;
}

export interface PrepareOptions {
  /** Token `iat`, ms: the pipeline clock must be within the token lifetime of it. */
  now: number;
  /** InfAckRequested: one signed ITK008M response per message when true. */
  infAck: boolean;
}

/** Bundle bytes of one fresh immunisation message. */
export function immunisationBundle(size: SizeClass, messageId: string, infAck: boolean): Uint8Array {
  return freshImmunisation({
    messageId,
    acks: infAck,
    ...(size.targetBytes !== undefined ? { targetBytes: size.targetBytes } : {}),
  }).bytes;
}

/** `count` messages of one size class, each with its own ids and single-use credential. */
export async function prepareMessages(
  world: DemoWorld,
  size: SizeClass,
  count: number,
  opts: PrepareOptions,
): Promise<PreparedMessage[]> {
  const sender = world.senders.X26;
  const out: PreparedMessage[] = [];
  for (let i = 0; i < count; i += 1) {
    const messageId = randomUUID();
    const bundle = immunisationBundle(size, messageId, opts.infAck);
    const routing = { from: 'X26', to: 'A83627', event: 'ITK009D', id: messageId };
    out.push({
      messageId,
      credential: await tokenFor(world, sender, opts.now),
      sealed: await sealFor(world, sender, bundle, 'xml', routing),
      bundleBytes: bundle.byteLength,
    });
  }
  return out;
}
