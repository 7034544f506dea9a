import { randomBytes } from 'node:crypto';
import {
  type AttributeValue,
  type DynamoDBClient,
  PutItemCommand,
  QueryCommand,
  type QueryCommandOutput,
} from '@aws-sdk/client-dynamodb';
import { TransientError } from '../../errors.js';
import { AUDIT_TABLE } from '../../infra/definitions.js';
import {
  type AuditEntry,
  type AuditLog,
  type Clock,
  safeAuditEntry,
  systemClock,
} from '../../ports/index.js';
import { countCall } from './calls.js';
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

/**
 * {@link AuditLog} on a DynamoDB table shaped like {@link AUDIT_TABLE}: partition key `traceId`,
 * sort key `sk`, TTL `expiresAt` = event time + `retentionDays`.
 *
 * The sort key is `<ISO time>#<stage>#<event>#<random>`: ISO-8601 UTC strings of one format sort
 * chronologically, so a `Query` returns a trace's events oldest first, and the random suffix keeps
 * two events of the same stage in the same millisecond from overwriting each other.
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

  constructor(client: DynamoDBClient, tableName: string = AUDIT_TABLE.name, clock: Clock = systemClock) {
    this.#client = client;
    this.#table = tableName;
    this.#clock = clock;
  }

  async append(raw: AuditEntry): Promise<void> {
    const entry = safeAuditEntry(raw);
    const parsed = Date.parse(entry.at);
    // Normalise the time so every sort key has the same format (offsets and precision vary by caller).
    const atMs = Number.isNaN(parsed) ? this.#clock.now() : parsed;
    const iso = new Date(atMs).toISOString();
    const item: Record<string, AttributeValue> = {
      [AUDIT_TABLE.partitionKey]: { S: entry.traceId },
      [AUDIT_TABLE.sortKey]: { S: `${iso}#${entry.stage}#${entry.event}#${randomBytes(6).toString('hex')}` },
      [AUDIT_TABLE.ttlAttribute]: {
        N: String(Math.floor(atMs / 1000) + AUDIT_TABLE.retentionDays * 86_400),
      },
      at: { S: entry.at },
      stage: { S: entry.stage },
      event: { S: entry.event },
    };
    for (const field of OPTIONAL_FIELDS) {
      const value = entry[field];
      if (value !== undefined) item[field] = { S: value };
    }
    countCall('dynamodb', 'PutItem');
    try {
      await this.#client.send(new PutItemCommand({ TableName: this.#table, Item: item }));
    } catch (error) {
      throw auditError('PutItem', error);
    }
  }

  async byTrace(traceId: string): Promise<AuditEntry[]> {
    const entries: AuditEntry[] = [];
    let startKey: Record<string, AttributeValue> | undefined;
    for (let page = 0; page < MAX_PAGES; page += 1) {
      countCall('dynamodb', 'Query');
      let out: QueryCommandOutput;
      try {
        out = await this.#client.send(
          new QueryCommand({
            TableName: this.#table,
            KeyConditionExpression: '#p = :p',
            ExpressionAttributeNames: { '#p': AUDIT_TABLE.partitionKey },
            ExpressionAttributeValues: { ':p': { S: traceId } },
            ScanIndexForward: true,
            ConsistentRead: true,
            ExclusiveStartKey: startKey,
          }),
        );
      } catch (error) {
        throw auditError('Query', error);
      }
      for (const item of out.Items ?? []) entries.push(toEntry(item));
      startKey = out.LastEvaluatedKey;
      if (!startKey) break;
    }
    return entries;
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
