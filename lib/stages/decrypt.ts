/**
 * Stage 3 — decrypt. The CEK is unwrapped by the key service (KMS in AWS); every failure other than
 * an unavailable key service surfaces as the one uniform DECRYPT_FAILED.
 */

import type { Limits } from '../config/schema.js';
import { decryptSealed, parseSealed } from '../envelope/jwe.js';
import { AuthenticationError, EnvelopeError } from '../errors.js';
import type { KeyService } from '../ports/index.js';
import type { PipelineRecord } from '../record.js';
import { artefactKey, dropArtefact, loadArtefact, storeArtefact } from './claim-check.js';
import type { Stage, StageContext } from './stage.js';

/** The ports decrypt's own code uses: the key service (content-key unwrap), the blob store, the CPU pool. */
type DecryptPorts = 'keys' | 'blobs' | 'cpu';

const decoder = new TextDecoder('utf-8', { fatal: true });

export async function decryptRecord(
  record: PipelineRecord,
  ctx: StageContext<DecryptPorts>,
): Promise<PipelineRecord> {
  // Plain ITK3 over MESH has no envelope: nothing to decrypt, verify reads the Bundle itself.
  if (record.principal?.transport === 'mesh' && record.plain && record.decision) return record;
  if (!record.principal || !record.decision || !record.sealed || !record.routing) {
    throw new AuthenticationError('TOKEN_MISSING', 'record reached decrypt without authorisation');
  }
  const compact = await loadArtefact(ctx, record.sealed);
  // On a worker pool where the composition root gives one (embedded): parse, unwrap and AES-GCM in
  // one task, with the worker's own recipient key. Else here, through the key-service port.
  const signed = ctx.ports.cpu
    ? await ctx.ports.cpu.openSealed(compact, record.decision.kid)
    : await openSealedContent(compact, record.decision.kid, ctx.config.doc.limits, ctx.ports.keys);
  return {
    ...dropArtefact(record, 'sealed'),
    signed: await storeArtefact(ctx, artefactKey(record.traceId, 'signed.jws'), signed),
  };
}

/**
 * The sealed message's content (the inner compact JWS as text), opened with the recipient key the
 * decision named: the pure part of decrypt, run in the stage's thread or on a pool worker.
 */
export async function openSealedContent(
  compact: string,
  authorisedKid: string,
  limits: Pick<Limits, 'maxSealedBytes'>,
  keys: KeyService,
): Promise<string> {
  const parsed = parseSealed(compact, limits);
  // The decision was made for this key id; a record whose envelope changed since is not trusted.
  if (parsed.kid !== authorisedKid) {
    throw new EnvelopeError('ENVELOPE_KEY_UNKNOWN', 'envelope key id differs from the authorised one');
  }
  const plaintext = await decryptSealed(parsed, keys);
  try {
    return decoder.decode(plaintext);
  } catch {
    // Not text: cannot be a compact JWS. Same outward answer as any other unreadable content.
    throw new EnvelopeError('ENVELOPE_MALFORMED', 'decrypted content is not a compact JWS');
  }
}

/** Stage 3: the sealed message opened with the recipient key the decision named. */
export const decrypt: Stage<DecryptPorts> = {
  name: 'decrypt',
  async run(record, ctx) {
    return { kind: 'forward', record: await decryptRecord(record, ctx) };
  },
};
