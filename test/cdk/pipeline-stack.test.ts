/**
 * The synthesized pipeline stack, checked for every security property of issue 3: who may decrypt
 * and sign, no wildcards on keys, encryption everywhere, dead-letter queues, visibility timeouts,
 * runtime and architecture, partial batch failures, TTL and PITR, public access blocks — and zero
 * unacknowledged cdk-nag findings. The stack (and its six bundles) is built once, in `beforeAll`.
 */
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { App, CfnWaitConditionHandle, Stack } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import * as sns from 'aws-cdk-lib/aws-sns';
import { beforeAll, describe, expect, it } from 'vitest';
import { HANDLER_BUNDLE_FILE, handlerWrapper } from '../../cdk/constructs/pipeline-function.js';
import { nagPacks } from '../../cdk/nag.js';
import { Itk3PipelineStack } from '../../cdk/pipeline-stack.js';
import type { PipelineConfigInput } from '../../lib/config/schema.js';
import {
  AUDIT_TABLE,
  BLOB_BUCKET,
  ONCE_TABLE,
  STAGE_DEFINITIONS,
  VISIBILITY_FACTOR,
} from '../../lib/infra/definitions.js';
import { STAGES, type StageName } from '../../lib/pipeline/topology.js';
import { cdkJsonContext, IMPORTED_RECIPIENT_KEY_ARN, testApp, validConfig } from './fixtures.js';

type Json = Record<string, unknown>;
interface Statement {
  Effect: string;
  Action: string | string[];
  Resource?: unknown;
  Principal?: unknown;
  Condition?: unknown;
}
interface Resource {
  Type: string;
  Properties: Json;
}

const ALARM_TOPIC_ARN = 'arn:aws:sns:eu-west-2:123456789012:itk3-alarms';
const SENDER_ACCOUNT = '210987654321';

let app: App;
let stack: Itk3PipelineStack;
let template: Template;
let resources: Record<string, Resource>;
let config: PipelineConfigInput;

const arr = <T>(v: T | T[] | undefined): T[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);
const logicalId = (construct: { node: { defaultChild?: unknown } }): string =>
  stack.getLogicalId(construct.node.defaultChild as never);
const getAtt = (id: string) => ({ 'Fn::GetAtt': [id, 'Arn'] });
const roleId = (stage: StageName | 'ingest') =>
  logicalId(
    (stage === 'ingest' ? stack.pipeline.ingestion.fn : stack.pipeline.stages[stage].fn).executionRole,
  );
const ofType = (type: string) => Object.entries(resources).filter(([, r]) => r.Type === type);

/** Every IAM policy statement with the logical ids of the roles it is attached to. */
function iamStatements(): { roles: string[]; statement: Statement }[] {
  return ofType('AWS::IAM::Policy').flatMap(([, r]) => {
    const roles = arr(r.Properties.Roles as { Ref: string }[]).map((ref) => ref.Ref);
    const doc = r.Properties.PolicyDocument as { Statement: Statement[] };
    return doc.Statement.map((statement) => ({ roles, statement }));
  });
}

/** Does a statement's Resource name this key (by GetAtt of its logical id, or by ARN)? */
function touches(statement: Statement, key: kms.IKey): boolean {
  const ref = key.node.defaultChild ? getAtt(logicalId(key)) : key.keyArn;
  return arr(statement.Resource).some((r) => JSON.stringify(r) === JSON.stringify(ref));
}

function functionOf(stage: StageName | 'ingest'): Json {
  const fn = stage === 'ingest' ? stack.pipeline.ingestion.fn : stack.pipeline.stages[stage].fn;
  return resources[logicalId(fn)]!.Properties;
}

function envOf(stage: StageName | 'ingest'): Record<string, unknown> {
  return (functionOf(stage).Environment as { Variables: Record<string, unknown> }).Variables;
}

beforeAll(async () => {
  config = await validConfig();
  app = testApp(mkdtempSync(join(tmpdir(), 'itk3-cdk-')));
  // The alarm topic is imported by ARN; an import needs a stack, and CloudFormation refuses empty ones.
  const shared = new Stack(app, 'Shared');
  new CfnWaitConditionHandle(shared, 'Placeholder');
  stack = new Itk3PipelineStack(app, 'Itk3PipelineTest', {
    config,
    alarmTopic: sns.Topic.fromTopicArn(shared, 'Alarms', ALARM_TOPIC_ARN),
    directIngestionPrincipals: [new iam.AccountPrincipal(SENDER_ACCOUNT)],
    stages: {
      decrypt: { maxReceiveCount: 3, batchSize: 5, maxConcurrency: 20 },
      verify: {
        reservedConcurrency: 10,
        memoryMb: 2048,
        timeoutSeconds: 45,
        maxBatchingWindowSeconds: 5,
      },
    },
  });
  template = Template.fromStack(stack);
  resources = template.toJSON().Resources as Record<string, Resource>;
});

describe('keys', () => {
  it('creates an RSA_4096 decryption key per recipient kid, and references an existing one', () => {
    const owned = stack.pipeline.keys.recipientKeys.filter((k) => k.owned).map((k) => k.kid);
    expect(owned).toEqual(['a83627-enc-1', 'b12345-enc-1']);
    const imported = stack.pipeline.keys.recipientKeys.find((k) => !k.owned);
    expect(imported?.key.keyArn).toBe(IMPORTED_RECIPIENT_KEY_ARN);
    template.resourcePropertiesCountIs(
      'AWS::KMS::Key',
      { KeySpec: 'RSA_4096', KeyUsage: 'ENCRYPT_DECRYPT' },
      owned.length,
    );
  });

  it('creates an ECC_NIST_P256 signing key and a rotated symmetric data key', () => {
    template.resourcePropertiesCountIs(
      'AWS::KMS::Key',
      { KeySpec: 'ECC_NIST_P256', KeyUsage: 'SIGN_VERIFY' },
      1,
    );
    template.hasResourceProperties('AWS::KMS::Key', {
      EnableKeyRotation: true,
      KeySpec: Match.absent(),
    });
  });

  it('lets exactly one role — decrypt — call kms:Decrypt with the recipient keys', () => {
    for (const { key } of stack.pipeline.keys.recipientKeys) {
      const roles = iamStatements()
        .filter(({ statement }) => statement.Effect === 'Allow' && touches(statement, key))
        .filter(({ statement }) => arr(statement.Action).includes('kms:Decrypt'))
        .flatMap(({ roles }) => roles);
      expect(new Set(roles)).toEqual(new Set([roleId('decrypt')]));
    }
  });

  it('lets exactly one role — deliver — sign with the response-signing key', () => {
    const key = stack.pipeline.keys.signingKey!.key;
    const grants = iamStatements().filter(({ statement }) => touches(statement, key));
    expect(new Set(grants.flatMap(({ roles }) => roles))).toEqual(new Set([roleId('deliver')]));
    expect(grants.flatMap(({ statement }) => arr(statement.Action)).sort()).toEqual([
      'kms:GetPublicKey',
      'kms:Sign',
    ]);
  });

  it('names the same single role in the key policies of the keys it creates', () => {
    const expectations = [
      ...stack.pipeline.keys.recipientKeys
        .filter((k) => k.owned)
        .map((k) => ({ key: k.key, role: roleId('decrypt'), ops: ['kms:Decrypt'] })),
      {
        key: stack.pipeline.keys.signingKey!.key,
        role: roleId('deliver'),
        ops: ['kms:Sign', 'kms:GetPublicKey'],
      },
    ];
    for (const { key, role, ops } of expectations) {
      const policy = resources[logicalId(key)]!.Properties.KeyPolicy as { Statement: Statement[] };
      const users = policy.Statement.filter((s) =>
        arr(s.Action).some(
          (a) => ['kms:Decrypt', 'kms:Sign', 'kms:CreateGrant'].includes(a) || a.includes('*'),
        ),
      );
      expect(users).toHaveLength(1);
      expect(users[0]!.Principal).toEqual({ AWS: getAtt(role) });
      expect(arr(users[0]!.Action).sort()).toEqual([...ops].sort());
    }
  });

  it('has no wildcard action or resource in any IAM statement that touches a KMS key', () => {
    const keyStatements = iamStatements()
      .map(({ statement }) => statement)
      .filter((s) => arr(s.Action).some((a) => a.startsWith('kms:')));
    expect(keyStatements.length).toBeGreaterThan(0);
    for (const s of keyStatements) {
      for (const action of arr(s.Action)) expect(action).not.toContain('*');
      for (const resource of arr(s.Resource)) expect(JSON.stringify(resource)).not.toContain('*');
    }
  });

  it('has no wildcard action in the key policies of the private keys', () => {
    const keys = [
      ...stack.pipeline.keys.recipientKeys.filter((k) => k.owned),
      stack.pipeline.keys.signingKey!,
    ];
    for (const { key } of keys) {
      const policy = resources[logicalId(key)]!.Properties.KeyPolicy as { Statement: Statement[] };
      for (const s of policy.Statement) for (const a of arr(s.Action)) expect(a).not.toContain('*');
    }
  });

  it('gives decrypt the recipient key map and deliver the signing key map, and nobody else a key', () => {
    const decryptKeys = envOf('decrypt').ITK3_KMS_KEYS as string;
    expect(JSON.stringify(decryptKeys)).toContain('a83627-enc-1');
    expect(JSON.stringify(decryptKeys)).toContain('a83627-enc-2');
    expect(JSON.stringify(decryptKeys)).toContain(IMPORTED_RECIPIENT_KEY_ARN);
    expect(JSON.stringify(envOf('deliver').ITK3_KMS_KEYS)).toContain('gw-response-1');
    for (const stage of ['ingest', 'authenticate', 'authorise', 'verify'] as const) {
      expect(envOf(stage).ITK3_KMS_KEYS).toBe('{}');
    }
  });

  it('lets deliver alone sign audit checkpoints, with the response-signing key it may already use', () => {
    expect(envOf('deliver').ITK3_AUDIT_CHECKPOINT_KID).toBe('gw-response-1');
    for (const stage of ['ingest', 'authenticate', 'authorise', 'decrypt', 'verify'] as const) {
      expect(envOf(stage).ITK3_AUDIT_CHECKPOINT_KID).toBeUndefined();
    }
  });
});

describe('queues', () => {
  it('encrypts the inbound queue and its DLQ with the inbound key, the other eight with the data key', () => {
    const dataKey = getAtt(logicalId(stack.pipeline.keys.dataKey));
    const inboundKey = getAtt(logicalId(stack.pipeline.keys.inboundKey));
    const inbound = [
      logicalId(stack.pipeline.stages.authenticate.queue),
      logicalId(stack.pipeline.stages.authenticate.deadLetterQueue),
    ];
    const queues = ofType('AWS::SQS::Queue');
    expect(queues).toHaveLength(10);
    for (const [id, q] of queues) {
      expect(q.Properties.KmsMasterKeyId).toEqual(inbound.includes(id) ? inboundKey : dataKey);
    }
    // Nothing else the pipeline stores uses the inbound key.
    const users = Object.entries(resources)
      .filter(([, r]) => r.Type !== 'AWS::IAM::Policy' && r.Type !== 'AWS::KMS::Key')
      .filter(([, r]) => JSON.stringify(r.Properties ?? {}).includes(JSON.stringify(inboundKey)))
      .map(([id]) => id);
    expect(users.sort()).toEqual([...inbound].sort());
  });

  it('denies non-TLS access to every queue', () => {
    const queueIds = ofType('AWS::SQS::Queue').map(([id]) => id);
    for (const id of queueIds) {
      template.hasResourceProperties('AWS::SQS::QueuePolicy', {
        Queues: [{ Ref: id }],
        PolicyDocument: {
          Statement: Match.arrayWith([
            Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
          ]),
        },
      });
    }
  });

  it('puts a dead-letter queue behind every source queue with the configured maxReceiveCount', () => {
    for (const stage of STAGES) {
      const s = stack.pipeline.stages[stage];
      const expected = stage === 'decrypt' ? 3 : STAGE_DEFINITIONS[stage].maxReceiveCount;
      expect(resources[logicalId(s.queue)]!.Properties.RedrivePolicy).toEqual({
        deadLetterTargetArn: getAtt(logicalId(s.deadLetterQueue)),
        maxReceiveCount: expected,
      });
      expect(resources[logicalId(s.deadLetterQueue)]!.Properties.MessageRetentionPeriod).toBe(14 * 24 * 3600);
    }
  });

  it('sets every visibility timeout to at least six times its function timeout', () => {
    for (const stage of STAGES) {
      const s = stack.pipeline.stages[stage];
      const visibility = resources[logicalId(s.queue)]!.Properties.VisibilityTimeout as number;
      const timeout = functionOf(stage).Timeout as number;
      expect(visibility).toBeGreaterThanOrEqual(VISIBILITY_FACTOR * timeout);
    }
    expect(functionOf('verify').Timeout).toBe(45);
    expect(resources[logicalId(stack.pipeline.stages.verify.queue)]!.Properties.VisibilityTimeout).toBe(
      45 * 6 + 5,
    );
  });

  it('lets a function send only to the queues it forwards to', () => {
    const sends: Record<StageName | 'ingest', StageName[]> = {
      ingest: ['authenticate'],
      authenticate: ['authorise', 'deliver'],
      authorise: ['decrypt', 'deliver'],
      decrypt: ['verify', 'deliver'],
      verify: ['deliver'],
      deliver: [],
    };
    const queueIdToStage = new Map(STAGES.map((s) => [logicalId(stack.pipeline.stages[s].queue), s]));
    for (const [sender, targets] of Object.entries(sends) as [StageName | 'ingest', StageName[]][]) {
      const allowed = iamStatements()
        .filter(
          ({ roles, statement }) =>
            roles.includes(roleId(sender)) && arr(statement.Action).includes('sqs:SendMessage'),
        )
        .flatMap(({ statement }) => arr(statement.Resource))
        .map((r) => queueIdToStage.get((r as { 'Fn::GetAtt'?: string[] })['Fn::GetAtt']?.[0] ?? ''))
        .filter((s) => s !== undefined);
      expect(new Set(allowed)).toEqual(new Set(targets));
      const urlVars = Object.keys(envOf(sender)).filter((k) => k.startsWith('ITK3_QUEUE_URL_'));
      expect(urlVars.sort()).toEqual(targets.map((t) => `ITK3_QUEUE_URL_${t.toUpperCase()}`).sort());
    }
  });

  it('lets the configured sender account put messages on the inbound queue and encrypt to it with the inbound key only', () => {
    const inbound = logicalId(stack.pipeline.inboundQueue);
    const [, policy] = ofType('AWS::SQS::QueuePolicy').find(
      ([, p]) => JSON.stringify(p.Properties.Queues) === JSON.stringify([{ Ref: inbound }]),
    )!;
    const allow = (policy.Properties.PolicyDocument as { Statement: Statement[] }).Statement.filter(
      (st) => st.Effect === 'Allow',
    );
    expect(allow).toHaveLength(1);
    expect(JSON.stringify(allow[0]!.Principal)).toContain(`:iam::${SENDER_ACCOUNT}:root`);
    expect(arr(allow[0]!.Action)).toContain('sqs:SendMessage');

    const keyPolicy = resources[logicalId(stack.pipeline.keys.inboundKey)]!.Properties.KeyPolicy as {
      Statement: Statement[];
    };
    const forSender = keyPolicy.Statement.filter((st) =>
      JSON.stringify(st.Principal).includes(SENDER_ACCOUNT),
    );
    expect(forSender).toHaveLength(1);
    expect(arr(forSender[0]!.Action).sort()).toEqual(['kms:Decrypt', 'kms:GenerateDataKey']);
    // Only as SQS uses the key, and only for this account's queues (the inbound key is used by the
    // inbound queue and its DLQ alone, and the partner may send to the inbound queue alone).
    const conditions = forSender[0]!.Condition as Record<string, Record<string, unknown>>;
    expect(conditions.StringEquals).toEqual({
      'kms:ViaService': { 'Fn::Join': ['', ['sqs.', { Ref: 'AWS::Region' }, '.amazonaws.com']] },
    });
    expect(JSON.stringify(conditions.StringLike?.['kms:EncryptionContext:aws:sqs:arn'])).toMatch(
      /arn:.*:sqs:.*AWS::Region.*AWS::AccountId.*:\*/,
    );
  });

  it('names the partner on no key but the inbound key, and in no IAM policy of the stack', () => {
    const keysNamingPartner = ofType('AWS::KMS::Key')
      .filter(([, k]) => JSON.stringify(k.Properties.KeyPolicy).includes(SENDER_ACCOUNT))
      .map(([id]) => id);
    expect(keysNamingPartner).toEqual([logicalId(stack.pipeline.keys.inboundKey)]);
    const dataKeyPolicy = JSON.stringify(
      resources[logicalId(stack.pipeline.keys.dataKey)]!.Properties.KeyPolicy,
    );
    expect(dataKeyPolicy).not.toContain(SENDER_ACCOUNT);
    expect(
      iamStatements().filter(({ statement }) => JSON.stringify(statement).includes(SENDER_ACCOUNT)),
    ).toEqual([]);
  });

  it('with physical names, the partner may use the inbound key for the inbound queue ARN exactly', () => {
    // No bundling: only the key policy is read.
    const unbundled = new App({ context: { ...cdkJsonContext(), 'aws:cdk:bundling-stacks': [] } });
    const named = new Itk3PipelineStack(unbundled, 'Itk3PipelineNamed', {
      config,
      physicalNames: true,
      directIngestionPrincipals: [new iam.AccountPrincipal(SENDER_ACCOUNT)],
    });
    const namedResources = Template.fromStack(named).toJSON().Resources as Record<string, Resource>;
    const inboundKeyId = named.getLogicalId(named.pipeline.keys.inboundKey.node.defaultChild as never);
    const policy = namedResources[inboundKeyId]!.Properties.KeyPolicy as { Statement: Statement[] };
    const forSender = policy.Statement.filter((st) => JSON.stringify(st.Principal).includes(SENDER_ACCOUNT));
    expect(forSender).toHaveLength(1);
    const conditions = forSender[0]!.Condition as Record<string, Record<string, unknown>>;
    expect(conditions.StringLike).toBeUndefined();
    expect(JSON.stringify(conditions.StringEquals?.['kms:EncryptionContext:aws:sqs:arn'])).toMatch(
      new RegExp(`:sqs:.*AWS::Region.*AWS::AccountId.*:${STAGE_DEFINITIONS.authenticate.queue}"`),
    );
  });

  it('lets ingest use the inbound key only through SQS, and no other stage function use it at all', () => {
    const inboundKey = getAtt(logicalId(stack.pipeline.keys.inboundKey));
    const byIngest = iamStatements().filter(
      ({ roles, statement }) =>
        roles.includes(roleId('ingest')) &&
        arr(statement.Resource).some((r) => JSON.stringify(r) === JSON.stringify(inboundKey)),
    );
    expect(byIngest).toHaveLength(1);
    expect(arr(byIngest[0]!.statement.Action).sort()).toEqual(['kms:Decrypt', 'kms:GenerateDataKey']);
    expect(JSON.stringify(byIngest[0]!.statement.Condition)).toContain('kms:ViaService');
    // authenticate consumes its queue (kms:Decrypt, from the event source grant); nobody else.
    for (const stage of ['authorise', 'decrypt', 'verify', 'deliver'] as const) {
      const uses = iamStatements().filter(
        ({ roles, statement }) =>
          roles.includes(roleId(stage)) &&
          arr(statement.Resource).some((r) => JSON.stringify(r) === JSON.stringify(inboundKey)),
      );
      expect(uses, stage).toEqual([]);
    }
  });
});

describe('functions', () => {
  it('runs every function on nodejs22.x, arm64, without X-Ray tracing (no tracer in the bundles), with its own log group', () => {
    const fns = ofType('AWS::Lambda::Function');
    expect(fns).toHaveLength(6);
    for (const [, fn] of fns) {
      expect(fn.Properties.Runtime).toBe('nodejs22.x');
      expect(fn.Properties.Architectures).toEqual(['arm64']);
      expect(fn.Properties.TracingConfig).toBeUndefined();
      expect(fn.Properties.Handler).toBe('index.handler');
      expect(fn.Properties.LoggingConfig).toMatchObject({ LogGroup: { Ref: expect.any(String) } });
      const env = (fn.Properties.Environment as { Variables: Json }).Variables;
      expect(env).toMatchObject({
        NODE_OPTIONS: '--enable-source-maps',
        POWERTOOLS_SERVICE_NAME: 'itk3-pipeline',
        POWERTOOLS_METRICS_NAMESPACE: 'ITK3Pipeline',
        POWERTOOLS_LOG_LEVEL: 'INFO',
        POWERTOOLS_LOGGER_LOG_EVENT: 'false',
        ITK3_ONCE_TABLE: { Ref: logicalId(stack.pipeline.state.onceTable) },
        ITK3_AUDIT_TABLE: { Ref: logicalId(stack.pipeline.state.auditTable) },
        ITK3_BLOB_BUCKET: { Ref: logicalId(stack.pipeline.state.blobBucket) },
      });
    }
  });

  it('gives every log group a retention and the data key', () => {
    const dataKey = getAtt(logicalId(stack.pipeline.keys.dataKey));
    const groups = ofType('AWS::Logs::LogGroup');
    expect(groups).toHaveLength(7);
    for (const [, g] of groups) {
      expect(g.Properties.RetentionInDays).toBe(90);
      expect(g.Properties.KmsKeyId).toEqual(dataKey);
    }
  });

  it('attaches no managed policies to the function roles', () => {
    for (const [, role] of ofType('AWS::IAM::Role'))
      expect(role.Properties.ManagedPolicyArns).toBeUndefined();
  });

  it('applies per-stage settings and keeps the definitions elsewhere', () => {
    expect(functionOf('verify')).toMatchObject({ MemorySize: 2048, ReservedConcurrentExecutions: 10 });
    expect(functionOf('authenticate')).toMatchObject({ MemorySize: 1024, Timeout: 30 });
    expect(functionOf('authenticate').ReservedConcurrentExecutions).toBeUndefined();
    expect(functionOf('decrypt').Timeout).toBe(60);
  });

  it('wires each stage queue to its function with partial batch failure reporting', () => {
    const mappings = ofType('AWS::Lambda::EventSourceMapping');
    expect(mappings).toHaveLength(5);
    for (const stage of STAGES) {
      const s = stack.pipeline.stages[stage];
      const [, m] = mappings.find(
        ([, r]) => JSON.stringify(r.Properties.EventSourceArn) === JSON.stringify(getAtt(logicalId(s.queue))),
      )!;
      expect(m.Properties.FunctionName).toEqual({ Ref: logicalId(s.fn) });
      expect(m.Properties.FunctionResponseTypes).toEqual(['ReportBatchItemFailures']);
      const batch = stage === 'decrypt' ? 5 : STAGE_DEFINITIONS[stage].batchSize;
      expect(m.Properties.BatchSize).toBe(batch);
      const window = stage === 'verify' ? 5 : STAGE_DEFINITIONS[stage].maxBatchingWindowSeconds;
      expect(m.Properties.MaximumBatchingWindowInSeconds).toBe(window);
      if (stage === 'decrypt') expect(m.Properties.ScalingConfig).toEqual({ MaximumConcurrency: 20 });
      else expect(m.Properties.ScalingConfig).toBeUndefined();
    }
  });

  it('bundles each handler as minified ESM with a source map, the SDK left to the runtime and required, and the validated config beside it', () => {
    const assembly = app.synth();
    const manifest = JSON.parse(
      readFileSync(join(assembly.directory, `${stack.artifactId}.assets.json`), 'utf8'),
    ) as { files: Record<string, { source: { path: string } }> };
    const assetDirs = Object.values(manifest.files)
      .map((f) => join(assembly.directory, f.source.path))
      .filter((dir) => existsSync(join(dir, HANDLER_BUNDLE_FILE)));
    expect(assetDirs).toHaveLength(6);
    for (const dir of assetDirs) {
      const wrapper = readFileSync(join(dir, 'index.mjs'), 'utf8');
      expect(wrapper).toBe(handlerWrapper(JSON.stringify(stack.pipeline.config.doc), {}));
      const code = readFileSync(join(dir, HANDLER_BUNDLE_FILE), 'utf8');
      expect(existsSync(join(dir, `${HANDLER_BUNDLE_FILE}.map`))).toBe(true);
      expect(code).toContain(`sourceMappingURL=${HANDLER_BUNDLE_FILE}.map`);
      // The Lambda runtime provides the SDK: not inlined, and loaded through one injected
      // createRequire (CommonJS: faster than an ES import of it, and it searches NODE_PATH, where
      // the runtime keeps the SDK), never through an ES import or esbuild's throwing require shim.
      expect(code).toMatch(/\("@aws-sdk\/client-[a-z0-9-]+"\)/);
      expect(code).not.toMatch(/from\s*"@aws-sdk\//);
      expect(code).toMatch(/import\s*\{\s*createRequire as [\w$]+\s*\}\s*from\s*"node:module"/);
      expect(code.split('(import.meta.url)')).toHaveLength(2);
      expect(code).not.toContain('Dynamic require of');
    }
  });
});

describe('state', () => {
  it('keeps the once-store and audit tables on demand, with TTL, PITR and the data key', () => {
    const dataKey = getAtt(logicalId(stack.pipeline.state.onceTable.encryptionKey!));
    for (const def of [ONCE_TABLE, AUDIT_TABLE]) {
      template.hasResourceProperties('AWS::DynamoDB::Table', {
        BillingMode: 'PAY_PER_REQUEST',
        KeySchema: Match.arrayWith([{ AttributeName: def.partitionKey, KeyType: 'HASH' }]),
        TimeToLiveSpecification: { AttributeName: def.ttlAttribute, Enabled: true },
        PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
        SSESpecification: { SSEEnabled: true, SSEType: 'KMS', KMSMasterKeyId: dataKey },
        DeletionProtectionEnabled: true,
      });
    }
    template.resourceCountIs('AWS::DynamoDB::Table', 2);
  });

  it('retains keys, tables, buckets and log groups by default', () => {
    for (const type of ['AWS::KMS::Key', 'AWS::DynamoDB::Table', 'AWS::S3::Bucket', 'AWS::Logs::LogGroup']) {
      const all = template.findResources(type);
      for (const r of Object.values(all)) expect(r.DeletionPolicy).toBe('Retain');
    }
  });

  it('blocks public access and encrypts every bucket; the blob bucket with the data key', () => {
    const buckets = ofType('AWS::S3::Bucket');
    expect(buckets).toHaveLength(2);
    for (const [, b] of buckets) {
      expect(b.Properties.PublicAccessBlockConfiguration).toEqual({
        BlockPublicAcls: true,
        BlockPublicPolicy: true,
        IgnorePublicAcls: true,
        RestrictPublicBuckets: true,
      });
      expect(b.Properties.BucketEncryption).toBeDefined();
    }
    const blob = resources[logicalId(stack.pipeline.state.blobBucket)]!.Properties;
    expect(blob.BucketEncryption).toEqual({
      ServerSideEncryptionConfiguration: [
        {
          BucketKeyEnabled: true,
          ServerSideEncryptionByDefault: {
            SSEAlgorithm: 'aws:kms',
            KMSMasterKeyID: getAtt(logicalId(stack.pipeline.keys.dataKey)),
          },
        },
      ],
    });
    expect(blob.VersioningConfiguration).toEqual({ Status: 'Enabled' });
    expect(blob.LoggingConfiguration).toMatchObject({
      DestinationBucketName: { Ref: logicalId(stack.pipeline.state.accessLogBucket!) },
    });
    expect(blob.LifecycleConfiguration).toMatchObject({
      Rules: expect.arrayContaining([
        expect.objectContaining({
          Prefix: BLOB_BUCKET.claimCheckPrefix,
          ExpirationInDays: BLOB_BUCKET.expireDays,
        }),
      ]),
    });
    // Claim checks are removed at the end of their trace; what is left (an anonymous sender's, a
    // failed delete) expires within two days, old versions a day later (issue 9, class 4).
    const claimCheckRule = (
      blob.LifecycleConfiguration as {
        Rules: { Prefix?: string; ExpirationInDays?: number; NoncurrentVersionExpiration?: unknown }[];
      }
    ).Rules.find((r) => r.Prefix === BLOB_BUCKET.claimCheckPrefix);
    expect(claimCheckRule?.ExpirationInDays).toBeGreaterThanOrEqual(1);
    expect(claimCheckRule?.ExpirationInDays).toBeLessThanOrEqual(2);
    expect(claimCheckRule?.NoncurrentVersionExpiration).toEqual({ NoncurrentDays: 1 });
  });

  it('denies non-TLS access to every bucket', () => {
    for (const [id] of ofType('AWS::S3::Bucket')) {
      template.hasResourceProperties('AWS::S3::BucketPolicy', {
        Bucket: { Ref: id },
        PolicyDocument: {
          Statement: Match.arrayWith([
            Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
          ]),
        },
      });
    }
  });

  it('gives the once-store to the five stages (outcome markers, jti, duplicates, first response signature), not to ingest', () => {
    const once = getAtt(logicalId(stack.pipeline.state.onceTable));
    const roles = iamStatements()
      .filter(({ statement }) =>
        arr(statement.Resource).some((r) => JSON.stringify(r) === JSON.stringify(once)),
      )
      .flatMap(({ roles }) => roles);
    expect(new Set(roles)).toEqual(new Set(STAGES.map(roleId)));
  });

  it('gives the audit table and claim checks (read, write, remove) to the five stages; ingest only puts and removes claim checks', () => {
    const audit = getAtt(logicalId(stack.pipeline.state.auditTable));
    const auditStatements = iamStatements().filter(({ statement }) =>
      arr(statement.Resource).some((r) => JSON.stringify(r) === JSON.stringify(audit)),
    );
    expect(new Set(auditStatements.flatMap(({ roles }) => roles))).toEqual(new Set(STAGES.map(roleId)));
    for (const { statement } of auditStatements) {
      expect(arr(statement.Action).sort()).toEqual(['dynamodb:PutItem', 'dynamodb:Query']);
    }
    const claimChecks = (role: string) =>
      iamStatements()
        .filter(
          ({ roles, statement }) =>
            roles.includes(role) &&
            arr(statement.Resource).some((r) =>
              JSON.stringify(r).includes(`/${BLOB_BUCKET.claimCheckPrefix}*`),
            ),
        )
        .flatMap(({ statement }) => arr(statement.Action))
        .sort();
    for (const stage of STAGES) {
      expect(claimChecks(roleId(stage)), stage).toEqual(['s3:DeleteObject', 's3:GetObject', 's3:PutObject']);
    }
    expect(claimChecks(roleId('ingest'))).toEqual(['s3:DeleteObject', 's3:PutObject']);
    const ingestActions = iamStatements()
      .filter(({ roles }) => roles.includes(roleId('ingest')))
      .flatMap(({ statement }) => arr(statement.Action));
    expect(ingestActions.filter((a) => a.startsWith('dynamodb:'))).toEqual([]);
  });

  it('lets deliver read back an object under a delivery name (content-hash comparison on a 412)', () => {
    const actions = iamStatements()
      .filter(
        ({ roles, statement }) =>
          roles.includes(roleId('deliver')) &&
          arr(statement.Resource).some((r) => JSON.stringify(r).includes(':s3:::rx-inbox/itk3/*')),
      )
      .flatMap(({ statement }) => arr(statement.Action))
      .sort();
    expect(actions).toEqual(['s3:GetObject', 's3:PutObject']);
  });

  it('lets only deliver write to the configured delivery targets', () => {
    const targets = [
      ':sqs:eu-west-2:123456789012:rx-queue',
      ':s3:::rx-inbox/itk3/*',
      '/deliveries/delivered/B12345/*',
    ];
    for (const target of targets) {
      const roles = iamStatements()
        .filter(({ statement }) => arr(statement.Resource).some((r) => JSON.stringify(r).includes(target)))
        .flatMap(({ roles }) => roles);
      expect(new Set(roles)).toEqual(new Set([roleId('deliver')]));
    }
  });
});

describe('ingestion and observability', () => {
  it('routes POST /messages to ingest on a throttled, access-logged stage', () => {
    template.hasResourceProperties('AWS::ApiGatewayV2::Route', { RouteKey: 'POST /messages' });
    template.hasResourceProperties('AWS::ApiGatewayV2::Stage', {
      StageName: '$default',
      DefaultRouteSettings: { ThrottlingRateLimit: 50, ThrottlingBurstLimit: 100 },
      AccessLogSettings: { DestinationArn: Match.anyValue(), Format: Match.stringLikeRegexp('requestId') },
    });
  });

  it('alarms on every dead-letter queue, oldest message age and function errors, to the topic', () => {
    const alarms = ofType('AWS::CloudWatch::Alarm').map(([, a]) => a.Properties);
    expect(alarms).toHaveLength(5 + 5 + 6);
    const byMetric = (name: string) => alarms.filter((a) => a.MetricName === name);
    expect(byMetric('ApproximateNumberOfMessagesVisible')).toHaveLength(5);
    expect(byMetric('ApproximateAgeOfOldestMessage')).toHaveLength(5);
    expect(byMetric('Errors')).toHaveLength(6);
    for (const a of byMetric('ApproximateNumberOfMessagesVisible')) {
      expect(a).toMatchObject({ Threshold: 0, ComparisonOperator: 'GreaterThanThreshold' });
    }
    for (const a of alarms) expect(a.AlarmActions).toEqual([ALARM_TOPIC_ARN]);
    template.resourceCountIs('AWS::CloudWatch::Dashboard', 1);
  });

  it('publishes the outputs an operator needs', () => {
    const outputs = Object.keys(template.toJSON().Outputs as Json);
    expect(outputs).toEqual(
      expect.arrayContaining([
        'HttpApiUrl',
        'InboundQueueUrl',
        'BlobBucketName',
        'OnceTableName',
        'AuditTableName',
        'RecipientKeyArns',
        'ResponseSigningKeyArn',
      ]),
    );
  });
});

describe('cdk-nag', () => {
  it.each([0, 1])('pack %i reports no unacknowledged finding', (index) => {
    const pack = nagPacks(app)[index]!;
    const report = pack.validateScope(stack);
    const findings = report.violations.map(
      (v) => `${v.ruleName} (${v.severity}): ${v.violatingResources.map((r) => r.constructPath).join(', ')}`,
    );
    expect(findings).toEqual([]);
  });
});
