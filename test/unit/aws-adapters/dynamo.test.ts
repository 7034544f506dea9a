import {
  ConditionalCheckFailedException,
  DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  QueryCommand,
  TransactWriteItemsCommand,
} from '@aws-sdk/client-dynamodb';
import { mockClient } from 'aws-sdk-client-mock';
import { beforeEach, describe, expect, it } from 'vitest';
import { DynamoAuditLog } from '../../../lib/adapters/aws/dynamo-audit-log.js';
import { DynamoOnceStore } from '../../../lib/adapters/aws/dynamo-once-store.js';
import { TransientError } from '../../../lib/errors.js';
import { sentCommands, serviceError } from './faults.js';

const ddb = mockClient(DynamoDBClient);
const client = () => new DynamoDBClient({ region: 'eu-west-2' });
const clock = { now: () => 1_767_225_600_000 }; // 2026-01-01T00:00:00Z

beforeEach(() => {
  ddb.reset();
});

describe('DynamoOnceStore', () => {
  it('writes conditionally with the TTL attribute and ALL_OLD', async () => {
    ddb.on(PutItemCommand).resolves({});

    expect(await new DynamoOnceStore(client(), 'once', clock).putIfAbsent('k1', 'v1', 300)).toEqual({
      created: true,
    });

    expect(ddb.commandCalls(PutItemCommand)[0]?.args[0].input).toEqual({
      TableName: 'once',
      Item: { k: { S: 'k1' }, v: { S: 'v1' }, expiresAt: { N: String(1_767_225_600 + 300) } },
      ConditionExpression: 'attribute_not_exists(#k) OR #t <= :now',
      ExpressionAttributeNames: { '#k': 'k', '#t': 'expiresAt' },
      ExpressionAttributeValues: { ':now': { N: '1767225600' } },
      ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
    });
  });

  it('returns the existing value from the failed condition', async () => {
    ddb.on(PutItemCommand).rejects(
      new ConditionalCheckFailedException({
        message: 'failed',
        $metadata: {},
        Item: { v: { S: 'first' } },
      }),
    );

    expect(await new DynamoOnceStore(client(), 'once', clock).putIfAbsent('k1', 'v2', 300)).toEqual({
      created: false,
      existing: 'first',
    });
    expect(sentCommands(ddb)).toEqual({ PutItem: 1 });
  });

  it('falls back to a consistent GetItem when the emulator returns no item', async () => {
    ddb.on(PutItemCommand).rejects(new ConditionalCheckFailedException({ message: 'failed', $metadata: {} }));
    ddb.on(GetItemCommand).resolves({ Item: { k: { S: 'k1' }, v: { S: 'first' } } });

    expect(await new DynamoOnceStore(client(), 'once', clock).putIfAbsent('k1', 'v2', 300)).toEqual({
      created: false,
      existing: 'first',
    });
    expect(ddb.commandCalls(GetItemCommand)[0]?.args[0].input).toMatchObject({ ConsistentRead: true });
  });

  it('tries the write again when the item vanished between the failed condition and the read', async () => {
    ddb
      .on(PutItemCommand)
      .rejectsOnce(new ConditionalCheckFailedException({ message: 'failed', $metadata: {} }))
      .resolves({});
    ddb.on(GetItemCommand).resolves({});

    expect(await new DynamoOnceStore(client(), 'once', clock).putIfAbsent('k1', 'v2', 300)).toEqual({
      created: true,
    });
    expect(sentCommands(ddb)).toEqual({ PutItem: 2, GetItem: 1 });
  });

  it.each([
    ['ProvisionedThroughputExceededException', 400],
    ['ThrottlingException', 400],
    ['RequestLimitExceeded', 400],
    ['InternalServerError', 500],
    ['ResourceNotFoundException', 400],
  ])('throws TransientError STORE_UNAVAILABLE on %s', async (name, status) => {
    ddb.on(PutItemCommand).rejects(serviceError(name, status));

    const thrown = await new DynamoOnceStore(client(), 'once', clock)
      .putIfAbsent('k', 'v', 1)
      .catch((e: unknown) => e);

    expect(thrown).toBeInstanceOf(TransientError);
    expect((thrown as TransientError).code).toBe('STORE_UNAVAILABLE');
  });
});

describe('DynamoAuditLog', () => {
  it('writes a sortable, unique sort key and a TTL of event time + 400 days, one PutItem each', async () => {
    ddb.on(PutItemCommand).resolves({});
    const audit = new DynamoAuditLog(client(), 'audit', clock);

    await audit.append({
      traceId: 't',
      at: '2026-01-01T01:00:00+01:00',
      stage: 'decrypt',
      event: 'rejected',
      code: 'DECRYPT_FAILED',
    });
    await audit.append({ traceId: 't', at: '2026-01-01T00:00:00.000Z', stage: 'decrypt', event: 'rejected' });

    const [a, b] = ddb.commandCalls(PutItemCommand).map((c) => c.args[0].input.Item ?? {});
    expect(ddb.commandCalls(TransactWriteItemsCommand)).toHaveLength(0);
    expect(a?.sk?.S).toMatch(/^2026-01-01T00:00:00\.000Z#decrypt#rejected#[0-9a-f]{12}$/);
    expect(a?.sk?.S).not.toBe(b?.sk?.S);
    expect(a?.expiresAt?.N).toBe(String(1_767_225_600 + 400 * 86_400));
    expect(JSON.parse(a?.entries?.S ?? '[]')).toEqual([
      { at: '2026-01-01T01:00:00+01:00', stage: 'decrypt', event: 'rejected', code: 'DECRYPT_FAILED' },
    ]);
    expect(JSON.parse(b?.entries?.S ?? '[]')[0].code).toBeUndefined();
  });

  it('refuses an outcome whose entries belong to two traces', async () => {
    const audit = new DynamoAuditLog(client(), 'audit', clock);
    await expect(
      audit.appendOnce('deliver#delivered', [
        { traceId: 'a', at: '2026-01-01T00:00:00Z', stage: 'deliver', event: 'delivered' },
        { traceId: 'b', at: '2026-01-01T00:00:00Z', stage: 'deliver', event: 'response-sent' },
      ]),
    ).rejects.toThrow(/one trace/);
    expect(ddb.commandCalls(PutItemCommand)).toHaveLength(0);
  });

  it('pages through Query results in order', async () => {
    const item = (n: number) => ({
      traceId: { S: 't' },
      sk: { S: `${n}` },
      at: { S: `2026-01-01T00:00:0${n}Z` },
      stage: { S: 'ingest' },
      event: { S: 'received' },
    });
    ddb
      .on(QueryCommand)
      .resolvesOnce({ Items: [item(1), item(2)], LastEvaluatedKey: { traceId: { S: 't' }, sk: { S: '2' } } })
      .resolvesOnce({ Items: [item(3)] });

    const entries = await new DynamoAuditLog(client(), 'audit', clock).byTrace('t');

    expect(entries.map((e) => e.at)).toEqual([
      '2026-01-01T00:00:01Z',
      '2026-01-01T00:00:02Z',
      '2026-01-01T00:00:03Z',
    ]);
    expect(ddb.commandCalls(QueryCommand)[1]?.args[0].input.ExclusiveStartKey).toEqual({
      traceId: { S: 't' },
      sk: { S: '2' },
    });
  });

  it('throws TransientError AUDIT_UNAVAILABLE on throttling', async () => {
    ddb.on(PutItemCommand).rejects(serviceError('ProvisionedThroughputExceededException', 400));
    const thrown = await new DynamoAuditLog(client(), 'audit', clock)
      .append({ traceId: 't', at: 'x', stage: 'ingest', event: 'received' })
      .catch((e: unknown) => e);
    expect((thrown as TransientError).code).toBe('AUDIT_UNAVAILABLE');
  });
});
