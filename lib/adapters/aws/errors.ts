/**
 * Classifying AWS SDK v3 failures as transient (retry, then DLQ) or permanent: the SDK's own
 * helpers first, then the project's operator set.
 *
 * The SDK already retries throttling and 5xx a few times (standard retry mode); what reaches us has
 * exhausted those retries, so a transient error here means "report the record as a batch item
 * failure and let SQS redeliver it later".
 */
import { isServerError, isThrottlingError, isTransientError } from '@smithy/core/retry';

/** Server-side or dependency failures that are transient whatever their HTTP status. */
const SERVER_SIDE = new Set([
  'KMSInternalException',
  'DependencyTimeoutException',
  'KeyUnavailableException',
  'InternalServerError',
  'InternalFailure',
  'InternalError',
  'ServiceUnavailable',
  'ServiceUnavailableException',
  'KMS.InternalFailure',
]);

/**
 * Credential and permission failures. Not retryable in the SDK's sense, but they are operator
 * mistakes (a missing grant, an expired role session), not properties of the message: treating them
 * as transient keeps the records in the DLQ for a redrive after the fix, instead of rejecting every
 * message while the configuration is wrong.
 */
const OPERATOR = new Set([
  'AccessDeniedException',
  'AccessDenied',
  'UnrecognizedClientException',
  'InvalidClientTokenId',
  'InvalidSignatureException',
  'SignatureDoesNotMatch',
  'ExpiredToken',
  'ExpiredTokenException',
  'CredentialsProviderError',
]);

/**
 * Network error codes the SDK's classification leaves out (it knows ECONNRESET, ECONNREFUSED, EPIPE,
 * ETIMEDOUT, EHOSTUNREACH, ENETUNREACH, ENOTFOUND, EAI_AGAIN): the request never got an answer.
 */
const NETWORK = new Set(['ECONNABORTED']);

interface SdkErrorShape {
  name?: unknown;
  code?: unknown;
  $fault?: unknown;
  $metadata?: { httpStatusCode?: unknown };
  $retryable?: unknown;
}

/** The error's name (`ThrottlingException`, …) or `undefined` for non-errors. */
export function awsErrorName(error: unknown): string | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const name = (error as SdkErrorShape).name;
  return typeof name === 'string' ? name : undefined;
}

/** HTTP status of the failed response, if there was a response. */
function awsHttpStatus(error: unknown): number | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const status = (error as SdkErrorShape).$metadata?.httpStatusCode;
  return typeof status === 'number' ? status : undefined;
}

/**
 * True when the failure may succeed on retry. The SDK's own classification (`@smithy/core/retry`:
 * throttling names and 429, timeouts, network errors, 5xx, the retryable trait) plus the project's
 * operator set: server-side dependency failures KMS names without a 5xx ({@link SERVER_SIDE}),
 * credential and permission problems ({@link OPERATOR}), and an aborted request (the function ran
 * out of time: the record is redelivered). False for 4xx client errors about the request itself
 * (bad ciphertext, failed condition, missing key, validation).
 */
export function isTransientAwsError(error: unknown): boolean {
  if (typeof error !== 'object' || error === null) return false;
  const e = error as SdkErrorShape;
  const name = typeof e.name === 'string' ? e.name : '';
  if (SERVER_SIDE.has(name) || OPERATOR.has(name) || name === 'AbortError') return true;
  if (typeof e.code === 'string' && NETWORK.has(e.code)) return true;
  const sdkError = error as Parameters<typeof isTransientError>[0];
  if (isThrottlingError(sdkError) || isTransientError(sdkError) || isServerError(sdkError)) return true;
  const status = awsHttpStatus(error);
  if (status !== undefined) return status >= 500;
  // A service exception always carries $metadata with a status; anything without one (a socket
  // error wrapped by the SDK, a DNS failure) never reached the service.
  return e.$fault === undefined || e.$fault === 'server';
}
