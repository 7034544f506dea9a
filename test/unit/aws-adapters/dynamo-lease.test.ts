import { DeleteItemCommand, PutItemCommand } from '@aws-sdk/client-dynamodb';
import { afterEach, describe, expect, it } from 'vitest';
import { DynamoLease } from '../../../lib/adapters/aws/dynamo-lease.js';
import { TransientError } from '../../../lib/errors.js';
import { serviceError } from './faults.js';
import { ACQUIRE_CONDITION, leaseTable, RELEASE_CONDITION } from './lease-table.js';

const T0 = 1_796_284_800_000; // 2026-12-03T08:00:00Z
const NAME = 'lease#mesh#X26ABC1';

function world() {
  const table = leaseTable();
  let now = T0;
  const clock = { now: () => now };
  return {
    ...table,
    leases: new DynamoLease(table.client, 'itk3-once', clock),
    advance: (seconds: number) => {
      now += seconds * 1000;
    },
  };
}

let current: ReturnType<typeof world> | undefined;
afterEach(() => current?.ddb.restore());
const fresh = () => {
  current = world();
  return current;
};

describe('DynamoLease', () => {
  it('acquires with one conditional PutItem: holder, expiry in the TTL attribute, ALL_OLD on refusal', async () => {
    const w = fresh();
    const got = await w.leases.acquire(NAME, 'request-a', 330);
    expect(got).toEqual({
      acquired: true,
      lease: { name: NAME, owner: 'request-a', expiresAtSeconds: T0 / 1000 + 330 },
    });
    expect(w.ddb.commandCalls(PutItemCommand)[0]?.args[0].input).toEqual({
      TableName: 'itk3-once',
      Item: { k: { S: NAME }, v: { S: 'request-a' }, expiresAt: { N: String(T0 / 1000 + 330) } },
      ConditionExpression: ACQUIRE_CONDITION,
      ExpressionAttributeNames: { '#k': 'k', '#t': 'expiresAt', '#v': 'v' },
      ExpressionAttributeValues: { ':now': { N: String(T0 / 1000) }, ':owner': { S: 'request-a' } },
      ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
    });
  });

  it('refuses a second holder while the lease runs, naming the holder and its expiry', async () => {
    const w = fresh();
    await w.leases.acquire(NAME, 'request-a', 330);
    w.advance(329);
    expect(await w.leases.acquire(NAME, 'request-b', 330)).toEqual({
      acquired: false,
      holder: 'request-a',
      expiresAtSeconds: T0 / 1000 + 330,
    });
    // Another mailbox is another lease.
    expect((await w.leases.acquire('lease#mesh#X26ABC2', 'request-b', 330)).acquired).toBe(true);
  });

  it('lets the holder renew its own lease', async () => {
    const w = fresh();
    await w.leases.acquire(NAME, 'request-a', 60);
    w.advance(30);
    const renewed = await w.leases.acquire(NAME, 'request-a', 60);
    expect(renewed).toMatchObject({ acquired: true, lease: { expiresAtSeconds: T0 / 1000 + 90 } });
  });

  it('hands a lapsed lease (a crashed holder never released it) to the next caller', async () => {
    const w = fresh();
    await w.leases.acquire(NAME, 'crashed', 330);
    w.advance(330);
    const got = await w.leases.acquire(NAME, 'request-b', 330);
    expect(got).toMatchObject({ acquired: true, lease: { owner: 'request-b' } });
    expect(w.items.get(NAME)?.v?.S).toBe('request-b');
  });

  it('releases only its own lease: a holder that lost it cannot delete the successor’s', async () => {
    const w = fresh();
    const first = await w.leases.acquire(NAME, 'slow', 60);
    if (!first.acquired) throw new Error('expected the lease');
    w.advance(61);
    const second = await w.leases.acquire(NAME, 'next', 60);
    if (!second.acquired) throw new Error('expected the lapsed lease');

    expect(await w.leases.release(first.lease)).toBe(false);
    expect(w.items.get(NAME)?.v?.S).toBe('next');
    expect(await w.leases.release(second.lease)).toBe(true);
    expect(w.items.has(NAME)).toBe(false);
    expect(await w.leases.release(second.lease)).toBe(false); // already gone
    expect(w.ddb.commandCalls(DeleteItemCommand)[0]?.args[0].input).toEqual({
      TableName: 'itk3-once',
      Key: { k: { S: NAME } },
      ConditionExpression: RELEASE_CONDITION,
      ExpressionAttributeNames: { '#v': 'v' },
      ExpressionAttributeValues: { ':owner': { S: 'slow' } },
    });
  });

  it('reports a failing table as a TransientError naming the operation, and refuses a bad TTL', async () => {
    const w = fresh();
    w.ddb.on(PutItemCommand).rejects(serviceError('ProvisionedThroughputExceededException', 400));
    const error = await w.leases.acquire(NAME, 'a', 60).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TransientError);
    expect((error as Error).message).toBe(
      'DynamoDB PutItem of a lease unavailable (ProvisionedThroughputExceededException)',
    );
    w.ddb.on(DeleteItemCommand).rejects(serviceError('ResourceNotFoundException', 400));
    await expect(w.leases.release({ name: NAME, owner: 'a', expiresAtSeconds: 0 })).rejects.toThrow(
      'DynamoDB DeleteItem of a lease failed (ResourceNotFoundException)',
    );
    await expect(w.leases.acquire(NAME, 'a', 0)).rejects.toThrow(RangeError);
  });
});
