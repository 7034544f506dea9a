import { randomBytes, randomUUID } from 'node:crypto';
import {
  type AttributeValue,
  BatchGetItemCommand,
  type BatchGetItemCommandOutput,
  type DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  QueryCommand,
  type QueryCommandOutput,
  TransactWriteItemsCommand,
} from '@aws-sdk/client-dynamodb';
import {
  type ChainLink,
  type CheckpointKeys,
  type CheckpointPolicy,
  type CheckpointSigner,
  DEFAULT_CHECKPOINT_POLICY,
  genesisHash,
  linkHash,
  type StoredCheckpoint,
  type StreamReport,
  signCheckpoint,
  verifyStream,
} from '../../audit/chain.js';
import { TransientError } from '../../errors.js';
import { AUDIT_TABLE } from '../../infra/definitions.js';
import {
  type AuditEntry,
  type AuditLog,
  type Clock,
  safeAuditEntry,
  systemClock,
} from '../../ports/index.js';
import { awsErrorName, isTransientAwsError } from './errors.js';

/** Optional string fields of an {@link AuditEntry}, stored as attributes of the same name. */
const OPTIONAL_FIELDS = [
  'code',
  'itk3Code',
  'messageId',
  'sender',
  'recipient',
  'ruleId',
  'detail',
] as const satisfies readonly (keyof AuditEntry)[];

/** Upper bound on Query pages for one trace (1 MB each): a runaway trace must not hang a caller. */
const MAX_PAGES = 50;

/** Partition listing every chain stream (one item per stream, written with its first link). */
export const STREAMS_PARTITION = 'audit-streams';
/** Partition of one stream's links and checkpoints. */
export const streamPartition = (stream: string) => `stream#${stream}`;
const pad = (n: number) => String(n).padStart(12, '0');
export const linkKey = (n: number) => `link#${pad(n)}`;
export const checkpointKey = (n: number) => `checkpoint#${pad(n)}`;

export interface DynamoAuditChainOptions {
  /** Names the writer in its stream id (default: the Lambda function name). */
  writer?: string;
  /** Sign checkpoints with this ES256 key (KMS `Sign` deployed); without it the chain is unsigned. */
  signer?: CheckpointSigner;
  policy?: CheckpointPolicy;
}

/**
 * {@link AuditLog} on a DynamoDB table shaped like {@link AUDIT_TABLE}: partition key `traceId`,
 * sort key `sk`, TTL `expiresAt` = event time + `retentionDays`.
 *
 * The sort key is `<ISO time>#<stage>#<event>#<random>`: ISO-8601 UTC strings of one format sort
 * chronologically, so a `Query` returns a trace's events oldest first, and the random suffix keeps
 * two events of the same stage in the same millisecond from overwriting each other.
 *
 * Hash chain (docs/AUDIT.md): each instance (one per Lambda execution environment) is one stream
 * `<writer>/<uuid>`, appending one entry at a time. An append is one `TransactWriteItems`: the entry
 * item (with its `stream`, `n`, `prev`, `hash`) and a link item `stream#<id>` / `link#<n>`, each
 * written only if absent, so two writers can never both claim a position (no fork) and a failed
 * append leaves neither. Checkpoints (`checkpoint#<n>`) sign the head through the key service.
 *
 * @example
 * ```ts
 * const audit = new DynamoAuditLog(new DynamoDBClient({}), process.env.ITK3_AUDIT_TABLE!);
 * await audit.append({ traceId, at: new Date().toISOString(), stage: 'decrypt', event: 'forwarded' });
 * ```
 */
export class DynamoAuditLog implements AuditLog {
  readonly #client: DynamoDBClient;
  readonly #table: string;
  readonly #clock: Clock;
  readonly stream: string;
  readonly #signer: CheckpointSigner | undefined;
  readonly #policy: CheckpointPolicy;
  #head: { n: number; hash: string };
  #lastCheckpoint: { n: number; at: number };
  /** Appends run one at a time: the chain has one head per stream. */
  #tail: Promise<unknown> = Promise.resolve();

  constructor(
    client: DynamoDBClient,
    tableName: string = AUDIT_TABLE.name,
    clock: Clock = systemClock,
    chain: DynamoAuditChainOptions = {},
  ) {
    this.#client = client;
    this.#table = tableName;
    this.#clock = clock;
    const writer = (chain.writer ?? process.env.AWS_LAMBDA_FUNCTION_NAME ?? 'writer').replace(
      /[^A-Za-z0-9._-]/g,
      '-',
    );
    this.stream = `${writer.slice(0, 64)}/${randomUUID()}`;
    this.#signer = chain.signer;
    this.#policy = chain.policy ?? DEFAULT_CHECKPOINT_POLICY;
    this.#head = { n: 0, hash: genesisHash(this.stream) };
    this.#lastCheckpoint = { n: 0, at: clock.now() };
  }

  append(raw: AuditEntry): Promise<void> {
    const run = this.#tail.then(() => this.#append(raw));
    this.#tail = run.catch(() => undefined);
    return run;
  }

  async #append(raw: AuditEntry): Promise<void> {
    const entry = safeAuditEntry(raw);
    const parsed = Date.parse(entry.at);
    // Normalise the time so every sort key has the same format (offsets and precision vary by caller).
    const atMs = Number.isNaN(parsed) ? this.#clock.now() : parsed;
    const iso = new Date(atMs).toISOString();
    const expiresAt = { N: String(Math.floor(atMs / 1000) + AUDIT_TABLE.retentionDays * 86_400) };
    const sk = `${iso}#${entry.stage}#${entry.event}#${randomBytes(6).toString('hex')}`;
    for (let attempt = 0; ; attempt += 1) {
      const n = this.#head.n + 1;
      const prev = this.#head.hash;
      const hash = linkHash(this.stream, n, prev, entry);
      const item: Record<string, AttributeValue> = {
        [AUDIT_TABLE.partitionKey]: { S: entry.traceId },
        [AUDIT_TABLE.sortKey]: { S: sk },
        [AUDIT_TABLE.ttlAttribute]: expiresAt,
        at: { S: entry.at },
        stage: { S: entry.stage },
        event: { S: entry.event },
        stream: { S: this.stream },
        n: { N: String(n) },
        prev: { S: prev },
        hash: { S: hash },
      };
      for (const field of OPTIONAL_FIELDS) {
        const value = entry[field];
        if (value !== undefined) item[field] = { S: value };
      }
      const link: Record<string, AttributeValue> = {
        [AUDIT_TABLE.partitionKey]: { S: streamPartition(this.stream) },
        [AUDIT_TABLE.sortKey]: { S: linkKey(n) },
        [AUDIT_TABLE.ttlAttribute]: expiresAt,
        n: { N: String(n) },
        prev: { S: prev },
        hash: { S: hash },
        entryTrace: { S: entry.traceId },
        entrySk: { S: sk },
      };
      const absent = {
        ConditionExpression: 'attribute_not_exists(#p)',
        ExpressionAttributeNames: { '#p': AUDIT_TABLE.partitionKey },
      };
      const writes = [
        { Put: { TableName: this.#table, Item: item, ...absent } },
        { Put: { TableName: this.#table, Item: link, ...absent } },
        ...(n === 1
          ? [
              {
                Put: {
                  TableName: this.#table,
                  Item: {
                    [AUDIT_TABLE.partitionKey]: { S: STREAMS_PARTITION },
                    [AUDIT_TABLE.sortKey]: { S: this.stream },
                    createdAt: { S: new Date(this.#clock.now()).toISOString() },
                  },
                  ...absent,
                },
              },
            ]
          : []),
      ];
      try {
        // The token makes an SDK retry of a write that did land a no-op instead of a conflict.
        await this.#client.send(
          new TransactWriteItemsCommand({ TransactItems: writes, ClientRequestToken: hash.slice(0, 36) }),
        );
        this.#head = { n, hash };
        break;
      } catch (error) {
        // Position n is taken: an earlier append whose answer was lost. Continue from what is stored.
        if (
          attempt < 2 &&
          awsErrorName(error) === 'TransactionCanceledException' &&
          (await this.#adoptStoredHead(n))
        ) {
          continue;
        }
        throw auditError('TransactWriteItems', error);
      }
    }
    if (this.#due()) await this.checkpoint().catch(() => false);
  }

  async #adoptStoredHead(n: number): Promise<boolean> {
    const out = await this.#client.send(
      new GetItemCommand({
        TableName: this.#table,
        Key: {
          [AUDIT_TABLE.partitionKey]: { S: streamPartition(this.stream) },
          [AUDIT_TABLE.sortKey]: { S: linkKey(n) },
        },
        ConsistentRead: true,
      }),
    );
    const hash = out.Item?.hash?.S;
    if (!hash) return false;
    this.#head = { n, hash };
    return true;
  }

  #due(): boolean {
    if (!this.#signer) return false;
    const since = this.#head.n - this.#lastCheckpoint.n;
    return (
      since >= this.#policy.entries ||
      (since > 0 && this.#clock.now() - this.#lastCheckpoint.at >= this.#policy.seconds * 1000)
    );
  }

  /** Sign this stream's head and store the checkpoint. Returns whether one was written. */
  async checkpoint(): Promise<boolean> {
    const signer = this.#signer;
    const head = this.#head;
    if (!signer || head.n === 0 || head.n <= this.#lastCheckpoint.n) return false;
    const at = this.#clock.now();
    const jws = await signCheckpoint(signer, {
      stream: this.stream,
      n: head.n,
      hash: head.hash,
      at: new Date(at).toISOString(),
    });
    try {
      await this.#client.send(
        new PutItemCommand({
          TableName: this.#table,
          Item: {
            [AUDIT_TABLE.partitionKey]: { S: streamPartition(this.stream) },
            [AUDIT_TABLE.sortKey]: { S: checkpointKey(head.n) },
            n: { N: String(head.n) },
            jws: { S: jws },
          },
          ConditionExpression: 'attribute_not_exists(#p)',
          ExpressionAttributeNames: { '#p': AUDIT_TABLE.partitionKey },
        }),
      );
    } catch (error) {
      throw auditError('PutItem', error);
    }
    this.#lastCheckpoint = { n: head.n, at };
    return true;
  }

  async byTrace(traceId: string): Promise<AuditEntry[]> {
    const items = await this.#query(traceId);
    return items.map(toEntry);
  }

  /** Every item of one partition, in sort-key order (bounded, like {@link byTrace}). */
  async #query(partition: string): Promise<Record<string, AttributeValue>[]> {
    const items: Record<string, AttributeValue>[] = [];
    let startKey: Record<string, AttributeValue> | undefined;
    for (let page = 0; page < MAX_PAGES; page += 1) {
      let out: QueryCommandOutput;
      try {
        out = await this.#client.send(
          new QueryCommand({
            TableName: this.#table,
            KeyConditionExpression: '#p = :p',
            ExpressionAttributeNames: { '#p': AUDIT_TABLE.partitionKey },
            ExpressionAttributeValues: { ':p': { S: partition } },
            ScanIndexForward: true,
            ConsistentRead: true,
            ExclusiveStartKey: startKey,
          }),
        );
      } catch (error) {
        throw auditError('Query', error);
      }
      items.push(...(out.Items ?? []));
      startKey = out.LastEvaluatedKey;
      if (!startKey) break;
    }
    return items;
  }

  /** Prove every stream of the table (`itk3 audit verify --aws-outputs`). */
  async verifyAll(keys: CheckpointKeys): Promise<StreamReport[]> {
    const streams = (await this.#query(STREAMS_PARTITION)).map((i) => i[AUDIT_TABLE.sortKey]?.S ?? '');
    const reports: StreamReport[] = [];
    for (const stream of streams) reports.push(await this.verifyStream(stream, keys));
    return reports;
  }

  async verifyStream(stream: string, keys: CheckpointKeys): Promise<StreamReport> {
    const items = await this.#query(streamPartition(stream));
    const linkItems = items.filter((i) => i[AUDIT_TABLE.sortKey]?.S?.startsWith('link#'));
    const checkpoints: StoredCheckpoint[] = items
      .filter((i) => i[AUDIT_TABLE.sortKey]?.S?.startsWith('checkpoint#'))
      .map((i) => ({
        n: Number(i[AUDIT_TABLE.sortKey]!.S!.slice('checkpoint#'.length)),
        jws: i.jws?.S ?? '',
      }));
    const entries = await this.#entriesOf(linkItems);
    const missing = new Map<number, string>();
    const links: ChainLink[] = linkItems.map((i) => {
      // The position is the key the link is filed under; the hash covers it.
      const n = Number(i[AUDIT_TABLE.sortKey]!.S!.slice('link#'.length));
      const trace = i.entryTrace?.S ?? '';
      const entryItem = entries.get(`${trace}\u0000${i.entrySk?.S ?? ''}`);
      if (!entryItem) missing.set(n, trace);
      return {
        n,
        prev: i.prev?.S ?? '',
        hash: i.hash?.S ?? '',
        entry: entryItem
          ? toEntry(entryItem)
          : { traceId: trace, at: '', stage: 'operator', event: 'received' },
      };
    });
    const report = verifyStream(stream, links, checkpoints, keys);
    const at = report.break?.firstBadEntry;
    if (report.break && at !== undefined && missing.has(at)) {
      report.break = {
        stream,
        firstBadEntry: at,
        kind: 'missing',
        reason: `entry ${at} is missing (its item in trace ${missing.get(at)} is gone)`,
      };
    }
    return report;
  }

  /** The entry items the links point at, by `traceId\0sk` (BatchGetItem, 100 keys a call). */
  async #entriesOf(
    links: readonly Record<string, AttributeValue>[],
  ): Promise<Map<string, Record<string, AttributeValue>>> {
    const found = new Map<string, Record<string, AttributeValue>>();
    let pending = links.map((l) => ({
      [AUDIT_TABLE.partitionKey]: { S: l.entryTrace?.S ?? '' },
      [AUDIT_TABLE.sortKey]: { S: l.entrySk?.S ?? '' },
    }));
    for (let round = 0; pending.length > 0 && round < 1000; round += 1) {
      const batch = pending.slice(0, 100);
      pending = pending.slice(100);
      let out: BatchGetItemCommandOutput;
      try {
        out = await this.#client.send(
          new BatchGetItemCommand({ RequestItems: { [this.#table]: { Keys: batch, ConsistentRead: true } } }),
        );
      } catch (error) {
        throw auditError('BatchGetItem', error);
      }
      for (const item of out.Responses?.[this.#table] ?? []) {
        found.set(`${item[AUDIT_TABLE.partitionKey]?.S}\u0000${item[AUDIT_TABLE.sortKey]?.S}`, item);
      }
      pending.push(...((out.UnprocessedKeys?.[this.#table]?.Keys ?? []) as typeof pending));
    }
    return found;
  }
}

function toEntry(item: Record<string, AttributeValue>): AuditEntry {
  const entry: AuditEntry = {
    traceId: item[AUDIT_TABLE.partitionKey]?.S ?? '',
    at: item.at?.S ?? '',
    stage: (item.stage?.S ?? 'operator') as AuditEntry['stage'],
    event: (item.event?.S ?? 'received') as AuditEntry['event'],
  };
  for (const field of OPTIONAL_FIELDS) {
    const value = item[field]?.S;
    if (value !== undefined) entry[field] = value;
  }
  return entry;
}

function auditError(operation: string, error: unknown): TransientError {
  const kind = isTransientAwsError(error) ? 'unavailable' : 'failed';
  return new TransientError(
    'AUDIT_UNAVAILABLE',
    `DynamoDB ${operation} ${kind} (${awsErrorName(error) ?? 'unknown error'})`,
    {
      cause: error,
    },
  );
}
