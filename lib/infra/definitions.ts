/**
 * Resource definitions shared by the CDK stack (cdk/) and the emulator-mode provisioner
 * (lib/adapters/aws/provision.ts), so local runs use the same queues, tables and settings as a
 * deployment. Plain data: no AWS SDK, no CDK imports.
 */
import { STAGES, type StageName } from '../pipeline/topology.js';

/**
 * Per-stage tuning, in plain numbers: the one settings type of the CDK construct
 * (`Itk3SecurePipelineProps.stages`), the emulator provisioner and the embedded runtime. Every
 * stage's defaults are its entry in {@link STAGE_DEFINITIONS}.
 */
export interface StageSettings {
  /** Receives before a message moves to the stage's dead-letter queue (1–1 000). */
  maxReceiveCount: number;
  /** Records per invocation (1–10 000; above 10 needs a batching window); a batch must fit 6 MB. */
  batchSize: number;
  /** How long the event source gathers records before invoking (0–300 s). */
  maxBatchingWindowSeconds: number;
  /** Function timeout; the queue's visibility timeout follows it ({@link visibilityTimeoutSeconds}). */
  timeoutSeconds: number;
  /** Function memory in MB (CPU scales with it). */
  memoryMb: number;
  /** Reserved concurrency of the stage function (deployed only). Default: none. */
  reservedConcurrency?: number;
  /**
   * Maximum concurrent invocations the event source starts (2–1 000, deployed only), e.g. to keep
   * decrypt under the shared KMS RSA request rate. Default: none.
   */
  maxConcurrency?: number;
  /**
   * The stage queue's visibility timeout. Default: {@link visibilityTimeoutSeconds} of the settings;
   * emulator and command-line runs shorten it so a retried record comes back in seconds.
   */
  visibilityTimeoutSeconds?: number;
}

export interface StageDefinition extends StageSettings {
  stage: StageName;
  /** Handler entry, relative to the project root. */
  entry: string;
  /** Queue the stage reads. */
  queue: string;
  dlq: string;
}

/** Lambda visibility rule of thumb: at least six times the function timeout. */
export const VISIBILITY_FACTOR = 6;

/**
 * The one visibility-timeout formula (AWS's guidance for SQS event sources): six times the function
 * timeout plus the batching window, so a message is not redelivered while a slow invocation still
 * holds it.
 */
export function visibilityTimeoutSeconds(
  settings: Pick<StageSettings, 'timeoutSeconds' | 'maxBatchingWindowSeconds'>,
): number {
  return settings.timeoutSeconds * VISIBILITY_FACTOR + settings.maxBatchingWindowSeconds;
}

/** A stage's effective settings: its definition's defaults under `overrides`, visibility resolved. */
export function stageSettings(
  stage: StageName,
  overrides: Partial<StageSettings> = {},
): StageSettings & { visibilityTimeoutSeconds: number } {
  const { stage: _s, entry: _e, queue: _q, dlq: _d, ...defaults } = STAGE_DEFINITIONS[stage];
  const settings = { ...defaults, ...definedOnly(overrides) };
  return {
    ...settings,
    visibilityTimeoutSeconds: settings.visibilityTimeoutSeconds ?? visibilityTimeoutSeconds(settings),
  };
}

/** An override given as `undefined` keeps the default. */
function definedOnly<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

const defaults = {
  timeoutSeconds: 30,
  memoryMb: 1024,
  batchSize: 10,
  maxBatchingWindowSeconds: 1,
  maxReceiveCount: 5,
};

export const STAGE_DEFINITIONS: Readonly<Record<StageName, StageDefinition>> = Object.freeze(
  Object.fromEntries(
    STAGES.map((stage) => [
      stage,
      {
        stage,
        entry: `functions/${stage}.ts`,
        queue: `itk3-${stage}`,
        dlq: `itk3-${stage}-dlq`,
        ...defaults,
        // Decrypt does one KMS call per record: a longer timeout absorbs KMS latency spikes.
        ...(stage === 'decrypt' ? { timeoutSeconds: 60 } : {}),
      },
    ]),
  ) as Record<StageName, StageDefinition>,
);

export const INGEST_ENTRY = 'functions/ingest.ts';

/** DynamoDB once-store: jti replay and duplicate ids. */
export const ONCE_TABLE = {
  name: 'itk3-once',
  partitionKey: 'k',
  valueAttribute: 'v',
  ttlAttribute: 'expiresAt',
} as const;

/** DynamoDB audit trail: one item per event, ordered within a trace. */
export const AUDIT_TABLE = {
  name: 'itk3-audit',
  partitionKey: 'traceId',
  sortKey: 'sk',
  ttlAttribute: 'expiresAt',
  retentionDays: 400,
} as const;

/** S3 bucket for claim-check payloads (and deliveries/responses where configured). */
/**
 * The blob bucket. Claim-check objects are removed when their trace ends; `expireDays` is the
 * backstop for the rest (a trace still in a DLQ, a failed delete): short, so nothing an anonymous
 * sender caused can linger (issue 9, class 4). A redrive after it finds no claim check.
 */
export const BLOB_BUCKET = { name: 'itk3-blobs', claimCheckPrefix: 'claim-check/', expireDays: 2 } as const;

/** Environment variables the AWS composition root reads. */
export const ENV = {
  queueUrl: (stage: StageName) => `ITK3_QUEUE_URL_${stage.toUpperCase()}`,
  onceTable: 'ITK3_ONCE_TABLE',
  auditTable: 'ITK3_AUDIT_TABLE',
  blobBucket: 'ITK3_BLOB_BUCKET',
  /** JSON object: key id (kid) → KMS key id or ARN. */
  kmsKeys: 'ITK3_KMS_KEYS',
  /** JSON configuration document (emulator mode / tests); deployments bundle it instead. */
  configJson: 'ITK3_CONFIG_JSON',
  configFile: 'ITK3_CONFIG_FILE',
  /** Key id that signs audit checkpoints (docs/AUDIT.md); set only where `kms:Sign` is granted. */
  auditCheckpointKid: 'ITK3_AUDIT_CHECKPOINT_KID',
} as const;

/** CloudWatch namespace of the pipeline's own metrics (`POWERTOOLS_METRICS_NAMESPACE`). */
export const METRICS_NAMESPACE = 'ITK3Pipeline';

/**
 * `POWERTOOLS_SERVICE_NAME` of every function. One service for the whole pipeline: the handlers add
 * a `stage` dimension, so per-stage series differ by `stage`, not by service.
 */
export const SERVICE_NAME = 'itk3-pipeline';

/**
 * Metric names the stage handlers emit (dimensions `service`, `stage`; rejections also `itk3Code`),
 * by record result — the dashboard and alarms draw these same names.
 */
export const METRIC = {
  forwarded: 'MessagesForwarded',
  rejected: 'MessagesRejected',
  delivered: 'MessagesDelivered',
  responded: 'ResponsesSent',
  transient: 'TransientFailures',
} as const;
