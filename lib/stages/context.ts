import { createHash } from 'node:crypto';
import type { LoadedConfig } from '../config/load.js';
import { TransientError } from '../errors.js';
import type { CpuWork, Ports } from '../ports/index.js';
import type { Artefact, PipelineRecord } from '../record.js';
import { inThreadCpuWork } from './cpu-work.js';

/** What every stage function receives besides its record. */
export interface StageContext {
  ports: Ports;
  config: LoadedConfig;
}

/** Where the stage's CPU-heavy pure steps run: the composition root's (a worker pool), or here. */
export function cpuWork(ctx: StageContext): CpuWork {
  return ctx.ports.cpu ?? inThreadCpuWork(ctx.config);
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

export function sha256Hex(bytes: Uint8Array | string): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/**
 * Keep an artefact inline when small; above the claim-check threshold store it in the blob store
 * and carry a reference with its hash, so SQS messages stay well under 1 MiB (PERFORMANCE.md §3).
 */
export async function storeArtefact(ctx: StageContext, key: string, text: string): Promise<Artefact> {
  const bytes = Buffer.byteLength(text, 'utf8');
  if (bytes <= ctx.config.doc.limits.claimCheckBytes) return { inline: text };
  const data = encoder.encode(text);
  try {
    await ctx.ports.blobs.put(key, data);
  } catch (cause) {
    throw new TransientError('BLOB_STORE_UNAVAILABLE', 'cannot store claim-check payload', { cause });
  }
  return { ref: { key, bytes: data.byteLength, sha256: sha256Hex(data) } };
}

/** Load an artefact's text, checking a claim-check payload against the hash in the record. */
export async function loadArtefact(ctx: StageContext, artefact: Artefact): Promise<string> {
  if ('inline' in artefact) return artefact.inline;
  let data: Uint8Array;
  try {
    data = await ctx.ports.blobs.get(artefact.ref.key);
  } catch (cause) {
    throw new TransientError('BLOB_STORE_UNAVAILABLE', 'cannot read claim-check payload', { cause });
  }
  if (sha256Hex(data) !== artefact.ref.sha256) {
    // Someone changed the stored payload after the record was written: retrying will not help,
    // but the record must not be lost — it dead-letters with this reason.
    throw new TransientError('BLOB_STORE_UNAVAILABLE', 'claim-check payload does not match its hash');
  }
  return decoder.decode(data);
}

/** Claim-check key for an artefact of one trace. */
export function artefactKey(traceId: string, name: string): string {
  return `claim-check/${traceId}/${name}`;
}

/**
 * Drop an artefact from a record once the next stage no longer needs it, remembering its
 * claim-check key (if any) so the blob is removed when the trace ends.
 */
export function dropArtefact(
  record: PipelineRecord,
  field: 'sealed' | 'signed' | 'plain' | 'meshBody',
): PipelineRecord {
  const { [field]: dropped, ...rest } = record;
  if (!dropped || !('ref' in dropped)) return rest;
  return { ...rest, claimChecks: [...(record.claimChecks ?? []), dropped.ref.key] };
}

/** Every claim-check key a record holds or held: what to remove when its trace ends. */
export function claimCheckKeys(record: PipelineRecord | undefined): string[] {
  if (!record) return [];
  const keys = new Set(record.claimChecks ?? []);
  for (const artefact of [
    record.sealed,
    record.signed,
    record.plain,
    record.meshBody,
    record.message?.bundle,
  ]) {
    if (artefact && 'ref' in artefact) keys.add(artefact.ref.key);
  }
  return [...keys];
}

/**
 * Remove a finished trace's claim-check blobs. Best effort: the outcome is already recorded, and a
 * blob left behind by a failed delete still expires with the bucket's short claim-check rule.
 */
export async function removeClaimChecks(ctx: StageContext, keys: readonly string[]): Promise<void> {
  await Promise.all(keys.map((key) => ctx.ports.blobs.delete(key).catch(() => undefined)));
}
