/**
 * The DynamoDB audit chain on an emulator's real DynamoDB: concurrent writers, one conditional
 * PutItem per item (outcomes and their once-markers included), verification and caught tampering. Checkpoints are signed with a software
 * key here (KMS signing has its own suite); what is under test is the table.
 */
import {
  type AttributeValue,
  DeleteItemCommand,
  ScanCommand,
  TransactWriteItemsCommand,
  UpdateItemCommand,
} from '@aws-sdk/client-dynamodb';
import { afterAll, beforeAll, expect } from 'vitest';
import { DynamoAuditLog } from '../../lib/adapters/aws/dynamo-audit-log.js';
import { createKeystore, generateKey } from '../../lib/adapters/local/keystore.js';
import { SoftwareKeyService } from '../../lib/adapters/local/software-keys.js';
import type { CheckpointKeys, CheckpointSigner } from '../../lib/audit/chain.js';
import { AUDIT_TABLE } from '../../lib/infra/definitions.js';
import { type AuditEntry, systemClock } from '../../lib/ports/index.js';
import { describeEachEmulator } from './support/emulators.js';
import { createTable, deleteTable } from './support/tables.js';

describeEachEmulator('DynamoDB audit chain', ({ clients, unique, gap, itUnless }) => {
  const table = unique('chain');
  let signer: CheckpointSigner;
  let trusted: CheckpointKeys;

  beforeAll(async () => {
    if (gap('dynamodb')) return;
    await createTable(clients, table, 'audit');
    const keys = new SoftwareKeyService(
      createKeystore([await generateKey('response-sign', 'ES256', 'gw-response-1', 'ITK3GW')]),
    );
    signer = { kid: 'gw-response-1', keys };
    trusted = new Map([['gw-response-1', await keys.publicKeySpki('gw-response-1')]]);
  }, 60_000);

  afterAll(async () => {
    if (!gap('dynamodb')) await deleteTable(clients, table);
  });

  const writer = (name: string) =>
    new DynamoAuditLog(clients.dynamodb, table, systemClock, {
      writer: name,
      signer,
      policy: { entries: 4, seconds: 3600 },
    });

  /** The item of `stream` whose first entry is position `n` (every item here holds one entry). */
  async function itemAt(stream: string, n: number): Promise<Record<string, AttributeValue>> {
    const { Items = [] } = await clients.dynamodb.send(
      new ScanCommand({
        TableName: table,
        FilterExpression: '#s = :s AND #n = :n',
        ExpressionAttributeNames: { '#s': 'stream', '#n': 'n' },
        ExpressionAttributeValues: { ':s': { S: stream }, ':n': { N: String(n) } },
      }),
    );
    expect(Items).toHaveLength(1);
    return Items[0]!;
  }

  itUnless(
    'dynamodb',
    'records an outcome with its marker once, in one PutItem, and proves it',
    async () => {
      const traceId = `once-${Date.now()}`;
      const outcome: AuditEntry[] = [
        { traceId, at: '2026-01-01T10:00:00.000Z', stage: 'authenticate', event: 'received' },
        { traceId, at: '2026-01-01T10:00:02.000Z', stage: 'deliver', event: 'delivered', sender: 'GP0001' },
        {
          traceId,
          at: '2026-01-01T10:00:02.000Z',
          stage: 'deliver',
          event: 'response-sent',
          itk3Code: '20013',
        },
      ];
      const first = writer('itk3-deliver');
      const redelivery = writer('itk3-deliver');
      const sent: string[] = [];
      clients.dynamodb.middlewareStack.add(
        (next, context) => async (args) => {
          if (context.commandName) sent.push(context.commandName);
          return next(args);
        },
        { step: 'initialize', name: 'countAuditCommands' },
      );
      try {
        expect(await first.appendOnce('deliver#delivered', outcome)).toBe(true);
        expect(await redelivery.appendOnce('deliver#delivered', outcome)).toBe(false);
      } finally {
        clients.dynamodb.middlewareStack.remove('countAuditCommands');
      }
      // One write each; an emulator that leaves out ReturnValuesOnConditionCheckFailure costs a read.
      expect(sent.filter((c) => c === 'PutItemCommand')).toHaveLength(2);
      expect(sent.filter((c) => c === TransactWriteItemsCommand.name)).toHaveLength(0);
      expect((await first.byTrace(traceId)).map((e) => e.event)).toEqual([
        'received',
        'delivered',
        'response-sent',
      ]);
      await first.checkpoint();
      const report = (
        await new DynamoAuditLog(clients.dynamodb, table, systemClock, { writer: 'verifier' }).verifyAll(
          trusted,
        )
      ).find((r) => r.stream === first.stream);
      expect(report).toMatchObject({ entries: 3, lastCheckpoint: 3 });
      expect(report?.break).toBeUndefined();
    },
    60_000,
  );

  itUnless(
    'dynamodb',
    'proves two writers appending concurrently, then catches an altered entry',
    async () => {
      const a = writer('itk3-verify');
      const b = writer('itk3-deliver');
      await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          (i % 2 ? a : b).append({
            traceId: `chain-trace-${i % 3}`,
            at: new Date(Date.UTC(2026, 0, 1, 0, 0, i)).toISOString(),
            stage: 'verify',
            event: 'forwarded',
          }),
        ),
      );
      await Promise.all([a.checkpoint(), b.checkpoint()]);

      const verifier = new DynamoAuditLog(clients.dynamodb, table, systemClock, { writer: 'verifier' });
      const reports = (await verifier.verifyAll(trusted)).filter((r) =>
        [a.stream, b.stream].includes(r.stream),
      );
      expect(reports).toHaveLength(2);
      for (const r of reports) {
        expect(r.break).toBeUndefined();
        expect(r).toMatchObject({ entries: 5, lastCheckpoint: 5 });
      }

      // Alter entry 2 of stream a in place.
      const two = await itemAt(a.stream, 2);
      await clients.dynamodb.send(
        new UpdateItemCommand({
          TableName: table,
          Key: { traceId: two.traceId!, sk: two.sk! },
          UpdateExpression: 'SET #e = :e',
          ExpressionAttributeNames: { '#e': 'entries' },
          ExpressionAttributeValues: { ':e': { S: two.entries!.S!.replace('forwarded', 'delivered') } },
        }),
      );
      const altered = (await verifier.verifyAll(trusted)).find((r) => r.stream === a.stream);
      expect(altered?.break).toMatchObject({ firstBadEntry: 2, kind: 'altered' });

      // Delete the tail of stream b under its signed checkpoint.
      for (const n of [4, 5]) {
        const item = await itemAt(b.stream, n);
        await clients.dynamodb.send(
          new DeleteItemCommand({
            TableName: table,
            Key: { [AUDIT_TABLE.partitionKey]: item.traceId!, [AUDIT_TABLE.sortKey]: item.sk! },
          }),
        );
      }
      const truncated = (await verifier.verifyAll(trusted)).find((r) => r.stream === b.stream);
      expect(truncated?.break).toMatchObject({ firstBadEntry: 4, kind: 'truncated' });
    },
    60_000,
  );
});
