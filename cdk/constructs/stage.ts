import { Duration, Validations } from 'aws-cdk-lib';
import type * as kms from 'aws-cdk-lib/aws-kms';
import { SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import {
  type StageDefinition,
  type StageSettings,
  stageSettings,
  VISIBILITY_FACTOR,
} from '../../lib/infra/definitions.js';
import { PipelineFunction, type PipelineFunctionProps } from './pipeline-function.js';

/** Properties of a {@link PipelineStage}. */
export interface PipelineStageProps
  extends Omit<PipelineFunctionProps, 'memorySize' | 'timeout' | 'reservedConcurrentExecutions' | 'entry'> {
  /** The stage's shared definition (names, defaults). */
  readonly definition: StageDefinition;
  /** Absolute path of the stage handler. */
  readonly entry: string;
  /**
   * Overrides of the definition's defaults (the one `StageSettings` of lib/infra/definitions.ts).
   * @default - the definition's values
   */
  readonly settings?: Partial<StageSettings>;
  /** Customer-managed key for the queue and its dead-letter queue. */
  readonly queueKey: kms.IKey;
  /**
   * Name the queues after the definition (`itk3-<stage>`, `itk3-<stage>-dlq`).
   * @default false - CloudFormation generates names
   */
  readonly physicalNames?: boolean;
}

/**
 * One pipeline stage, as in AWS Solutions Constructs `aws-sqs-lambda`: its source queue, a
 * dead-letter queue behind it, the stage function and the SQS event source between them.
 *
 * Both queues are encrypted with the customer-managed key and refuse plain HTTP. The visibility
 * timeout is at least {@link VISIBILITY_FACTOR} times the function timeout (plus the batching window),
 * so a message is not redelivered while a slow invocation still holds it. The event source reports
 * partial batch failures, so only the failed records of a batch are retried.
 */
export class PipelineStage extends Construct {
  /** The queue the stage reads. */
  readonly queue: sqs.Queue;
  /** Where messages go after `maxReceiveCount` failed receives. */
  readonly deadLetterQueue: sqs.Queue;
  /** The stage function. */
  readonly fn: PipelineFunction;
  /** Effective settings after defaults. */
  readonly settings: ReturnType<typeof stageSettings>;

  constructor(scope: Construct, id: string, props: PipelineStageProps) {
    super(scope, id);
    const def = props.definition;
    this.settings = stageSettings(def.stage, props.settings);
    const { maxReceiveCount, batchSize, memoryMb, visibilityTimeoutSeconds } = this.settings;
    const timeout = Duration.seconds(this.settings.timeoutSeconds);
    const maxBatchingWindow = Duration.seconds(this.settings.maxBatchingWindowSeconds);
    if (!Number.isInteger(maxReceiveCount) || maxReceiveCount < 1 || maxReceiveCount > 1000) {
      throw new Error(
        `${def.stage}: maxReceiveCount must be an integer from 1 to 1000, got ${maxReceiveCount}`,
      );
    }
    if (visibilityTimeoutSeconds < this.settings.timeoutSeconds * VISIBILITY_FACTOR) {
      throw new Error(
        `${def.stage}: visibilityTimeoutSeconds must be at least ${VISIBILITY_FACTOR} × timeoutSeconds, got ${visibilityTimeoutSeconds}`,
      );
    }

    this.deadLetterQueue = new sqs.Queue(this, 'DeadLetterQueue', {
      queueName: props.physicalNames ? def.dlq : undefined,
      encryption: sqs.QueueEncryption.KMS,
      encryptionMasterKey: props.queueKey,
      enforceSSL: true,
      // Longest SQS allows: a standard queue keeps the original enqueue time, so a DLQ needs more
      // retention than its source for operators to have time to redrive.
      retentionPeriod: Duration.days(14),
    });
    Validations.of(this.deadLetterQueue).acknowledge({
      id: 'Serverless-SQSRedrivePolicy',
      reason:
        'This is the dead-letter queue of the stage: the end of the redrive chain. Operators inspect it and redrive messages back to the source queue.',
    });

    this.queue = new sqs.Queue(this, 'Queue', {
      queueName: props.physicalNames ? def.queue : undefined,
      encryption: sqs.QueueEncryption.KMS,
      encryptionMasterKey: props.queueKey,
      enforceSSL: true,
      retentionPeriod: Duration.days(4),
      visibilityTimeout: Duration.seconds(visibilityTimeoutSeconds),
      deadLetterQueue: { queue: this.deadLetterQueue, maxReceiveCount },
    });

    const { definition: _d, settings: _s, queueKey: _k, physicalNames: _p, ...fnProps } = props;
    this.fn = new PipelineFunction(this, 'Function', {
      ...fnProps,
      memorySize: memoryMb,
      timeout,
      reservedConcurrentExecutions: this.settings.reservedConcurrency,
      description: `ITK3 pipeline stage: ${def.stage}`,
    });

    this.fn.addEventSource(
      new SqsEventSource(this.queue, {
        batchSize,
        maxBatchingWindow,
        reportBatchItemFailures: true,
        maxConcurrency: this.settings.maxConcurrency,
      }),
    );
    Validations.of(this.fn).acknowledge({
      id: 'Serverless-LambdaEventSourceMappingDestination',
      reason:
        'SQS event source mappings take no on-failure destination: failed records stay on the source queue and its redrive policy moves them to the dead-letter queue after maxReceiveCount.',
    });
    Validations.of(this.fn).acknowledge({
      id: 'Serverless-LambdaDLQ',
      reason:
        'Invoked by an SQS event source mapping, never asynchronously: failed records return to the source queue and move to its dead-letter queue after maxReceiveCount.',
    });
  }
}
