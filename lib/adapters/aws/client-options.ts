/**
 * Where the SDK clients point, and how they wait: the one rule every per-service client factory
 * (sdk-kms.ts, sdk-sqs.ts, sdk-dynamodb.ts, sdk-s3.ts, and the MESH functions' Secrets Manager
 * client in mesh-poll-job.ts) follows. No SDK import here, so a handler
 * bundle pulls in only the clients its stage uses.
 */

/** The services the pipeline's adapters call through {@link AwsClientOptions}. */
export type SdkService = 'kms' | 'sqs' | 'dynamodb' | 's3' | 'secretsmanager';

/** Where the clients point. Everything defaults to the environment. */
export interface AwsClientOptions {
  /** One endpoint for every service (an emulator). Default: `AWS_ENDPOINT_URL_<SERVICE>`, then `AWS_ENDPOINT_URL`. */
  endpoint?: string;
  /** Default: `AWS_REGION`, `AWS_DEFAULT_REGION`, and `us-east-1` when an endpoint is set. */
  region?: string;
  /** Environment to read (tests pass their own). Default: `process.env`. */
  env?: NodeJS.ProcessEnv;
  /**
   * Static credentials, for emulators (`test`/`test`: a non-numeric key, since ministack takes a
   * 12-digit access key as an account id). Default: the SDK's provider chain.
   */
  credentials?: { accessKeyId: string; secretAccessKey: string };
}

/** The SDK's service ids as used in `AWS_ENDPOINT_URL_<ID>` (upper case, spaces as `_`). */
const ENDPOINT_ENV: Record<SdkService, string> = {
  kms: 'AWS_ENDPOINT_URL_KMS',
  sqs: 'AWS_ENDPOINT_URL_SQS',
  dynamodb: 'AWS_ENDPOINT_URL_DYNAMODB',
  s3: 'AWS_ENDPOINT_URL_S3',
  secretsmanager: 'AWS_ENDPOINT_URL_SECRETS_MANAGER',
};

/**
 * Endpoint for one service: explicit option, then the service-specific variable (routes one service
 * to a sidecar, e.g. DynamoDB on ministack beside LocalStack), then `AWS_ENDPOINT_URL`. Resolved
 * here rather than left to the SDK so the rule is the same on every SDK version and visible in tests.
 */
export function endpointFor(service: SdkService, opts: AwsClientOptions = {}): string | undefined {
  const env = opts.env ?? process.env;
  return opts.endpoint ?? nonEmpty(env[ENDPOINT_ENV[service]]) ?? nonEmpty(env.AWS_ENDPOINT_URL);
}

/**
 * The constructor options of one service's client. With an endpoint anywhere (an emulator) the region
 * defaults to `us-east-1`; without one, plain SDK defaults (region and credentials from the Lambda
 * environment).
 */
export function sdkClientConfig(service: SdkService, opts: AwsClientOptions = {}) {
  const env = opts.env ?? process.env;
  const anyEndpoint = (Object.keys(ENDPOINT_ENV) as SdkService[]).some((s) => endpointFor(s, opts));
  const region =
    opts.region ??
    nonEmpty(env.AWS_REGION) ??
    nonEmpty(env.AWS_DEFAULT_REGION) ??
    (anyEndpoint ? 'us-east-1' : undefined);
  const endpoint = endpointFor(service, opts);
  return {
    ...(region ? { region } : {}),
    ...(endpoint ? { endpoint } : {}),
    ...(opts.credentials ? { credentials: opts.credentials } : {}),
    // Bounded waits: a dead endpoint must fail the record (and be retried), not hang the batch.
    requestHandler: { connectionTimeout: 3_000, requestTimeout: 30_000 },
  };
}

/** An environment value, trimmed; blank counts as unset. */
export function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === '' ? undefined : value.trim();
}
