import { CfnOutput, Stack, type StackProps } from 'aws-cdk-lib';
import type { Construct } from 'constructs';
import { Itk3SecurePipeline, type Itk3SecurePipelineProps } from './constructs/itk3-secure-pipeline.js';

/** Properties of {@link Itk3PipelineStack}: the stack's own plus everything the pipeline takes. */
export interface Itk3PipelineStackProps extends StackProps, Itk3SecurePipelineProps {}

/**
 * The deployable unit: one {@link Itk3SecurePipeline} and the outputs an operator or a sender needs
 * (ingestion endpoints, state names, key ARNs for publishing public keys; in the cached key mode the
 * wrapped kids' public JWKs and the wrapping key).
 */
export class Itk3PipelineStack extends Stack {
  /** The pipeline. */
  readonly pipeline: Itk3SecurePipeline;

  constructor(scope: Construct, id: string, props: Itk3PipelineStackProps) {
    super(scope, id, props);
    const p = new Itk3SecurePipeline(this, 'Pipeline', props);
    this.pipeline = p;

    const output = (id: string, value: string, description: string) =>
      new CfnOutput(this, id, { value, description });
    output(
      'HttpApiUrl',
      `${p.ingestion.url}messages`,
      'POST sealed messages here (Authorization: Bearer <jwt>)',
    );
    output(
      'InboundQueueUrl',
      p.inboundQueue.queueUrl,
      'Direct SQS ingestion: body = JWE compact, message attribute Authorization = "Bearer <jwt>"',
    );
    output('InboundQueueArn', p.inboundQueue.queueArn, 'ARN of the inbound (authenticate) queue');
    output(
      'BlobBucketName',
      p.state.blobBucket.bucketName,
      'Claim-check payloads and folder-type deliveries',
    );
    output('OnceTableName', p.state.onceTable.tableName, 'Once-store: jti replay, duplicate ids');
    output('AuditTableName', p.state.auditTable.tableName, 'Audit trail');
    output(
      'RecipientKeyArns',
      this.toJsonString(p.keys.recipientKeyArns()),
      p.keyMode.mode === 'cached'
        ? 'kid → KMS key ARN of the recipient keys kept in KMS (directKids); wrapped kids have no KMS key: their public keys are in RecipientPublicJwks'
        : 'kid → KMS key ARN of the recipient decryption keys (publish their public keys to senders)',
    );
    if (p.keyMode.publicJwks.length > 0) {
      // Plain JSON at synth: the wrapped kids' public keys are known before deployment.
      output(
        'RecipientPublicJwks',
        JSON.stringify({ keys: p.keyMode.publicJwks }),
        'JWKS of the wrapped recipient keys (cached key mode): publish to senders',
      );
    }
    if (p.keys.wrappingKey) {
      output(
        'RecipientKeyWrappingKeyArn',
        p.keys.wrappingKey.key.keyArn,
        'Cached key mode: the symmetric KMS key to pass to itk3 keys wrap --wrapping-key',
      );
    }
    if (p.keys.signingKey) {
      output(
        'ResponseSigningKeyArn',
        p.keys.signingKey.key.keyArn,
        `KMS key ARN of the response-signing key, kid ${p.keys.signingKey.kid}`,
      );
    }
    if (p.keyMode.wrappedSigningKey) {
      // Plain JSON at synth, like RecipientPublicJwks: there is no KMS key to read it from.
      output(
        'ResponseSigningPublicJwk',
        JSON.stringify(p.keyMode.wrappedSigningKey.publicJwk),
        `Public ES256 JWK of the wrapped response-signing key, kid ${p.keyMode.wrappedSigningKey.kid}: senders verify responses, itk3 audit verify checkpoints with it`,
      );
    }
    if (p.meshPoller) {
      output('MeshPollerFunctionName', p.meshPoller.fn.functionName, 'The MESH poller function');
      output(
        'MeshMailboxSecretArns',
        this.toJsonString(
          Object.fromEntries(Object.entries(p.meshPoller.secrets).map(([m, s]) => [m, s.secretArn])),
        ),
        'MESH mailbox → its credentials secret (fill in password, sharedKey, clientCert, clientKey, caBundle)',
      );
    }
    output(
      'DeadLetterQueueUrls',
      this.toJsonString(
        Object.fromEntries(Object.entries(p.stages).map(([stage, s]) => [stage, s.deadLetterQueue.queueUrl])),
      ),
      'stage → dead-letter queue URL',
    );
    output(
      'QueueUrls',
      this.toJsonString(
        Object.fromEntries(Object.entries(p.stages).map(([stage, s]) => [stage, s.queue.queueUrl])),
      ),
      'stage → source queue URL (where a DLQ redrive sends messages back)',
    );
    output('DashboardName', p.observability.dashboard.dashboardName, 'CloudWatch dashboard');
  }
}
