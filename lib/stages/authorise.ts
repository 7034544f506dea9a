/**
 * Stage 2 — authorise on the verified principal and the JWE's routing header, without decrypting
 * (SECURITY-CORPUS.md rule 7: no KMS call for an unauthorised message).
 */
import { parseSealed } from '../envelope/jwe.js';
import { AuthenticationError } from '../errors.js';
import { authorise as decide } from '../policy/index.js';
import type { PipelineRecord } from '../record.js';
import { loadArtefact, type StageContext } from './context.js';

export async function authoriseStage(record: PipelineRecord, ctx: StageContext): Promise<PipelineRecord> {
  if (!record.principal || !record.sealed) {
    throw new AuthenticationError('TOKEN_MISSING', 'record reached authorise without a principal');
  }
  const compact = await loadArtefact(ctx, record.sealed);
  const parsed = parseSealed(compact, ctx.config.doc.limits);
  const decision = decide(
    { principal: record.principal, routing: parsed.routing, kid: parsed.kid, receivedAt: record.receivedAt },
    ctx.config,
  );
  return { ...record, routing: parsed.routing, decision };
}
