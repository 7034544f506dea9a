/**
 * The optional MESH poller of the pipeline stack (issue 12, item 5): a schedule per mailbox, a
 * scheduler role that may only invoke the poller, a secret per mailbox (created with a placeholder,
 * or imported), least-privilege grants for the poller, and zero unacknowledged cdk-nag findings.
 * Bundling is skipped (`aws:cdk:bundling-stacks`): these are template assertions; `npm run synth`
 * with `itk3:meshMailboxes` bundles the handler for real.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { App, CfnWaitConditionHandle, Duration, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { beforeAll, describe, expect, it } from 'vitest';
import { CONTEXT, meshFromContext } from '../../cdk/build-app.js';
import {
  MeshPoller,
  type MeshPollerSettings,
  resolveMeshSettings,
} from '../../cdk/constructs/mesh-poller.js';
import { WildcardJustifications } from '../../cdk/constructs/wildcard-justifications.js';
import { nagPacks } from '../../cdk/nag.js';
import { Itk3PipelineStack } from '../../cdk/pipeline-stack.js';
import { ConfigError } from '../../lib/errors.js';
import { cdkJsonContext, PROJECT_ROOT, validConfig } from './fixtures.js';

type Json = Record<string, unknown>;
interface Statement {
  Effect: string;
  Action: string | string[];
  Resource?: unknown;
  Condition?: Json;
}
interface Resource {
  Type: string;
  Properties: Json;
}

const IMPORTED_SECRET_ARN =
  'arn:aws:secretsmanager:eu-west-2:123456789012:secret:partner/mesh/X26XYZ9-AbCdEf';
const ALARM_TOPIC_ARN = 'arn:aws:sns:eu-west-2:123456789012:itk3-alarms';

let app: App;
let stack: Itk3PipelineStack;
let template: Template;
let resources: Record<string, Resource>;

const arr = <T>(v: T | T[] | undefined): T[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);
const idOf = (construct: { node: { defaultChild?: unknown } }) =>
  stack.getLogicalId((construct.node.defaultChild ?? construct) as never);
const ofType = (type: string) => Object.entries(resources).filter(([, r]) => r.Type === type);

/** Arrays in a stable order (policy minimisation sorts actions and may reorder resources). */
const sorted = <T>(v: T): T =>
  Array.isArray(v) ? ([...v].sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b))) as T) : v;

/** Every statement of the identity policies attached to the role with this logical id, normalised. */
function statementsOf(roleId: string): Statement[] {
  return ofType('AWS::IAM::Policy')
    .filter(([, r]) => arr(r.Properties.Roles as { Ref: string }[]).some((ref) => ref.Ref === roleId))
    .flatMap(([, r]) => (r.Properties.PolicyDocument as { Statement: Statement[] }).Statement)
    .map((s) => ({
      ...s,
      Action: sorted(s.Action),
      ...(s.Resource ? { Resource: sorted(s.Resource) } : {}),
    }));
}
const poller = () => stack.pipeline.meshPoller!;
const pollerRoleId = () => stack.getLogicalId(poller().fn.executionRole.node.defaultChild as never);
const roleIdOf = (stage: 'authenticate' | 'deliver') =>
  stack.getLogicalId(stack.pipeline.stages[stage].fn.executionRole.node.defaultChild as never);
const envOf = (fn: { node: { defaultChild?: unknown } }) =>
  (resources[idOf(fn)]!.Properties.Environment as { Variables: Json }).Variables;

const MESH_URL = 'https://msg.intspineservices.nhs.uk';

/** The test configuration with the `mesh` section the stack must agree with (no secret refs: AWS). */
async function meshConfig() {
  const base = await validConfig();
  return {
    ...base,
    recipients: [
      ...base.recipients,
      {
        ods: 'C00003',
        keys: [{ kid: 'c00003-enc-1' }],
        target: { type: 'folder' as const, path: 'delivered/C00003' },
      },
    ],
    mesh: {
      url: MESH_URL,
      mailboxes: [
        { mailbox: 'X26ABC1', recipients: ['A83627'] },
        { mailbox: 'X26ABC2', recipients: ['B12345'] },
        { mailbox: 'X26XYZ9', recipients: ['C00003'] },
      ],
    },
  };
}

beforeAll(async () => {
  app = new App({
    context: { ...cdkJsonContext(), 'aws:cdk:bundling-stacks': [] },
    outdir: mkdtempSync(join(tmpdir(), 'itk3-cdk-mesh-')),
  });
  const shared = new Stack(app, 'Shared');
  new CfnWaitConditionHandle(shared, 'Placeholder');
  stack = new Itk3PipelineStack(app, 'Itk3MeshTest', {
    config: await meshConfig(),
    alarmTopic: sns.Topic.fromTopicArn(shared, 'Alarms', ALARM_TOPIC_ARN),
    mesh: {
      url: 'https://msg.intspineservices.nhs.uk',
      mailboxes: [
        { mailboxId: 'x26abc1', schedule: Duration.minutes(10) },
        { mailboxId: 'X26ABC2', schedule: Duration.minutes(1) },
        {
          mailboxId: 'X26XYZ9',
          secret: secretsmanager.Secret.fromSecretCompleteArn(shared, 'Partner', IMPORTED_SECRET_ARN),
        },
      ],
      limits: { maxMessages: 50 },
    },
  });
  template = Template.fromStack(stack);
  resources = template.toJSON().Resources as Record<string, Resource>;
});

describe('schedules', () => {
  it('creates one EventBridge Scheduler schedule per mailbox, invoking the poller with the mailbox id', () => {
    const schedules = ofType('AWS::Scheduler::Schedule').map(([, r]) => r.Properties);
    expect(schedules).toHaveLength(3);
    const fnArn = { 'Fn::GetAtt': [idOf(poller().fn), 'Arn'] };
    const roleArn = { 'Fn::GetAtt': [idOf(poller().schedulerRole), 'Arn'] };
    const byMailbox = Object.fromEntries(
      schedules.map((s) => [JSON.parse((s.Target as { Input: string }).Input).mailbox, s]),
    );
    expect(Object.keys(byMailbox).sort()).toEqual(['X26ABC1', 'X26ABC2', 'X26XYZ9']);
    expect(byMailbox.X26ABC1?.ScheduleExpression).toBe('rate(10 minutes)');
    expect(byMailbox.X26ABC2?.ScheduleExpression).toBe('rate(1 minute)');
    expect(byMailbox.X26XYZ9?.ScheduleExpression).toBe('rate(5 minutes)');
    for (const s of schedules) {
      expect(s).toMatchObject({
        State: 'ENABLED',
        FlexibleTimeWindow: { Mode: 'OFF' },
        Target: {
          Arn: fnArn,
          RoleArn: roleArn,
          RetryPolicy: { MaximumRetryAttempts: 0, MaximumEventAgeInSeconds: 60 },
        },
      });
    }
  });

  it('gives the scheduler a role of its own that may only invoke the poller function', () => {
    const role = resources[idOf(poller().schedulerRole)]!.Properties;
    expect((role.AssumeRolePolicyDocument as { Statement: Statement[] }).Statement).toEqual([
      {
        Effect: 'Allow',
        Action: 'sts:AssumeRole',
        Principal: { Service: 'scheduler.amazonaws.com' },
        Condition: { StringEquals: { 'aws:SourceAccount': { Ref: 'AWS::AccountId' } } },
      },
    ]);
    expect(role.ManagedPolicyArns).toBeUndefined();
    expect(statementsOf(idOf(poller().schedulerRole))).toEqual([
      {
        Effect: 'Allow',
        Action: 'lambda:InvokeFunction',
        Resource: { 'Fn::GetAtt': [idOf(poller().fn), 'Arn'] },
      },
    ]);
  });

  it('sets the poller’s timeout, async retries off, and an alarm on failed passes', () => {
    const fn = resources[idOf(poller().fn)]!.Properties;
    expect(fn).toMatchObject({ Timeout: 300, MemorySize: 1024, Architectures: ['arm64'] });
    expect(fn.VpcConfig).toBeUndefined(); // reaches MESH over the internet, mutual TLS
    template.hasResourceProperties('AWS::Lambda::EventInvokeConfig', {
      FunctionName: { Ref: idOf(poller().fn) },
      MaximumRetryAttempts: 0,
    });
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      MetricName: 'Errors',
      Dimensions: [{ Name: 'FunctionName', Value: { Ref: idOf(poller().fn) } }],
      AlarmActions: [ALARM_TOPIC_ARN],
    });
  });
});

describe('secrets', () => {
  it('creates a placeholder secret, encrypted with the data key, for each mailbox without one', () => {
    const created = ofType('AWS::SecretsManager::Secret').map(([, r]) => r.Properties);
    expect(created).toHaveLength(2);
    for (const s of created) {
      expect(s).toMatchObject({
        KmsKeyId: { 'Fn::GetAtt': [idOf(stack.pipeline.keys.dataKey), 'Arn'] },
        GenerateSecretString: { GenerateStringKey: 'placeholder' },
      });
      // No value in the template: the operator writes it after deployment.
      expect(s.SecretString).toBeUndefined();
    }
    expect(Object.keys(poller().secrets).sort()).toEqual(['X26ABC1', 'X26ABC2', 'X26XYZ9']);
    expect(poller().secrets.X26XYZ9?.secretArn).toBe(IMPORTED_SECRET_ARN);
  });

  it('tells the function which secret belongs to which mailbox, and the MESH URL', () => {
    const vars = (resources[idOf(poller().fn)]!.Properties.Environment as { Variables: Json }).Variables;
    expect(vars.ITK3_MESH_URL).toBe('https://msg.intspineservices.nhs.uk');
    expect(vars.ITK3_MESH_POLL_OPTIONS).toBe('{"maxMessages":50}');
    expect(vars.ITK3_QUEUE_URL_AUTHENTICATE).toEqual({ Ref: idOf(stack.pipeline.inboundQueue) });
    const map = JSON.stringify(stack.resolve(vars.ITK3_MESH_MAILBOXES));
    for (const secret of [poller().secrets.X26ABC1!, poller().secrets.X26ABC2!]) {
      expect(map).toContain(idOf(secret));
    }
    expect(map).toContain(IMPORTED_SECRET_ARN);
  });

  it('lets the poller and the deliver stage alone read the mailbox secrets, and nothing else in Secrets Manager', () => {
    const readers = ofType('AWS::IAM::Policy').filter(([, r]) =>
      (r.Properties.PolicyDocument as { Statement: Statement[] }).Statement.some((s) =>
        arr(s.Action).some((a) => a.startsWith('secretsmanager:')),
      ),
    );
    expect(readers.map(([, r]) => (r.Properties.Roles as { Ref: string }[])[0]?.Ref).sort()).toEqual(
      [pollerRoleId(), roleIdOf('deliver')].sort(),
    );
    const readBy = (roleId: string) =>
      statementsOf(roleId).filter((s) => arr(s.Action).some((a) => a.startsWith('secretsmanager:')));
    expect(readBy(roleIdOf('deliver'))).toEqual(readBy(pollerRoleId()));
    const read = readBy(pollerRoleId());
    expect(read).toEqual([
      {
        Effect: 'Allow',
        Action: 'secretsmanager:GetSecretValue',
        Resource: sorted([
          { Ref: idOf(poller().secrets.X26ABC1!) },
          { Ref: idOf(poller().secrets.X26ABC2!) },
          IMPORTED_SECRET_ARN,
        ]),
      },
    ]);
  });
});

describe('least privilege of the poller', () => {
  it('has exactly the actions a pass needs, each on its resource', () => {
    const actions = new Set(statementsOf(pollerRoleId()).flatMap((s) => arr(s.Action)));
    expect([...actions].sort()).toEqual(
      [
        'dynamodb:DeleteItem',
        'dynamodb:GetItem',
        'dynamodb:PutItem',
        'kms:Decrypt',
        'kms:DescribeKey',
        'kms:Encrypt',
        'kms:GenerateDataKey',
        'kms:Sign',
        'logs:CreateLogStream',
        'logs:PutLogEvents',
        's3:PutObject',
        'secretsmanager:GetSecretValue',
        'sqs:SendMessage',
      ].sort(),
    );
    for (const s of statementsOf(pollerRoleId()))
      expect(arr(s.Action).some((a) => a.endsWith('*'))).toBe(false);
  });

  it('touches only its own once-store items and mailbox leases (dynamodb:LeadingKeys), and appends to the audit', () => {
    const once = { 'Fn::GetAtt': [idOf(stack.pipeline.state.onceTable), 'Arn'] };
    const onOnce = statementsOf(pollerRoleId()).filter(
      (s) => JSON.stringify(arr(s.Resource)) === JSON.stringify([once]),
    );
    expect(onOnce).toEqual([
      {
        Effect: 'Allow',
        Action: ['dynamodb:GetItem', 'dynamodb:PutItem'],
        Resource: once,
        Condition: { 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': ['mesh#*'] } },
      },
      {
        Effect: 'Allow',
        Action: ['dynamodb:DeleteItem', 'dynamodb:PutItem'],
        Resource: once,
        Condition: { 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': ['lease#mesh#*'] } },
      },
    ]);
    const audit = statementsOf(pollerRoleId()).filter((s) =>
      JSON.stringify(s.Resource).includes(idOf(stack.pipeline.state.auditTable)),
    );
    expect(audit.map((s) => s.Action)).toEqual(['dynamodb:PutItem']);
  });

  it('sends only to the inbound queue, uses the inbound key only through SQS, puts only MESH claim checks', () => {
    const statements = statementsOf(pollerRoleId());
    const sqsSends = statements.filter((s) => arr(s.Action).includes('sqs:SendMessage'));
    expect(sqsSends.map((s) => s.Resource)).toEqual([
      { 'Fn::GetAtt': [idOf(stack.pipeline.inboundQueue), 'Arn'] },
    ]);
    const inboundKey = statements.filter((s) =>
      JSON.stringify(s.Resource).includes(idOf(stack.pipeline.keys.inboundKey)),
    );
    expect(inboundKey).toEqual([
      expect.objectContaining({
        Action: ['kms:Decrypt', 'kms:GenerateDataKey'],
        Condition: {
          StringEquals: {
            'kms:ViaService': { 'Fn::Join': ['', ['sqs.', { Ref: 'AWS::Region' }, '.amazonaws.com']] },
          },
        },
      }),
    ]);
    const s3 = statements.filter((s) => arr(s.Action).some((a) => a.startsWith('s3:')));
    expect(s3).toHaveLength(1);
    expect(JSON.stringify(s3[0]?.Resource)).toContain('/claim-check/claim-check/mesh-*');
    // The data key: only as SQS, DynamoDB, S3 and Secrets Manager use it for the poller.
    const dataKey = statements.filter((s) =>
      JSON.stringify(s.Resource).includes(idOf(stack.pipeline.keys.dataKey)),
    );
    expect(dataKey.length).toBeGreaterThan(0);
    for (const s of dataKey) expect(JSON.stringify(s.Condition)).toContain('kms:ViaService');
    expect(
      dataKey.some(
        (s) =>
          JSON.stringify(s.Condition).includes('secretsmanager.') && arr(s.Action).join() === 'kms:Decrypt',
      ),
    ).toBe(true);
  });
});

describe('attestation and delivery through MESH', () => {
  const signingKeyId = () => idOf(stack.pipeline.keys.signingKey!.key as never);
  const kmsStatements = (roleId: string) =>
    statementsOf(roleId).filter((s) =>
      arr(s.Resource).some((r) => JSON.stringify(r).includes(signingKeyId())),
    );

  it('lets the poller sign attestations with the response-signing key, and nothing more with it', () => {
    expect(kmsStatements(pollerRoleId()).map((s) => s.Action)).toEqual(['kms:Sign']);
    const keys = JSON.stringify(envOf(poller().fn).ITK3_KMS_KEYS);
    expect(keys).toContain('gw-response-1');
    expect(keys).toContain(signingKeyId());
  });

  it('lets the authenticate stage read the public key to check attestations, and not sign', () => {
    expect(kmsStatements(roleIdOf('authenticate')).map((s) => s.Action)).toEqual(['kms:GetPublicKey']);
    expect(JSON.stringify(envOf(stack.pipeline.stages.authenticate.fn).ITK3_KMS_KEYS)).toContain(
      signingKeyId(),
    );
  });

  it('names the poller and authenticate in the signing key’s own policy, each for its one action', () => {
    const policy = resources[signingKeyId()]!.Properties.KeyPolicy as {
      Statement: (Statement & { Principal?: Json })[];
    };
    const forRole = (roleId: string) =>
      policy.Statement.filter((s) => JSON.stringify(s.Principal ?? {}).includes(roleId)).map((s) => s.Action);
    expect(forRole(pollerRoleId())).toEqual(['kms:Sign']);
    expect(forRole(roleIdOf('authenticate'))).toEqual(['kms:GetPublicKey']);
  });

  it('gives the deliver stage the MESH URL and the same mailbox → secret map as the poller', () => {
    const deliver = envOf(stack.pipeline.stages.deliver.fn);
    expect(deliver.ITK3_MESH_URL).toBe(MESH_URL);
    expect(deliver.ITK3_MESH_MAILBOXES).toEqual(envOf(poller().fn).ITK3_MESH_MAILBOXES);
  });
});

describe('the stack and the configuration agree on MESH', () => {
  const mesh = {
    url: MESH_URL,
    mailboxes: [{ mailbox: 'X26ABC1' }, { mailbox: 'X26ABC2' }],
  };
  it('takes the URL and the mailboxes from the configuration when the prop leaves them out', () => {
    expect(resolveMeshSettings({ limits: { maxMessages: 5 } }, mesh)).toEqual({
      url: MESH_URL,
      mailboxes: [{ mailboxId: 'X26ABC1' }, { mailboxId: 'X26ABC2' }],
      limits: { maxMessages: 5 },
    });
  });
  it('refuses a poller without a mesh section, or mailboxes and URL that differ', () => {
    expect(() => resolveMeshSettings({}, undefined)).toThrow(/configuration has no "mesh" section/);
    const error = (() => {
      try {
        resolveMeshSettings(
          { url: 'https://other.example', mailboxes: [{ mailboxId: 'x26abc1' }, { mailboxId: 'X26ZZZ9' }] },
          mesh,
        );
      } catch (e) {
        return e as ConfigError;
      }
      throw new Error('expected a ConfigError');
    })();
    expect(error.issues).toEqual([
      `mesh.url: https://other.example differs from the configuration's mesh.url ${MESH_URL}`,
      "mesh.mailboxes: X26ZZZ9 is not in the configuration's mesh.mailboxes",
      "mesh.mailboxes: the configuration's mailbox X26ABC2 is not polled",
    ]);
  });
  it('refuses an attestation key the stack does not have', async () => {
    const config = await meshConfig();
    expect(
      () =>
        new Itk3PipelineStack(
          new App({ context: { ...cdkJsonContext(), 'aws:cdk:bundling-stacks': [] } }),
          'K',
          {
            config: { ...config, mesh: { ...config.mesh, attestationKid: 'other-key' } },
            mesh: {},
          },
        ),
    ).toThrow(/mesh.attestationKid/);
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

/**
 * The problems `MeshPoller` reports for `settings` on a bare stack (no pipeline around it), or none
 * when it builds; any error other than a ConfigError is thrown on.
 */
function meshSettingsIssues(settings: MeshPollerSettings): readonly string[] {
  const bare = new Stack(new App(), 'Bare');
  const table = new dynamodb.Table(bare, 'T', {
    partitionKey: { name: 'k', type: dynamodb.AttributeType.STRING },
  });
  try {
    new MeshPoller(bare, 'Mesh', {
      entry: `${PROJECT_ROOT}/functions/mesh-poll.ts`,
      projectRoot: PROJECT_ROOT,
      configJson: '{}',
      logRetention: 90,
      logLevel: 'INFO',
      removalPolicy: 'retain' as never,
      settings,
      dataKey: new kms.Key(bare, 'Key'),
      onceTable: table,
      auditTable: table,
      blobBucket: new s3.Bucket(bare, 'B'),
      inboundQueue: new sqs.Queue(bare, 'Q'),
      wildcards: new WildcardJustifications(),
    });
    return [];
  } catch (e) {
    if (e instanceof ConfigError) return e.issues;
    throw e;
  }
}

describe('settings', () => {
  it('refuses bad settings with every problem listed, before building anything', () => {
    expect(
      meshSettingsIssues({
        url: 'http://mesh.example/path',
        mailboxes: [
          { mailboxId: 'X26ABC1', schedule: Duration.seconds(90) },
          { mailboxId: 'x26abc1' },
          { mailboxId: 'bad id!' },
        ],
        timeout: Duration.minutes(20),
        limits: { maxMessageBytes: 300 * 1024 * 1024 },
      }),
    ).toEqual([
      'mesh.url: must be https://host[:port] with no path (MESH needs mutual TLS)',
      'mesh.mailboxes.0.schedule: whole minutes, at least 1',
      'mesh.mailboxes.1.mailboxId: X26ABC1 is listed twice',
      'mesh.mailboxes.2.mailboxId: letters and digits, 3–20',
      'mesh.timeout: between 3 and 15 minutes (a pass stops 90 s before it)',
      'mesh.limits: maxBytesPerPass must be at least maxMessageBytes (else a large message could never be taken)',
    ]);
  });
});

describe('the emulator escape for a loopback MESH sandbox', () => {
  const issuesFor = (url: string, emulatorLoopbackHttp?: boolean): readonly string[] =>
    meshSettingsIssues({
      url,
      mailboxes: [{ mailboxId: 'X26ABC2' }],
      ...(emulatorLoopbackHttp === undefined ? {} : { emulatorLoopbackHttp }),
    });
  const httpsOnly = ['mesh.url: must be https://host[:port] with no path (MESH needs mutual TLS)'];

  it('refuses http:// by default, loopback included', () => {
    expect(issuesFor('http://127.0.0.1:47701')).toEqual(httpsOnly);
    expect(issuesFor('http://127.0.0.1:47701', false)).toEqual(httpsOnly);
  });
  it('accepts only a loopback http:// URL with a port when the emulator deploy sets it', () => {
    expect(issuesFor('http://127.0.0.1:47701', true)).toEqual([]);
    expect(issuesFor('http://localhost:47701', true)).toEqual([]);
    expect(issuesFor('http://[::1]:47701', true)).toEqual([]);
    expect(issuesFor('http://mesh.example:47701', true)).toEqual(httpsOnly);
    expect(issuesFor('http://10.0.0.5:47701', true)).toEqual(httpsOnly);
    expect(issuesFor('http://127.0.0.1', true)).toEqual(httpsOnly);
    expect(issuesFor('http://127.0.0.1:47701/path', true)).toEqual(httpsOnly);
    expect(issuesFor('https://msg.intspineservices.nhs.uk', true)).toEqual([]);
  });
  it('refuses a URL carrying a user, a password or a fragment, loopback or not', () => {
    const noUserinfo = ['mesh.url: no user, password or fragment (mailbox credentials go in its secret)'];
    expect(issuesFor('http://x26abc1:secret@127.0.0.1:47701', true)).toEqual(noUserinfo);
    expect(issuesFor('https://x26abc1@msg.intspineservices.nhs.uk')).toEqual(noUserinfo);
    expect(issuesFor('https://msg.intspineservices.nhs.uk/#x')).toEqual(noUserinfo);
  });
});

describe('app context', () => {
  const from = (values: Record<string, string>) => meshFromContext((key) => values[key]);
  it('builds the simple poller from itk3:meshUrl and itk3:meshMailboxes, and nothing without them', () => {
    expect(from({})).toBeUndefined();
    expect(
      from({
        [CONTEXT.meshUrl]: 'https://msg.intspineservices.nhs.uk',
        [CONTEXT.meshMailboxes]: 'X26ABC1, X26ABC2',
      }),
    ).toEqual({
      url: 'https://msg.intspineservices.nhs.uk',
      mailboxes: [{ mailboxId: 'X26ABC1' }, { mailboxId: 'X26ABC2' }],
    });
  });
  it('takes a schedule in whole minutes and the emulator escape, only when asked', () => {
    const settings = from({
      [CONTEXT.meshUrl]: 'http://127.0.0.1:47701',
      [CONTEXT.meshMailboxes]: 'X26ABC2',
      [CONTEXT.meshScheduleMinutes]: '1',
      [CONTEXT.meshEmulatorLoopbackHttp]: 'true',
    });
    expect(settings?.emulatorLoopbackHttp).toBe(true);
    expect(settings?.mailboxes[0]?.schedule?.toMinutes()).toBe(1);
    expect(
      from({ [CONTEXT.meshUrl]: 'https://m.example', [CONTEXT.meshMailboxes]: 'X26ABC2' })
        ?.emulatorLoopbackHttp,
    ).toBeUndefined();
    expect(() =>
      from({
        [CONTEXT.meshUrl]: 'https://m.example',
        [CONTEXT.meshMailboxes]: 'X',
        [CONTEXT.meshScheduleMinutes]: '0.5',
      }),
    ).toThrow('itk3:meshScheduleMinutes: whole minutes, at least 1');
    expect(() =>
      from({
        [CONTEXT.meshUrl]: 'https://m.example',
        [CONTEXT.meshMailboxes]: 'X',
        [CONTEXT.meshEmulatorLoopbackHttp]: 'yes',
      }),
    ).toThrow('itk3:meshEmulatorLoopbackHttp: "true" or "false"');
  });
  it('refuses one without the other', () => {
    expect(() => from({ [CONTEXT.meshMailboxes]: 'X26ABC1' })).toThrow(
      'itk3:meshUrl: required with itk3:meshMailboxes',
    );
    expect(() => from({ [CONTEXT.meshUrl]: 'https://m.example', [CONTEXT.meshMailboxes]: ' , ' })).toThrow(
      'itk3:meshMailboxes: give at least one mailbox id with itk3:meshUrl',
    );
  });
});
