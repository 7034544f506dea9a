/**
 * `itk3 audit verify`: prove an audit trail complete and unaltered, or name the first entry that is
 * not (docs/AUDIT.md). Exit 0 proven, 1 broken, 2 usage.
 */
import { createPublicKey } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { readKeystore } from '../adapters/local/keystore.js';
import { SqliteState } from '../adapters/local/sqlite-state.js';
import type { CheckpointKeys, StreamReport } from '../audit/chain.js';
import { UsageError } from '../errors.js';
import { systemClock } from '../ports/index.js';
import { runFiles } from './ops.js';

type Write = (line: string) => void;

/**
 * The trusted checkpoint keys of a keystore: its response-signing keys (public halves only). The
 * keys come from the keystore, never from the trail, so a forger cannot bring their own.
 */
function checkpointKeysFromKeystore(file: string): CheckpointKeys {
  const keystore = readKeystore(file);
  const keys = new Map<string, Uint8Array>();
  for (const entry of keystore.keys) {
    if (entry.purpose !== 'response-sign') continue;
    const spki = createPublicKey({ key: { ...entry.privateJwk }, format: 'jwk' }).export({
      format: 'der',
      type: 'spki',
    });
    keys.set(entry.kid, new Uint8Array(spki));
  }
  if (keys.size === 0)
    throw new UsageError(`${file} holds no response-signing key to check checkpoints with`);
  return keys;
}

/** Verify the chain of an embedded run's state file. */
export function auditVerify(out: string, keystore: string | undefined, json: boolean, write: Write): number {
  const file = runFiles(out).state;
  if (!existsSync(file)) throw new UsageError(`no state file at ${file}`);
  // The demo keeps its keystore next to its state; `process` and `serve` use the default one.
  const keystoreFile =
    keystore ??
    (existsSync(join(runFiles(out).dir, 'keystore.json'))
      ? join(runFiles(out).dir, 'keystore.json')
      : '.itk3/keystore.json');
  if (!existsSync(keystoreFile)) throw new UsageError(`no keystore at ${keystoreFile} (pass --keystore F)`);
  const keys = checkpointKeysFromKeystore(keystoreFile);
  const state = new SqliteState(file, { clock: systemClock, readonly: true });
  let report: StreamReport;
  try {
    report = state.audit.verify(keys);
  } finally {
    state.close();
  }
  return writeReports([report], json, write);
}

/** Print stream reports; 0 when every stream is proven, 1 otherwise. */
function writeReports(reports: readonly StreamReport[], json: boolean, write: Write): number {
  const broken = reports.filter((r) => r.break);
  if (json) {
    write(JSON.stringify({ proven: broken.length === 0, streams: reports }));
    return broken.length === 0 ? 0 : 1;
  }
  for (const r of reports) {
    if (r.break) {
      const b = r.break;
      const what = b.entry
        ? ` (${b.entry.at} ${b.entry.stage} ${b.entry.event} trace ${b.entry.traceId})`
        : '';
      write(`BROKEN  stream ${r.stream}: first bad entry ${b.firstBadEntry}${what}: ${b.kind}: ${b.reason}`);
      continue;
    }
    const tail = r.entries - r.lastCheckpoint;
    write(
      `proven  stream ${r.stream}: ${r.entries} entries, ${r.checkpoints} signed checkpoints` +
        (r.lastCheckpoint === 0
          ? ' (none signed: deletion of the tail and a rewritten chain cannot be detected)'
          : tail > 0
            ? ` (last at entry ${r.lastCheckpoint}; the ${tail} entries after it are chained but not yet signed)`
            : ' (the head is signed)'),
    );
  }
  write(
    broken.length === 0
      ? `audit trail proven: ${reports.length} stream(s) complete and unaltered`
      : `audit trail BROKEN in ${broken.length} of ${reports.length} stream(s)`,
  );
  return broken.length === 0 ? 0 : 1;
}

/** Verify every stream of a deployed stack's audit table (located by the cdk outputs file). */
export async function awsAuditVerify(outputsFile: string, json: boolean, write: Write): Promise<number> {
  const { awsAuditChain } = await import('./ops.js');
  const { audit, checkpointKeys } = await awsAuditChain(outputsFile);
  const reports = await audit.verifyAll(await checkpointKeys());
  if (reports.length === 0) throw new UsageError('the audit table holds no chained stream');
  return writeReports(reports, json, write);
}
