import { Aws, Duration, Stack, Validations } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import type * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import * as scheduler from 'aws-cdk-lib/aws-scheduler';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import type * as sns from 'aws-cdk-lib/aws-sns';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { MESH_LEASE_PREFIX, MESH_POLL_ENV } from '../../lib/adapters/aws/deployment-names.js';
import { ConfigError } from '../../lib/errors.js';
import { BLOB_BUCKET, ENV } from '../../lib/infra/definitions.js';
import { MeshPollOptionsSchema } from '../../lib/mesh/poller.js';
import { PipelineFunction, type PipelineFunctionProps } from './pipeline-function.js';
import type { WildcardJustifications } from './wildcard-justifications.js';

/** One MESH mailbox the poller serves.
 * @public part of the construct's props (the package's `./cdk` export)
 */
export interface MeshMailboxProps {
  /** The MESH mailbox id (letters and digits, e.g. `X26ABC1`). */
  readonly mailboxId: string;
  /**
   * The secret holding the mailbox's credentials as JSON: `password`, `sharedKey`, `clientCert`,
   * `clientKey`, optional `caBundle` (docs/DEPLOY.md, "MESH poller"). If it is encrypted with a
   * customer-managed key, import it with that key (`Secret.fromSecretAttributes`) so the poller
   * can be granted `kms:Decrypt` through Secrets Manager.
   * @default - a secret created with a placeholder value, encrypted with the data key: fill it in
   */
  readonly secret?: secretsmanager.ISecret;
  /**
   * How often the mailbox is polled (whole minutes).
   * @default Duration.minutes(5)
   */
  readonly schedule?: Duration;
}

/** The optional MESH poller of the pipeline (issue 12): inbox → inbound queue, per mailbox. */
export interface MeshPollerSettings {
  /** MESH base URL, `https://host[:port]` (e.g. `https://msg.intspineservices.nhs.uk`). */
  readonly url: string;
  /** The mailboxes to poll, each on its own schedule and with its own secret. */
  readonly mailboxes: readonly MeshMailboxProps[];
  /**
   * CA bundle (PEM) to trust for MESH when a mailbox secret has no `caBundle`. Public certificates,
   * bundled into the function code (Lambda's 4 KB environment is too small for a bundle).
   * @default - the CA bundle in each secret, else Node's trusted roots
   */
  readonly caBundle?: string;
  /**
   * Poller function timeout. A pass stops taking new messages 90 s before it; the lease lasts the
   * invocation plus 30 s. Between 3 and 15 minutes.
   * @default Duration.minutes(5)
   */
  readonly timeout?: Duration;
  /**
   * Poller function memory in MB; a pass holds one message (up to `maxMessageBytes`) at a time.
   * @default 1024
   */
  readonly memorySize?: number;
  /**
   * Limits of one pass (lib/mesh/poller.ts): messages, largest message, bytes.
   * @default - the poller's defaults (100 messages, 100 MiB, 200 MiB)
   */
  readonly limits?: { maxMessages?: number; maxMessageBytes?: number; maxBytesPerPass?: number };
  /**
   * Emulator deploys only (ministack, whose Lambdas run as host processes): accept a plain-HTTP
   * loopback `url` (`http://127.0.0.1|localhost|[::1]:port`) for NHS England's MESH sandbox on the
   * same machine. Nothing else is relaxed: any other `http://` URL is still refused, and the
   * client refuses credentials over HTTP to anything but loopback. Set by the
   * `itk3:meshEmulatorLoopbackHttp=true` context of an emulator deploy; never for AWS.
   * @default false
   */
  readonly emulatorLoopbackHttp?: boolean;
}

/** Properties of {@link MeshPoller}. */
export interface MeshPollerProps
  extends Omit<PipelineFunctionProps, 'memorySize' | 'timeout' | 'reservedConcurrentExecutions'> {
  readonly settings: MeshPollerSettings;
  readonly dataKey: kms.IKey;
  readonly onceTable: dynamodb.ITable;
  readonly auditTable: dynamodb.ITable;
  readonly blobBucket: s3.IBucket;
  readonly inboundQueue: sqs.IQueue;
  readonly wildcards: WildcardJustifications;
  readonly alarmTopic?: sns.ITopic;
  /** Name created secrets `itk3/mesh/<mailbox>`. */
  readonly physicalNames?: boolean;
}

const MAILBOX_ID = /^[A-Za-z0-9]{3,20}$/;
/** Hosts `emulatorLoopbackHttp` accepts (URL.hostname keeps IPv6 brackets). */
const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]']);

/**
 * The scheduled MESH poller: one function, one EventBridge Scheduler schedule per mailbox invoking
 * it with `{"mailbox": "<id>"}`, one secret per mailbox. Each pass holds the mailbox's lease (an item
 * `lease#mesh#<mailbox>` in the once-store table), so two passes never poll one mailbox at once.
 *
 * The function may: read its mailboxes' secrets (nothing else in Secrets Manager); put, read and
 * delete once-store items under `mesh#` and lease items under `lease#mesh#` only
 * (`dynamodb:LeadingKeys`); append to the audit table; put claim-check objects under
 * `claim-check/claim-check/mesh-` (the blob store's prefix, then the poller's artefact keys);
 * send to the inbound queue. The schedules' role may only invoke this function.
 * The function is not in a VPC: it reaches MESH over the internet with mutual TLS.
 *
 * Grants on the data and inbound keys through SQS, DynamoDB and S3 are given by the pipeline
 * (the same helpers as for ingest).
 */
export class MeshPoller extends Construct {
  readonly fn: PipelineFunction;
  /** Mailbox id → its credentials secret. */
  readonly secrets: Readonly<Record<string, secretsmanager.ISecret>>;
  /** Mailbox id → its schedule. */
  readonly schedules: Readonly<Record<string, scheduler.CfnSchedule>>;
  /** The role EventBridge Scheduler assumes to invoke the function. */
  readonly schedulerRole: iam.Role;
  /** Fires when a pass fails (credentials refused, a secret not filled in, MESH's clock rule). */
  readonly errorAlarm: cloudwatch.Alarm;
  /** The MESH base URL. */
  readonly url: string;

  constructor(scope: Construct, id: string, props: MeshPollerProps) {
    super(scope, id);
    const {
      settings,
      dataKey,
      onceTable: _once,
      auditTable: _audit,
      blobBucket: _blobs,
      inboundQueue,
      wildcards: _wildcards,
      alarmTopic,
      physicalNames: _physicalNames,
      ...fnProps
    } = props;
    const mailboxes = validateSettings(settings);
    const timeout = settings.timeout ?? Duration.minutes(5);
    this.url = settings.url;

    const secrets: Record<string, secretsmanager.ISecret> = {};
    for (const mailbox of mailboxes) {
      const given = settings.mailboxes.find((m) => m.mailboxId.toUpperCase() === mailbox)?.secret;
      secrets[mailbox] = given ?? this.placeholderSecret(mailbox, props);
    }
    this.secrets = secrets;

    this.fn = new PipelineFunction(this, 'Function', {
      ...fnProps,
      memorySize: settings.memorySize ?? 1024,
      timeout,
      description: 'ITK3 pipeline MESH poller: one bounded pass of a mailbox into the inbound queue',
      environment: {
        ...props.environment,
        [MESH_POLL_ENV.url]: settings.url,
        [MESH_POLL_ENV.mailboxes]: Stack.of(this).toJsonString(
          Object.fromEntries(mailboxes.map((m) => [m, secrets[m]?.secretArn])),
        ),
        ...(settings.limits ? { [MESH_POLL_ENV.pollOptions]: JSON.stringify(settings.limits) } : {}),
        [ENV.queueUrl('authenticate')]: inboundQueue.queueUrl,
      },
      bundledEnvironment: settings.caBundle ? { [MESH_POLL_ENV.caBundle]: settings.caBundle } : {},
    });
    // The schedule invokes asynchronously; a failed pass is not retried: the next scheduled pass is
    // the retry, and every message it did not finish is still in MESH.
    this.fn.configureAsyncInvoke({ retryAttempts: 0, maxEventAge: Duration.minutes(5) });
    const nothingToDeadLetter =
      'A failed poll pass has nothing to dead-letter or forward: its input is only the mailbox id, messages it did not finish stay in MESH, and the next scheduled pass retries. Failures raise the poller error alarm.';
    Validations.of(this.fn).acknowledge({ id: 'Serverless-LambdaDLQ', reason: nothingToDeadLetter });
    Validations.of(this.fn).acknowledge({
      id: 'Serverless-LambdaAsyncFailureDestination',
      reason: nothingToDeadLetter,
    });

    this.grantState(props);
    const role = this.fn.executionRole;
    // Its own mailboxes' secrets, by ARN, read-only; and their keys only as Secrets Manager uses them.
    this.grantReadSecrets(role, dataKey);
    inboundQueue.grant(role, 'sqs:SendMessage');

    this.schedulerRole = new iam.Role(this, 'SchedulerRole', {
      assumedBy: new iam.ServicePrincipal('scheduler.amazonaws.com', {
        // Only this account's schedules may assume it (confused-deputy guard).
        conditions: { StringEquals: { 'aws:SourceAccount': Aws.ACCOUNT_ID } },
      }),
      description: 'EventBridge Scheduler: invoke the ITK3 MESH poller, nothing else',
    });
    this.schedulerRole.addToPrincipalPolicy(
      new iam.PolicyStatement({ actions: ['lambda:InvokeFunction'], resources: [this.fn.functionArn] }),
    );

    const schedules: Record<string, scheduler.CfnSchedule> = {};
    for (const mailbox of mailboxes) {
      const every = settings.mailboxes.find((m) => m.mailboxId.toUpperCase() === mailbox)?.schedule;
      const minutes = (every ?? Duration.minutes(5)).toMinutes();
      schedules[mailbox] = new scheduler.CfnSchedule(this, `Schedule${mailbox}`, {
        description: `ITK3 MESH poll of mailbox ${mailbox}`,
        scheduleExpression: minutes === 1 ? 'rate(1 minute)' : `rate(${minutes} minutes)`,
        flexibleTimeWindow: { mode: 'OFF' },
        state: 'ENABLED',
        target: {
          arn: this.fn.functionArn,
          roleArn: this.schedulerRole.roleArn,
          input: JSON.stringify({ mailbox }),
          // A missed tick is not worth replaying: the next one comes within minutes.
          retryPolicy: { maximumRetryAttempts: 0, maximumEventAgeInSeconds: 60 },
        },
      });
    }
    this.schedules = schedules;

    this.errorAlarm = new cloudwatch.Alarm(this, 'ErrorAlarm', {
      alarmDescription:
        'A MESH poll pass failed: MESH refused the credentials, a mailbox secret is not filled in, or the clock is off (see the function log)',
      metric: this.fn.metricErrors({ period: Duration.minutes(15), statistic: 'Sum' }),
      threshold: 1,
      evaluationPeriods: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    if (alarmTopic) {
      this.errorAlarm.addAlarmAction(new actions.SnsAction(alarmTopic));
      this.errorAlarm.addOkAction(new actions.SnsAction(alarmTopic));
    }
  }

  /** The environment naming the MESH URL and each mailbox's secret (the poller's, and the deliver stage's). */
  get connectionEnvironment(): Record<string, string> {
    return {
      [MESH_POLL_ENV.url]: this.url,
      [MESH_POLL_ENV.mailboxes]: Stack.of(this).toJsonString(
        Object.fromEntries(Object.entries(this.secrets).map(([m, s]) => [m, s.secretArn])),
      ),
    };
  }

  /**
   * Let `grantee` read the mailbox secrets (nothing else in Secrets Manager) and decrypt them
   * through Secrets Manager only: the poller, and the deliver stage that sends through MESH.
   */
  grantReadSecrets(grantee: iam.IGrantable, dataKey: kms.IKey): void {
    iam.Grant.addToPrincipal({
      grantee,
      actions: ['secretsmanager:GetSecretValue'],
      resourceArns: Object.values(this.secrets).map((s) => s.secretArn),
    });
    const secretKeys = new Set<kms.IKey>();
    for (const secret of Object.values(this.secrets)) {
      const key = secret.encryptionKey ?? (secret instanceof secretsmanager.Secret ? dataKey : undefined);
      if (key) secretKeys.add(key);
    }
    if (secretKeys.size > 0) {
      iam.Grant.addToPrincipal({
        grantee,
        actions: ['kms:Decrypt'],
        resourceArns: [...secretKeys].map((k) => k.keyArn),
        conditions: { StringEquals: { 'kms:ViaService': `secretsmanager.${Aws.REGION}.amazonaws.com` } },
      });
    }
  }

  /**
   * A secret the operator fills in after deployment. Created with a random placeholder (so the
   * template holds no value and redeploying never overwrites what the operator wrote); the poller
   * refuses it with a message naming the missing fields until it is filled in.
   */
  private placeholderSecret(mailbox: string, props: MeshPollerProps): secretsmanager.Secret {
    const secret = new secretsmanager.Secret(this, `Secret${mailbox}`, {
      secretName: props.physicalNames ? `itk3/mesh/${mailbox}` : undefined,
      description: `ITK3 MESH credentials of mailbox ${mailbox}: replace with {"password","sharedKey","clientCert","clientKey","caBundle"} (docs/DEPLOY.md)`,
      encryptionKey: props.dataKey,
      generateSecretString: {
        secretStringTemplate: JSON.stringify({ fillIn: 'see docs/DEPLOY.md, MESH poller' }),
        generateStringKey: 'placeholder',
        excludePunctuation: true,
      },
      removalPolicy: props.removalPolicy,
    });
    Validations.of(secret).acknowledge({
      id: 'AwsSolutions-SMG4',
      reason:
        'MESH mailbox passwords and certificates are issued and changed by NHS England (password changes through their service desk, certificates by CSR): no rotation function can rotate them. The operator replaces the secret value when NHS England issues new credentials; the poller re-reads it within 5 minutes.',
    });
    return secret;
  }

  /** Once-store, lease, audit and claim-check grants, each confined to what the poller writes. */
  private grantState(props: MeshPollerProps): void {
    const { onceTable, auditTable, blobBucket, wildcards } = props;
    const role = this.fn.executionRole;
    // Once-store items of the poller (`mesh#<mailbox>#<id>#…`) and the mailbox leases: the
    // poller's keys only, never the pipeline's jti or duplicate-id markers.
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['dynamodb:PutItem', 'dynamodb:GetItem'],
        resources: [onceTable.tableArn],
        conditions: { 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': ['mesh#*'] } },
      }),
    );
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['dynamodb:PutItem', 'dynamodb:DeleteItem'],
        resources: [onceTable.tableArn],
        conditions: { 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': [`${MESH_LEASE_PREFIX}*`] } },
      }),
    );
    auditTable.grant(role, 'dynamodb:PutItem');
    // The S3 blob store keeps its keys under the claim-check prefix, and the poller's keys are
    // artefact keys themselves (`claim-check/mesh-<hash>/mesh-body`, lib/mesh/poller.ts).
    const claimChecks = blobBucket.arnForObjects(
      `${BLOB_BUCKET.claimCheckPrefix}${BLOB_BUCKET.claimCheckPrefix}mesh-*`,
    );
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({ actions: ['s3:PutObject'], resources: [claimChecks] }),
    );
    wildcards.allow(
      claimChecks,
      ['s3:PutObject'],
      'MESH bodies above the claim-check size are objects named per message under claim-check/claim-check/mesh-; the poller may only put objects there.',
    );
  }
}

/** Mailbox ids upper-cased, checked: valid, unique, at least one; schedules whole minutes ≥ 1; URL https (or the emulator's loopback escape). */
function validateSettings(settings: MeshPollerSettings): string[] {
  const problems: string[] = [];
  let url: URL | undefined;
  try {
    url = new URL(settings.url);
  } catch {
    problems.push(`mesh.url: "${settings.url}" is not a URL`);
  }
  const loopbackHttp =
    settings.emulatorLoopbackHttp === true &&
    url?.protocol === 'http:' &&
    LOOPBACK_HOSTS.has(url.hostname) &&
    url.port !== '';
  if (url && ((url.protocol !== 'https:' && !loopbackHttp) || url.pathname !== '/' || url.search !== '')) {
    problems.push('mesh.url: must be https://host[:port] with no path (MESH needs mutual TLS)');
  } else if (url && (url.username !== '' || url.password !== '' || url.hash !== '')) {
    // The URL is a plain Lambda environment variable: credentials belong in the mailbox secret.
    problems.push('mesh.url: no user, password or fragment (mailbox credentials go in its secret)');
  }
  if (settings.mailboxes.length === 0) problems.push('mesh.mailboxes: give at least one mailbox');
  const seen = new Set<string>();
  for (const [i, m] of settings.mailboxes.entries()) {
    const id = m.mailboxId.toUpperCase();
    if (!MAILBOX_ID.test(m.mailboxId))
      problems.push(`mesh.mailboxes.${i}.mailboxId: letters and digits, 3–20`);
    else if (seen.has(id)) problems.push(`mesh.mailboxes.${i}.mailboxId: ${id} is listed twice`);
    seen.add(id);
    if (m.schedule !== undefined) {
      const ms = m.schedule.toMilliseconds();
      if (ms < 60_000 || ms % 60_000 !== 0) {
        problems.push(`mesh.mailboxes.${i}.schedule: whole minutes, at least 1`);
      }
    }
  }
  const timeout = settings.timeout?.toSeconds();
  if (timeout !== undefined && (timeout < 180 || timeout > 900)) {
    problems.push('mesh.timeout: between 3 and 15 minutes (a pass stops 90 s before it)');
  }
  if (settings.limits !== undefined) {
    // The poller's own rules, checked at synth rather than at the first pass.
    const limits = MeshPollOptionsSchema.safeParse(settings.limits);
    for (const issue of limits.success ? [] : limits.error.issues) {
      problems.push(
        `mesh.limits${issue.path.length > 0 ? `.${issue.path.join('.')}` : ''}: ${issue.message}`,
      );
    }
  }
  if (settings.caBundle !== undefined && !/-----BEGIN CERTIFICATE-----/.test(settings.caBundle)) {
    problems.push('mesh.caBundle: must be PEM certificates');
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return [...seen];
}

/** Handler source of the poller function, relative to the project root. */
export const MESH_POLL_ENTRY = 'functions/mesh-poll.ts';

/**
 * The pipeline's `mesh` prop: the poller settings, where `url` and `mailboxes` may be left out to
 * take them from the configuration's `mesh` section (the one source of truth for which mailboxes
 * the gateway runs and which recipients each serves).
 */
export interface PipelineMeshSettings extends Omit<MeshPollerSettings, 'url' | 'mailboxes'> {
  /** @default - the configuration's `mesh.url` */
  readonly url?: string;
  /** @default - one entry per mailbox of the configuration's `mesh.mailboxes`, with a created secret */
  readonly mailboxes?: readonly MeshMailboxProps[];
}

/**
 * The poller settings for a pipeline whose configuration is `mesh` (its `mesh` section). The stack
 * and the configuration must agree: the authenticate stage accepts MESH messages only for the
 * configuration's mailboxes, and the deliver stage sends from them, so a mailbox polled but not
 * configured (or configured but not polled) is a mistake caught at synth.
 *
 * @throws {ConfigError} listing every disagreement
 */
export function resolveMeshSettings(
  settings: PipelineMeshSettings,
  mesh: { url: string; mailboxes: readonly { mailbox: string }[] } | undefined,
): MeshPollerSettings {
  if (!mesh) {
    throw new ConfigError([
      'mesh: the stack has a MESH poller but the configuration has no "mesh" section (its mailboxes and their recipients)',
    ]);
  }
  const problems: string[] = [];
  const url = settings.url ?? mesh.url;
  if (normalUrl(url) !== normalUrl(mesh.url)) {
    problems.push(`mesh.url: ${url} differs from the configuration's mesh.url ${mesh.url}`);
  }
  const configured = mesh.mailboxes.map((m) => m.mailbox.toUpperCase());
  const mailboxes = settings.mailboxes ?? configured.map((mailboxId) => ({ mailboxId }));
  const polled = new Set(mailboxes.map((m) => m.mailboxId.toUpperCase()));
  for (const m of polled) {
    if (!configured.includes(m))
      problems.push(`mesh.mailboxes: ${m} is not in the configuration's mesh.mailboxes`);
  }
  for (const m of configured) {
    if (!polled.has(m)) problems.push(`mesh.mailboxes: the configuration's mailbox ${m} is not polled`);
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return { ...settings, url, mailboxes };
}

function normalUrl(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return url;
  }
}
