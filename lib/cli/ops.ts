/**
 * Operator commands for embedded runs: `itk3 dlq list|show|redrive` and `itk3 trace`.
 * They read what `itk3 process` / `itk3 serve` / `itk3 demo` keep in their `--out` folder: the
 * state file `state.db` (queues, DLQs, once-store, audit trail, outcomes; docs/DURABILITY.md).
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { removeStrayTemporaries } from '../adapters/local/durable-file.js';
import { SqliteState } from '../adapters/local/sqlite-state.js';
import { WorkerPool, workerCount } from '../adapters/local/worker-pool.js';
import type { LoadedConfig } from '../config/load.js';
import { UsageError } from '../errors.js';
import { findDeadLetter, listDeadLetters } from '../ops/dead-letters.js';
import {
  type AuditEntry,
  type Clock,
  type KeyService,
  STAGES,
  type StageName,
  systemClock,
} from '../ports/index.js';
import { type BacklogLimits, EmbeddedPipeline, outcomeFromAudit } from '../runtime/embedded.js';
import { renderTable } from './table.js';

type Write = (line: string) => void;

/** Files an embedded run keeps in its output folder. */
export function runFiles(out: string) {
  const dir = resolve(out);
  return { dir, state: join(dir, 'state.db') };
}

/** The run's state file, created when missing. */
export function openRunState(out: string, clock: Clock = systemClock): SqliteState {
  return new SqliteState(runFiles(out).state, { clock });
}

/**
 * At start: remove the temporary files a crash left in the delivery folders. A finished delivery
 * was renamed into place before its outcome was committed; one whose outcome was not committed is
 * still queued and is written again under the same name (docs/DURABILITY.md).
 */
export function reconcileDeliveryFolders(config: LoadedConfig, baseDir: string): number {
  const targets = [
    ...config.doc.recipients.map((r) => r.target),
    ...config.doc.senders.map((s) => s.responseTarget),
    config.doc.unauthenticatedResponseTarget,
  ];
  let removed = 0;
  for (const t of targets)
    if (t.type === 'folder') removed += removeStrayTemporaries(resolve(baseDir, t.path));
  return removed;
}

/** The run's state file for reading only (operator commands); a missing file is a usage error. */
function readRunState(out: string): SqliteState {
  const file = runFiles(out).state;
  if (!existsSync(file)) throw new UsageError(`no state file at ${file}`);
  return new SqliteState(file, { clock: systemClock, readonly: true });
}

/** Visibility timeout of embedded command-line runs: a failed record is retried after this long. */
const CLI_VISIBILITY_SECONDS = 1;

/**
 * The worker pool `process` and `serve` run the CPU-heavy steps on: `--workers N` workers, by
 * default one per core this process may use; none with `--workers 0` or `1` or on one core.
 * Each worker reads the keys from `keystoreFile` itself.
 */
export async function commandLinePool(
  workers: string | undefined,
  keystoreFile: string,
  config: LoadedConfig,
): Promise<WorkerPool | undefined> {
  let requested: number | undefined;
  if (workers !== undefined) {
    requested = Number(workers);
    if (!/^\d+$/.test(workers) || requested > 256)
      throw new UsageError('--workers must be a whole number 0–256');
  }
  const size = workerCount(requested);
  return size === 0 ? undefined : WorkerPool.start({ size, keystoreFile, config });
}

/**
 * The embedded pipeline of `process` and `dlq redrive`: state kept in the output folder, real time
 * (so the audit trail's timestamps are true), and retries after a short visibility timeout instead
 * of the deployed 6 × function timeout.
 */
export function commandLinePipeline(
  config: LoadedConfig,
  keys: KeyService,
  state: SqliteState,
  opts: { limits?: Partial<BacklogLimits>; mesh?: boolean; pool?: WorkerPool } = {},
): EmbeddedPipeline {
  warnUnreachableTargets(config, undefined, opts.mesh);
  return new EmbeddedPipeline({
    config,
    keys,
    ...(opts.pool ? { pool: opts.pool } : {}),
    baseDir: resolve(state.file, '..'),
    state,
    clock: systemClock,
    ...(opts.limits ? { limits: opts.limits } : {}),
    stages: Object.fromEntries(STAGES.map((s) => [s, { visibilityTimeoutSeconds: CLI_VISIBILITY_SECONDS }])),
  });
}

export function dlqList(out: string, stage: StageName | undefined, json: boolean, write: Write): number {
  const state = readRunState(out);
  const letters = listDeadLetters(state, stage);
  state.close();
  if (json) {
    for (const l of letters) write(JSON.stringify(l));
    return 0;
  }
  if (letters.length === 0) {
    write(`no dead letters in ${runFiles(out).dir}`);
    return 0;
  }
  write(
    renderTable(
      ['stage', 'message id', 'trace id', 'reason', 'dead-lettered at'],
      letters.map((l) => [l.stage, l.messageId, l.traceId, l.reason, l.deadLetteredAt]),
      64,
    ),
  );
  return 0;
}

export async function dlqShow(out: string, messageId: string, write: Write): Promise<number> {
  const files = runFiles(out);
  const state = readRunState(out);
  const letter = findDeadLetter(state, messageId);
  state.close();
  if (!letter) throw new UsageError(`no dead letter ${messageId} in ${files.dir}`);
  // Never the body: it holds the credential and message content.
  const { body, attributes: _a, sentAt: _s, ...summary } = letter;
  write(JSON.stringify({ ...summary, bodyBytes: Buffer.byteLength(body, 'utf8') }, null, 2));
  return trace(out, letter.traceId, write);
}

export async function dlqRedrive(
  out: string,
  target: string,
  config: LoadedConfig,
  keys: KeyService,
  write: Write,
): Promise<number> {
  const files = runFiles(out);
  const state = openRunState(out);
  try {
    const stage = (STAGES as readonly string[]).includes(target) ? (target as StageName) : undefined;
    const letters =
      target === 'all' || stage
        ? listDeadLetters(state, stage)
        : [findDeadLetter(state, target)].filter((l) => l !== undefined);
    if (letters.length === 0) throw new UsageError(`nothing to redrive for "${target}" in ${files.dir}`);

    const pipeline = commandLinePipeline(config, keys, state);
    // Whatever an earlier run left in flight finishes too.
    pipeline.resume();
    for (const letter of letters) await pipeline.redrive(letter.stage, letter.messageId);
    await pipeline.drain();
    for (const letter of letters) {
      const o = await pipeline.outcome(letter.traceId);
      write(
        JSON.stringify({
          messageId: letter.messageId,
          traceId: letter.traceId,
          status: o.status,
          stage: o.stage ?? null,
          itk3Code: o.itk3Code ?? null,
          error: o.code ?? null,
        }),
      );
    }
    return 0;
  } finally {
    state.close();
  }
}

export async function trace(out: string, traceId: string, write: Write): Promise<number> {
  const state = readRunState(out);
  try {
    const entries = await state.audit.byTrace(traceId);
    if (entries.length === 0) throw new UsageError(`no trace ${traceId} in ${state.file}`);
    writeTrace(traceId, entries, write);
    return 0;
  } finally {
    state.close();
  }
}

/**
 * AWS mode: the same operations on a deployed stack (or one deployed to an emulator), located by
 * the `cdk deploy --outputs-file` JSON. Credentials, region and endpoint come from the usual AWS
 * environment (`AWS_PROFILE`, `AWS_REGION`, `AWS_ENDPOINT_URL`).
 */
export async function awsOps(outputsFile: string) {
  const { readFileSync } = await import('node:fs');
  const { createAwsClients } = await import('../adapters/aws/clients.js');
  const { AwsDeadLetters } = await import('../adapters/aws/dead-letters.js');
  const { DynamoAuditLog } = await import('../adapters/aws/dynamo-audit-log.js');
  let all: Record<string, Record<string, string>>;
  try {
    all = JSON.parse(readFileSync(outputsFile, 'utf8')) as Record<string, Record<string, string>>;
  } catch {
    throw new UsageError(`cannot read the cdk outputs file ${outputsFile}`);
  }
  const outputs = Object.values(all).find((o) => o.DeadLetterQueueUrls && o.AuditTableName);
  if (!outputs) throw new UsageError(`${outputsFile} holds no ITK3 pipeline stack outputs`);
  const loopback = (u: string) => u.replace('//localhost:', '//127.0.0.1:');
  const urls = (json: string | undefined) =>
    Object.fromEntries(
      Object.entries(JSON.parse(json ?? '{}') as Record<string, string>).map(([k, v]) => [k, loopback(v)]),
    );
  const clients = createAwsClients();
  return {
    deadLetters: new AwsDeadLetters(clients.sqs, {
      dlq: urls(outputs.DeadLetterQueueUrls),
      source: urls(outputs.QueueUrls),
    }),
    audit: new DynamoAuditLog(clients.dynamodb, outputs.AuditTableName!),
  };
}

/**
 * AWS mode for `itk3 audit verify`: the audit table and the one trusted checkpoint key, the
 * deployed response-signing key (`ResponseSigningKeyArn`), whose public half comes from KMS.
 */
export async function awsAuditChain(outputsFile: string) {
  const { readFileSync } = await import('node:fs');
  const { createAwsClients } = await import('../adapters/aws/clients.js');
  const { DynamoAuditLog } = await import('../adapters/aws/dynamo-audit-log.js');
  const { KmsKeyService } = await import('../adapters/aws/kms-key-service.js');
  let all: Record<string, Record<string, string>>;
  try {
    all = JSON.parse(readFileSync(outputsFile, 'utf8')) as Record<string, Record<string, string>>;
  } catch {
    throw new UsageError(`cannot read the cdk outputs file ${outputsFile}`);
  }
  const outputs = Object.values(all).find((o) => o.AuditTableName && o.ResponseSigningKeyArn);
  if (!outputs) throw new UsageError(`${outputsFile} holds no ITK3 pipeline stack outputs`);
  const clients = createAwsClients();
  return {
    audit: new DynamoAuditLog(clients.dynamodb, outputs.AuditTableName!, systemClock, { writer: 'verifier' }),
    checkpointKeys: async () => {
      const spki = await new KmsKeyService(clients.kms, {
        signer: outputs.ResponseSigningKeyArn!,
      }).publicKeySpki('signer');
      // Every checkpoint must verify under this one key, whatever kid it names.
      return { get: () => spki };
    },
  };
}

export async function awsDlqList(
  outputsFile: string,
  stage: StageName | undefined,
  json: boolean,
  write: Write,
): Promise<number> {
  const { deadLetters } = await awsOps(outputsFile);
  const letters = await deadLetters.list(stage);
  if (json) {
    for (const l of letters) write(JSON.stringify(l));
    return 0;
  }
  if (letters.length === 0) {
    write('no dead letters');
    return 0;
  }
  write(
    renderTable(
      ['stage', 'message id', 'trace id', 'receives', 'first sent'],
      letters.map((l) => [
        l.stage,
        l.messageId,
        l.traceId,
        String(l.receiveCount),
        new Date(l.sentAt).toISOString(),
      ]),
      64,
    ),
  );
  return 0;
}

export async function awsDlqShow(outputsFile: string, messageId: string, write: Write): Promise<number> {
  const { deadLetters, audit } = await awsOps(outputsFile);
  const letter = (await deadLetters.list()).find((l) => l.messageId === messageId);
  if (!letter) throw new UsageError(`no dead letter ${messageId}`);
  const entries = await audit.byTrace(letter.traceId);
  const reason = entries.filter((e) => e.event === 'transient-failure').at(-1)?.code ?? 'unknown';
  write(JSON.stringify({ ...letter, reason }, null, 2));
  writeTrace(letter.traceId, entries, write);
  return 0;
}

export async function awsDlqRedrive(outputsFile: string, target: string, write: Write): Promise<number> {
  const { deadLetters, audit } = await awsOps(outputsFile);
  const stage = (STAGES as readonly string[]).includes(target) ? (target as StageName) : undefined;
  const moved = await deadLetters.redrive(
    target === 'all' || stage ? (stage ? { stage } : {}) : { messageId: target },
  );
  if (moved.length === 0) throw new UsageError(`nothing to redrive for "${target}"`);
  for (const m of moved) {
    await audit.append({
      traceId: m.traceId,
      at: new Date().toISOString(),
      stage: 'operator',
      event: 'redriven',
      detail: `back to ${m.stage}`,
    });
    write(JSON.stringify({ redriven: m.messageId, stage: m.stage, traceId: m.traceId }));
  }
  return 0;
}

export async function awsTrace(outputsFile: string, traceId: string, write: Write): Promise<number> {
  const { audit } = await awsOps(outputsFile);
  const entries = await audit.byTrace(traceId);
  if (entries.length === 0) throw new UsageError(`no trace ${traceId} in the audit table`);
  writeTrace(traceId, entries, write);
  return 0;
}

function writeTrace(traceId: string, entries: readonly AuditEntry[], write: Write): void {
  write(
    renderTable(
      ['at', 'stage', 'event', 'code', 'ITK3', 'message id', 'sender', 'recipient', 'rule', 'detail'],
      entries.map((e) => [
        e.at,
        e.stage,
        e.event,
        e.code ?? '',
        e.itk3Code ?? '',
        e.messageId ?? '',
        e.sender ?? '',
        e.recipient ?? '',
        e.ruleId ?? '',
        e.detail ?? '',
      ]),
      64,
    ),
  );
  const o = outcomeFromAudit(traceId, entries);
  write(
    `outcome: ${o.status}${o.stage ? ` at ${o.stage}` : ''}${o.itk3Code ? `, ITK3 ${o.itk3Code}` : ''}${o.code ? `, ${o.code}` : ''}`,
  );
}

/**
 * Embedded runs deliver to folders only: say up front which configured targets they cannot reach
 * (messages for them are retried and then dead-lettered, never lost), instead of leaving an
 * operator to discover it in the DLQ.
 */
export function warnUnreachableTargets(
  config: LoadedConfig,
  warn: Write = (l) => process.stderr.write(`${l}\n`),
  /** MESH is attached (`mesh poll`, `serve --mesh`): `mesh` targets are reachable too. */
  meshAttached = false,
): void {
  const reachable = (type: string) => type === 'folder' || (meshAttached && type === 'mesh');
  const unreachable = [
    ...config.doc.recipients
      .filter((r) => !reachable(r.target.type))
      .map((r) => `recipient ${r.ods} (${r.target.type})`),
    ...config.doc.senders
      .filter((s) => !reachable(s.responseTarget.type))
      .map((s) => `responses for ${s.ods} (${s.responseTarget.type})`),
    ...(config.doc.unauthenticatedResponseTarget.type !== 'folder' ? ['unauthenticated responses'] : []),
  ];
  if (unreachable.length > 0) {
    warn(
      `warning: embedded mode delivers to folders${meshAttached ? ' and MESH' : ''} only; these targets will dead-letter: ${unreachable.join(', ')}`,
    );
  }
}
