/**
 * The same full run as logs.test.ts with `POWERTOOLS_LOGGER_LOG_EVENT=true`, an environment switch
 * an operator may set while debugging. Were Powertools to honour it, it would log every incoming SQS
 * event, i.e. every queue body — credentials, sealed messages and, after decrypt, the inner JWS and
 * the plaintext Bundle. The handlers pin `logEvent: false` (finding F5, fixed), so the scan of every
 * log line must find nothing.
 */
import './log-env-event.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DemoWorld } from '../../lib/testkit/world.js';
import { removeTempDirs, testWorld } from '../support/world.js';
import { captureScenarioRun } from './log-run.js';
import { leakSummary, scanForLeaks } from './log-scan.js';
import { Results } from './support.js';

let world: DemoWorld;
const results = new Results<Record<string, unknown>>('logs-event.json', 'test/security/logs-event.test.ts');

beforeAll(async () => {
  world = await testWorld();
});

afterAll(() => {
  results.write();
  removeTempDirs();
});

describe('logs with POWERTOOLS_LOGGER_LOG_EVENT=true', () => {
  it('no environment switch makes a stage log its SQS event: no secret in any log line', async () => {
    const run = await captureScenarioRun(world);
    expect(run.lines.length).toBeGreaterThan(20);
    const leaks = leakSummary(scanForLeaks(run.lines, run.secrets));
    results.add({
      run: 'demo scenario, POWERTOOLS_LOGGER_LOG_EVENT=true, DEBUG',
      messages: run.messages,
      logLines: run.lines.length,
      logLeaks: leaks,
    });
    console.info(`event logging switch on: leaks by kind ${JSON.stringify(leaks)}`);
    expect(scanForLeaks(run.lines, run.secrets)).toEqual([]);
  });
});
