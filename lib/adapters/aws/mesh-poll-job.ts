/**
 * One scheduled MESH poll of one mailbox, as the AWS poller Lambda runs it (functions/mesh-poll.ts):
 * take the mailbox's lease, read its credentials, run one bounded poller pass (lib/mesh/poller.ts)
 * that stops in time to finish before the function's deadline, give the lease back.
 *
 * Everything it touches comes in as arguments, so the same job runs in Lambda, in-process against
 * the emulators and in unit tests; {@link meshPollSetupFromEnv} reads the Lambda environment.
 */
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
// The MESH modules themselves, not the lib/mesh barrel: a handler bundle takes only what it runs.
import type { MeshClient, MeshDownloadedMessage } from '../../mesh/client.js';
import { MeshConfigError, MeshError } from '../../mesh/errors.js';
import { HttpMeshClient } from '../../mesh/http-client.js';
import {
  type MeshPollerPorts,
  type MeshPollOptions,
  type MeshPollSummary,
  pollMailbox,
} from '../../mesh/poller.js';
import type { Clock } from '../../ports/index.js';
import { sdkClientConfig } from './client-options.js';
import { MESH_LEASE_PREFIX, MESH_POLL_ENV } from './deployment-names.js';
import type { DynamoLease, HeldLease, LeaseAttempt } from './dynamo-lease.js';
import { type MeshCredentialSource, SecretsManagerMeshCredentials } from './mesh-secrets.js';

/** How long before the function's deadline a pass stops taking new messages. */
const MESH_POLL_RESERVE_MS = 90_000;
/** A lease outlives the invocation's remaining time by this much, then a crashed holder's lease lapses. */
const MESH_LEASE_MARGIN_SECONDS = 30;

/** What the job needs besides the pipeline ports. */
export interface MeshPollSetup {
  url: string;
  /** Mailboxes this poller serves (upper case): an event naming another is refused. */
  mailboxes: readonly string[];
  credentials: MeshCredentialSource;
  leases: Pick<DynamoLease, 'acquire' | 'release'>;
  caBundle?: string;
  pollOptions?: MeshPollOptions;
  /** Builds the MESH client (tests may pass their own). Default: {@link HttpMeshClient}. */
  connect?: (options: Record<string, unknown>) => MeshClient & { close(): void };
}

export interface MeshPollBudget {
  /** Who holds the lease while this pass runs (the Lambda request id). */
  owner: string;
  /** Milliseconds the invocation has left (`context.getRemainingTimeInMillis()`). */
  remainingMs: number;
  /** Stop taking new messages this long before the deadline. @default MESH_POLL_RESERVE_MS */
  reserveMs?: number;
}

export type MeshPollJobResult =
  | {
      mailbox: string;
      outcome: 'polled';
      summary: MeshPollSummary;
      /** The pass stopped because the invocation's time was running out. */
      outOfTime: boolean;
      /** False when the lease was lost meanwhile (the pass overran it). */
      leaseReleased: boolean;
    }
  | { mailbox: string; outcome: 'locked'; holder?: string; expiresAtSeconds?: number };

/**
 * Poll `mailbox` once, under its lease. A mailbox another invocation is polling is skipped
 * (`outcome: 'locked'`). Transient failures end the pass early (`summary.stopped`); credentials,
 * configuration and clock problems throw, so the invocation fails and its alarm tells an operator.
 */
export async function runMeshPollJob(
  mailboxInput: string,
  setup: MeshPollSetup,
  ports: MeshPollerPorts,
  budget: MeshPollBudget,
): Promise<MeshPollJobResult> {
  const mailbox = mailboxInput.trim().toUpperCase();
  if (!setup.mailboxes.includes(mailbox)) {
    throw new MeshConfigError(`mailbox ${mailbox || '(none)'} is not one this poller is configured for`);
  }
  const clock: Clock = ports.clock;
  const reserveMs = budget.reserveMs ?? MESH_POLL_RESERVE_MS;
  const stopAt = clock.now() + budget.remainingMs - reserveMs;
  const leaseSeconds = Math.ceil(budget.remainingMs / 1000) + MESH_LEASE_MARGIN_SECONDS;

  const attempt: LeaseAttempt = await setup.leases.acquire(
    `${MESH_LEASE_PREFIX}${mailbox}`,
    budget.owner,
    leaseSeconds,
  );
  if (!attempt.acquired) {
    return {
      mailbox,
      outcome: 'locked',
      ...(attempt.holder !== undefined ? { holder: attempt.holder } : {}),
      ...(attempt.expiresAtSeconds !== undefined ? { expiresAtSeconds: attempt.expiresAtSeconds } : {}),
    };
  }
  const lease: HeldLease = attempt.lease;
  let client: (MeshClient & { close(): void }) | undefined;
  try {
    const creds = await setup.credentials.credentials(mailbox);
    const ca = creds.tls?.ca ?? setup.caBundle;
    const options = {
      url: setup.url,
      mailbox,
      password: creds.password,
      sharedKey: creds.sharedKey,
      ...(creds.tls ? { tls: { cert: creds.tls.cert, key: creds.tls.key, ...(ca ? { ca } : {}) } } : {}),
    };
    client = (setup.connect ?? ((o) => new HttpMeshClient(o)))(options);
    const timed = new DeadlineMeshClient(client, stopAt, clock);
    const summary = await pollMailbox(timed, ports, setup.pollOptions ?? {});
    return {
      mailbox,
      outcome: 'polled',
      summary,
      outOfTime: timed.ranOut,
      leaseReleased: await setup.leases.release(lease),
    };
  } catch (error) {
    // Give the lease back before failing, so the next scheduled pass need not wait for it to lapse.
    await setup.leases.release(lease).catch(() => false);
    throw error;
  } finally {
    client?.close();
  }
}

/**
 * A MESH client that refuses to start a listing or a download once `stopAt` has passed, as a
 * transient failure: the poller then ends the pass cleanly (whatever it had started is finished,
 * enqueued and acknowledged) and the next scheduled pass carries on.
 */
class DeadlineMeshClient implements MeshClient {
  readonly #inner: MeshClient;
  readonly #stopAt: number;
  readonly #clock: Clock;
  #ranOut = false;

  constructor(inner: MeshClient, stopAt: number, clock: Clock) {
    this.#inner = inner;
    this.#stopAt = stopAt;
    this.#clock = clock;
  }

  get mailbox(): string {
    return this.#inner.mailbox;
  }
  /** True once a call was refused for time. */
  get ranOut(): boolean {
    return this.#ranOut;
  }

  #inTime(): void {
    if (this.#clock.now() < this.#stopAt) return;
    this.#ranOut = true;
    throw new MeshError('transient', 'the pass stopped to end before the function deadline');
  }

  handshake(): Promise<void> {
    return this.#inner.handshake();
  }
  listInbox(opts?: { maxResults?: number; continueFrom?: string }) {
    this.#inTime();
    return this.#inner.listInbox(opts);
  }
  listInboxRich(opts?: { maxResults?: number; continueFrom?: string; includeAcknowledged?: boolean }) {
    this.#inTime();
    return this.#inner.listInboxRich(opts);
  }
  download(messageId: string, opts?: { maxBytes?: number }): Promise<MeshDownloadedMessage> {
    this.#inTime();
    return this.#inner.download(messageId, opts);
  }
  acknowledge(messageId: string): Promise<void> {
    return this.#inner.acknowledge(messageId);
  }
  send(...args: Parameters<MeshClient['send']>) {
    return this.#inner.send(...args);
  }
  track(messageId: string) {
    return this.#inner.track(messageId);
  }
  close(): void {
    this.#inner.close();
  }
}

/** The MESH connection of a function in AWS: URL, mailboxes and their Secrets Manager credentials. */
export interface AwsMeshConnection {
  url: string;
  /** Mailboxes with a secret (upper case). */
  mailboxes: readonly string[];
  credentials: MeshCredentialSource;
  caBundle?: string;
}

/**
 * The MESH connection from a function's environment ({@link MESH_POLL_ENV}: the URL, the mailbox →
 * secret map and the bundled CA), with a Secrets Manager client built like the other AWS clients
 * (client-options.ts: `AWS_ENDPOINT_URL_SECRETS_MANAGER`, then `AWS_ENDPOINT_URL`: an emulator).
 * The poller and the deliver stage both read it; in AWS the `{env}`/`{file}` secret references of the configuration's
 * `mesh` section are not used: every credential is in the mailbox's secret (docs/DEPLOY.md).
 *
 * @returns undefined when the function has no MESH mailboxes (`ITK3_MESH_MAILBOXES` unset)
 * @throws {MeshConfigError} naming the variable that is missing or malformed
 */
export function awsMeshConnectionFromEnv(
  env: NodeJS.ProcessEnv = process.env,
): AwsMeshConnection | undefined {
  const secretIds = jsonObject(env[MESH_POLL_ENV.mailboxes], MESH_POLL_ENV.mailboxes);
  if (secretIds === undefined) return undefined;
  const url = env[MESH_POLL_ENV.url]?.trim();
  if (!url) throw new MeshConfigError(`${MESH_POLL_ENV.url}: required (the MESH base URL)`);
  if (Object.keys(secretIds).length === 0) {
    throw new MeshConfigError(`${MESH_POLL_ENV.mailboxes}: required, a JSON object of mailbox → secret ARN`);
  }
  const ids: Record<string, string> = {};
  for (const [mailbox, secretId] of Object.entries(secretIds)) {
    if (typeof secretId !== 'string' || secretId === '') {
      throw new MeshConfigError(`${MESH_POLL_ENV.mailboxes}.${mailbox}: must be a secret ARN or name`);
    }
    ids[mailbox.toUpperCase()] = secretId;
  }
  const caBundle = env[MESH_POLL_ENV.caBundle]?.trim();
  const secrets = new SecretsManagerClient(sdkClientConfig('secretsmanager', { env }));
  return {
    url,
    mailboxes: Object.keys(ids),
    credentials: new SecretsManagerMeshCredentials(secrets, ids),
    ...(caBundle ? { caBundle } : {}),
  };
}

/**
 * The setup from the poller function's environment ({@link awsMeshConnectionFromEnv}) with the
 * lease on the once-store table.
 *
 * @throws {MeshConfigError} naming the variable that is missing or malformed
 */
export function meshPollSetupFromEnv(
  leases: Pick<DynamoLease, 'acquire' | 'release'>,
  env: NodeJS.ProcessEnv = process.env,
): MeshPollSetup {
  if (!env[MESH_POLL_ENV.url]?.trim()) {
    throw new MeshConfigError(`${MESH_POLL_ENV.url}: required (the MESH base URL)`);
  }
  const connection = awsMeshConnectionFromEnv(env);
  if (!connection) {
    throw new MeshConfigError(`${MESH_POLL_ENV.mailboxes}: required, a JSON object of mailbox → secret ARN`);
  }
  const pollOptions = jsonObject(env[MESH_POLL_ENV.pollOptions], MESH_POLL_ENV.pollOptions);
  return {
    ...connection,
    leases,
    ...(pollOptions ? { pollOptions: pollOptions as MeshPollOptions } : {}),
  };
}

function jsonObject(raw: string | undefined, name: string): Record<string, unknown> | undefined {
  if (raw === undefined || raw.trim() === '') return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new MeshConfigError(`${name}: not valid JSON`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new MeshConfigError(`${name}: must be a JSON object`);
  }
  return parsed as Record<string, unknown>;
}
