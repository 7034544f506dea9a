/**
 * CI-sized load run through the embedded runtime: 10 000 mixed messages (70 % valid across the
 * three senders, 30 % hostile of ten kinds) built with real keys and drained through the deployed
 * handlers. Asserts conservation — every trace ends in exactly one terminal state, as its kind
 * requires, and the counts add up with nothing left in any queue or DLQ — and a generous memory
 * bound so a leak fails. Prints throughput, heap and peak RSS. `ITK3_LOAD_MESSAGES` overrides the
 * size (CI keeps the default); `npm run load` is the same run from the command line.
 */
import '../support/env.js';
import { describe, expect, it } from 'vitest';
import { runLoad, summarise, writeLoadReport } from '../../scripts/load.js';

const MESSAGES = Number(process.env.ITK3_LOAD_MESSAGES ?? 10_000);
const MiB = 1;

describe('load: embedded runtime', () => {
  it(`${MESSAGES} mixed valid and hostile messages: every one accounted for, memory bounded`, {
    timeout: 20 * 60_000,
  }, async () => {
    const result = await runLoad({ messages: MESSAGES });
    console.log(summarise(result));
    writeLoadReport(result, 'test/load/load.test.ts');

    // Conservation.
    expect(result.messages).toBe(MESSAGES);
    expect(result.delivered + result.rejected + result.deadLettered + result.inFlight).toBe(MESSAGES);
    expect(result.inFlight).toBe(0);
    expect(result.deadLettered).toBe(0);
    expect(result.terminalViolations).toBe(0);
    expect(result.unexpected).toBe(0);
    expect(result.delivered).toBe(result.valid);
    expect(result.rejected).toBe(result.hostile);

    // Memory: the in-memory audit trail and once-store grow with the run by design (tens of MiB
    // for 10 000 messages); a leak of message bytes or per-message key material would not fit.
    expect(result.heapAfterMiB - result.heapBeforeMiB).toBeLessThan(512 * MiB);
    expect(result.rssPeakMiB).toBeLessThan(2048 * MiB);
  });
});
