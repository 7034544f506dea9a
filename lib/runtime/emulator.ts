/**
 * Emulator mode: the same stage handler chain (lib/runtime/stage-handler.ts), driven by a
 * Lambda-style SQS event source, against the real SQS, KMS, DynamoDB and S3 APIs of an emulator
 * (ministack, or LocalStack 4.14.0 with the once-store and audit trail kept local because it has no
 * DynamoDB offline). The queues, tables, bucket and keys are created from the same definitions the
 * CDK stack uses (lib/infra/definitions.ts).
 *
 * Recipient keys live in the emulator's KMS: senders seal to the public keys `publicJwks()` returns,
 * and the decrypt stage unwraps with KMS `Decrypt`, exactly as deployed.
 */
import { createPublicKey } from 'node:crypto';
import type { JWK } from 'jose';
import { type AwsClients, awsPortsFromEnv, createAwsClients } from '../adapters/aws/clients.js';
import { SqsDeadLetters } from '../adapters/aws/dead-letters.js';
import { type ProvisionResult, provisionEmulator, provisionedEnv } from '../adapters/aws/provision.js';
import { type ReconnectPolicy, SqsEventSource, sendDirect } from '../adapters/aws/sqs-event-source.js';
import { MemoryAuditLog, MemoryOnceStore } from '../adapters/local/memory-stores.js';
import type { LoadedConfig } from '../config/load.js';
import { STAGE_DEFINITIONS } from '../infra/definitions.js';
import { type IngestResult, ingest } from '../ingest.js';
import { STAGES, type StageName } from '../pipeline/topology.js';
import type { Ports } from '../ports/index.js';
import { type MessageOutcome, outcomeFromAudit, pipelineHandlers } from './embedded.js';
import { lambdaContext } from './lambda-context.js';
import type { StageHandler } from './stage-handler.js';

export interface EmulatorOptions {
  config: LoadedConfig;
  /** The emulator, e.g. http://127.0.0.1:4566. */
  endpoint: string;
  /** Resource name prefix, so runs and tests do not share queues. */
  prefix: string;
  /** Keep the once-store and audit trail in process (LocalStack has no DynamoDB offline). */
  localState?: boolean;
  /**
   * Queue visibility timeout. Default: as deployed (6 × function timeout); tests shorten it so
   * a retried record comes back in seconds, not minutes.
   */
  visibilityTimeoutSeconds?: number;
  /** Handlers to invoke; defaults to the stage handler chain over the emulator's AWS ports. */
  handlers?: Record<StageName, StageHandler>;
  /** Wrap individual ports (fault-injection tests). */
  wrapPorts?: (ports: Ports) => Ports;
  /**
   * Environment added to the provisioned one when the AWS ports are built, as a function's own
   * environment adds to it (e.g. the deliver stage's `ITK3_MESH_URL` and `ITK3_MESH_MAILBOXES`).
   */
  env?: NodeJS.ProcessEnv;
  /**
   * How long a lost emulator connection is retried (exponential back-off) before the drain gives up
   * with a clear line on stderr. @default DEFAULT_RECONNECT (30 s), or `ITK3_EMULATOR_RECONNECT_SECONDS`
   */
  reconnect?: Partial<ReconnectPolicy>;
}

export class EmulatorPipeline {
  readonly config: LoadedConfig;
  readonly clients: AwsClients;
  readonly resources: ProvisionResult;
  readonly ports: Ports;
  readonly #sources: Record<StageName, SqsEventSource>;
  readonly #handlers: Record<StageName, StageHandler>;

  private constructor(
    config: LoadedConfig,
    clients: AwsClients,
    resources: ProvisionResult,
    ports: Ports,
    handlers: Record<StageName, StageHandler>,
    reconnect: Partial<ReconnectPolicy> = {},
  ) {
    this.config = config;
    this.clients = clients;
    this.resources = resources;
    this.ports = ports;
    this.#handlers = handlers;
    this.#sources = Object.fromEntries(
      STAGES.map((stage) => [
        stage,
        new SqsEventSource(clients.sqs, {
          stage,
          queueUrl: resources.queueUrls[stage],
          queueArn: resources.queueArns[stage],
          batchSize: STAGE_DEFINITIONS[stage].batchSize,
          reconnect,
        }),
      ]),
    ) as Record<StageName, SqsEventSource>;
  }

  /** Provision (idempotently) and connect. */
  static async start(opts: EmulatorOptions): Promise<EmulatorPipeline> {
    const clients = createAwsClients({
      endpoint: opts.endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    });
    const resources = await provisionEmulator(clients, opts.config, {
      prefix: opts.prefix,
      tables: !opts.localState,
      ...(opts.visibilityTimeoutSeconds !== undefined
        ? { visibilityTimeoutSeconds: opts.visibilityTimeoutSeconds }
        : {}),
    });
    const aws = awsPortsFromEnv(opts.config, { env: { ...provisionedEnv(resources), ...opts.env }, clients });
    const base: Ports = opts.localState
      ? { ...aws, once: new MemoryOnceStore(), audit: new MemoryAuditLog() }
      : aws;
    const ports = opts.wrapPorts ? opts.wrapPorts(base) : base;
    const handlers = opts.handlers ?? pipelineHandlers(() => ({ ports, config: opts.config }));
    const reconnect = opts.reconnect ?? reconnectFromEnv(process.env.ITK3_EMULATOR_RECONNECT_SECONDS);
    return new EmulatorPipeline(opts.config, clients, resources, ports, handlers, reconnect);
  }

  /** The recipients' public keys, read from the emulator's KMS (what the gateway publishes). */
  async publicJwks(): Promise<Record<string, JWK>> {
    const out: Record<string, JWK> = {};
    for (const recipient of this.config.doc.recipients) {
      for (const { kid } of recipient.keys) {
        const spki = await this.ports.keys.publicKeySpki(kid);
        const jwk = createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' }).export({
          format: 'jwk',
        });
        out[kid] = { ...jwk, kid, alg: 'RSA-OAEP-256', use: 'enc' };
      }
    }
    return out;
  }

  /** Through the front door (as the HTTP ingest function does). */
  submit(credential: string, sealed: string): Promise<IngestResult> {
    return ingest(
      { authorization: `Bearer ${credential}`, body: sealed, receivedAt: Date.now(), source: 'cli' },
      this.ports,
      this.config,
    );
  }

  /** Direct SQS ingestion: the JWE as the body, the credential as the `Authorization` attribute. */
  submitRaw(sealed: string, authorization?: string): Promise<string> {
    return sendDirect(this.clients.sqs, this.resources.queueUrls.authenticate, sealed, authorization);
  }

  /**
   * Poll every stage until all five queues are empty (visible and in flight), or `timeoutMs`.
   * Returns the number of handler invocations.
   */
  async drain(
    opts: { timeoutMs?: number; onProgress?: (invocations: number) => void } = {},
  ): Promise<number> {
    const deadline = Date.now() + (opts.timeoutMs ?? 120_000);
    let invocations = 0;
    while (Date.now() < deadline) {
      let received = 0;
      for (const stage of [...STAGES].reverse()) {
        const n = await this.#sources[stage].pollOnce((event) =>
          this.#handlers[stage](event, lambdaContext(stage)),
        );
        if (n > 0) {
          invocations += 1;
          opts.onProgress?.(invocations);
        }
        received += n;
      }
      if (received > 0) continue;
      const depths = await Promise.all(STAGES.map((s) => this.#sources[s].depth()));
      if (depths.every((d) => d === 0)) return invocations;
      await new Promise((r) => setTimeout(r, 250));
    }
    throw new Error(`emulator pipeline did not drain within ${opts.timeoutMs ?? 120_000} ms`);
  }

  /**
   * Where a trace stands, from the audit trail (DynamoDB, or local with LocalStack). SQS moves a
   * message to its DLQ without telling anyone, so a trace that is still open is looked for there.
   */
  async outcome(traceId: string): Promise<MessageOutcome> {
    const entries = await this.ports.audit.byTrace(traceId);
    const outcome = outcomeFromAudit(traceId, entries);
    if (outcome.status !== 'in-flight') return outcome;
    const dead = (await this.deadLetters.list()).find((l) => l.traceId === traceId);
    if (!dead) return outcome;
    const reason = entries.filter((e) => e.event === 'transient-failure').at(-1)?.code ?? 'unknown';
    return { ...outcome, status: 'dead-lettered', stage: dead.stage, code: reason };
  }

  /** The DLQs of the provisioned stages (list, redrive). */
  get deadLetters(): SqsDeadLetters {
    return new SqsDeadLetters(
      this.clients.sqs,
      { dlq: this.resources.dlqUrls, source: this.resources.queueUrls },
      this.ports.audit,
    );
  }
}

/** The reconnect budget from `ITK3_EMULATOR_RECONNECT_SECONDS`; a bad value is an error, not ignored. */
export function reconnectFromEnv(value: string | undefined): Partial<ReconnectPolicy> {
  if (value === undefined || value === '') return {};
  const seconds = Number(value);
  if (!Number.isFinite(seconds) || seconds < 0 || seconds > 3_600) {
    throw new RangeError(`ITK3_EMULATOR_RECONNECT_SECONDS must be 0–3600 seconds, got "${value}"`);
  }
  return { budgetMs: Math.round(seconds * 1000) };
}
