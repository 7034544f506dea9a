/**
 * MESH sending in the AWS runtimes: the deliver stage sends `mesh` targets (recipients reached
 * through MESH, and ITK3 responses to MESH senders) with {@link MeshDeliverer}, through clients whose
 * credentials are the gateway mailboxes' Secrets Manager secrets (the same secrets the poller reads,
 * lib/adapters/aws/mesh-secrets.ts). The configuration's `mesh` section says which mailbox sends;
 * its `{env}`/`{file}` secret references are for the embedded runtime and not read here.
 */
import type { LoadedConfig } from '../../config/load.js';
import type { MeshClient, MeshSendOptions } from '../../mesh/client.js';
import { sendingMailbox } from '../../mesh/connect.js';
import { MeshDeliverer } from '../../mesh/deliverer.js';
import { MeshConfigError } from '../../mesh/errors.js';
import { HttpMeshClient } from '../../mesh/http-client.js';
import type { Deliverer, OnceStore } from '../../ports/index.js';
import { AwsDeliverer } from './aws-deliverer.js';
import type { BatchClients } from './batch-ports.js';
import { type AwsMeshConnection, awsMeshConnectionFromEnv } from './mesh-poll-job.js';
import type { MeshCredentials } from './mesh-secrets.js';
import { blobBucketFromEnv } from './s3-blob-store.js';

type ClosableClient = MeshClient & { close(): void };

/**
 * A MESH client for one mailbox whose credentials are read (and re-read after the secret source's
 * TTL) when it is used, not when it is built: a cold start makes no Secrets Manager call, and a
 * rotated password is picked up without a deployment. A new HTTP client is made whenever the
 * credentials object changes.
 */
export class SecretBackedMeshClient implements MeshClient {
  readonly mailbox: string;
  readonly #connection: AwsMeshConnection;
  readonly #connect: (options: Record<string, unknown>) => ClosableClient;
  #current: { creds: MeshCredentials; client: ClosableClient } | undefined;

  constructor(
    mailbox: string,
    connection: AwsMeshConnection,
    connect: (options: Record<string, unknown>) => ClosableClient = (o) => new HttpMeshClient(o as never),
  ) {
    this.mailbox = mailbox.toUpperCase();
    this.#connection = connection;
    this.#connect = connect;
  }

  async #client(): Promise<ClosableClient> {
    const creds = await this.#connection.credentials.credentials(this.mailbox);
    if (this.#current?.creds === creds) return this.#current.client;
    this.#current?.client.close();
    const ca = creds.tls?.ca ?? this.#connection.caBundle;
    const client = this.#connect({
      url: this.#connection.url,
      mailbox: this.mailbox,
      password: creds.password,
      sharedKey: creds.sharedKey,
      ...(creds.tls ? { tls: { cert: creds.tls.cert, key: creds.tls.key, ...(ca ? { ca } : {}) } } : {}),
    });
    this.#current = { creds, client };
    return client;
  }

  async handshake(): Promise<void> {
    return (await this.#client()).handshake();
  }
  async listInbox(opts?: { maxResults?: number; continueFrom?: string }) {
    return (await this.#client()).listInbox(opts);
  }
  async listInboxRich(opts?: { maxResults?: number; continueFrom?: string; includeAcknowledged?: boolean }) {
    return (await this.#client()).listInboxRich(opts);
  }
  async download(messageId: string, opts?: { maxBytes?: number }) {
    return (await this.#client()).download(messageId, opts);
  }
  async acknowledge(messageId: string): Promise<void> {
    return (await this.#client()).acknowledge(messageId);
  }
  async send(to: string, body: Uint8Array, opts: MeshSendOptions) {
    return (await this.#client()).send(to, body, opts);
  }
  async track(messageId: string) {
    return (await this.#client()).track(messageId);
  }
  close(): void {
    this.#current?.client.close();
    this.#current = undefined;
  }
}

/**
 * `inner` wrapped so that `mesh` targets are sent through MESH from the gateway mailboxes of
 * `connection`; `inner` itself when the function has no MESH connection.
 *
 * @throws {MeshConfigError} when there is a connection but the configuration has no `mesh` section,
 *   or its sending mailbox has no secret (the stack and the configuration disagree)
 */
export function awsMeshDeliverer(
  config: LoadedConfig,
  inner: Deliverer,
  once: OnceStore,
  connection: AwsMeshConnection | undefined,
  connect?: (options: Record<string, unknown>) => ClosableClient,
): Deliverer {
  if (!connection) return inner;
  if (!config.doc.mesh) {
    throw new MeshConfigError(
      'the function has MESH mailboxes (ITK3_MESH_MAILBOXES) but the configuration has no "mesh" section',
    );
  }
  const from = sendingMailbox(config);
  if (!connection.mailboxes.includes(from)) {
    throw new MeshConfigError(`the sending MESH mailbox ${from} has no secret (ITK3_MESH_MAILBOXES)`);
  }
  const clients = new Map<string, MeshClient>(
    connection.mailboxes.map((m) => [m, new SecretBackedMeshClient(m, connection, connect)]),
  );
  return new MeshDeliverer({ inner, clients, defaultFrom: from, once });
}

/**
 * The deliver stage's deliverer from the environment: folder, S3 and SQS targets through
 * {@link AwsDeliverer} (folders as prefixes of the pipeline's bucket), and `mesh` targets through
 * MESH where the function has the gateway mailboxes' secrets (`ITK3_MESH_MAILBOXES`).
 */
export function awsDelivererFromEnv(
  config: LoadedConfig,
  once: OnceStore,
  clients: Pick<BatchClients, 's3' | 'sqs'>,
  env: NodeJS.ProcessEnv = process.env,
): Deliverer {
  return awsMeshDeliverer(
    config,
    new AwsDeliverer({ s3: clients.s3, sqs: clients.sqs, blobBucket: blobBucketFromEnv(env) }),
    once,
    awsMeshConnectionFromEnv(env),
  );
}
