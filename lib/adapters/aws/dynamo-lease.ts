import {
  type AttributeValue,
  ConditionalCheckFailedException,
  DeleteItemCommand,
  type DynamoDBClient,
  PutItemCommand,
} from '@aws-sdk/client-dynamodb';
import { TransientError } from '../../errors.js';
import { ONCE_TABLE } from '../../infra/definitions.js';
import { type Clock, systemClock } from '../../ports/index.js';
import { awsErrorName, isTransientAwsError } from './errors.js';

/** A lease this process holds until `expiresAtSeconds` (epoch seconds) unless it releases it first. */
export interface HeldLease {
  readonly name: string;
  readonly owner: string;
  readonly expiresAtSeconds: number;
}

export type LeaseAttempt =
  | { acquired: true; lease: HeldLease }
  /** Someone else holds it; `holder` and `expiresAtSeconds` when the table told us (it may not). */
  | { acquired: false; holder?: string; expiresAtSeconds?: number };

/**
 * A named lease (a lock that expires) on a DynamoDB table shaped like {@link ONCE_TABLE}: partition
 * key `k`, holder in `v`, expiry in the TTL attribute `expiresAt` (epoch seconds).
 *
 * - **acquire** is one conditional `PutItem`: it succeeds when no item exists, when the item's lease
 *   has expired (a holder that crashed never released it; DynamoDB's TTL sweep is eventual, so the
 *   condition reads the time itself), or when the caller already holds it (a renewal).
 * - **release** is one conditional `DeleteItem` that deletes only the caller's own lease: a holder
 *   that overran its lease and lost it to a successor cannot delete the successor's.
 *
 * The lease items share the once-store table under their own key prefix (the MESH poller uses
 * `lease#mesh#<mailbox>`), which IAM can confine with `dynamodb:LeadingKeys`.
 *
 * @example
 * ```ts
 * const leases = new DynamoLease(new DynamoDBClient({}), process.env.ITK3_ONCE_TABLE!);
 * const got = await leases.acquire('lease#mesh#X26ABC1', context.awsRequestId, 360);
 * if (got.acquired) try { ... } finally { await leases.release(got.lease); }
 * ```
 */
export class DynamoLease {
  readonly #client: DynamoDBClient;
  readonly #table: string;
  readonly #clock: Clock;

  constructor(client: DynamoDBClient, tableName: string = ONCE_TABLE.name, clock: Clock = systemClock) {
    this.#client = client;
    this.#table = tableName;
    this.#clock = clock;
  }

  /** Take (or renew) the lease `name` for `owner` for `ttlSeconds` from now. */
  async acquire(name: string, owner: string, ttlSeconds: number): Promise<LeaseAttempt> {
    if (!(Number.isInteger(ttlSeconds) && ttlSeconds > 0)) {
      throw new RangeError('lease ttlSeconds must be a positive whole number');
    }
    const nowSeconds = Math.floor(this.#clock.now() / 1000);
    const expiresAtSeconds = nowSeconds + ttlSeconds;
    const item: Record<string, AttributeValue> = {
      [ONCE_TABLE.partitionKey]: { S: name },
      [ONCE_TABLE.valueAttribute]: { S: owner },
      [ONCE_TABLE.ttlAttribute]: { N: String(expiresAtSeconds) },
    };
    try {
      await this.#client.send(
        new PutItemCommand({
          TableName: this.#table,
          Item: item,
          ConditionExpression: 'attribute_not_exists(#k) OR #t <= :now OR #v = :owner',
          ExpressionAttributeNames: {
            '#k': ONCE_TABLE.partitionKey,
            '#t': ONCE_TABLE.ttlAttribute,
            '#v': ONCE_TABLE.valueAttribute,
          },
          ExpressionAttributeValues: { ':now': { N: String(nowSeconds) }, ':owner': { S: owner } },
          ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
        }),
      );
      return { acquired: true, lease: { name, owner, expiresAtSeconds } };
    } catch (error) {
      if (!isConditionFailure(error)) throw leaseError('PutItem', error);
      const holder = error.Item?.[ONCE_TABLE.valueAttribute]?.S;
      const until = Number(error.Item?.[ONCE_TABLE.ttlAttribute]?.N);
      return {
        acquired: false,
        ...(holder !== undefined ? { holder } : {}),
        ...(Number.isFinite(until) ? { expiresAtSeconds: until } : {}),
      };
    }
  }

  /**
   * Give the lease back. `true` when it was ours and is gone; `false` when it was not ours any more
   * (it expired and someone else took it, or it is already gone): nothing is deleted then.
   */
  async release(lease: HeldLease): Promise<boolean> {
    try {
      await this.#client.send(
        new DeleteItemCommand({
          TableName: this.#table,
          Key: { [ONCE_TABLE.partitionKey]: { S: lease.name } },
          ConditionExpression: '#v = :owner',
          ExpressionAttributeNames: { '#v': ONCE_TABLE.valueAttribute },
          ExpressionAttributeValues: { ':owner': { S: lease.owner } },
        }),
      );
      return true;
    } catch (error) {
      if (isConditionFailure(error)) return false;
      throw leaseError('DeleteItem', error);
    }
  }
}

function isConditionFailure(error: unknown): error is ConditionalCheckFailedException {
  return (
    error instanceof ConditionalCheckFailedException ||
    awsErrorName(error) === 'ConditionalCheckFailedException'
  );
}

function leaseError(operation: string, error: unknown): TransientError {
  const kind = isTransientAwsError(error) ? 'unavailable' : 'failed';
  return new TransientError(
    'STORE_UNAVAILABLE',
    `DynamoDB ${operation} of a lease ${kind} (${awsErrorName(error) ?? 'unknown error'})`,
    { cause: error },
  );
}
