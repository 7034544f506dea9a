/**
 * The DynamoDB audit chain against a mocked client backed by an in-memory table that honours the
 * conditions the adapter writes with: chains are proven, writers cannot fork a stream, and every
 * tampering of the table (as an attacker with write access would) is caught with the first bad
 * entry named.
 */

import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type AttributeValue,
  ConditionalCheckFailedException,
  DynamoDBClient,
  PutItemCommand,
  QueryCommand,
  ScanCommand,
  TransactWriteItemsCommand,
} from '@aws-sdk/client-dynamodb';
import { GetPublicKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  checkpointKey,
  DynamoAuditLog,
  onceKey,
  streamPartition,
} from '../../../lib/adapters/aws/dynamo-audit-log.js';
import { createKeystore, generateKey } from '../../../lib/adapters/local/keystore.js';
import { SoftwareKeyService } from '../../../lib/adapters/local/software-keys.js';
import {
  type CheckpointKeys,
  type CheckpointSigner,
  genesisHash,
  linkHash,
} from '../../../lib/audit/chain.js';
import { main } from '../../../lib/cli/main.js';
import type { AuditEntry } from '../../../lib/ports/index.js';

type Item = Record<string, AttributeValue>;

/** A one-table DynamoDB stand-in: attribute_not_exists conditions (ALL_OLD on failure), Query, Scan. */
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
  /** Store a conditional put as DynamoDB would; `failAfterStoring` loses the answer of a write that landed. */
  put(input: { Item: Item }, failAfterStoring?: Error): void {
    const existing = this.items.get(this.keyOf(input.Item));
    if (existing) {
      throw new ConditionalCheckFailedException({
        message: 'exists',
        $metadata: {},
        Item: structuredClone(existing),
      });
    }
    this.items.set(this.keyOf(input.Item), structuredClone(input.Item));
    if (failAfterStoring) throw failAfterStoring;
  }
}

const ddb = mockClient(DynamoDBClient);
let table: FakeTable;

function wire(): void {
  ddb.reset();
  ddb.on(PutItemCommand).callsFake((input) => {
    table.put(input);
    return {};
  });
  ddb.on(QueryCommand).callsFake((input) => {
    const values = input.ExpressionAttributeValues;
    const items = table
      .partition(values[':p'].S)
      .filter((i) => values[':s'] === undefined || i.sk!.S === values[':s'].S);
    return { Items: items.map((i) => structuredClone(i)) };
  });
  // Pages of 4 items, so verify has to follow LastEvaluatedKey.
  ddb.on(ScanCommand).callsFake((input) => {
    const all = [...table.items.values()].sort((a, b) => (table.keyOf(a) < table.keyOf(b) ? -1 : 1));
    const from = input.ExclusiveStartKey ? Number(input.ExclusiveStartKey.page!.N) : 0;
    const page = all.slice(from, from + 4).map((i) => structuredClone(i));
    return from + 4 < all.length
      ? { Items: page, LastEvaluatedKey: { page: { N: String(from + 4) } } }
      : { Items: page };
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

/** The item of `stream` holding entry position `n`. */
function itemAt(stream: string, n: number): Item {
  const found = [...table.items.values()].find((i) => {
    const first = Number(i.n?.N ?? 0);
    return i.stream?.S === stream && first <= n && n < first + (i.hashes?.L?.length ?? 0);
  });
  if (!found) throw new Error(`no item holds ${stream} entry ${n}`);
  return found;
}

async function verifyOne(stream: string) {
  const reports = await new DynamoAuditLog(client(), 'audit', clock, { writer: 'verifier' }).verifyAll(
    trusted,
  );
  const report = reports.find((r) => r.stream === stream);
  expect(report).toBeDefined();
  return report!;
}

/** An outcome as the deliver stage records it: received, delivered and response-sent in one call. */
function outcome(traceId: string): AuditEntry[] {
  return [
    { traceId, at: '2026-01-01T10:00:00.000Z', stage: 'authenticate', event: 'received' },
    {
      traceId,
      at: '2026-01-01T10:00:02.000Z',
      stage: 'deliver',
      event: 'delivered',
      messageId: 'm-1',
      sender: 'GP0001',
    },
    { traceId, at: '2026-01-01T10:00:02.000Z', stage: 'deliver', event: 'response-sent', itk3Code: '20013' },
  ];
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
    // The port still reads a trace oldest first, chain attributes aside.
    expect((await a.byTrace('trace-1')).every((e) => e.traceId === 'trace-1')).toBe(true);
  });

  it('writes each item with one conditional PutItem, chained to the one before (no transaction)', async () => {
    const audit = await writeStream(2);
    expect(ddb.commandCalls(TransactWriteItemsCommand)).toHaveLength(0);
    const puts = ddb
      .commandCalls(PutItemCommand)
      .map((c) => c.args[0].input)
      .filter((put) => !put.Item?.sk?.S?.startsWith('checkpoint#'));
    expect(puts).toHaveLength(2);
    for (const put of puts) expect(put.ConditionExpression).toBe('attribute_not_exists(#p)');
    expect(itemAt(audit.stream, 1).prev).toEqual({ S: genesisHash(audit.stream) });
    expect(itemAt(audit.stream, 2).prev).toEqual(itemAt(audit.stream, 1).hashes!.L![0]);
  });

  it('records an outcome and its marker as one item, once: a second call writes nothing', async () => {
    const audit = new DynamoAuditLog(client(), 'audit', clock, { writer: 'itk3-deliver', signer });
    expect(await audit.appendOnce('deliver#delivered', outcome('t-1'))).toBe(true);
    const again = new DynamoAuditLog(client(), 'audit', clock, { writer: 'itk3-deliver' });
    expect(await again.appendOnce('deliver#delivered', outcome('t-1'))).toBe(false);

    expect(ddb.commandCalls(PutItemCommand)).toHaveLength(2);
    expect(table.partition('t-1')).toHaveLength(1);
    const item = table.get('t-1', onceKey('deliver#delivered'))!;
    expect(item.hashes?.L).toHaveLength(3);
    expect(item.entries?.S).not.toContain('t-1'); // the trace id is the partition key, not repeated
    expect((await audit.byTrace('t-1')).map((e) => `${e.stage}:${e.event}`)).toEqual([
      'authenticate:received',
      'deliver:delivered',
      'deliver:response-sent',
    ]);
    expect((await audit.byTrace('t-1'))[1]).toEqual(outcome('t-1')[1]);

    // The refused call took no position: the other writer's stream is empty, this one continues at 4.
    await audit.append(entry(1));
    await audit.checkpoint();
    const r = await verifyOne(audit.stream);
    expect(r).toMatchObject({ entries: 4, lastCheckpoint: 4 });
    expect(r.break).toBeUndefined();
  });

  it('takes a write that landed although its answer was lost (an SDK retry) as its own', async () => {
    const audit = new DynamoAuditLog(client(), 'audit', clock, { writer: 'itk3-deliver' });
    let first = true;
    ddb.on(PutItemCommand).callsFake((input) => {
      // The first attempt lands; the retry of the same request meets its own item.
      if (first) {
        first = false;
        table.put(input);
      }
      table.put(input);
      return {};
    });
    expect(await audit.appendOnce('deliver#delivered', outcome('t-2'))).toBe(true);
    await audit.append(entry(2));
    expect(itemAt(audit.stream, 4).prev).toEqual(itemAt(audit.stream, 1).hashes!.L![2]);
    expect((await verifyOne(audit.stream)).break).toBeUndefined();
  });

  it('ends the stream after a write of unknown fate: it landed, and the next append starts a new one', async () => {
    const audit = new DynamoAuditLog(client(), 'audit', clock, { writer: 'itk3-deliver' });
    await audit.append(entry(1));
    const before = audit.stream;
    // The first attempt lands but its answer is lost; the SDK's retries find the network down.
    let attempts = 0;
    ddb.on(PutItemCommand).callsFake((input) => {
      attempts += 1;
      const timeout = Object.assign(new Error('socket hang up'), { name: 'TimeoutError' });
      if (attempts === 1) table.put(input, timeout);
      throw timeout;
    });
    const thrown = await audit.append(entry(2)).catch((e: unknown) => e);
    expect(thrown).toMatchObject({ code: 'AUDIT_UNAVAILABLE' });
    wire();
    await audit.append(entry(3));

    expect(audit.stream).not.toBe(before);
    expect(itemAt(audit.stream, 1).prev).toEqual({ S: genesisHash(audit.stream) });
    const old = await verifyOne(before);
    expect(old).toMatchObject({ entries: 2 });
    expect(old.break).toBeUndefined();
    expect((await verifyOne(audit.stream)).break).toBeUndefined();
  });

  it('proves the untouched stream', async () => {
    const audit = await writeStream();
    const r = await verifyOne(audit.stream);
    expect(r.break).toBeUndefined();
    expect(r).toMatchObject({ entries: 12, checkpoints: 3, lastCheckpoint: 12 });
  });

  it('catches a deleted entry item', async () => {
    const audit = await writeStream();
    table.items.delete(table.keyOf(itemAt(audit.stream, 4)));
    expect((await verifyOne(audit.stream)).break).toMatchObject({ firstBadEntry: 4, kind: 'missing' });
  });

  it('catches a deleted outcome item (all its entries)', async () => {
    const audit = new DynamoAuditLog(client(), 'audit', clock, { writer: 'itk3-deliver' });
    await audit.append(entry(1));
    await audit.appendOnce('deliver#delivered', outcome('t-3'));
    await audit.append(entry(2));
    table.items.delete(FakeTable.key('t-3', onceKey('deliver#delivered')));
    expect((await verifyOne(audit.stream)).break).toMatchObject({ firstBadEntry: 2, kind: 'missing' });
  });

  it('catches an altered field, also inside an item of several entries', async () => {
    const audit = await writeStream();
    const item = itemAt(audit.stream, 7);
    item.entries = { S: item.entries!.S!.replace('GP0001', 'GP9999') };
    const b = (await verifyOne(audit.stream)).break;
    expect(b).toMatchObject({ firstBadEntry: 7, kind: 'altered' });
    expect(b?.entry?.sender).toBe('GP9999');

    const other = new DynamoAuditLog(client(), 'audit', clock, { writer: 'itk3-deliver' });
    await other.appendOnce('deliver#delivered', outcome('t-4'));
    const held = table.get('t-4', onceKey('deliver#delivered'))!;
    held.entries = { S: held.entries!.S!.replace('"m-1"', '"m-2"') };
    expect((await verifyOne(other.stream)).break).toMatchObject({ firstBadEntry: 2, kind: 'altered' });
  });

  it('catches an item whose entries are no longer readable', async () => {
    const audit = await writeStream(3);
    itemAt(audit.stream, 2).entries = { S: '[{"stage":' };
    const b = (await verifyOne(audit.stream)).break;
    expect(b).toMatchObject({ firstBadEntry: 2, kind: 'altered' });
    expect(b?.reason).toMatch(/unreadable/);
  });

  it('catches two entries reordered by swapping their contents', async () => {
    const audit = await writeStream();
    const three = itemAt(audit.stream, 3);
    const four = itemAt(audit.stream, 4);
    [three.entries, four.entries] = [four.entries!, three.entries!];
    expect((await verifyOne(audit.stream)).break).toMatchObject({ firstBadEntry: 3, kind: 'altered' });
  });

  it('catches a truncated tail', async () => {
    const audit = await writeStream();
    for (const n of [11, 12]) table.items.delete(table.keyOf(itemAt(audit.stream, n)));
    expect((await verifyOne(audit.stream)).break).toMatchObject({ firstBadEntry: 11, kind: 'truncated' });
  });

  it('catches a stream whose every entry was deleted, by its checkpoints', async () => {
    const audit = await writeStream(5);
    for (let n = 1; n <= 5; n += 1) table.items.delete(table.keyOf(itemAt(audit.stream, n)));
    expect((await verifyOne(audit.stream)).break).toMatchObject({ firstBadEntry: 1, kind: 'truncated' });
  });

  it('catches a forged checkpoint signature', async () => {
    const audit = await writeStream();
    const cp = table.get(streamPartition(audit.stream), checkpointKey(10))!;
    const [h, p, s] = cp.jws!.S!.split('.');
    const flipped = Buffer.from(s!, 'base64url');
    flipped[5]! ^= 1;
    cp.jws = { S: `${h}.${p}.${flipped.toString('base64url')}` };
    const b = (await verifyOne(audit.stream)).break;
    expect(b).toMatchObject({ firstBadEntry: 10, kind: 'bad-checkpoint' });
    expect(b?.reason).toMatch(/signature does not verify/);
  });

  it('catches a checkpoint replaced by another of the same stream', async () => {
    const audit = await writeStream();
    const five = table.get(streamPartition(audit.stream), checkpointKey(5))!;
    five.jws = table.get(streamPartition(audit.stream), checkpointKey(12))!.jws!;
    const b = (await verifyOne(audit.stream)).break;
    expect(b).toMatchObject({ firstBadEntry: 5, kind: 'bad-checkpoint' });
    expect(b?.reason).toMatch(/replaced/);
  });

  it('still proves entries written one per item by the transactional layout before', async () => {
    const stream = 'itk3-verify/old';
    let prev = genesisHash(stream);
    for (let n = 1; n <= 2; n += 1) {
      const e = entry(n);
      const hash = linkHash(stream, n, prev, e);
      table.items.set(FakeTable.key(e.traceId, `old-${n}`), {
        traceId: { S: e.traceId },
        sk: { S: `old-${n}` },
        at: { S: e.at },
        stage: { S: e.stage },
        event: { S: e.event },
        sender: { S: 'GP0001' },
        stream: { S: stream },
        n: { N: String(n) },
        prev: { S: prev },
        hash: { S: hash },
      });
      // Its link item, which verify no longer needs.
      table.items.set(FakeTable.key(streamPartition(stream), `link#${n}`), {
        traceId: { S: streamPartition(stream) },
        sk: { S: `link#${n}` },
      });
      prev = hash;
    }
    const r = await verifyOne(stream);
    expect(r).toMatchObject({ entries: 2 });
    expect(r.break).toBeUndefined();
  });
});

describe('itk3 audit verify --aws-outputs', () => {
  const kms = mockClient(KMSClient);
  afterEach(() => {
    kms.reset();
    vi.unstubAllEnvs();
  });

  async function run(
    signingOutput: Record<string, string> = { ResponseSigningKeyArn: 'arn:aws:kms:eu-west-2:1:key/sign' },
  ): Promise<{ code: number; out: string[] }> {
    vi.stubEnv('AWS_REGION', 'eu-west-2');
    const dir = mkdtempSync(join(tmpdir(), 'itk3-audit-aws-'));
    const outputs = join(dir, 'outputs.json');
    writeFileSync(outputs, JSON.stringify({ Itk3Pipeline: { AuditTableName: 'audit', ...signingOutput } }));
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

    table.items.delete(table.keyOf(itemAt(audit.stream, 2)));
    const broken = await run();
    expect(broken.code).toBe(1);
    expect(broken.out.join('\n')).toMatch(/first bad entry 2: missing/);
  });

  it('takes the checkpoint key from ResponseSigningPublicJwk (a wrapped signing key) without asking KMS', async () => {
    await writeStream(4);
    const spki = Buffer.from(trusted.get('gw-response-1')!);
    const jwk = createPublicKey({ key: spki, format: 'der', type: 'spki' }).export({ format: 'jwk' });
    const published = JSON.stringify({ ...jwk, kid: 'gw-response-1', alg: 'ES256', use: 'sig' });
    const proven = await run({ ResponseSigningPublicJwk: published });
    expect(proven.code).toBe(0);
    expect(proven.out.join('\n')).toMatch(/proven {2}stream itk3-deliver\/.*: 4 entries/);
    expect(kms.calls()).toHaveLength(0);

    const other = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' });
    const forged = await run({ ResponseSigningPublicJwk: JSON.stringify(other) });
    expect(forged.code).toBe(1);
  });

  it('is a usage error (2) when the outputs file names no audit table', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'itk3-audit-aws-'));
    writeFileSync(join(dir, 'o.json'), '{"Other":{}}');
    expect(await main(['audit', 'verify', '--aws-outputs', join(dir, 'o.json')], () => undefined)).toBe(2);
  });
});
