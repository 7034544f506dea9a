/**
 * `itk3 demo` (what `npm start` runs): a throw-away keystore and configuration, the ITK3 samples
 * sealed by their senders, the hostile set, all through the embedded pipeline, then a table.
 */

import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { writeKeystore } from '../adapters/local/keystore.js';
import { SoftwareKeyService } from '../adapters/local/software-keys.js';
import { SqliteState } from '../adapters/local/sqlite-state.js';
import { fixturesDir } from '../itk3/index.js';
import { EmbeddedPipeline, type MessageOutcome, VirtualClock } from '../runtime/embedded.js';
import type { PipelineRuntime } from '../runtime/runtime.js';
import { rejectionAnswered } from '../stages/batch.js';
import { buildScenario, type ScenarioMessage } from '../testkit/scenario.js';
import { createWorld, publishRecipientKeys } from '../testkit/world.js';
import { renderTable } from './table.js';

export interface DemoOptions {
  out?: string;
  recipientModulus?: number;
  /** Run against an emulator's real SQS/KMS/DynamoDB/S3 instead of in-process (emulator mode). */
  emulator?: { endpoint: string; localState: boolean };
  write: (line: string) => void;
}

export interface DemoResult {
  rows: { message: ScenarioMessage; outcome: MessageOutcome; asExpected: boolean }[];
  baseDir: string;
  allAsExpected: boolean;
}

export async function runDemo(opts: DemoOptions): Promise<DemoResult> {
  const { write } = opts;
  const baseDir = opts.out ? resolve(opts.out) : mkdtempSync(join(tmpdir(), 'itk3-demo-'));
  mkdirSync(baseDir, { recursive: true });
  const fixtures = fixturesDir();
  write(`ITK3 secure pipeline — embedded demo (no AWS, no emulator)`);
  write(`working folder: ${baseDir}`);
  write(
    fixtures
      ? `samples: NHS ITK3 fixtures from ${fixtures}`
      : 'samples: ../shared/fixtures not found — using messages built by the project’s message builder',
  );

  write(
    `generating keys: two federated issuers, three senders, two recipients (RSA-${opts.recipientModulus ?? 4096}), response signing…`,
  );
  const started = Date.now();
  const world = await createWorld(opts.recipientModulus ? { recipientModulus: opts.recipientModulus } : {});
  writeKeystore(join(baseDir, 'keystore.json'), world.keystore);
  writeFileSync(join(baseDir, 'config.json'), `${JSON.stringify(world.configDoc, null, 2)}\n`);
  write(`  done in ${((Date.now() - started) / 1000).toFixed(1)} s; keystore.json and config.json written`);

  let pipeline: PipelineRuntime;
  let state: SqliteState | undefined;
  if (opts.emulator) {
    const { EmulatorPipeline } = await import('../runtime/emulator.js');
    write(
      `emulator mode: ${opts.emulator.endpoint}${opts.emulator.localState ? ' (once-store and audit in process)' : ''}`,
    );
    const emulated = await EmulatorPipeline.start({
      config: world.config,
      endpoint: opts.emulator.endpoint,
      prefix: `demo-${Date.now().toString(36)}`,
      localState: opts.emulator.localState,
      visibilityTimeoutSeconds: 5,
    });
    const published = await emulated.publicJwks();
    publishRecipientKeys(world, published);
    write(
      `  provisioned queues, tables, bucket ${emulated.resources.blobBucket} and KMS keys from the CDK definitions`,
    );
    pipeline = emulated;
  } else {
    // The demo's world (keys, configuration) is new on every run, so is its state: an old state
    // file in the same folder would hold the previous run's message ids.
    const stateFile = join(baseDir, 'state.db');
    for (const f of [stateFile, `${stateFile}-wal`, `${stateFile}-shm`]) rmSync(f, { force: true });
    const clock = new VirtualClock();
    state = new SqliteState(stateFile, { clock });
    pipeline = new EmbeddedPipeline({
      config: world.config,
      keys: new SoftwareKeyService(world.keystore),
      baseDir,
      clock,
      state,
    });
  }

  const now = Date.now();
  const scenario = await buildScenario(world, now);
  write(
    `sealing done: ${scenario.filter((m) => m.kind === 'sample').length} samples, ${scenario.filter((m) => m.kind === 'hostile').length} hostile or edge-case messages`,
  );

  const traces: string[] = new Array(scenario.length);
  let lastShown = 0;
  const phases = [...new Set(scenario.map((m) => m.phase ?? 1))].sort((a, b) => a - b);
  for (const phase of phases) {
    for (const [i, message] of scenario.entries()) {
      if ((message.phase ?? 1) !== phase) continue;
      traces[i] = await submitScenarioMessage(pipeline, message);
    }
    await pipeline.drain({
      onProgress: (n) => {
        if (n - lastShown >= 10) {
          lastShown = n;
          write(`  … ${n} handler invocations`);
        }
      },
    });
  }

  const rows = await Promise.all(
    scenario.map(async (message, i) => {
      const outcome = await pipeline.outcome(traces[i]!);
      const e = message.expected;
      const asExpected =
        outcome.status === e.status &&
        (e.itk3Code === undefined || e.itk3Code === outcome.itk3Code) &&
        (e.stage === undefined || e.stage === outcome.stage) &&
        (e.code === undefined || e.code === outcome.code);
      return { message, outcome, asExpected };
    }),
  );

  write('');
  write(
    renderTable(
      ['#', 'message', 'what it is', 'stage', 'outcome', 'ITK3', 'code', 'as expected'],
      rows.map(({ message, outcome, asExpected }, i) => [
        String(i + 1),
        message.name,
        message.description,
        outcome.stage ?? '-',
        outcome.status,
        outcome.itk3Code ?? '-',
        outcome.code ?? '-',
        asExpected ? 'yes' : `NO (expected ${message.expected.status} ${message.expected.itk3Code ?? ''})`,
      ]),
    ),
  );
  const count = (s: string) => rows.filter((r) => r.outcome.status === s).length;
  const allAsExpected = rows.every((r) => r.asExpected);
  write('');
  write(
    // A rejection at authenticate has no authenticated sender to answer (issue 9, class 4), nor
    // one of an ungranted delegate an organisation to answer in its name.
    `${rows.length} messages: ${count('delivered')} delivered, ${count('rejected')} rejected ` +
      `(${rows.filter((r) => r.outcome.status === 'rejected' && rejectionAnswered(r.outcome.stage ?? '', r.outcome.code ?? '')).length} answered with an ITK3 response), ` +
      `${count('dead-lettered')} dead-lettered, ${count('in-flight')} in flight.`,
  );
  if (opts.emulator) {
    write(
      'deliveries and signed ITK3 responses: in the emulator bucket under deliveries/; audit trail in its table',
    );
  } else {
    write(`deliveries: ${join(baseDir, 'delivered')}   signed ITK3 responses: ${join(baseDir, 'responses')}`);
    write(`state (queues, audit trail, outcomes): ${join(baseDir, 'state.db')}`);
    write(`prove the audit trail: itk3 audit verify --out ${baseDir}`);
  }
  state?.close();
  write(
    allAsExpected
      ? 'Every message ended as a correct pipeline must end it.'
      : 'SOME MESSAGES DID NOT END AS EXPECTED.',
  );
  return { rows, baseDir, allAsExpected };
}

/** Submit one scenario message the way it is meant to arrive (front door or straight onto SQS). */
export async function submitScenarioMessage(
  pipeline: PipelineRuntime,
  message: ScenarioMessage,
): Promise<string> {
  if (message.direct) {
    return pipeline.submitRaw(
      message.sealed,
      message.credential ? `Bearer ${message.credential}` : undefined,
    );
  }
  const result = await pipeline.submit(message.credential ?? '', message.sealed);
  if (result.status !== 202) throw new Error(`front door refused ${message.name}: ${result.error}`);
  return result.trackingId;
}
