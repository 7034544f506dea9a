/**
 * Operator commands: `itk3 dlq list|show|redrive` and `itk3 trace`, one code path each over the
 * dead-letter port (lib/ops/dead-letters.ts) and an audit log. Embedded runs: what `itk3 process` /
 * `serve` / `demo` keep in their `--out` folder, the state file `state.db` (queues, DLQs, once-store,
 * audit trail, outcomes; docs/DURABILITY.md). A deployed stack (`--aws-outputs F`): its SQS DLQs
 * and DynamoDB audit table. Also the embedded pipeline these commands and `process` share.
 */
import { createPublicKey, type JsonWebKey } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { removeStrayTemporaries } from '../adapters/local/durable-file.js';
import { SqliteState } from '../adapters/local/sqlite-state.js';
import { WorkerPool, workerCount } from '../adapters/local/worker-pool.js';
import type { LoadedConfig } from '../config/load.js';
import { UsageError } from '../errors.js';
import {
  type DeadLetter,
  type DeadLetterReader,
  type DeadLetters,
  LocalDeadLetterReader,
  LocalDeadLetters,
  stateDeadLetterSource,
} from '../ops/dead-letters.js';
import { STAGES, type StageName } from '../pipeline/topology.js';
import { type AuditEntry, type AuditLog, type Clock, type KeyService, systemClock } from '../ports/index.js';
import {
  type BacklogLimits,
  EmbeddedPipeline,
  type MessageOutcome,
  outcomeFromAudit,
} from '../runtime/embedded.js';
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

/**
 * Where `dlq` and `trace` look: an embedded run's `--out` folder (its state file), or, with
 * `--aws-outputs F`, the deployed stack (or one deployed to an emulator) that F describes.
 */
export interface OperatorTarget {
  out: string;
  awsOutputs?: string | undefined;
}

/** The dead letters and audit trail of a target, for reading. */
interface OperatorView {
  deadLetters: DeadLetterReader;
  audit: Pick<AuditLog, 'byTrace'>;
  close(): void;
}

/** A target's dead letters for a redrive, with what it takes to see the redriven messages run. */
interface RedriveView extends OperatorView {
  deadLetters: DeadLetters;
  /** Start the runtime that will run them (embedded: resume the run's pipeline; AWS: it runs). */
  start(): void;
  /** Wait for the redriven messages to settle where this process runs them (embedded). */
  settle(): Promise<void>;
  outcome(traceId: string): Promise<MessageOutcome>;
}

/** What an embedded redrive needs to run the messages again; AWS runs them in the stack. */
export interface EmbeddedRuntime {
  config: LoadedConfig;
  keys: KeyService;
}

async function openOperatorView(target: OperatorTarget): Promise<OperatorView> {
  if (target.awsOutputs) return awsOps(target.awsOutputs);
  const state = readRunState(target.out);
  return {
    deadLetters: new LocalDeadLetterReader(stateDeadLetterSource(state), runFiles(target.out).dir),
    audit: state.audit,
    close: () => state.close(),
  };
}

async function openRedriveView(
  target: OperatorTarget,
  runtime: (() => EmbeddedRuntime) | undefined,
): Promise<RedriveView> {
  if (target.awsOutputs) {
    const ops = await awsOps(target.awsOutputs);
    return {
      ...ops,
      start: () => undefined,
      settle: async () => undefined,
      outcome: async (traceId) => outcomeFromAudit(traceId, await ops.audit.byTrace(traceId)),
    };
  }
  if (!runtime) throw new UsageError('--config is required to run the redriven messages');
  const { config, keys } = runtime();
  const state = openRunState(target.out);
  try {
    const pipeline = commandLinePipeline(config, keys, state);
    return {
      deadLetters: new LocalDeadLetters(pipeline, runFiles(target.out).dir),
      audit: state.audit,
      close: () => state.close(),
      // Whatever an earlier run left in flight finishes too.
      start: () => pipeline.resume(),
      settle: () => pipeline.drain().then(() => undefined),
      outcome: (traceId) => pipeline.outcome(traceId),
    };
  } catch (error) {
    state.close();
    throw error;
  }
}

export async function dlqList(
  target: OperatorTarget,
  stage: StageName | undefined,
  json: boolean,
  write: Write,
): Promise<number> {
  const view = await openOperatorView(target);
  let letters: DeadLetter[];
  try {
    letters = await view.deadLetters.list(stage);
  } finally {
    view.close();
  }
  if (json) {
    for (const l of letters) write(JSON.stringify(l));
    return 0;
  }
  if (letters.length === 0) {
    write(`no dead letters in ${view.deadLetters.where}`);
    return 0;
  }
  write(
    renderTable(
      ['stage', 'message id', 'trace id', 'reason', 'receives', 'first sent', 'dead-lettered at'],
      letters.map((l) => [
        l.stage,
        l.messageId,
        l.traceId,
        l.reason,
        l.receiveCount === undefined ? '' : String(l.receiveCount),
        l.sentAt,
        l.deadLetteredAt ?? '',
      ]),
      64,
    ),
  );
  return 0;
}

/** One dead letter (never its body) and its audit trail. */
export async function dlqShow(target: OperatorTarget, messageId: string, write: Write): Promise<number> {
  const view = await openOperatorView(target);
  try {
    const letter = await view.deadLetters.show(messageId);
    if (!letter) throw new UsageError(`no dead letter ${messageId} in ${view.deadLetters.where}`);
    write(JSON.stringify(letter, null, 2));
    writeTrace(letter.traceId, await view.audit.byTrace(letter.traceId), write);
    return 0;
  } finally {
    view.close();
  }
}

/**
 * `dlq redrive STAGE|all|MESSAGE_ID`: move dead letters back to their stage's queue, audited as the
 * operator's (`by cli`); one JSON line per message with where it stands after (embedded: run to its
 * end here; AWS: the stack runs it, so usually still in flight).
 */
export async function dlqRedrive(
  target: OperatorTarget,
  what: string,
  runtime: (() => EmbeddedRuntime) | undefined,
  write: Write,
): Promise<number> {
  const view = await openRedriveView(target, runtime);
  try {
    const { deadLetters } = view;
    const stage = (STAGES as readonly string[]).includes(what) ? (what as StageName) : undefined;
    // Looked at before anything runs, so "nothing to redrive" changes nothing.
    let selection: { stage: StageName; messageId?: string }[];
    if (what === 'all' || stage) {
      const stages = new Set((await deadLetters.list(stage)).map((l) => l.stage));
      selection = STAGES.filter((s) => stages.has(s)).map((s) => ({ stage: s }));
    } else {
      const letter = await deadLetters.show(what);
      selection = letter ? [{ stage: letter.stage, messageId: letter.messageId }] : [];
    }
    if (selection.length === 0)
      throw new UsageError(`nothing to redrive for "${what}" in ${deadLetters.where}`);

    view.start();
    const moved: DeadLetter[] = [];
    for (const s of selection) moved.push(...(await deadLetters.redrive(s.stage, s.messageId, 'cli')));
    await view.settle();
    for (const letter of moved) {
      const o = await view.outcome(letter.traceId);
      write(
        JSON.stringify({
          messageId: letter.messageId,
          traceId: letter.traceId,
          redrivenTo: letter.stage,
          status: o.status,
          stage: o.stage ?? null,
          itk3Code: o.itk3Code ?? null,
          error: o.code ?? null,
        }),
      );
    }
    return 0;
  } finally {
    view.close();
  }
}

/** A message's path through the audit trail, and its outcome. */
export async function trace(target: OperatorTarget, traceId: string, write: Write): Promise<number> {
  const view = await openOperatorView(target);
  try {
    const entries = await view.audit.byTrace(traceId);
    if (entries.length === 0) throw new UsageError(`no trace ${traceId} in ${view.deadLetters.where}`);
    writeTrace(traceId, entries, write);
    return 0;
  } finally {
    view.close();
  }
}

/**
 * AWS mode: the same operations on a deployed stack (or one deployed to an emulator), located by
 * the `cdk deploy --outputs-file` JSON. Credentials, region and endpoint come from the usual AWS
 * environment (`AWS_PROFILE`, `AWS_REGION`, `AWS_ENDPOINT_URL`).
 */
async function awsOps(outputsFile: string): Promise<OperatorView & { deadLetters: DeadLetters }> {
  const { createAwsClients } = await import('../adapters/aws/clients.js');
  const { SqsDeadLetters } = await import('../adapters/aws/dead-letters.js');
  const { DynamoAuditLog } = await import('../adapters/aws/dynamo-audit-log.js');
  const outputs = stackOutputs(outputsFile, (o) => Boolean(o.DeadLetterQueueUrls && o.AuditTableName));
  const loopback = (u: string) => u.replace('//localhost:', '//127.0.0.1:');
  const urls = (json: string | undefined) =>
    Object.fromEntries(
      Object.entries(JSON.parse(json ?? '{}') as Record<string, string>).map(([k, v]) => [k, loopback(v)]),
    );
  const clients = createAwsClients();
  const audit = new DynamoAuditLog(clients.dynamodb, outputs.AuditTableName!);
  return {
    deadLetters: new SqsDeadLetters(
      clients.sqs,
      { dlq: urls(outputs.DeadLetterQueueUrls), source: urls(outputs.QueueUrls) },
      audit,
      { where: `the stack of ${outputsFile}` },
    ),
    audit,
    close: () => undefined,
  };
}

/** The ITK3 pipeline stack's outputs in a `cdk deploy --outputs-file` JSON. */
function stackOutputs(
  outputsFile: string,
  isPipeline: (outputs: Record<string, string>) => boolean,
): Record<string, string> {
  let all: Record<string, Record<string, string>>;
  try {
    all = JSON.parse(readFileSync(outputsFile, 'utf8')) as Record<string, Record<string, string>>;
  } catch {
    throw new UsageError(`cannot read the cdk outputs file ${outputsFile}`);
  }
  const outputs = Object.values(all).find(isPipeline);
  if (!outputs) throw new UsageError(`${outputsFile} holds no ITK3 pipeline stack outputs`);
  return outputs;
}

/**
 * AWS mode for `itk3 audit verify`: the audit table and the one trusted checkpoint key, the
 * deployed response-signing key: the public JWK of a wrapped one (`ResponseSigningPublicJwk`,
 * cached key mode), else the KMS key's (`ResponseSigningKeyArn`), whose public half comes from KMS.
 */
export async function awsAuditChain(outputsFile: string) {
  const { createAwsClients } = await import('../adapters/aws/clients.js');
  const { DynamoAuditLog } = await import('../adapters/aws/dynamo-audit-log.js');
  const { KmsKeyService } = await import('../adapters/aws/kms-key-service.js');
  const outputs = stackOutputs(outputsFile, (o) =>
    Boolean(o.AuditTableName && (o.ResponseSigningKeyArn || o.ResponseSigningPublicJwk)),
  );
  const clients = createAwsClients();
  return {
    audit: new DynamoAuditLog(clients.dynamodb, outputs.AuditTableName!, systemClock, { writer: 'verifier' }),
    checkpointKeys: async () => {
      const spki = outputs.ResponseSigningPublicJwk
        ? spkiOfPublicJwk(outputs.ResponseSigningPublicJwk, outputsFile)
        : await new KmsKeyService(clients.kms, {
            signer: outputs.ResponseSigningKeyArn!,
          }).publicKeySpki('signer');
      // Every checkpoint must verify under this one key, whatever kid it names.
      return { get: () => spki };
    },
  };
}

/** SPKI DER of the P-256 public JWK in a `ResponseSigningPublicJwk` output. */
function spkiOfPublicJwk(text: string, outputsFile: string): Uint8Array {
  try {
    const jwk = JSON.parse(text) as JsonWebKey;
    if (jwk.kty !== 'EC' || jwk.crv !== 'P-256' || jwk.d !== undefined)
      throw new Error('not a public P-256 JWK');
    return createPublicKey({ key: jwk, format: 'jwk' }).export({ format: 'der', type: 'spki' });
  } catch {
    throw new UsageError(`ResponseSigningPublicJwk in ${outputsFile} is not a public P-256 JWK`);
  }
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
