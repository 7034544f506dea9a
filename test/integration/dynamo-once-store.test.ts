import { GetItemCommand, PutItemCommand } from '@aws-sdk/client-dynamodb';
import { afterAll, beforeAll, expect } from 'vitest';
import { awsCalls, resetAwsCalls } from '../../lib/adapters/aws/calls.js';
import { DynamoOnceStore } from '../../lib/adapters/aws/dynamo-once-store.js';
import { ONCE_TABLE } from '../../lib/infra/definitions.js';
import { describeEachEmulator } from './support/emulators.js';
import { createTable, deleteTable } from './support/tables.js';

describeEachEmulator('DynamoOnceStore', ({ clients, unique, gap, itUnless }) => {
  const table = unique('once');
  let now = Date.UTC(2026, 0, 1);
  const clock = { now: () => now };
  const once = new DynamoOnceStore(clients.dynamodb, table, clock);

  beforeAll(async () => {
    if (!gap('dynamodb')) await createTable(clients, table, 'once');
  });

  afterAll(async () => {
    if (!gap('dynamodb')) await deleteTable(clients, table);
  });

  itUnless('dynamodb', 'writes once, and returns the stored value on the second write', async () => {
    resetAwsCalls();

    const first = await once.putIfAbsent('jti:abc', 'trace-1', 600);
    const second = await once.putIfAbsent('jti:abc', 'trace-2', 600);

    expect(first).toEqual({ created: true });
    expect(second).toEqual({ created: false, existing: 'trace-1' });
    // ALL_OLD on the failed condition returned the item: no extra read.
    expect(awsCalls.dynamodb).toEqual({ PutItem: 2 });
  });

  itUnless('dynamodb', 'sets the TTL attribute to now + ttlSeconds, in epoch seconds', async () => {
    await once.putIfAbsent('msg:ttl', 'v', 3600);

    const { Item } = await clients.dynamodb.send(
      new GetItemCommand({
        TableName: table,
        Key: { [ONCE_TABLE.partitionKey]: { S: 'msg:ttl' } },
        ConsistentRead: true,
      }),
    );

    expect(Item?.[ONCE_TABLE.ttlAttribute]?.N).toBe(String(Math.floor(now / 1000) + 3600));
    expect(Item?.[ONCE_TABLE.valueAttribute]?.S).toBe('v');
  });

  itUnless('dynamodb', 'treats an expired key that TTL has not swept yet as absent', async () => {
    await once.putIfAbsent('jti:expiring', 'old', 60);
    now += 61_000;

    const again = await once.putIfAbsent('jti:expiring', 'new', 60);
    const third = await once.putIfAbsent('jti:expiring', 'newer', 60);

    expect(again).toEqual({ created: true });
    expect(third).toEqual({ created: false, existing: 'new' });
  });

  itUnless('dynamodb', 'keeps an item without a TTL attribute for ever', async () => {
    await clients.dynamodb.send(
      new PutItemCommand({
        TableName: table,
        Item: { [ONCE_TABLE.partitionKey]: { S: 'doc:1' }, [ONCE_TABLE.valueAttribute]: { S: 'theirs' } },
      }),
    );

    expect(await once.putIfAbsent('doc:1', 'mine', 60)).toEqual({ created: false, existing: 'theirs' });
  });
});
