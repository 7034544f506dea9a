/**
 * Stage 3 — decrypt. The CEK is unwrapped by the key service (KMS in AWS); every failure other than
 * an unavailable key service surfaces as the one uniform DECRYPT_FAILED.
 */
import { decryptSealed, parseSealed } from '../envelope/jwe.js';
import { AuthenticationError, EnvelopeError } from '../errors.js';
import type { PipelineRecord } from '../record.js';
import { artefactKey, dropArtefact, loadArtefact, storeArtefact } from './claim-check.js';
import type { Stage, StageContext } from './stage.js';

/** The ports decrypt's own code uses: the key service (content-key unwrap) and the blob store. */
type DecryptPorts = 'keys' | 'blobs';

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
  const parsed = parseSealed(compact, ctx.config.doc.limits);
  // The decision was made for this key id; a record whose envelope changed since is not trusted.
  if (parsed.kid !== record.decision.kid) {
    throw new EnvelopeError('ENVELOPE_KEY_UNKNOWN', 'envelope key id differs from the authorised one');
  }
  const plaintext = await decryptSealed(parsed, ctx.ports.keys);
  let signed: string;
  try {
    signed = decoder.decode(plaintext);
  } catch {
    // Not text: cannot be a compact JWS. Same outward answer as any other unreadable content.
    throw new EnvelopeError('ENVELOPE_MALFORMED', 'decrypted content is not a compact JWS');
  }
  return {
    ...dropArtefact(record, 'sealed'),
    signed: await storeArtefact(ctx, artefactKey(record.traceId, 'signed.jws'), signed),
  };
}

/** Stage 3: the sealed message opened with the recipient key the decision named. */
export const decrypt: Stage<DecryptPorts> = {
  name: 'decrypt',
  async run(record, ctx) {
    return { kind: 'forward', record: await decryptRecord(record, ctx) };
  },
};
