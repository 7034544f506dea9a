/**
 * Teams that bring their own data key and blob bucket (`existingDataKeyObj`,
 * `existingBlobBucketObj`, in the manner of AWS Solutions Constructs): the pipeline creates neither,
 * encrypts and grants with theirs, and still passes the cdk-nag packs.
 */
import { App, Stack } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { beforeAll, describe, expect, it } from 'vitest';
import { Itk3SecurePipeline } from '../../cdk/constructs/itk3-secure-pipeline.js';
import { nagPacks } from '../../cdk/nag.js';
import { ENV } from '../../lib/infra/definitions.js';
import { STAGES } from '../../lib/pipeline/topology.js';
import { cdkJsonContext, validConfig } from './fixtures.js';

const TEAM_KEY_ARN = 'arn:aws:kms:eu-west-2:123456789012:key/11111111-2222-3333-4444-555555555555';
const TEAM_BUCKET_KEY_ARN = 'arn:aws:kms:eu-west-2:123456789012:key/66666666-7777-8888-9999-000000000000';
const TEAM_BUCKET = 'team-itk3-messages';

type Json = Record<string, unknown>;
let stack: Stack;
let pipeline: Itk3SecurePipeline;
let template: Template;

beforeAll(async () => {
  // No bundling: these assertions read the template only.
  const app = new App({ context: { ...cdkJsonContext(), 'aws:cdk:bundling-stacks': [] } });
  stack = new Stack(app, 'Team', { env: { account: '123456789012', region: 'eu-west-2' } });
  const dataKey = kms.Key.fromKeyArn(stack, 'TeamKey', TEAM_KEY_ARN);
  const bucket = s3.Bucket.fromBucketAttributes(stack, 'TeamBucket', {
    bucketName: TEAM_BUCKET,
    encryptionKey: kms.Key.fromKeyArn(stack, 'TeamBucketKey', TEAM_BUCKET_KEY_ARN),
  });
  pipeline = new Itk3SecurePipeline(stack, 'Pipeline', {
    config: await validConfig(),
    existingDataKeyObj: dataKey,
    existingBlobBucketObj: bucket,
  });
  template = Template.fromStack(stack);
});

/**
 * The services a statement's only condition, `kms:ViaService`, names (`s3` for
 * `s3.<region>.amazonaws.com`), sorted; fails on any other condition key.
 */
function viaServices(statement: Json): string[] {
  const equals = (statement.Condition as { StringEquals?: Json } | undefined)?.StringEquals ?? {};
  expect(Object.keys(equals)).toEqual(['kms:ViaService']);
  const joins = [equals['kms:ViaService']].flat() as { 'Fn::Join': [string, [string, ...unknown[]]] }[];
  return joins.map((j) => j['Fn::Join'][1][0].replace(/\.$/, '')).sort();
}

describe('existing data key and blob bucket', () => {
  it('creates no bucket and no data key: the only symmetric key created is the inbound key', () => {
    template.resourceCountIs('AWS::S3::Bucket', 0);
    const symmetric = Object.values(template.findResources('AWS::KMS::Key')).filter(
      (k) => (k.Properties as Json).KeySpec === undefined,
    );
    expect(symmetric).toHaveLength(1);
    expect(pipeline.keys.dataKey.keyArn).toBe(TEAM_KEY_ARN);
    expect(pipeline.state.blobBucket.bucketName).toBe(TEAM_BUCKET);
    expect(pipeline.state.accessLogBucket).toBeUndefined();
  });

  it('encrypts the tables, the stage queues but the inbound one, and the log groups with the team key', () => {
    template.allResourcesProperties('AWS::DynamoDB::Table', {
      SSESpecification: { SSEEnabled: true, SSEType: 'KMS', KMSMasterKeyId: TEAM_KEY_ARN },
    });
    const queues = Object.values(template.findResources('AWS::SQS::Queue')).map(
      (q) => (q.Properties as Json).KmsMasterKeyId,
    );
    // Ten queues (five stages, each with its DLQ); the inbound pair keeps the inbound key.
    expect(queues).toHaveLength(2 * STAGES.length);
    expect(queues.filter((k) => k === TEAM_KEY_ARN)).toHaveLength(2 * (STAGES.length - 1));
    const logGroups = Object.values(template.findResources('AWS::Logs::LogGroup'));
    expect(logGroups.length).toBeGreaterThan(0);
    for (const group of logGroups) expect((group.Properties as Json).KmsKeyId).toBe(TEAM_KEY_ARN);
  });

  it('points every function at the team bucket and grants claim checks there only', () => {
    const fns = Object.values(template.findResources('AWS::Lambda::Function'));
    expect(fns).toHaveLength(STAGES.length + 1);
    for (const fn of fns) {
      const env = ((fn.Properties as Json).Environment as { Variables: Json }).Variables;
      expect(env[ENV.blobBucket]).toBe(TEAM_BUCKET);
    }
    template.hasResourceProperties('AWS::IAM::Policy', {
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Action: Match.arrayWith(['s3:GetObject', 's3:PutObject']),
            Resource: `arn:aws:s3:::${TEAM_BUCKET}/claim-check/*`,
          }),
        ]),
      },
    });
  });

  it('grants the bucket key through S3 only, and the team key through SQS, DynamoDB and S3 only', () => {
    const statements = Object.values(template.findResources('AWS::IAM::Policy')).flatMap(
      (p) => ((p.Properties as Json).PolicyDocument as { Statement: Json[] }).Statement,
    );
    const on = (arn: string) => statements.filter((s) => JSON.stringify(s.Resource) === JSON.stringify(arn));
    const bucketKey = on(TEAM_BUCKET_KEY_ARN);
    expect(bucketKey.length).toBe(STAGES.length + 1);
    for (const s of bucketKey) expect(viaServices(s), JSON.stringify(s)).toEqual(['s3']);
    const teamKey = on(TEAM_KEY_ARN);
    expect(teamKey.length).toBeGreaterThanOrEqual(STAGES.length + 1);
    for (const s of teamKey) {
      // The SQS event source reads its encrypted queue: kms:Decrypt alone, as with the created key.
      if (s.Action === 'kms:Decrypt' && s.Condition === undefined) continue;
      expect(viaServices(s), JSON.stringify(s)).toEqual(['dynamodb', 's3', 'sqs']);
    }
  });

  it.each([0, 1])('cdk-nag pack %i reports no unacknowledged finding', (index) => {
    const report = nagPacks(stack)[index]!.validateScope(stack);
    const findings = report.violations.map(
      (v) => `${v.ruleName} (${v.severity}): ${v.violatingResources.map((r) => r.constructPath).join(', ')}`,
    );
    expect(findings).toEqual([]);
  });
});
