import { Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks, ServerlessChecks } from 'cdk-nag';
import type { IConstruct } from 'constructs';

/**
 * The cdk-nag packs the project holds itself to: AWS Solutions and Serverless. Every finding must be
 * fixed or acknowledged with a reason next to the resource (`Validations.of(x).acknowledge`).
 */
export function nagPacks(scope: IConstruct): [AwsSolutionsChecks, ServerlessChecks] {
  return [new AwsSolutionsChecks(scope, { verbose: true }), new ServerlessChecks(scope, { verbose: true })];
}

/**
 * Run the packs at synth through CDK policy validation: error findings fail `cdk synth`, and every
 * finding is written to the cloud assembly's `validation-report.json`.
 */
export function addNagChecks(scope: IConstruct): void {
  Validations.of(scope).addPlugins(...nagPacks(scope));
}
