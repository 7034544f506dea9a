import { Validations } from 'aws-cdk-lib';
import { AccessLogFormat } from 'aws-cdk-lib/aws-apigateway';
import { HttpApi, HttpMethod, HttpStage, LogGroupLogDestination } from 'aws-cdk-lib/aws-apigatewayv2';
import { HttpLambdaIntegration } from 'aws-cdk-lib/aws-apigatewayv2-integrations';
import type * as kms from 'aws-cdk-lib/aws-kms';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { INGEST_DEFAULTS, PipelineFunction, type PipelineFunctionProps } from './pipeline-function.js';

/** Settings of the HTTP front door. */
export interface IngestionSettings {
  /**
   * Steady-state request rate of the API stage, requests per second.
   * @default 50
   */
  readonly throttlingRateLimit?: number;
  /**
   * Burst the API stage absorbs above the rate.
   * @default 100
   */
  readonly throttlingBurstLimit?: number;
  /**
   * Ingest function memory in MB.
   * @default 1024
   */
  readonly memorySize?: number;
  /**
   * Reserved concurrency of the ingest function.
   * @default - none
   */
  readonly reservedConcurrency?: number;
}

/** Properties of {@link PipelineIngestion}. */
export interface PipelineIngestionProps
  extends Omit<PipelineFunctionProps, 'memorySize' | 'timeout' | 'reservedConcurrentExecutions'> {
  /**
   * Throttling and sizing.
   * @default - the defaults of {@link IngestionSettings}
   */
  readonly settings?: IngestionSettings;
  /** Key that encrypts the access log group. */
  readonly accessLogKey: kms.IKey;
}

/**
 * The HTTP front door: an HTTP API with one route, `POST /messages`, to the ingest function, which
 * puts a record on the authenticate queue and answers 202 with a tracking id.
 *
 * The default stage is throttled and writes JSON access logs. The payload limit is enforced by the
 * ingest function (`limits.maxSealedBytes`), below the HTTP API's 10 MB and Lambda's 6 MB request
 * limits. Senders that prefer SQS put the same message straight on the authenticate queue instead
 * (body: the JWE compact serialisation; message attribute `Authorization`: `Bearer <jwt>`).
 */
export class PipelineIngestion extends Construct {
  /** The HTTP API. */
  readonly api: HttpApi;
  /** Its `$default` stage. */
  readonly stage: HttpStage;
  /** The ingest function. */
  readonly fn: PipelineFunction;
  /** Access log group of the stage. */
  readonly accessLogGroup: logs.LogGroup;

  constructor(scope: Construct, id: string, props: PipelineIngestionProps) {
    super(scope, id);
    const { settings = {}, accessLogKey, ...fnProps } = props;

    this.fn = new PipelineFunction(this, 'Function', {
      ...fnProps,
      memorySize: settings.memorySize ?? INGEST_DEFAULTS.memorySize,
      timeout: INGEST_DEFAULTS.timeout,
      reservedConcurrentExecutions: settings.reservedConcurrency,
      description: 'ITK3 pipeline ingest: HTTP POST /messages to the authenticate queue',
    });
    Validations.of(this.fn).acknowledge({
      id: 'Serverless-LambdaDLQ',
      reason:
        'Invoked synchronously by API Gateway: a failure is returned to the sender as an HTTP error, there is no asynchronous event to dead-letter.',
    });

    this.api = new HttpApi(this, 'Api', {
      description: 'ITK3 secure pipeline: POST /messages with a Bearer credential and a JWE body',
      createDefaultStage: false,
    });

    this.accessLogGroup = new logs.LogGroup(this, 'AccessLogs', {
      retention: props.logRetention,
      encryptionKey: accessLogKey,
      removalPolicy: props.removalPolicy,
    });

    this.stage = new HttpStage(this, 'DefaultStage', {
      httpApi: this.api,
      stageName: '$default',
      autoDeploy: true,
      throttle: {
        rateLimit: settings.throttlingRateLimit ?? 50,
        burstLimit: settings.throttlingBurstLimit ?? 100,
      },
      accessLogSettings: {
        destination: new LogGroupLogDestination(this.accessLogGroup),
        // No headers, no body: the Authorization header is a bearer credential.
        format: AccessLogFormat.custom(
          JSON.stringify({
            requestId: '$context.requestId',
            requestTime: '$context.requestTime',
            sourceIp: '$context.identity.sourceIp',
            routeKey: '$context.routeKey',
            status: '$context.status',
            protocol: '$context.protocol',
            responseLength: '$context.responseLength',
            integrationStatus: '$context.integrationStatus',
            integrationLatency: '$context.integrationLatency',
            errorMessage: '$context.error.message',
            integrationError: '$context.integrationErrorMessage',
          }),
        ),
      },
    });

    const routes = this.api.addRoutes({
      path: '/messages',
      methods: [HttpMethod.POST],
      integration: new HttpLambdaIntegration('Ingest', this.fn),
    });
    for (const route of routes) {
      Validations.of(route).acknowledge({
        id: 'AwsSolutions-APIG4',
        reason:
          'Authentication is the pipeline itself: the authenticate stage verifies the Bearer JWT against the configured issuers (per-issuer key and algorithm allow-lists, receipt-time checks, single-use jti). An API Gateway JWT authorizer cannot express those rules and would only duplicate part of them.',
      });
    }
  }

  /** The invoke URL of the `$default` stage (ends with `/`). */
  get url(): string {
    return this.stage.url;
  }
}
