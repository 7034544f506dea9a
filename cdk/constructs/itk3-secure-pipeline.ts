import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Annotations, Arn, ArnFormat, Aspects, Aws, type Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import * as logs from 'aws-cdk-lib/aws-logs';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import type * as sns from 'aws-cdk-lib/aws-sns';
import { Construct } from 'constructs';
import { folderKey, KEY_MODE_ENV, MESH_POLL_ENV } from '../../lib/adapters/aws/deployment-names.js';

import { type LoadedConfig, loadConfig } from '../../lib/config/load.js';
import type { PipelineConfigInput } from '../../lib/config/schema.js';
import { ConfigError } from '../../lib/errors.js';
import {
  BLOB_BUCKET,
  ENV,
  INGEST_ENTRY,
  STAGE_DEFINITIONS,
  type StageSettings,
} from '../../lib/infra/definitions.js';
import { NEXT_STAGE, STAGES, type StageName } from '../../lib/pipeline/topology.js';
import type { DeliveryTarget } from '../../lib/ports/index.js';
import { type IngestionSettings, PipelineIngestion } from './ingestion.js';
import { type KeyModeProps, type ResolvedKeyMode, resolveKeyMode } from './key-mode.js';
import { PipelineKeys } from './keys.js';
import {
  MESH_POLL_ENTRY,
  MeshPoller,
  type PipelineMeshSettings,
  resolveMeshSettings,
} from './mesh-poller.js';
import { PipelineObservability, pascal } from './observability.js';
import type { PowertoolsLogLevel } from './observability-names.js';
import { BUNDLE_AWS_SDK_CONTEXT, type PipelineFunction, resolveHandler } from './pipeline-function.js';
import { PipelineStage } from './stage.js';
import { PipelineState } from './state.js';
import { WildcardJustifications } from './wildcard-justifications.js';

/**
 * Two folders up from this file: the repository root in a checkout (handler sources under
 * `functions/`), `dist/` in the installed package (prebuilt bundles under `handlers/`). Found from
 * the file, so synth works from any working directory.
 */
const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

/** Properties of {@link Itk3SecurePipeline}. */
export interface Itk3SecurePipelineProps {
  /**
   * The pipeline configuration document (issuers, senders, recipients, policy, grants, limits).
   * Validated at construction with `loadConfig`: an invalid document throws a `ConfigError` that
   * lists every problem, so `cdk synth` fails instead of a function at 3 a.m. The validated document
   * is bundled into every function.
   */
  readonly config: PipelineConfigInput;
  /**
   * How the decrypt stage gets recipient private keys (docs/KEY-MODES.md).
   *
   * - `direct`: an `RSA_4096` KMS key per recipient kid, one KMS `Decrypt` per message; the private
   *   key never leaves KMS.
   * - `cached`: each recipient kid's private key is a blob wrapped under a symmetric KMS key
   *   (`itk3 keys wrap`), unwrapped once per decrypt container and TTL; no RSA KMS key exists for a
   *   wrapped kid. A security trade-off: read docs/PERFORMANCE.md, "Security trade-off of the cached
   *   mode", before choosing it. Synth fails, listing every kid, if a recipient kid has no wrapped key.
   * @default 'direct'
   */
  readonly keyMode?: KeyModeProps;
  /**
   * Per-stage tuning: receive count, batch size and window, concurrency, memory, timeout (seconds and
   * MB: the one `StageSettings` the emulator and the embedded runtime take too).
   * @default - the values in `STAGE_DEFINITIONS` (lib/infra/definitions.ts)
   */
  readonly stages?: Partial<Record<StageName, Partial<StageSettings>>>;
  /**
   * HTTP API throttling and ingest function sizing.
   * @default - 50 requests/s, burst 100, 1 024 MB
   */
  readonly ingestion?: IngestionSettings;
  /**
   * What happens to keys, tables, buckets and log groups when they leave the stack. Keep RETAIN for
   * anything holding real messages; DESTROY is for demos and emulators (KMS keys then enter their
   * deletion waiting period, and buckets must be emptied first: no auto-delete custom resource).
   * @default RemovalPolicy.RETAIN
   */
  readonly removalPolicy?: RemovalPolicy;
  /**
   * Name queues and tables exactly as lib/infra/definitions.ts (`itk3-authenticate`, `itk3-once`, …)
   * and the blob bucket `itk3-blobs-<account>-<region>`, for operators who look resources up by
   * name. Allows one such pipeline per account and Region.
   * @default false - CloudFormation generates names; the stack outputs give them
   */
  readonly physicalNames?: boolean;
  /**
   * Retention of every function log group and the API access log group.
   * @default logs.RetentionDays.THREE_MONTHS
   */
  readonly logRetention?: logs.RetentionDays;
  /**
   * Powertools log level of every function.
   * @default 'INFO'
   */
  readonly logLevel?: PowertoolsLogLevel;
  /**
   * SNS topic for alarm and OK notifications. If it is encrypted, its key policy must let
   * CloudWatch (`cloudwatch.amazonaws.com`) use the key.
   * @default - alarms without actions
   */
  readonly alarmTopic?: sns.ITopic;
  /**
   * Age of the oldest message in a source queue above which its alarm fires.
   * @default Duration.minutes(5)
   */
  readonly oldestMessageAgeThreshold?: Duration;
  /**
   * Principals allowed to put messages straight on the inbound (authenticate) queue, typically
   * roles in sender accounts. Same-account principals can equally be granted through IAM.
   * @default - none
   */
  readonly directIngestionPrincipals?: readonly iam.IPrincipal[];
  /**
   * Claim-check object lifetime.
   * @default - `BLOB_BUCKET.expireDays` (2 days; objects are also removed when their trace ends)
   */
  readonly claimCheckExpiry?: Duration;
  /**
   * Handler source files, relative to {@link projectRoot}.
   * @default - `functions/<stage>.ts` and `functions/ingest.ts` (lib/infra/definitions.ts)
   */
  readonly entries?: Partial<Record<StageName | 'ingest', string>>;
  /**
   * Directory holding the handler sources and their `node_modules`.
   * @default - the root of this repository; an installed package uses its prebuilt bundles
   */
  readonly projectRoot?: string;
  /**
   * Bundle the AWS SDK v3 into every function instead of using the one the Lambda Node.js runtime
   * provides. Only for emulators that run functions on a Node without an SDK; needs the handler
   * sources (the package's prebuilt bundles leave the SDK out).
   * @default - the `itk3:bundleAwsSdk` context value (`true`/`false`), else false
   */
  readonly bundleAwsSdk?: boolean;
  /**
   * A symmetric KMS key the team already has, for data at rest (queues other than the inbound one,
   * tables, the blob bucket, log groups), in the manner of AWS Solutions Constructs'
   * `existingXxxObj` props. Its key policy is the team's: it must let CloudWatch Logs of this
   * account and Region use the key (docs/DEPLOY.md); the functions get key grants through SQS,
   * DynamoDB and S3 only, as with the created key.
   * @default - a customer-managed key with yearly rotation
   */
  readonly existingDataKeyObj?: kms.IKey;
  /**
   * A bucket the team already has for claim checks and folder deliveries. The pipeline writes only
   * under `claim-check/` and `deliveries/`; encryption, access logs, versioning and lifecycle stay
   * the team's (add an expiry for `claim-check/`). If it is encrypted with a KMS key other than the
   * data key, pass that key as the imported bucket's `encryptionKey`: the functions then get it
   * through S3 only.
   * @default - a versioned bucket encrypted with the data key, with access logs and lifecycle rules
   */
  readonly existingBlobBucketObj?: s3.IBucket;
  /**
   * The MESH poller (docs/DEPLOY.md, "MESH poller"): per mailbox an EventBridge Scheduler schedule
   * invoking one poller function, which moves the inbox onto the inbound queue under a per-mailbox
   * DynamoDB lease, with the credentials in Secrets Manager.
   * @default - no MESH poller
   */
  readonly mesh?: PipelineMeshSettings;
}

/**
 * The ITK3 secure pipeline as one construct: five queue-chained stage functions, the HTTP ingest
 * front door, KMS keys, tables, buckets, alarms and a dashboard, secure by default.
 *
 * Permissions are the least each function needs, given through grant helpers:
 * - decrypt alone may `kms:Decrypt` with the recipient keys (in the cached key mode: with the
 *   wrapping key, only under the wrapped kids' encryption context); deliver alone may `kms:Sign`
 *   with the response-signing key (both also named in the keys' own policies);
 * - a function may send only to the queues it forwards to (the next stage, and deliver for
 *   rejections; ingest to authenticate);
 * - authenticate and verify use the once-store; every stage appends to the audit table and reads
 *   and writes claim-check objects; deliver writes to the configured delivery targets; ingest only
 *   sends to the inbound queue.
 *
 * @example
 * ```ts
 * new Itk3SecurePipeline(stack, 'Pipeline', {
 *   config: JSON.parse(readFileSync('docs/config.example.json', 'utf8')),
 *   stages: { decrypt: { maxConcurrency: 50 } },
 * });
 * ```
 */
export class Itk3SecurePipeline extends Construct {
  /** The validated configuration. */
  readonly config: LoadedConfig;
  /** KMS keys. */
  readonly keys: PipelineKeys;
  /** The key mode, validated, with its defaults. */
  readonly keyMode: ResolvedKeyMode;
  /** Tables and buckets. */
  readonly state: PipelineState;
  /** The five stages, by name. */
  readonly stages: Readonly<Record<StageName, PipelineStage>>;
  /** HTTP API and ingest function. */
  readonly ingestion: PipelineIngestion;
  /** Alarms and dashboard. */
  readonly observability: PipelineObservability;
  /** The inbound queue: the authenticate stage's source queue, for direct SQS ingestion. */
  readonly inboundQueue: PipelineStage['queue'];
  /** The MESH poller, when the `mesh` prop is given. */
  readonly meshPoller?: MeshPoller;

  readonly #wildcards = new WildcardJustifications();

  constructor(scope: Construct, id: string, props: Itk3SecurePipelineProps) {
    super(scope, id);
    // The blob bucket's access logs are granted by bucket policy, as its BUCKET_OWNER_ENFORCED
    // ownership requires; an app without this feature flag (not created by \`cdk init\`) would use
    // ACLs and fail the synth. Set here, before any child exists, so it holds in any app.
    this.node.setContext('@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy', true);
    this.config = loadConfig(props.config);
    const doc = this.config.doc;
    // Before anything is built (and bundled), so a missing wrapped key fails the synth at once.
    this.keyMode = resolveKeyMode(props.keyMode, doc);
    const keyMode = this.keyMode;
    if (props.mesh && keyMode.wrappedSigningKey) {
      // The poller attests and authenticate checks with the KMS signing key, which then would not exist.
      throw new ConfigError([
        'keyMode.wrappedSigningKey: the MESH poller signs attestations with the KMS response-signing key; a wrapped response-signing key cannot be combined with mesh',
      ]);
    }
    const removalPolicy = props.removalPolicy ?? RemovalPolicy.RETAIN;
    const projectRoot = props.projectRoot ?? PACKAGE_ROOT;
    const entry = (name: StageName | 'ingest') =>
      resolveHandler(
        resolve(
          projectRoot,
          props.entries?.[name] ?? (name === 'ingest' ? INGEST_ENTRY : STAGE_DEFINITIONS[name].entry),
        ),
        PACKAGE_ROOT,
      );
    const bundleAwsSdk =
      props.bundleAwsSdk ?? String(this.node.tryGetContext(BUNDLE_AWS_SDK_CONTEXT) ?? 'false') === 'true';

    this.keys = new PipelineKeys(this, 'Keys', {
      config: doc,
      removalPolicy,
      existingDataKey: props.existingDataKeyObj,
      ...(keyMode.mode === 'cached'
        ? {
            keyWrapping: {
              wrappedKids: keyMode.wrappedKids,
              wrappingKey: keyMode.wrappingKey,
              wrappingKeyArn: keyMode.wrappingKeyArn,
              wrappedSigningKid: keyMode.wrappedSigningKey?.kid,
            },
          }
        : {}),
    });
    this.state = new PipelineState(this, 'State', {
      dataKey: this.keys.dataKey,
      existingBlobBucket: props.existingBlobBucketObj,
      removalPolicy,
      physicalNames: props.physicalNames,
      claimCheckExpiry: props.claimCheckExpiry,
    });
    // Before any function is built (and bundled), so a bad target fails fast.
    const deliveryTargets = this.deliveryTargetArns();

    const functionDefaults = {
      projectRoot,
      bundleAwsSdk,
      configJson: JSON.stringify(doc),
      logRetention: props.logRetention ?? logs.RetentionDays.THREE_MONTHS,
      logEncryptionKey: this.keys.dataKey,
      logLevel: props.logLevel ?? 'INFO',
      removalPolicy,
      environment: {
        [ENV.onceTable]: this.state.onceTable.tableName,
        [ENV.auditTable]: this.state.auditTable.tableName,
        [ENV.blobBucket]: this.state.blobBucket.bucketName,
        [ENV.kmsKeys]: '{}',
      },
    } as const;

    // The wrapped keys go into the decrypt bundle, not its Lambda environment: one RSA-4096 blob is
    // ≥ 3.2 KB of base64, and Lambda allows 4 KB for all variables together.
    const wrappedKeysBundled: Record<string, string> =
      keyMode.wrappedKids.size > 0 ? { [KEY_MODE_ENV.wrappedKeys]: JSON.stringify(keyMode.wrappedKeys) } : {};

    const stages = {} as Record<StageName, PipelineStage>;
    for (const stage of STAGES) {
      stages[stage] = new PipelineStage(this, pascal(stage), {
        ...functionDefaults,
        ...(stage === 'decrypt' ? { bundledEnvironment: wrappedKeysBundled } : {}),
        // The deliver stage sends through MESH with the same CA bundle as the poller.
        ...(stage === 'deliver' && props.mesh?.caBundle
          ? { bundledEnvironment: { [MESH_POLL_ENV.caBundle]: props.mesh.caBundle } }
          : {}),
        definition: STAGE_DEFINITIONS[stage],
        entry: entry(stage),
        settings: props.stages?.[stage],
        // The inbound queue has a key of its own: the one key partners may encrypt to.
        queueKey: stage === 'authenticate' ? this.keys.inboundKey : this.keys.dataKey,
        physicalNames: props.physicalNames,
      });
    }
    this.stages = stages;
    this.inboundQueue = stages.authenticate.queue;

    this.ingestion = new PipelineIngestion(this, 'Ingestion', {
      ...functionDefaults,
      entry: entry('ingest'),
      settings: props.ingestion,
      accessLogKey: this.keys.dataKey,
    });

    // Who sends where: ingest → authenticate; each stage → its next stage and deliver (rejections).
    this.grantSend(this.ingestion.fn, 'authenticate');
    for (const stage of STAGES) {
      const next = NEXT_STAGE[stage];
      if (next) this.grantSend(stages[stage].fn, next);
      if (stage !== 'deliver') this.grantSend(stages[stage].fn, 'deliver');
    }
    // The key policy cannot name the queue by a reference to it (the queue names the key: a cycle),
    // so the ARN is built from the physical name when there is one, else it is this account's queues
    // — which, with a key used by the inbound queue and its DLQ alone, and SQS rights on the inbound
    // queue alone, still means the inbound queue.
    const inboundQueueArn = Stack.of(this).formatArn({
      service: 'sqs',
      resource: props.physicalNames ? STAGE_DEFINITIONS.authenticate.queue : '*',
      arnFormat: ArnFormat.NO_RESOURCE_NAME,
    });
    for (const principal of props.directIngestionPrincipals ?? []) {
      // Explicit actions: `grantSendMessages` would add kms:ReEncrypt* and kms:GenerateDataKey*.
      this.inboundQueue.grant(principal, 'sqs:SendMessage', 'sqs:GetQueueAttributes', 'sqs:GetQueueUrl');
      this.keys.allowInboundProducer(principal, inboundQueueArn, props.physicalNames === true);
    }

    // State access follows the ports each function uses in lib/: every stage audits, records each
    // outcome once (a once-store marker, and a read of the trace's trail on a redelivery) and
    // removes a finished trace's claim checks (stages/batch.ts); authenticate (jti), verify
    // (duplicate ids) and deliver (the first response signature) use the once-store directly;
    // ingest stores large envelopes as claim checks and removes one it could not queue.
    this.grantDataKeyThroughServices(this.ingestion.fn);
    this.grantInboundKeyThroughSqs(this.ingestion.fn);
    this.grantClaimChecks(this.ingestion.fn, ['s3:PutObject', 's3:DeleteObject']);
    for (const stage of STAGES) {
      const fn = stages[stage].fn;
      this.grantDataKeyThroughServices(fn);
      this.state.auditTable.grant(fn, 'dynamodb:PutItem', 'dynamodb:Query');
      this.state.onceTable.grant(fn, 'dynamodb:PutItem', 'dynamodb:GetItem');
      this.grantClaimChecks(fn, ['s3:GetObject', 's3:PutObject', 's3:DeleteObject']);
    }

    this.keys.grantUnwrap(stages.decrypt.fn.executionRole);
    stages.decrypt.fn.addEnvironment(ENV.kmsKeys, Stack.of(this).toJsonString(this.keys.recipientKeyArns()));
    this.configureKeyMode(stages.decrypt.fn);
    this.keys.grantResponseSigning(stages.deliver.fn.executionRole);
    this.configureResponseSigning(stages.deliver.fn);
    // Deliver alone may sign, so its audit stream is the one checkpointed (docs/AUDIT.md), with the
    // key service that signs its responses: KMS, or the wrapped key unwrapped in the function.
    stages.deliver.fn.addEnvironment(ENV.auditCheckpointKid, doc.responseSigning.kid);
    this.grantDeliveryTargets(stages.deliver.fn, deliveryTargets);

    // MESH poller (optional): like ingest, a producer of the inbound queue, plus its own grants.
    if (props.mesh) {
      const settings = resolveMeshSettings(props.mesh, doc.mesh);
      if (doc.mesh?.attestationKid && doc.mesh.attestationKid !== doc.responseSigning.kid) {
        throw new ConfigError([
          'mesh.attestationKid: the stack attests MESH messages with the response-signing key; leave attestationKid unset or equal to responseSigning.kid',
        ]);
      }
      const poller = new MeshPoller(this, 'MeshPoller', {
        ...functionDefaults,
        entry: resolveHandler(resolve(projectRoot, MESH_POLL_ENTRY), PACKAGE_ROOT),
        settings,
        dataKey: this.keys.dataKey,
        onceTable: this.state.onceTable,
        auditTable: this.state.auditTable,
        blobBucket: this.state.blobBucket,
        inboundQueue: this.inboundQueue,
        wildcards: this.#wildcards,
        alarmTopic: props.alarmTopic,
        physicalNames: props.physicalNames,
      });
      this.grantDataKeyThroughServices(poller.fn);
      this.grantInboundKeyThroughSqs(poller.fn);
      // Attestation (lib/mesh/attestation.ts): the poller signs what it read from MESH with the
      // response-signing key, the authenticate stage checks it with the public key (read once per
      // container). Nobody else may sign with it except the deliver stage (responses).
      const signingKey = this.keys.kmsSigningKey('MESH attestations');
      const signingKeyEnv = Stack.of(this).toJsonString({ [signingKey.kid]: signingKey.key.keyArn });
      this.keys.grantAttestationSigning(poller.fn.executionRole);
      poller.fn.addEnvironment(ENV.kmsKeys, signingKeyEnv);
      this.keys.grantAttestationCheck(stages.authenticate.fn.executionRole);
      stages.authenticate.fn.addEnvironment(ENV.kmsKeys, signingKeyEnv);
      // Delivery through MESH (recipients behind MESH, responses to MESH senders): the deliver
      // stage reads the same mailbox secrets as the poller.
      for (const [name, value] of Object.entries(poller.connectionEnvironment)) {
        stages.deliver.fn.addEnvironment(name, value);
      }
      poller.grantReadSecrets(stages.deliver.fn.executionRole, this.keys.dataKey);
      this.meshPoller = poller;
    }

    this.observability = new PipelineObservability(this, 'Observability', {
      stages: STAGES.map((stage) => ({
        stage,
        fn: stages[stage].fn,
        queue: stages[stage].queue,
        deadLetterQueue: stages[stage].deadLetterQueue,
      })),
      ingestFunction: this.ingestion.fn,
      api: this.ingestion.api,
      alarmTopic: props.alarmTopic,
      oldestMessageAgeThreshold: props.oldestMessageAgeThreshold,
    });

    Aspects.of(this).add(this.#wildcards);
  }

  /**
   * The cached mode's variables on the decrypt function (read by `keyServiceFromEnv`,
   * lib/adapters/aws/clients.ts); `ITK3_WRAPPED_KEYS` itself is bundled. Direct mode sets nothing,
   * so its template is unchanged; so does a cached mode with no wrapped kid yet (all `directKids`,
   * e.g. the first deployment that creates the wrapping key), where the service would have nothing
   * to cache.
   */
  private configureKeyMode(fn: PipelineFunction): void {
    const { keyMode } = this;
    if (keyMode.mode !== 'cached') return;
    if (keyMode.wrappedKids.size === 0) {
      Annotations.of(this).addInfo(
        'Cached key mode without wrapped keys: decrypt stays on the RSA KMS keys of the directKids until kids are wrapped (docs/KEY-MODES.md).',
      );
      return;
    }
    const wrappingKey = this.keys.wrappingKey?.key;
    if (!wrappingKey) return; // PipelineKeys has already reported why (a bad wrappingKeyArn).
    fn.addEnvironment(KEY_MODE_ENV.mode, 'cached');
    // Named in every Decrypt, so a blob wrapped under anyone else's key is refused.
    fn.addEnvironment(KEY_MODE_ENV.wrappingKeyId, wrappingKey.keyArn);
    fn.addEnvironment(KEY_MODE_ENV.ttlSeconds, String(keyMode.ttlSeconds));
    if (keyMode.publicJwks.length < keyMode.wrappedKids.size) {
      Annotations.of(this).addInfo(
        'Cached key mode: publish the publicJwk of every wrapped kid (itk3 keys wrap output) to senders; only the public JWKs given to keyMode.publicJwks are in the RecipientPublicJwks output.',
      );
    }
  }

  /**
   * The deliver function's response-signing key: the KMS key's ARN in `ITK3_KMS_KEYS`, or, with a
   * wrapped response-signing key, the cached mode with `ITK3_WRAPPED_SIGNING_KEYS` alone (a P-256
   * blob is a few hundred bytes, so it fits the Lambda environment) and no KMS key at all.
   */
  private configureResponseSigning(fn: PipelineFunction): void {
    const signingKey = this.keys.signingKey;
    if (signingKey) {
      fn.addEnvironment(
        ENV.kmsKeys,
        Stack.of(this).toJsonString({ [signingKey.kid]: signingKey.key.keyArn }),
      );
      return;
    }
    const wrapped = this.keyMode.wrappedSigningKey;
    const wrappingKey = this.keys.wrappingKey?.key;
    if (!wrapped || !wrappingKey) return; // PipelineKeys has already reported why (a bad wrappingKeyArn).
    fn.addEnvironment(KEY_MODE_ENV.mode, 'cached');
    fn.addEnvironment(
      KEY_MODE_ENV.wrappedSigningKeys,
      JSON.stringify({ [wrapped.kid]: wrapped.wrappedPrivateKey }),
    );
    fn.addEnvironment(KEY_MODE_ENV.wrappingKeyId, wrappingKey.keyArn);
    fn.addEnvironment(KEY_MODE_ENV.ttlSeconds, String(this.keyMode.ttlSeconds));
  }

  /** Let `fn` send to `stage`'s queue, and tell it the URL. */
  private grantSend(fn: PipelineFunction, stage: StageName): void {
    const queue = this.stages[stage].queue;
    queue.grant(fn, 'sqs:SendMessage');
    fn.addEnvironment(ENV.queueUrl(stage), queue.queueUrl);
  }

  /**
   * The data key, only as SQS, DynamoDB and S3 use it on the function's behalf (SSE-KMS). Explicit
   * actions instead of the `grant*` defaults, which carry `kms:ReEncrypt*` and `kms:GenerateDataKey*`.
   */
  private grantDataKeyThroughServices(fn: PipelineFunction): void {
    const key: kms.IKey = this.keys.dataKey;
    iam.Grant.addToPrincipal({
      grantee: fn,
      actions: ['kms:Decrypt', 'kms:Encrypt', 'kms:GenerateDataKey', 'kms:DescribeKey'],
      resourceArns: [key.keyArn],
      conditions: {
        StringEquals: {
          'kms:ViaService': ['sqs', 'dynamodb', 's3'].map(
            (service) => `${service}.${Aws.REGION}.amazonaws.com`,
          ),
        },
      },
    });
    // A team's bucket under a key of its own: that key too, and only as S3 uses it.
    const bucketKey = this.state.blobBucket.encryptionKey;
    if (bucketKey && bucketKey !== key) {
      iam.Grant.addToPrincipal({
        grantee: fn,
        actions: ['kms:Decrypt', 'kms:GenerateDataKey'],
        resourceArns: [bucketKey.keyArn],
        conditions: { StringEquals: { 'kms:ViaService': `s3.${Aws.REGION}.amazonaws.com` } },
      });
    }
  }

  /** The inbound key, only as SQS uses it for a producer of the inbound queue (ingest). */
  private grantInboundKeyThroughSqs(fn: PipelineFunction): void {
    iam.Grant.addToPrincipal({
      grantee: fn,
      actions: ['kms:GenerateDataKey', 'kms:Decrypt'],
      resourceArns: [this.keys.inboundKey.keyArn],
      conditions: { StringEquals: { 'kms:ViaService': `sqs.${Aws.REGION}.amazonaws.com` } },
    });
  }

  /** Claim-check objects (`claim-check/…` in the blob bucket): `actions` there, nothing else. */
  private grantClaimChecks(fn: PipelineFunction, actions: string[]): void {
    const resource = this.state.blobBucket.arnForObjects(`${BLOB_BUCKET.claimCheckPrefix}*`);
    iam.Grant.addToPrincipal({ grantee: fn, actions, resourceArns: [resource] });
    this.#wildcards.allow(
      resource,
      actions,
      'Claim-check object keys are made per message at run time; access is limited to the claim-check prefix of the pipeline bucket.',
    );
  }

  /**
   * Where deliver writes messages and ITK3 responses: folder targets become objects under
   * `deliveries/<path>/` in the blob bucket, S3 targets objects under their prefix, SQS targets
   * messages on their queue. Throws a `ConfigError` listing every target it cannot turn into an ARN.
   */
  private deliveryTargetArns(): { objects: string[]; queues: string[] } {
    const doc = this.config.doc;
    const targets: { where: string; target: DeliveryTarget }[] = [
      { where: 'unauthenticatedResponseTarget', target: doc.unauthenticatedResponseTarget },
      ...doc.senders.map((s, i) => ({ where: `senders.${i}.responseTarget`, target: s.responseTarget })),
      ...doc.recipients.map((r, i) => ({ where: `recipients.${i}.target`, target: r.target })),
    ];
    const problems: string[] = [];
    const objects = new Set<string>();
    const queues = new Set<string>();
    for (const { where, target } of targets) {
      switch (target.type) {
        case 'folder':
          objects.add(this.state.blobBucket.arnForObjects(folderKey(target.path, '*')));
          break;
        case 's3': {
          const prefix = target.prefix ? `${target.prefix.replace(/\/+$/, '')}/` : '';
          objects.add(`arn:${Aws.PARTITION}:s3:::${target.bucket}/${prefix}*`);
          break;
        }
        case 'sqs': {
          const arn = queueArnFromUrl(target.queueUrl);
          if (arn) queues.add(arn);
          else problems.push(`${where}.queueUrl: "${target.queueUrl}" is not an SQS queue URL`);
          break;
        }
        case 'mesh':
          // Sent through MESH, not to an AWS resource: no grant here (the MESH poller construct).
          break;
      }
    }
    if (problems.length > 0) throw new ConfigError(problems);
    return { objects: [...objects], queues: [...queues] };
  }

  /**
   * Deliver alone may put objects on the delivery prefixes (and read one back: a name already taken
   * is compared by content hash before a delivery is claimed) and send to the delivery queues.
   */
  private grantDeliveryTargets(fn: PipelineFunction, targets: { objects: string[]; queues: string[] }): void {
    if (targets.objects.length > 0) {
      const actions = ['s3:PutObject', 's3:GetObject'];
      iam.Grant.addToPrincipal({ grantee: fn, actions, resourceArns: targets.objects });
      for (const arn of targets.objects) {
        this.#wildcards.allow(
          arn,
          actions,
          'Delivered messages and ITK3 responses are objects named per message under a configured delivery prefix; deliver may only put objects there and read one back to compare its content hash.',
        );
      }
    }
    if (targets.queues.length > 0) {
      iam.Grant.addToPrincipal({ grantee: fn, actions: ['sqs:SendMessage'], resourceArns: targets.queues });
      Annotations.of(this).addInfo(
        'SQS delivery targets: if a target queue uses SSE-KMS with its own key, that key must let the deliver role call kms:GenerateDataKey.',
      );
    }
  }
}

/**
 * `arn:…:sqs:<region>:<account>:<name>` from a queue URL: `https://sqs.<region>.amazonaws.com/<account>/<name>`,
 * the legacy `https://<region>.queue.amazonaws.com/…`, or an emulator URL ending in `/<account>/<name>`
 * (then the stack's Region).
 */
export function queueArnFromUrl(url: string): string | undefined {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return undefined;
  }
  const parts = parsed.pathname.split('/').filter(Boolean);
  const name = parts.at(-1);
  const account = parts.at(-2);
  if (!name || !account || !/^\d{12}$/.test(account)) return undefined;
  const region =
    /^sqs\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$/.exec(parsed.hostname)?.[1] ??
    /^([a-z0-9-]+)\.queue\.amazonaws\.com(\.cn)?$/.exec(parsed.hostname)?.[1] ??
    Aws.REGION;
  return Arn.format({ partition: Aws.PARTITION, service: 'sqs', region, account, resource: name });
}
