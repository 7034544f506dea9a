import {
  type AttributeValue,
  ConditionalCheckFailedException,
  type DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
} from '@aws-sdk/client-dynamodb';
import { TransientError } from '../../errors.js';
import { ONCE_TABLE } from '../../infra/definitions.js';
import { type Clock, type OnceStore, systemClock } from '../../ports/index.js';
import { awsErrorName, isTransientAwsError } from './errors.js';

/**
 * {@link OnceStore} on a DynamoDB table shaped like {@link ONCE_TABLE}: partition key `k`, value `v`,
 * TTL attribute `expiresAt` (epoch seconds).
 *
 * One conditional `PutItem` per call. The condition also accepts an item whose `expiresAt` has
 * passed: DynamoDB deletes expired items only eventually (typically within days), and an expired key
 * must behave as absent, as in the local store. On a failed condition the existing value comes back
 * through `ReturnValuesOnConditionCheckFailure: 'ALL_OLD'`; an emulator that does not return it costs
 * one extra consistent `GetItem`.
 *
 * @example
 * ```ts
 * const once = new DynamoOnceStore(new DynamoDBClient({}), process.env.ITK3_ONCE_TABLE!);
 * const r = await once.putIfAbsent(`jti:${jti}`, traceId, 600);
 * ```
 */
export class DynamoOnceStore implements OnceStore {
  readonly #client: DynamoDBClient;
  readonly #table: string;
  readonly #clock: Clock;

  constructor(client: DynamoDBClient, tableName: string = ONCE_TABLE.name, clock: Clock = systemClock) {
    this.#client = client;
    this.#table = tableName;
    this.#clock = clock;
  }

  async putIfAbsent(
    key: string,
    value: string,
    ttlSeconds: number,
  ): Promise<{ created: true } | { created: false; existing: string }> {
    // An item deleted between the failed put and the read (TTL sweep) is retried, a bounded number of times.
    for (let attempt = 0; attempt < 3; attempt += 1) {
      const nowSeconds = Math.floor(this.#clock.now() / 1000);
      const item: Record<string, AttributeValue> = {
        [ONCE_TABLE.partitionKey]: { S: key },
        [ONCE_TABLE.valueAttribute]: { S: value },
        [ONCE_TABLE.ttlAttribute]: { N: String(nowSeconds + Math.max(1, Math.ceil(ttlSeconds))) },
      };
      try {
        await this.#client.send(
          new PutItemCommand({
            TableName: this.#table,
            Item: item,
            ConditionExpression: 'attribute_not_exists(#k) OR #t <= :now',
            ExpressionAttributeNames: { '#k': ONCE_TABLE.partitionKey, '#t': ONCE_TABLE.ttlAttribute },
            ExpressionAttributeValues: { ':now': { N: String(nowSeconds) } },
            ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
          }),
        );
        return { created: true };
      } catch (error) {
        if (!isConditionFailure(error)) throw storeError('PutItem', error);
        const existing = error.Item?.[ONCE_TABLE.valueAttribute]?.S ?? (await this.#read(key));
        if (existing !== undefined) return { created: false, existing };
      }
    }
    throw new TransientError('STORE_UNAVAILABLE', 'once-store key kept changing under a conditional write');
  }

  async #read(key: string): Promise<string | undefined> {
    try {
      const out = await this.#client.send(
        new GetItemCommand({
          TableName: this.#table,
          Key: { [ONCE_TABLE.partitionKey]: { S: key } },
          ConsistentRead: true,
        }),
      );
      return out.Item?.[ONCE_TABLE.valueAttribute]?.S;
    } catch (error) {
      throw storeError('GetItem', error);
    }
  }
}

function isConditionFailure(error: unknown): error is ConditionalCheckFailedException {
  return (
    error instanceof ConditionalCheckFailedException ||
    awsErrorName(error) === 'ConditionalCheckFailedException'
  );
}

/** Throttling and 5xx are transient by definition; anything else (missing table, validation) is a
 * deployment fault, also worth a retry after the fix rather than a rejected message. */
function storeError(operation: string, error: unknown): TransientError {
  const kind = isTransientAwsError(error) ? 'unavailable' : 'failed';
  return new TransientError(
    'STORE_UNAVAILABLE',
    `DynamoDB ${operation} ${kind} (${awsErrorName(error) ?? 'unknown error'})`,
    {
      cause: error,
    },
  );
}
