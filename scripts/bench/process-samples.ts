/**
 * `itk3 process` on the real 63 KB sample (consultation_report.xml, GP0001 → its ITK007C recipient):
 * fresh message, Bundle and document ids per copy, each sealed and credentialled as its real sender
 * would. The command runs as a child process (exactly as a user runs it) with N and 2N messages,
 * alternating, so start-up (tsx, config, key import) cancels out: ms per message = (t₂ₙ − tₙ) ÷ N.
 * The floor beside it is the same crypto as the embedded floor for this message: ES256 credential
 * verify + RSA-OAEP-256 unwrap + AES-256-GCM + ES256 inner verify + base64url decoding.
 */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeKeystore } from '../../lib/adapters/local/keystore.js';
import { fixturesDir, ITK3_SAMPLE_FACTS, parseBundle } from '../../lib/itk3/index.js';
import { routingFor, sealFor, tokenFor } from '../../lib/testkit/scenario.js';
import type { DemoWorld } from '../../lib/testkit/world.js';
import { type Summary, summarise } from './stats.js';

export const PROCESS_SAMPLE = 'consultation_report.xml';

/** One fixture copy with fresh ids (MessageHeader id, Bundle identifier/id, document Bundle id). */
export function freshSampleCopy(original: string): string {
  const facts = ITK3_SAMPLE_FACTS.find((f) => f.name === PROCESS_SAMPLE);
  if (!facts) throw new Error(`no facts for ${PROCESS_SAMPLE}`);
  let text = original;
  for (const id of [facts.messageId, facts.bundleId, facts.documentId]) {
    text = text.split(id).join(randomUUID());
  }
  return text;
}

/** The fixture's bytes, or undefined when ../shared/fixtures is not there. */
export function sampleBytes(): Uint8Array | undefined {
  const dir = fixturesDir();
  const file = dir === undefined ? undefined : join(dir, PROCESS_SAMPLE);
  return file !== undefined && existsSync(file) ? new Uint8Array(readFileSync(file)) : undefined;
}

interface PreparedDir {
  dir: string;
  config: string;
  keystore: string;
  /** Folders with n and 2n messages. */
  inputs: Record<'single' | 'double', string>;
}

/** Write config, keystore and 3n sealed copies (n and 2n per folder) under tmpfs where there is one. */
async function prepare(world: DemoWorld, n: number, now: number): Promise<PreparedDir> {
  const bytes = sampleBytes();
  if (!bytes) throw new Error('fixture missing');
  const base = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
  const dir = mkdtempSync(join(base, 'itk3-bench-process-'));
  const config = join(dir, 'config.json');
  const keystore = join(dir, 'keystore.json');
  writeFileSync(config, JSON.stringify(world.configDoc));
  writeKeystore(keystore, world.keystore);
  const original = Buffer.from(bytes).toString('utf8');
  const inputs = { single: join(dir, 'single'), double: join(dir, 'double') };
  for (const [folder, count] of [
    [inputs.single, n],
    [inputs.double, 2 * n],
  ] as const) {
    mkdirSync(folder);
    for (let i = 0; i < count; i += 1) {
      const copy = new TextEncoder().encode(freshSampleCopy(original));
      const msg = parseBundle(copy, 'xml');
      const sender = world.senders[msg.header.senderOds as keyof DemoWorld['senders']];
      if (!sender) throw new Error('sample sender unknown to the demo world');
      const rule = world.config.doc.rules.find(
        (r) => r.sender.ods === sender.ods && r.event === msg.header.event.code,
      );
      const routing = routingFor(msg, rule?.recipients[0] ?? 'A83627');
      const name = join(folder, `m${String(i).padStart(4, '0')}`);
      writeFileSync(`${name}.jwe`, await sealFor(world, sender, copy, 'xml', routing));
      writeFileSync(`${name}.jwt`, await tokenFor(world, sender, now));
    }
  }
  return { dir, config, keystore, inputs };
}

/** Wall and CPU ms of one `itk3 process` run over `input`; every message must be delivered. */
function runProcess(
  root: string,
  p: PreparedDir,
  input: string,
  expected: number,
  workers?: number,
): { wall: number; cpu: number } {
  const out = mkdtempSync(join(p.dir, 'out-'));
  const cpuFile = join(out, 'cpu.json');
  const preload = join(root, 'scripts/bench/cpu-at-exit.cjs');
  const t0 = performance.now();
  const stdout = execFileSync(
    process.execPath,
    [
      join(root, 'bin/itk3.js'),
      'process',
      input,
      '--config',
      p.config,
      '--keystore',
      p.keystore,
      '--out',
      out,
      // Unset: the command's default (a worker pool on a machine with more than one core).
      ...(workers === undefined ? [] : ['--workers', String(workers)]),
    ],
    {
      encoding: 'utf8',
      maxBuffer: 64 * 1024 * 1024,
      env: {
        ...process.env,
        ITK3_BENCH_CPU_FILE: cpuFile,
        NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --require ${preload}`.trim(),
      },
    },
  );
  const wall = performance.now() - t0;
  const cpu = (JSON.parse(readFileSync(cpuFile, 'utf8')) as { cpuMs: number }).cpuMs;
  const delivered = stdout.split('\n').filter((l) => l.includes('"status":"delivered"')).length;
  if (delivered !== expected) throw new Error(`itk3 process delivered ${delivered} of ${expected} samples`);
  rmSync(out, { recursive: true, force: true });
  return { wall, cpu };
}

export interface ProcessResult {
  modulus: number;
  messages: number;
  /** Wall ms per message with start-up cancelled out, over the repeats. */
  msPerMessage: Summary;
  /** CPU ms per message (the child's own user + system time), start-up cancelled out likewise. */
  cpuMsPerMessage: Summary;
  throughput: number;
}

/** Per-message figures of one pair of runs. */
export interface ProcessSample {
  wallMs: number;
  cpuMs: number;
}

/**
 * `repeats` pairs of runs (n then 2n, fresh ids and once-store each time: every run gets its own
 * output folder). Returns per-message wall ms.
 */
export async function benchProcessSamples(
  root: string,
  world: DemoWorld,
  modulus: number,
  n: number,
  now: number,
): Promise<{ modulus: number; run: (workers?: number) => ProcessSample; cleanup: () => void }> {
  const p = await prepare(world, n, now);
  return {
    modulus,
    run: (workers?: number) => {
      const single = runProcess(root, p, p.inputs.single, n, workers);
      const double = runProcess(root, p, p.inputs.double, 2 * n, workers);
      return { wallMs: (double.wall - single.wall) / n, cpuMs: (double.cpu - single.cpu) / n };
    },
    cleanup: () => rmSync(p.dir, { recursive: true, force: true }),
  };
}

export function processResult(modulus: number, n: number, samples: readonly ProcessSample[]): ProcessResult {
  const msPerMessage = summarise(samples.map((s) => s.wallMs));
  const cpuMsPerMessage = summarise(samples.map((s) => s.cpuMs));
  return { modulus, messages: n, msPerMessage, cpuMsPerMessage, throughput: 1000 / msPerMessage.median };
}
