/**
 * Emulator mode: the pipeline's handlers against real SQS/KMS/DynamoDB/S3 APIs (ministack), compared
 * in the same run with a bare relay through the same five queues, and the AWS calls each message
 * costs, counted by the adapters (lib/adapters/aws/calls.ts) and by an SQS observer middleware that
 * also records payload sizes (SQS bills each 64 KiB chunk as one request).
 *
 * Runs alternate (relay, direct, direct without acks, cached, cached without acks, relay, …) so drift in a shared
 * emulator hits every variant alike. Every pipeline run uses fresh messages (the once-store is a
 * real table here) and a fresh key service, i.e. a cold container: the cached mode's one KMS
 * `Decrypt` is paid in every run.
 */

import { randomBytes } from 'node:crypto';
import { DeleteTableCommand } from '@aws-sdk/client-dynamodb';
import { CreateKeyCommand, ScheduleKeyDeletionCommand } from '@aws-sdk/client-kms';
import { DeleteBucketCommand, DeleteObjectsCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import {
  DeleteMessageBatchCommand,
  DeleteQueueCommand,
  ReceiveMessageCommand,
  SendMessageBatchCommand,
} from '@aws-sdk/client-sqs';
import type { JWK } from 'jose';
import {
  generateWrappedRecipientKey,
  generateWrappedSigningKey,
} from '../../lib/adapters/aws/cached-key-service.js';
import { awsCallSnapshot, resetAwsCalls } from '../../lib/adapters/aws/calls.js';
import { KEY_MODE_ENV } from '../../lib/adapters/aws/deployment-names.js';
import { keyServiceFromEnv } from '../../lib/adapters/aws/key-service-env.js';
import { provisionedEnv } from '../../lib/adapters/aws/provision.js';
import { STAGES } from '../../lib/pipeline/topology.js';
import type { KeyService } from '../../lib/ports/index.js';
import { EmulatorPipeline } from '../../lib/runtime/emulator.js';
import type { DemoWorld } from '../../lib/testkit/world.js';
import { type Summary, summarise } from './stats.js';
import { type PreparedMessage, prepareMessages, SIZE_CLASSES } from './workload.js';

/** `cached-sign`: the cached mode with the response-signing key cached too (no KMS `Sign`). */
type EmulatorVariant = 'relay' | 'direct' | 'direct-noack' | 'cached' | 'cached-noack' | 'cached-sign';

export interface EmulatorPlan {
  messages: number;
  repeats: number;
}

/** Per-message AWS API calls of one pipeline variant, averaged over its runs. */
interface CallsPerMessage {
  /** Service → operation → calls per message (drain only: the five stages). */
  stages: Record<string, Record<string, number>>;
  /** Service → operation → calls per message made by ingest (the HTTP front door). */
  ingest: Record<string, Record<string, number>>;
}

interface SqsObservation {
  receives: number;
  nonEmptyReceives: number;
  messagesReceived: number;
  sends: number;
  deletes: number;
  depthChecks: number;
  /** Requests counted the way SQS bills them: one per started 64 KiB of payload. */
  billedWork: number;
}

interface EmulatorVariantResult {
  variant: EmulatorVariant;
  runs: number;
  messagesPerRun: number;
  throughput: Summary;
  calls?: CallsPerMessage;
  /** Work requests (non-empty receive, delete, send) per message per hop, at batch size 10. */
  sqsPerMessagePerHop: number;
  /** The same, billed (64 KiB chunks). */
  sqsBilledPerMessagePerHop: number;
  /** Empty receives per message (an artefact of the polling loop; Lambda pollers long-poll). */
  emptyReceivesPerMessage: number;
}

export interface EmulatorResult {
  endpoint: string;
  prefix: string;
  variants: EmulatorVariantResult[];
  /** Median pipeline throughput ÷ median relay throughput, per pipeline variant. */
  ratioToRelay: Record<string, number>;
  wrappedKeyGeneration: 'GenerateDataKeyPairWithoutPlaintext';
}

const CHUNK = 64 * 1024;

function observeSqs(pipeline: EmulatorPipeline): { take(): SqsObservation } {
  let o = blank();
  function blank(): SqsObservation {
    return {
      receives: 0,
      nonEmptyReceives: 0,
      messagesReceived: 0,
      sends: 0,
      deletes: 0,
      depthChecks: 0,
      billedWork: 0,
    };
  }
  const billed = (bytes: number) => Math.max(1, Math.ceil(bytes / CHUNK));
  pipeline.clients.sqs.middlewareStack.add(
    (next, context) => async (args) => {
      const out = await next(args);
      const name = context.commandName ?? '';
      const input = args.input as Record<string, unknown>;
      if (name === 'ReceiveMessageCommand') {
        o.receives += 1;
        const messages = (out.output as { Messages?: { Body?: string }[] }).Messages ?? [];
        if (messages.length > 0) {
          o.nonEmptyReceives += 1;
          o.messagesReceived += messages.length;
          o.billedWork += billed(messages.reduce((s, m) => s + Buffer.byteLength(m.Body ?? '', 'utf8'), 0));
        }
      } else if (name === 'SendMessageBatchCommand' || name === 'SendMessageCommand') {
        o.sends += 1;
        const entries = (input.Entries as { MessageBody?: string }[] | undefined) ?? [
          { MessageBody: input.MessageBody as string },
        ];
        o.billedWork += billed(
          entries.reduce((s, e) => s + Buffer.byteLength(e.MessageBody ?? '', 'utf8'), 0),
        );
      } else if (name === 'DeleteMessageBatchCommand') {
        o.deletes += 1;
        o.billedWork += 1;
      } else if (name === 'GetQueueAttributesCommand') {
        o.depthChecks += 1;
      }
      return out;
    },
    { step: 'initialize', name: 'itk3BenchSqsObserver' },
  );
  return {
    take() {
      const taken = o;
      o = blank();
      return taken;
    },
  };
}

/** Calls per message, from two adapter snapshots' worth of counts. */
function perMessage(
  snapshot: ReturnType<typeof awsCallSnapshot>,
  n: number,
): Record<string, Record<string, number>> {
  return Object.fromEntries(
    Object.entries(snapshot).map(([service, ops]) => [
      service,
      Object.fromEntries(Object.entries(ops).map(([op, count]) => [op, count / n])),
    ]),
  );
}

function addInto(
  target: Record<string, Record<string, number>>,
  add: Record<string, Record<string, number>>,
) {
  for (const [service, ops] of Object.entries(add)) {
    const t = target[service] ?? {};
    target[service] = t;
    for (const [op, v] of Object.entries(ops)) t[op] = (t[op] ?? 0) + v;
  }
}

function scale(x: Record<string, Record<string, number>>, f: number): Record<string, Record<string, number>> {
  return Object.fromEntries(
    Object.entries(x).map(([s, ops]) => [
      s,
      Object.fromEntries(Object.entries(ops).map(([o, v]) => [o, v * f])),
    ]),
  );
}

/** The bare relay: receive 10, forward the bodies to the next queue in one batch, delete. No crypto. */
async function relayRun(pipeline: EmulatorPipeline, bodies: readonly string[]): Promise<number> {
  const { sqs } = pipeline.clients;
  const urls = pipeline.resources.queueUrls;
  for (let i = 0; i < bodies.length; i += 10) {
    await sqs.send(
      new SendMessageBatchCommand({
        QueueUrl: urls.authenticate,
        Entries: bodies.slice(i, i + 10).map((b, j) => ({ Id: String(j), MessageBody: b })),
      }),
    );
  }
  const t0 = performance.now();
  let done = 0;
  // Same polling shape as EmulatorPipeline.drain: later stages first, batch 10, no long poll.
  for (let rounds = 0; done < bodies.length && rounds < 100_000; rounds += 1) {
    for (const [i, stage] of [...STAGES.entries()].reverse()) {
      const out = await sqs.send(
        new ReceiveMessageCommand({ QueueUrl: urls[stage], MaxNumberOfMessages: 10, WaitTimeSeconds: 0 }),
      );
      const messages = out.Messages ?? [];
      if (messages.length === 0) continue;
      const next = STAGES[i + 1];
      if (next) {
        await sqs.send(
          new SendMessageBatchCommand({
            QueueUrl: urls[next],
            Entries: messages.map((m, j) => ({ Id: String(j), MessageBody: m.Body ?? '' })),
          }),
        );
      } else {
        done += messages.length;
      }
      await sqs.send(
        new DeleteMessageBatchCommand({
          QueueUrl: urls[stage],
          Entries: messages.map((m, j) => ({ Id: String(j), ReceiptHandle: m.ReceiptHandle ?? '' })),
        }),
      );
    }
  }
  return performance.now() - t0;
}

export async function benchEmulator(
  world: DemoWorld,
  endpoint: string,
  plan: EmulatorPlan,
  log: (line: string) => void,
): Promise<EmulatorResult> {
  const prefix = `bench-${randomBytes(3).toString('hex')}-`;
  const pipeline = await EmulatorPipeline.start({ config: world.config, endpoint, prefix });
  const observer = observeSqs(pipeline);
  const { clients, resources, config } = pipeline;
  const small = SIZE_CLASSES[0]!;
  let cmkArn: string | undefined;
  try {
    // Direct mode: the recipient keys provisioned as RSA_4096 KMS keys; senders seal to GetPublicKey.
    const directKeys = pipeline.ports.keys;
    const directPublished = await pipeline.publicJwks();

    // Cached mode: a symmetric CMK, and per recipient kid a key pair made by KMS, private half wrapped.
    const cmk = await clients.kms.send(new CreateKeyCommand({ Description: 'ITK3 benchmark wrapping key' }));
    cmkArn = cmk.KeyMetadata?.Arn;
    if (!cmkArn) throw new Error('CreateKey returned no key');
    const wrapped: Record<string, string> = {};
    const cachedPublished: Record<string, JWK> = {};
    for (const recipient of config.doc.recipients) {
      for (const { kid } of recipient.keys) {
        const key = await generateWrappedRecipientKey(clients.kms, cmkArn, kid, 'RSA_4096');
        wrapped[kid] = Buffer.from(key.ciphertextBlob).toString('base64');
        const { createPublicKey } = await import('node:crypto');
        const jwk = createPublicKey({
          key: Buffer.from(key.publicKeySpki),
          format: 'der',
          type: 'spki',
        }).export({
          format: 'jwk',
        });
        cachedPublished[kid] = { ...jwk, kid, alg: 'RSA-OAEP-256', use: 'enc' };
      }
    }
    const cachedEnv = {
      ...provisionedEnv(resources),
      [KEY_MODE_ENV.mode]: 'cached',
      [KEY_MODE_ENV.wrappedKeys]: JSON.stringify(wrapped),
      [KEY_MODE_ENV.wrappingKeyId]: cmkArn,
    };
    // The response-signing key as a wrapped P-256 pair too (a new pair: its public key is what
    // senders would verify responses with in this mode).
    const signingKid = config.doc.responseSigning.kid;
    const signing = await generateWrappedSigningKey(clients.kms, cmkArn, signingKid);
    const cachedSignEnv = {
      ...cachedEnv,
      [KEY_MODE_ENV.wrappedSigningKeys]: JSON.stringify({
        [signingKid]: Buffer.from(signing.ciphertextBlob).toString('base64'),
      }),
    };
    const published = (jwks: Record<string, JWK>) =>
      Object.fromEntries(
        config.doc.recipients.map((r) => {
          const kid = r.keys[0]?.kid ?? '';
          return [r.ods, { key: jwks[kid] as JWK, kid }];
        }),
      );

    const order: EmulatorVariant[] = [
      'relay',
      'direct',
      'direct-noack',
      'cached',
      'cached-noack',
      'cached-sign',
    ];
    const runs = new Map<
      EmulatorVariant,
      { wall: number[]; calls: CallsPerMessage[]; sqs: SqsObservation[] }
    >();
    for (const v of order) runs.set(v, { wall: [], calls: [], sqs: [] });

    for (let r = 0; r < plan.repeats; r += 1) {
      for (const variant of order) {
        const slot = runs.get(variant)!;
        if (variant === 'relay') {
          const messages = await sealed(world, plan.messages, directPublished, published, true);
          const bodies = messages.map((m) => m.sealed);
          observer.take();
          const wall = await relayRun(pipeline, bodies);
          const seen = observer.take();
          // Seeding is not part of the relay's work: its sends (and their 64 KiB chunks) are taken out.
          for (let i = 0; i < bodies.length; i += 10) {
            const bytes = bodies.slice(i, i + 10).reduce((sum, b) => sum + Buffer.byteLength(b, 'utf8'), 0);
            seen.sends -= 1;
            seen.billedWork -= Math.max(1, Math.ceil(bytes / CHUNK));
          }
          slot.wall.push(wall);
          slot.sqs.push(seen);
          log(
            `  emulator relay run ${r + 1}/${plan.repeats}: ${((plan.messages * 1000) / wall).toFixed(1)} msg/s`,
          );
          continue;
        }
        const keys: KeyService = variant.startsWith('direct')
          ? directKeys
          : keyServiceFromEnv(config, clients.kms, variant === 'cached-sign' ? cachedSignEnv : cachedEnv);
        pipeline.ports.keys = keys;
        const messages = await sealed(
          world,
          plan.messages,
          variant.startsWith('direct') ? directPublished : cachedPublished,
          published,
          !variant.endsWith('-noack'),
        );
        resetAwsCalls();
        observer.take();
        const traces: string[] = [];
        for (const m of messages) {
          const result = await pipeline.submit(m.credential, m.sealed);
          if (result.status !== 202) throw new Error(`ingest refused a benchmark message: ${result.status}`);
          traces.push(result.trackingId);
        }
        const ingestCalls = perMessage(awsCallSnapshot(), messages.length);
        observer.take();
        resetAwsCalls();
        const t0 = performance.now();
        await pipeline.drain({ timeoutMs: 300_000 });
        const wall = performance.now() - t0;
        const stageCalls = perMessage(awsCallSnapshot(), messages.length);
        slot.sqs.push(observer.take());
        slot.wall.push(wall);
        slot.calls.push({ stages: stageCalls, ingest: ingestCalls });
        await assertDelivered(pipeline, traces, variant);
        log(
          `  emulator ${variant} run ${r + 1}/${plan.repeats}: ${((plan.messages * 1000) / wall).toFixed(1)} msg/s, KMS ${(stageCalls.kms?.total ?? 0).toFixed(3)}/msg`,
        );
      }
    }
    pipeline.ports.keys = directKeys;

    const variants: EmulatorVariantResult[] = order.map((variant) => {
      const slot = runs.get(variant)!;
      const n = plan.messages;
      const sqsTotals = slot.sqs.reduce(
        (a, s) => ({
          work: a.work + s.nonEmptyReceives + s.deletes + s.sends,
          billed: a.billed + s.billedWork,
          empty: a.empty + (s.receives - s.nonEmptyReceives),
        }),
        { work: 0, billed: 0, empty: 0 },
      );
      const runsN = slot.sqs.length;
      const calls: CallsPerMessage | undefined =
        slot.calls.length === 0
          ? undefined
          : (() => {
              const stages: Record<string, Record<string, number>> = {};
              const ingest: Record<string, Record<string, number>> = {};
              for (const c of slot.calls) {
                addInto(stages, c.stages);
                addInto(ingest, c.ingest);
              }
              return {
                stages: scale(stages, 1 / slot.calls.length),
                ingest: scale(ingest, 1 / slot.calls.length),
              };
            })();
      return {
        variant,
        runs: runsN,
        messagesPerRun: n,
        throughput: summarise(slot.wall.map((w) => (n * 1000) / w)),
        ...(calls ? { calls } : {}),
        sqsPerMessagePerHop: sqsTotals.work / runsN / n / STAGES.length,
        sqsBilledPerMessagePerHop: sqsTotals.billed / runsN / n / STAGES.length,
        emptyReceivesPerMessage: sqsTotals.empty / runsN / n,
      };
    });
    const relay = variants.find((v) => v.variant === 'relay')!.throughput.median;
    const ratioToRelay = Object.fromEntries(
      variants.filter((v) => v.variant !== 'relay').map((v) => [v.variant, v.throughput.median / relay]),
    );
    return {
      endpoint,
      prefix,
      variants,
      ratioToRelay,
      wrappedKeyGeneration: 'GenerateDataKeyPairWithoutPlaintext',
    };
  } finally {
    await cleanup(pipeline, cmkArn).catch(() => undefined);
  }

  async function sealed(
    w: DemoWorld,
    n: number,
    jwks: Record<string, JWK>,
    publish: (jwks: Record<string, JWK>) => Record<string, { key: JWK; kid: string }>,
    infAck: boolean,
  ): Promise<PreparedMessage[]> {
    w.publishedRecipientKeys = publish(jwks);
    try {
      // Minted now: the emulator pipeline judges tokens at the real receipt time.
      return await prepareMessages(w, small, n, { now: Date.now(), infAck });
    } finally {
      delete w.publishedRecipientKeys;
    }
  }
}

/** Every message must end delivered, or the figures mean nothing. Codes only, never content. */
async function assertDelivered(
  pipeline: EmulatorPipeline,
  traces: readonly string[],
  variant: string,
): Promise<void> {
  const problems = new Map<string, number>();
  for (const trace of traces) {
    const outcome = await pipeline.outcome(trace);
    if (outcome.status === 'delivered') continue;
    const key = `${outcome.status}:${outcome.stage ?? '-'}:${outcome.code ?? '-'}`;
    problems.set(key, (problems.get(key) ?? 0) + 1);
  }
  if (problems.size > 0) {
    throw new Error(
      `emulator ${variant}: not all delivered (${[...problems].map(([k, v]) => `${k}×${v}`).join(', ')})`,
    );
  }
}

async function cleanup(pipeline: EmulatorPipeline, cmkArn: string | undefined): Promise<void> {
  const { clients, resources } = pipeline;
  for (const stage of STAGES) {
    await clients.sqs
      .send(new DeleteQueueCommand({ QueueUrl: resources.queueUrls[stage] }))
      .catch(() => undefined);
    await clients.sqs
      .send(new DeleteQueueCommand({ QueueUrl: resources.dlqUrls[stage] }))
      .catch(() => undefined);
  }
  for (const table of [resources.onceTable, resources.auditTable]) {
    await clients.dynamodb.send(new DeleteTableCommand({ TableName: table })).catch(() => undefined);
  }
  for (const keyId of [...Object.values(resources.kmsKeys), ...(cmkArn ? [cmkArn] : [])]) {
    await clients.kms
      .send(new ScheduleKeyDeletionCommand({ KeyId: keyId, PendingWindowInDays: 7 }))
      .catch(() => undefined);
  }
  for (let i = 0; i < 100; i += 1) {
    const listed = await clients.s3.send(new ListObjectsV2Command({ Bucket: resources.blobBucket }));
    const keys = (listed.Contents ?? []).map((o) => ({ Key: o.Key ?? '' }));
    if (keys.length === 0) break;
    await clients.s3.send(
      new DeleteObjectsCommand({ Bucket: resources.blobBucket, Delete: { Objects: keys } }),
    );
  }
  await clients.s3.send(new DeleteBucketCommand({ Bucket: resources.blobBucket })).catch(() => undefined);
}
