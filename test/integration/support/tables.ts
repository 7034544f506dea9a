/** DynamoDB tables for the integration tests, shaped like lib/infra/definitions.ts. */
import { CreateTableCommand, DeleteTableCommand, DescribeTableCommand } from '@aws-sdk/client-dynamodb';
import type { AwsClients } from '../../../lib/adapters/aws/clients.js';
import { AUDIT_TABLE, ONCE_TABLE } from '../../../lib/infra/definitions.js';
import { eventually } from './emulators.js';

export async function createTable(clients: AwsClients, name: string, kind: 'once' | 'audit'): Promise<void> {
  const keys =
    kind === 'once'
      ? [{ AttributeName: ONCE_TABLE.partitionKey, KeyType: 'HASH' as const }]
      : [
          { AttributeName: AUDIT_TABLE.partitionKey, KeyType: 'HASH' as const },
          { AttributeName: AUDIT_TABLE.sortKey, KeyType: 'RANGE' as const },
        ];
  await clients.dynamodb.send(
    new CreateTableCommand({
      TableName: name,
      KeySchema: keys,
      AttributeDefinitions: keys.map((k) => ({
        AttributeName: k.AttributeName,
        AttributeType: 'S' as const,
      })),
      BillingMode: 'PAY_PER_REQUEST',
    }),
  );
  await eventually(async () => {
    const { Table } = await clients.dynamodb.send(new DescribeTableCommand({ TableName: name }));
    return Table?.TableStatus === 'ACTIVE' ? true : undefined;
  });
}

export async function deleteTable(clients: AwsClients, name: string): Promise<void> {
  await clients.dynamodb.send(new DeleteTableCommand({ TableName: name })).catch(() => {});
}
