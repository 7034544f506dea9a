import { QueryCommand } from '@aws-sdk/client-dynamodb';
import { afterAll, beforeAll, expect } from 'vitest';
import { DynamoAuditLog, onceKey } from '../../lib/adapters/aws/dynamo-audit-log.js';
import { AUDIT_TABLE } from '../../lib/infra/definitions.js';
import type { AuditEntry } from '../../lib/ports/index.js';
import { describeEachEmulator, emulatorClients } from './support/emulators.js';
import { createTable, deleteTable } from './support/tables.js';

describeEachEmulator('DynamoAuditLog', ({ clients, endpoint, unique, gap, itUnless }) => {
  const table = unique('audit');
  const audit = new DynamoAuditLog(clients.dynamodb, table);

  beforeAll(async () => {
    if (!gap('dynamodb')) await createTable(clients, table, 'audit');
  });

  afterAll(async () => {
    if (!gap('dynamodb')) await deleteTable(clients, table);
  });

  const entry = (at: string, stage: AuditEntry['stage'], event: AuditEntry['event']): AuditEntry => ({
    traceId: 'trace-order',
    at,
    stage,
    event,
  });

  itUnless('dynamodb', 'returns a trace oldest first, whatever the append order', async () => {
    await audit.append(entry('2026-01-01T10:00:02.000Z', 'decrypt', 'forwarded'));
    await audit.append(entry('2026-01-01T10:00:00.000Z', 'ingest', 'received'));
    await audit.append({
      ...entry('2026-01-01T10:00:01.000Z', 'authenticate', 'rejected'),
      code: 'TOKEN_EXPIRED',
    });
    await audit.append({
      ...entry('2026-01-01T10:00:03.000Z', 'deliver', 'delivered'),
      traceId: 'other-trace',
    });

    const trace = await audit.byTrace('trace-order');

    expect(trace.map((e) => `${e.stage}:${e.event}`)).toEqual([
      'ingest:received',
      'authenticate:rejected',
      'decrypt:forwarded',
    ]);
    expect(trace[1]).toEqual({
      traceId: 'trace-order',
      at: '2026-01-01T10:00:01.000Z',
      stage: 'authenticate',
      event: 'rejected',
      code: 'TOKEN_EXPIRED',
    });
  });

  itUnless('dynamodb', 'keeps two events of one stage in the same millisecond', async () => {
    const at = '2026-01-02T00:00:00.000Z';
    await audit.append({ ...entry(at, 'deliver', 'delivered'), traceId: 'same-ms', detail: 'a' });
    await audit.append({ ...entry(at, 'deliver', 'delivered'), traceId: 'same-ms', detail: 'b' });

    const trace = await audit.byTrace('same-ms');

    expect(trace.map((e) => e.detail).sort()).toEqual(['a', 'b']);
  });

  itUnless('dynamodb', 'sets the TTL to the event time plus the retention period', async () => {
    const at = '2026-03-01T12:00:00+01:00';
    await audit.append({ ...entry(at, 'operator', 'redriven'), traceId: 'ttl-trace' });

    const { Items = [] } = await clients.dynamodb.send(
      new QueryCommand({
        TableName: table,
        KeyConditionExpression: '#p = :p',
        ExpressionAttributeNames: { '#p': AUDIT_TABLE.partitionKey },
        ExpressionAttributeValues: { ':p': { S: 'ttl-trace' } },
      }),
    );

    const expected = Math.floor(Date.parse(at) / 1000) + AUDIT_TABLE.retentionDays * 86_400;
    expect(Items[0]?.[AUDIT_TABLE.ttlAttribute]?.N).toBe(String(expected));
    // The sort key carries the normalised UTC time, so offsets do not break the order.
    expect(
      Items[0]?.[AUDIT_TABLE.sortKey]?.S?.startsWith('2026-03-01T11:00:00.000Z#operator#redriven#'),
    ).toBe(true);
  });

  itUnless(
    'dynamodb',
    'takes its own write back when the SDK retries a PutItem whose answer was lost',
    async () => {
      // A client whose first PutItem lands on the emulator but whose answer is lost on the way back:
      // the SDK's own retry then meets the stored item (condition failure) and the adapter must
      // recognise it as this stream's write, not as an outcome recorded before.
      const lossy = emulatorClients(endpoint).dynamodb;
      let puts = 0;
      lossy.middlewareStack.add(
        (next, context) => async (args) => {
          const out = await next(args);
          if (context.commandName !== 'PutItemCommand') return out;
          puts += 1;
          if (puts === 1) {
            throw Object.assign(new Error('socket hang up'), {
              name: 'TimeoutError',
              code: 'ECONNRESET',
              $metadata: {},
            });
          }
          return out;
        },
        { step: 'deserialize', name: 'loseFirstPutAnswer' },
      );
      const writer = new DynamoAuditLog(lossy, table, undefined, { writer: 'lossy' });
      const stream = writer.stream;
      const outcome: AuditEntry[] = [
        { traceId: 'lost-answer', at: '2026-01-03T00:00:00.000Z', stage: 'authenticate', event: 'received' },
        { traceId: 'lost-answer', at: '2026-01-03T00:00:01.000Z', stage: 'deliver', event: 'delivered' },
      ];

      expect(await writer.appendOnce('deliver#delivered', outcome)).toBe(true);
      expect(puts).toBe(2); // the lost answer and the SDK's retry
      await writer.append({
        ...outcome[0]!,
        at: '2026-01-03T00:00:02.000Z',
        stage: 'operator',
        event: 'redriven',
      });
      // Another instance finds the outcome recorded: nothing is written twice.
      expect(await new DynamoAuditLog(clients.dynamodb, table).appendOnce('deliver#delivered', outcome)).toBe(
        false,
      );

      expect(writer.stream).toBe(stream); // the stream goes on: no unknown fate
      const { Items = [] } = await clients.dynamodb.send(
        new QueryCommand({
          TableName: table,
          KeyConditionExpression: '#p = :p',
          ExpressionAttributeNames: { '#p': AUDIT_TABLE.partitionKey },
          ExpressionAttributeValues: { ':p': { S: 'lost-answer' } },
          ConsistentRead: true,
        }),
      );
      expect(Items.filter((i) => i[AUDIT_TABLE.sortKey]?.S === onceKey('deliver#delivered'))).toHaveLength(1);
      const report = (await writer.verifyAll(new Map())).find((r) => r.stream === stream);
      expect(report).toMatchObject({ entries: 3 });
      expect(report?.break).toBeUndefined();
    },
  );

  itUnless('dynamodb', 'returns an empty list for an unknown trace', async () => {
    expect(await audit.byTrace('no-such-trace')).toEqual([]);
  });
});
