/**
 * The DynamoDB audit chain against a mocked client backed by an in-memory table that honours the
 * conditions the adapter writes with: chains are proven, writers cannot fork a stream, and every
 * tampering of the table (as an attacker with write access would) is caught with the first bad
 * entry named.
 */

import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type AttributeValue,
  BatchGetItemCommand,
  ConditionalCheckFailedException,
  DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  QueryCommand,
  TransactionCanceledException,
  TransactWriteItemsCommand,
} from '@aws-sdk/client-dynamodb';
import { GetPublicKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  checkpointKey,
  DynamoAuditLog,
  linkKey,
  STREAMS_PARTITION,
  streamPartition,
} from '../../../lib/adapters/aws/dynamo-audit-log.js';
import { createKeystore, generateKey } from '../../../lib/adapters/local/keystore.js';
import { SoftwareKeyService } from '../../../lib/adapters/local/software-keys.js';
import type { CheckpointKeys, CheckpointSigner } from '../../../lib/audit/chain.js';
import { main } from '../../../lib/cli/main.js';
import type { AuditEntry } from '../../../lib/ports/index.js';

type Item = Record<string, AttributeValue>;

/** A one-table DynamoDB stand-in: attribute_not_exists conditions, ordered Query, BatchGet. */
class FakeTable {
  readonly items = new Map<string, Item>();
  static key(pk: string, sk: string) {
    return `${pk}\u0000${sk}`;
  }
  keyOf(item: Item) {
    return FakeTable.key(item.traceId!.S!, item.sk!.S!);
  }
  get(pk: string, sk: string): Item | undefined {
    return this.items.get(FakeTable.key(pk, sk));
  }
  partition(pk: string): Item[] {
    return [...this.items.values()]
      .filter((i) => i.traceId!.S === pk)
      .sort((a, b) => (a.sk!.S! < b.sk!.S! ? -1 : 1));
  }
}

const ddb = mockClient(DynamoDBClient);
let table: FakeTable;

function wire(): void {
  ddb.reset();
  ddb.on(TransactWriteItemsCommand).callsFake((input) => {
    const puts = (input.TransactItems ?? []).map((t: { Put: { Item: Item } }) => t.Put.Item);
    if (puts.some((item: Item) => table.items.has(table.keyOf(item)))) {
      throw new TransactionCanceledException({ message: 'ConditionalCheckFailed', $metadata: {} });
    }
    for (const item of puts) table.items.set(table.keyOf(item), structuredClone(item));
    return {};
  });
  ddb.on(PutItemCommand).callsFake((input) => {
    if (table.items.has(table.keyOf(input.Item))) {
      throw new ConditionalCheckFailedException({ message: 'exists', $metadata: {} });
    }
    table.items.set(table.keyOf(input.Item), structuredClone(input.Item));
    return {};
  });
  ddb.on(GetItemCommand).callsFake((input) => ({ Item: table.get(input.Key.traceId.S, input.Key.sk.S) }));
  ddb.on(QueryCommand).callsFake((input) => ({
    Items: table.partition(input.ExpressionAttributeValues[':p'].S).map((i) => structuredClone(i)),
  }));
  ddb.on(BatchGetItemCommand).callsFake((input) => {
    const [name, request] = Object.entries(input.RequestItems)[0] as [string, { Keys: Item[] }];
    const found = request.Keys.map((k) => table.get(k.traceId!.S!, k.sk!.S!)).filter((i) => i !== undefined);
    return { Responses: { [name]: found } };
  });
}

let signer: CheckpointSigner;
let trusted: CheckpointKeys;

beforeAll(async () => {
  const keystore = createKeystore([await generateKey('response-sign', 'ES256', 'gw-response-1', 'ITK3GW')]);
  const keys = new SoftwareKeyService(keystore);
  signer = { kid: 'gw-response-1', keys };
  trusted = new Map([['gw-response-1', await keys.publicKeySpki('gw-response-1')]]);
});

beforeEach(() => {
  table = new FakeTable();
  wire();
});

const client = () => new DynamoDBClient({ region: 'eu-west-2' });
const clock = { now: () => Date.now() };

function entry(i: number): AuditEntry {
  return {
    traceId: `trace-${i % 3}`,
    at: new Date(1_767_225_600_000 + i * 1000).toISOString(),
    stage: (['authenticate', 'authorise', 'decrypt', 'verify', 'deliver'] as const)[i % 5]!,
    event: 'forwarded',
    sender: 'GP0001',
  };
}

/** One writer's stream of `count` entries, checkpointed every 5 and at the end. */
async function writeStream(count = 12): Promise<DynamoAuditLog> {
  const audit = new DynamoAuditLog(client(), 'audit', clock, {
    writer: 'itk3-deliver',
    signer,
    policy: { entries: 5, seconds: 3600 },
  });
  for (let i = 1; i <= count; i += 1) await audit.append(entry(i));
  await audit.checkpoint();
  return audit;
}

const link = (audit: DynamoAuditLog, n: number) => table.get(streamPartition(audit.stream), linkKey(n))!;
const entryItemOf = (audit: DynamoAuditLog, n: number) => {
  const l = link(audit, n);
  return table.get(l.entryTrace!.S!, l.entrySk!.S!)!;
};

async function verifyOne(audit: DynamoAuditLog) {
  const reports = await new DynamoAuditLog(client(), 'audit', clock, { writer: 'verifier' }).verifyAll(
    trusted,
  );
  const report = reports.find((r) => r.stream === audit.stream);
  expect(report).toBeDefined();
  return report!;
}

describe('DynamoDB audit chain', () => {
  it('proves concurrent appends of two writers, each its own stream, with signed checkpoints', async () => {
    const a = new DynamoAuditLog(client(), 'audit', clock, { writer: 'itk3-verify', signer });
    const b = new DynamoAuditLog(client(), 'audit', clock, { writer: 'itk3-deliver', signer });
    await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).append(entry(i))));
    await Promise.all([a.checkpoint(), b.checkpoint()]);

    const reports = await new DynamoAuditLog(client(), 'audit', clock).verifyAll(trusted);
    expect(reports.map((r) => r.stream).sort()).toEqual([a.stream, b.stream].sort());
    for (const r of reports) expect(r).toMatchObject({ entries: 10, lastCheckpoint: 10, checkpoints: 1 });
    expect(reports.every((r) => r.break === undefined)).toBe(true);
    expect(table.partition(STREAMS_PARTITION)).toHaveLength(2);
    // The port still reads a trace oldest first, chain attributes aside.
    expect((await a.byTrace('trace-1')).every((e) => e.traceId === 'trace-1')).toBe(true);
  });

  it('writes the entry and its link in one transaction, each only if absent (no fork)', async () => {
    const audit = await writeStream(2);
    const tx = ddb.commandCalls(TransactWriteItemsCommand)[1]!.args[0].input;
    expect(tx.TransactItems).toHaveLength(2);
    for (const write of tx.TransactItems!) {
      expect(write.Put?.ConditionExpression).toBe('attribute_not_exists(#p)');
    }
    expect(tx.TransactItems![1]!.Put!.Item!.sk).toEqual({ S: linkKey(2) });
    expect(link(audit, 2).prev).toEqual(link(audit, 1).hash);
  });

  it('continues after a position another write already holds instead of forking it', async () => {
    const audit = await writeStream(1);
    // A write of position 2 that landed although its answer was lost (or a second writer).
    const foreign = { ...link(audit, 1), sk: { S: linkKey(2) }, hash: { S: 'f'.repeat(64) } };
    table.items.set(table.keyOf(foreign), foreign);
    await audit.append(entry(2));
    expect(link(audit, 3).prev).toEqual({ S: 'f'.repeat(64) });
    expect(link(audit, 2).hash).toEqual({ S: 'f'.repeat(64) });
  });

  it('proves the untouched stream', async () => {
    const audit = await writeStream();
    const r = await verifyOne(audit);
    expect(r.break).toBeUndefined();
    expect(r).toMatchObject({ entries: 12, checkpoints: 3, lastCheckpoint: 12 });
  });

  it('catches a deleted entry item', async () => {
    const audit = await writeStream();
    table.items.delete(table.keyOf(entryItemOf(audit, 4)));
    expect((await verifyOne(audit)).break).toMatchObject({ firstBadEntry: 4, kind: 'missing' });
  });

  it('catches a deleted link', async () => {
    const audit = await writeStream();
    table.items.delete(table.keyOf(link(audit, 6)));
    expect((await verifyOne(audit)).break).toMatchObject({ firstBadEntry: 6, kind: 'missing' });
  });

  it('catches an altered field', async () => {
    const audit = await writeStream();
    entryItemOf(audit, 7).sender = { S: 'GP9999' };
    const b = (await verifyOne(audit)).break;
    expect(b).toMatchObject({ firstBadEntry: 7, kind: 'altered' });
    expect(b?.entry?.sender).toBe('GP9999');
  });

  it('catches two entries reordered by swapping their links', async () => {
    const audit = await writeStream();
    const three = link(audit, 3);
    const four = link(audit, 4);
    table.items.set(table.keyOf(three), { ...four, sk: three.sk! });
    table.items.set(table.keyOf(four), { ...three, sk: four.sk! });
    expect((await verifyOne(audit)).break).toMatchObject({ firstBadEntry: 3, kind: 'altered' });
  });

  it('catches a truncated tail', async () => {
    const audit = await writeStream();
    for (const n of [11, 12]) {
      table.items.delete(table.keyOf(entryItemOf(audit, n)));
      table.items.delete(table.keyOf(link(audit, n)));
    }
    expect((await verifyOne(audit)).break).toMatchObject({ firstBadEntry: 11, kind: 'truncated' });
  });

  it('catches a forged checkpoint signature', async () => {
    const audit = await writeStream();
    const cp = table.get(streamPartition(audit.stream), checkpointKey(10))!;
    const [h, p, s] = cp.jws!.S!.split('.');
    const flipped = Buffer.from(s!, 'base64url');
    flipped[5]! ^= 1;
    cp.jws = { S: `${h}.${p}.${flipped.toString('base64url')}` };
    const b = (await verifyOne(audit)).break;
    expect(b).toMatchObject({ firstBadEntry: 10, kind: 'bad-checkpoint' });
    expect(b?.reason).toMatch(/signature does not verify/);
  });

  it('catches a checkpoint replaced by another of the same stream', async () => {
    const audit = await writeStream();
    const five = table.get(streamPartition(audit.stream), checkpointKey(5))!;
    five.jws = table.get(streamPartition(audit.stream), checkpointKey(12))!.jws!;
    const b = (await verifyOne(audit)).break;
    expect(b).toMatchObject({ firstBadEntry: 5, kind: 'bad-checkpoint' });
    expect(b?.reason).toMatch(/replaced/);
  });
});

describe('itk3 audit verify --aws-outputs', () => {
  const kms = mockClient(KMSClient);
  afterEach(() => {
    kms.reset();
    vi.unstubAllEnvs();
  });

  async function run(): Promise<{ code: number; out: string[] }> {
    vi.stubEnv('AWS_REGION', 'eu-west-2');
    const dir = mkdtempSync(join(tmpdir(), 'itk3-audit-aws-'));
    const outputs = join(dir, 'outputs.json');
    writeFileSync(
      outputs,
      JSON.stringify({
        Itk3Pipeline: { AuditTableName: 'audit', ResponseSigningKeyArn: 'arn:aws:kms:eu-west-2:1:key/sign' },
      }),
    );
    kms
      .on(GetPublicKeyCommand, { KeyId: 'arn:aws:kms:eu-west-2:1:key/sign' })
      .resolves({ PublicKey: trusted.get('gw-response-1')! });
    const out: string[] = [];
    const code = await main(['audit', 'verify', '--aws-outputs', outputs], (l) => out.push(l));
    return { code, out };
  }

  it('proves the table with the public key of the deployed signing key, and exits 1 once an entry is deleted', async () => {
    const audit = await writeStream(6);
    const proven = await run();
    expect(proven.code).toBe(0);
    expect(proven.out.join('\n')).toMatch(
      /proven {2}stream itk3-deliver\/.*: 6 entries, 2 signed checkpoints/,
    );

    table.items.delete(table.keyOf(entryItemOf(audit, 2)));
    const broken = await run();
    expect(broken.code).toBe(1);
    expect(broken.out.join('\n')).toMatch(/first bad entry 2: missing/);
  });

  it('is a usage error (2) when the outputs file names no audit table', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'itk3-audit-aws-'));
    writeFileSync(join(dir, 'o.json'), '{"Other":{}}');
    expect(await main(['audit', 'verify', '--aws-outputs', join(dir, 'o.json')], () => undefined)).toBe(2);
  });
});
