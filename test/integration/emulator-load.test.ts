/**
 * Load through an emulator: a few hundred mixed valid and hostile messages through the real
 * handlers on real SQS/KMS/DynamoDB/S3 (emulator mode), with the same workload and conservation
 * checks as the 10 000-message embedded run (scripts/load.ts, test/load).
 */
import { expect, it } from 'vitest';
import { runLoad } from '../../scripts/load.js';
import { describeEachEmulator } from './support/emulators.js';

/** LocalStack's host-mode KMS is about ten times slower than ministack's here: a smaller run. */
const MESSAGES = { ministack: 300, localstack: 120 } as const;

describeEachEmulator('load through the emulator', ({ emulator, endpoint, gap }) => {
  const kmsGap = gap('kmsInvalidCiphertext');
  if (kmsGap)
    console.warn(`load through ${emulator.name}: hostile kind random-encrypted-key left out: ${kmsGap}`);
  const messages = MESSAGES[emulator.name];
  it(`${messages} mixed messages: each ends in exactly one terminal state, as its kind requires`, async () => {
    const r = await runLoad({
      messages,
      chunk: 100,
      emulator: { endpoint, localState: emulator.gaps.dynamodb !== undefined },
      ...(kmsGap ? { excludeKinds: ['random-encrypted-key'] } : {}),
    });
    console.info(
      `[${emulator.name}] ${r.messages} messages (${r.valid} valid, ${r.hostile} hostile): ${r.delivered} delivered, ` +
        `${r.rejected} rejected, ${r.deadLettered} dead-lettered, ${r.inFlight} in flight; ${r.throughput} msg/s; ` +
        `heap ${r.heapBeforeMiB} → ${r.heapAfterMiB} MiB`,
    );
    expect(r.messages).toBe(messages);
    expect(r.terminalViolations).toBe(0);
    expect(r.unexpected).toBe(0);
    expect(r.inFlight).toBe(0);
    expect(r.delivered + r.rejected + r.deadLettered).toBe(messages);
    expect(r.delivered).toBe(r.valid);
  }, 600_000);
});
