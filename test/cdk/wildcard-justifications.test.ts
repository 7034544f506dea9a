/**
 * The aspect that acknowledges declared wildcard resources must acknowledge those and nothing
 * else: an undeclared action on a declared resource, or an undeclared resource, stays a finding.
 */
import { Aspects, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as iam from 'aws-cdk-lib/aws-iam';
import { AwsSolutionsChecks } from 'cdk-nag';
import { describe, expect, it } from 'vitest';
import { WildcardJustifications } from '../../cdk/constructs/wildcard-justifications.js';
import { testApp } from './fixtures.js';

const OBJECTS = 'arn:aws:s3:::rx-inbox/itk3/*';

function iam5Findings(statements: iam.PolicyStatement[]): string[] {
  const app = testApp();
  const stack = new Stack(app, 'Wildcards');
  const role = new iam.Role(stack, 'Role', { assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com') });
  for (const statement of statements) role.addToPolicy(statement);
  const justifications = new WildcardJustifications();
  justifications.allow(OBJECTS, ['s3:PutObject'], 'objects are named per message');
  Aspects.of(stack).add(justifications);
  Template.fromStack(stack);
  return new AwsSolutionsChecks(stack)
    .validateScope(stack)
    .violations.map((v) => v.ruleName)
    .filter((name) => name.startsWith('AwsSolutions-IAM5'));
}

describe('WildcardJustifications', () => {
  it('acknowledges a declared wildcard resource used with declared actions', () => {
    expect(
      iam5Findings([new iam.PolicyStatement({ actions: ['s3:PutObject'], resources: [OBJECTS] })]),
    ).toEqual([]);
  });

  it('keeps the finding when any statement on that resource allows an undeclared action', () => {
    const findings = iam5Findings([
      new iam.PolicyStatement({ actions: ['s3:PutObject'], resources: [OBJECTS] }),
      new iam.PolicyStatement({ actions: ['s3:DeleteObject'], resources: [OBJECTS] }),
    ]);
    expect(findings).toEqual([`AwsSolutions-IAM5[Resource::${OBJECTS}]`]);
  });

  it('keeps findings for undeclared wildcard resources', () => {
    const findings = iam5Findings([
      new iam.PolicyStatement({ actions: ['s3:PutObject'], resources: ['arn:aws:s3:::other/*'] }),
    ]);
    expect(findings).toEqual(['AwsSolutions-IAM5[Resource::arn:aws:s3:::other/*]']);
  });
});
