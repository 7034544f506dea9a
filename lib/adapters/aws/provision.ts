import {
  CreateTableCommand,
  DescribeTableCommand,
  DescribeTimeToLiveCommand,
  type KeySchemaElement,
  UpdateTimeToLiveCommand,
} from '@aws-sdk/client-dynamodb';
import {
  CreateAliasCommand,
  CreateKeyCommand,
  DescribeKeyCommand,
  type KeySpec,
  type KeyUsageType,
} from '@aws-sdk/client-kms';
import {
  type BucketLocationConstraint,
  CreateBucketCommand,
  HeadBucketCommand,
  PutBucketLifecycleConfigurationCommand,
} from '@aws-sdk/client-s3';
import {
  CreateQueueCommand,
  GetQueueAttributesCommand,
  GetQueueUrlCommand,
  SetQueueAttributesCommand,
} from '@aws-sdk/client-sqs';
import type { LoadedConfig } from '../../config/load.js';
import {
  AUDIT_TABLE,
  BLOB_BUCKET,
  ENV,
  ONCE_TABLE,
  STAGE_DEFINITIONS,
  stageSettings,
} from '../../infra/definitions.js';
import { STAGES, type StageName } from '../../pipeline/topology.js';
import type { AwsClients } from './clients.js';
import { awsErrorName } from './errors.js';

/** Options for {@link provisionEmulator}. */
export interface ProvisionOptions {
  /**
   * Prepended to every queue, table, bucket and alias name, so tests and parallel runs get their
   * own resources on one emulator. Lower-case letters, digits and `-` (S3 bucket rules). Default: none.
   */
  prefix?: string;
  /** Upper bound on waiting for a table to become ACTIVE. Default 30 s. */
  tableWaitMs?: number;
  /**
   * Create the DynamoDB tables. Default true. False for an emulator without DynamoDB (LocalStack
   * host mode) when the once-store and audit log stay on local adapters; the result then still names
   * the tables, which do not exist.
   */
  tables?: boolean;
  /**
   * Visibility timeout of the stage queues. Default: as deployed, `visibilityTimeoutSeconds` of the stage's
   * settings (lib/infra/definitions.ts). Emulator-mode tests shorten it so a retried record comes back in seconds.
   */
  visibilityTimeoutSeconds?: number;
}

/** What exists after {@link provisionEmulator}: everything the AWS ports need to find it. */
export interface ProvisionResult {
  region: string;
  queueUrls: Record<StageName, string>;
  queueArns: Record<StageName, string>;
  dlqUrls: Record<StageName, string>;
  dlqArns: Record<StageName, string>;
  onceTable: string;
  auditTable: string;
  blobBucket: string;
  /** kid → KMS key ARN, for every recipient key and the response-signing key. */
  kmsKeys: Record<string, string>;
  /** kid → alias (`alias/<prefix>itk3/<kid>`), the stable name a re-run finds the key by. */
  kmsAliases: Record<string, string>;
  /** Resources this call created (empty on a re-run): names, aliases, `ttl:<table>`. */
  created: string[];
}

/** Queue message retention for DLQs: the SQS maximum, 14 days, to leave time for a redrive. */
const DLQ_RETENTION_SECONDS = 1_209_600;

/**
 * Create, on an emulator (or any account), the resources the pipeline runs on, from the same
 * definitions the CDK stack uses (lib/infra/definitions.ts):
 * - per stage a queue and its DLQ, with `RedrivePolicy.maxReceiveCount` and a visibility timeout from
 *   `stageSettings` (the one formula CDK and the embedded runtime use too);
 * - the once-store and audit tables (on-demand) with TTL on `expiresAt`;
 * - the blob bucket, with the claim-check expiry rule;
 * - per recipient key id an `RSA_4096` `ENCRYPT_DECRYPT` KMS key, and the `ECC_NIST_P256`
 *   `SIGN_VERIFY` response-signing key, each found again on re-runs through an alias.
 *
 * Idempotent: a second call with the same prefix creates nothing and returns the same result.
 * Not for real accounts in production: there the CDK stack owns these resources (with SSE-KMS, key
 * policies and alarms this function does not set).
 *
 * @example
 * ```ts
 * const result = await provisionEmulator(createAwsClients({ endpoint: 'http://127.0.0.1:4566' }), config);
 * Object.assign(process.env, provisionedEnv(result));
 * ```
 */
export async function provisionEmulator(
  clients: AwsClients,
  config: LoadedConfig,
  opts: ProvisionOptions = {},
): Promise<ProvisionResult> {
  const prefix = opts.prefix ?? '';
  if (!/^[a-z0-9-]{0,20}$/.test(prefix)) {
    throw new Error('provision prefix: at most 20 of a-z 0-9 -');
  }
  const created: string[] = [];
  const region = await clients.sqs.config.region();

  const queueUrls = {} as Record<StageName, string>;
  const queueArns = {} as Record<StageName, string>;
  const dlqUrls = {} as Record<StageName, string>;
  const dlqArns = {} as Record<StageName, string>;
  for (const stage of STAGES) {
    const def = STAGE_DEFINITIONS[stage];
    const settings = stageSettings(stage, { visibilityTimeoutSeconds: opts.visibilityTimeoutSeconds });
    const dlq = await ensureQueue(
      clients,
      prefix + def.dlq,
      { MessageRetentionPeriod: String(DLQ_RETENTION_SECONDS) },
      created,
    );
    const queue = await ensureQueue(
      clients,
      prefix + def.queue,
      {
        VisibilityTimeout: String(settings.visibilityTimeoutSeconds),
        RedrivePolicy: JSON.stringify({
          deadLetterTargetArn: dlq.arn,
          maxReceiveCount: settings.maxReceiveCount,
        }),
      },
      created,
    );
    dlqUrls[stage] = dlq.url;
    dlqArns[stage] = dlq.arn;
    queueUrls[stage] = queue.url;
    queueArns[stage] = queue.arn;
  }

  const waitMs = opts.tableWaitMs ?? 30_000;
  const onceTable = prefix + ONCE_TABLE.name;
  const auditTable = prefix + AUDIT_TABLE.name;
  if (opts.tables ?? true) {
    await ensureTable(
      clients,
      onceTable,
      [{ AttributeName: ONCE_TABLE.partitionKey, KeyType: 'HASH' }],
      waitMs,
      created,
    );
    await ensureTtl(clients, onceTable, ONCE_TABLE.ttlAttribute, created);
    await ensureTable(
      clients,
      auditTable,
      [
        { AttributeName: AUDIT_TABLE.partitionKey, KeyType: 'HASH' },
        { AttributeName: AUDIT_TABLE.sortKey, KeyType: 'RANGE' },
      ],
      waitMs,
      created,
    );
    await ensureTtl(clients, auditTable, AUDIT_TABLE.ttlAttribute, created);
  }

  const blobBucket = prefix + BLOB_BUCKET.name;
  await ensureBucket(clients, blobBucket, region, created);

  const kmsKeys: Record<string, string> = {};
  const kmsAliases: Record<string, string> = {};
  const wanted: { kid: string; spec: KeySpec; usage: KeyUsageType }[] = [
    ...config.doc.recipients.flatMap((r) =>
      r.keys.map((k) => ({ kid: k.kid, spec: 'RSA_4096' as const, usage: 'ENCRYPT_DECRYPT' as const })),
    ),
    { kid: config.doc.responseSigning.kid, spec: 'ECC_NIST_P256', usage: 'SIGN_VERIFY' },
  ];
  for (const { kid, spec, usage } of wanted) {
    const alias = `alias/${prefix}itk3/${aliasSafe(kid)}`;
    kmsAliases[kid] = alias;
    kmsKeys[kid] = await ensureKey(clients, alias, kid, spec, usage, created);
  }

  return {
    region,
    queueUrls,
    queueArns,
    dlqUrls,
    dlqArns,
    onceTable,
    auditTable,
    blobBucket,
    kmsKeys,
    kmsAliases,
    created,
  };
}

/**
 * The environment variables (names from `ENV`) under which {@link awsPortsFromEnv} finds the
 * provisioned resources. Endpoint, region and credentials are the caller's (`AWS_ENDPOINT_URL`, …).
 *
 * @example
 * ```ts
 * provisionedEnv(result); // { ITK3_QUEUE_URL_AUTHENTICATE: 'http://127.0.0.1:4566/…', …, ITK3_KMS_KEYS: '{…}' }
 * ```
 */
export function provisionedEnv(result: ProvisionResult): Record<string, string> {
  const env: Record<string, string> = {};
  for (const stage of STAGES) env[ENV.queueUrl(stage)] = result.queueUrls[stage];
  env[ENV.onceTable] = result.onceTable;
  env[ENV.auditTable] = result.auditTable;
  env[ENV.blobBucket] = result.blobBucket;
  env[ENV.kmsKeys] = JSON.stringify(result.kmsKeys);
  return env;
}

/**
 * CreateQueue without attributes is idempotent whatever exists (with attributes it fails when they
 * differ); the attributes are then set explicitly, so a re-run also converges a queue whose settings
 * changed in the definitions.
 */
async function ensureQueue(
  clients: AwsClients,
  name: string,
  attributes: Record<string, string>,
  created: string[],
): Promise<{ url: string; arn: string }> {
  let url: string | undefined;
  try {
    url = (await clients.sqs.send(new GetQueueUrlCommand({ QueueName: name }))).QueueUrl;
  } catch (error) {
    const code = awsErrorName(error);
    if (code !== 'QueueDoesNotExist' && code !== 'AWS.SimpleQueueService.NonExistentQueue') throw error;
  }
  if (!url) {
    url = (await clients.sqs.send(new CreateQueueCommand({ QueueName: name }))).QueueUrl;
    created.push(name);
  }
  if (!url) throw new Error(`CreateQueue ${name} returned no URL`);
  await clients.sqs.send(new SetQueueAttributesCommand({ QueueUrl: url, Attributes: attributes }));
  const { Attributes } = await clients.sqs.send(
    new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ['QueueArn'] }),
  );
  const arn = Attributes?.QueueArn;
  if (!arn) throw new Error(`queue ${name} has no ARN`);
  return { url, arn };
}

async function ensureTable(
  clients: AwsClients,
  name: string,
  keySchema: KeySchemaElement[],
  waitMs: number,
  created: string[],
): Promise<void> {
  let status = await tableStatus(clients, name);
  if (status === undefined) {
    try {
      await clients.dynamodb.send(
        new CreateTableCommand({
          TableName: name,
          KeySchema: keySchema,
          AttributeDefinitions: keySchema.map((k) => ({
            AttributeName: k.AttributeName,
            AttributeType: 'S',
          })),
          BillingMode: 'PAY_PER_REQUEST',
        }),
      );
      created.push(name);
    } catch (error) {
      // A concurrent provisioner won the race: fine, wait for its table.
      if (awsErrorName(error) !== 'ResourceInUseException') throw error;
    }
    status = await tableStatus(clients, name);
  }
  const deadline = Date.now() + waitMs;
  while (status !== 'ACTIVE') {
    if (Date.now() > deadline) throw new Error(`table ${name} not ACTIVE after ${waitMs} ms (${status})`);
    await new Promise((resolve) => setTimeout(resolve, 200));
    status = await tableStatus(clients, name);
  }
}

async function tableStatus(clients: AwsClients, name: string): Promise<string | undefined> {
  try {
    const out = await clients.dynamodb.send(new DescribeTableCommand({ TableName: name }));
    return out.Table?.TableStatus ?? 'UNKNOWN';
  } catch (error) {
    if (awsErrorName(error) === 'ResourceNotFoundException') return undefined;
    throw error;
  }
}

/** UpdateTimeToLive fails when TTL is already on, so look first. */
async function ensureTtl(
  clients: AwsClients,
  table: string,
  attribute: string,
  created: string[],
): Promise<void> {
  const out = await clients.dynamodb.send(new DescribeTimeToLiveCommand({ TableName: table }));
  const ttl = out.TimeToLiveDescription;
  if (
    ttl?.AttributeName === attribute &&
    (ttl.TimeToLiveStatus === 'ENABLED' || ttl.TimeToLiveStatus === 'ENABLING')
  ) {
    return;
  }
  await clients.dynamodb.send(
    new UpdateTimeToLiveCommand({
      TableName: table,
      TimeToLiveSpecification: { AttributeName: attribute, Enabled: true },
    }),
  );
  created.push(`ttl:${table}`);
}

async function ensureBucket(
  clients: AwsClients,
  bucket: string,
  region: string,
  created: string[],
): Promise<void> {
  // Look first: in us-east-1 CreateBucket of a bucket you own succeeds again, so it cannot tell.
  let exists = true;
  try {
    await clients.s3.send(new HeadBucketCommand({ Bucket: bucket }));
  } catch (error) {
    const status = (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
    if (status !== 404 && awsErrorName(error) !== 'NotFound') throw error;
    exists = false;
  }
  if (!exists) {
    try {
      await clients.s3.send(
        new CreateBucketCommand({
          Bucket: bucket,
          // us-east-1 is the one region that refuses an explicit location constraint.
          ...(region === 'us-east-1'
            ? {}
            : { CreateBucketConfiguration: { LocationConstraint: region as BucketLocationConstraint } }),
        }),
      );
      created.push(bucket);
    } catch (error) {
      if (awsErrorName(error) !== 'BucketAlreadyOwnedByYou') throw error;
    }
  }
  // Claim-check payloads are transient copies: expire them as the stack does (BLOB_BUCKET.expireDays).
  await clients.s3.send(
    new PutBucketLifecycleConfigurationCommand({
      Bucket: bucket,
      LifecycleConfiguration: {
        Rules: [
          {
            ID: 'claim-check-expiry',
            Status: 'Enabled',
            Filter: { Prefix: BLOB_BUCKET.claimCheckPrefix },
            Expiration: { Days: BLOB_BUCKET.expireDays },
          },
        ],
      },
    }),
  );
}

async function ensureKey(
  clients: AwsClients,
  alias: string,
  kid: string,
  spec: KeySpec,
  usage: KeyUsageType,
  created: string[],
): Promise<string> {
  try {
    const out = await clients.kms.send(new DescribeKeyCommand({ KeyId: alias }));
    const meta = out.KeyMetadata;
    // A key scheduled for deletion (or of another spec) under our alias is not reused silently.
    if (meta?.Arn && meta.KeyState === 'Enabled' && meta.KeySpec === spec) return meta.Arn;
    throw new Error(
      `${alias} names a key that is ${meta?.KeyState ?? 'unknown'} ${meta?.KeySpec ?? ''}: delete the alias`,
    );
  } catch (error) {
    if (awsErrorName(error) !== 'NotFoundException') throw error;
  }
  const out = await clients.kms.send(
    new CreateKeyCommand({
      KeySpec: spec,
      KeyUsage: usage,
      Description: `ITK3 ${usage === 'SIGN_VERIFY' ? 'response signing' : 'recipient'} key ${kid}`,
      Tags: [{ TagKey: 'itk3:kid', TagValue: kid }],
    }),
  );
  const arn = out.KeyMetadata?.Arn;
  const keyId = out.KeyMetadata?.KeyId;
  if (!arn || !keyId) throw new Error(`CreateKey for ${kid} returned no key`);
  await clients.kms.send(new CreateAliasCommand({ AliasName: alias, TargetKeyId: keyId }));
  created.push(alias);
  return arn;
}

/**
 * KMS alias names allow `A-Za-z0-9/_-`; kids also allow `.`, spelt `_x2E` here.
 *
 * @example
 * ```ts
 * aliasSafe('rx.2025'); // 'rx_x2E2025'
 * ```
 */
export function aliasSafe(kid: string): string {
  return kid.replace(
    /[^A-Za-z0-9_-]/g,
    (c) => `_x${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`,
  );
}
