/**
 * Cost per million messages at public list prices, from measured per-message quantities: port calls
 * (one AWS request each in the AWS adapters), queue body sizes (SQS bills per started 64 KiB),
 * blob-store use and CPU per stage from the embedded runs, AWS calls from the emulator runs.
 *
 * Prices: us-east-1 list prices (London is ≈ 5–15 % higher), re-check before relying on them. Tags
 * as in ../shared/docs/PERFORMANCE.md: D = AWS documentation, 3P = third-party summaries, C = ours.
 */
import { STAGE_DEFINITIONS } from '../../lib/infra/definitions.js';
import { STAGES, type StageName } from '../../lib/pipeline/topology.js';
import type { EmbeddedSizeResult, Phase } from './embedded.js';

export interface Price {
  usd: number;
  per: string;
  source: string;
  tag: 'D' | '3P' | 'C';
  checked: string;
}

export const PRICES = {
  sqsRequest: {
    usd: 0.4 / 1e6,
    per: 'request (standard queue; each 64 KiB of payload is one request)',
    source:
      'https://aws.amazon.com/sqs/pricing/ (64 KiB chunk rule per PERFORMANCE.md §4, 3P summaries of the pricing page)',
    tag: '3P',
    checked: '2026-03 (summaries), PERFORMANCE.md',
  },
  kmsSymmetric: {
    usd: 0.03 / 1e4,
    per: 'symmetric request (Decrypt of the wrapped key)',
    source: 'https://aws.amazon.com/kms/pricing/ (PERFORMANCE.md §4)',
    tag: 'D',
    checked: 'PERFORMANCE.md',
  },
  kmsAsymmetric: {
    usd: 0.15 / 1e4,
    per: 'asymmetric request (RSA_4096 Decrypt, ECC Sign) — reported; RSA-2048 reportedly $0.03/10k',
    source: 'https://aws.amazon.com/kms/pricing/ (PERFORMANCE.md §4, 3P)',
    tag: '3P',
    checked: 'PERFORMANCE.md',
  },
  dynamoWrite: {
    usd: 0.625 / 1e6,
    per: 'on-demand write request unit (item ≤ 1 KB), after the Nov 2024 price cut',
    source: 'https://aws.amazon.com/dynamodb/pricing/on-demand/ (3P summaries, 2025)',
    tag: '3P',
    checked: '2025-07',
  },
  dynamoRead: {
    usd: 0.125 / 1e6,
    per: 'on-demand read request unit',
    source: 'https://aws.amazon.com/dynamodb/pricing/on-demand/ (3P summaries, 2025)',
    tag: '3P',
    checked: '2025-07',
  },
  s3Put: {
    usd: 0.005 / 1e3,
    per: 'S3 Standard PUT',
    source: 'https://aws.amazon.com/s3/pricing/',
    tag: '3P',
    checked: '2026 (list price unchanged since 2018)',
  },
  s3Get: {
    usd: 0.0004 / 1e3,
    per: 'S3 Standard GET',
    source: 'https://aws.amazon.com/s3/pricing/',
    tag: '3P',
    checked: '2026',
  },
  s3StorageGbMonth: {
    usd: 0.023,
    per: 'S3 Standard GB-month (claim-check copies live until the 30-day expiry rule)',
    source: 'https://aws.amazon.com/s3/pricing/',
    tag: '3P',
    checked: '2026',
  },
  lambdaGbSecondArm: {
    usd: 0.0000133334,
    per: 'Lambda GB-second, arm64',
    source: 'https://aws.amazon.com/lambda/pricing/ (3P copies, 2026)',
    tag: '3P',
    checked: '2026-05',
  },
  lambdaRequest: {
    usd: 0.2 / 1e6,
    per: 'Lambda invocation',
    source: 'https://aws.amazon.com/lambda/pricing/',
    tag: '3P',
    checked: '2026-05',
  },
  httpApiRequest: {
    usd: 1.0 / 1e6,
    per: 'API Gateway HTTP API request (first 300 M/month)',
    source: 'https://aws.amazon.com/api-gateway/pricing/',
    tag: '3P',
    checked: '2026',
  },
} as const satisfies Record<string, Price>;

/**
 * Assumed request latencies in AWS, for billed Lambda duration (the function is billed while it
 * waits). PERFORMANCE.md §4: not published; "single-digit to low tens of ms" (3P). Records of a
 * batch run concurrently, so a batch waits for one record's chain of calls plus the batched send.
 */
export const ASSUMED_LATENCY_MS = { sqs: 10, dynamo: 5, s3: 20, kms: 10 } as const;

/** Lambda gets one full vCPU at 1 769 MB and a proportional share below (PERFORMANCE.md §2.6). */
const FULL_VCPU_MB = 1769;
const BATCH = 10;
const CHUNK = 64 * 1024;
const DAYS_KEPT = 30;

/**
 * `direct`: every private-key operation on KMS. `cached`: the recipient key unwrapped once per
 * container, responses still signed by KMS. `cached-sign`: the response-signing key cached too.
 */
export type KeyMode = 'direct' | 'cached' | 'cached-sign';

/** Service → operation → calls per message, as the adapters count them (lib/adapters/aws/calls.ts). */
export type CountedCalls = Record<string, Record<string, number>>;

const DYNAMO_WRITES = ['PutItem', 'UpdateItem', 'DeleteItem', 'TransactWriteItems', 'BatchWriteItem'];

/** DynamoDB write requests per message among counted calls. */
export function dynamoWriteCalls(calls: CountedCalls): number {
  const ops = calls.dynamodb ?? {};
  return DYNAMO_WRITES.reduce((sum, op) => sum + (ops[op] ?? 0), 0);
}

/**
 * Write request units of the counted DynamoDB calls: one per single-item write (every item here is
 * under 1 KB); a `TransactWriteItems` costs two per item, and the audit layout before issue 14 wrote
 * two items (entry and link) per transaction: 4.
 */
export function dynamoWriteUnits(calls: CountedCalls): number {
  const ops = calls.dynamodb ?? {};
  return dynamoWriteCalls(calls) - (ops.TransactWriteItems ?? 0) + 4 * (ops.TransactWriteItems ?? 0);
}

/** Every counted AWS call per message: the stages' and ingest's. */
export function totalCalls(stages: CountedCalls, ingest: CountedCalls = {}): number {
  let sum = 0;
  for (const calls of [stages, ingest]) for (const ops of Object.values(calls)) sum += ops.total ?? 0;
  return sum;
}

interface CostLine {
  item: string;
  perMillionUsd: number;
  basis: string;
}

export interface CostEstimate {
  size: string;
  mode: KeyMode;
  infAck: boolean;
  lines: CostLine[];
  totalPerMillionUsd: number;
  /** Without the HTTP API and the recipient-target write (both depend on how it is deployed). */
  pipelineOnlyPerMillionUsd: number;
}

function chunks(bytes: number): number {
  return Math.max(1, Math.ceil(bytes / CHUNK));
}

/**
 * Cost of one million messages of one size class. CPU per stage is the embedded measurement (local
 * RSA unwrap = the cached mode); for the direct mode the measured local unwrap CPU is taken out of
 * decrypt and a KMS round trip put in its place.
 */
export function estimateCost(
  e: EmbeddedSizeResult,
  mode: KeyMode,
  infAck: boolean,
  unwrapCpuMs: number,
  /** The emulator's counted stage calls for this mode and ack (DynamoDB and KMS Sign from them). */
  counted?: CountedCalls,
): CostEstimate {
  const pc = e.portCallsPerMessage;
  // The embedded runs request an ack on every message; without one, deliver signs nothing and
  // stores no response signature (the once-store's `response#` write).
  const signs = mode === 'cached-sign' || !infAck ? 0 : (counted?.kms?.Sign ?? pc.sign);
  const deliveries = infAck ? pc.deliveries : pc.deliveries / 2;
  const portWrites = pc.once + pc.audit - (infAck ? 0 : 1);
  const writeUnits = counted ? dynamoWriteUnits(counted) : portWrites;
  const writeBasis = counted
    ? `${dynamoWriteCalls(counted).toFixed(2)} writes/msg counted (${Object.entries(counted.dynamodb ?? {})
        .filter(([op]) => op !== 'total')
        .map(([op, n]) => `${op} ${n.toFixed(2)}`)
        .join(', ')}) = ${writeUnits.toFixed(2)} WRU`
    : `${portWrites.toFixed(1)} writes/msg (once-store ${pc.once.toFixed(1)}${infAck ? '' : ' − response#'}, audit items ${pc.audit.toFixed(1)}), 1 WRU each`;
  const usesBlob = e.blobPutsPerMessage > 0;

  // SQS: each queue's batch of 10 is received, deleted and (except the inbound one) sent in one
  // request each, billed per started 64 KiB of the batch's payload.
  let sqsRequests = 0;
  for (const stage of STAGES) {
    const batchBytes = e.meanBodyBytes[stage] * BATCH;
    const receive = chunks(batchBytes) / BATCH;
    const send = stage === 'authenticate' ? chunks(e.meanBodyBytes[stage]) : chunks(batchBytes) / BATCH;
    sqsRequests += receive + 1 / BATCH + send;
  }

  // Lambda duration per stage and message: CPU scaled to the memory's vCPU share, plus the batch's
  // I/O wait shared by its ten records.
  const L = ASSUMED_LATENCY_MS;
  const io: Record<Phase, number> = {
    ingest: L.sqs + (usesBlob ? L.s3 : 0),
    authenticate: (2 * L.dynamo + L.sqs) / BATCH,
    authorise: ((usesBlob ? L.s3 : 0) + L.sqs) / BATCH,
    decrypt: ((usesBlob ? 2 * L.s3 : 0) + (mode === 'direct' ? L.kms : 0) + L.sqs) / BATCH,
    verify: ((usesBlob ? 2 * L.s3 : 0) + 2 * L.dynamo + L.sqs) / BATCH,
    deliver:
      ((usesBlob ? L.s3 : 0) +
        L.s3 +
        (infAck ? (mode === 'cached-sign' ? 0 : L.kms) + L.s3 + L.dynamo : 0) +
        L.dynamo) /
      BATCH,
  };
  let gbSeconds = 0;
  const memoryMb: Record<Phase, number> = {
    ingest: 1024,
    ...(Object.fromEntries(STAGES.map((s) => [s, STAGE_DEFINITIONS[s].memoryMb])) as Record<
      StageName,
      number
    >),
  };
  for (const phase of Object.keys(io) as Phase[]) {
    let cpu = e.cpuPerMessageMs[phase].median;
    if (phase === 'decrypt' && mode === 'direct') cpu = Math.max(0, cpu - unwrapCpuMs);
    const share = Math.min(1, memoryMb[phase] / FULL_VCPU_MB);
    const billedMs = cpu / share + io[phase];
    gbSeconds += (memoryMb[phase] / 1024) * (billedMs / 1000);
  }
  const lambdaRequests = 1 + STAGES.length / BATCH; // ingest per message, stages per batch

  const kmsUnwrap = mode === 'direct' ? pc.unwrap * PRICES.kmsAsymmetric.usd : 0;
  const kmsSign = signs * PRICES.kmsAsymmetric.usd;
  // Claim-check copies (sealed, signed, bundle) stay until the bucket's 30-day expiry.
  const storedBytes = usesBlob ? e.sealedBytes + e.sealedBytes * 0.75 + e.bundleBytes : 0;

  const M = 1e6;
  const lines: CostLine[] = [
    {
      item: 'SQS requests',
      perMillionUsd: sqsRequests * PRICES.sqsRequest.usd * M,
      basis: `${sqsRequests.toFixed(2)} billed requests/msg (5 hops, batch 10, 64 KiB chunks, inbound SendMessage per message)`,
    },
    {
      item: 'KMS unwrap',
      perMillionUsd: kmsUnwrap * M,
      basis:
        mode === 'direct'
          ? `${pc.unwrap.toFixed(2)} RSA Decrypt/msg`
          : 'one symmetric Decrypt per container per TTL (≈ 0 per message)',
    },
    {
      item: 'KMS response signing',
      perMillionUsd: kmsSign * M,
      basis:
        mode === 'cached-sign'
          ? 'wrapped P-256 key, one symmetric Decrypt per container per TTL (≈ 0 per message)'
          : `${signs.toFixed(2)} ECC Sign/msg`,
    },
    {
      item: 'DynamoDB writes',
      perMillionUsd: writeUnits * PRICES.dynamoWrite.usd * M,
      basis: writeBasis,
    },
    {
      item: 'S3 claim check',
      perMillionUsd:
        (e.blobPutsPerMessage * PRICES.s3Put.usd +
          e.blobGetsPerMessage * PRICES.s3Get.usd +
          (storedBytes / 1024 ** 3) * PRICES.s3StorageGbMonth.usd * (DAYS_KEPT / 30)) *
        M,
      basis: `${e.blobPutsPerMessage.toFixed(1)} PUT + ${e.blobGetsPerMessage.toFixed(1)} GET/msg${usesBlob ? `, ${(storedBytes / 1e6).toFixed(1)} MB kept ${DAYS_KEPT} days` : ''}`,
    },
    {
      item: 'Lambda duration',
      perMillionUsd: gbSeconds * PRICES.lambdaGbSecondArm.usd * M,
      basis: `${(gbSeconds * 1000).toFixed(1)} GB-ms/msg (measured CPU ÷ vCPU share at 1024 MB + assumed I/O waits)`,
    },
    {
      item: 'Lambda requests',
      perMillionUsd: lambdaRequests * PRICES.lambdaRequest.usd * M,
      basis: `${lambdaRequests.toFixed(1)} invocations/msg (ingest 1, stages 0.1 each)`,
    },
    {
      item: 'HTTP API (ingest)',
      perMillionUsd: PRICES.httpApiRequest.usd * M,
      basis: '1 request/msg (0 for senders using direct SQS ingestion)',
    },
    {
      item: 'recipient target write (S3 PUT)',
      perMillionUsd: deliveries * PRICES.s3Put.usd * M,
      basis: `${deliveries.toFixed(1)} S3 PUT/msg (Bundle${infAck ? ' + signed response' : ''}; an SQS target costs ≈ $0.4/M)`,
    },
  ];
  const total = lines.reduce((s, l) => s + l.perMillionUsd, 0);
  const excluded = lines
    .filter((l) => l.item === 'HTTP API (ingest)' || l.item === 'recipient target write (S3 PUT)')
    .reduce((s, l) => s + l.perMillionUsd, 0);
  return {
    size: e.size,
    mode,
    infAck,
    lines,
    totalPerMillionUsd: total,
    pipelineOnlyPerMillionUsd: total - excluded,
  };
}
