import { randomBytes, randomUUID } from 'node:crypto';
import {
  type AttributeValue,
  ConditionalCheckFailedException,
  type DynamoDBClient,
  PutItemCommand,
  QueryCommand,
  type QueryCommandOutput,
  ScanCommand,
  type ScanCommandOutput,
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
  onceMarker,
  safeAuditEntry,
  systemClock,
} from '../../ports/index.js';
import { awsErrorName, isTransientAwsError } from './errors.js';

/** Optional string fields of an {@link AuditEntry} (attributes of the same name in the one-entry items written before). */
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

/** Partition of one stream's checkpoints. */
export const streamPartition = (stream: string) => `stream#${stream}`;
const pad = (n: number) => String(n).padStart(12, '0');
export const checkpointKey = (n: number) => `checkpoint#${pad(n)}`;
/** Sort key of the item {@link DynamoAuditLog.appendOnce} writes: the marker is the key. */
export const onceKey = (once: string) => `once#${once}`;

export interface DynamoAuditChainOptions {
  /** Names the writer in its stream id (default: the Lambda function name). */
  writer?: string;
  /** Sign checkpoints with this ES256 key (KMS `Sign` deployed); without it the chain is unsigned. */
  signer?: CheckpointSigner;
  policy?: CheckpointPolicy;
}

/** One stored audit item read back: its entries, where they sit in their stream, and their hashes. */
interface StoredItem {
  traceId: string;
  stream?: string;
  /** Position of the first entry. */
  n?: number;
  /** The hash before the first entry. */
  prev?: string;
  /** One per entry. */
  hashes: string[];
  entries: AuditEntry[];
  /** The item's entries could not be read (an altered `entries` attribute). */
  unreadable?: boolean;
}

/**
 * {@link AuditLog} on a DynamoDB table shaped like {@link AUDIT_TABLE}: partition key `traceId`,
 * sort key `sk`, TTL `expiresAt` = event time + `retentionDays`.
 *
 * **One write per item.** An item holds one or more entries of one trace (`entries`, JSON without
 * the trace id, which is the partition key) and is written by one conditional `PutItem`
 * (`attribute_not_exists`): an `append` under `<ISO time>#<stage>#<event>#<random>`, an
 * `appendOnce` under `once#<marker>`, so the marker and the outcome's entries are one item — the
 * condition is the once-check, and a redelivery writes nothing. Readers expand items into entries,
 * oldest first.
 *
 * **Hash chain without a transaction** (docs/AUDIT.md): each instance (one per Lambda execution
 * environment) is one stream `<writer>/<uuid>` and appends one item at a time; each entry has its
 * position `n` and hash in the stream, stored in its item (`stream`, `n` of the first entry, `prev`,
 * `hashes`). Nobody else writes a stream, so no position can be claimed twice by two writers; a
 * write whose answer was lost and that the SDK retried is recognised as this stream's own (same
 * stream and position), and a write whose fate is unknown ends the stream — the next append starts
 * a new one — so a lost write can leave a stream one entry longer, never forked. `verify` reads the
 * table (`Scan`), regroups the entries by stream and position, and judges them as before;
 * checkpoints (`stream#<id>` / `checkpoint#<n>`) sign a stream's head through the key service.
 *
 * @example
 * ```ts
 * const audit = new DynamoAuditLog(new DynamoDBClient({}), process.env.ITK3_AUDIT_TABLE!);
 * await audit.appendOnce('deliver#delivered', [{ traceId, at, stage: 'deliver', event: 'delivered' }]);
 * ```
 */
export class DynamoAuditLog implements AuditLog {
  readonly #client: DynamoDBClient;
  readonly #table: string;
  readonly #clock: Clock;
  readonly #writer: string;
  readonly #signer: CheckpointSigner | undefined;
  readonly #policy: CheckpointPolicy;
  #stream: string;
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
    this.#writer = (chain.writer ?? process.env.AWS_LAMBDA_FUNCTION_NAME ?? 'writer')
      .replace(/[^A-Za-z0-9._-]/g, '-')
      .slice(0, 64);
    this.#signer = chain.signer;
    this.#policy = chain.policy ?? DEFAULT_CHECKPOINT_POLICY;
    this.#stream = '';
    this.#head = { n: 0, hash: '' };
    this.#lastCheckpoint = { n: 0, at: clock.now() };
    this.#newStream();
  }

  /** The stream this instance appends to now (a new one after a write whose fate is unknown). */
  get stream(): string {
    return this.#stream;
  }

  #newStream(): void {
    this.#stream = `${this.#writer}/${randomUUID()}`;
    this.#head = { n: 0, hash: genesisHash(this.#stream) };
    this.#lastCheckpoint = { n: 0, at: this.#clock.now() };
  }

  append(raw: AuditEntry): Promise<void> {
    return this.#serially(async () => {
      const entry = safeAuditEntry(raw);
      const sk = `${isoOf(entry.at, this.#clock)}#${entry.stage}#${entry.event}#${randomBytes(6).toString('hex')}`;
      await this.#put(sk, [entry], false);
    });
  }

  appendOnce(once: string, raws: readonly AuditEntry[]): Promise<boolean> {
    return this.#serially(async () => {
      onceMarker(raws, once);
      return this.#put(onceKey(once), raws.map(safeAuditEntry), true);
    });
  }

  #serially<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#tail.then(fn);
    this.#tail = run.catch(() => undefined);
    return run;
  }

  /**
   * Write one item holding `entries` as the next positions of this stream, only if its key is free.
   * Returns false when the key was taken by an earlier write that is not this stream's own (an
   * `appendOnce` whose outcome was recorded before).
   */
  async #put(sk: string, entries: readonly AuditEntry[], once: boolean): Promise<boolean> {
    const traceId = entries[0]!.traceId;
    const first = this.#head.n + 1;
    const prev = this.#head.hash;
    const hashes: string[] = [];
    let before = prev;
    for (const [i, entry] of entries.entries()) {
      before = linkHash(this.#stream, first + i, before, entry);
      hashes.push(before);
    }
    const latest = Math.max(...entries.map((e) => Date.parse(isoOf(e.at, this.#clock))));
    const item: Record<string, AttributeValue> = {
      [AUDIT_TABLE.partitionKey]: { S: traceId },
      [AUDIT_TABLE.sortKey]: { S: sk },
      [AUDIT_TABLE.ttlAttribute]: {
        N: String(Math.floor(latest / 1000) + AUDIT_TABLE.retentionDays * 86_400),
      },
      entries: { S: JSON.stringify(entries.map(({ traceId: _, ...rest }) => rest)) },
      stream: { S: this.#stream },
      n: { N: String(first) },
      prev: { S: prev },
      hashes: { L: hashes.map((h) => ({ S: h })) },
    };
    try {
      await this.#client.send(
        new PutItemCommand({
          TableName: this.#table,
          Item: item,
          ConditionExpression: 'attribute_not_exists(#p)',
          ExpressionAttributeNames: { '#p': AUDIT_TABLE.partitionKey },
          ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
        }),
      );
    } catch (error) {
      if (!isConditionFailure(error)) {
        // The write may have landed without its answer: this stream's next position is uncertain,
        // so the stream ends here (it stays provable either way) and the next append starts another.
        this.#newStream();
        throw auditError('PutItem', error);
      }
      let stored: Record<string, AttributeValue> | undefined;
      try {
        stored = error.Item ?? (await this.#read(traceId, sk));
      } catch (readError) {
        // Whether the item is this stream's own cannot be told: end the stream, as above.
        this.#newStream();
        throw readError;
      }
      const own = stored?.stream?.S === this.#stream && stored.n?.N === String(first);
      if (!own) {
        if (once) return false;
        throw auditError('PutItem', error);
      }
      // Our own write, landed on an earlier attempt the SDK retried: it counts as done.
    }
    this.#head = { n: first + entries.length - 1, hash: hashes.at(-1)! };
    if (this.#due()) await this.checkpoint().catch(() => false);
    return true;
  }

  /** The stored item at a key (emulators that do not return it with a failed condition). */
  async #read(traceId: string, sk: string): Promise<Record<string, AttributeValue> | undefined> {
    try {
      const out = await this.#client.send(
        new QueryCommand({
          TableName: this.#table,
          KeyConditionExpression: '#p = :p AND #s = :s',
          ExpressionAttributeNames: { '#p': AUDIT_TABLE.partitionKey, '#s': AUDIT_TABLE.sortKey },
          ExpressionAttributeValues: { ':p': { S: traceId }, ':s': { S: sk } },
          ConsistentRead: true,
        }),
      );
      return out.Items?.[0];
    } catch (error) {
      throw auditError('Query', error);
    }
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
    const stream = this.#stream;
    if (!signer || head.n === 0 || head.n <= this.#lastCheckpoint.n) return false;
    const at = this.#clock.now();
    const jws = await signCheckpoint(signer, {
      stream,
      n: head.n,
      hash: head.hash,
      at: new Date(at).toISOString(),
    });
    try {
      await this.#client.send(
        new PutItemCommand({
          TableName: this.#table,
          Item: {
            [AUDIT_TABLE.partitionKey]: { S: streamPartition(stream) },
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
    if (stream === this.#stream) this.#lastCheckpoint = { n: head.n, at };
    return true;
  }

  /** Entries of one trace, oldest first (items expanded; one item's entries keep their order). */
  async byTrace(traceId: string): Promise<AuditEntry[]> {
    const entries = (await this.#query(traceId)).flatMap((item) => storedItem(item).entries);
    // Stable: entries of the same time keep their stored order.
    return entries
      .map((entry, i) => ({ entry, i, t: Date.parse(entry.at) }))
      .sort((a, b) => (a.t === b.t || Number.isNaN(a.t - b.t) ? a.i - b.i : a.t - b.t))
      .map((x) => x.entry);
  }

  /** Every item of one partition, in sort-key order (bounded). */
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

  /**
   * Prove every stream of the table (`itk3 audit verify --aws-outputs`): one consistent `Scan` of
   * the whole table (an operator's read, paid per MB read, none of it on the message path), the
   * entries regrouped by stream and position, every stream judged with its checkpoints.
   */
  async verifyAll(keys: CheckpointKeys): Promise<StreamReport[]> {
    const links = new Map<string, ChainLink[]>();
    const checkpoints = new Map<string, StoredCheckpoint[]>();
    const unreadable = new Map<string, Map<number, string>>();
    const linksOf = (stream: string) => {
      const list = links.get(stream) ?? [];
      links.set(stream, list);
      return list;
    };
    for await (const item of this.#scan()) {
      const pk = item[AUDIT_TABLE.partitionKey]?.S ?? '';
      const sk = item[AUDIT_TABLE.sortKey]?.S ?? '';
      if (pk.startsWith('stream#')) {
        // Checkpoints; link items of the transactional layout before this one are not needed.
        if (!sk.startsWith('checkpoint#')) continue;
        const stream = pk.slice('stream#'.length);
        const list = checkpoints.get(stream) ?? [];
        list.push({ n: Number(sk.slice('checkpoint#'.length)), jws: item.jws?.S ?? '' });
        checkpoints.set(stream, list);
        linksOf(stream);
        continue;
      }
      const stored = storedItem(item);
      if (stored.stream === undefined || stored.n === undefined) continue; // written before the chain
      const list = linksOf(stored.stream);
      if (stored.unreadable) {
        const bad = unreadable.get(stored.stream) ?? new Map<number, string>();
        bad.set(stored.n, stored.traceId);
        unreadable.set(stored.stream, bad);
      }
      let prev = stored.prev ?? '';
      for (const [i, hash] of stored.hashes.entries()) {
        const entry = stored.entries[i] ?? {
          traceId: stored.traceId,
          at: '',
          stage: 'operator',
          event: 'received',
        };
        list.push({ n: stored.n + i, prev, hash, entry });
        prev = hash;
      }
    }
    const reports: StreamReport[] = [];
    for (const [stream, list] of [...links].sort(([a], [b]) => (a < b ? -1 : 1))) {
      list.sort((a, b) => a.n - b.n);
      const report = verifyStream(stream, list, checkpoints.get(stream) ?? [], keys);
      const at = report.break?.firstBadEntry;
      const trace = at === undefined ? undefined : unreadable.get(stream)?.get(at);
      if (report.break && trace !== undefined) {
        report.break.reason = `the item of trace ${trace} holding entry ${at} is unreadable (altered)`;
      }
      reports.push(report);
    }
    return reports;
  }

  /** Every item of the table, page by page (a consistent read). */
  async *#scan(): AsyncGenerator<Record<string, AttributeValue>> {
    let startKey: Record<string, AttributeValue> | undefined;
    do {
      let out: ScanCommandOutput;
      try {
        out = await this.#client.send(
          new ScanCommand({ TableName: this.#table, ConsistentRead: true, ExclusiveStartKey: startKey }),
        );
      } catch (error) {
        throw auditError('Scan', error);
      }
      yield* out.Items ?? [];
      startKey = out.LastEvaluatedKey;
    } while (startKey);
  }
}

/** Normalise a time so every sort key has the same format (offsets and precision vary by caller). */
function isoOf(at: string, clock: Clock): string {
  const parsed = Date.parse(at);
  return new Date(Number.isNaN(parsed) ? clock.now() : parsed).toISOString();
}

const REQUIRED_FIELDS = ['at', 'stage', 'event'] as const;

/** An item as entries, in both layouts: one item of several entries, or one entry per item (before). */
function storedItem(item: Record<string, AttributeValue>): StoredItem {
  const traceId = item[AUDIT_TABLE.partitionKey]?.S ?? '';
  const chained = {
    traceId,
    ...(item.stream?.S !== undefined ? { stream: item.stream.S } : {}),
    ...(item.n?.N !== undefined ? { n: Number(item.n.N) } : {}),
    ...(item.prev?.S !== undefined ? { prev: item.prev.S } : {}),
  };
  if (item.entries?.S === undefined) {
    return { ...chained, hashes: item.hash?.S !== undefined ? [item.hash.S] : [], entries: [toEntry(item)] };
  }
  const hashes = (item.hashes?.L ?? []).map((h) => h.S ?? '');
  let parsed: unknown;
  try {
    parsed = JSON.parse(item.entries.S);
  } catch {
    parsed = undefined;
  }
  // Every field a string (the hash covers them all, unknown ones included); the trace id is the key's.
  const valid =
    Array.isArray(parsed) &&
    parsed.every(
      (e): e is Record<string, string> =>
        e !== null &&
        typeof e === 'object' &&
        !Array.isArray(e) &&
        REQUIRED_FIELDS.every((k) => k in e) &&
        !('traceId' in e) &&
        Object.values(e).every((v) => typeof v === 'string'),
    );
  if (!valid) return { ...chained, hashes, entries: [], unreadable: true };
  return {
    ...chained,
    hashes,
    entries: (parsed as Record<string, string>[]).map((e) => ({ traceId, ...e }) as unknown as AuditEntry),
  };
}

function isConditionFailure(error: unknown): error is ConditionalCheckFailedException {
  return (
    error instanceof ConditionalCheckFailedException ||
    awsErrorName(error) === 'ConditionalCheckFailedException'
  );
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
