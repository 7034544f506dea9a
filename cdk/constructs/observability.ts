import { Duration } from 'aws-cdk-lib';
import type { HttpApi } from 'aws-cdk-lib/aws-apigatewayv2';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import { SnsAction } from 'aws-cdk-lib/aws-cloudwatch-actions';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import type * as sns from 'aws-cdk-lib/aws-sns';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import type { StageName } from '../../lib/pipeline/topology.js';
import { METRIC, METRICS_NAMESPACE, SERVICE_NAME } from './observability-names.js';

/** What the observability construct watches for one stage.
 * @public part of the construct's props (the package's `./cdk` export)
 */
export interface ObservedStage {
  /** Stage name (the `stage` metric dimension). */
  readonly stage: StageName;
  /** The stage function. */
  readonly fn: lambda.IFunction;
  /** Its source queue. */
  readonly queue: sqs.IQueue;
  /** Its dead-letter queue. */
  readonly deadLetterQueue: sqs.IQueue;
}

/** Alarm settings.
 * @public part of the construct's props (the package's `./cdk` export)
 */
export interface ObservabilitySettings {
  /**
   * SNS topic notified when an alarm fires and when it clears.
   * @default - alarms without actions (visible on the dashboard and in the console)
   */
  readonly alarmTopic?: sns.ITopic;
  /**
   * Age of the oldest message in a source queue above which its alarm fires.
   * @default Duration.minutes(5)
   */
  readonly oldestMessageAgeThreshold?: Duration;
}

/** Properties of {@link PipelineObservability}. */
export interface PipelineObservabilityProps extends ObservabilitySettings {
  /** The five stages. */
  readonly stages: readonly ObservedStage[];
  /** The ingest function. */
  readonly ingestFunction: lambda.IFunction;
  /** The HTTP API. */
  readonly api: HttpApi;
}

/**
 * Alarms and a dashboard:
 * - a dead-letter queue holding any message (each one is a message the pipeline gave up on);
 * - a source queue whose oldest message is older than the threshold (a stage stalled or starved);
 * - any function error (an invocation that failed as a whole, e.g. a bad configuration at cold
 *   start — record failures are partial batch responses, not errors).
 *
 * The dashboard shows, per stage, the pipeline's own metrics (namespace `ITK3Pipeline`, emitted by
 * the handlers with dimensions `service` and `stage`), queue depth and age, and function health;
 * rejections are also broken down by ITK3 response code (`itk3Code` dimension).
 */
export class PipelineObservability extends Construct {
  /** Every alarm, for callers that want to add actions or composite alarms. */
  readonly alarms: cloudwatch.Alarm[] = [];
  /** The dashboard. */
  readonly dashboard: cloudwatch.Dashboard;

  constructor(scope: Construct, id: string, props: PipelineObservabilityProps) {
    super(scope, id);
    const ageThreshold = props.oldestMessageAgeThreshold ?? Duration.minutes(5);
    const oneMinute = Duration.minutes(1);

    for (const s of props.stages) {
      const name = pascal(s.stage);
      this.alarm(
        `${name}DeadLetters`,
        s.deadLetterQueue.metricApproximateNumberOfMessagesVisible({
          period: oneMinute,
          statistic: 'Maximum',
        }),
        0,
        `ITK3 ${s.stage}: messages in the dead-letter queue (inspect, fix, then redrive)`,
      );
      this.alarm(
        `${name}OldestMessageAge`,
        s.queue.metricApproximateAgeOfOldestMessage({ period: oneMinute, statistic: 'Maximum' }),
        ageThreshold.toSeconds(),
        `ITK3 ${s.stage}: oldest message older than ${ageThreshold.toSeconds()} s`,
        3,
      );
      this.alarm(
        `${name}Errors`,
        s.fn.metricErrors({ period: oneMinute, statistic: 'Sum' }),
        0,
        `ITK3 ${s.stage}: function errors`,
      );
    }
    this.alarm(
      'IngestErrors',
      props.ingestFunction.metricErrors({ period: oneMinute, statistic: 'Sum' }),
      0,
      'ITK3 ingest: function errors',
    );
    if (props.alarmTopic) {
      const action = new SnsAction(props.alarmTopic);
      for (const alarm of this.alarms) {
        alarm.addAlarmAction(action);
        alarm.addOkAction(action);
      }
    }

    const widgets: cloudwatch.IWidget[][] = [
      [
        new cloudwatch.TextWidget({
          markdown:
            '# ITK3 secure pipeline\nPer stage: records forwarded, rejected (permanent, answered with an ITK3 code) and retried (transient); queue depth and age; function health. Dead-letter queues should be empty.',
          width: 24,
          height: 2,
        }),
      ],
      [
        new cloudwatch.GraphWidget({
          title: 'Ingest (HTTP API)',
          left: [props.api.metricCount({ statistic: 'Sum' })],
          right: [
            props.api.metricClientError({ statistic: 'Sum' }),
            props.api.metricServerError({ statistic: 'Sum' }),
          ],
          width: 12,
        }),
        new cloudwatch.GraphWidget({
          title: 'Rejections by ITK3 code',
          left: [
            new cloudwatch.MathExpression({
              expression: `SEARCH('{${METRICS_NAMESPACE},service,stage,itk3Code} MetricName="${METRIC.rejected}"', 'Sum', 300)`,
              label: '',
              period: Duration.minutes(5),
            }),
          ],
          width: 12,
        }),
      ],
    ];

    for (const s of props.stages) {
      const pipelineMetric = (metricName: string) =>
        new cloudwatch.Metric({
          namespace: METRICS_NAMESPACE,
          metricName,
          dimensionsMap: { service: SERVICE_NAME, stage: s.stage },
          statistic: 'Sum',
          period: Duration.minutes(5),
        });
      const outcome = [
        pipelineMetric(s.stage === 'deliver' ? METRIC.delivered : METRIC.forwarded),
        pipelineMetric(METRIC.rejected),
        pipelineMetric(METRIC.transient),
      ];
      if (s.stage === 'deliver') outcome.push(pipelineMetric(METRIC.responded));
      widgets.push([
        new cloudwatch.GraphWidget({ title: `${s.stage}: outcomes`, left: outcome, width: 8 }),
        new cloudwatch.GraphWidget({
          title: `${s.stage}: queue`,
          left: [
            s.queue.metricApproximateNumberOfMessagesVisible({ statistic: 'Maximum' }),
            s.deadLetterQueue.metricApproximateNumberOfMessagesVisible({
              statistic: 'Maximum',
              label: 'dead letters',
            }),
          ],
          right: [s.queue.metricApproximateAgeOfOldestMessage({ statistic: 'Maximum' })],
          width: 8,
        }),
        new cloudwatch.GraphWidget({
          title: `${s.stage}: function`,
          left: [s.fn.metricInvocations(), s.fn.metricErrors(), s.fn.metricThrottles()],
          right: [s.fn.metricDuration({ statistic: 'p99' })],
          width: 8,
        }),
      ]);
    }

    this.dashboard = new cloudwatch.Dashboard(this, 'Dashboard', {
      widgets,
      defaultInterval: Duration.hours(3),
    });
  }

  private alarm(
    id: string,
    metric: cloudwatch.IMetric,
    threshold: number,
    description: string,
    evaluationPeriods = 1,
  ): void {
    this.alarms.push(
      new cloudwatch.Alarm(this, id, {
        metric,
        threshold,
        evaluationPeriods,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        // No data means no messages and no invocations: healthy.
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        alarmDescription: description,
      }),
    );
  }
}

/** `authenticate` → `Authenticate`. */
export function pascal(name: string): string {
  return name.charAt(0).toUpperCase() + name.slice(1);
}
