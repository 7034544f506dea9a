/**
 * The DynamoDB audit chain on an emulator's real DynamoDB: concurrent writers, transactional
 * conditional writes, verification and caught tampering. Checkpoints are signed with a software
 * key here (KMS signing has its own suite); what is under test is the table.
 */
import { DeleteItemCommand, GetItemCommand, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { afterAll, beforeAll, expect } from 'vitest';
import { DynamoAuditLog, linkKey, streamPartition } from '../../lib/adapters/aws/dynamo-audit-log.js';
import { createKeystore, generateKey } from '../../lib/adapters/local/keystore.js';
import { SoftwareKeyService } from '../../lib/adapters/local/software-keys.js';
import type { CheckpointKeys, CheckpointSigner } from '../../lib/audit/chain.js';
import { AUDIT_TABLE } from '../../lib/infra/definitions.js';
import { systemClock } from '../../lib/ports/index.js';
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
      const reports = await verifier.verifyAll(trusted);
      expect(reports.map((r) => r.stream).sort()).toEqual([a.stream, b.stream].sort());
      for (const r of reports) {
        expect(r.break).toBeUndefined();
        expect(r).toMatchObject({ entries: 5, lastCheckpoint: 5 });
      }

      // Alter entry 2 of stream a in place.
      const { Item: link } = await clients.dynamodb.send(
        new GetItemCommand({
          TableName: table,
          Key: { traceId: { S: streamPartition(a.stream) }, sk: { S: linkKey(2) } },
        }),
      );
      await clients.dynamodb.send(
        new UpdateItemCommand({
          TableName: table,
          Key: { traceId: link!.entryTrace!, sk: link!.entrySk! },
          UpdateExpression: 'SET #e = :e',
          ExpressionAttributeNames: { '#e': 'event' },
          ExpressionAttributeValues: { ':e': { S: 'delivered' } },
        }),
      );
      const altered = (await verifier.verifyAll(trusted)).find((r) => r.stream === a.stream);
      expect(altered?.break).toMatchObject({ firstBadEntry: 2, kind: 'altered' });

      // Delete the tail of stream b (its links) under its signed checkpoint.
      for (const n of [4, 5]) {
        await clients.dynamodb.send(
          new DeleteItemCommand({
            TableName: table,
            Key: {
              [AUDIT_TABLE.partitionKey]: { S: streamPartition(b.stream) },
              [AUDIT_TABLE.sortKey]: { S: linkKey(n) },
            },
          }),
        );
      }
      const truncated = (await verifier.verifyAll(trusted)).find((r) => r.stream === b.stream);
      expect(truncated?.break).toMatchObject({ firstBadEntry: 4, kind: 'truncated' });
    },
    60_000,
  );
});
