/**
 * A DynamoDB table in memory behind aws-sdk-client-mock that evaluates exactly the two conditional
 * writes of `DynamoLease` (and refuses any other expression), so lease tests exercise the adapter's
 * real requests and their outcomes. The same requests run against ministack in
 * test/integration/mesh-poller-aws.test.ts.
 */
import {
  type AttributeValue,
  ConditionalCheckFailedException,
  DeleteItemCommand,
  DynamoDBClient,
  PutItemCommand,
} from '@aws-sdk/client-dynamodb';
import { mockClient } from 'aws-sdk-client-mock';

export const ACQUIRE_CONDITION = 'attribute_not_exists(#k) OR #t <= :now OR #v = :owner';
export const RELEASE_CONDITION = '#v = :owner';

export function leaseTable() {
  const items = new Map<string, Record<string, AttributeValue>>();
  const ddb = mockClient(DynamoDBClient);
  const refuse = (old: Record<string, AttributeValue> | undefined) =>
    new ConditionalCheckFailedException({
      message: 'The conditional request failed',
      $metadata: { httpStatusCode: 400 },
      ...(old ? { Item: old } : {}),
    });
  ddb.on(PutItemCommand).callsFake((input) => {
    if (input.ConditionExpression !== ACQUIRE_CONDITION) throw new Error('unexpected condition');
    const key = input.Item.k.S as string;
    const old = items.get(key);
    const now = Number(input.ExpressionAttributeValues[':now'].N);
    const owner = input.ExpressionAttributeValues[':owner'].S;
    const free = !old || Number(old.expiresAt?.N) <= now || old.v?.S === owner;
    if (!free) throw refuse(input.ReturnValuesOnConditionCheckFailure === 'ALL_OLD' ? old : undefined);
    items.set(key, input.Item);
    return {};
  });
  ddb.on(DeleteItemCommand).callsFake((input) => {
    if (input.ConditionExpression !== RELEASE_CONDITION) throw new Error('unexpected condition');
    const key = input.Key.k.S as string;
    const old = items.get(key);
    if (!old || old.v?.S !== input.ExpressionAttributeValues[':owner'].S) throw refuse(undefined);
    items.delete(key);
    return {};
  });
  return { ddb, items, client: new DynamoDBClient({ region: 'eu-west-2' }) };
}
