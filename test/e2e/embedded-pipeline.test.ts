/**
 * End to end: the demo scenario (every ITK3 sample sealed by its real sender, plus the hostile
 * set) through the embedded pipeline and the real handlers. Every message must end as its
 * `expected` says; deliveries are byte-identical to their source; every response verifies; the
 * audit trail carries no token, envelope, Bundle or patient number.
 *
 * Runs twice: with the shared NHS fixtures (when the folder exists) and with the fixture folder
 * hidden, so the built sample equivalents go through the same checks.
 */
import '../support/env.js';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeKeystore } from '../../lib/adapters/local/keystore.js';
import { WorkerPool } from '../../lib/adapters/local/worker-pool.js';
import { submitScenarioMessage } from '../../lib/cli/demo.js';
import { fixturesDir, loadSamples, parseBundle, type Sample } from '../../lib/itk3/index.js';
import type { EmbeddedPipeline, MessageOutcome } from '../../lib/runtime/embedded.js';
import { rejectionAnswered } from '../../lib/stages/batch.js';
import { buildScenario, type ScenarioMessage } from '../../lib/testkit/scenario.js';
import { type DemoWorld, worldPaths } from '../../lib/testkit/world.js';
import {
  embeddedPipeline,
  filesBelow,
  makeTempDir,
  removeTempDirs,
  testWorld,
  verifyResponse,
} from '../support/world.js';

interface Run {
  baseDir: string;
  pipeline: EmbeddedPipeline;
  scenario: ScenarioMessage[];
  samples: Sample[];
  outcomes: MessageOutcome[];
}

let world: DemoWorld;

beforeAll(async () => {
  world = await testWorld();
});
afterAll(removeTempDirs);

/**
 * When a message is sent, exactly as lib/cli/demo.ts decides it: the scenario's own phase. A replay
 * comes after its original, and so does a duplicate sample (it must never race its original
 * through one concurrent verify batch, where either copy could be the one refused).
 */
function phaseOf(message: ScenarioMessage): number {
  return message.phase ?? 1;
}

/** Submit the scenario phase by phase, draining between phases, as the demo does. */
async function runScenario(
  scenario: ScenarioMessage[],
  samples: Sample[],
  pool?: WorkerPool,
  sideBySide?: boolean,
): Promise<Run> {
  const baseDir = makeTempDir('itk3-e2e-');
  const pipeline = embeddedPipeline(world, {
    baseDir,
    auditFile: join(baseDir, 'audit.jsonl'),
    ...(pool ? { pool } : {}),
    ...(sideBySide !== undefined ? { sideBySide } : {}),
  });
  const traces: string[] = new Array(scenario.length);
  const phases = [...new Set(scenario.map(phaseOf))].sort((a, b) => a - b);
  for (const phase of phases) {
    for (const [i, message] of scenario.entries()) {
      if (phaseOf(message) === phase) traces[i] = await submitScenarioMessage(pipeline, message);
    }
    await pipeline.drain();
  }
  const outcomes = await Promise.all(traces.map((t) => pipeline.outcome(t)));
  return { baseDir, pipeline, scenario, samples, outcomes };
}

/** The routing header of a sealed message (the JWE protected header is plain base64url JSON). */
function routingOf(sealed: string): { from: string; to: string; id: string } {
  const header = JSON.parse(Buffer.from(sealed.split('.')[0]!, 'base64url').toString('utf8'));
  return header.itk;
}

function expectEveryMessageAsExpected(run: Run): void {
  const actual = run.scenario.map((m, i) => {
    const o = run.outcomes[i]!;
    const e = m.expected;
    return {
      name: m.name,
      status: o.status,
      ...(e.stage !== undefined ? { stage: o.stage } : {}),
      ...(e.itk3Code !== undefined ? { itk3Code: o.itk3Code } : {}),
      ...(e.code !== undefined ? { code: o.code } : {}),
    };
  });
  expect(actual).toEqual(run.scenario.map((m) => ({ name: m.name, ...m.expected })));
}

/** Each delivered sample: one file at its recipient, byte-identical to `source(sample)`. */
function expectDeliveredSamplesIdentical(run: Run, source: (sample: Sample) => Uint8Array): number {
  const paths = worldPaths(run.baseDir);
  let checked = 0;
  for (const [i, message] of run.scenario.entries()) {
    if (message.kind !== 'sample' || message.expected.status !== 'delivered') continue;
    const sample = run.samples.find((s) => s.name === message.name);
    expect(sample, `sample ${message.name}`).toBeDefined();
    const { to } = routingOf(message.sealed);
    const id = parseBundle(sample!.bytes, sample!.format).header.id;
    expect(run.outcomes[i]!.messageId).toBe(id);
    // `<sender>_<MessageHeader id>_<trace id>.<ext>`: unique per sender and trace (issue 9).
    const file = join(
      paths.delivered(to),
      `${routingOf(message.sealed).from}_${id}_${run.outcomes[i]!.traceId}.${sample!.format}`,
    );
    expect(existsSync(file), `${message.name} delivered to ${to}`).toBe(true);
    expect(Buffer.compare(readFileSync(file), Buffer.from(source(sample!))), message.name).toBe(0);
    checked += 1;
  }
  return checked;
}

async function expectEveryResponseVerifies(run: Run): Promise<void> {
  const responses = join(run.baseDir, 'responses');
  const files = filesBelow(responses).filter((f) => f.endsWith('.jws'));
  const sent = run.pipeline.audit.all().filter((e) => e.event === 'response-sent');
  expect(files).toHaveLength(sent.length);
  // Authenticated rejections and acknowledged deliveries are answered; a rejection at authenticate
  // (no authenticated sender) or of an ungranted delegate is audited and nothing more.
  expect(files.length).toBe(
    run.outcomes.filter(
      (o) =>
        (o.status === 'rejected' && rejectionAnswered(o.stage ?? '', o.code ?? '')) || o.itk3Code === '20013',
    ).length,
  );
  for (const file of files) {
    const code = /-(\d{5})\.jws$/.exec(file)?.[1];
    const { message } = await verifyResponse(world, readFileSync(join(responses, file), 'utf8'));
    expect(message.header.event.code, file).toBe('ITK008M');
    expect(message.header.response?.itkCode, file).toBe(code);
  }
}

/** Standalone 10-digit numbers (NHS-number shaped), not parts of longer ids. */
const TEN_DIGITS = /(^|[^0-9A-Za-z])\d{10}([^0-9A-Za-z]|$)|\b\d{3} \d{3} \d{4}\b/;

function expectAuditClean(run: Run): void {
  const auditFile = join(run.baseDir, 'audit.jsonl');
  const lines = readFileSync(auditFile, 'utf8').split('\n').filter(Boolean);
  expect(lines.length).toBe(run.pipeline.audit.count);
  expect(lines.length).toBeGreaterThan(run.scenario.length);

  // Every base64url segment of every credential and sealed message, long enough to be telling.
  const secrets = new Set<string>();
  for (const m of run.scenario) {
    for (const compact of [m.credential ?? '', m.sealed]) {
      for (const segment of compact.split('.')) if (segment.length >= 16) secrets.add(segment.slice(0, 64));
    }
  }
  // Patient numbers and other long digit runs that occur in the sample Bundles.
  const sampleNumbers = new Set<string>();
  for (const s of run.samples) {
    for (const match of Buffer.from(s.bytes)
      .toString('utf8')
      .matchAll(/(?<![0-9])\d{10}(?![0-9])/g)) {
      sampleNumbers.add(match[0]);
    }
  }

  for (const [n, line] of lines.entries()) {
    const where = `audit line ${n + 1}`;
    const entry = JSON.parse(line) as Record<string, unknown>;
    expect(entry.traceId, where).toBeTypeOf('string');
    // Booleans only: a failure must not print what it found.
    expect(/eyJ[A-Za-z0-9_-]{8,}/.test(line), `${where}: carries a JOSE header`).toBe(false);
    for (const secret of secrets)
      expect(line.includes(secret), `${where}: carries a token/JWE/JWS segment`).toBe(false);
    for (const number of sampleNumbers)
      expect(line.includes(number), `${where}: carries a sample number`).toBe(false);
    for (const [key, value] of Object.entries(entry)) {
      expect(typeof value === 'string' || typeof value === 'number', `${where}.${key}`).toBe(true);
      const text = String(value);
      expect(text.length <= 200, `${where}.${key} is short`).toBe(true);
      expect(/[<>{}\n]/.test(text), `${where}.${key}: XML or JSON content`).toBe(false);
      expect(TEN_DIGITS.test(text), `${where}.${key}: NHS-number shaped`).toBe(false);
      expect(/resourceType|MessageHeader|urn:uuid/.test(text), `${where}.${key}: Bundle content`).toBe(false);
    }
  }
}

describe('e2e: the demo scenario with the shared fixtures', () => {
  let run: Run | undefined;
  const fixtures = fixturesDir();

  beforeAll(async () => {
    const samples = loadSamples();
    run = await runScenario(await buildScenario(world, Date.now()), samples);
  });

  it('every message ends exactly as expected (status, stage, ITK3 code, error code)', () => {
    expectEveryMessageAsExpected(run!);
    const statuses = new Set(run!.outcomes.map((o) => o.status));
    expect(statuses.has('in-flight')).toBe(false);
    expect(statuses.has('dead-lettered')).toBe(false);
  });

  it('every sample is in the scenario: the ITK3 samples delivered, 20007 or 20006, the legacy ones 10009', () => {
    const samples = run!.samples;
    expect(run!.scenario.filter((m) => m.kind === 'sample').map((m) => m.name)).toEqual(
      samples.map((s) => s.name),
    );
    for (const sample of samples.filter((s) => s.kind === 'legacy-itk2')) {
      expect(run!.scenario.find((m) => m.name === sample.name)?.expected).toMatchObject({
        itk3Code: '10009',
      });
    }
  });

  it('each delivered fixture is byte-identical to the fixture file', (ctx) => {
    if (!fixtures) {
      console.warn(
        'skipped: the shared fixture folder (../shared/fixtures/itk3) is absent; built samples only',
      );
      ctx.skip();
      return;
    }
    expect(run!.samples.every((s) => s.source === 'fixture')).toBe(true);
    const checked = expectDeliveredSamplesIdentical(run!, (s) => readFileSync(join(fixtures, s.name)));
    // consultation_report, engage_hettie_winters_imms (engage_jack_smith_mirc is refused, below).
    expect(checked).toBe(2);
  });

  it('engage_jack_smith_mirc.xml, whose receiver and focus references dangle, is refused with 20006', (ctx) => {
    if (!fixtures) {
      console.warn('skipped: the shared fixture folder is absent (built samples have no dangling reference)');
      ctx.skip();
      return;
    }
    const i = run!.scenario.findIndex((m) => m.name === 'engage_jack_smith_mirc.xml');
    expect(run!.outcomes[i]).toMatchObject({
      status: 'rejected',
      stage: 'verify',
      itk3Code: '20006',
      code: 'REFERENCE_UNRESOLVED',
    });
  });

  it('the duplicate fixture oc_consultation_report.xml is refused with 20007', (ctx) => {
    if (!fixtures) {
      console.warn('skipped: the shared fixture folder is absent');
      ctx.skip();
      return;
    }
    const i = run!.scenario.findIndex((m) => m.name === 'oc_consultation_report.xml');
    expect(run!.outcomes[i]).toMatchObject({
      status: 'rejected',
      itk3Code: '20007',
      code: 'DUPLICATE_MESSAGE',
    });
  });

  it('the scenario as the demo submits it ends as expected every time (a duplicate never races its original)', async () => {
    const samples = loadSamples();
    const scenario = await buildScenario(world, Date.now());
    // Each duplicate sample is sent in a later phase than the sample whose MessageHeader id it
    // reuses, so the original is through verify before the duplicate reaches it.
    const duplicates = scenario.filter((m) => m.expected.code === 'DUPLICATE_MESSAGE');
    expect(duplicates).toHaveLength(1);
    for (const duplicate of duplicates) {
      const original = scenario.find(
        (m) => m !== duplicate && m.kind === 'sample' && m.routing?.id === duplicate.routing?.id,
      );
      expect(original?.expected.status, `original of ${duplicate.name}`).toBe('delivered');
      expect(phaseOf(duplicate), duplicate.name).toBeGreaterThan(phaseOf(original!));
    }

    // And the outcome does not depend on which record of a batch happens to finish first.
    for (let attempt = 0; attempt < 5; attempt += 1) {
      const again = await runScenario(await buildScenario(world, Date.now()), samples);
      expectEveryMessageAsExpected(again);
      // With the fixtures, engage_jack_smith_mirc.xml is refused (dangling references): 2 delivered.
      expect(expectDeliveredSamplesIdentical(again, (s) => s.bytes)).toBe(fixtures ? 2 : 3);
    }
  });

  it('every response file is a signed ITK008M that verifies with the response-signing key', async () => {
    await expectEveryResponseVerifies(run!);
  });

  it('the audit trail carries no token, JWE/JWS segment, Bundle bytes or NHS number', () => {
    expectAuditClean(run!);
  });
});

describe('e2e: the demo scenario with the fixture folder hidden (built samples)', () => {
  let run: Run | undefined;

  beforeAll(async () => {
    const previous = process.env.ITK3_FIXTURES_DIR;
    process.env.ITK3_FIXTURES_DIR = join(makeTempDir(), 'no-such-fixtures');
    try {
      const samples = loadSamples();
      run = await runScenario(await buildScenario(world, Date.now()), samples);
    } finally {
      if (previous === undefined) delete process.env.ITK3_FIXTURES_DIR;
      else process.env.ITK3_FIXTURES_DIR = previous;
    }
  });

  it('uses built samples only', () => {
    expect(run!.samples.length).toBeGreaterThan(0);
    expect(run!.samples.every((s) => s.source === 'built')).toBe(true);
    expect(run!.samples.filter((s) => s.kind === 'itk3')).toHaveLength(4);
    expect(run!.samples.some((s) => s.kind === 'legacy-itk2')).toBe(true);
  });

  it('every message ends exactly as expected', () => {
    expectEveryMessageAsExpected(run!);
  });

  it('each delivered built sample is byte-identical to what was sealed', () => {
    expect(expectDeliveredSamplesIdentical(run!, (s) => s.bytes)).toBe(3);
  });

  it('every response verifies and the audit trail is clean', async () => {
    await expectEveryResponseVerifies(run!);
    expectAuditClean(run!);
  });
});

describe('e2e: the demo scenario on the worker pool (issue 14: same results and audit as without it)', () => {
  let pool: WorkerPool | undefined;
  let withPool: Run | undefined;
  let without: Run | undefined;
  /** With `sideBySide: false`: the pool, one stage invocation at a time. */
  let oneAtATime: Run | undefined;

  beforeAll(async () => {
    const keystoreFile = join(makeTempDir('itk3-e2e-pool-'), 'keystore.json');
    writeKeystore(keystoreFile, world.keystore);
    pool = await WorkerPool.start({ size: 2, keystoreFile, config: world.config });
    // One scenario (the same sealed messages and credentials) through both pipelines; each has its
    // own once-store, so neither sees the other's jti or message ids.
    const samples = loadSamples();
    const scenario = await buildScenario(world, Date.now());
    without = await runScenario(scenario, samples);
    withPool = await runScenario(scenario, samples, pool);
    oneAtATime = await runScenario(scenario, samples, pool, false);
  });
  afterAll(async () => {
    await pool?.close();
  });

  /** Each message's audit events in order, without what differs between runs (trace ids, times). */
  function auditByMessage(run: Run): unknown[] {
    const all = run.pipeline.audit.all();
    return run.outcomes.map((o) =>
      all.filter((e) => e.traceId === o.traceId).map(({ traceId: _t, at: _a, ...rest }) => rest),
    );
  }

  it('every message ends exactly as expected, and as it ends without the pool', () => {
    expectEveryMessageAsExpected(withPool!);
    const strip = ({ traceId: _t, ...rest }: MessageOutcome) => rest;
    expect(withPool!.outcomes.map(strip)).toEqual(without!.outcomes.map(strip));
    expect(oneAtATime!.outcomes.map(strip)).toEqual(without!.outcomes.map(strip));
  });

  it('the audit trail holds the same events per message, in the same order', () => {
    expect(auditByMessage(withPool!)).toEqual(auditByMessage(without!));
    expect(auditByMessage(oneAtATime!)).toEqual(auditByMessage(without!));
  });

  it('deliveries are byte-identical, responses verify and the audit trail is clean', async () => {
    expect(expectDeliveredSamplesIdentical(withPool!, (s) => s.bytes)).toBe(fixturesDir() ? 2 : 3);
    await expectEveryResponseVerifies(withPool!);
    expectAuditClean(withPool!);
  });
});
