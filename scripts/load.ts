/**
 * Load run through the embedded runtime (`npm run load`): at least 10 000 mixed messages — 70 %
 * valid messages built for the three demo senders, 30 % hostile ones of ten kinds — minted, signed
 * and sealed in bounded concurrency, submitted in chunks and drained through the deployed handlers.
 *
 * Checks conservation (every trace ends in exactly one terminal state, the counts add up, every
 * message ended as its kind says it must, no queue or DLQ holds anything) and reports throughput,
 * heap used before and after (after a forced GC) and peak RSS. The CI-sized test in test/load
 * imports {@link runLoad}; this file is also the command-line entry:
 *
 *   npm run load                      # 10 000 messages
 *   npm run load -- --messages 20000 --concurrency 8 --chunk 500
 *
 * Nothing here prints tokens, keys or message bytes. A smaller run through an emulator belongs to the
 * emulator runtime (lib/runtime/emulator.ts) and is not part of this script.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';
import vm from 'node:vm';

// Quiet Powertools before the runtime imports the stage handlers (they read it on first import).
process.env.POWERTOOLS_LOG_LEVEL ??= 'SILENT';
process.env.POWERTOOLS_METRICS_DISABLED ??= 'true';

import { SoftwareKeyService } from '../lib/adapters/local/software-keys.js';
import type { ItkRouting } from '../lib/envelope/routing.js';
import { encryptSigned, signBundle } from '../lib/envelope/seal.js';
import { ERROR_CATALOGUE, type RejectionCode } from '../lib/errors.js';
import { buildItk3Message } from '../lib/itk3/index.js';
import { EmbeddedPipeline, VirtualClock } from '../lib/runtime/embedded.js';
import { EmulatorPipeline } from '../lib/runtime/emulator.js';
import type { PipelineRuntime } from '../lib/runtime/runtime.js';
import { recipientKeyFor, tokenFor } from '../lib/testkit/scenario.js';
import { createWorld, type DemoSender, type DemoWorld, publishRecipientKeys } from '../lib/testkit/world.js';

export interface LoadOptions {
  /** Messages to send. @default 10 000 */
  messages?: number;
  /** Share of hostile messages. @default 0.3 */
  hostileShare?: number;
  /** Messages built (minted, signed, sealed) at once. @default 8 */
  concurrency?: number;
  /** Messages submitted before each drain. @default 500 */
  chunk?: number;
  /** Recipient RSA size. @default 2048 */
  recipientModulus?: number;
  /** Progress lines (never message content). */
  log?: (line: string) => void;
  /**
   * Run through an emulator's real SQS/KMS/DynamoDB/S3 (emulator mode) instead of in process.
   * `localState` keeps the once-store and audit in process (LocalStack has no DynamoDB offline).
   */
  emulator?: { endpoint: string; localState?: boolean };
  /** Hostile kinds left out of the mix (an emulator gap makes their outcome meaningless there). */
  excludeKinds?: readonly string[];
}

export interface LoadResult {
  messages: number;
  valid: number;
  hostile: number;
  delivered: number;
  rejected: number;
  deadLettered: number;
  inFlight: number;
  /** Traces whose audit trail holds other than exactly one terminal event. */
  terminalViolations: number;
  /** Messages that did not end as their kind requires. */
  unexpected: number;
  byOutcome: Record<string, number>;
  buildMs: number;
  pipelineMs: number;
  totalMs: number;
  /** Messages per second through the pipeline (drain time only). */
  throughput: number;
  heapBeforeMiB: number;
  heapAfterMiB: number;
  heapPeakMiB: number;
  rssPeakMiB: number;
  handlerInvocations: number;
}

type Kind =
  | 'valid'
  | 'bad-signature'
  | 'expired-token'
  | 'no-credential'
  | 'tampered-ciphertext'
  | 'policy-denied'
  | 'swapped-routing'
  | 'signature-stripped'
  | 'replayed-token'
  | 'forged-token'
  | 'random-encrypted-key';

const HOSTILE: readonly Exclude<Kind, 'valid'>[] = [
  'bad-signature',
  'expired-token',
  'no-credential',
  'tampered-ciphertext',
  'policy-denied',
  'swapped-routing',
  'signature-stripped',
  'replayed-token',
  'forged-token',
  'random-encrypted-key',
];

/** Where each kind must end: stage and code (valid messages are delivered). */
const EXPECTED: Record<Exclude<Kind, 'valid'>, { stage: string; code: RejectionCode }> = {
  'bad-signature': { stage: 'verify', code: 'SIGNATURE_KEY_NOT_SENDERS' },
  'expired-token': { stage: 'authenticate', code: 'TOKEN_EXPIRED' },
  'no-credential': { stage: 'authenticate', code: 'TOKEN_MISSING' },
  'tampered-ciphertext': { stage: 'decrypt', code: 'DECRYPT_FAILED' },
  'policy-denied': { stage: 'authorise', code: 'POLICY_DENIED' },
  'swapped-routing': { stage: 'verify', code: 'BINDING_MISMATCH' },
  'signature-stripped': { stage: 'verify', code: 'SIGNATURE_MALFORMED' },
  'replayed-token': { stage: 'authenticate', code: 'TOKEN_REPLAYED' },
  'forged-token': { stage: 'authenticate', code: 'TOKEN_SIGNATURE_INVALID' },
  'random-encrypted-key': { stage: 'decrypt', code: 'DECRYPT_FAILED' },
};

/** Hostile kinds whose credential the front door itself refuses (issue 9, class 4). */
const REFUSED_AT_THE_DOOR: ReadonlySet<Kind> = new Set<Kind>(['expired-token', 'forged-token']);

type SenderOds = 'GP0001' | 'X26' | 'FQ123';

/** What each demo sender sends and to whom, as the demo world's policy allows. */
const SENDS: Record<
  SenderOds,
  { to: string; event: string; definition: string; receiver: boolean; mailbox: string }
> = {
  GP0001: {
    to: 'A83627',
    event: 'ITK007C',
    definition: 'ITK-GPConnectSendDocument-MessageDefinition-1',
    receiver: false,
    mailbox: 'MESHGP0001',
  },
  X26: {
    to: 'A83627',
    event: 'ITK009D',
    definition: 'ITK-DM-Immunization-MessageDefinition-1',
    receiver: true,
    mailbox: 'NOROT003',
  },
  FQ123: {
    to: 'A8797979',
    event: 'ITK013D',
    definition: 'ITK-DM-MIRC-MessageDefinition-1',
    receiver: true,
    mailbox: 'NOROT003',
  },
};

interface Built {
  kind: Kind;
  credential?: string;
  sealed: string;
}

function bundleFor(sender: SenderOds, overrides: { event?: string; to?: string; definition?: string } = {}) {
  const s = SENDS[sender];
  const id = randomUUID();
  const to = overrides.to ?? s.to;
  const bytes = buildItk3Message({
    format: 'xml',
    event: overrides.event ?? s.event,
    senderOds: sender,
    ...(s.receiver ? { receiverOds: to } : {}),
    meshMailbox: s.mailbox,
    messageId: id,
    bundleId: randomUUID(),
    documentId: randomUUID(),
    acks: { inf: true, bus: true },
    recipientType: 'FA',
    messageDefinition: overrides.definition ?? s.definition,
    timestamp: new Date().toISOString(),
  });
  const routing: ItkRouting = { from: sender, to, event: overrides.event ?? s.event, id };
  return { bytes, routing };
}

function signer(world: DemoWorld, ods: SenderOds) {
  const key = world.senders[ods].key;
  return { key: key.privateJwk, kid: key.kid, alg: key.alg as 'ES256' | 'PS256' | 'RS512' };
}

function recipient(world: DemoWorld, ods: string) {
  return recipientKeyFor(world, ods);
}

/** Build one message of `kind`, as a sender (or an attacker) would. */
async function build(
  world: DemoWorld,
  kind: Kind,
  sender: SenderOds,
  now: number,
  spentToken: string | undefined,
): Promise<Built> {
  const s: DemoSender = world.senders[sender];
  const token = () => tokenFor(world, s, now);
  const seal = async (
    routing: ItkRouting,
    bytes: Uint8Array,
    signAs: SenderOds = sender,
    jweRouting = routing,
  ) => {
    const jws = await signBundle({ bundle: bytes, format: 'xml', routing, signer: signer(world, signAs) });
    return encryptSigned({ plaintext: jws, routing: jweRouting, recipient: recipient(world, routing.to) });
  };
  const m = bundleFor(sender);
  switch (kind) {
    case 'valid':
      return { kind, credential: await token(), sealed: await seal(m.routing, m.bytes) };
    case 'bad-signature': {
      const other: SenderOds = sender === 'FQ123' ? 'X26' : 'FQ123';
      return { kind, credential: await token(), sealed: await seal(m.routing, m.bytes, other) };
    }
    case 'expired-token': {
      const iat = Math.floor(now / 1000) - 900;
      return {
        kind,
        credential: await tokenFor(world, s, now, { iat, exp: iat + 300 }),
        sealed: await seal(m.routing, m.bytes),
      };
    }
    case 'no-credential':
      return { kind, sealed: await seal(m.routing, m.bytes) };
    case 'tampered-ciphertext': {
      const parts = (await seal(m.routing, m.bytes)).split('.');
      const ct = parts[3] ?? '';
      const i = Math.floor(ct.length / 2);
      parts[3] = `${ct.slice(0, i)}${ct[i] === 'A' ? 'B' : 'A'}${ct.slice(i + 1)}`;
      return { kind, credential: await token(), sealed: parts.join('.') };
    }
    case 'policy-denied': {
      // An event the sender has no rule for (GP0001 → ITK009D, others → ITK007C).
      const event = sender === 'GP0001' ? 'ITK009D' : 'ITK007C';
      const d = bundleFor(sender, { event });
      return { kind, credential: await token(), sealed: await seal(d.routing, d.bytes) };
    }
    case 'swapped-routing':
      return {
        kind,
        credential: await token(),
        sealed: await seal(m.routing, m.bytes, sender, { ...m.routing, id: randomUUID() }),
      };
    case 'signature-stripped':
      return {
        kind,
        credential: await token(),
        sealed: await encryptSigned({
          plaintext: m.bytes,
          routing: m.routing,
          recipient: recipient(world, m.routing.to),
        }),
      };
    case 'replayed-token':
      return { kind, credential: spentToken ?? (await token()), sealed: await seal(m.routing, m.bytes) };
    case 'forged-token': {
      const [h, p] = (await token()).split('.');
      return {
        kind,
        credential: `${h}.${p}.${randomBytes(64).toString('base64url')}`,
        sealed: await seal(m.routing, m.bytes),
      };
    }
    case 'random-encrypted-key': {
      const parts = (await seal(m.routing, m.bytes)).split('.');
      parts[1] = randomBytes(256).toString('base64url');
      return { kind, credential: await token(), sealed: parts.join('.') };
    }
  }
}

/** Map with at most `limit` promises in flight. */
async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, i: number) => Promise<R>,
): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i] as T, i);
    }
  });
  await Promise.all(workers);
  return out;
}

/** A GC function, when the runtime lets us have one (for honest heap numbers). */
function gcFunction(): (() => void) | undefined {
  try {
    v8.setFlagsFromString('--expose_gc');
    return vm.runInNewContext('gc') as () => void;
  } catch {
    return undefined;
  }
}

const MiB = 1024 * 1024;

/** Run the load and check conservation. Returns the numbers; throws nothing on a violation. */
export async function runLoad(opts: LoadOptions = {}): Promise<LoadResult> {
  const total = opts.messages ?? 10_000;
  const hostileShare = opts.hostileShare ?? 0.3;
  const concurrency = opts.concurrency ?? 8;
  const chunk = opts.chunk ?? 500;
  const log = opts.log ?? (() => undefined);
  const started = performance.now();

  const world = await createWorld({ recipientModulus: opts.recipientModulus ?? 2048 });
  const baseDir = mkdtempSync(path.join(tmpdir(), 'itk3-load-'));
  const clock = new VirtualClock();
  let pipeline: PipelineRuntime;
  let embedded: EmbeddedPipeline | undefined;
  if (opts.emulator) {
    const emulated = await EmulatorPipeline.start({
      config: world.config,
      endpoint: opts.emulator.endpoint,
      prefix: `load-${Date.now().toString(36)}`,
      localState: opts.emulator.localState === true,
      visibilityTimeoutSeconds: 5,
    });
    publishRecipientKeys(world, await emulated.publicJwks());
    pipeline = emulated;
  } else {
    embedded = new EmbeddedPipeline({
      config: world.config,
      keys: new SoftwareKeyService(world.keystore),
      baseDir,
      clock,
    });
    pipeline = embedded;
  }
  // Credentials are minted at the runtime's time: virtual in process, real against an emulator.
  const timeNow = () => (opts.emulator ? Date.now() : clock.now());

  const gc = gcFunction();
  gc?.();
  const heapBefore = process.memoryUsage().heapUsed;
  let heapPeak = heapBefore;
  const sampler = setInterval(() => {
    heapPeak = Math.max(heapPeak, process.memoryUsage().heapUsed);
  }, 250);

  // Deterministic mix: in every ten messages, the last 10 × hostileShare are hostile, kinds in
  // rotation. The first three (one valid per sender) go alone, so every later replay has a spent
  // credential to replay.
  const hostileSlots = Math.round(hostileShare * 10);
  const hostileKinds = HOSTILE.filter((k) => !opts.excludeKinds?.includes(k));
  const kinds: Kind[] = [];
  let h = 0;
  for (let i = 0; i < total; i += 1) {
    kinds.push(
      i >= 3 && i % 10 >= 10 - hostileSlots ? (hostileKinds[h++ % hostileKinds.length] as Kind) : 'valid',
    );
  }
  const bounds: number[] = [0, Math.min(3, total)];
  for (let b = 3 + chunk; b < total; b += chunk) bounds.push(b);
  if ((bounds.at(-1) ?? 0) < total) bounds.push(total);
  const senders: SenderOds[] = ['GP0001', 'X26', 'FQ123'];

  const traces: { traceId: string; kind: Kind }[] = [];
  const spent: Partial<Record<SenderOds, string>> = {};
  let buildMs = 0;
  let pipelineMs = 0;
  let invocations = 0;
  try {
    for (let c = 0; c + 1 < bounds.length; c += 1) {
      const offset = bounds[c] ?? 0;
      const end = bounds[c + 1] ?? total;
      const slice = kinds.slice(offset, end);
      const now = timeNow();
      const t0 = performance.now();
      const built = await mapLimit(slice, concurrency, (kind, i) => {
        const sender = senders[(offset + i) % senders.length] as SenderOds;
        return build(world, kind, sender, now, spent[sender]);
      });
      buildMs += performance.now() - t0;

      const t1 = performance.now();
      for (const [i, b] of built.entries()) {
        const sender = senders[(offset + i) % senders.length] as SenderOds;
        let traceId: string;
        if (b.credential === undefined) traceId = await pipeline.submitRaw(b.sealed);
        else if (REFUSED_AT_THE_DOOR.has(b.kind)) {
          // The HTTP front door would answer 401 and queue nothing: these go straight onto the
          // inbound queue, where the authenticate stage decides them.
          traceId = await pipeline.submitRaw(b.sealed, `Bearer ${b.credential}`);
        } else {
          const r = await pipeline.submit(b.credential, b.sealed);
          if (r.status !== 202) throw new Error(`front door refused a ${b.kind} message (${r.status})`);
          traceId = r.trackingId;
          // A valid credential of this chunk is the replayed credential of the next one.
          if (b.kind === 'valid') spent[sender] = b.credential;
        }
        traces.push({ traceId, kind: b.kind });
      }
      invocations += await pipeline.drain();
      pipelineMs += performance.now() - t1;
      heapPeak = Math.max(heapPeak, process.memoryUsage().heapUsed);
      log(`${end}/${total} messages, ${Math.round((performance.now() - started) / 1000)} s`);
    }
  } finally {
    clearInterval(sampler);
  }

  // Conservation: every trace ends in exactly one terminal state, as its kind requires.
  const byOutcome: Record<string, number> = {};
  let delivered = 0;
  let rejected = 0;
  let deadLettered = 0;
  let inFlight = 0;
  let terminalViolations = 0;
  let unexpected = 0;
  for (const t of traces) {
    const entries = await pipeline.ports.audit.byTrace(t.traceId);
    const terminal = entries.filter(
      (e) => e.event === 'delivered' || e.event === 'rejected' || e.event === 'dead-lettered',
    );
    if (terminal.length !== 1) terminalViolations += 1;
    const o = await pipeline.outcome(t.traceId);
    const key = `${t.kind} → ${o.status}${o.code ? ` ${o.stage}/${o.code}` : ''}`;
    byOutcome[key] = (byOutcome[key] ?? 0) + 1;
    if (o.status === 'delivered') delivered += 1;
    else if (o.status === 'rejected') rejected += 1;
    else if (o.status === 'dead-lettered') deadLettered += 1;
    else inFlight += 1;
    const want = t.kind === 'valid' ? undefined : EXPECTED[t.kind];
    const ok = want
      ? o.status === 'rejected' &&
        o.stage === want.stage &&
        o.code === want.code &&
        o.itk3Code === ERROR_CATALOGUE[want.code]
      : o.status === 'delivered';
    if (!ok) unexpected += 1;
  }
  // In process, anything still queued is in flight too (an emulator drain returns only when empty).
  const leftInQueues = embedded
    ? Object.values(embedded.queues).reduce((n, q) => n + q.depth, 0) + embedded.deadLetters().length
    : 0;
  if (leftInQueues > 0) inFlight += leftInQueues;

  gc?.();
  const heapAfter = process.memoryUsage().heapUsed;
  const rssPeakMiB = process.resourceUsage().maxRSS / 1024;
  rmSync(baseDir, { recursive: true, force: true });

  const valid = kinds.filter((k) => k === 'valid').length;
  return {
    messages: traces.length,
    valid,
    hostile: traces.length - valid,
    delivered,
    rejected,
    deadLettered,
    inFlight,
    terminalViolations,
    unexpected,
    byOutcome,
    buildMs: Math.round(buildMs),
    pipelineMs: Math.round(pipelineMs),
    totalMs: Math.round(performance.now() - started),
    throughput: Math.round((traces.length / pipelineMs) * 1000 * 10) / 10,
    heapBeforeMiB: Math.round((heapBefore / MiB) * 10) / 10,
    heapAfterMiB: Math.round((heapAfter / MiB) * 10) / 10,
    heapPeakMiB: Math.round((heapPeak / MiB) * 10) / 10,
    rssPeakMiB: Math.round(rssPeakMiB * 10) / 10,
    handlerInvocations: invocations,
  };
}

/** Write the result where scripts/security-report.ts reads it. */
export function writeLoadReport(result: LoadResult, source: string): string {
  const dir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'reports', 'security');
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'load.json');
  writeFileSync(
    file,
    `${JSON.stringify({ source, generatedAt: new Date().toISOString(), ...result }, null, 2)}\n`,
  );
  return file;
}

/** A one-paragraph human summary (numbers only). */
export function summarise(r: LoadResult): string {
  return [
    `${r.messages} messages (${r.valid} valid, ${r.hostile} hostile): ${r.delivered} delivered, ${r.rejected} rejected, ${r.deadLettered} dead-lettered, ${r.inFlight} in flight`,
    `conservation: ${r.terminalViolations} traces without exactly one terminal event, ${r.unexpected} unexpected outcomes`,
    `time: build ${(r.buildMs / 1000).toFixed(1)} s, pipeline ${(r.pipelineMs / 1000).toFixed(1)} s, total ${(r.totalMs / 1000).toFixed(1)} s; throughput ${r.throughput} msg/s through the pipeline`,
    `memory: heap ${r.heapBeforeMiB} MiB before, ${r.heapAfterMiB} MiB after (GC), peak heap ${r.heapPeakMiB} MiB, peak RSS ${r.rssPeakMiB} MiB`,
  ].join('\n');
}

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const value = Number(process.argv[i + 1]);
  if (!Number.isFinite(value) || value <= 0) {
    console.error(`error: --${name} needs a positive number`);
    process.exit(2);
  }
  return value;
}

async function main(): Promise<void> {
  const result = await runLoad({
    messages: arg('messages', 10_000),
    concurrency: arg('concurrency', 8),
    chunk: arg('chunk', 500),
    log: (line) => console.log(line),
  });
  console.log(summarise(result));
  for (const [k, n] of Object.entries(result.byOutcome).sort())
    console.log(`  ${String(n).padStart(6)}  ${k}`);
  console.log(`written ${path.relative(process.cwd(), writeLoadReport(result, 'npm run load'))}`);
  const ok =
    result.inFlight === 0 &&
    result.terminalViolations === 0 &&
    result.unexpected === 0 &&
    result.deadLettered === 0;
  process.exit(ok ? 0 : 1);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((error: unknown) => {
    console.error(`error: ${(error as Error).message}`);
    process.exit(1);
  });
}
